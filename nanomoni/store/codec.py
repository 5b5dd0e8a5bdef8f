"""What every store adapter shares: record blobs, node-key packing, refusals."""

from __future__ import annotations

import msgspec

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Closure

MAX_INT = 2**63 - 1

_terms_decoder = msgspec.msgpack.Decoder(ChannelTerms)
_closure_decoder = msgspec.msgpack.Decoder(Closure)
_encoder = msgspec.msgpack.Encoder()


def check_amount(amount: int, *, allow_zero: bool) -> None:
    """Amounts reach the store already validated; this guards the ledger's int64 arithmetic."""
    low = 0 if allow_zero else 1
    if not (low <= amount <= MAX_INT):
        raise NanoMoniError(Code.invalid_amount, f"amount must be in [{low}, 2**63 - 1]")


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


_DETAILS = {
    "not_registered": "the {} account is not registered",
    "insufficient_balance": "the client's balance is lower than the channel amount",
    "commitment_reused": "this commitment root was already used by another channel",
    "channel_not_found": "no such channel",
    "already_closed": "the channel is already settled with a different proof",
    "exceeds_amount": "owed exceeds the channel amount",
    "invalid_amount": "the total supply would exceed 2**63 - 1",
}


def refusal(code: str, who: str = "") -> NanoMoniError:
    """The NanoMoniError for a refusal code reported by a store transaction."""
    if code not in _DETAILS:
        raise RuntimeError(f"store transaction failed: {code}")
    return NanoMoniError(Code(code), _DETAILS[code].format(who))
