"""SPEC §11 on the wire: the `Payment`, `Payment-Required` and `Payment-Receipt`
headers and the stream's `payment-required` event, shared by the paywall
(`nanomoni.paywall`) and the paying client (`nanomoni.client.auth`).

Every header value is base64url without padding of UTF-8 JSON, decoded strictly
(SPEC §1). A `Payment` header is `{"mode", "channel_id"}`, optionally
`request_id`, plus that mode's payment members (SPEC §5.1–5.5) exactly as a
`POST .../payments` body carries them: their decoding is `nanomoni.wire`'s.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, Union

import msgspec

from nanomoni import wire
from nanomoni.encoding import (
    b64url_nopad,
    b64url_nopad_bytes,
    b64url_nopad_decode,
    is_channel_id,
)
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Payment
from nanomoni.protocol.modes import RULES, AnyRules

VERSION = 1
MAX_HEADER = 8192  # characters of a Payment header value (a 64-sibling proof fits)
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
PAYMENT = "payment"
PAYMENT_REQUIRED = "payment-required"
PAYMENT_RECEIPT = "payment-receipt"
PER_REQUEST, PER_CHUNK = "request", "chunk"


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """What a priced route asks for (the `Payment-Required` header, SPEC §11)."""

    version: int = VERSION
    issuer_url: str
    vendor_public_key_der_b64: str
    price: int
    modes: list[str]
    hash_algs: list[str]
    per: str = PER_REQUEST


class StreamRequirements(Requirements, frozen=True, kw_only=True):
    """The data of a stream's `payment-required` event: which channel ran dry, where
    to pay it (a path on the paywall's origin), and where its credit stands; `price`
    is what the waiting event costs."""

    channel_id: str
    payments_url: str
    owed: int = 0
    consumed: int = 0


class Receipt(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """`Payment-Receipt` of a paid response: the channel's credit after this request."""

    channel_id: str
    owed: int
    consumed: int
    price: int


class Credit(msgspec.Struct, frozen=True, kw_only=True):
    """Where a channel stands, in a 402 `insufficient_credit` body."""

    channel_id: str
    owed: int
    consumed: int


class Refusal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A 402 (or 4xx/5xx) body of the paywall: SPEC §6 plus what to pay."""

    detail: str
    code: str
    requirements: Requirements | None = None
    credit: Credit | None = None
    errors: list[dict[str, str]] | None = None


class PaymentHeader(msgspec.Struct, frozen=True, gc=False):
    """A decoded `Payment`: the channel, an optional request id, and the payment
    itself (None: spend credit already paid). (A Struct: one is made per request.)"""

    rules: AnyRules
    channel_id: str
    request_id: str | None
    payment: Payment | None


def encode_value(value: msgspec.Struct | dict[str, Any]) -> str:
    return b64url_nopad(wire.encode(value))


def encode_header(value: msgspec.Struct | dict[str, Any]) -> bytes:
    """`encode_value` as the bytes an ASGI header carries (a receipt per response)."""
    return b64url_nopad_bytes(wire.encode(value))


def decode_value(text: str | bytes, name: str, max_length: int = MAX_HEADER) -> bytes:
    """The JSON carried by a header value; invalid_encoding / validation_error."""
    if len(text) > max_length:
        raise NanoMoniError(
            Code.validation_error, f"the {name} header is longer than {max_length} characters"
        )
    return b64url_nopad_decode(text, field=f"the {name} header")


_members = msgspec.json.Decoder(dict[str, Any])
_ENVELOPE = frozenset(("mode", "request_id", "channel_id"))  # a Payment's own members


def _header_type(rules: AnyRules) -> type[msgspec.Struct]:
    """The mode's strict payment body plus the members a Payment header adds."""
    body = wire.payment_body_type(rules)
    return msgspec.defstruct(
        f"{body.__name__}Header",
        [("mode", str | None, None), ("request_id", str | None, None)],
        bases=(body,),
        kw_only=True,
    )


_HEADER_TYPES = {rules.mode: _header_type(rules) for rules in RULES.values()}
_BY_NAME = {rules.mode.value: rules for rules in RULES.values()}

# The fast path: a well-formed header decoded by one msgspec call, either as a
# channel-only header or as a payment of the mode its `mode` names (a tagged union),
# and its ids checked. Anything refused here is decoded again by `decode_payment`'s
# checks, which name the fault; this path accepts nothing that those refuse.
class _Spend(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    mode: str
    channel_id: str
    request_id: str | None = None


def _tagged_type(rules: AnyRules) -> type[msgspec.Struct]:
    body = wire.payment_body_type(rules)
    return msgspec.defstruct(
        f"{body.__name__}Tagged",
        [("request_id", str | None, None)],
        bases=(body,),
        kw_only=True,
        tag_field="mode",
        tag=rules.mode.value,
    )


_TAGGED = {_tagged_type(rules): rules for rules in RULES.values()}
_spend = msgspec.json.Decoder(_Spend)
_paid = msgspec.json.Decoder(Union[tuple(_TAGGED)])  # noqa: UP007


def _fast(raw: bytes) -> PaymentHeader | None:
    """The header if it is a well-formed one; None: let the checks name its fault.
    A channel-only header has no member beyond its 3 names (values hold no colon)."""
    try:
        if raw.count(b":") <= 3:
            spend = _spend.decode(raw)
            rules = _BY_NAME.get(spend.mode)
            channel_id, request_id, payment = spend.channel_id, spend.request_id, None
        else:
            body = _paid.decode(raw)
            rules = _TAGGED[type(body)]
            channel_id, request_id = body.channel_id, body.request_id
            payment = body.domain()
    except (msgspec.ValidationError, msgspec.DecodeError, NanoMoniError):
        return None
    if (
        rules is None
        or channel_id is None
        or not is_channel_id(channel_id)
        or (request_id is not None and REQUEST_ID.fullmatch(request_id) is None)
    ):
        return None
    return PaymentHeader(rules, channel_id, request_id, payment)


def _invalid(detail: str, field: str) -> wire.ValidationFailed:
    return wire.ValidationFailed(detail, [{"field": field, "message": detail}])


def decode_payment(
    raw: bytes, *, path_mode: AnyRules | None = None, path_channel: str | None = None
) -> PaymentHeader:
    """A `Payment` JSON (header, or a payments_url body whose path names the mode and
    channel: then `mode` and `channel_id` may be left out). Schema errors are 422
    validation_error, bad base64 invalid_encoding, a bad channel id channel_not_found
    (SPEC §1)."""
    if path_mode is None:
        fast = _fast(raw)
        if fast is not None:
            return fast
    return _checked(raw, path_mode, path_channel)


def _checked(
    raw: bytes, path_mode: AnyRules | None, path_channel: str | None
) -> PaymentHeader:
    """`decode_payment` member by member, naming the first fault."""
    try:
        members = _members.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise _invalid("the payment is not a JSON object", "body") from None
    get = members.get
    mode = get("mode")
    if mode is None and path_mode is not None:
        rules = path_mode
    elif not isinstance(mode, str):
        raise _invalid("the payment needs its mode (a string)", "mode")
    else:
        found = _BY_NAME.get(mode)
        if found is None:
            raise _invalid(f"unknown payment mode {mode[:40]!r}", "mode")
        rules = found
        if path_mode is not None and rules is not path_mode:
            raise NanoMoniError(Code.mode_mismatch, "the body's mode differs from the path's")
    request_id = get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id)
    ):
        raise _invalid("request_id must be 16 to 64 URL-safe characters", "request_id")
    channel_id = get("channel_id", path_channel)
    if not isinstance(channel_id, str):
        raise _invalid("the payment needs its channel_id (a string)", "channel_id")
    if not is_channel_id(channel_id):
        raise NanoMoniError(Code.channel_not_found, "no such channel: not a channel id")
    payment = None
    if not _ENVELOPE.issuperset(members):  # payment members too
        body = wire.decode(raw, _HEADER_TYPES[rules.mode])
        payment = body.domain()  # type: ignore[attr-defined]
    return PaymentHeader(rules, channel_id, request_id, payment)


