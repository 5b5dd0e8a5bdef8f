"""_core.verify_payword against the chain written out in Python (SPEC §5.2)."""

from __future__ import annotations

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 200


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    k = inp.uint(2) % 600
    token = inp.take(32)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    honest = reference.h_n(token, k, alg)
    match (mode >> 1) % 8:
        case 0 | 1 | 2:
            anchor = honest
        case 3:  # one bit off
            bit = inp.below(256)
            anchor = (int.from_bytes(honest, "big") ^ (1 << bit)).to_bytes(32, "big")
        case 4:  # the right anchor for a neighbouring k
            anchor = reference.h_n(token, k + 1, alg)
        case 5:
            anchor = inp.take(32)
        case 6:  # malformed lengths must raise, not verify
            bad_token, bad_anchor = inp.blob(40), inp.blob(40)
            if len(bad_token) == 32 and len(bad_anchor) == 32:
                return
            try:
                _core.verify_payword(bad_token, k, bad_anchor, value)
            except ValueError:
                return
            raise AssertionError("a token or anchor of the wrong length was accepted")
        case _:  # counts outside [0, 2**64)
            bad = [-1, 2**64, -(2**64)][inp.below(3)]
            try:
                _core.verify_payword(token, bad, honest, value)
            except ValueError:
                return
            raise AssertionError(f"k = {bad} accepted")
    assert _core.verify_payword(token, k, anchor, value) == (anchor == honest)


def seeds() -> dict[str, bytes]:
    return {
        "honest-sha256": b"\x00\x05\x00" + bytes(range(32)),
        "honest-blake3-nogil": b"\x01\x2c\x01" + bytes(32),
        "bit-off": b"\x06\x01\x00" + b"\x11" * 32 + b"\x07",
        "wrong-length": b"\x0c\x01\x00" + bytes(32) + b"\x1f" + bytes(31) + b"\x20" + bytes(32),
    }
