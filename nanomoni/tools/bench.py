"""`nanomoni bench`: a bounded, loopback-only load generator.

For each mode: open channels, pre-compute every payment body (so the timed
phase only sends), drive them with a fixed concurrency (optionally paced to a
target rate, optionally cut off by a duration), then settle every channel and
check the issuer settled exactly what the vendor accepted. Writes result.json
and PNG plots into --out. Vendor and Redis CPU per payment are read from
/proc when their PIDs are known (always, for services it starts itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Coroutine
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvloop

from nanomoni import wire
from nanomoni.client.http import api_error, require_loopback
from nanomoni.client.session import Channel, Client
from nanomoni.client.wallet import Wallet
from nanomoni.tools.cpu import cpu_seconds
from nanomoni.tools.demo import wait_for_account
from nanomoni.tools.display import Display
from nanomoni.tools.local import local_services
from nanomoni.tools.plots import write_plots
from nanomoni.tools.rawhttp import RawConnection, ResponseError, build_post
from nanomoni.tools.runs import Run
from nanomoni.tools.stats import histogram, log_edges_ms, summary_ms

T = TypeVar("T")
UNIT = 1


@dataclass
class Plan:
    """Channels of one run and, per channel, its complete payment requests in order."""

    run: Run
    channels: list[Channel]
    requests: list[list[bytes]]

    @property
    def total(self) -> int:
        return sum(len(requests) for requests in self.requests)


@dataclass
class Measured:
    latencies_s: list[float] = field(default_factory=list)
    accepted: int = 0
    replays: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    accepted_index: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    vendor_cpu_s: float | None = None
    redis_cpu_s: float | None = None
    client_cpu_s: float = 0.0  # this load generator's own CPU (it shares the machine)


SETUP_CONCURRENCY = 16  # channel opens and closures in flight outside the timed phase


async def limited(steps: list[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run coroutines at most `limit` at a time; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(step: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await step

    return await asyncio.gather(*(one(step) for step in steps))


async def prepare_channel(client: Client, run: Run, count: int) -> tuple[Channel, list[bytes]]:
    """Open one channel for `count` payments and build all their requests."""
    channel = await client.open_channel(
        run.mode, count * UNIT, unit_value=UNIT, max_index=count, hash_alg=run.hash_alg
    )
    # Each payment assumes its predecessors were accepted (signatures: one native batch).
    payments = channel.payer.payments(range(1, count + 1))
    bodies = [wire.encode_payment(payment) for payment in payments]
    url = client.vendor.payment_url(channel.rules, channel.channel_id)
    path = urlsplit(url).path
    return channel, [build_post(url, path, body) for body in bodies]


async def prepare(client: Client, run: Run, channels: int, payments: int) -> Plan:
    per_channel = math.ceil(payments / channels)
    counts = [min(per_channel, payments - n * per_channel) for n in range(channels)]
    steps = [prepare_channel(client, run, count) for count in counts if count > 0]
    prepared = await limited(steps, SETUP_CONCURRENCY)
    return Plan(run, [channel for channel, _ in prepared], [reqs for _, reqs in prepared])


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


async def drive(
    client: Client,
    plan: Plan,
    *,
    concurrency: int,
    rate: float,
    duration: float | None,
    pids: tuple[int | None, int | None],
    on_sent: list[int],
) -> Measured:
    measured = Measured()
    workers = max(1, min(concurrency, len(plan.channels)))
    pacer = Pacer(rate)
    deadline = None if duration is None else time.perf_counter() + duration
    vendor_pid, redis_pid = pids

    async def worker(mine: list[int]) -> None:
        # A channel's payments go in order; a channel stops at its first refusal
        # because its later (pruned) proofs assumed this one was accepted.
        connection = RawConnection(client.vendor.url)
        active = list(mine)
        step = 0
        try:
            while active:
                for slot in list(active):
                    requests = plan.requests[slot]
                    if step >= len(requests) or (
                        deadline is not None and time.perf_counter() > deadline
                    ):
                        active.remove(slot)
                        continue
                    await pacer.wait()
                    sent = time.perf_counter()
                    try:
                        status, body = await connection.send(requests[step])
                    except ResponseError:
                        status, body = 0, b""
                    on_sent[0] += 1
                    if status not in (200, 201):
                        code = api_error(status, body).raw_code if status else "connection"
                        measured.errors[code] += 1
                        active.remove(slot)
                        continue
                    measured.latencies_s.append(time.perf_counter() - sent)
                    measured.accepted += 1
                    measured.replays += status == 200
                    measured.accepted_index[plan.channels[slot].channel_id] = step + 1
                step += 1
        finally:
            connection.close()

    cpu_before = [cpu_seconds(pid) if pid else None for pid in (vendor_pid, redis_pid)]
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(
        *(worker(list(range(w, len(plan.channels), workers))) for w in range(workers))
    )
    measured.elapsed_s = time.perf_counter() - started
    measured.client_cpu_s = time.process_time() - client_cpu_before
    cpu_after = [cpu_seconds(pid) if pid else None for pid in (vendor_pid, redis_pid)]
    deltas = [
        None if before is None or after is None else after - before
        for before, after in zip(cpu_before, cpu_after, strict=True)
    ]
    measured.vendor_cpu_s, measured.redis_cpu_s = deltas
    return measured


async def settle(client: Client, plan: Plan, measured: Measured) -> tuple[int, int, bool]:
    """Close every channel that took payments: (owed, settled, all exact)."""

    async def close(channel: Channel, accepted: int) -> tuple[int, bool]:
        await channel.close()
        info = await channel.refresh()
        return info.balance, info.is_closed and info.balance == accepted * UNIT

    accepted = {
        channel: measured.accepted_index[channel.channel_id]
        for channel in plan.channels
        if channel.channel_id in measured.accepted_index
    }
    closed = await limited([close(c, n) for c, n in accepted.items()], SETUP_CONCURRENCY)
    owed = sum(accepted.values()) * UNIT
    return owed, sum(balance for balance, _ in closed), all(exact for _, exact in closed)


def describe(
    plan: Plan, measured: Measured, owed: int, settled: int, exact: bool
) -> dict[str, Any]:
    edges = log_edges_ms(
        min(measured.latencies_s, default=1e-4) * 1e3, max(measured.latencies_s, default=1e-3) * 1e3
    )

    def per_payment(cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not measured.accepted else cpu_s * 1e6 / measured.accepted

    return {
        "label": plan.run.label,
        "mode": plan.run.mode.value,
        "hash_alg": plan.run.hash_alg,
        "channels": len(plan.channels),
        "planned": plan.total,
        "accepted": measured.accepted,
        "replays": measured.replays,
        "errors": dict(measured.errors),
        "elapsed_s": measured.elapsed_s,
        "throughput_per_s": measured.accepted / measured.elapsed_s if measured.elapsed_s else 0.0,
        "latency_ms": summary_ms(measured.latencies_s),
        "latency_histogram": {
            "edges_ms": edges,
            "counts": histogram(measured.latencies_s, edges),
        },
        "vendor_cpu_us_per_payment": per_payment(measured.vendor_cpu_s),
        "redis_cpu_us_per_payment": per_payment(measured.redis_cpu_s),
        "client_cpu_us_per_payment": per_payment(measured.client_cpu_s),
        "owed_total": owed,
        "settled_total": settled,
        "settled_exact": exact,
    }


async def bench(
    args: argparse.Namespace,
    issuer_url: str,
    vendor_url: str,
    pids: tuple[int | None, int | None],
    display: Display,
) -> list[dict[str, Any]]:
    results = []
    wallet = Wallet.generate(args.key_kind)
    async with Client(issuer_url, vendor_url, wallet, connections=args.concurrency) as client:
        await client.register()
        if args.admin_token:
            need = args.payments * UNIT * len(args.modes)
            await client.issuer.deposit(wallet.public_key_b64, need, args.admin_token)
        await wait_for_account(client, await client.vendor_public_key())
        for run in args.modes:
            display.print(f"{run.label}: opening {args.channels} channels, pre-computing payments")
            plan = await prepare(client, run, args.channels, args.payments)
            sent = [0]
            with display.progress() as progress:
                task = progress.add_task(run.label, total=plan.total)
                driving = asyncio.create_task(
                    drive(
                        client,
                        plan,
                        concurrency=args.concurrency,
                        rate=args.rate,
                        duration=args.duration,
                        pids=pids,
                        on_sent=sent,
                    )
                )
                # Refresh the bar from a counter instead of on every payment.
                while not driving.done():
                    progress.update(task, completed=sent[0])
                    await asyncio.wait({driving}, timeout=0.2)
                measured = driving.result()
                progress.update(task, completed=sent[0])
            owed, settled, exact = await settle(client, plan, measured)
            results.append(describe(plan, measured, owed, settled, exact))
    return results


HEADERS = ("mode", "accepted", "errors", "payments/s", "p50 ms", "p99 ms", "vendor µs/pay",
           "redis µs/pay", "settled")  # fmt: skip


def render(runs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    def micros(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return [
        (
            run["label"],
            str(run["accepted"]),
            str(sum(run["errors"].values())),
            f"{run['throughput_per_s']:,.0f}",
            f"{run['latency_ms']['p50']:.2f}",
            f"{run['latency_ms']['p99']:.2f}",
            micros(run["vendor_cpu_us_per_payment"]),
            micros(run["redis_cpu_us_per_payment"]),
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


def main(args: argparse.Namespace) -> int:
    """`nanomoni bench` (its options are defined with the other commands in `nanomoni.cli`)."""
    display = Display()
    with ExitStack() as stack:
        if args.issuer_url:
            issuer_url = require_loopback(args.issuer_url)
            vendor_url = require_loopback(args.vendor_url)
            pids = (args.vendor_pid, args.redis_pid)
            store = "external"
        else:
            services = stack.enter_context(local_services(args.store, workers=args.workers))
            issuer_url, vendor_url = services.issuer_url, services.vendor_url
            pids = (services.vendor_pid, services.redis_pid)
            store = services.store
        started_at = time.time()
        # uvloop: the load generator's own CPU per request is what limits it on a small box.
        runs = uvloop.run(bench(args, issuer_url, vendor_url, pids, display))
    result = {
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
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = write_plots(result, args.out)
    display.table("NanoMoni bench", HEADERS, render(runs))
    display.print(f"wrote {args.out / 'result.json'} and {', '.join(p.name for p in plots)}")
    return 0 if all(run["settled_exact"] and not run["errors"] for run in runs) else 1
