"""_core.digest against hashlib / blake3: every length, both suites, unknown suites."""

from __future__ import annotations

from typing import Any

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 4200  # past four BLAKE3 chunks


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    message = inp.rest()
    if mode >= 0xF8:  # now and then a suite number the core does not have
        bad: Any = [-1, _core.HASH_ALG_COUNT, 2**64, True, 0.0][mode % 5]
        try:
            _core.digest(message, bad)
        except ValueError:
            return
        raise AssertionError(f"unknown suite {bad!r} accepted")
    alg = reference.ALGS[mode & 1]
    if mode & 2 and message:  # long enough to hash without the GIL
        message *= _core.NOGIL_BYTES // len(message) + 1
    assert _core.digest(message, crypto.HashAlg.parse(alg).value) == reference.h(message, alg)


def seeds() -> dict[str, bytes]:
    return {
        "empty-sha256": b"\x00",
        "chunk-blake3": b"\x01" + bytes(range(256)) * 4,
        "chunk-plus-one-blake3": b"\x01" + b"\xaa" * 1025,
        "long-sha256": b"\x02" + b"abc",
        "bad-suite": b"\xf9",
    }
