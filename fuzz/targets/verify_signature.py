"""_core.verify_signature against `cryptography`: the same verdict for every
signature under our fixed keys, and never True for a key cryptography rejects."""

from __future__ import annotations

from typing import Any

import cases
import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 700


def test_one_input(data: bytes) -> None:
    key, message, signature, fixed = cases.signature_case(FuzzInput(data))
    ours = _core.verify_signature(key, message, signature)
    expected = reference.verify(key, message, signature)
    if fixed:
        assert ours == expected, (key.hex(), message.hex(), signature.hex())
    else:
        # libsodium refuses some Ed25519 keys and signatures OpenSSL takes
        # (small-order points); the other way round would be a forgery.
        assert expected or not ours, (key.hex(), message.hex(), signature.hex())
    if ours:
        assert crypto.public_key_kind(key) is not None
    # Every bytes-like form gives the same verdict as bytes.
    assert crypto.verify_signature(key, message, signature) == ours
    like: Any = (bytearray(key), memoryview(message), signature)
    assert _core.verify_signature(*like) == ours


def seeds() -> dict[str, bytes]:
    message = b"\x10" + b'{"channel_id":"c1","owed":7}'[:16]
    out = {}
    for i, kind in enumerate(reference.KINDS):
        out[f"valid-{kind}"] = bytes([i]) + message + b"\x00"
        out[f"flipped-{kind}"] = bytes([i]) + message + b"\x01\x05\x03"
        out[f"raw-{kind}"] = bytes([i | 0x08]) + message + b"\x40" + bytes(64)
        der = cases.public_der(kind)
        sig = reference.sign(cases.keys()[kind], b"")
        out[f"own-key-{kind}"] = b"\xe0\x00" + bytes([len(der)]) + der + bytes([len(sig)]) + sig
    return out
