"""Wire encodings shared by every layer (SPEC §1): strict base64, canonical JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from nanomoni.errors import Code, NanoMoniError


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# The last character before "=" / "==" may only carry zero padding bits (SPEC §1:
# one byte string, one text): its alphabet index is a multiple of 4 / 16.
_ONE_PAD_LAST = frozenset("AEIMQUYcgkosw048")
_TWO_PAD_LAST = frozenset("AQgw")


def b64decode(text: str, length: int | None = None, field: str = "value") -> bytes:
    """Strict, canonical standard base64 with padding; optionally an exact decoded length."""
    try:
        # Same acceptance as base64.b64decode(validate=True), 2.5x faster (hot path).
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        raise NanoMoniError(Code.invalid_encoding, f"{field} is not valid base64") from None
    if text[-1:] == "=" and (
        text[-3] not in _TWO_PAD_LAST if text[-2] == "=" else text[-2] not in _ONE_PAD_LAST
    ):
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} is not canonical base64 (non-zero padding bits)"
        )
    if length is not None and len(data) != length:
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} must decode to {length} bytes, got {len(data)}"
        )
    return data


def b64decode_list(texts: list[str], length: int, field: str) -> list[bytes]:
    """Each entry as `b64decode`; an error names the first bad entry."""
    try:
        return [b64decode(text, length) for text in texts]
    except NanoMoniError:
        for n, text in enumerate(texts):
            b64decode(text, length, field=f"{field}[{n}]")
        raise


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
