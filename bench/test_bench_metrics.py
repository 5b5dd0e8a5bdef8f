"""Per-payment cost of the vendor's metrics: in-process registry (one worker) vs
prometheus_client multiprocess mode (several workers), measured in the same run.

Each variant runs in a fresh interpreter because multiprocess mode is chosen by
PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported. The baseline is
the same loop without the metrics call.

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_metrics.py -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

import pytest
from measured import MEASURED, record

CALLS = 100_000

PROBE = textwrap.dedent(
    f"""
    import time
    from nanomoni import metrics
    def record():
        metrics.payment("payword", "accepted", 0.0001)
        metrics.store_time("load", 0.00002)
        metrics.store_time("compare_and_set", 0.00002)
    def nothing():
        pass
    for fn in (nothing, record):
        fn()
        start = time.process_time()
        for _ in range({CALLS}):
            fn()
        print((time.process_time() - start) / {CALLS} * 1e6)
    """
)


def _probe(multiprocess: bool) -> tuple[float, float]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix="nanomoni-metrics-") as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True
        ).stdout.split()
    baseline, recorded = float(out[0]), float(out[1])
    return baseline, recorded


@MEASURED
@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_metrics_cost_per_payment(multiprocess: bool, benchmark: Any) -> None:
    baseline, recorded = _probe(multiprocess)
    cost = recorded - baseline
    benchmark.extra_info.update(
        metrics_us_per_payment=round(cost, 2), empty_loop_us=round(baseline, 3)
    )
    record(benchmark, cost * 1e-6)  # its time: µs of metrics per payment
    print(
        f"\nmetrics per payment ({'multiprocess' if multiprocess else 'single process'}): "
        f"{cost:.2f} µs (empty loop {baseline:.3f} µs)"
    )
    assert cost > 0
