"""Native hashing (digest, hash_n) against hashlib and the blake3 package."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomoni import _core, crypto

ALGS = ("sha256", "blake3")


def reference_hash(alg: str) -> Callable[[bytes], bytes]:
    if alg == "sha256":
        return lambda data: hashlib.sha256(data).digest()
    return lambda data: blake3.blake3(data).digest()


def reference_hash_n(data: bytes, n: int, alg: str) -> bytes:
    h = reference_hash(alg)
    for _ in range(n):
        data = h(data)
    return data


@pytest.mark.parametrize("alg", ALGS)
def test_core_digest_every_length_up_to_1024(alg: str) -> None:
    rng = random.Random(f"digest-{alg}")
    h = reference_hash(alg)
    for length in range(1025):
        data = rng.randbytes(length)
        assert crypto.digest(data, alg) == h(data), length


@given(data=st.binary(max_size=5000), alg=st.sampled_from(ALGS))
def test_core_digest_matches_reference(data: bytes, alg: str) -> None:
    assert crypto.digest(data, alg) == reference_hash(alg)(data)


@pytest.mark.parametrize("alg", ALGS)
def test_core_digest_long_inputs_across_chunk_boundaries(alg: str) -> None:
    """BLAKE3 splits input into 1024-byte chunks joined by a tree: check the seams."""
    rng = random.Random(f"long-{alg}")
    h = reference_hash(alg)
    chunk = 1024
    lengths = [
        chunk * c + d for c in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33) for d in (-1, 0, 1)
    ]
    lengths += [rng.randrange(1025, 70_000) for _ in range(20)]
    lengths += [1 << 20, 3 * (1 << 20) + 12_345]  # GIL-free path, deep trees
    for length in lengths:
        data = rng.randbytes(length)
        assert crypto.digest(data, alg) == h(data), length
    data = rng.randbytes(5000)
    assert crypto.hash_n(data, 3, alg) == reference_hash_n(data, 3, alg)


@settings(max_examples=60)
@given(
    data=st.binary(max_size=200),
    n=st.integers(min_value=0, max_value=300),
    alg=st.sampled_from(ALGS),
)
def test_core_hash_n_matches_reference(data: bytes, n: int, alg: str) -> None:
    assert crypto.hash_n(data, n, alg) == reference_hash_n(data, n, alg)


@pytest.mark.parametrize("alg", ALGS)
def test_core_hash_n_edges(alg: str) -> None:
    odd = b"not thirty-two bytes"
    assert crypto.hash_n(odd, 0, alg) == odd  # n = 0: the input itself, any length
    assert crypto.hash_n(b"", 0, alg) == b""
    assert crypto.hash_n(b"", 1, alg) == reference_hash(alg)(b"")
    assert crypto.hash_n(odd, 1, alg) == crypto.digest(odd, alg)
    seed = bytes(range(32))
    # Past the threshold where the GIL is released.
    assert crypto.hash_n(seed, 5000, alg) == reference_hash_n(seed, 5000, alg)


@pytest.mark.parametrize("bad_n", [-1, -(2**70), 2**64])
def test_core_hash_n_rejects_bad_counts(bad_n: int) -> None:
    with pytest.raises(ValueError, match="n must be"):
        crypto.hash_n(bytes(32), bad_n)


def test_core_unknown_alg() -> None:
    with pytest.raises(ValueError, match="unknown hash alg"):
        crypto.digest(b"x", "md5")
    bad_algs: list[Any] = [-1, 2, 99, 2**70, "sha256", None]
    for alg in bad_algs:
        with pytest.raises(ValueError, match="unknown hash alg"):
            _core.digest(b"x", alg)
        with pytest.raises(ValueError, match="unknown hash alg"):
            _core.hash_n(b"x", 0, alg)


def test_core_hash_wrong_types() -> None:
    with pytest.raises(TypeError):
        _core.digest("text", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.hash_n(b"x", 1.5, 0)  # type: ignore[arg-type]


def test_core_hash_n_releases_the_gil() -> None:
    """A long chain must not stall other Python threads (SPEC §7)."""
    seed = bytes(32)
    result: list[bytes] = []
    worker = threading.Thread(target=lambda: result.append(_core.hash_n(seed, 3_000_000, 0)))
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.0005)
    worker.join()
    assert result == [crypto.hash_n(seed, 3_000_000)]
    # With the GIL held for the whole call the loop could not run at all.
    assert ticks >= 10
