"""The HTTP edge (SPEC §1, §4–§6): JSON bodies ⇄ the protocol's domain types.

Bodies are decoded by msgspec straight from the raw bytes into structs whose
schema errors name the bad member (422), then into `nanomoni.protocol.messages`
with our strict base64 (msgspec's own `bytes` accepts non-canonical text) and
exact lengths (400 `invalid_encoding`). Shared by the services (decoding
requests, encoding answers) and the client (the other way round). Integers are
non-negative and below 2**63; floats, strings and booleans are schema errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar, Union

import msgspec

from nanomoni import config
from nanomoni.encoding import (
    b64decode,
    b64decode_joined,
    b64decode_list,
    b64encode,
    canonical_json,
    is_channel_id,
)
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.lifecycle import iso_from_us, us_from_iso
from nanomoni.protocol.messages import (
    CloseRequest,
    OpenRequest,
    Payment,
    PaywordPayment,
    PaywordSettlement,
    Settlement,
    SignaturePayment,
    SignatureSettlement,
    TopUp,
    TreePayment,
    TreeSettlement,
)
from nanomoni.protocol.model import (
    ChannelInfo,
    ChannelState,
    ChannelTerms,
    IssuerChannel,
    PaymentState,
    Receipt,
    SignedReceipt,
)
from nanomoni.protocol.modes import ALL, COMMITMENT_MEMBERS, HASH_LEN, AnyRules, rules_for

T = TypeVar("T")
U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # msgspec bounds must fit an int64

_encoder = msgspec.json.Encoder()
encode = _encoder.encode


class Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Bodies whose unknown members are schema errors (no cycles: untracked by the gc)."""


# --- decoding -------------------------------------------------------------------------


class ValidationFailed(NanoMoniError):
    """A schema error (422) with the bad members listed."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(Code.validation_error, detail)
        self.errors = errors


# msgspec messages end in "- at `$.member`" (or "$" for the whole object).
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


def _validation_failure(exc: msgspec.MsgspecError) -> ValidationFailed:
    message = str(exc)
    where = _AT.search(message)
    path = where.group("path").lstrip(".") if where else ""
    named = _FIELD.search(message)  # unknown / missing members name themselves
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    reason = message[: where.start()] if where else message
    field = path or "body"
    return ValidationFailed(
        f"invalid request body: {reason} ({field})", [{"field": field, "message": reason}]
    )


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode(raw: bytes | str, body_type: type[T]) -> T:
    """Decode a JSON body into `body_type`; any schema or syntax error is a 422."""
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.json.Decoder(body_type)
    try:
        return decoder.decode(raw)  # type: ignore[no-any-return]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _validation_failure(exc) from None


def _hash(text: str, field: str) -> bytes:
    return b64decode(text, HASH_LEN, field=field)


# --- issuer: accounts ---------------------------------------------------------------------


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


# --- issuer: opening (§4.3) ------------------------------------------------------------------

_OPEN_COMMON: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("client_public_key_der_b64", str),
    ("vendor_public_key_der_b64", str),
    ("amount", U63),
    ("open_signature_b64", str),
    ("hash_alg", str | None, None),
    ("nonce_b64", str | None, None),
    ("issuer_public_key_der_b64", str | None, None),
    ("ttl_s", U63 | None, None),
]


def _commitment_fields(optional: bool) -> list[tuple[str, Any, Any]]:
    """root, unit and max members of every committed mode in the registry."""
    fields: list[tuple[str, Any, Any]] = []
    for rules in ALL:
        if rules.members is not None:
            root, unit, top = rules.members.names
            integer = U63 if optional else int
            fields += [(root, str | None, None), (unit, integer | None, None)]
            fields += [(top, integer | None, None)]
    return fields


# One flat body for every mode (SPEC §4.3), its mode members taken from the registry.
OpenChannelRequest: type[msgspec.Struct] = msgspec.defstruct(
    "OpenChannelRequest", [*_OPEN_COMMON, *_commitment_fields(True)], bases=(Strict,), kw_only=True
)


def decode_open(raw: bytes) -> OpenRequest:
    """An open body with every binary member decoded; the mode's rules judge the rest."""
    body = msgspec.structs.asdict(decode(raw, OpenChannelRequest))
    members = {name: value for name, value in body.items() if value is not None}
    mode_members: dict[str, int | bytes] = {}
    for name in COMMITMENT_MEMBERS & members.keys():
        value = members[name]
        mode_members[name] = b64decode(value, field=name) if name.endswith("_b64") else value
    client_key: str = members["client_public_key_der_b64"]
    vendor_key: str = members["vendor_public_key_der_b64"]
    nonce_text: str | None = members.get("nonce_b64")
    return OpenRequest(
        client_key=client_key,
        client_der=b64decode(client_key, field="client_public_key_der_b64"),
        vendor_key=vendor_key,
        vendor_der=b64decode(vendor_key, field="vendor_public_key_der_b64"),
        amount=members["amount"],
        signature=b64decode(members["open_signature_b64"], field="open_signature_b64"),
        signed=canonical_json(members),
        hash_alg=members.get("hash_alg"),
        mode_members=mode_members,
        nonce=None if nonce_text is None else b64decode(nonce_text, field="nonce_b64"),
        issuer_key=members.get("issuer_public_key_der_b64"),
        ttl_s=members.get("ttl_s"),
    )


