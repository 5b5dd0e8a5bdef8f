"""A channel's life after open (SPEC §4.5–§4.6 [v1.1]): expiry, the dispute window,
checkpoints, top-ups and the issuer's receipts. Pure rules: no I/O.

The state transitions themselves (open → closing → closed, money moving) are one
atomic store step each, judged with the store's clock; here is what they share:
the units of time, what a receipt refunds, what gets signed, and the checks that
need no store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec

from nanomoni import crypto
from nanomoni.encoding import canonical_json, public_key_der
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import TopUp
from nanomoni.protocol.model import ChannelTerms, Receipt, ReceiptKind, SignedReceipt
from nanomoni.protocol.modes import AnyRules

MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Lua numbers are doubles: every time a Redis script computes (now + ttl, start +
# window) stays an exact integer below 2**53 µs, i.e. before the year 2255.
MAX_SECONDS = 100 * 365 * 24 * 3600

NONCE_MIN, NONCE_MAX = 16, 64  # bytes of a top-up nonce (as an open's, SPEC §4.3)


# --- time ---------------------------------------------------------------------------------


def now_us() -> int:
    """This host's clock in µs (vendors and clients; the issuer's store has its own)."""
    return time.time_ns() // 1000


def iso_from_us(micros: int) -> str:
    """SPEC §1 timestamp of a store time: always with 6 fraction digits."""
    return (_EPOCH + micros * _MICROSECOND).isoformat(timespec="microseconds")


def us_from_iso(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return (moment - _EPOCH) // _MICROSECOND


def seconds_to_us(seconds: float) -> int:
    if not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"{seconds} s is outside 0..{MAX_SECONDS} s")
    return round(seconds * MICROS)


# --- opening: the channel's lifetime --------------------------------------------------------


def channel_ttl_us(ttl_s: int | None, *, min_s: float, max_s: float) -> int:
    """The lifetime an open asks for (default: the issuer's maximum), or 400 invalid_ttl."""
    if ttl_s is None:
        return seconds_to_us(max_s)
    if not min_s <= ttl_s <= max_s:
        raise NanoMoniError(
            Code.invalid_ttl, f"ttl_s must be between {min_s:g} and {max_s:g} seconds, got {ttl_s}"
        )
    return seconds_to_us(ttl_s)


def require_unexpired(terms: ChannelTerms, now: int) -> None:
    """Vendor side: no payment once the channel's expiry has passed (SPEC §4.6)."""
    if terms.expires_at is not None and now >= terms.expires_at:
        raise NanoMoniError(
            Code.channel_closed,
            f"channel {terms.channel_id} expired at {iso_from_us(terms.expires_at)}",
        )


# --- receipts ---------------------------------------------------------------------------------


def client_refund(kind: ReceiptKind, amount: int, vendor_credited: int) -> int:
    """What a step refunded the client: everything not credited to the vendor when the
    channel closes (settlement, finalization), nothing otherwise."""
    if kind in (ReceiptKind.settlement, ReceiptKind.finalization):
        return amount - vendor_credited
    return 0


def receipt_message(receipt: Receipt) -> bytes:
    """What the issuer signs: the canonical JSON of the receipt object (SPEC §1, §4.5)."""
    return canonical_json(msgspec.structs.asdict(receipt))


def check_receipt(issuer_der: bytes, signed: SignedReceipt, channel_id: str) -> None:
    """A receipt the issuer really signed, for this channel (client and vendor side)."""
    if signed.receipt.channel_id != channel_id:
        raise NanoMoniError(
            Code.invalid_signature,
            f"a receipt of channel {signed.receipt.channel_id} was sent for channel {channel_id}",
        )
    if not crypto.verify_signature(issuer_der, receipt_message(signed.receipt), signed.signature):
        raise NanoMoniError(
            Code.invalid_signature,
            f"invalid signature: receipt {signed.receipt.seq} of channel {channel_id} is not "
            "signed by the issuer",
        )


# --- top-ups -----------------------------------------------------------------------------------


def require_top_up(rules: AnyRules) -> None:
    """Only a channel whose index is the amount itself can grow (SPEC §4.6)."""
    if rules.members is not None:
        raise NanoMoniError(
            Code.mode_mismatch,
            f"a {rules.mode.value} channel commits to a fixed number of units and cannot be "
            "topped up: open a new channel",
        )


def check_top_up(terms: ChannelTerms, request: TopUp) -> None:
    """Signed by the channel's client (401 otherwise), a positive amount, a nonce of
    16–64 bytes; the store decides the rest atomically."""
    if request.channel_id != terms.channel_id:
        raise NanoMoniError(
            Code.id_mismatch,
            f"body channel_id {request.channel_id} differs from the path's {terms.channel_id}",
        )
    key = public_key_der(terms.client_public_key_der_b64)
    if not crypto.verify_signature(key, request.signed, request.signature):
        raise NanoMoniError(
            Code.unauthorized, "client_signature_b64 is not the channel client's signature"
        )
    if request.amount < 1:
        raise NanoMoniError(Code.invalid_amount, f"a top-up adds at least 1, got {request.amount}")
    if not NONCE_MIN <= len(request.nonce) <= NONCE_MAX:
        raise NanoMoniError(
            Code.invalid_encoding,
            f"nonce_b64 must decode to {NONCE_MIN}..{NONCE_MAX} bytes, got {len(request.nonce)}",
        )


def top_up_digest(request: TopUp) -> bytes:
    """Identifies a top-up's body: the same nonce with another body is a mismatch."""
    return crypto.digest(request.signed, "sha256")
