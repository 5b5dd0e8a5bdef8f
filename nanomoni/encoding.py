"""Wire encodings shared by every layer (SPEC §1): strict base64, canonical JSON."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from nanomoni import _core
from nanomoni.errors import Code, NanoMoniError


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# The last character before "=" / "==" (base64url: at the end) may only carry zero
# padding bits (SPEC §1): its alphabet index is a multiple of 4 / 16.
_ONE_PAD_LAST = frozenset("AEIMQUYcgkosw048")
_TWO_PAD_LAST = frozenset("AQgw")


def b64decode(text: str, length: int | None = None, field: str = "value") -> bytes:
    """Strict, canonical standard base64 with padding (SPEC §1: one byte string, one
    text); optionally an exact decoded length. Decoded natively (csrc/base64.c)."""
    data = _core.base64_decode(text, -1 if length is None else length)
    if data is None:
        raise NanoMoniError(Code.invalid_encoding, _refusal(text, length, field))
    return data


def b64decode_list(texts: list[str], length: int, field: str) -> list[bytes]:
    """Each entry as `b64decode`; an error names the first bad entry."""
    data = _core.base64_decode_list(texts, length)
    if data is None:
        for n, text in enumerate(texts):
            b64decode(text, length, field=f"{field}[{n}]")
    assert data is not None
    return data


def b64decode_joined(texts: list[str], length: int, field: str) -> bytes:
    """`b"".join(b64decode_list(texts, length, field))`, decoded into one buffer."""
    data = _core.base64_decode_joined(texts, length)
    if data is None:
        b64decode_list(texts, length, field)  # names the first bad entry
        raise AssertionError("base64_decode_joined refused what base64_decode_list took")
    return data


def _refusal(text: object, length: int | None, field: str) -> str:
    """Why the native decoder refused `text`, in words."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)  # type: ignore[arg-type]
    except (binascii.Error, ValueError, TypeError):
        return f"{field} is not valid base64"
    if length is not None and len(data) != length:
        return f"{field} must decode to {length} bytes, got {len(data)}"
    return f"{field} is not canonical base64 (non-zero padding bits)"


@lru_cache(maxsize=8192)
def public_key_der(text: str) -> bytes:
    """The DER bytes of a public key identity taken from stored channel terms."""
    return b64decode(text, field="public key")


_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
CHANNEL_ID_LEN = 43  # 32 bytes, URL-safe base64 without padding
_CHANNEL_ID = re.compile(r"[A-Za-z0-9_-]{42}[" + "".join(sorted(_ONE_PAD_LAST)) + "]")


def is_channel_id(text: str) -> bool:
    """SPEC §1 [v1.1]: exactly 43 URL-safe characters that are the canonical text of
    32 bytes (the last one carries 2 zero padding bits)."""
    return _CHANNEL_ID.fullmatch(text) is not None


def require_channel_id(text: str) -> str:
    """A path's channel id, or 404 before any store or issuer is asked (SPEC §1)."""
    if not is_channel_id(text):
        raise NanoMoniError(Code.channel_not_found, "no such channel: not a channel id")
    return text


def b64url_nopad(data: bytes) -> str:
    return b64url_nopad_bytes(data).decode("ascii")


_URLSAFE_BYTES = "".join(sorted(_URLSAFE)).encode()
# Last characters with zero padding bits, as byte values (see _ONE_PAD_LAST).
_ONE_PAD_LAST_BYTE = frozenset(map(ord, _ONE_PAD_LAST))
_TWO_PAD_LAST_BYTE = frozenset(map(ord, _TWO_PAD_LAST))


def b64url_nopad_bytes(data: bytes) -> bytes:
    """URL-safe base64 without padding, as ASCII bytes (a header value)."""
    return _core.base64url_encode(bytes(data))


def b64url_nopad_decode(text: str | bytes, field: str = "value") -> bytes:
    """Strict, canonical URL-safe base64 without padding (SPEC §11 header values)."""
    data = _core.base64url_decode(text)
    if data is not None:
        return data
    _refuse_b64url(text, field)
    raise NanoMoniError(Code.invalid_encoding, f"{field} is not base64url without padding")


def _refuse_b64url(text: str | bytes, field: str) -> None:
    """Raise the refusal naming why `text` is not canonical base64url (the native
    decoder only says that it is not)."""
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raw = b"!"  # not ASCII: refused below
    else:
        raw = bytes(text)
    rest = len(raw) & 3
    # Only the URL-safe alphabet: the standard alphabet's own characters, padding and
    # anything else are left over by deleting it.
    if rest == 1 or raw.translate(None, _URLSAFE_BYTES):
        raise NanoMoniError(Code.invalid_encoding, f"{field} is not base64url without padding")
    if (rest == 2 and raw[-1] not in _TWO_PAD_LAST_BYTE) or (
        rest == 3 and raw[-1] not in _ONE_PAD_LAST_BYTE
    ):
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} is not canonical base64url (non-zero padding bits)"
        )


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The signed bytes: nulls and signature members dropped, sorted keys, no spaces."""
    kept = {
        key: value
        for key, value in obj.items()
        if value is not None and key != "signature_b64" and not key.endswith("_signature_b64")
    }
    return json.dumps(kept, sort_keys=True, separators=(",", ":")).encode("utf-8")


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def utc_now() -> str:
    """`datetime.now(UTC).isoformat()`, the date and time formatted once a second (every
    accepted payment is stamped: formatting a datetime costs about 1 µs)."""
    global _second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    formatted = _second  # one read: threads may replace it meanwhile
    if formatted[0] != second:
        formatted = _second = (second, datetime.fromtimestamp(second, UTC).isoformat()[:-6])
    text = formatted[1]
    return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"
