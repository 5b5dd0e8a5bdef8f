"""The benchmark guard (`make bench-guard`): cost ratios measured in one run,
checked against the committed values in bench/guard.toml.

Absolute times are not comparable across our shared, noisy machines; the ratio
of our cost to a baseline measured in the same run is. Each in-process figure
times short rounds of ours and of its baseline alternately, in CPU time of this
process (all its threads), and keeps each side's best round: other load on the
box only ever adds to a round. The end-to-end figures come from the load
harness (`nanomoni bench --floor --pin`): vendor CPU per payment ÷ the CPU the
raw-ASGI floor spends per request, per mode.

A figure regresses when its ratio exceeds committed × (1 + drift). Regressed
figures are measured again (up to CONFIRMATIONS more times, keeping the best
ratio): a burst of load does not persist, a slowdown in the code does.

    python bench/guard.py                      check; exit 1 on a regression
    python bench/guard.py --runs 10            spread: min/median/max per ratio
    python bench/guard.py --only decide_payword,e2e_payword
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.append(str(BENCH.parent / "tests"))  # redis_servers, as pytest finds it for bench/

import hiredis  # noqa: E402
import redis.asyncio as redis_py  # noqa: E402
import uvloop  # noqa: E402
from redis_servers import redis_server  # noqa: E402
from test_bench_hash import (  # noqa: E402
    blake3_digest,
    python_chain,
    python_fold,
    python_tree_root,
    sha256,
)
from test_bench_signatures import Scheme  # noqa: E402
from test_bench_store import (  # noqa: E402
    CHARGE,
    naive_sqlite_cas,
    naive_sqlite_connection,
    new_state,
    redis_py_cas_on,
)
from test_protocol_decide import prepare  # noqa: E402

from nanomoni import crypto  # noqa: E402
from nanomoni.cli import build_parser  # noqa: E402
from nanomoni.encoding import b64url_nopad_decode  # noqa: E402
from nanomoni.protocol.model import CasOutcome  # noqa: E402
from nanomoni.protocol.modes import ALL  # noqa: E402
from nanomoni.protocol.payments import Decision  # noqa: E402
from nanomoni.store import VendorStore, open_vendor_store  # noqa: E402
from nanomoni.store.resp import pack  # noqa: E402
from nanomoni.tools.bench import collect  # noqa: E402
from nanomoni.tools.display import Display, Tracker  # noqa: E402

THRESHOLDS = BENCH / "guard.toml"
ROUND_S = 0.002  # CPU time of one timed round: short, so some rounds run undisturbed
ROUNDS = 25  # rounds per side and figure
CONFIRMATIONS = 2  # extra measurements of a figure that looks regressed

CHAIN_STEPS = 20_000
BATCH = 1000
DEPTH = 20
TREE_LEAVES = 1 << 14
STORE_OPS = 50  # compare-and-sets per timed call (one channel, rising indices)
E2E_CHANNELS = 32
E2E_PAYMENTS_PER_CHANNEL = 125
E2E_REPEATS = 2  # runs per mode, the modes taking turns

# CPU time of this process: preemption by other load does not count, and native
# threads (batch verification, tree building) do.
CLOCK = time.process_time


@dataclass(frozen=True)
class Pair:
    """One figure: our code and its baseline, each a call doing `per_call` operations."""

    name: str
    what: str  # what one operation is, e.g. "chain step"
    ours: Callable[[], object]
    baseline: Callable[[], object]
    per_call: int = 1


@dataclass(frozen=True)
class Sample:
    name: str
    what: str
    ours: float  # seconds per operation
    baseline: float

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline


# --- timing ---------------------------------------------------------------------------


def timed(fn: Callable[[], object], calls: int) -> float:
    """Seconds `calls` calls of fn take on the clock (gc off, as timeit does)."""
    gc.disable()
    try:
        start = CLOCK()
        for _ in repeat(None, calls):
            fn()
        return CLOCK() - start
    finally:
        gc.enable()


def calls_per_round(fn: Callable[[], object]) -> int:
    fn()  # warm caches and lazy set-up
    calls = 1
    while True:
        spent = timed(fn, calls)
        if spent >= ROUND_S / 4 or calls >= 1 << 20:
            return max(1, round(calls * ROUND_S / max(spent, 1e-9)))
        calls *= 4


def measure(pair: Pair) -> Sample:
    """Best round of each side; the sides alternate (and swap order) round by round,
    so both see the same load."""
    sides = (pair.ours, pair.baseline)
    calls = [calls_per_round(fn) for fn in sides]
    best = [float("inf"), float("inf")]
    for round_ in range(ROUNDS):
        for side in (0, 1) if round_ % 2 == 0 else (1, 0):
            best[side] = min(best[side], timed(sides[side], calls[side]) / calls[side])
    ours, baseline = (seconds / pair.per_call for seconds in best)
    return Sample(pair.name, pair.what, ours, baseline)


# --- in-process figures ---------------------------------------------------------------


def hashing() -> list[Pair]:
    seed = os.urandom(32)
    token = os.urandom(32)
    anchor = sha256(token)
    items = [(t, 1, sha256(t)) for t in (os.urandom(32) for _ in range(BATCH))]
    leaf, index = os.urandom(32), 0b1011_0110_1100_1010_0101
    siblings = [os.urandom(32) for _ in range(DEPTH)]
    root = crypto.merkle_fold(leaf, index, siblings)
    leaves = [os.urandom(32) for _ in range(TREE_LEAVES)]
    # Ours and the baseline do the same work, and it succeeds.
    assert crypto.hash_n(seed, CHAIN_STEPS) == python_chain(sha256, seed, CHAIN_STEPS)
    assert crypto.hash_n(seed, 100, "blake3") == python_chain(blake3_digest, seed, 100)
    assert crypto.verify_payword(token, 1, anchor)
    assert crypto.verify_payword_batch(items) == [True] * BATCH
    assert crypto.verify_merkle(leaf, index, siblings, root, DEPTH)
    assert python_fold(leaf, index, siblings, root)
    assert crypto.merkle_root(leaves) == python_tree_root(leaves)
    return [
        Pair(
            "sha256_chain_step",
            "step: hash_n ÷ hashlib loop",
            lambda: crypto.hash_n(seed, CHAIN_STEPS),
            lambda: python_chain(sha256, seed, CHAIN_STEPS),
            CHAIN_STEPS,
        ),
        Pair(
            "blake3_chain_step",
            "step: hash_n ÷ blake3 package loop",
            lambda: crypto.hash_n(seed, CHAIN_STEPS, "blake3"),
            lambda: python_chain(blake3_digest, seed, CHAIN_STEPS),
            CHAIN_STEPS,
        ),
        Pair(
            "payword_verify",
            "call: verify_payword Δk=1 ÷ hashlib",
            lambda: crypto.verify_payword(token, 1, anchor),
            lambda: sha256(token) == anchor,
        ),
        Pair(
            "payword_verify_batch",
            f"item: verify_payword_batch {BATCH} ÷ hashlib",
            lambda: crypto.verify_payword_batch(items),
            lambda: [sha256(t) == a for t, _, a in items],
            BATCH,
        ),
        Pair(
            "merkle_verify_depth20",
            "call: verify_merkle ÷ hashlib fold",
            lambda: crypto.verify_merkle(leaf, index, siblings, root, DEPTH),
            lambda: python_fold(leaf, index, siblings, root),
        ),
        Pair(
            "merkle_tree_build",
            f"tree of {TREE_LEAVES} leaves ÷ hashlib",
            lambda: crypto.merkle_root(leaves),
            lambda: python_tree_root(leaves),
        ),
    ]


BASELINE_LIBRARY = {"p256": "cryptography", "secp256k1": "coincurve", "ed25519": "PyNaCl"}


def encodings() -> list[Pair]:
    """The per-request encodings of the paywall and the stores: a Payment header's
    base64url and a charge's Redis command."""
    header = base64.urlsafe_b64encode(os.urandom(180)).rstrip(b"=")
    padded = header + b"=" * (-len(header) % 4)
    command = CHARGE
    assert b64url_nopad_decode(header) == base64.urlsafe_b64decode(padded)
    assert pack(*command) == hiredis.pack_command(command)
    return [
        Pair(
            "base64url_header",
            "header: b64url_nopad_decode (strict) ÷ base64.urlsafe_b64decode",
            lambda: b64url_nopad_decode(header),
            lambda: base64.urlsafe_b64decode(padded),
        ),
        Pair(
            "resp_pack",
            "command: store.resp.pack ÷ hiredis.pack_command",
            lambda: pack(*command),
            lambda: hiredis.pack_command(command),
        ),
    ]