def open_body(
    rules: AnyRules,
    common: dict[str, Any],
    commitment: tuple[bytes, int, int] | None,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The client's signed open body: `common` members (keys, amount, optional
    hash_alg, ...) plus the mode's (root, unit value, max index)."""
    members = {name: value for name, value in common.items() if value is not None}
    if rules.members is not None:
        if commitment is None:
            raise ValueError(f"a {rules.mode.value} channel needs its commitment")
        root, unit_value, max_index = commitment
        members[rules.members.root] = b64encode(root)
        members[rules.members.unit] = unit_value
        members[rules.members.max] = max_index
    members["open_signature_b64"] = b64encode(sign(canonical_json(members)))
    return encode(members)


# --- issuer: channel views (§4.3, §4.4) --------------------------------------------------------

_SIGNATURE_CLOSE = ("close_payload_b64", "client_close_signature_b64", "vendor_close_signature_b64")


def _commitment_view(rules: AnyRules, terms: ChannelTerms) -> dict[str, Any]:
    if rules.members is None:
        return {}
    assert terms.root is not None
    return {
        rules.members.root: b64encode(terms.root),
        rules.members.unit: terms.unit_value,
        rules.members.max: terms.max_index,
    }


class SignedReceiptBody(msgspec.Struct):
    """A receipt and the issuer's signature beside it (SPEC §4.5)."""

    receipt: Receipt
    receipt_signature_b64: str

    def domain(self) -> SignedReceipt:
        signature = b64decode(self.receipt_signature_b64, field="receipt_signature_b64")
        return SignedReceipt(receipt=self.receipt, signature=signature)

    @classmethod
    def of(cls, signed: SignedReceipt) -> SignedReceiptBody:
        return cls(signed.receipt, b64encode(signed.signature))


def _iso(micros: int | None) -> str | None:
    return None if micros is None else iso_from_us(micros)


def channel_view(
    rules: AnyRules,
    channel: IssuerChannel,
    *,
    opened: bool,
    receipts: Sequence[SignedReceipt] = (),
) -> dict[str, Any]:
    """The members SPEC §4.3 (open, 201) or §4.4 (read, 200) lists for this mode, in order;
    `receipts` are the channel's receipts signed by the issuer (read views)."""
    terms, closure = channel.terms, channel.closure
    view: dict[str, Any] = {
        "channel_id": terms.channel_id,
        "client_public_key_der_b64": terms.client_public_key_der_b64,
        "vendor_public_key_der_b64": terms.vendor_public_key_der_b64,
        "salt_b64": terms.salt_b64,
        "amount": terms.amount,
        "balance": channel.vendor_credited if channel.is_closed else 0,
        "hash_alg": terms.hash_alg,
        **_commitment_view(rules, terms),
        "state": channel.state.value,
        "expires_at": _iso(terms.expires_at),
    }
    if opened:
        return view
    view |= {
        "id": terms.id,
        "is_closed": channel.is_closed,
        "created_at": terms.created_at,
        "closed_at": closure.closed_at if closure is not None else None,
        "dispute_deadline": _iso(channel.dispute_deadline),
        "vendor_credited": channel.vendor_credited,
        "receipts": [SignedReceiptBody.of(signed) for signed in receipts],
    }
    if rules.members is None:  # signature channels show how they were closed
        for name in _SIGNATURE_CLOSE:
            view[name] = getattr(closure, name) if closure is not None else None
    return view


