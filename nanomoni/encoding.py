"""Wire encodings shared by every layer (SPEC §1): strict base64, canonical JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nanomoni.errors import Code, NanoMoniError


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, length: int | None = None, field: str = "value") -> bytes:
    """Strict standard base64 with padding; optionally an exact decoded length."""
    try:
        # Same acceptance as base64.b64decode(validate=True), 2.5x faster (hot path).
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise NanoMoniError(Code.invalid_encoding, f"{field} is not valid base64") from None
    if length is not None and len(data) != length:
        raise NanoMoniError(
            Code.invalid_encoding, f"{field} must decode to {length} bytes, got {len(data)}"
        )
    return data


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
