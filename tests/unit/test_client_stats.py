"""Latency summaries and pacing used by the demo and the load generator."""

from __future__ import annotations

import asyncio
import itertools
import time

from nanomoni.tools.bench import Pacer
from nanomoni.tools.stats import histogram, log_edges_ms, percentile, summary_ms


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    summary = summary_ms([0.001, 0.002, 0.003, 0.004])
    assert summary == {"mean": 2.5, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}


def test_histogram_counts_every_value_once() -> None:
    latencies = [0.0002, 0.001, 0.0011, 0.05, 0.3]
    edges = log_edges_ms(0.2, 300.0)
    assert edges[0] <= 0.2 and edges[-1] >= 300.0
    assert all(a < b for a, b in itertools.pairwise(edges))
    counts = histogram(latencies, edges)
    assert len(counts) == len(edges) - 1
    assert sum(counts) == len(latencies)
    # 1.0 ms and 1.1 ms share the bin [1.0, 1.259) with 10 bins per decade.
    assert max(counts) == 2


async def test_pacer_holds_the_target_rate() -> None:
    pacer = Pacer(200.0)
    started = time.perf_counter()
    for _ in range(41):
        await pacer.wait()
    elapsed = time.perf_counter() - started
    assert 0.19 <= elapsed < 0.6  # the 41st send is due at 40 / 200 = 0.2 s
    unpaced = Pacer(0.0)
    started = time.perf_counter()
    await asyncio.gather(*(unpaced.wait() for _ in range(1000)))
    assert time.perf_counter() - started < 0.1