# Every reader of a channel view ignores members it does not know (SPEC §4.4).
ChannelResponse: type[msgspec.Struct] = msgspec.defstruct(
    "ChannelResponse",
    [
        ("channel_id", str),
        ("client_public_key_der_b64", str),
        ("vendor_public_key_der_b64", str),
        ("salt_b64", str),
        ("amount", int),
        ("balance", int),
        ("hash_alg", str, "sha256"),  # older issuers omit it (SPEC §4.4)
        ("id", str, ""),
        ("is_closed", bool, False),
        ("created_at", str, ""),
        ("closed_at", str | None, None),
        ("state", ChannelState | None, None),  # older issuers: is_closed says it
        ("expires_at", str | None, None),
        ("dispute_deadline", str | None, None),
        ("vendor_credited", int, 0),
        ("receipts", list[SignedReceiptBody], []),
        *_commitment_fields(False),
    ],
    kw_only=True,
)


# What the issuer answers about a channel (SPEC §4.3, §4.4, §4.6), for the OpenAPI
# document: the services build these answers as dicts (`channel_view`), and the
# document's conformance run (tests/e2e/test_openapi_conformance.py) holds them together.
_VIEW_COMMON: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("channel_id", str),
    ("client_public_key_der_b64", str),
    ("vendor_public_key_der_b64", str),
    ("salt_b64", str),
    ("amount", int),
    ("balance", int),
    ("hash_alg", str),
    ("state", ChannelState),
    ("expires_at", str | None),
    *_commitment_fields(False),
]
_RECEIPT_MEMBERS: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("receipt", Receipt),
    ("receipt_signature_b64", str),
]
_READ_MEMBERS: list[tuple[str, Any] | tuple[str, Any, Any]] = [
    ("id", str),
    ("is_closed", bool),
    ("created_at", str),
    ("closed_at", str | None),
    ("dispute_deadline", str | None),
    ("vendor_credited", int),
    ("receipts", list[SignedReceiptBody]),
    *((name, str | None, None) for name in _SIGNATURE_CLOSE),  # signature mode only
]
OpenedChannel: type[msgspec.Struct] = msgspec.defstruct(
    "OpenedChannel", [*_VIEW_COMMON, *_RECEIPT_MEMBERS], bases=(Strict,), kw_only=True
)
ChannelView: type[msgspec.Struct] = msgspec.defstruct(
    "ChannelView", [*_VIEW_COMMON, *_READ_MEMBERS], bases=(Strict,), kw_only=True
)
ToppedUpChannel: type[msgspec.Struct] = msgspec.defstruct(
    "ToppedUpChannel",
    [*_VIEW_COMMON, *_READ_MEMBERS, *_RECEIPT_MEMBERS],
    bases=(Strict,),
    kw_only=True,
)


def _micros(view: dict[str, Any], field: str) -> int | None:
    text: str | None = view[field]
    if text is None:
        return None
    try:
        return us_from_iso(text)
    except ValueError:
        raise ValidationFailed(
            f"{field} is not an ISO-8601 time with a timezone",
            [{"field": field, "message": "not a timestamp"}],
        ) from None


