"""Strict canonical base64 (SPEC §1): the native decoder beside the pure-Python
equivalent (binascii strict decode + the canonical padding-bit check), same run.

The vendor decodes every token, secret and sibling of every payment this way: a
PayTree payment of depth 14 carries 16 such texts.

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_base64.py
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import pytest

from nanomoni import _core

_ONE_PAD_LAST = frozenset("AEIMQUYcgkosw048")
TEXT = base64.b64encode(os.urandom(32)).decode("ascii")
SIBLINGS = [base64.b64encode(os.urandom(32)).decode("ascii") for _ in range(14)]


def python_decode(text: str, length: int) -> bytes | None:
    """What encoding.b64decode did before the native decoder (the baseline)."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if text[-1:] == "=" and text[-2] != "=" and text[-2] not in _ONE_PAD_LAST:
        return None
    return data if len(data) == length else None


@pytest.mark.benchmark(group="base64: one 32-byte value")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_decode_one(benchmark: Any, impl: str) -> None:
    decode = _core.base64_decode if impl == "native" else python_decode
    assert benchmark(decode, TEXT, 32) == base64.b64decode(TEXT)


@pytest.mark.benchmark(group="base64: 14 siblings")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_decode_siblings(benchmark: Any, impl: str) -> None:
    if impl == "native":
        result = benchmark(_core.base64_decode_list, SIBLINGS, 32)
    else:
        result = benchmark(lambda: [python_decode(text, 32) for text in SIBLINGS])
    assert result == [base64.b64decode(text) for text in SIBLINGS]


HEADER = base64.urlsafe_b64encode(os.urandom(180)).rstrip(b"=")  # a PayWord Payment header


@pytest.mark.benchmark(group="base64url: one Payment header (240 characters)")
@pytest.mark.parametrize("impl", ["native", "stdlib"])
def test_decode_header(benchmark: Any, impl: str) -> None:
    if impl == "native":
        result = benchmark(_core.base64url_decode, HEADER)
    else:  # not strict (accepts non-zero padding bits): a lower bound for Python
        result = benchmark(base64.urlsafe_b64decode, HEADER + b"=" * (-len(HEADER) % 4))
    assert result == base64.urlsafe_b64decode(HEADER + b"=" * (-len(HEADER) % 4))
