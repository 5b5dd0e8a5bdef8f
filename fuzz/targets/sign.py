"""SigningKey.sign / sign_many with our fixed keys, checked by `cryptography`:
every signature verifies, ECDSA ones are low-S, Ed25519 ones equal the reference's."""

from __future__ import annotations

import cases
import reference
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from data import FuzzInput

from nanomoni import _core

MAX_LEN = 1200


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    kind = reference.KINDS[mode % 3]
    key = _core.SigningKey(reference.pkcs8(cases.keys()[kind]))
    public = cases.public_der(kind)
    messages = [inp.blob(255) for _ in range(inp.below(9))]
    if mode >= 0xF0:  # wrong-typed messages raise, never sign
        bad: list[object] = [*messages, ["text", None, 7, [b"x"]][mode % 4]]
        try:
            key.sign_many(bad)  # type: ignore[arg-type]
        except TypeError:
            return
        raise AssertionError("a message that is no bytes was signed")
    signatures = key.sign_many(messages, inp.below(3))
    singles = [key.sign(m) for m in messages]
    for message, many, one in zip(messages, signatures, singles, strict=True):
        assert reference.verify(public, message, many) and reference.verify(public, message, one)
        if kind == "ed25519":  # deterministic: both must equal the reference's
            assert many == one == reference.sign(cases.keys()[kind], message)
        else:
            for signature in (many, one):
                _, s = decode_dss_signature(signature)
                assert 0 < s <= cases.ORDERS[kind] // 2, "high S"


def seeds() -> dict[str, bytes]:
    return {
        "p256-two": b"\x00\x02\x03abc\x00\x01",
        "secp256k1-one": b"\x01\x01\x05hello\x02",
        "ed25519-three": b"\x02\x03\x00\x01z\x04abcd\x00",
        "wrong-type": b"\xf1\x01\x01a",
    }
