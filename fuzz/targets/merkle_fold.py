"""_core.merkle_fold (first-opt partial proofs) against the Python fold."""

from __future__ import annotations

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 2400


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    count = inp.below(_core.MERKLE_MAX_DEPTH + 1)
    i = inp.uint(8)  # any index: bits past `count` do not matter to a fold
    leaf = inp.take(32)
    siblings = [inp.take(32) for _ in range(count)]
    if mode >= 0xF8:
        cases = [
            (leaf, i, [*siblings, *[leaf] * (65 - count)]),  # more than 64 levels
            (leaf, -1 - i, siblings),
            (leaf, 2**64 + i, siblings),
            (leaf + b"\x00", i, siblings),
            (leaf, i, [*siblings, bytearray(leaf)]),
        ]
        args = cases[mode % len(cases)]
        try:
            _core.merkle_fold(*args, value)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return
        raise AssertionError("malformed fold arguments accepted")
    assert _core.merkle_fold(leaf, i, siblings, value) == reference.fold(leaf, i, siblings, alg)


def seeds() -> dict[str, bytes]:
    return {
        "none": b"\x00\x00" + bytes(8) + bytes(32),
        "two": b"\x01\x02" + b"\x02" + bytes(7) + bytes(range(96)),
        "sixty-four": b"\x00\x40" + b"\xa5" * 8 + b"\x77" * 32 * 65,
        "refused": b"\xf8\x01" + bytes(8) + bytes(64),
    }
