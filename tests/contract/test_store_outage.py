"""Store outages, on every backend with servers of its own: while the store stalls
(SQLite: another process holds the file's write lock; Redis: SIGSTOP; Cluster:
SIGSTOP of the master holding the keys) every call that needs it raises
StoreUnavailable by its deadline, and so does ping(); afterwards the same store
objects work again, and each transition that timed out is safe to repeat — on
SQLite it provably never ran. A Redis killed and started again on its port is
reconnected without reopening the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from contract.factories import closure, new_channel_id, new_key, opened_channel, state, terms
from redis_servers import RedisCluster, RedisServer, redis_cluster, redis_server
from sqlite_locks import held_write_lock

from nanomoni.protocol.model import CasOutcome, Mode
from nanomoni.store import (
    IssuerStore,
    StoreUnavailable,
    VendorStore,
    open_issuer_store,
    open_vendor_store,
)
from nanomoni.store.resp import key_slot

DEADLINE = 0.5
PING_DEADLINE = 0.3
SLACK = 0.35  # timer and scheduling jitter on a busy 2-core CI machine
ISSUER_SLOT = key_slot(b"{nm-issuer}")


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    with redis_server(aof=True) as server:  # survives kill -9 with what it acknowledged
        yield server


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster


@dataclass
class Outage:
    """One backend: its store URL, how it stalls, and what keeps answering meanwhile."""

    url: str
    stall: Callable[[], AbstractContextManager[None]]
    reads_answer: bool  # SQLite in WAL mode: readers are not blocked by a writer
    channel: Callable[[], str]  # a vendor channel whose keys the stall covers


def _stalled_channel(cluster: RedisCluster) -> Callable[[], str]:
    """Channel ids whose slot has the issuer's master: one SIGSTOP covers both."""
    owner = cluster.owner(ISSUER_SLOT)

    def channel() -> str:
        while True:
            cid = new_channel_id()
            if cluster.owner(key_slot(cid.encode())) is owner:
                return cid

    return channel


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Outage:
    if request.param == "sqlite":
        path = tmp_path / "outage.sqlite3"
        return Outage(f"sqlite:{path}", lambda: held_write_lock(path), True, new_channel_id)
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("own_redis")
        return Outage(server.url, server.paused, False, new_channel_id)
    cluster: RedisCluster = request.getfixturevalue("own_cluster")
    stalled = cluster.owner(ISSUER_SLOT)
    return Outage(cluster.url, stalled.paused, False, _stalled_channel(cluster))


