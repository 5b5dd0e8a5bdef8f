"""_core.merkle_path_node (a stored `secret || siblings` blob folded to a node)
against hashing the secret and the Python fold; short blobs and bad levels refused."""

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
    stored = inp.below(_core.MERKLE_MAX_DEPTH + 1)  # siblings the blob holds
    levels = inp.below(stored + 1)
    i = inp.uint(8)
    secret = inp.take(32)
    siblings = [inp.take(32) for _ in range(stored)]
    path = secret + b"".join(siblings)
    if mode >= 0xF8:
        cases = [
            (path, i, stored + 1),  # more levels than the blob holds
            (path, i, _core.MERKLE_MAX_DEPTH + 1),
            (path, -1 - i, levels),
            (path, 2**64 + i, levels),
            (path[:31], i, 0),
        ]
        args = cases[mode % len(cases)]
        try:
            _core.merkle_path_node(*args, value)
        except (ValueError, TypeError):
            return
        raise AssertionError("malformed path arguments accepted")
    expected = reference.fold(reference.h(secret, alg), i, siblings[:levels], alg)
    assert _core.merkle_path_node(path, i, levels, value) == expected


def seeds() -> dict[str, bytes]:
    return {
        "leaf-only": b"\x00\x00\x00" + bytes(8) + bytes(32),
        "two-of-three": b"\x01\x03\x02" + b"\x05" + bytes(7) + bytes(range(128)),
        "full": b"\x00\x10\x10" + b"\xa5" * 8 + b"\x77" * 32 * 17,
        "refused": b"\xf8\x02\x01" + bytes(8) + bytes(96),
    }
