"""Opening channels (SPEC §3, §4.3): the checks that need no store.

Registration, balance, root reuse and replays of an earlier open (by its
`open_key`) are decided atomically by the store.
"""

from __future__ import annotations

from nanomoni import config, crypto
from nanomoni.encoding import b64encode, b64url_nopad
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.lifecycle import channel_ttl_us
from nanomoni.protocol.messages import OpenRequest
from nanomoni.protocol.model import ChannelTerms
from nanomoni.protocol.modes import HASH_LEN, AnyRules


def channel_id_for(client_der: bytes, vendor_der: bytes, salt: bytes) -> str:
    """SPEC §3: always SHA-256, whatever the channel's hash suite."""
    return b64url_nopad(crypto.digest(client_der + vendor_der + salt, "sha256"))


def _require_supported(der: bytes, field: str) -> None:
    if crypto.public_key_kind(der) is None:
        raise NanoMoniError(
            Code.invalid_encoding,
            f"{field} is not a supported public key (DER SubjectPublicKeyInfo of "
            "ECDSA P-256, ECDSA secp256k1 or Ed25519)",
        )


NONCE_MIN, NONCE_MAX = 16, 64  # bytes


def open_key(rules: AnyRules, req: OpenRequest) -> bytes:
    """What makes two opens the same open: the path's mode and the signed members
    (SPEC §4.3). The store answers a second open with this key with the first channel."""
    return crypto.digest(rules.mode.value.encode() + b"\0" + req.signed, "sha256")


def check_mode_members(rules: AnyRules, req: OpenRequest) -> None:
    """A body carries the common members and its own mode's only (SPEC §4.3 [v1.1])."""
    own = set(rules.members.names) if rules.members is not None else set()
    foreign = sorted(set(req.mode_members) - own)
    if foreign:
        raise NanoMoniError(
            Code.mode_mismatch,
            f"{', '.join(foreign)} belong to another mode than {rules.mode.value}",
        )


def _commitment(
    rules: AnyRules, req: OpenRequest, max_index_cap: int
) -> tuple[bytes | None, int | None, int | None]:
    """(root, unit value, max index) of a committed mode, checked; all None otherwise."""
    if rules.members is None:
        return None, None, None
    names = rules.members
    values = req.mode_members
    missing = [name for name in names.names if name not in values]
    if missing:
        raise NanoMoniError(
            Code.missing_field, f"{', '.join(missing)} required for a {rules.mode.value} channel"
        )
    root, unit_value, max_index = (values[name] for name in names.names)
    assert isinstance(root, bytes) and isinstance(unit_value, int)
    assert isinstance(max_index, int)
    if unit_value < 1:
        raise NanoMoniError(
            Code.invalid_amount, f"{names.unit} must be at least 1, got {unit_value}"
        )
    if max_index < 1:
        raise NanoMoniError(Code.invalid_amount, f"{names.max} must be at least 1, got {max_index}")
    # Python ints are exact: no overflow however large the product.
    if max_index * unit_value > req.amount:
        raise NanoMoniError(
            Code.exceeds_amount,
            f"{names.max} × {names.unit} = {max_index * unit_value} exceeds the amount "
            f"{req.amount}",
        )
    if max_index > max_index_cap:
        raise NanoMoniError(
            Code.exceeds_max, f"{names.max} {max_index} exceeds the issuer's cap {max_index_cap}"
        )
    if len(root) != HASH_LEN:
        raise NanoMoniError(
            Code.invalid_encoding, f"{names.root} must decode to {HASH_LEN} bytes, got {len(root)}"
        )
    return root, unit_value, max_index


def open_channel_terms(
    rules: AnyRules,
    req: OpenRequest,
    *,
    salt: bytes,
    channel_uuid: str,
    created_at: str,
    max_index_cap: int = config.MAX_INDEX,
    issuer_key: str | None = None,
    min_ttl_s: float = config.MIN_CHANNEL_TTL,
    max_ttl_s: float = config.MAX_CHANNEL_TTL,
) -> ChannelTerms:
    """The terms of a channel `req` asks for, or the first SPEC §4.3 rule it breaks.

    `issuer_key` is this issuer's own public key: an open bound to another issuer
    is refused. The channel lives `ttl_s` (default `max_ttl_s`) from its opening.
    Order: mode members, then the signature, then everything else."""
    if req.hash_alg is not None and req.hash_alg not in crypto.HASH_ALGS:
        raise NanoMoniError(
            Code.validation_error,
            f"hash_alg must be one of {', '.join(crypto.HASH_ALGS)}, got {req.hash_alg!r}",
        )
    check_mode_members(rules, req)
    _require_supported(req.client_der, "client_public_key_der_b64")
    _require_supported(req.vendor_der, "vendor_public_key_der_b64")
    if not crypto.verify_signature(req.client_der, req.signed, req.signature):
        raise NanoMoniError(
            Code.invalid_signature,
            "open_signature_b64 is not a valid signature of the request by the client key",
        )
    if req.issuer_key is not None and req.issuer_key != issuer_key:
        raise NanoMoniError(
            Code.wrong_issuer,
            "issuer_public_key_der_b64 names another issuer: this open is not for us",
        )
    if req.nonce is not None and not NONCE_MIN <= len(req.nonce) <= NONCE_MAX:
        raise NanoMoniError(
            Code.invalid_encoding,
            f"nonce_b64 must decode to {NONCE_MIN}..{NONCE_MAX} bytes, got {len(req.nonce)}",
        )
    if req.amount < 1:
        raise NanoMoniError(Code.invalid_amount, f"amount must be at least 1, got {req.amount}")
    ttl_us = channel_ttl_us(req.ttl_s, min_s=min_ttl_s, max_s=max_ttl_s)
    root, unit_value, max_index = _commitment(rules, req, max_index_cap)
    return ChannelTerms(
        id=channel_uuid,
        channel_id=channel_id_for(req.client_der, req.vendor_der, salt),
        mode=rules.mode,
        client_public_key_der_b64=req.client_key,
        vendor_public_key_der_b64=req.vendor_key,
        salt_b64=b64encode(salt),
        amount=req.amount,
        hash_alg=req.hash_alg or "sha256",
        created_at=created_at,
        root=root,
        unit_value=unit_value,
        max_index=max_index,
        open_key=open_key(rules, req),
        ttl_us=ttl_us,
    )