def signatures() -> list[Pair]:
    pairs = []
    for kind in crypto.KEY_KINDS:
        s = Scheme(kind)
        der, message, signature = s.public_der, s.messages[0], s.signatures[0]
        assert crypto.verify_signature(der, message, signature)
        pairs.append(
            Pair(
                f"verify_{kind}",
                f"verify: ours ÷ {BASELINE_LIBRARY[kind]}",
                partial(crypto.verify_signature, der, message, signature),
                partial(s.baseline_verify, message, signature),
            )
        )
    return pairs


def decisions() -> list[Pair]:
    pairs = []
    for rules in ALL:
        decide, bare = prepare(rules.mode)
        decision = decide()
        assert isinstance(decision, Decision) and not decision.replay  # measure an acceptance
        pairs.append(
            Pair(
                f"decide_{rules.mode.value}", "payment: decode + decide ÷ bare crypto", decide, bare
            )
        )
    return pairs


# --- the store: one compare-and-set ---------------------------------------------------


class Sequential:
    """Compare-and-sets on one channel with rising indices, STORE_OPS per call."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, cas: Callable[[int], Coroutine[Any, Any, None]]
    ) -> None:
        self.loop = loop
        self.cas = cas
        self.index = 0

    async def _run(self) -> None:
        for _ in range(STORE_OPS):
            self.index += 1
            await self.cas(self.index)

    def __call__(self) -> None:
        self.loop.run_until_complete(self._run())


def store_cas(store: VendorStore) -> Callable[[int], Coroutine[Any, Any, None]]:
    channel_id = secrets.token_urlsafe(32)[:43]

    async def cas(index: int) -> None:
        result = await store.compare_and_set(channel_id, new_state(index), {})
        assert result.outcome is CasOutcome.stored

    return cas


@contextmanager
def stores() -> Iterator[list[Pair]]:
    """SQLite (on tmpfs where there is one: the figure is CPU, not the disk's fsync)
    against a naive commit per operation; Redis against redis-py running the same
    script. Both in this process's CPU time: our client's work, not the server's."""
    shm = Path("/dev/shm")
    with ExitStack() as stack:
        tmp = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(
                    prefix="nanomoni-guard-", dir=shm if shm.is_dir() else None
                )
            )
        )
        server = stack.enter_context(redis_server())
        # Each CAS hands work to another thread (SQLite's writer) or process (Redis):
        # all of them on one CPU, the hand-offs cost the same in every run instead of
        # depending on where the scheduler put them. Threads started later inherit this.
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(cpus)})
        stack.callback(os.sched_setaffinity, 0, cpus)
        if server.process is not None:
            os.sched_setaffinity(server.process.pid, {max(cpus)})
        loop = uvloop.new_event_loop()
        stack.callback(loop.close)

        def opened(url: str) -> VendorStore:
            store = loop.run_until_complete(open_vendor_store(url))
            stack.callback(lambda: loop.run_until_complete(store.close()))
            return store

        naive = naive_sqlite_connection(tmp / "naive.sqlite3")
        stack.callback(naive.close)
        client = redis_py.Redis(host="127.0.0.1", port=server.port)
        stack.callback(lambda: loop.run_until_complete(client.aclose()))

        async def naive_cas(index: int) -> None:
            naive_sqlite_cas(naive, index)

        yield [
            Pair(
                "cas_sqlite",
                "CAS: our store ÷ a naive commit per op",
                Sequential(loop, store_cas(opened(f"sqlite:{tmp / 'ours.sqlite3'}"))),
                Sequential(loop, naive_cas),
                STORE_OPS,
            ),
            Pair(
                "cas_redis",
                "CAS: our client ÷ redis-py, same script",
                Sequential(loop, store_cas(opened(server.url))),
                Sequential(loop, loop.run_until_complete(redis_py_cas_on(client))),
                STORE_OPS,
            ),
        ]


