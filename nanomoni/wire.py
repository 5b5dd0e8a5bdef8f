"""Request and response bodies of the HTTP API (SPEC §4–§6), as msgspec structs.

Shared by the services (decoding) and the client (encoding). Integers are
non-negative and below 2**63; floats, strings and booleans are schema errors.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # msgspec bounds must fit an int64


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Bodies whose unknown members are schema errors."""


# --- issuer: accounts ---------------------------------------------------------


class RegisterRequest(Strict):
    client_public_key_der_b64: str


class AccountResponse(msgspec.Struct):
    client_public_key_der_b64: str
    balance: int


class DepositRequest(Strict):
    public_key_der_b64: str
    amount: U63


class IssuerKeyResponse(msgspec.Struct):
    der_b64: str


class VendorKeyResponse(msgspec.Struct):
    public_key_der_b64: str


# --- issuer: channels ---------------------------------------------------------


class OpenChannelRequest(Strict):
    client_public_key_der_b64: str
    vendor_public_key_der_b64: str
    amount: U63
    open_signature_b64: str
    hash_alg: str | None = None
    payword_root_b64: str | None = None
    payword_unit_value: U63 | None = None
    payword_max_k: U63 | None = None
    paytree_root_b64: str | None = None
    paytree_unit_value: U63 | None = None
    paytree_max_i: U63 | None = None
    paytree_first_opt_root_b64: str | None = None
    paytree_first_opt_unit_value: U63 | None = None
    paytree_first_opt_max_i: U63 | None = None
    paytree_second_opt_root_b64: str | None = None
    paytree_second_opt_unit_value: U63 | None = None
    paytree_second_opt_max_i: U63 | None = None


class ChannelResponse(msgspec.Struct, omit_defaults=False):
    """Open (201) and read (200) responses; mode members are filled for their mode.

    The open response omits the read-only members (id, is_closed, timestamps,
    close signatures) by leaving them unset; see `open_view`/`read_view` of the
    issuer service.
    """

    channel_id: str
    client_public_key_der_b64: str
    vendor_public_key_der_b64: str
    salt_b64: str
    amount: int
    balance: int
    hash_alg: str
    id: str | None = None
    is_closed: bool | None = None
    created_at: str | None = None
    closed_at: str | None = None
    payword_root_b64: str | None = None
    payword_unit_value: int | None = None
    payword_max_k: int | None = None
    paytree_root_b64: str | None = None
    paytree_unit_value: int | None = None
    paytree_max_i: int | None = None
    paytree_first_opt_root_b64: str | None = None
    paytree_first_opt_unit_value: int | None = None
    paytree_first_opt_max_i: int | None = None
    paytree_second_opt_root_b64: str | None = None
    paytree_second_opt_unit_value: int | None = None
    paytree_second_opt_max_i: int | None = None
    close_payload_b64: str | None = None
    client_close_signature_b64: str | None = None
    vendor_close_signature_b64: str | None = None


# --- issuer: settlement (called by the vendor) ----------------------------------


class SignatureSettlement(Strict):
    channel_id: str
    cumulative_owed_amount: U63
    client_close_signature_b64: str
    vendor_close_signature_b64: str


class PaywordSettlement(Strict):
    vendor_public_key_der_b64: str
    k: U63
    token_b64: str
    vendor_signature_b64: str


class PaytreeSettlement(Strict):
    vendor_public_key_der_b64: str
    i: U63
    leaf_b64: str
    siblings_b64: list[str]
    vendor_signature_b64: str


class SettlementResponse(msgspec.Struct):
    channel_id: str
    client_balance: int
    vendor_balance: int


# --- vendor: payments -----------------------------------------------------------


class SignaturePayment(Strict):
    channel_id: str
    cumulative_owed_amount: U63
    signature_b64: str


class PaywordPayment(Strict):
    k: U63
    token_b64: str
    channel_id: str | None = None


class PaytreePayment(Strict):
    """All three PayTree modes (the pruned ones send fewer siblings)."""

    i: U63
    leaf_b64: str
    siblings_b64: list[str]
    channel_id: str | None = None


Payment = SignaturePayment | PaywordPayment | PaytreePayment


class PaymentResponse(msgspec.Struct, omit_defaults=True):
    channel_id: str
    cumulative_owed_amount: int
    created_at: str
    k: int | None = None
    i: int | None = None


class ClosureRequest(Strict):
    channel_id: str


# --- service endpoints and errors --------------------------------------------------


class HealthResponse(msgspec.Struct):
    status: str
    service: str
    version: str


class ErrorResponse(msgspec.Struct, omit_defaults=True):
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None
