"""_core.hash_n (H applied n times to any input) against hashlib / blake3."""

from __future__ import annotations

from typing import Any

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 600


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    n = inp.uint(2) % 700  # up to past the GIL threshold (NOGIL_HASHES = 256)
    message = inp.rest()
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    if mode >= 0xF8:  # counts the core must refuse
        bad: Any = [-1, -(2**70), 2**64, 2**64 + n, 1.5][mode % 5]
        try:
            _core.hash_n(message, bad, value)
        except (ValueError, TypeError):
            return
        raise AssertionError(f"count {bad!r} accepted")
    result = _core.hash_n(message, n, value)
    assert result == reference.h_n(message, n, alg), (alg, n, len(message))


def seeds() -> dict[str, bytes]:
    return {
        "zero-steps": b"\x00\x00\x00odd length input",
        "one-step-blake3": b"\x01\x01\x00" + bytes(32),
        "nogil-sha256": b"\x00\x00\x01" + bytes(range(32)),
        "bad-count": b"\xfa\x05\x00",
    }
