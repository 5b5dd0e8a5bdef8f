"""`nanomoni bench`: the load harness (also behind `bench/test_bench_e2e.py`).

For each mode: open channels, pre-compute every payment request (so the timed
phase only sends), send each channel's first payment untimed (the vendor then
learns the channel from the issuer), drive the rest with a fixed concurrency
(optionally paced to a target rate, optionally cut off by a duration), then
settle every channel and check the issuer settled exactly what the vendor
accepted. Vendor and Redis CPU per payment are read from /proc when their PIDs
are known (always, for services it starts itself). With `--floor` the same
requests also go to a bare ASGI app on the same server stack, measured in the
same run; with `--pin` the vendor (and the floor) run on CPU 0 and everything
else, load generator included, on CPU 1. Writes result.json and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec
import uvloop

from nanomoni import wire
from nanomoni.client.http import api_error, require_loopback
from nanomoni.client.session import Channel, Client
from nanomoni.client.wallet import Wallet
from nanomoni.launch import free_port
from nanomoni.protocol.messages import Payment
from nanomoni.tools.cpu import TICKS_PER_SECOND, cpu_seconds, process_tree
from nanomoni.tools.demo import wait_for_account
from nanomoni.tools.display import Display
from nanomoni.tools.local import local_services
from nanomoni.tools.plots import write_plots
from nanomoni.tools.rawhttp import RawConnection, ResponseError, build_post
from nanomoni.tools.runs import Run
from nanomoni.tools.stats import histogram, log_edges_ms, summary_ms

T = TypeVar("T")
UNIT = 1
SERVER_CPU, LOAD_CPU = 0, 1
SETUP_CONCURRENCY = 16  # channel opens and closures in flight outside the timed phase
MIN_CPU_TICKS = 2  # fewer /proc ticks than this cannot tell a CPU figure from rounding
TRANSPORTS = ("post", "batch", "websocket")  # one payment per POST, batches, stream frames


@dataclass
class Plan:
    """Channels of one run and, per channel, its complete payment requests in order."""

    run: Run
    channels: list[Channel]
    requests: list[list[bytes]]  # one POST per payment
    payments: list[list[Payment]]  # the same payments, for batches and frames

    @property
    def total(self) -> int:
        return sum(len(requests) for requests in self.requests)

    @property
    def warmup(self) -> list[list[bytes]]:
        """Each channel's first payment: the vendor learns the channel (untimed)."""
        return [requests[:1] for requests in self.requests]

    @property
    def timed(self) -> list[list[bytes]]:
        return [requests[1:] for requests in self.requests]


@dataclass
class Measured:
    latencies_s: list[float] = field(default_factory=list)
    accepted: int = 0
    replays: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    accepted_steps: dict[int, int] = field(default_factory=dict)  # channel slot -> count
    owed: dict[str, int] = field(default_factory=dict)  # batches: channel id -> highest owed
    requests: int = 0  # HTTP requests or stream frames sent
    elapsed_s: float = 0.0
    vendor_cpu_s: float | None = None
    redis_cpu_s: float | None = None
    client_cpu_s: float = 0.0  # this load generator's own CPU (it shares the machine)