def decode_channel(rules: AnyRules, raw: bytes) -> ChannelInfo:
    """A channel view read from the issuer, for a channel of `rules`' mode."""
    view = msgspec.structs.asdict(decode(raw, ChannelResponse))
    root: bytes | None = None
    unit_value: int | None = None
    max_index: int | None = None
    if rules.members is not None:
        names = rules.members
        if view[names.root] is None or view[names.unit] is None or view[names.max] is None:
            raise ValidationFailed(
                f"a {rules.mode.value} channel view lacks {names.root}",
                [{"field": names.root, "message": "missing"}],
            )
        root = _hash(view[names.root], names.root)
        unit_value, max_index = view[names.unit], view[names.max]
    terms = ChannelTerms(
        id=view["id"],
        channel_id=view["channel_id"],
        mode=rules.mode,
        client_public_key_der_b64=view["client_public_key_der_b64"],
        vendor_public_key_der_b64=view["vendor_public_key_der_b64"],
        salt_b64=view["salt_b64"],
        amount=view["amount"],
        hash_alg=view["hash_alg"],
        created_at=view["created_at"],
        root=root,
        unit_value=unit_value,
        max_index=max_index,
        expires_at=_micros(view, "expires_at"),
    )
    state = view["state"]
    if state is None:
        state = ChannelState.closed if view["is_closed"] else ChannelState.open
    return ChannelInfo(
        terms=terms,
        balance=view["balance"],
        is_closed=view["is_closed"] or state is ChannelState.closed,
        closed_at=view["closed_at"],
        state=state,
        dispute_deadline=_micros(view, "dispute_deadline"),
        vendor_credited=view["vendor_credited"],
        receipts=tuple(body.domain() for body in view["receipts"]),
    )


# --- issuer: settlement (§4.5, called by the vendor) ------------------------------------------


class SignatureSettlementBody(Strict):
    channel_id: str
    cumulative_owed_amount: U63
    client_close_signature_b64: str
    vendor_close_signature_b64: str
    final: bool | None = None  # false: a checkpoint (SPEC §4.5 [v1.1])

    def domain(self) -> SignatureSettlement:
        return SignatureSettlement(
            channel_id=self.channel_id,
            amount=self.cumulative_owed_amount,
            client_signature=b64decode(
                self.client_close_signature_b64, field="client_close_signature_b64"
            ),
            vendor_signature=b64decode(
                self.vendor_close_signature_b64, field="vendor_close_signature_b64"
            ),
            final=self.final,
        )

    @classmethod
    def of(cls, settlement: SignatureSettlement) -> SignatureSettlementBody:
        return cls(
            channel_id=settlement.channel_id,
            cumulative_owed_amount=settlement.amount,
            client_close_signature_b64=b64encode(settlement.client_signature),
            vendor_close_signature_b64=b64encode(settlement.vendor_signature),
            final=settlement.final,
        )


class PaywordSettlementBody(Strict):
    vendor_public_key_der_b64: str
    k: U63
    token_b64: str
    vendor_signature_b64: str
    final: bool | None = None

    def domain(self) -> PaywordSettlement:
        return PaywordSettlement(
            vendor_key=self.vendor_public_key_der_b64,
            k=self.k,
            token=_hash(self.token_b64, "token_b64"),
            vendor_signature=b64decode(self.vendor_signature_b64, field="vendor_signature_b64"),
            final=self.final,
        )

    @classmethod
    def of(cls, settlement: PaywordSettlement) -> PaywordSettlementBody:
        return cls(
            vendor_public_key_der_b64=settlement.vendor_key,
            k=settlement.k,
            token_b64=b64encode(settlement.token),
            vendor_signature_b64=b64encode(settlement.vendor_signature),
            final=settlement.final,
        )