async def _timed(call: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result: Any = await call
    except Exception as exc:  # the outcome is what the test inspects
        result = exc
    return result, time.monotonic() - started


async def _stores(url: str) -> tuple[IssuerStore, VendorStore]:
    return (
        await open_issuer_store(url, timeout=DEADLINE),
        await open_vendor_store(url, timeout=DEADLINE),
    )


async def test_calls_fail_by_their_deadline_while_the_store_stalls(outage: Outage) -> None:
    issuer, vendor = await _stores(outage.url)
    client, vendor_key, settled = await opened_channel(issuer, 40)  # client: 100 - 40
    _, _, to_close = await opened_channel(issuer, 10, mode=Mode.signature)
    topper, _, to_top_up = await opened_channel(issuer, 10, mode=Mode.signature)
    opener, depositor, newcomer = new_key(), new_key(), new_key()
    await issuer.register(opener, 100)
    await issuer.register(depositor, 100)
    unopened = terms(opener, vendor_key, 10)
    paying, closing, recording = outage.channel(), outage.channel(), outage.channel()
    for cid in (paying, closing, recording):
        await vendor.compare_and_set(cid, state(1), {})

    writes: dict[str, Callable[[], Awaitable[Any]]] = {
        "register": lambda: issuer.register(newcomer, 50),
        "deposit": lambda: issuer.deposit(depositor, 5),
        "open_channel": lambda: issuer.open_channel(unopened),
        "settle": lambda: issuer.settle(settled.channel_id, closure(30)),
        "client_close": lambda: issuer.client_close(to_close.channel_id),
        "top_up": lambda: issuer.top_up(to_top_up.channel_id, 5, b"n" * 16, b"d" * 32),
        "finalize_due": lambda: issuer.finalize_due(10),
        "closing_channels": lambda: issuer.closing_channels(vendor_key),
        "compare_and_set": lambda: vendor.compare_and_set(paying, state(2), {7: b"n" * 32}),
        "begin_close": lambda: vendor.begin_close(closing),
        "record_settlement": lambda: vendor.record_settlement(recording, closure(1)),
    }
    reads: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_account": lambda: issuer.get_account(client),
        "get_channel": lambda: issuer.get_channel(settled.channel_id),
        "overdue": lambda: issuer.overdue(),
        "load": lambda: vendor.load(paying, [7]),
        "nodes": lambda: vendor.nodes(paying, [7]),
        "settlement": lambda: vendor.settlement(recording),
    }
    with outage.stall():
        calls = {**writes, **reads}
        timed = await asyncio.gather(*(_timed(call()) for call in calls.values()))
        outcomes = dict(zip(calls, timed, strict=True))
        pings = await asyncio.gather(
            _timed(issuer.ping(PING_DEADLINE)), _timed(vendor.ping(PING_DEADLINE))
        )
    for name, (outcome, took) in outcomes.items():
        if name in reads and outage.reads_answer:
            assert not isinstance(outcome, Exception), (name, outcome)
            continue
        assert isinstance(outcome, StoreUnavailable), (name, outcome)
        assert DEADLINE - 0.02 <= took < DEADLINE + SLACK, (name, took)
    for outcome, took in pings:
        assert isinstance(outcome, StoreUnavailable) and took < PING_DEADLINE + SLACK

    # Back: the same store objects answer again.
    await issuer.ping()
    await vendor.ping()
    if outage.reads_answer:  # SQLite: a write whose caller gave up before it started never ran
        assert await issuer.get_account(newcomer) is None
        assert (await issuer.get_account(depositor)).balance == 100  # type: ignore[union-attr]
        assert (await issuer.get_account(opener)).balance == 100  # type: ignore[union-attr]
        assert await issuer.get_channel(unopened.channel_id) is None
        assert (await issuer.get_channel(settled.channel_id)).closure is None  # type: ignore[union-attr]
        assert (await issuer.get_channel(to_close.channel_id)).state == "open"  # type: ignore[union-attr]
        assert (await issuer.get_channel(to_top_up.channel_id)).terms.amount == 10  # type: ignore[union-attr]
        assert (await vendor.load(paying, [7])).state == state(1)
        assert not (await vendor.load(closing)).closing
        assert await vendor.settlement(recording) is None
    # Redis may still have run what a stalled server read before it stopped: each
    # step then happened whole (atomic), never twice, never in part.
    assert (await issuer.get_account(depositor)).balance in (100, 105)  # type: ignore[union-attr]
    opened = await issuer.get_channel(unopened.channel_id) is not None
    assert (await issuer.get_account(opener)).balance == (90 if opened else 100)  # type: ignore[union-attr]
    # Repeating each transition (what a client's retry of the 503 does) lands it once.
    assert (await issuer.register(newcomer, 50)).balance == 50
    assert (await issuer.register(newcomer, 50)).balance == 50
    assert (await issuer.client_close(to_close.channel_id)).state == "closing"
    topped = await issuer.top_up(to_top_up.channel_id, 5, b"n" * 16, b"d" * 32)
    assert topped.channel.terms.amount == 15
    assert (await issuer.get_account(topper)).balance == 85  # type: ignore[union-attr]
    settled_again = await issuer.settle(settled.channel_id, closure(30))
    assert (settled_again.client_balance, settled_again.vendor_balance) == (70, 30)
    again = await vendor.compare_and_set(paying, state(2), {7: b"n" * 32})
    assert again.outcome is CasOutcome.stored or (
        again.outcome is CasOutcome.lost and again.current == state(2)  # it ran: a replay
    )
    assert (await vendor.load(paying, [7])).nodes == [b"n" * 32]
    assert await vendor.begin_close(closing) == state(1)
    await vendor.record_settlement(recording, closure(1))
    assert await vendor.settlement(recording) == closure(1)
    await issuer.close()
    await vendor.close()


@dataclass
class Crash:
    url: str
    server: RedisServer
    channel: Callable[[], str]
    after_restart: Callable[[], None]


@pytest.fixture(params=["redis", "cluster"])
def crash(request: pytest.FixtureRequest) -> Crash:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("own_redis")
        return Crash(server.url, server, new_channel_id, lambda: None)
    cluster: RedisCluster = request.getfixturevalue("own_cluster")
    owner = cluster.owner(ISSUER_SLOT)
    return Crash(cluster.url, owner, _stalled_channel(cluster), cluster.wait_ok)


async def test_a_killed_and_restarted_redis_is_reconnected(crash: Crash) -> None:
    issuer, vendor = await _stores(crash.url)
    cid = crash.channel()
    await vendor.compare_and_set(cid, state(1), {})
    crash.server.kill()
    try:
        outcome, took = await _timed(vendor.compare_and_set(cid, state(2), {}))
        assert isinstance(outcome, StoreUnavailable) and took < DEADLINE + SLACK
        outcome, took = await _timed(issuer.get_account(new_key()))
        assert isinstance(outcome, StoreUnavailable) and took < DEADLINE + SLACK
        with pytest.raises(StoreUnavailable):
            await vendor.ping(PING_DEADLINE)
    finally:
        crash.server.start()  # same port (and, for the cluster node, the same node id)
        crash.after_restart()
    await vendor.ping()
    await issuer.ping()
    later = await vendor.compare_and_set(cid, state(3), {})
    assert later.outcome is CasOutcome.stored
    assert (await vendor.load(cid)).state == state(3)
    key = new_key()
    assert (await issuer.register(key, 7)).balance == 7
    await issuer.close()
    await vendor.close()