# --- end to end -----------------------------------------------------------------------


class _Silent:
    def add_task(self, description: str, total: int) -> None:
        return None

    def advance(self, task: Any) -> None:
        pass

    def update(self, task: Any, completed: int) -> None:
        pass


class QuietDisplay(Display):
    """The harness's display without its progress bars (they would flood a CI log)."""

    def print(self, text: str) -> None:
        pass

    @contextmanager
    def progress(self) -> Iterator[Tracker]:
        yield _Silent()


def end_to_end(modes: Sequence[str]) -> list[Sample]:
    """Vendor CPU per payment ÷ floor CPU per request, per mode (Redis store, pinned).

    Every mode runs E2E_REPEATS times, the modes taking turns, on one set of
    services; each side keeps its least disturbed (lowest) figure."""
    with tempfile.TemporaryDirectory(prefix="nanomoni-guard-e2e-") as out:
        args = build_parser().parse_args([
            "bench",
            "--store", "redis",
            "--modes", ",".join(list(modes) * E2E_REPEATS),
            "--payments", str(E2E_CHANNELS * (E2E_PAYMENTS_PER_CHANNEL + 1)),  # + 1 warm-up
            "--channels", str(E2E_CHANNELS),
            "--concurrency", str(E2E_CHANNELS),
            "--floor",
            "--pin",
            "--out", out,
        ])  # fmt: skip
        runs = collect(args, QuietDisplay())["runs"]
    vendor: dict[str, float] = {}
    floor: dict[str, float] = {}
    for run in runs:
        if run["errors"] or not run["settled_exact"] or run["vendor_to_floor"] is None:
            raise RuntimeError(f"end-to-end run of {run['mode']} failed: {run['errors']}")
        mode = run["mode"]
        vendor[mode] = min(vendor.get(mode, math.inf), run["vendor_cpu_us_per_payment"] * 1e-6)
        floor[mode] = min(floor.get(mode, math.inf), run["floor_cpu_us_per_request"] * 1e-6)
    what = "payment: vendor CPU ÷ raw-ASGI floor"
    return [Sample(f"e2e_{mode}", what, vendor[mode], floor[mode]) for mode in modes]


