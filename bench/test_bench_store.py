"""Store benchmarks: µs per vendor compare-and-set from Python, Redis server CPU
per compare-and-set, Redis memory per channel, the cost of per-call deadlines.
Each figure comes with a baseline measured in the same run:

* Redis: the same Lua script through redis-py's asyncio client, and a bare PING
  round trip on our client (the floor of one request);
* SQLite: one naive synchronous commit per operation on the event-loop thread;
* deadlines: our client (one timer per connection) against the same client with
  a per-call `asyncio.wait_for` / `asyncio.timeout`.

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_store.py -q -s
"""

from __future__ import annotations

import asyncio
import math
import operator
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis.asyncio as redis_py
import uvloop
from hiredis import pack_command
from redis_servers import RedisServer

from nanomoni.protocol.model import CasOutcome, PaymentState
from nanomoni.store import VendorStore, open_vendor_store
from nanomoni.store.redis import _VENDOR_CAS, _state_args, vendor_keys
from nanomoni.store.resp import RedisClient, _Connection, pack

OPS = 2000
CONCURRENCY = 64
MEMORY_CHANNELS = 50_000
PROOF = secrets.token_bytes(32)  # a PayWord token: the usual proof size
CREATED_AT = "2026-11-30T01:00:00.123456+00:00"

RESULTS: list[tuple[str, str]] = []


def report(name: str, value: str) -> None:
    RESULTS.append((name, value))
    print(f"\n  {name:<62} {value}")


class Cost(NamedTuple):
    wall: float  # µs per operation, elapsed
    cpu: float  # µs per operation, CPU of this process (all its threads)

    def __str__(self) -> str:
        return f"{self.cpu:8.1f} CPU {self.wall:8.1f} wall"


def timed(work: Callable[[], Coroutine[Any, Any, int]]) -> Cost:
    """Cost per operation of an async workload (returning its operation count), on
    uvloop as the services run."""
    loop = uvloop.new_event_loop()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        ops = loop.run_until_complete(work())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Cost(wall * 1e6 / ops, cpu * 1e6 / ops)
    finally:
        loop.close()


def new_state(index: int) -> PaymentState:
    return PaymentState(index=index, owed=index, proof=PROOF, created_at=CREATED_AT)


async def cas_sequential(store: VendorStore, ops: int) -> int:
    cid = secrets.token_urlsafe(32)[:43]
    for index in range(1, ops + 1):
        result = await store.compare_and_set(cid, new_state(index), {})
        assert result.outcome is CasOutcome.stored
    return ops


