"""Independent references for the native core: hashlib, the blake3 package and
`cryptography` (whose DER parsing is its own Rust code), plus the PayWord and
Merkle definitions of SPEC §5.2-5.3 and canonical base64 (SPEC §1) written out
directly in Python."""

from __future__ import annotations

import base64
import binascii
import hashlib

import blake3
from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ALGS = ("sha256", "blake3")  # in the core's order: HASH_SHA256 = 0, HASH_BLAKE3 = 1
KINDS = ("p256", "secp256k1", "ed25519")


def base64_canonical(text: str) -> bytes | None:
    """SPEC §1: the bytes whose one standard base64 text is `text`, else None."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return data if base64.b64encode(data).decode("ascii") == text else None


def base64url_canonical(text: str | bytes) -> bytes | None:
    """SPEC §11: the bytes whose one URL-safe base64 text without padding is `text`."""
    try:
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return data if base64.urlsafe_b64encode(data).rstrip(b"=") == raw else None


def h(data: bytes, alg: str) -> bytes:
    return hashlib.sha256(data).digest() if alg == "sha256" else blake3.blake3(data).digest()


def h_n(data: bytes, n: int, alg: str) -> bytes:
    for _ in range(n):
        data = h(data, alg)
    return data


def merkle_levels(leaves: list[bytes], alg: str) -> list[list[bytes]]:
    """Every level of the padded tree (SPEC §5.3), leaves first."""
    width = 1 << (len(leaves) - 1).bit_length()
    level = leaves + [leaves[-1]] * (width - len(leaves))
    levels = [level]
    while len(level) > 1:
        level = [h(level[p] + level[p + 1], alg) for p in range(0, len(level), 2)]
        levels.append(level)
    return levels


def fold(leaf: bytes, i: int, siblings: list[bytes], alg: str) -> bytes:
    cur = leaf
    for level, sib in enumerate(siblings):
        cur = h(sib + cur, alg) if (i >> level) & 1 else h(cur + sib, alg)
    return cur


# How cryptography refuses a key; InternalError: e.g. an Ed448 key of the wrong
# length reaches OpenSSL and comes back as an unmapped error.
REFUSED = (ValueError, TypeError, UnsupportedAlgorithm, InternalError)

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def key_kind(key: object) -> str | None:
    """The core's name for a `cryptography` key's type, None if it is not one of ours."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return {"secp256r1": "p256", "secp256k1": "secp256k1"}.get(key.curve.name)
    return None


def load_public(der: bytes) -> PublicKey | None:
    """The SPKI as one of our key types; None if cryptography refuses it or it is another type."""
    try:
        key = serialization.load_der_public_key(der)
    except REFUSED:
        return None
    if key_kind(key) is None:
        return None
    assert isinstance(key, PublicKey)
    return key


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify(der: bytes, message: bytes, signature: bytes) -> bool:
    key = load_public(der)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def sign(key: PrivateKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    """Equal keys whatever their encoding (compressed or not)."""
    if isinstance(a, ed25519.Ed25519PublicKey) and isinstance(b, ed25519.Ed25519PublicKey):
        return a.public_bytes_raw() == b.public_bytes_raw()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        return a.public_numbers() == b.public_numbers()
    return False


def fixed_keys() -> dict[str, PrivateKey]:
    """One key of each kind, the same every run (test keys, made from constants)."""
    return {
        "p256": ec.derive_private_key(0x5EED_0001 << 200 | 0xC0FFEE, ec.SECP256R1()),
        "secp256k1": ec.derive_private_key(0x5EED_0002 << 200 | 0xC0FFEE, ec.SECP256K1()),
        "ed25519": ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
    }


def pkcs8(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