# --- one run --------------------------------------------------------------------------

HASHING = (
    "sha256_chain_step",
    "blake3_chain_step",
    "payword_verify",
    "payword_verify_batch",
    "merkle_verify_depth20",
    "merkle_tree_build",
)
MODES = tuple(rules.mode.value for rules in ALL)
ENCODINGS = ("base64url_header", "resp_pack")
SIGNATURES = tuple(f"verify_{kind}" for kind in crypto.KEY_KINDS)
DECISIONS = tuple(f"decide_{mode}" for mode in MODES)
STORES = ("cas_sqlite", "cas_redis")
END_TO_END = tuple(f"e2e_{mode}" for mode in MODES)
NAMES = HASHING + ENCODINGS + SIGNATURES + DECISIONS + STORES + END_TO_END


def run_once(names: Sequence[str]) -> dict[str, Sample]:
    """Measures the named figures, in NAMES order; groups with none of them are not set up."""
    wanted = set(names)
    samples: dict[str, Sample] = {}

    def take(pairs: list[Pair]) -> None:
        for pair in pairs:
            if pair.name in wanted:
                samples[pair.name] = measure(pair)

    groups = (
        (HASHING, hashing), (ENCODINGS, encodings), (SIGNATURES, signatures),
        (DECISIONS, decisions),
    )  # fmt: skip
    for group, build in groups:
        if wanted.intersection(group):
            take(build())
    if wanted.intersection(STORES):
        with stores() as pairs:
            take(pairs)
    modes = [mode for mode in MODES if f"e2e_{mode}" in wanted]
    if modes:
        samples.update((sample.name, sample) for sample in end_to_end(modes))
    return samples


# --- thresholds and the verdict -------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    ratio: float  # committed ours ÷ baseline
    drift: float  # allowed relative increase

    @property
    def limit(self) -> float:
        return self.ratio * (1 + self.drift)

    def verdict(self, ratio: float) -> str:
        if ratio > self.limit:
            return "REGRESSED"
        if ratio < self.ratio * (1 - self.drift):
            return "faster"  # beyond the drift: tighten the committed ratio
        return "ok"


def load_thresholds(path: Path, names: Sequence[str]) -> dict[str, Threshold]:
    """Every figure needs an entry, and every entry a figure: none is left unguarded."""
    with path.open("rb") as file:
        table = tomllib.load(file)
    missing = [name for name in NAMES if name not in table]
    unknown = [name for name in table if name not in NAMES]
    if missing or unknown:
        raise SystemExit(f"{path}: no entry for {missing}, entries for unknown figures {unknown}")
    return {
        name: Threshold(float(table[name]["ratio"]), float(table[name]["drift"])) for name in names
    }


def per_op(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.1f} ns"


HEADER = (
    f"{'figure':26} {'ours':>10} {'baseline':>10} {'ratio':>7} {'committed':>9} {'limit':>7}"
    f" {'change':>7}  {'status':9} per"
)


def row(sample: Sample, threshold: Threshold) -> str:
    change = sample.ratio / threshold.ratio - 1
    return (
        f"{sample.name:26} {per_op(sample.ours):>10} {per_op(sample.baseline):>10}"
        f" {sample.ratio:7.3f} {threshold.ratio:9.3f} {threshold.limit:7.3f} {change:+7.0%}"
        f"  {threshold.verdict(sample.ratio):9} {sample.what}"
    )