async def cas_concurrent(store: VendorStore, ops: int, concurrency: int = CONCURRENCY) -> int:
    """`concurrency` payers, each on its own channel, as a busy vendor would see them."""

    async def payer() -> None:
        await cas_sequential(store, ops // concurrency)

    await asyncio.gather(*(payer() for _ in range(concurrency)))
    return ops // concurrency * concurrency


async def pay_concurrent(store: VendorStore, ops: int) -> int:
    """Like `cas_concurrent`, but each payment first loads the channel as a vendor does."""

    async def payer() -> None:
        cid = secrets.token_urlsafe(32)[:43]
        for index in range(1, ops // CONCURRENCY + 1):
            view = await store.load(cid)
            assert view.state is None or view.state.index < index
            result = await store.compare_and_set(cid, new_state(index), {})
            assert result.outcome is CasOutcome.stored

    await asyncio.gather(*(payer() for _ in range(CONCURRENCY)))
    return ops // CONCURRENCY * CONCURRENCY


@pytest.mark.parametrize("backend", ["sqlite", "redis", "cluster"])
def test_compare_and_set(
    benchmark: Any, backend: str, tmp_path: Path, store_url: Callable[[str], str]
) -> None:
    url = store_url(backend)
    ops = OPS // 4 if backend == "sqlite" else OPS  # each sequential SQLite op is one fsync

    async def sequential() -> int:
        store = await open_vendor_store(url)
        try:
            return await cas_sequential(store, ops)
        finally:
            await store.close()

    async def concurrent() -> int:
        store = await open_vendor_store(url)
        try:
            return await cas_concurrent(store, OPS * 2)
        finally:
            await store.close()

    async def payments() -> int:
        store = await open_vendor_store(url)
        try:
            return await pay_concurrent(store, OPS * 2)
        finally:
            await store.close()

    seq = benchmark.pedantic(lambda: timed(sequential), rounds=1, iterations=1)
    conc = timed(concurrent)
    paid = timed(payments)
    benchmark.extra_info.update(cas_sequential=seq._asdict(), cas_concurrent=conc._asdict())
    report(f"{backend}: CAS sequential (µs/op)", str(seq))
    report(f"{backend}: CAS, {CONCURRENCY} concurrent channels (µs/op)", str(conc))
    report(f"{backend}: payment = load + CAS, {CONCURRENCY} concurrent (µs/op)", str(paid))
    benchmark.extra_info.update(payment_concurrent=paid._asdict())
    if backend == "sqlite":
        base = timed(lambda: naive_sqlite(tmp_path / "naive.sqlite3", ops))
        report("sqlite baseline: one commit per op on the loop (µs/op)", str(base))
        benchmark.extra_info.update(baseline_naive_commit=base._asdict())


def naive_sqlite_connection(path: Path) -> sqlite3.Connection:
    """The naive baseline's database: durable as ours (WAL, synchronous=FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS s (cid TEXT PRIMARY KEY, idx INTEGER, proof BLOB)")
    return conn


def naive_sqlite_cas(conn: sqlite3.Connection, index: int) -> None:
    """One compare-and-set as its own synchronous transaction, on the calling thread."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT idx FROM s WHERE cid = 'c'").fetchone()
    assert row is None or row[0] < index
    conn.execute("INSERT OR REPLACE INTO s VALUES ('c', ?, ?)", (index, PROOF))
    conn.execute("COMMIT")


async def naive_sqlite(path: Path, ops: int) -> int:
    conn = naive_sqlite_connection(path)
    for index in range(1, ops + 1):
        naive_sqlite_cas(conn, index)
    conn.close()
    return ops


def cas_args(index: int) -> list[bytes | str | int]:
    """The compare-and-set script's arguments, exactly as the store sends them."""
    return _state_args(new_state(index), {}, None)


async def redis_py_cas_on(
    client: redis_py.Redis,
) -> Callable[[int], Coroutine[Any, Any, None]]:
    """Our compare-and-set script through redis-py, on a fresh channel: call with rising
    indices."""
    sha = await client.script_load(_VENDOR_CAS.source)
    keys = vendor_keys(secrets.token_urlsafe(32)[:43])

    async def cas(index: int) -> None:
        reply = await client.evalsha(sha, 2, *keys, *cas_args(index))
        assert reply[0] == 0

    return cas


def test_redis_baselines(benchmark: Any, server: RedisServer) -> None:
    """The same EVALSHA through redis-py, and a bare PING on our client."""
    server.flush()

    async def redis_py_cas() -> int:
        client = redis_py.Redis(host="127.0.0.1", port=server.port)
        cas = await redis_py_cas_on(client)
        for index in range(1, OPS + 1):
            await cas(index)
        await client.aclose()
        return OPS

    async def our_ping() -> int:
        client = RedisClient("127.0.0.1", server.port)
        for _ in range(OPS):
            await client.execute("PING")
        await client.close()
        return OPS

    async def redis_py_concurrent() -> int:
        client = redis_py.Redis(host="127.0.0.1", port=server.port, max_connections=CONCURRENCY)
        sha = await client.script_load(_VENDOR_CAS.source)

        async def payer() -> None:
            keys = vendor_keys(secrets.token_urlsafe(32)[:43])
            for index in range(1, OPS * 2 // CONCURRENCY + 1):
                reply = await client.evalsha(sha, 2, *keys, *cas_args(index))
                assert reply[0] == 0

        await asyncio.gather(*(payer() for _ in range(CONCURRENCY)))
        await client.aclose()
        return OPS * 2 // CONCURRENCY * CONCURRENCY

    base = benchmark.pedantic(lambda: timed(redis_py_cas), rounds=1, iterations=1)
    ping = timed(our_ping)
    conc = timed(redis_py_concurrent)
    benchmark.extra_info.update(
        redis_py_sequential=base._asdict(),
        our_ping=ping._asdict(),
        redis_py_concurrent=conc._asdict(),
    )
    report("baseline: redis-py asyncio EVALSHA sequential (µs/op)", str(base))
    report(f"baseline: redis-py asyncio EVALSHA, {CONCURRENCY} concurrent (µs/op)", str(conc))
    report("baseline: PING round trip on our client (µs/op)", str(ping))


def _cpu_and_calls(nodes: list[RedisServer]) -> tuple[float, int, float]:
    """Σ server CPU seconds, Σ EVALSHA calls, Σ EVALSHA µs over the nodes."""
    cpu, calls, usec = 0.0, 0, 0.0
    for node in nodes:
        info = node.info("cpu")
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        stats = node.info("commandstats").get("cmdstat_evalsha", "")
        fields = dict(part.split("=") for part in stats.split(",") if "=" in part)
        calls += int(fields.get("calls", 0))
        usec += float(fields.get("usec", 0))
    return cpu, calls, usec


@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_redis_server_cpu_per_cas(
    benchmark: Any, backend: str, request: pytest.FixtureRequest, store_url: Callable[[str], str]
) -> None:
    url = store_url(backend)
    nodes = (
        [request.getfixturevalue("server")]
        if backend == "redis"
        else (request.getfixturevalue("cluster").nodes)
    )
    for node in nodes:
        node.info("commandstats")  # warm the INFO path itself
    measured: dict[str, float] = {}

    async def work() -> int:
        store = await open_vendor_store(url)
        await cas_concurrent(store, CONCURRENCY)  # load the script everywhere first
        cpu0, calls0, usec0 = _cpu_and_calls(nodes)
        done = await cas_concurrent(store, OPS * 5)
        cpu1, calls1, usec1 = _cpu_and_calls(nodes)
        calls = calls1 - calls0
        measured["cpu"] = (cpu1 - cpu0) * 1e6 / done
        measured["script"] = (usec1 - usec0) / calls
        # A vendor's whole store work per payment: load the state, then compare-and-set.
        cpu0 = _cpu_and_calls(nodes)[0]
        paid = await pay_concurrent(store, OPS * 5)
        measured["payment"] = (_cpu_and_calls(nodes)[0] - cpu0) * 1e6 / paid
        await store.close()
        return done + paid

    benchmark.pedantic(lambda: timed(work), rounds=1, iterations=1)
    benchmark.extra_info.update(
        server_cpu_us_per_cas=measured["cpu"], evalsha_usec_per_call=measured["script"]
    )
    report(f"{backend}: server CPU per CAS, used_cpu delta (µs)", f"{measured['cpu']:8.2f}")
    report(f"{backend}: EVALSHA usec_per_call (commandstats)", f"{measured['script']:8.2f}")
    report(f"{backend}: server CPU per payment, load + CAS (µs)", f"{measured['payment']:8.2f}")
    benchmark.extra_info.update(server_cpu_us_per_payment=measured["payment"])


def test_redis_memory_per_channel(benchmark: Any, server: RedisServer) -> None:
    server.flush()
    measured: dict[str, float] = {}

    async def fill() -> int:
        store = await open_vendor_store(server.url)
        before = int(server.info("memory")["used_memory"])
        channels = [f"{n:08d}" + secrets.token_urlsafe(32)[:35] for n in range(MEMORY_CHANNELS)]

        async def one(cid: str) -> None:
            await store.compare_and_set(cid, new_state(123_456), {})

        for start in range(0, MEMORY_CHANNELS, 1000):
            await asyncio.gather(*(one(cid) for cid in channels[start : start + 1000]))
        after = int(server.info("memory")["used_memory"])
        measured["state"] = (after - before) / MEMORY_CHANNELS
        # A PayTree channel also keeps its learned nodes: 20 per channel on 1,000 channels.
        for cid in channels[:1000]:
            nodes = {(level << 32) | 7: secrets.token_bytes(32) for level in range(20)}
            await store.compare_and_set(cid, new_state(123_457), nodes)
        measured["node"] = (int(server.info("memory")["used_memory"]) - after) / 20_000
        await store.close()
        return MEMORY_CHANNELS

    benchmark.pedantic(lambda: timed(fill), rounds=1, iterations=1)
    benchmark.extra_info.update(
        bytes_per_channel=measured["state"], bytes_per_node=measured["node"]
    )
    report(
        f"redis: memory per channel with its state ({MEMORY_CHANNELS} ch.)",
        f"{measured['state']:8.0f} B",
    )
    report("redis: memory per Merkle node in the channel's node HASH", f"{measured['node']:8.0f} B")


class _Sink:
    """A transport that swallows writes: the client's own CPU, without the network."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


async def _timeout(call: Coroutine[Any, Any, Any]) -> Any:
    async with asyncio.timeout(2.0):
        return await call


DEADLINE_WRAPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]] | None] = {
    "our client (deadline: one timer per connection)": None,
    "  + asyncio.wait_for per call": lambda call: asyncio.wait_for(call, 2.0),
    "  + asyncio.timeout per call": _timeout,
}


def test_deadline_cost(benchmark: Any, server: RedisServer) -> None:
    """µs of client CPU per request for the deadline, two ways: with the network
    faked (replies fed straight into the connection, 64 requests per turn) and
    against redis-server (64 concurrent compare-and-set scripts)."""
    batch, requests = 64, 64 * 1000

    def no_network(wrap: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]] | None) -> Cost:
        async def work() -> int:
            client = RedisClient("127.0.0.1", 1)
            conn = client._conn = _Connection(stall_timeout=2.0)
            conn.connection_made(_Sink())  # type: ignore[arg-type]
            replies = b"+PONG\r\n" * batch
            for _ in range(requests // batch):
                calls = [client.execute("PING") for _ in range(batch)]
                tasks = [asyncio.ensure_future(wrap(c) if wrap else c) for c in calls]
                while len(conn._pending) < batch:  # each task is now waiting for its reply
                    await asyncio.sleep(0)
                conn.data_received(replies)
                await asyncio.gather(*tasks)
            return requests

        return timed(work)

    def redis_cas(wrap: Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]] | None) -> Cost:
        async def work() -> int:
            client = RedisClient("127.0.0.1", server.port)

            async def payer() -> None:
                keys = vendor_keys(secrets.token_urlsafe(32)[:43])
                for index in range(1, OPS * 2 // CONCURRENCY + 1):
                    call = client.evalsha(_VENDOR_CAS, keys, cas_args(index))
                    reply = await (wrap(call) if wrap else call)
                    assert reply[0] == 0

            await asyncio.gather(*(payer() for _ in range(CONCURRENCY)))
            await client.close()
            return OPS * 2 // CONCURRENCY * CONCURRENCY

        return timed(work)

    server.flush()
    fake: dict[str, Cost] = {}
    real: dict[str, Cost] = {}
    worst = Cost(math.inf, math.inf)
    for _ in range(3):  # the least CPU of three: the machine is shared
        for name, wrap in DEADLINE_WRAPS.items():
            cpu = operator.attrgetter("cpu")
            fake[name] = min(fake.get(name, worst), no_network(wrap), key=cpu)
            real[name] = min(real.get(name, worst), redis_cas(wrap), key=cpu)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    for name in DEADLINE_WRAPS:
        report(f"no network, {batch} per turn: {name} (µs/req)", str(fake[name]))
        report(f"redis CAS x{CONCURRENCY}: {name} (µs/op)", str(real[name]))
    benchmark.extra_info.update(
        deadline_no_network={name: cost._asdict() for name, cost in fake.items()},
        deadline_redis_cas={name: cost._asdict() for name, cost in real.items()},
    )


_CHANNEL = "A" * 43
# A paywall charge carrying a PayWord payment: the command every paid request sends.
CHARGE = (
    "EVALSHA", "a" * 40, 3, f"v:{{{_CHANNEL}}}", f"n:{{{_CHANNEL}}}",
    f"r:{{{_CHANNEL}}}:{'R' * 24}", 1, 0, 1, 60000, 1, 11, 12, 12, PROOF, CREATED_AT,
)  # fmt: skip


@pytest.mark.benchmark(group="RESP: one paywall charge command")
@pytest.mark.parametrize("impl", ["ours", "hiredis"])
def test_pack_command(benchmark: Any, impl: str) -> None:
    if impl == "ours":
        packed = benchmark(lambda: pack(*CHARGE))
    else:
        packed = benchmark(pack_command, CHARGE)
    assert packed == pack_command(CHARGE)
