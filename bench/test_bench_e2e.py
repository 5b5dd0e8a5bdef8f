"""End-to-end load: vendor CPU µs per accepted payment, per mode and transport, against
a raw-ASGI floor.

The measurement is `nanomoni bench` itself (`nanomoni.tools.bench`, the one load
harness): the vendor (one worker, Redis store) and the floor app on CPU 0; the
load generator (a separate process), Redis and the issuer on CPU 1. Every
payment is pre-computed; the timed phase only sends pre-built requests over many
keep-alive connections: one payment per POST (one channel per connection), or
batches of 64 per POST or per WebSocket frame (8 channels per connection taking
turns, so each batch spreads over 8 channels). Vendor CPU = its utime + stime
from /proc over the timed phase ÷ accepted payments; the floor is a minimal raw
ASGI app on the same uvicorn (uvloop + httptools) under the same requests,
measured in the same run. Signature batches run once per key type beside the
native single verify of that key, measured in the same process run.

Run: .venv/bin/pytest bench/test_bench_e2e.py -s   (NANOMONI_BENCH_STORE=embedded|redis,
     NANOMONI_BENCH_PAYMENTS = payments per channel)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from measured import MEASURED, record

from nanomoni import crypto
from nanomoni.cli import build_parser
from nanomoni.protocol.modes import ALL, amount_message
from nanomoni.tools.bench import HEADERS, collect, render
from nanomoni.tools.display import Display

CONNECTIONS = 32
BATCH = 64
CHANNELS_PER_CONNECTION = 8
PAYMENTS_PER_CHANNEL = int(os.environ.get("NANOMONI_BENCH_PAYMENTS", "150"))
STORE = os.environ.get("NANOMONI_BENCH_STORE", "redis")
TRANSPORTS = ("post", "batch", "websocket")
HASH_MODES = [rules.mode.value for rules in ALL if rules.members is not None]


def run_bench(out: Path, transport: str, modes: str, key_kind: str = "p256") -> list[Any]:
    per_connection = 1 if transport == "post" else CHANNELS_PER_CONNECTION
    channels = CONNECTIONS * per_connection
    args = build_parser().parse_args([
        "bench",
        "--store", STORE,
        "--modes", modes,
        "--payments", str(channels * (PAYMENTS_PER_CHANNEL + 1)),  # + 1 warm-up each
        "--channels", str(channels),
        "--concurrency", str(CONNECTIONS),
        "--transport", transport,
        "--batch-size", str(BATCH),
        "--key-kind", key_kind,
        "--floor",
        "--pin",
        "--out", str(out),
    ])  # fmt: skip
    display = Display()
    runs: list[Any] = collect(args, display)["runs"]
    display.table(f"vendor store: {STORE}, {transport}, {key_kind}", HEADERS, render(runs))
    return runs


@pytest.fixture(scope="module", params=TRANSPORTS)
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, dict[str, Any]]]:
    transport: str = request.param
    out = tmp_path_factory.mktemp(f"bench-e2e-{transport}")
    modes = ",".join(rules.mode.value for rules in ALL)
    return transport, {run["mode"]: run for run in run_bench(out, transport, modes)}


def check(run: dict[str, Any], channels: int) -> None:
    assert run["errors"] == {} and run["timed"] == channels * PAYMENTS_PER_CHANNEL
    assert run["settled_exact"]  # every channel settled at exactly its last payment


@MEASURED
@pytest.mark.parametrize("mode", [rules.mode.value for rules in ALL])
def test_vendor_cpu_per_payment(
    results: tuple[str, dict[str, dict[str, Any]]], mode: str, benchmark: Any
) -> None:
    transport, runs = results
    run = runs[mode]
    # The measurement ran once above; its time here is vendor CPU per payment.
    floor = run["floor_cpu_us_per_request"]
    benchmark.extra_info.update(
        transport=transport,
        vendor_cpu_us_per_payment=round(run["vendor_cpu_us_per_payment"], 1),
        redis_cpu_us_per_payment=run["redis_cpu_us_per_payment"],
        floor_cpu_us_per_request=None if floor is None else round(floor, 1),
        ratio_to_floor=None if run["vendor_to_floor"] is None else round(run["vendor_to_floor"], 2),
        payments=run["timed"],
    )
    record(benchmark, run["vendor_cpu_us_per_payment"] * 1e-6)
    per_connection = 1 if transport == "post" else CHANNELS_PER_CONNECTION
    check(run, CONNECTIONS * per_connection)


def native_verify_us(kind: str, count: int = 300) -> float:
    """CPU µs of one native single verify of a payment signature by `kind` of key."""
    key = crypto.SigningKey.generate(kind)
    message = amount_message("A" * 43, 12345)
    signature = key.sign(message)
    started = time.process_time()
    for _ in range(count):
        assert crypto.verify_signature(key.public_key_der, message, signature)
    return (time.process_time() - started) * 1e6 / count


@MEASURED
@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
@pytest.mark.parametrize("transport", ["post", "batch"])
def test_signature_cpu_beside_the_native_verify(
    kind: str, transport: str, tmp_path: Path, benchmark: Any
) -> None:
    before = native_verify_us(kind)
    (run,) = run_bench(tmp_path, transport, "signature", kind)
    verify = min(before, native_verify_us(kind))  # the same run, before and after
    vendor = run["vendor_cpu_us_per_payment"]
    benchmark.extra_info.update(
        transport=transport,
        key_kind=kind,
        vendor_cpu_us_per_payment=round(vendor, 1),
        native_verify_us=round(verify, 1),
        beyond_verify_us=round(vendor - verify, 1),
        floor_cpu_us_per_request=run["floor_cpu_us_per_request"],
    )
    record(benchmark, vendor * 1e-6)
    per_connection = 1 if transport == "post" else CHANNELS_PER_CONNECTION
    check(run, CONNECTIONS * per_connection)
