"""_core.verify_signatures (threaded batches) against single verifications."""

from __future__ import annotations

from typing import Any

import cases
import reference
from data import FuzzInput

from nanomoni import _core

MAX_LEN = 3000


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    threads = inp.below(4)
    items: list[Any] = []  # malformed ones too
    expected: list[bool] = []
    for _ in range(inp.below(12)):
        key, message, signature, fixed = cases.signature_case(inp)
        shape = inp.uint(1)
        if shape >= 0xF0:  # not a triple of bytes: verifies False, never raises
            items.append([None, (key, message), (key, message, signature, b""), "text"][shape % 4])
            expected.append(False)
            continue
        items.append((key, message, signature))
        verdict = _core.verify_signature(key, message, signature)
        if fixed:
            assert verdict == reference.verify(key, message, signature)
        expected.append(verdict)
    assert _core.verify_signatures(items, threads) == expected


def seeds() -> dict[str, bytes]:
    item = b"\x00\x04abcd\x00\x00"
    return {
        "empty": b"\x00\x00",
        "three": b"\x02\x03" + item + b"\x01\x04abcd\x00\x00" + b"\x02\x04abcd\x01\x02\x01\x00",
        "odd-items": b"\x01\x02" + item + b"\xf1" + b"\x09\x01a\x03abc\x00",
    }
