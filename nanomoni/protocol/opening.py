"""Opening channels (SPEC §3, §4.3) and the issuer's channel views (§4.4).

Only the checks that need no store live here; registration, balance and root
reuse are decided atomically by the store.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nanomoni import crypto, wire
from nanomoni.encoding import b64decode, b64encode, b64url_nopad, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Closure, Mode
from nanomoni.protocol.modes import HASH_LEN, MEMBERS

DEFAULT_MAX_INDEX_CAP = 2**24


def channel_id_for(client_der: bytes, vendor_der: bytes, salt: bytes) -> str:
    """SPEC §3: always SHA-256, whatever the channel's hash suite."""
    return b64url_nopad(crypto.digest(client_der + vendor_der + salt, "sha256"))


def _public_key(text: str, field: str) -> bytes:
    der = b64decode(text, field=field)
    if crypto.public_key_kind(der) is None:
        raise NanoMoniError(
            Code.invalid_encoding,
            f"{field} is not a supported public key (DER SubjectPublicKeyInfo of "
            "ECDSA P-256, ECDSA secp256k1 or Ed25519)",
        )
    return der


def open_channel_terms(
    mode: Mode,
    req: wire.OpenChannelRequest,
    *,
    salt: bytes,
    channel_uuid: str,
    created_at: str,
    max_index_cap: int = DEFAULT_MAX_INDEX_CAP,
) -> ChannelTerms:
    """The terms of a channel `req` asks for, or the first SPEC §4.3 rule it breaks."""
    if req.hash_alg is not None and req.hash_alg not in crypto.HASH_ALGS:
        raise NanoMoniError(
            Code.validation_error,
            f"hash_alg must be one of {', '.join(crypto.HASH_ALGS)}, got {req.hash_alg!r}",
        )
    client_der = _public_key(req.client_public_key_der_b64, "client_public_key_der_b64")
    vendor_der = _public_key(req.vendor_public_key_der_b64, "vendor_public_key_der_b64")
    signature = b64decode(req.open_signature_b64, field="open_signature_b64")
    signed = canonical_json(msgspec.to_builtins(req))
    if not crypto.verify_signature(client_der, signed, signature):
        raise NanoMoniError(
            Code.invalid_signature,
            "open_signature_b64 is not a valid signature of the request by the client key",
        )
    if req.amount < 1:
        raise NanoMoniError(Code.invalid_amount, f"amount must be at least 1, got {req.amount}")

    root: bytes | None = None
    unit_value: int | None = None
    max_index: int | None = None
    if mode in MEMBERS:
        root_name, unit_name, max_name = MEMBERS[mode]
        root_text: str | None = getattr(req, root_name)
        unit_value = getattr(req, unit_name)
        max_index = getattr(req, max_name)
        missing = [
            name
            for name, value in (
                (root_name, root_text),
                (unit_name, unit_value),
                (max_name, max_index),
            )
            if value is None
        ]
        if missing:
            raise NanoMoniError(
                Code.missing_field,
                f"{', '.join(missing)} required for a {mode.value} channel",
            )
        assert root_text is not None and unit_value is not None and max_index is not None
        if unit_value < 1:
            raise NanoMoniError(
                Code.invalid_amount, f"{unit_name} must be at least 1, got {unit_value}"
            )
        if max_index < 1:
            raise NanoMoniError(
                Code.invalid_amount, f"{max_name} must be at least 1, got {max_index}"
            )
        # Python ints are exact: no overflow however large the product.
        if max_index * unit_value > req.amount:
            raise NanoMoniError(
                Code.exceeds_amount,
                f"{max_name} × {unit_name} = {max_index * unit_value} exceeds the amount "
                f"{req.amount}",
            )
        if max_index > max_index_cap:
            raise NanoMoniError(
                Code.exceeds_max,
                f"{max_name} {max_index} exceeds the issuer's cap {max_index_cap}",
            )
        root = b64decode(root_text, HASH_LEN, field=root_name)

    return ChannelTerms(
        id=channel_uuid,
        channel_id=channel_id_for(client_der, vendor_der, salt),
        mode=mode,
        client_public_key_der_b64=req.client_public_key_der_b64,
        vendor_public_key_der_b64=req.vendor_public_key_der_b64,
        salt_b64=b64encode(salt),
        amount=req.amount,
        hash_alg=req.hash_alg or "sha256",
        created_at=created_at,
        root=root,
        unit_value=unit_value,
        max_index=max_index,
    )


def _mode_members(terms: ChannelTerms) -> dict[str, Any]:
    if terms.mode not in MEMBERS:
        return {}
    assert terms.root is not None
    root_name, unit_name, max_name = MEMBERS[terms.mode]
    return {
        root_name: b64encode(terms.root),
        unit_name: terms.unit_value,
        max_name: terms.max_index,
    }


def channel_response(
    terms: ChannelTerms, closure: Closure | None, *, opened: bool
) -> wire.ChannelResponse:
    """The open (201, `opened=True`) or read (200) view of a channel (SPEC §4.3, §4.4)."""
    common: dict[str, Any] = {
        "channel_id": terms.channel_id,
        "client_public_key_der_b64": terms.client_public_key_der_b64,
        "vendor_public_key_der_b64": terms.vendor_public_key_der_b64,
        "salt_b64": terms.salt_b64,
        "amount": terms.amount,
        "hash_alg": terms.hash_alg,
        **_mode_members(terms),
    }
    if opened:
        return wire.ChannelResponse(balance=0, **common)
    return wire.ChannelResponse(
        balance=closure.owed if closure is not None else 0,
        id=terms.id,
        is_closed=closure is not None,
        created_at=terms.created_at,
        closed_at=closure.closed_at if closure is not None else None,
        close_payload_b64=closure.close_payload_b64 if closure is not None else None,
        client_close_signature_b64=(
            closure.client_close_signature_b64 if closure is not None else None
        ),
        vendor_close_signature_b64=(
            closure.vendor_close_signature_b64 if closure is not None else None
        ),
        **common,
    )
