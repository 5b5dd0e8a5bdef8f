"""_core.public_key_kind on arbitrary SPKI bytes against `cryptography`: a key we
accept, it accepts as the same type; a canonical key of our kinds we accept."""

from __future__ import annotations

from typing import Any

import reference

from nanomoni import _core, crypto

MAX_LEN = 300


def test_one_input(data: bytes) -> None:
    ours = crypto.public_key_kind(data)
    key = reference.load_public(data)
    expected = reference.key_kind(key)
    if ours is not None:
        assert ours == expected, data.hex()
    elif key is not None:
        assert data != reference.spki(key), f"canonical {expected} key refused: {data.hex()}"
    like: Any = bytearray(data)
    assert _core.public_key_kind(like) == _core.public_key_kind(data)


def seeds() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, x25519

    out = {}
    for kind, private in reference.fixed_keys().items():
        public = private.public_key()
        out[kind] = reference.spki(public)
        if isinstance(public, ec.EllipticCurvePublicKey):  # the same key, compressed point
            point = public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
            algorithm = out[kind][2:-68]  # between the outer header and the point BIT STRING
            body = algorithm + bytes([0x03, len(point) + 1, 0]) + point
            out[f"{kind}-compressed"] = bytes([0x30, len(body)]) + body
    others: list[Any] = [
        ec.derive_private_key(99, ec.SECP384R1()).public_key(),
        x25519.X25519PrivateKey.from_private_bytes(bytes(32)).public_key(),
        ed448.Ed448PrivateKey.from_private_bytes(bytes(57)).public_key(),
    ]
    for n, other in enumerate(others):
        out[f"other-{n}"] = other.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return out
