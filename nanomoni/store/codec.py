"""What every store adapter shares: record blobs, node-key packing, refusals."""

from __future__ import annotations

import msgspec

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.audit import LedgerChannel
from nanomoni.protocol.lifecycle import client_refund, iso_from_us
from nanomoni.protocol.model import ChannelTerms, Closure, IssuerChannel, Receipt, ReceiptKind

MAX_INT = 2**63 - 1

_terms_decoder = msgspec.msgpack.Decoder(ChannelTerms)
_closure_decoder = msgspec.msgpack.Decoder(Closure)
_encoder = msgspec.msgpack.Encoder()


def check_amount(amount: int, *, allow_zero: bool) -> None:
    """Amounts reach the store already validated; this guards the ledger's int64 arithmetic."""
    low = 0 if allow_zero else 1
    if not (low <= amount <= MAX_INT):
        raise NanoMoniError(Code.invalid_amount, f"amount must be in [{low}, 2**63 - 1]")


# Redis scripts compute times as doubles: exact below 2**53 µs (the year 2255).
MAX_TIME_US = 2**53 - 1


def check_times(ttl_us: int | None, dispute_window_us: int) -> None:
    """A channel's lifetime and dispute window fit the stores' time arithmetic."""
    for name, value in (("ttl", ttl_us), ("dispute window", dispute_window_us)):
        if value is not None and not 0 <= value <= MAX_TIME_US // 4:
            raise ValueError(f"the {name} {value} µs is out of range")


def check_open_key(terms: ChannelTerms) -> None:
    """Every open names the request it came from: replays are found by it."""
    if not terms.open_key:
        raise ValueError(f"channel {terms.channel_id} has no open key")


def pack_node_key(key: int) -> bytes:
    """Minimal big-endian bytes: distinct keys give distinct fields, small keys short ones."""
    if key < 0:
        raise ValueError("node keys are non-negative")
    return key.to_bytes(max(1, (key.bit_length() + 7) // 8), "big")


def terms_to_blob(terms: ChannelTerms) -> bytes:
    return _encoder.encode(terms)


def terms_from_blob(blob: bytes) -> ChannelTerms:
    return _terms_decoder.decode(blob)


def closure_to_blob(closure: Closure) -> bytes:
    """The closure without its balances: those are stored (and filled in) by the ledger."""
    return _encoder.encode(msgspec.structs.replace(closure, client_balance=0, vendor_balance=0))


def closure_from_blob(blob: bytes, client_balance: int, vendor_balance: int) -> Closure:
    closure = _closure_decoder.decode(blob)
    return msgspec.structs.replace(
        closure, client_balance=client_balance, vendor_balance=vendor_balance
    )


def settlement_to_blob(closure: Closure) -> bytes:
    """A vendor's record of the issuer's answer, balances included."""
    return _encoder.encode(closure)


def settlement_from_blob(blob: bytes) -> Closure:
    return _closure_decoder.decode(blob)


def receipt(
    channel_id: str,
    seq: int,
    kind: str,
    amount: int,
    owed: int,
    vendor_credited: int,
    at_us: int,
) -> Receipt:
    """A receipt from what the store records with the money movement; the refund is
    derived here (exact Python ints) rather than in a store script."""
    kind_ = ReceiptKind(kind)
    return Receipt(
        channel_id=channel_id,
        kind=kind_,
        amount=amount,
        owed=owed,
        vendor_credited=vendor_credited,
        client_refund=client_refund(kind_, amount, vendor_credited),
        seq=seq,
        at=iso_from_us(at_us),
    )


def ledger_channel(channel: IssuerChannel, settle_seq: int | None) -> LedgerChannel:
    """The audit's record of a channel as an adapter read it."""
    terms = channel.terms
    return LedgerChannel(
        channel_id=terms.channel_id,
        client=terms.client_public_key_der_b64,
        vendor=terms.vendor_public_key_der_b64,
        amount=terms.amount,
        state=channel.state,
        vendor_credited=channel.vendor_credited,
        root=terms.root,
        settle_seq=settle_seq,
        receipts=channel.receipts,
    )


def stored_closure(
    blob: bytes | None, vendor_credited: int, client_balance: int, vendor_balance: int, at_us: int
) -> Closure:
    """A closed channel's closure: its settlement's (blob), or a finalization's (no proof:
    the vendor keeps what checkpoints credited). closed_at is the store's time."""
    at = iso_from_us(at_us)
    if blob is None:
        return Closure(
            owed=vendor_credited,
            proof_digest=b"",
            client_balance=client_balance,
            vendor_balance=vendor_balance,
            closed_at=at,
        )
    closure = _closure_decoder.decode(blob)
    return msgspec.structs.replace(
        closure, client_balance=client_balance, vendor_balance=vendor_balance, closed_at=at
    )


_DETAILS = {
    "not_registered": (Code.not_registered, "the {} account is not registered"),
    "insufficient_balance": (
        Code.insufficient_balance,
        "the client's balance is lower than the amount to lock",
    ),
    "commitment_reused": (
        Code.commitment_reused,
        "this commitment root was already used by another channel",
    ),
    "channel_not_found": (Code.channel_not_found, "no such channel"),
    "already_closed": (
        Code.already_closed,
        "the channel is already settled with a different proof (or finalized)",
    ),
    "exceeds_amount": (Code.exceeds_amount, "owed exceeds the channel amount"),
    "invalid_amount": (Code.invalid_amount, "the total supply would exceed 2**63 - 1"),
    "amount_overflow": (Code.invalid_amount, "the channel amount would exceed 2**63 - 1"),
    "channel_closed": (Code.channel_closed, "the channel is {}: it is no longer open"),
    "duplicate_mismatch": (
        Code.duplicate_mismatch,
        "duplicate nonce: this nonce already topped up the channel with another body",
    ),
}


def refusal(code: str, who: str = "") -> NanoMoniError:
    """The NanoMoniError for a refusal code reported by a store transaction."""
    if code not in _DETAILS:
        raise RuntimeError(f"store transaction failed: {code}")
    known, detail = _DETAILS[code]
    return NanoMoniError(known, detail.format(who))