class TreeSettlementBody(Strict):
    vendor_public_key_der_b64: str
    i: U63
    secret_b64: str
    leaf_b64: str
    siblings_b64: list[str]
    vendor_signature_b64: str
    final: bool | None = None

    def domain(self) -> TreeSettlement:
        return TreeSettlement(
            vendor_key=self.vendor_public_key_der_b64,
            i=self.i,
            secret=_hash(self.secret_b64, "secret_b64"),
            leaf=_hash(self.leaf_b64, "leaf_b64"),
            siblings=b64decode_list(self.siblings_b64, HASH_LEN, "siblings_b64"),
            vendor_signature=b64decode(self.vendor_signature_b64, field="vendor_signature_b64"),
            final=self.final,
        )

    @classmethod
    def of(cls, settlement: TreeSettlement) -> TreeSettlementBody:
        return cls(
            vendor_public_key_der_b64=settlement.vendor_key,
            i=settlement.i,
            secret_b64=b64encode(settlement.secret),
            leaf_b64=b64encode(settlement.leaf),
            siblings_b64=[b64encode(sibling) for sibling in settlement.siblings],
            vendor_signature_b64=b64encode(settlement.vendor_signature),
            final=settlement.final,
        )


SettlementBody = SignatureSettlementBody | PaywordSettlementBody | TreeSettlementBody

_SETTLEMENT_BODIES: dict[type[Any], type[SettlementBody]] = {
    SignatureSettlement: SignatureSettlementBody,
    PaywordSettlement: PaywordSettlementBody,
    TreeSettlement: TreeSettlementBody,
}


def settlement_body_type(rules: AnyRules) -> type[SettlementBody]:
    return _SETTLEMENT_BODIES[rules.settlement_type]


def decode_settlement(rules: AnyRules, raw: bytes) -> Settlement:
    return decode(raw, settlement_body_type(rules)).domain()


def settlement_body(settlement: Settlement) -> SettlementBody:
    return _SETTLEMENT_BODIES[type(settlement)].of(settlement)  # type: ignore[arg-type]


def encode_settlement(settlement: Settlement) -> bytes:
    return encode(settlement_body(settlement))


class SettlementResponse(msgspec.Struct, omit_defaults=True):
    """The issuer's answer to a settlement or checkpoint (older issuers: no receipt)."""

    channel_id: str
    client_balance: int
    vendor_balance: int
    receipt: Receipt | None = None
    receipt_signature_b64: str | None = None

    def signed_receipt(self) -> SignedReceipt | None:
        if self.receipt is None or self.receipt_signature_b64 is None:
            return None
        return SignedReceiptBody(self.receipt, self.receipt_signature_b64).domain()


class ReceiptMembers(msgspec.Struct):
    """The receipt an answer that moved money carries beside its other members."""

    receipt: Receipt | None = None
    receipt_signature_b64: str | None = None


def decode_receipt(raw: bytes) -> SignedReceipt | None:
    """The signed receipt of an answer (open, top-up, settlement), if it has one."""
    members = decode(raw, ReceiptMembers)
    if members.receipt is None or members.receipt_signature_b64 is None:
        return None
    return SignedReceiptBody(members.receipt, members.receipt_signature_b64).domain()


# --- issuer: the client's protection (§4.6, §4.7) ------------------------------------------


class ClientClosureRequest(Strict):
    """The client starts the dispute window (its signed consent `client_close`)."""

    channel_id: str
    client_signature_b64: str


def decode_client_closure(raw: bytes) -> CloseRequest:
    body = decode(raw, ClientClosureRequest)
    signature = b64decode(body.client_signature_b64, field="client_signature_b64")
    return CloseRequest(channel_id=body.channel_id, client_signature=signature)


class TopUpRequest(Strict):
    channel_id: str
    amount: U63
    nonce_b64: str
    client_signature_b64: str


def decode_top_up(raw: bytes) -> TopUp:
    body = decode(raw, TopUpRequest)
    return TopUp(
        channel_id=body.channel_id,
        amount=body.amount,
        nonce=b64decode(body.nonce_b64, field="nonce_b64"),
        signature=b64decode(body.client_signature_b64, field="client_signature_b64"),
        signed=canonical_json(msgspec.structs.asdict(body)),
    )


def top_up_body(
    channel_id: str, amount: int, nonce: bytes, sign: Callable[[bytes], bytes]
) -> bytes:
    """The client's signed top-up body (SPEC §4.6)."""
    members: dict[str, Any] = {
        "channel_id": channel_id,
        "amount": amount,
        "nonce_b64": b64encode(nonce),
    }
    members["client_signature_b64"] = b64encode(sign(canonical_json(members)))
    return encode(members)