def check(names: Sequence[str], thresholds: dict[str, Threshold]) -> int:
    started = time.monotonic()
    samples = run_once(names)

    def regressed() -> list[str]:
        return [n for n, s in samples.items() if thresholds[n].verdict(s.ratio) == "REGRESSED"]

    for attempt in range(1, CONFIRMATIONS + 1):
        again = regressed()
        if not again:
            break
        print(f"measuring again ({attempt}/{CONFIRMATIONS}): {', '.join(again)}", flush=True)
        for name, sample in run_once(again).items():
            if sample.ratio < samples[name].ratio:
                samples[name] = sample
    print(HEADER)
    for name, sample in samples.items():
        print(row(sample, thresholds[name]))
    elapsed = time.monotonic() - started
    faster = [n for n, s in samples.items() if thresholds[n].verdict(s.ratio) == "faster"]
    if faster:
        print(f"\nfaster than committed beyond the drift: {', '.join(faster)}")
        print("  (tighten their ratios in bench/guard.toml: see its header)")
    failed = regressed()
    if failed:
        print(f"\nbench guard FAILED in {elapsed:.0f} s: {len(failed)} figure(s) regressed,")
        print("their ratio above committed × (1 + drift) in every measurement:")
        print(HEADER)
        for name in failed:
            print(row(samples[name], thresholds[name]))
        return 1
    print(f"\nbench guard passed in {elapsed:.0f} s: {len(samples)} figures within their drift")
    return 0


# --- spread: what the committed ratios and drifts are chosen from ---------------------

MIN_DRIFT = 0.25
MAX_DRIFT = 0.5  # a 2× slowdown must fail even when measured at the low end of the spread
# Figures of a group share their source of noise, so they share their drift.
GROUPS = (HASHING + ENCODINGS + SIGNATURES + DECISIONS + STORES, END_TO_END)


def rise(values: Sequence[float]) -> float:
    """How far the worst run lies above the median."""
    return max(values) / statistics.median(values) - 1


def suggested_drift(group_rise: float) -> float:
    """Three times the group's largest rise, in steps of 0.05, within [MIN_DRIFT, MAX_DRIFT]."""
    return min(MAX_DRIFT, max(MIN_DRIFT, math.ceil(3 * group_rise * 20 - 1e-9) / 20))


def spread(names: Sequence[str], runs: int) -> int:
    """Measures every figure `runs` times; prints min/median/max per ratio and
    guard.toml entries (ratio = median, drift from the group's spread)."""
    ratios: dict[str, list[float]] = {name: [] for name in names}
    started = time.monotonic()
    for run in range(runs):
        run_started = time.monotonic()
        for name, sample in run_once(names).items():
            ratios[name].append(sample.ratio)
        print(f"run {run + 1}/{runs}: {time.monotonic() - run_started:.0f} s", flush=True)
    drift = {
        name: suggested_drift(max(rise(ratios[n]) for n in group if n in ratios))
        for group in GROUPS
        for name in group
        if name in ratios
    }
    print(f"\n{runs} runs in {time.monotonic() - started:.0f} s")
    print(f"{'figure':26} {'min':>7} {'median':>7} {'max':>7} {'max/med':>7} {'drift':>6}  runs")
    for name, values in ratios.items():
        lo, mid, hi = min(values), statistics.median(values), max(values)
        listed = " ".join(f"{v:.3f}" for v in values)
        print(
            f"{name:26} {lo:7.3f} {mid:7.3f} {hi:7.3f} {hi / mid:7.3f} {drift[name]:6.2f}  {listed}"
        )
    print("\n# entries for bench/guard.toml")
    for name, values in ratios.items():
        lo, mid, hi = min(values), statistics.median(values), max(values)
        print(f"\n[{name}]  # {runs} runs: min {lo:.3f}, median {mid:.3f}, max {hi:.3f}")
        print(f"ratio = {mid:.3f}\ndrift = {drift[name]:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="measure N times and print the spread")
    parser.add_argument("--only", help="comma-separated figures (default: all)")
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS)
    args = parser.parse_args(argv)
    names = [n for n in NAMES if n in args.only.split(",")] if args.only else list(NAMES)
    unknown = set(args.only.split(",") if args.only else ()) - set(NAMES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; known: {', '.join(NAMES)}")
    if args.runs:
        return spread(names, args.runs)
    return check(names, load_thresholds(args.thresholds, names))


if __name__ == "__main__":
    sys.exit(main())
