"""What the parties send each other, as the rules see it: decoded, binary, typed.

The HTTP edge (`nanomoni.wire`) turns JSON bodies into these (strict base64,
exact lengths) and back; nothing here knows about base64 text except the public
keys, which are identities compared as text (SPEC §1).
"""

from __future__ import annotations

import msgspec

# --- payments (vendor, SPEC §5) -------------------------------------------------------


class SignaturePayment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The client's signature over the cumulative amount it owes (§5.1)."""

    channel_id: str
    amount: int
    signature: bytes


class PaywordPayment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Token k of the client's hash chain (§5.2)."""

    k: int
    token: bytes
    channel_id: str | None = None


class TreePayment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Leaf i of the client's PayTree, revealed by its secret (leaf = H(secret)), with
    the siblings the mode asks for (§5.3–5.5). `leaf` is optional on the wire; when
    sent it must equal H(secret)."""

    i: int
    secret: bytes
    path: bytes  # the siblings sent, leaf level first, joined (32 bytes each)
    leaf: bytes | None = None
    channel_id: str | None = None

    @property
    def siblings(self) -> list[bytes]:
        """The siblings sent, one by one."""
        return [self.path[at : at + 32] for at in range(0, len(self.path), 32)]


Payment = SignaturePayment | PaywordPayment | TreePayment


# --- settlements (vendor → issuer, SPEC §4.5) -------------------------------------------


# `final` (SPEC §4.5 [v1.1]): None or True settles and closes; False is a checkpoint
# (the vendor withdraws, the channel stays open). The vendor's signature covers it
# whenever the body carries it.


class SignatureSettlement(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    amount: int
    client_signature: bytes
    vendor_signature: bytes
    final: bool | None = None


class PaywordSettlement(msgspec.Struct, frozen=True, kw_only=True):
    vendor_key: str
    k: int
    token: bytes
    vendor_signature: bytes
    final: bool | None = None


class TreeSettlement(msgspec.Struct, frozen=True, kw_only=True):
    """All three PayTree modes settle with the leaf's secret and the full path."""

    vendor_key: str
    i: int
    secret: bytes
    leaf: bytes
    siblings: list[bytes]
    vendor_signature: bytes
    final: bool | None = None


Settlement = SignatureSettlement | PaywordSettlement | TreeSettlement


# --- closure (client → vendor, SPEC §5.6) ----------------------------------------------


class CloseRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Settle now: signed by the channel's client, or sent by the vendor's operator."""

    channel_id: str
    client_signature: bytes | None = None


# --- opening (client → issuer, SPEC §4.3) ------------------------------------------------


class OpenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An open body: the common members typed, the mode members by their wire name.

    `signed` is the canonical JSON the client signed (every non-null member but
    the signature). `mode_members` holds every non-null member that belongs to
    some mode, binary ones decoded; the rules of the path's mode decide which
    are allowed and required.
    """

    client_key: str
    client_der: bytes
    vendor_key: str
    vendor_der: bytes
    amount: int
    signature: bytes
    signed: bytes
    hash_alg: str | None = None
    mode_members: dict[str, int | bytes] = {}
    nonce: bytes | None = None  # makes equal terms a new channel (SPEC §4.3)
    issuer_key: str | None = None  # binds the open to one issuer
    ttl_s: int | None = None  # the channel's lifetime (default: the issuer's maximum)


# --- the client's protection (client → issuer, SPEC §4.6) ---------------------------------


class TopUp(msgspec.Struct, frozen=True, kw_only=True):
    """Raise a signature channel's amount by `amount`; `signed` is the canonical JSON the
    client signed (every member but the signature), `nonce` makes it idempotent."""

    channel_id: str
    amount: int
    nonce: bytes
    signature: bytes
    signed: bytes