class ClosingChannel(msgspec.Struct):
    mode: str
    channel_id: str
    dispute_deadline: str


class ClosingChannelsResponse(msgspec.Struct):
    channels: list[ClosingChannel]
    now: str


# --- vendor: payments (§5) --------------------------------------------------------------------


class SignaturePaymentBody(Strict):
    channel_id: str
    cumulative_owed_amount: U63
    signature_b64: str

    def domain(self) -> SignaturePayment:
        return SignaturePayment(
            channel_id=self.channel_id,
            amount=self.cumulative_owed_amount,
            signature=b64decode(self.signature_b64, field="signature_b64"),
        )

    @classmethod
    def of(cls, payment: SignaturePayment) -> SignaturePaymentBody:
        return cls(
            channel_id=payment.channel_id,
            cumulative_owed_amount=payment.amount,
            signature_b64=b64encode(payment.signature),
        )


class PaywordPaymentBody(Strict):
    k: U63
    token_b64: str
    channel_id: str | None = None

    def domain(self) -> PaywordPayment:
        return PaywordPayment(
            k=self.k, token=_hash(self.token_b64, "token_b64"), channel_id=self.channel_id
        )

    @classmethod
    def of(cls, payment: PaywordPayment) -> PaywordPaymentBody:
        return cls(k=payment.k, token_b64=b64encode(payment.token), channel_id=payment.channel_id)


class TreePaymentBody(Strict):
    """All three PayTree modes (the pruned ones send fewer siblings)."""

    i: U63
    secret_b64: str
    siblings_b64: list[str]
    leaf_b64: str | None = None
    channel_id: str | None = None

    def domain(self) -> TreePayment:
        return TreePayment(
            i=self.i,
            secret=_hash(self.secret_b64, "secret_b64"),
            path=b64decode_joined(self.siblings_b64, HASH_LEN, "siblings_b64"),
            leaf=None if self.leaf_b64 is None else _hash(self.leaf_b64, "leaf_b64"),
            channel_id=self.channel_id,
        )

    @classmethod
    def of(cls, payment: TreePayment) -> TreePaymentBody:
        return cls(
            i=payment.i,
            secret_b64=b64encode(payment.secret),
            siblings_b64=[b64encode(sibling) for sibling in payment.siblings],
            leaf_b64=None if payment.leaf is None else b64encode(payment.leaf),
            channel_id=payment.channel_id,
        )


PaymentBody = SignaturePaymentBody | PaywordPaymentBody | TreePaymentBody

_PAYMENT_BODIES: dict[type[Any], type[PaymentBody]] = {
    SignaturePayment: SignaturePaymentBody,
    PaywordPayment: PaywordPaymentBody,
    TreePayment: TreePaymentBody,
}


def payment_body_type(rules: AnyRules) -> type[PaymentBody]:
    return _PAYMENT_BODIES[rules.payment_type]


_PAYMENT_DECODERS = {
    kind: msgspec.json.Decoder(body) for kind, body in _PAYMENT_BODIES.items()
}


def decode_payment(rules: AnyRules, raw: bytes) -> Payment:
    """The hot path's decoding: one msgspec call, then strict base64."""
    try:
        body: PaymentBody = _PAYMENT_DECODERS[rules.payment_type].decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _validation_failure(exc) from None
    return body.domain()


def encode_payment(payment: Payment) -> bytes:
    return encode(_PAYMENT_BODIES[type(payment)].of(payment))  # type: ignore[arg-type]


class PaymentResponse(msgspec.Struct, omit_defaults=True, gc=False):
    channel_id: str
    cumulative_owed_amount: int
    created_at: str
    k: int | None = None
    i: int | None = None


def payment_response(rules: AnyRules, terms: ChannelTerms, state: PaymentState) -> bytes:
    """The vendor's 201/200 body for the accepted state (SPEC §5.0)."""
    response = PaymentResponse(terms.channel_id, state.owed, state.created_at)
    if rules.response_index is not None:
        setattr(response, rules.response_index, state.index)
    return encode(response)


