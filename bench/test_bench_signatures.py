"""Signature costs of the native core next to the fastest library per scheme, same run.

Baselines (PERFORMANCE.md): cryptography/OpenSSL for P-256, coincurve/libsecp256k1
for secp256k1, PyNaCl/libsodium for Ed25519. Every figure is µs per signature; the
summary table at the end of the module also gives the ratios the targets are
stated in (ours / baseline single-thread, 2-thread / 1-thread batch). The 2-thread
wall-time ratio needs two idle cores to mean anything; the CPU time per signature
at 1 and 2 threads shows whether the threads slow each other down regardless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import coincurve
import nacl.signing
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pytest_benchmark.fixture import BenchmarkFixture

from nanomoni import crypto

BATCH = 256
KINDS = crypto.KEY_KINDS
# Per kind and measurement name: µs per signature, filled in as the benchmarks run.
RESULTS: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}


class Scheme:
    """One key of a kind, known both to the core and to its baseline library."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.core = crypto.SigningKey.generate(kind)
        self.public_der = self.core.public_key_der
        self.messages = [
            b'{"channel_id":"c1","cumulative_owed_amount":%d}' % i for i in range(BATCH)
        ]
        self.signatures = self.core.sign_many(self.messages, threads=1)
        self.items = [
            (self.public_der, m, s) for m, s in zip(self.messages, self.signatures, strict=True)
        ]
        private = serialization.load_der_private_key(self.core.private_key_der, None)
        self.baseline_verify, self.baseline_sign = self._baseline(private)

    def _baseline(
        self, private: object
    ) -> tuple[Callable[[bytes, bytes], object], Callable[[bytes], bytes]]:
        if self.kind == "p256":
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            public = private.public_key()
            algorithm = ec.ECDSA(hashes.SHA256())
            return (
                lambda m, s: public.verify(s, m, algorithm),
                lambda m: private.sign(m, algorithm),
            )
        if self.kind == "secp256k1":
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            secret = private.private_numbers().private_value.to_bytes(32, "big")
            k1_private = coincurve.PrivateKey(secret)
            k1_public = coincurve.PublicKey(k1_private.public_key.format(compressed=False))
            return (lambda m, s: k1_public.verify(s, m)), k1_private.sign
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        seed = private.private_bytes_raw()
        signing = nacl.signing.SigningKey(seed)
        verifying = signing.verify_key
        return (lambda m, s: verifying.verify(m, s)), (lambda m: signing.sign(m).signature)


@pytest.fixture(scope="module")
def schemes() -> dict[str, Scheme]:
    return {kind: Scheme(kind) for kind in KINDS}


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not any(RESULTS.values()):
        return
    with capture.global_and_fixture_disabled():
        write_summary(reporter)


def write_summary(reporter: Any) -> None:
    reporter.write_line("")
    reporter.write_line(
        f"signatures, µs per signature (batch {BATCH}; 'one', 'cpu': CPU time; others: wall)"
    )
    head = (
        "scheme     ours 1  base 1  ratio | batch 1t  batch 2t  2t/1t  cpu 1t  cpu 2t"
        " | sign 1t  sign 2t  2t/1t  base sign"
    )
    reporter.write_line(head)
    for kind, r in RESULTS.items():

        def get(name: str, r: dict[str, float] = r) -> float:
            return r.get(name, float("nan"))

        reporter.write_line(
            f"{kind:<9} {get('verify'):7.1f} {get('base_verify'):7.1f}"
            f" {get('verify') / get('base_verify'):6.2f} |"
            f" {get('batch_1'):8.1f} {get('batch_2'):9.1f} {get('batch_2') / get('batch_1'):6.2f}"
            f" {get('batch_1_cpu'):7.1f} {get('batch_2_cpu'):7.1f} |"
            f" {get('sign_1'):7.1f} {get('sign_2'):8.1f} {get('sign_2') / get('sign_1'):6.2f}"
            f" {get('base_sign'):10.1f}"
        )


def run(
    benchmark: BenchmarkFixture,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rounds: int,
    iterations: int,
) -> Any:
    return benchmark.pedantic(  # type: ignore[no-untyped-call]
        fn, args, rounds=rounds, iterations=iterations, warmup_rounds=1
    )


def record(benchmark: BenchmarkFixture, kind: str, name: str, per_call: int) -> None:
    """Stores µs per signature: the fastest round, the least disturbed by other load."""
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    per_signature = benchmark.stats.stats.min / per_call * 1e6
    RESULTS[kind][name] = per_signature
    benchmark.extra_info["us_per_signature"] = round(per_signature, 2)


# Single calls on one thread are timed in CPU time: other processes on a shared
# box then barely move the ours/baseline ratio. Batches need wall time (threads).
CPU_TIMER = pytest.mark.benchmark(timer=time.process_time)


@CPU_TIMER
@pytest.mark.parametrize("kind", KINDS)
def test_verify_one_core(
    benchmark: BenchmarkFixture, schemes: dict[str, Scheme], kind: str
) -> None:
    benchmark.group = f"verify one {kind}"
    s = schemes[kind]
    args = (s.public_der, s.messages[0], s.signatures[0])
    assert run(benchmark, crypto.verify_signature, args, 30, 50) is True
    record(benchmark, kind, "verify", 1)


@CPU_TIMER
@pytest.mark.parametrize("kind", KINDS)
def test_verify_one_baseline(
    benchmark: BenchmarkFixture, schemes: dict[str, Scheme], kind: str
) -> None:
    benchmark.group = f"verify one {kind}"
    s = schemes[kind]
    run(benchmark, s.baseline_verify, (s.messages[0], s.signatures[0]), 30, 50)
    record(benchmark, kind, "base_verify", 1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_verify_batch(
    benchmark: BenchmarkFixture, schemes: dict[str, Scheme], kind: str, threads: int
) -> None:
    benchmark.group = f"verify batch {kind}"
    s = schemes[kind]
    results = run(benchmark, crypto.verify_signatures, (s.items, threads), 25, 1)
    assert results == [True] * BATCH
    record(benchmark, kind, f"batch_{threads}", BATCH)
    # CPU time spent per signature, summed over the threads: equal at 1 and 2
    # threads means the threads do not slow each other down (no lock contention),
    # whatever other load on the box does to the wall time.
    start = time.process_time()
    for _ in range(4):
        crypto.verify_signatures(s.items, threads)
    RESULTS[kind][f"batch_{threads}_cpu"] = (time.process_time() - start) / (4 * BATCH) * 1e6


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_sign_many(
    benchmark: BenchmarkFixture, schemes: dict[str, Scheme], kind: str, threads: int
) -> None:
    benchmark.group = f"sign batch {kind}"
    s = schemes[kind]
    signatures = run(benchmark, s.core.sign_many, (s.messages, threads), 25, 1)
    assert len(signatures) == BATCH
    record(benchmark, kind, f"sign_{threads}", BATCH)


@pytest.mark.parametrize("kind", KINDS)
def test_sign_baseline(benchmark: BenchmarkFixture, schemes: dict[str, Scheme], kind: str) -> None:
    benchmark.group = f"sign batch {kind}"
    s = schemes[kind]

    def sign_all() -> list[bytes]:
        return [s.baseline_sign(m) for m in s.messages]

    assert len(run(benchmark, sign_all, (), 25, 1)) == BATCH
    record(benchmark, kind, "base_sign", BATCH)
