"""_core.verify_payword_batch against the Python chain and against single calls."""

from __future__ import annotations

from typing import Any

import reference
from data import FuzzInput

from nanomoni import _core, crypto

MAX_LEN = 1500


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    mode = inp.uint(1)
    alg = reference.ALGS[mode & 1]
    value = crypto.HashAlg.parse(alg).value
    count = inp.below(40)
    items: list[Any] = []  # malformed ones too
    expected: list[bool] = []
    malformed = False
    for _ in range(count):
        kind = inp.uint(1)
        token = inp.take(32)
        k = inp.uint(2) % 300  # a batch adds up past the GIL threshold
        honest = reference.h_n(token, k, alg)
        if kind < 0xF0:
            anchor = honest if kind & 1 else inp.take(32)
            items.append((token, k, anchor))
            expected.append(anchor == honest)
            continue
        malformed = True
        items.append(
            [
                (token, k),
                (token, -1 - k, honest),
                (token[:31], k, honest),
                (token, k, honest + b"\x00"),
                (bytearray(token), k, honest),
                (token, float(k), honest),
                None,
            ][kind % 7]
        )
    try:
        verdicts = _core.verify_payword_batch(items, value)
    except (ValueError, TypeError):
        assert malformed, "a well-formed batch raised"
        return
    assert not malformed, "a malformed item was accepted"
    assert verdicts == expected
    singles = [_core.verify_payword(t, k, a, value) for t, k, a in items]
    assert singles == expected


def seeds() -> dict[str, bytes]:
    honest_item = b"\x01" + bytes(range(32)) + b"\x10\x00"
    return {
        "empty": b"\x00\x00",
        "three-honest": b"\x00\x03" + honest_item * 3,
        "mixed-blake3": b"\x01\x04" + honest_item + b"\x00" + bytes(32) + b"\x01\x00" + bytes(32),
        "malformed": b"\x00\x02" + honest_item + b"\xf3" + bytes(32) + b"\x02\x00",
    }