# --- vendor: batched and streamed payments (§12) --------------------------------------------
# An item is a payment body plus `mode` and its (required) `channel_id`: exactly what a
# single POST to /channels/{mode}/{channel_id}/payments would carry, so it is judged so.


def _item_type(rules: AnyRules) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        f"{rules.mode.value}_item",
        [("channel_id", str)],
        bases=(payment_body_type(rules),),
        tag_field="mode",
        tag=rules.mode.value,
        kw_only=True,
    )


_ITEM_TYPES = {rules.mode: _item_type(rules) for rules in ALL}
_ITEM_RULES: dict[type[Any], AnyRules] = {_ITEM_TYPES[rules.mode]: rules for rules in ALL}
_AnyItem = Union[tuple(_ITEM_TYPES.values())]  # type: ignore[valid-type]  # noqa: UP007
_item_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_AnyItem)


class _Envelope(Strict):
    payments: list[msgspec.Raw]


class BatchRequest(Strict):
    """1 to 1024 payments, each a single payment's body plus its `mode` and
    `channel_id`, each judged as if POSTed alone: an item of another shape gets its
    refusal as its own result (SPEC §12). Decoded in one pass when all are well formed."""

    payments: list[_AnyItem]  # type: ignore[valid-type]


_well_formed_decoder = msgspec.json.Decoder(BatchRequest)


class BatchItem(msgspec.Struct, frozen=True, gc=False):  # 4x cheaper to build than a dataclass
    """One decoded item of a batch: its mode's rules, channel id and payment."""

    rules: AnyRules
    channel_id: str
    payment: Payment


def _item(body: Any, valid_ids: set[str] | None = None) -> BatchItem:
    """A schema-valid item: a malformed channel id is its 404, bad base64 its 400.
    `valid_ids` remembers the ids a batch already checked (its channels repeat)."""
    channel_id = body.channel_id
    if valid_ids is None or channel_id not in valid_ids:
        if not is_channel_id(channel_id):
            raise NanoMoniError(Code.channel_not_found, "no such channel: not a channel id")
        if valid_ids is not None:
            valid_ids.add(channel_id)
    return BatchItem(_ITEM_RULES[type(body)], channel_id, body.domain())


def _refused_item(raw: bytes | str) -> NanoMoniError:
    """Why an item that is not a well-formed payment of a known mode is refused, in
    the order a single POST meets them: its mode (404), its channel id (404), its body."""
    try:
        _item_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        failure = _validation_failure(exc)
    else:  # pragma: no cover - only refused items come here
        raise AssertionError("the item is well formed")
    try:
        members = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return failure
    if isinstance(members, dict):
        if "mode" in members:
            mode = members["mode"]
            try:
                rules_for(mode if isinstance(mode, str) else repr(mode))
            except NanoMoniError as unknown:
                return unknown
        if "channel_id" in members and not (
            isinstance(members["channel_id"], str) and is_channel_id(members["channel_id"])
        ):
            return NanoMoniError(Code.channel_not_found, "no such channel: not a channel id")
    return failure


def decode_batch(
    raw: bytes | str, max_items: int = config.MAX_BATCH_ITEMS
) -> list[BatchItem | NanoMoniError]:
    """A batch body (§12): each item decoded, or the error it would get alone. The
    envelope's own errors raise: not JSON, not an object, no `payments` list, none
    (422); more than `max_items` (413)."""
    try:
        items: Sequence[Any] = _well_formed_decoder.decode(raw).payments
        well_formed = True
    except (msgspec.ValidationError, msgspec.DecodeError):
        items = decode(raw, _Envelope).payments  # raises the envelope's 422
        well_formed = False
    if not items:
        raise ValidationFailed(
            "invalid request body: payments must not be empty (payments)",
            [{"field": "payments", "message": "empty"}],
        )
    if len(items) > max_items:
        raise NanoMoniError(Code.payload_too_large, f"a batch carries at most {max_items} payments")
    decoded: list[BatchItem | NanoMoniError] = []
    valid_ids: set[str] = set()
    for item in items:
        try:
            decoded.append(_item(item if well_formed else _item_decoder.decode(item), valid_ids))
        except (msgspec.ValidationError, msgspec.DecodeError):
            decoded.append(_refused_item(item))
        except NanoMoniError as exc:
            decoded.append(exc)
    return decoded


