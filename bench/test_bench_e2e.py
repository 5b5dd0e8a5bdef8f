"""End-to-end load: vendor CPU µs per accepted payment, per mode, against a raw-ASGI floor.

The vendor (one worker, Redis store) is pinned to CPU 0; the load generator runs
in a separate process pinned to CPU 1 together with Redis and the issuer. Every
payment is pre-computed; the timed phase only sends pre-built HTTP requests over
many keep-alive connections (one channel per connection, indices increasing).
Vendor CPU = its utime + stime from /proc over the timed phase ÷ accepted payments.
The floor is a minimal raw ASGI app on the same uvicorn (uvloop + httptools)
under the same load, measured in the same run.

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_e2e.py -s   (NANOMONI_BENCH_STORE=sqlite|redis)
 or: PYTHONPATH=. .venv/bin/python bench/test_bench_e2e.py [payments-per-channel] [sqlite|redis]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nanomoni.client.proofs import SignaturePayer, build_open_request, create_commitment_payer

from nanomoni.client.wallet import Wallet
from nanomoni.launch import ServiceProcess, free_port, start_issuer, start_vendor
from nanomoni.protocol.model import Mode
from nanomoni.tools.cpu import cpu_seconds
from nanomoni.tools.rawhttp import RawConnection, build_post

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_servers import redis_server

SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = 32
PAYMENTS_PER_CHANNEL = int(os.environ.get("NANOMONI_BENCH_PAYMENTS", "150"))
STORE = os.environ.get("NANOMONI_BENCH_STORE", "redis")  # or "sqlite"
TARGETS = {"payword": ("× floor", 4.0), "paytree": ("× floor", 4.5), "signature": ("µs", 160.0)}

FLOOR_APP = textwrap.dedent(
    """
    import sys, uvicorn
    BODY = (b'{"channel_id":"x","cumulative_owed_amount":1,'
            b'"created_at":"2026-01-01T00:00:00+00:00","k":1}')
    START = {"type": "http.response.start", "status": 201,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(BODY)).encode())]}
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(START)
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning", proxy_headers=False, server_header=False)
    """
)


def _pin(pid: int, cpu: int) -> None:
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(pid, {cpu})


# --- load generator (separate process) -----------------------------------------------


def _drive(url: str, streams: list[list[bytes]], out: Any) -> None:
    """Child process: send every stream's requests in order over its own connection."""
    _pin(0, LOAD_CPU)
    import uvloop

    async def run() -> tuple[int, dict[int, int], float]:
        statuses: dict[int, int] = {}

        async def one(stream: list[bytes]) -> None:
            connection = RawConnection(url)
            for request in stream:
                status, _ = await connection.send(request)
                statuses[status] = statuses.get(status, 0) + 1
            connection.close()

        started = time.perf_counter()
        await asyncio.gather(*(one(stream) for stream in streams))
        return statuses.get(201, 0), statuses, time.perf_counter() - started

    out.send(uvloop.run(run()))


def load(
    url: str, server_pid: int, streams: list[list[bytes]]
) -> tuple[float, int, dict[int, int]]:
    """(server CPU seconds, accepted count, statuses) for sending every stream."""
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    worker = multiprocessing.get_context("fork").Process(target=_drive, args=(url, streams, send))
    before = cpu_seconds(server_pid)
    worker.start()
    send.close()  # ours: so a crashed generator shows as EOF, not a hang
    accepted, statuses, _seconds = receive.recv()
    worker.join()
    return cpu_seconds(server_pid) - before, accepted, statuses


# --- set-up ---------------------------------------------------------------------------


@dataclass
class ModePlan:
    mode: Mode
    warmup: list[list[bytes]]  # first payment of each channel (the vendor learns the channel)
    timed: list[list[bytes]]
    channel_ids: list[str]
    unit: int


def plan_mode(
    issuer_url: str, vendor_url: str, vendor_pk: str, mode: Mode, per_channel: int
) -> ModePlan:
    wallet = Wallet.generate("p256")
    issuer = httpx.Client(base_url=issuer_url + "/api/v1/issuer", timeout=60)
    issuer.post(
        "/accounts", json={"client_public_key_der_b64": wallet.public_key_b64}
    ).raise_for_status()
    unit = 1
    max_index = per_channel + 1
    warmup, timed, ids = [], [], []
    for _ in range(CONNECTIONS):
        payer: Any
        if mode is Mode.signature:
            request = build_open_request(wallet, vendor_pk, mode, max_index)
        else:
            payer = create_commitment_payer(mode, max_index, "sha256")
            request = build_open_request(
                wallet,
                vendor_pk,
                mode,
                max_index,
                unit_value=unit,
                max_index=max_index,
                root=payer.root,
            )
        reply = issuer.post(f"/channels/{mode.value}", content=msgspec.json.encode(request))
        reply.raise_for_status()
        channel_id = reply.json()["channel_id"]
        ids.append(channel_id)
        path = f"/api/v1/vendor/channels/{mode.value}/{channel_id}/payments"
        indices = list(range(1, per_channel + 2))
        if mode is Mode.signature:
            bodies = SignaturePayer(wallet, channel_id).bodies(indices)
        else:
            payer.channel_id = channel_id
            bodies = []
            for index in indices:  # each body pruned against the state before it (all accepted)
                bodies.append(payer.body(index))
                payer.accepted(index)
        requests = [build_post(vendor_url, path, msgspec.json.encode(body)) for body in bodies]
        warmup.append(requests[:1])
        timed.append(requests[1:])
    issuer.close()
    return ModePlan(mode, warmup, timed, ids, unit)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("floor app did not start")


