"""End-to-end load: vendor CPU µs per accepted payment, per mode, against a raw-ASGI floor.

The measurement is `nanomoni bench` itself (`nanomoni.tools.bench`, the one load
harness): the vendor (one worker, Redis store) and the floor app on CPU 0; the
load generator (a separate process), Redis and the issuer on CPU 1. Every
payment is pre-computed; the timed phase only sends pre-built HTTP requests
over many keep-alive connections (one channel per connection, indices
increasing). Vendor CPU = its utime + stime from /proc over the timed phase ÷
accepted payments; the floor is a minimal raw ASGI app on the same uvicorn
(uvloop + httptools) under the same requests, measured in the same run.

Run: .venv/bin/pytest bench/test_bench_e2e.py -s   (NANOMONI_BENCH_STORE=embedded|redis,
     NANOMONI_BENCH_PAYMENTS = payments per channel)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from measured import MEASURED, record

from nanomoni.cli import build_parser
from nanomoni.protocol.modes import ALL
from nanomoni.tools.bench import HEADERS, collect, render
from nanomoni.tools.display import Display

CONNECTIONS = 32
PAYMENTS_PER_CHANNEL = int(os.environ.get("NANOMONI_BENCH_PAYMENTS", "150"))
STORE = os.environ.get("NANOMONI_BENCH_STORE", "redis")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out: Path = tmp_path_factory.mktemp("bench-e2e")
    args = build_parser().parse_args([
        "bench",
        "--store", STORE,
        "--payments", str(CONNECTIONS * (PAYMENTS_PER_CHANNEL + 1)),  # + 1 warm-up each
        "--channels", str(CONNECTIONS),
        "--concurrency", str(CONNECTIONS),
        "--floor",
        "--pin",
        "--out", str(out),
    ])  # fmt: skip
    display = Display()
    runs = collect(args, display)["runs"]
    display.table(f"vendor store: {STORE}", HEADERS, render(runs))
    return {run["mode"]: run for run in runs}


@MEASURED
@pytest.mark.parametrize("mode", [rules.mode.value for rules in ALL])
def test_vendor_cpu_per_payment(
    results: dict[str, dict[str, Any]], mode: str, benchmark: Any
) -> None:
    run = results[mode]
    # The measurement ran once above; its time here is vendor CPU per payment.
    benchmark.extra_info.update(
        vendor_cpu_us_per_payment=round(run["vendor_cpu_us_per_payment"], 1),
        floor_cpu_us_per_request=round(run["floor_cpu_us_per_request"], 1),
        ratio_to_floor=round(run["vendor_to_floor"], 2),
        payments=run["timed"],
    )
    record(benchmark, run["vendor_cpu_us_per_payment"] * 1e-6)
    assert run["errors"] == {} and run["timed"] == CONNECTIONS * PAYMENTS_PER_CHANNEL
    assert run["settled_exact"]  # every channel settled at exactly its last payment
