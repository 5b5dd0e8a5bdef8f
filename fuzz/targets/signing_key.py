"""_core.SigningKey from arbitrary PKCS#8 bytes, and key generation, against
`cryptography`: our signatures verify under the public key we hand out; a key
both load is the same type and public key; a canonical key of our kinds loads.

(Private keys are local configuration, so their DER is taken as leniently as
OpenSSL takes it, e.g. any version number: cryptography may refuse a key we load.)"""

from __future__ import annotations

from typing import Any

import reference
from cryptography.hazmat.primitives import serialization
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 400


def load_reference(der: bytes) -> Any:
    try:
        return serialization.load_der_private_key(der, password=None)
    except reference.REFUSED:
        return None


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    if mode >= 0xF8:  # key generation, including kinds that do not exist
        number = inp.below(7) - 2
        if not 0 <= number < _core.KEY_KIND_COUNT:
            try:
                _core.generate_private_key(number)
            except ValueError:
                return
            raise AssertionError(f"generated a key of kind {number}")
        der = _core.generate_private_key(number)
        assert reference.key_kind(load_reference(der)) == crypto.KeyKind(number).label
    else:
        der = inp.rest()
    try:
        ours = _core.SigningKey(der)
    except ValueError:
        ours = None
    ref = load_reference(der)
    ref_kind = reference.key_kind(ref)
    if ours is None:
        if ref_kind is not None:
            canonical = reference.pkcs8(ref)
            assert der != canonical, f"canonical {ref_kind} key refused: {der.hex()}"
        return
    kind = crypto.KeyKind(ours.kind).label
    assert ours.private_key_der == der
    assert reference.key_kind(reference.load_public(ours.public_key_der)) == kind, der.hex()
    message = inp.blob(64) if mode >= 0xF8 else der[:16]
    assert reference.verify(ours.public_key_der, message, ours.sign(message)), der.hex()
    if ref is not None:
        assert ref_kind == kind, der.hex()
        public = reference.load_public(ours.public_key_der)
        assert public is not None, der.hex()
        assert reference.same_public_key(public, ref.public_key()), der.hex()


def seeds() -> dict[str, bytes]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519

    out = {
        f"{kind}": b"\x00" + reference.pkcs8(key) for kind, key in reference.fixed_keys().items()
    }
    others: dict[str, Any] = {
        "p384": ec.derive_private_key(12345, ec.SECP384R1()),
        "x25519": x25519.X25519PrivateKey.from_private_bytes(bytes(range(32))),
        "ed448": ed448.Ed448PrivateKey.from_private_bytes(bytes(57)),
        "rsa": rsa.generate_private_key(65537, 1024),
    }
    for name, key in others.items():
        out[name] = b"\x00" + key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    for kind in range(-1, 4):
        out[f"generate-{kind}"] = b"\xf8" + bytes([kind + 2])
    return out
