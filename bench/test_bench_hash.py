"""Native hashing, PayWord and Merkle costs beside pure-Python baselines (same run).

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_hash.py
The per-operation table (ns or µs per step/call/item, native vs Python, ratio)
is printed after the module's benchmarks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import blake3
import pytest

from nanomoni import crypto

CHAIN_STEPS = 1_000_000
BATCH = 1_000
DEPTH = 20
BIG_TREE = 1 << 20

# figure -> implementation -> (seconds per op, target description)
_results: dict[str, dict[str, float]] = {}
_targets: dict[str, str] = {
    "sha256 chain step (hash_n 1M)": "≤ 60 ns, ≥ 3.5× hashlib",
    "blake3 chain step (hash_n 1M)": "reported",
    "verify_payword Δk=1, per call": "≤ 1 µs",
    "verify_payword_batch 1000, per item": "≤ 0.2 µs",
    "verify_merkle depth 20, per call": "≤ 3 µs",
    "Merkle node hash in C (fold 64), per node": "reported",
    "build 2^20-leaf tree": "≤ 0.25 s",
    "build 2^20-leaf tree from secrets": "reported",
}


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def blake3_digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def python_chain(h: Callable[[bytes], bytes], seed: bytes, n: int) -> bytes:
    for _ in range(n):
        seed = h(seed)
    return seed


def python_fold(leaf: bytes, i: int, siblings: list[bytes], root: bytes) -> bool:
    cur = leaf
    for level, sib in enumerate(siblings):
        cur = sha256(sib + cur) if (i >> level) & 1 else sha256(cur + sib)
    return cur == root


def python_tree_root(leaves: list[bytes]) -> bytes:
    width = 1 << (len(leaves) - 1).bit_length()
    level = leaves + [leaves[-1]] * (width - len(leaves))
    while len(level) > 1:
        level = [sha256(level[p] + level[p + 1]) for p in range(0, len(level), 2)]
    return level[0]


def record(benchmark: Any, figure: str, impl: str, ops: int) -> None:
    if benchmark.stats is None:  # --benchmark-disable
        return
    seconds = benchmark.stats.stats.min / ops  # best round: least disturbed by other load
    _results.setdefault(figure, {})[impl] = seconds
    benchmark.extra_info["ns_per_op"] = round(seconds * 1e9, 1)


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.1f} ns"


@pytest.fixture(scope="module", autouse=True)
def per_op_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not _results:
        return
    lines = ["", f"{'per op, best round':44} {'native':>10} {'python':>10} {'speed-up':>9}  target"]
    for figure, target in _targets.items():
        impls = _results.get(figure, {})
        native, python = impls.get("native"), impls.get("python")
        ratio = f"{python / native:.1f}×" if native and python else "-"
        lines.append(
            f"{figure:44} {_fmt(native) if native else '-':>10} "
            f"{_fmt(python) if python else '-':>10} {ratio:>9}  {target}"
        )
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


# --- chain steps ----------------------------------------------------------------


@pytest.mark.benchmark(group="sha256 chain, 1M steps")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_sha256_chain(benchmark: Any, impl: str) -> None:
    seed = os.urandom(32)
    if impl == "native":
        result = benchmark.pedantic(crypto.hash_n, (seed, CHAIN_STEPS), rounds=5)
    else:
        result = benchmark.pedantic(python_chain, (sha256, seed, CHAIN_STEPS), rounds=3)
    assert result == crypto.hash_n(seed, CHAIN_STEPS)
    record(benchmark, "sha256 chain step (hash_n 1M)", impl, CHAIN_STEPS)


@pytest.mark.benchmark(group="blake3 chain, 1M steps")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_blake3_chain(benchmark: Any, impl: str) -> None:
    seed = os.urandom(32)
    if impl == "native":
        result = benchmark.pedantic(crypto.hash_n, (seed, CHAIN_STEPS, "blake3"), rounds=5)
    else:
        result = benchmark.pedantic(python_chain, (blake3_digest, seed, CHAIN_STEPS), rounds=3)
    assert result == crypto.hash_n(seed, CHAIN_STEPS, "blake3")
    record(benchmark, "blake3 chain step (hash_n 1M)", impl, CHAIN_STEPS)


# --- PayWord verification ---------------------------------------------------------


@pytest.mark.benchmark(group="verify_payword, Δk = 1")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_verify_payword_single_step(benchmark: Any, impl: str) -> None:
    token = os.urandom(32)
    anchor = sha256(token)
    if impl == "native":
        ok = benchmark(crypto.verify_payword, token, 1, anchor)
    else:
        ok = benchmark(lambda: sha256(token) == anchor)
    assert ok
    record(benchmark, "verify_payword Δk=1, per call", impl, 1)


@pytest.mark.benchmark(group="verify_payword_batch, 1000 × Δk = 1")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_verify_payword_batch(benchmark: Any, impl: str) -> None:
    tokens = [os.urandom(32) for _ in range(BATCH)]
    items = [(t, 1, sha256(t)) for t in tokens]
    if impl == "native":
        verdicts = benchmark(crypto.verify_payword_batch, items)
    else:
        verdicts = benchmark(lambda: [sha256(t) == a for t, _, a in items])
    assert verdicts == [True] * BATCH
    record(benchmark, "verify_payword_batch 1000, per item", impl, BATCH)


# --- Merkle -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def depth20_proof() -> tuple[bytes, int, list[bytes], bytes]:
    leaf, i = os.urandom(32), 0b1011_0110_1100_1010_0101
    siblings = [os.urandom(32) for _ in range(DEPTH)]
    return leaf, i, siblings, crypto.merkle_fold(leaf, i, siblings)


@pytest.mark.benchmark(group="verify_merkle, depth 20")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_verify_merkle_depth20(
    benchmark: Any, impl: str, depth20_proof: tuple[bytes, int, list[bytes], bytes]
) -> None:
    leaf, i, siblings, root = depth20_proof
    if impl == "native":
        ok = benchmark(crypto.verify_merkle, leaf, i, siblings, root, DEPTH)
    else:
        ok = benchmark(python_fold, leaf, i, siblings, root)
    assert ok
    record(benchmark, "verify_merkle depth 20, per call", impl, 1)


@pytest.mark.benchmark(group="Merkle node hash, 64 levels")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_merkle_node_hash(benchmark: Any, impl: str) -> None:
    leaf, i = os.urandom(32), (1 << 64) - 12345
    siblings = [os.urandom(32) for _ in range(64)]
    root = crypto.merkle_fold(leaf, i, siblings)
    if impl == "native":
        ok = benchmark(lambda: crypto.merkle_fold(leaf, i, siblings) == root)
    else:
        ok = benchmark(python_fold, leaf, i, siblings, root)
    assert ok
    record(benchmark, "Merkle node hash in C (fold 64), per node", impl, 64)


@pytest.fixture(scope="module")
def big_leaves() -> list[bytes]:
    return [os.urandom(32) for _ in range(BIG_TREE)]


@pytest.mark.benchmark(group="build a 2^20-leaf tree")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_build_big_tree(benchmark: Any, impl: str, big_leaves: list[bytes]) -> None:
    if impl == "native":
        root = benchmark.pedantic(lambda: crypto.merkle_root(big_leaves), rounds=3)
    else:
        root = benchmark.pedantic(python_tree_root, (big_leaves,), rounds=1)
    assert root == crypto.merkle_root(big_leaves)
    record(benchmark, "build 2^20-leaf tree", impl, 1)


@pytest.mark.benchmark(group="build a 2^20-leaf tree from secrets")
@pytest.mark.parametrize("impl", ["native", "python"])
def test_build_big_tree_from_secrets(benchmark: Any, impl: str, big_leaves: list[bytes]) -> None:
    if impl == "native":
        root = benchmark.pedantic(lambda: crypto.MerkleTree.from_secrets(big_leaves).root, rounds=3)
    else:
        root = benchmark.pedantic(
            lambda: python_tree_root([sha256(s) for s in big_leaves]), rounds=1
        )
    assert root == crypto.merkle_root([sha256(s) for s in big_leaves])
    record(benchmark, "build 2^20-leaf tree from secrets", impl, 1)
