"""Figures measured outside pytest-benchmark, saved and compared as its timings.

The end-to-end load and the metrics probe measure CPU per payment in other
processes. `record(benchmark, seconds)` stores such a figure as the benchmark's
one round (the test carries the `MEASURED` marker, which hands pytest-benchmark
a clock that only moves by the figure), so `make bench` saves it and
`make bench-compare` compares it like any timing.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture


class MeasuredClock:
    """Stands still, except that `advance` moves it on by a figure measured elsewhere."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def __repr__(self) -> str:
        return "measured outside pytest-benchmark"

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return seconds


CLOCK = MeasuredClock()
MEASURED = pytest.mark.benchmark(timer=CLOCK)


def record(benchmark: BenchmarkFixture, seconds: float) -> None:
    benchmark.pedantic(CLOCK.advance, (seconds,), rounds=1, iterations=1)  # type: ignore[no-untyped-call]
