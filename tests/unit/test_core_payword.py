"""PayWord verification and chains (SPEC §5.2) against a hashlib/blake3 reference."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanomoni import _core, crypto

ALGS = ("sha256", "blake3")


def reference_chain(seed: bytes, max_k: int, alg: str) -> list[bytes]:
    """w_0 .. w_max_k."""
    words = [seed]
    for _ in range(max_k):
        data = words[-1]
        words.append(
            hashlib.sha256(data).digest() if alg == "sha256" else blake3.blake3(data).digest()
        )
    return words


seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=60)
@given(seed=seeds, k=st.integers(min_value=0, max_value=400), alg=st.sampled_from(ALGS))
def test_core_verify_payword_matches_reference(seed: bytes, k: int, alg: str) -> None:
    words = reference_chain(seed, k + 1, alg)
    token, anchor = words[0], words[k]
    assert crypto.verify_payword(token, k, anchor, alg)
    assert not crypto.verify_payword(token, k + 1, anchor, alg)
    assert not crypto.verify_payword(words[1], k, anchor, alg)
    if k > 0:
        assert not crypto.verify_payword(token, k - 1, anchor, alg)


@pytest.mark.parametrize("alg", ALGS)
def test_core_verify_payword_k_zero_compares_bytes(alg: str) -> None:
    token = os.urandom(32)
    assert crypto.verify_payword(token, 0, token, alg)
    assert not crypto.verify_payword(token, 0, bytes(32), alg)


@pytest.mark.parametrize("alg", ALGS)
def test_core_verify_payword_long_gap(alg: str) -> None:
    # Above the GIL-release threshold.
    words = reference_chain(os.urandom(32), 3000, alg)
    assert crypto.verify_payword(words[0], 3000, words[3000], alg)
    assert not crypto.verify_payword(words[0], 2999, words[3000], alg)


def test_core_verify_payword_bad_input() -> None:
    good = bytes(32)
    for token, anchor in ((bytes(31), good), (good, bytes(33)), (b"", good)):
        with pytest.raises(ValueError, match="must be 32 bytes"):
            crypto.verify_payword(token, 1, anchor)
    for k in (-1, 2**64):
        with pytest.raises(ValueError, match="k must be"):
            crypto.verify_payword(good, k, good)
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.verify_payword(good, 1, good, 7)


@settings(max_examples=40)
@given(
    seed=seeds,
    max_k=st.integers(min_value=0, max_value=300),
    checkpoints=st.integers(min_value=1, max_value=400),
    alg=st.sampled_from(ALGS),
)
def test_core_chain_matches_reference(seed: bytes, max_k: int, checkpoints: int, alg: str) -> None:
    words = reference_chain(seed, max_k, alg)
    chain = crypto.PaywordChain(seed, max_k, alg, checkpoints)
    assert chain.root == words[max_k]
    for k in range(max_k + 1):
        assert chain.token(k) == words[max_k - k], k
        assert crypto.verify_payword(chain.token(k), k, chain.root, alg)


@pytest.mark.parametrize("alg", ALGS)
def test_core_chain_edges(alg: str) -> None:
    seed = os.urandom(32)
    single = crypto.PaywordChain(seed, 0, alg)
    assert single.root == seed and single.token(0) == seed
    # Large chain, default checkpoints: k = 0 is the root, k = max_k the seed.
    max_k = 100_000
    chain = crypto.PaywordChain(seed, max_k, alg)
    assert chain.root == crypto.hash_n(seed, max_k, alg)
    assert chain.token(0) == chain.root
    assert chain.token(max_k) == seed
    for k in (1, 97, 1023, 1024, 1025, 50_000, max_k - 1):
        assert chain.token(k) == crypto.hash_n(seed, max_k - k, alg), k
    # One checkpoint: tokens are recomputed from the seed, still correct.
    sparse = crypto.PaywordChain(seed, 5000, alg, checkpoints=1)
    assert sparse.token(1) == crypto.hash_n(seed, 4999, alg)


def test_core_chain_bad_input() -> None:
    seed = bytes(32)
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        crypto.PaywordChain(bytes(16), 10)
    with pytest.raises(ValueError, match="max_k must be"):
        crypto.PaywordChain(seed, -1)
    with pytest.raises(ValueError, match="max_k must be below"):
        crypto.PaywordChain(seed, 2**63)
    with pytest.raises(ValueError, match="checkpoints must be at least 1"):
        crypto.PaywordChain(seed, 10, checkpoints=0)
    with pytest.raises(ValueError, match="checkpoints must be"):
        crypto.PaywordChain(seed, 10, checkpoints=-5)
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.PaywordChain(seed, 10, 2, 4)
    chain = crypto.PaywordChain(seed, 10)
    for k in (11, -1, 2**64):
        with pytest.raises(ValueError, match="k must be"):
            chain.token(k)


@settings(max_examples=40)
@given(
    cases=st.lists(
        st.tuples(seeds, st.integers(min_value=0, max_value=40), st.booleans()), max_size=30
    ),
    alg=st.sampled_from(ALGS),
)
def test_core_verify_payword_batch_matches_single(
    cases: list[tuple[bytes, int, bool]], alg: str
) -> None:
    items: list[tuple[bytes, int, bytes]] = []
    expected: list[bool] = []
    for seed, k, honest in cases:
        anchor = reference_chain(seed, k, alg)[k]
        claimed_k = k if honest else k + 1
        items.append((seed, claimed_k, anchor))
        expected.append(honest)
    assert crypto.verify_payword_batch(items, alg) == expected
    assert [crypto.verify_payword(t, k, a, alg) for t, k, a in items] == expected


def test_core_verify_payword_batch_bad_input() -> None:
    good = bytes(32)
    assert crypto.verify_payword_batch([]) == []
    with pytest.raises(ValueError, match=r"items\[1\] token must be 32 bytes"):
        crypto.verify_payword_batch([(good, 0, good), (bytes(3), 0, good)])
    with pytest.raises(ValueError, match=r"items\[0\] anchor must be 32 bytes"):
        crypto.verify_payword_batch([(good, 0, bytes(64))])
    with pytest.raises(ValueError, match=r"items\[0\] k must be"):
        crypto.verify_payword_batch([(good, -3, good)])
    with pytest.raises(ValueError, match=r"items\[0\] must be a \(token, k, anchor\) triple"):
        crypto.verify_payword_batch([(good, 0)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be bytes"):
        crypto.verify_payword_batch([("x" * 32, 0, good)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown hash alg"):
        _core.verify_payword_batch([(good, 0, good)], 5)


def test_core_verify_payword_batch_releases_the_gil() -> None:
    seed = bytes(32)
    anchor = crypto.hash_n(seed, 200_000)
    items = [(seed, 200_000, anchor)] * 10
    result: list[list[bool]] = []
    worker = threading.Thread(target=lambda: result.append(crypto.verify_payword_batch(items)))
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.0005)
    worker.join()
    assert result == [[True] * 10]
    assert ticks >= 10


@pytest.mark.parametrize("alg", ALGS)
def test_core_verify_payword_batch_on_several_threads(alg: str) -> None:
    """Enough hashing in one batch spreads it over the cores; order is kept."""
    rng = random.Random(alg)
    items: list[tuple[bytes, int, bytes]] = []
    expected: list[bool] = []
    for j in range(300):
        seed = rng.randbytes(32)
        k = rng.randrange(50, 250)
        anchor = reference_chain(seed, k, alg)[k]
        honest = j % 3 != 0
        items.append((seed, k if honest else k - 1, anchor))
        expected.append(honest)
    assert sum(k for _, k, _ in items) > _core.PARALLEL_MIN_HASHES  # threads are used
    assert crypto.verify_payword_batch(items, alg) == expected