def decode_frame(
    raw: bytes | str, max_items: int = config.MAX_BATCH_ITEMS
) -> list[BatchItem | NanoMoniError]:
    """A stream frame (§12): a batch body, or one payment object (a batch of one).
    Anything else raises the envelope's error (422/413), like `decode_batch`."""
    marker = '"payments"' if isinstance(raw, str) else b'"payments"'
    if marker not in raw:  # type: ignore[operator]
        try:
            return [_item(_item_decoder.decode(raw))]
        except NanoMoniError as exc:
            return [exc]
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    try:
        return decode_batch(raw, max_items)
    except ValidationFailed as failure:
        try:
            members = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise failure from None
        if isinstance(members, dict) and "payments" not in members:
            return [_refused_item(raw)]
        raise


def encode_batch(items: Sequence[tuple[AnyRules, Payment]]) -> bytes:
    """The client's batch body; every payment must carry its channel id."""
    encoded = []
    for rules, payment in items:
        body = _PAYMENT_BODIES[type(payment)].of(payment)  # type: ignore[arg-type]
        if payment.channel_id is None:
            raise ValueError("a batched payment names its channel")
        members = {name: getattr(body, name) for name in body.__struct_fields__}
        encoded.append(_ITEM_TYPES[rules.mode](**members))
    return encode(_BatchRequest(encoded))


class _BatchRequest(msgspec.Struct):
    payments: list[Any]


class ItemAccepted(msgspec.Struct, omit_defaults=True, gc=False):
    """An accepted (201) or replayed (200) item: the status, then the §5 answer."""

    status: int
    channel_id: str
    cumulative_owed_amount: int
    created_at: str
    k: int | None = None
    i: int | None = None


class ItemRefused(msgspec.Struct, omit_defaults=True, gc=False):
    status: int
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None


def item_accepted(
    rules: AnyRules, terms: ChannelTerms, state: PaymentState, replay: bool
) -> ItemAccepted:
    answer = ItemAccepted(200 if replay else 201, terms.channel_id, state.owed, state.created_at)
    if rules.response_index is not None:
        setattr(answer, rules.response_index, state.index)
    return answer


def item_refused(exc: NanoMoniError) -> ItemRefused:
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    return ItemRefused(exc.status, exc.detail, exc.code.value, errors)


class BatchResponse(msgspec.Struct):
    results: list[ItemAccepted | ItemRefused]


class ItemResult(msgspec.Struct, omit_defaults=True, gc=False):
    """One result as a client reads it: an answer or an error."""

    status: int
    channel_id: str | None = None
    cumulative_owed_amount: int | None = None
    created_at: str | None = None
    k: int | None = None
    i: int | None = None
    detail: str | None = None
    code: str | None = None


class BatchResults(msgspec.Struct):
    results: list[ItemResult]


def decode_batch_results(raw: bytes) -> list[ItemResult]:
    return decode(raw, BatchResults).results


class ClosureRequest(Strict):
    """A vendor closure asked for by the channel's client (or by the vendor's operator,
    who sends the admin token instead of a signature)."""

    channel_id: str
    client_signature_b64: str | None = None


def decode_closure(raw: bytes) -> CloseRequest:
    body = decode(raw, ClosureRequest)
    text = body.client_signature_b64
    signature = None if text is None else b64decode(text, field="client_signature_b64")
    return CloseRequest(channel_id=body.channel_id, client_signature=signature)


# --- service endpoints and errors --------------------------------------------------------------


class HealthResponse(msgspec.Struct):
    status: str
    service: str
    version: str


class HealthDegraded(HealthResponse):
    """/health's 503: the service runs but cannot serve (SPEC §7), and why."""

    detail: str
    code: str


class ErrorResponse(msgspec.Struct, omit_defaults=True):
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None