async def limited(steps: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run coroutines at most `limit` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(step: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await step

    return await asyncio.gather(*(one(step) for step in steps))


async def prepare_channel(
    client: Client, run: Run, count: int
) -> tuple[Channel, list[bytes], list[Payment]]:
    """Open one channel for `count` payments and build all their requests."""
    channel = await client.open_channel(
        run.mode, count * UNIT, unit_value=UNIT, max_index=count, hash_alg=run.hash_alg
    )
    # Each payment assumes its predecessors were accepted (signatures: one native batch).
    payments = list(channel.payer.payments(range(1, count + 1)))
    bodies = [wire.encode_payment(payment) for payment in payments]
    url = client.vendor.payment_url(channel.rules, channel.channel_id)
    path = urlsplit(url).path
    return channel, [build_post(url, path, body) for body in bodies], payments


async def prepare(client: Client, run: Run, channels: int, payments: int) -> Plan:
    per_channel = math.ceil(payments / channels)
    counts = [min(per_channel, payments - n * per_channel) for n in range(channels)]
    steps = [prepare_channel(client, run, count) for count in counts if count > 0]
    prepared = await limited(steps, SETUP_CONCURRENCY)
    return Plan(
        run,
        [channel for channel, _, _ in prepared],
        [requests for _, requests, _ in prepared],
        [payments for _, _, payments in prepared],
    )


@dataclass(frozen=True)
class Batched:
    """One batch request (or stream frame) of a lane and how many payments it carries."""

    request: bytes
    items: int
    channels: int


def batch_lanes(
    plan: Plan, lanes: int, batch_size: int, transport: str, vendor_url: str
) -> list[list[Batched]]:
    """The timed payments (each channel's first is the warm-up) as `lanes` ordered
    streams of batches: a lane's channels take turns, so a batch of N spreads over
    min(N, its lane's channels) channels; each channel's payments stay in order."""
    rules = plan.channels[0].rules
    out = []
    for lane in range(lanes):
        slots = list(range(lane, len(plan.channels), lanes))
        queues = [plan.payments[slot][1:] for slot in slots]
        order = [
            (slot, payment)
            for step in range(max((len(q) for q in queues), default=0))
            for slot, queue in zip(slots, queues, strict=True)
            if step < len(queue)
            for payment in [queue[step]]
        ]
        batches = []
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            body = wire.encode_batch([(rules, payment) for _, payment in chunk])
            if transport == "batch":
                url = f"{vendor_url}/api/v1/vendor/payments/batch"
                body = build_post(url, urlsplit(url).path, body)
            batches.append(Batched(body, len(chunk), len({slot for slot, _ in chunk})))
        out.append(batches)
    return out


class Pacer:
    """Hands out send times t0 + n / rate (no pacing when rate is 0)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.perf_counter()
        self.sent = 0

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        due = self.start + self.sent / self.rate
        self.sent += 1
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass(frozen=True)
class Load:
    """How the timed phase sends: where, how many at once, how fast, how long."""

    url: str
    concurrency: int
    rate: float = 0.0
    duration: float | None = None
    pids: tuple[int | None, int | None] = (None, None)  # vendor, redis: CPU is read for these
    transport: str = "post"


async def drive(load: Load, streams: list[list[bytes]], sent: Any) -> Measured:
    """Send every stream's requests in order; `sent.value` counts what went out."""
    measured = Measured()
    workers = max(1, min(load.concurrency, len(streams)))
    pacer = Pacer(load.rate)
    deadline = None if load.duration is None else time.perf_counter() + load.duration

    async def worker(mine: list[int]) -> None:
        # A channel's payments go in order; a channel stops at its first refusal
        # because its later (pruned) proofs assumed this one was accepted.
        connection = RawConnection(load.url)
        active = list(mine)
        step = 0
        try:
            while active:
                for slot in list(active):
                    requests = streams[slot]
                    if step >= len(requests) or (
                        deadline is not None and time.perf_counter() > deadline
                    ):
                        active.remove(slot)
                        continue
                    await pacer.wait()
                    started = time.perf_counter()
                    try:
                        status, body = await connection.send(requests[step])
                    except ResponseError:
                        status, body = 0, b""
                    sent.value += 1
                    if status not in (200, 201):
                        code = api_error(status, body).raw_code if status else "connection"
                        measured.errors[code] += 1
                        active.remove(slot)
                        continue
                    measured.latencies_s.append(time.perf_counter() - started)
                    measured.accepted += 1
                    measured.replays += status == 200
                    measured.accepted_steps[slot] = step + 1
                step += 1
        finally:
            connection.close()

    workers_done = asyncio.gather(
        *(worker(list(range(w, len(streams), workers))) for w in range(workers))
    )
    await timed(load, measured, workers_done)
    return measured


async def timed(load: Load, measured: Measured, work: Awaitable[Any]) -> None:
    """Run `work`, recording its wall time and the CPU of the load's processes and ours."""
    cpu_before = [cpu_seconds(pid) if pid else None for pid in load.pids]
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    await work
    measured.elapsed_s = time.perf_counter() - started
    measured.client_cpu_s = time.process_time() - client_cpu_before
    cpu_after = [cpu_seconds(pid) if pid else None for pid in load.pids]
    measured.vendor_cpu_s, measured.redis_cpu_s = (
        None if before is None or after is None else after - before
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )


class StreamConnection:
    """One WebSocket to the payment stream: a frame out, its answer back."""

    def __init__(self, url: str) -> None:
        self.url = url + "/api/v1/vendor/payments/stream"
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None

    async def send(self, frame: bytes) -> tuple[int, bytes]:
        if self._socket is None:
            self._session = aiohttp.ClientSession()
            self._socket = await self._session.ws_connect(self.url, max_msg_size=0)
        await self._socket.send_str(frame.decode())
        message = await self._socket.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ResponseError(f"stream ended: {message.type.name}")
        data: bytes = message.data.encode()
        return (200 if data.startswith(b'{"results"') else 400), data

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()


_results_decoder = msgspec.json.Decoder(wire.BatchResults)


async def drive_batches(load: Load, lanes: list[list[Batched]], sent: Any) -> Measured:
    """Send each lane's batches (POSTs or frames of one WebSocket) in order, one lane per
    connection; every item's result is counted."""
    measured = Measured()
    pacer = Pacer(load.rate)
    deadline = None if load.duration is None else time.perf_counter() + load.duration

    async def lane(batches: list[Batched]) -> None:
        stream = load.transport == "websocket"
        connection: RawConnection | StreamConnection = (
            StreamConnection(load.url) if stream else RawConnection(load.url)
        )
        try:
            for batch in batches:
                if deadline is not None and time.perf_counter() > deadline:
                    return
                for _ in range(batch.items):
                    await pacer.wait()
                started = time.perf_counter()
                try:
                    status, body = await connection.send(batch.request)
                except ResponseError:
                    status, body = 0, b""
                sent.value += batch.items
                measured.requests += 1
                if status != 200:
                    code = api_error(status, body).raw_code if status else "connection"
                    measured.errors[code] += batch.items
                    continue
                measured.latencies_s.append(time.perf_counter() - started)
                for result in _results_decoder.decode(body).results:
                    if result.status in (200, 201):
                        measured.accepted += 1
                        measured.replays += result.status == 200
                        assert result.channel_id and result.cumulative_owed_amount is not None
                        owed = measured.owed.get(result.channel_id, 0)
                        measured.owed[result.channel_id] = max(owed, result.cumulative_owed_amount)
                    else:
                        measured.errors[result.code or str(result.status)] += 1
        finally:
            if isinstance(connection, StreamConnection):
                await connection.close()
            else:
                connection.close()

    await timed(load, measured, asyncio.gather(*(lane(batches) for batches in lanes)))
    return measured


class _Counter:
    value = 0


def _pin(pid: int, cpu: int) -> None:
    """pid and its descendants (service workers) on one CPU, where there are two."""
    if len(os.sched_getaffinity(0)) > 1:
        for member in process_tree(pid):
            try:
                os.sched_setaffinity(member, {cpu})
            except ProcessLookupError:
                pass


def _any_drive(load: Load, streams: Any, sent: Any) -> Coroutine[Any, Any, Measured]:
    if load.transport == "post":
        return drive(load, streams, sent)
    return drive_batches(load, streams, sent)


def _drive_child(load: Load, streams: Any, sent: Any, out: Any) -> None:
    _pin(os.getpid(), LOAD_CPU)
    out.send(uvloop.run(_any_drive(load, streams, sent)))


async def drive_apart(load: Load, streams: Any, sent: Any) -> Measured:
    """`drive` (or `drive_batches`) in a forked process on the load CPU, so the measured
    side has its own."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_drive_child, args=(load, streams, sent, send))
    child.start()
    send.close()  # ours: a crashed generator then shows as EOF, not a hang
    try:
        while not receive.poll():
            await asyncio.sleep(0.05)
        measured: Measured = receive.recv()
    finally:
        child.join()
    return measured


# --- the floor: a bare ASGI app on the same server stack ----------------------------

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


@contextmanager
def floor_server(pin: bool) -> Iterator[tuple[str, int]]:
    """(url, pid) of the bare app; stopped when the context exits."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.05)
        if pin:
            _pin(process.pid, SERVER_CPU)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


# --- one mode ----------------------------------------------------------------------


async def settle(client: Client, plan: Plan, accepted: dict[int, int]) -> tuple[int, int, bool]:
    """Close every channel that took payments: (owed, settled, all exact)."""

    async def close(channel: Channel, count: int) -> tuple[int, bool]:
        await channel.close()
        info = await channel.refresh()
        return info.balance, info.is_closed and info.balance == count * UNIT

    paid = {plan.channels[slot]: count for slot, count in accepted.items() if count}
    closed = await limited([close(c, n) for c, n in paid.items()], SETUP_CONCURRENCY)
    owed = sum(paid.values()) * UNIT
    return owed, sum(balance for balance, _ in closed), all(exact for _, exact in closed)


def describe(
    plan: Plan,
    warm: Measured,
    measured: Measured,
    floor: Measured | None,
    settled: tuple[int, int, bool],
    load: Load,
    batches: list[list[Batched]] | None,
) -> dict[str, Any]:
    owed, settled_total, exact = settled
    edges = log_edges_ms(
        min(measured.latencies_s, default=1e-4) * 1e3, max(measured.latencies_s, default=1e-3) * 1e3
    )

    warnings: list[str] = []

    def per_payment(what: str, cpu_s: float | None, count: int) -> float | None:
        """µs per payment, or None (and a warning) below what /proc ticks can tell."""
        if cpu_s is None or not count:
            return None
        if cpu_s < MIN_CPU_TICKS / TICKS_PER_SECOND:
            warnings.append(
                f"{plan.run.label}: {what} CPU was {round(cpu_s * TICKS_PER_SECOND)} tick(s) of "
                f"{1000 // TICKS_PER_SECOND} ms over {count} payments, below what can be "
                "measured: not reported (send more payments)"
            )
            return None
        return cpu_s * 1e6 / count

    vendor_us = per_payment("vendor", measured.vendor_cpu_s, measured.accepted)
    # The floor answers every request alike: its CPU per request (a batch is one).
    floor_requests = None if floor is None else floor.requests or floor.accepted
    floor_us = (
        None if floor is None else per_payment("floor", floor.vendor_cpu_s, floor_requests or 0)
    )
    redis_us = per_payment("redis", measured.redis_cpu_s, measured.accepted)
    client_us = per_payment("load generator", measured.client_cpu_s, measured.accepted)
    per_request = measured.accepted / measured.requests if measured.requests else 1.0
    all_batches = [batch for lane in batches or [] for batch in lane]
    return {
        "label": plan.run.label,
        "mode": plan.run.mode.value,
        "hash_alg": plan.run.hash_alg,
        "transport": load.transport,
        "payments_per_request": per_request,
        "channels_per_batch": (
            sum(batch.channels for batch in all_batches) / len(all_batches) if all_batches else 1
        ),
        "channels": len(plan.channels),
        "planned": plan.total,
        "warmup": warm.accepted,
        "accepted": warm.accepted + measured.accepted,
        "timed": measured.accepted,
        "replays": warm.replays + measured.replays,
        "errors": dict(warm.errors + measured.errors),
        "elapsed_s": measured.elapsed_s,
        "throughput_per_s": measured.accepted / measured.elapsed_s if measured.elapsed_s else 0.0,
        "latency_ms": summary_ms(measured.latencies_s),
        "latency_histogram": {"edges_ms": edges, "counts": histogram(measured.latencies_s, edges)},
        "vendor_cpu_us_per_payment": vendor_us,
        "redis_cpu_us_per_payment": redis_us,
        "client_cpu_us_per_payment": client_us,
        "floor_cpu_us_per_request": floor_us,
        # Per request: a batch's vendor CPU against the floor's for one request.
        "vendor_to_floor": (
            None if vendor_us is None or not floor_us else vendor_us * per_request / floor_us
        ),
        "owed_total": owed,
        "settled_total": settled_total,
        "settled_exact": exact,
        "warnings": warnings,
    }


async def bench_mode(
    client: Client,
    run: Run,
    args: argparse.Namespace,
    load: Load,
    floor: tuple[str, int] | None,
    display: Display,
) -> dict[str, Any]:
    display.print(f"{run.label}: opening {args.channels} channels, pre-computing payments")
    plan = await prepare(client, run, args.channels, args.payments)
    sent = multiprocessing.get_context("fork").Value("q", 0, lock=False) if args.pin else _Counter()
    warm = await drive(Load(load.url, load.concurrency), plan.warmup, _Counter())
    streams: Any = [
        requests if warm.accepted_steps.get(slot) else []  # a refused channel stays refused
        for slot, requests in enumerate(plan.timed)
    ]
    batches = None
    total = sum(len(stream) for stream in streams)
    if load.transport != "post":
        lanes = min(load.concurrency, len(plan.channels))
        batches = streams = batch_lanes(plan, lanes, args.batch_size, load.transport, load.url)
    send = drive_apart if args.pin else _any_drive
    with display.progress() as progress:
        task = progress.add_task(run.label, total=total)
        driving = asyncio.create_task(send(load, streams, sent))
        # Refresh the bar from a counter instead of on every payment.
        while not driving.done():
            progress.update(task, sent.value)
            await asyncio.wait({driving}, timeout=0.2)
        measured = driving.result()
        progress.update(task, sent.value)
    floor_measured = None
    if floor is not None and load.transport != "websocket":  # the floor app has no stream
        floor_url, floor_pid = floor
        floor_load = Load(floor_url, load.concurrency, pids=(floor_pid, None))
        floor_streams = streams
        if batches is not None:  # the same batch bodies, as plain POSTs to the floor
            floor_streams = [[batch.request for batch in lane] for lane in batches]
        floor_measured = await send(floor_load, floor_streams, _Counter() if not args.pin else sent)
    if batches is None:
        accepted = {
            slot: warm.accepted_steps.get(slot, 0) + measured.accepted_steps.get(slot, 0)
            for slot in range(len(plan.channels))
        }
    else:
        slots = {channel.channel_id: slot for slot, channel in enumerate(plan.channels)}
        accepted = {slot: warm.accepted_steps.get(slot, 0) for slot in range(len(plan.channels))}
        for channel_id, owed in measured.owed.items():
            accepted[slots[channel_id]] = max(accepted[slots[channel_id]], owed // UNIT)
    settled = await settle(client, plan, accepted)
    return describe(plan, warm, measured, floor_measured, settled, load, batches)


async def bench(
    args: argparse.Namespace,
    issuer_url: str,
    vendor_url: str,
    pids: tuple[int | None, int | None],
    floor: tuple[str, int] | None,
    display: Display,
) -> list[dict[str, Any]]:
    results = []
    wallet = Wallet.generate(args.key_kind)
    load = Load(vendor_url, args.concurrency, args.rate, args.duration, pids, args.transport)
    async with Client(issuer_url, vendor_url, wallet, connections=args.concurrency) as client:
        await client.register()
        if args.admin_token:
            need = args.payments * UNIT * len(args.modes)
            await client.issuer.deposit(wallet.public_key_b64, need, args.admin_token)
        await wait_for_account(client, await client.vendor_public_key())
        for run in args.modes:
            results.append(await bench_mode(client, run, args, load, floor, display))
    return results


# --- the command ----------------------------------------------------------------------

HEADERS = ("mode", "accepted", "errors", "payments/s", "p50 ms", "p99 ms", "vendor µs/pay",
           "redis µs/pay", "× floor", "settled")  # fmt: skip


def render(runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    def micros(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return [
        (
            run["label"],
            str(run["accepted"]),
            str(sum(run["errors"].values())),
            f"{run['throughput_per_s']:,.3g}",
            f"{run['latency_ms']['p50']:.2f}",
            f"{run['latency_ms']['p99']:.2f}",
            micros(run["vendor_cpu_us_per_payment"]),
            micros(run["redis_cpu_us_per_payment"]),
            "-" if run["vendor_to_floor"] is None else f"{run['vendor_to_floor']:.2f}",
            f"{run['settled_total']} {'✓' if run['settled_exact'] else '✗'}",
        )
        for run in runs
    ]


def invalid(args: argparse.Namespace) -> str | None:
    """What is wrong with the options beyond each one's own type, if anything."""
    if (args.issuer_url is None) != (args.vendor_url is None):
        return "give both --issuer-url and --vendor-url, or neither"
    if args.issuer_url:
        try:
            require_loopback(args.issuer_url)
            require_loopback(args.vendor_url)
        except ValueError as error:
            return str(error)
    return None


def collect(args: argparse.Namespace, display: Display) -> dict[str, Any]:
    """Run every mode; the result document (also what result.json holds)."""
    with ExitStack() as stack:
        if args.issuer_url:
            issuer_url = require_loopback(args.issuer_url)
            vendor_url = require_loopback(args.vendor_url)
            pids = (args.vendor_pid, args.redis_pid)
            store = "external"
            others: list[int] = []
        else:
            services = stack.enter_context(local_services(args.store, workers=args.workers))
            issuer_url, vendor_url = services.issuer_url, services.vendor_url
            pids = (services.vendor_pid, services.redis_pid)
            store = services.store
            others = [services.issuer_pid, *filter(None, [services.redis_pid])]
        if args.pin:
            if pids[0] is not None:
                _pin(pids[0], SERVER_CPU)
            for pid in others:
                _pin(pid, LOAD_CPU)
        floor = stack.enter_context(floor_server(args.pin)) if args.floor else None
        started_at = time.time()
        # uvloop: the load generator's own CPU per request is what limits it on a small box.
        runs = uvloop.run(bench(args, issuer_url, vendor_url, pids, floor, display))
    return {
        "version": 1,
        "started_at": started_at,
        "issuer_url": issuer_url,
        "vendor_url": vendor_url,
        "store": store,
        "vendor_pid": pids[0],
        "redis_pid": pids[1],
        "config": {
            "payments": args.payments,
            "channels": args.channels,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "duration": args.duration,
            "key_kind": args.key_kind,
            "workers": args.workers,
            "floor": args.floor,
            "pinned": args.pin,
            "transport": args.transport,
            "batch_size": args.batch_size,
        },
        "runs": runs,
    }


def main(args: argparse.Namespace) -> int:
    """`nanomoni bench` (its options are defined with the other commands in `nanomoni.cli`)."""
    display = Display()
    out: Path = args.out
    if (out / "result.json").exists() and not args.overwrite:
        raise SystemExit(
            f"nanomoni bench: {out} already holds a result: choose another --out or --overwrite"
        )
    result = collect(args, display)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = write_plots(result, out)
    runs = result["runs"]
    display.table("NanoMoni bench", HEADERS, render(runs))
    for run in runs:
        for warning in run["warnings"]:
            display.print(f"[yellow]warning: {warning}[/yellow]")
    display.print(f"wrote {out / 'result.json'} and {', '.join(p.name for p in plots)}")
    return 0 if all(run["settled_exact"] and not run["errors"] for run in runs) else 1
