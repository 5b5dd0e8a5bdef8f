"""Wire encodings shared by every layer (SPEC §1): strict base64, canonical JSON."""

from __future__ import annotations

import base64
import binascii
import json
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


def is_channel_id(text: str) -> bool:
    """SPEC §1 [v1.1]: exactly 43 URL-safe characters that are the canonical text of
    32 bytes (the last one carries 2 zero padding bits)."""
    return (
        len(text) == CHANNEL_ID_LEN
        and text[-1] in _ONE_PAD_LAST
        and _URLSAFE.issuperset(text)
    )


def require_channel_id(text: str) -> str:
    """A path's channel id, or 404 before any store or issuer is asked (SPEC §1)."""
    if not is_channel_id(text):
        raise NanoMoniError(Code.channel_not_found, "no such channel: not a channel id")
    return text


def b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64url_nopad_decode(text: str | bytes, field: str = "value") -> bytes:
    """Strict, canonical URL-safe base64 without padding (SPEC §11 header values)."""
    try:
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError:
        raw = b"!"  # not ASCII: refused below
    rest = len(raw) % 4
    # The standard alphabet's own characters and padding have no place here; the
    # strict decoder refuses everything else outside the alphabet.
    if rest == 1 or b"+" in raw or b"/" in raw or b"=" in raw:
        raise NanoMoniError(Code.invalid_encoding, f"{field} is not base64url without padding")
    last = raw[-1:].decode("ascii", "replace")
    if (rest == 2 and last not in _TWO_PAD_LAST) or (rest == 3 and last not in _ONE_PAD_LAST):
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} is not canonical base64url (non-zero padding bits)"
        )
    try:
        return binascii.a2b_base64(
            raw.translate(_URL_TO_STANDARD) + b"=" * (-rest % 4), strict_mode=True
        )
    except binascii.Error:
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} is not base64url without padding"
        ) from None


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The signed bytes: nulls and signature members dropped, sorted keys, no spaces."""
    kept = {
        key: value
        for key, value in obj.items()
        if value is not None and key != "signature_b64" and not key.endswith("_signature_b64")
    }
    return json.dumps(kept, sort_keys=True, separators=(",", ":")).encode("utf-8")


def utc_now() -> str:
    return datetime.now(UTC).isoformat()