@contextmanager
def floor_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)])
    try:
        _wait_port(port)
        _pin(process.pid, SERVER_CPU)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Result:
    mode: str
    payments: int
    vendor_us: float
    floor_us: float
    statuses: dict[int, int]

    @property
    def ratio(self) -> float:
        return self.vendor_us / self.floor_us


def run_all(per_channel: int = PAYMENTS_PER_CHANNEL, store: str = STORE) -> list[Result]:
    results: list[Result] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="nanomoni-bench-") as tmp:
        vendor_store = None  # sqlite: the embedded default in the vendor's data dir
        if store == "redis":
            redis = stack.enter_context(redis_server())
            assert redis.process is not None
            _pin(redis.process.pid, LOAD_CPU)
            vendor_store = redis.url.rsplit("/", 1)[0] + "/1"
        issuer: ServiceProcess = stack.enter_context(start_issuer(data_dir=Path(tmp) / "issuer"))
        _pin(issuer.pid, LOAD_CPU)
        vendor: ServiceProcess = stack.enter_context(
            start_vendor(data_dir=Path(tmp) / "vendor", issuer_url=issuer.url, store=vendor_store)
        )
        _pin(vendor.pid, SERVER_CPU)
        vendor_pk = httpx.get(vendor.url + "/api/v1/vendor/keys/public").json()[
            "public_key_der_b64"
        ]
        _wait_registered(issuer.url, vendor_pk)
        floor_url, floor_pid = stack.enter_context(floor_server())
        for mode in Mode:
            plan = plan_mode(issuer.url, vendor.url, vendor_pk, mode, per_channel)
            load(vendor.url, vendor.pid, plan.warmup)
            vendor_cpu, accepted, statuses = load(vendor.url, vendor.pid, plan.timed)
            floor_cpu, floor_count, _ = load(floor_url, floor_pid, plan.timed)
            total = sum(len(stream) for stream in plan.timed)
            assert accepted == total, statuses
            _settle_all(vendor.url, issuer.url, plan, per_channel + 1)
            results.append(
                Result(
                    mode.value,
                    accepted,
                    vendor_cpu / accepted * 1e6,
                    floor_cpu / floor_count * 1e6,
                    statuses,
                )
            )
    return results


def _wait_registered(issuer_url: str, vendor_pk: str) -> None:
    deadline = time.monotonic() + 20
    while (
        httpx.get(
            issuer_url + "/api/v1/issuer/accounts", params={"public_key_der_b64": vendor_pk}
        ).status_code
        != 200
    ):
        assert time.monotonic() < deadline, "vendor never registered"
        time.sleep(0.05)


def _settle_all(vendor_url: str, issuer_url: str, plan: ModePlan, last_index: int) -> None:
    """Every channel settles at exactly the last payment sent: nothing was lost or invented."""
    for channel_id in plan.channel_ids:
        reply = httpx.post(
            f"{vendor_url}/api/v1/vendor/channels/{plan.mode.value}/{channel_id}/closure-requests",
            json={"channel_id": channel_id},
            timeout=60,
        )
        assert reply.status_code == 204, reply.text
        read = httpx.get(
            f"{issuer_url}/api/v1/issuer/channels/{plan.mode.value}/{channel_id}"
        ).json()
        assert read["balance"] == last_index * plan.unit, read


def table(results: list[Result]) -> str:
    header = ("mode", "payments", "vendor µs/pay", "floor µs/req", "ratio", "target")
    rows = [header]
    for r in results:
        unit, bound = TARGETS.get(r.mode, ("", 0.0))
        goal = f"≤ {bound:g}{unit}" if unit else ""
        rows.append(
            (
                r.mode,
                str(r.payments),
                f"{r.vendor_us:.1f}",
                f"{r.floor_us:.1f}",
                f"{r.ratio:.2f}",
                goal,
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if col in (0, 5) else cell.rjust(w)
            for col, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


@pytest.fixture(scope="module")
def results() -> list[Result]:
    found = run_all()
    print(f"\nvendor store: {STORE}\n" + table(found))
    return found


@pytest.mark.parametrize("mode", [mode.value for mode in Mode])
def test_vendor_cpu_per_payment(results: list[Result], mode: str, benchmark: Any) -> None:
    result = next(r for r in results if r.mode == mode)
    # The measurement ran once above; pytest-benchmark records its figures.
    benchmark.extra_info.update(
        vendor_cpu_us_per_payment=round(result.vendor_us, 1),
        floor_cpu_us_per_request=round(result.floor_us, 1),
        ratio_to_floor=round(result.ratio, 2),
        payments=result.payments,
    )
    benchmark.pedantic(lambda: result.vendor_us, rounds=1, iterations=1)
    assert result.statuses == {201: result.payments}


if __name__ == "__main__":
    per_channel = int(sys.argv[1]) if len(sys.argv) > 1 else PAYMENTS_PER_CHANNEL
    store = sys.argv[2] if len(sys.argv) > 2 else STORE
    print(f"vendor store: {store}")
    print(table(run_all(per_channel, store)))