def encode_payment(
    rules: AnyRules, channel_id: str, payment: Payment | None, request_id: str | None = None
) -> str:
    """The `Payment` header value (the client's side)."""
    members: dict[str, Any] = {"mode": rules.mode.value, "channel_id": channel_id}
    if request_id is not None:
        members["request_id"] = request_id
    if payment is not None:
        members |= _members.decode(wire.encode_payment(payment))
    return encode_value(members)


def decode_requirements(text: str | bytes) -> Requirements:
    return _decode_struct(text, PAYMENT_REQUIRED, Requirements)


def decode_receipt(text: str | bytes) -> Receipt:
    return _decode_struct(text, PAYMENT_RECEIPT, Receipt)


T = TypeVar("T")


def _decode_struct(text: str | bytes, name: str, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(decode_value(text, name, max_length=1 << 16), type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _invalid(f"the {name} header is not valid: {exc}", name) from None


# --- server-sent events (SPEC §11 metered streams) ---------------------------------------

EVENT_STREAM = b"text/event-stream"
# An event ends at an empty line; a line ends at CRLF, LF or CR.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete events (each with its terminating empty line, bytes unchanged) and the
    incomplete rest. A trailing CR may be half of a CRLF: it waits for more bytes."""
    events: list[bytes] = []
    start = 0
    limit = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
    while True:
        end = _EVENT_END.search(buffer, start, limit)
        if end is None:
            return events, buffer[start:]
        events.append(buffer[start : end.end()])
        start = end.end()


def event_fields(event: bytes) -> tuple[str, str]:
    """(event type, data) of one event; type "message" unless named (SSE rules)."""
    kind, data = "message", []
    for line in event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name:
            continue  # blank, or a comment
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            kind = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value.decode("utf-8", "replace"))
    return kind, "\n".join(data)


def carries_data(event: bytes) -> bool:
    """Whether an event is more than comments and blank lines (keep-alives cost nothing)."""
    return any(line and not line.startswith(b":") for line in event.splitlines())


def payment_required_event(data: StreamRequirements) -> bytes:
    return b"event: " + PAYMENT_REQUIRED.encode() + b"\ndata: " + wire.encode(data) + b"\n\n"
