"""Store deadlines at the adapter level, against real servers: a stalled Redis
(SIGSTOP) fails calls by their deadline and is reconnected; refusals that ran
nothing are retried within the deadline (LOADING while a dataset loads, BUSY
behind a long script, CLUSTERDOWN for an unserved slot, TRYAGAIN while a slot
migrates); a sent command is never sent again; SQLite's claim rule."""

from __future__ import annotations

import asyncio
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis_servers import HOST, RedisCluster, command, redis_cluster, redis_server

from nanomoni.protocol.model import PaymentState
from nanomoni.store import StoreUnavailable, open_vendor_store
from nanomoni.store.resp import ClusterClient, RedisClient, key_slot
from nanomoni.store.sqlite import SqliteVendorStore

DEADLINE = 0.3
SLACK = 0.3  # timer and scheduling jitter on a busy 2-core CI machine
STATE = PaymentState(index=3, owed=30, proof=b"p" * 32, created_at="2026-01-01T00:00:00+00:00")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as started:
        yield started


def wait_for_reply(port: int, prefix: str) -> None:
    """Poll with PING until the server's answer starts with `prefix`."""
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = command(port, "PING")
        except OSError:
            answer = ""
        if answer.startswith(prefix):
            return
        assert time.monotonic() < deadline, f"the server never answered {prefix}: {answer}"
        time.sleep(0.005)


async def test_a_stalled_server_fails_every_call_by_its_deadline_then_recovers() -> None:
    with redis_server() as own:
        client = RedisClient(HOST, own.port, timeout=DEADLINE)
        assert await client.execute("SET", "k", "v") == b"OK"
        with own.paused():
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.execute("GET", "k") for _ in range(50)), return_exceptions=True
            )
            took = time.monotonic() - started
            assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes
            assert DEADLINE - 0.01 <= took < DEADLINE + SLACK
            assert "no reply" in str(outcomes[0])
            # The silent connection was dropped; the next call connects again (the
            # kernel still accepts) and fails by its own deadline as well.
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await client.execute("GET", "k")
            assert time.monotonic() - started < DEADLINE + SLACK
            with pytest.raises(StoreUnavailable):
                await client.ping(0.1)
        assert await client.execute("GET", "k") == b"v"  # same client, no restart
        await client.ping()
        await client.close()


async def test_a_command_that_may_have_run_is_not_sent_again() -> None:
    with redis_server() as own:
        client = RedisClient(HOST, own.port, timeout=DEADLINE)
        with own.paused(), pytest.raises(StoreUnavailable):
            await client.execute("INCR", "counter")
        # Whether the resumed server still ran the INCR depends on what it had read
        # before the connection was dropped; it must never run twice.
        await asyncio.sleep(0.2)
        assert await client.execute("GET", "counter") in (None, b"1")
        calls = own.info("commandstats").get("cmdstat_incr", "calls=0").split(",")[0]
        assert calls in ("calls=0", "calls=1")
        await client.close()


async def test_a_server_that_refuses_connections_fails_by_the_deadline() -> None:
    with redis_server() as own:
        client = RedisClient(HOST, own.port, timeout=DEADLINE)
        assert await client.execute("PING") == b"PONG"
        own.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"cannot connect|connection lost"):
            await client.execute("PING")
        assert time.monotonic() - started < DEADLINE + SLACK
        own.start()  # same port: the next call connects again
        assert await client.execute("PING") == b"PONG"
        await client.close()


async def test_loading_is_retried_until_the_dataset_is_in_memory() -> None:
    with redis_server() as own:
        fill = "for i = 1, 20000 do redis.call('SET', 'key:' .. i, i) end return 1"
        assert command(own.port, "EVAL", f'"{fill}"', "0") == ":1"
        assert command(own.port, "SAVE") == "+OK"
        own.stop()
        # Redis's own knobs: loading the 20,000 keys takes about a second, and the
        # server answers (-LOADING) every KiB of it rather than every 2 MiB.
        own.start(
            "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024",
            wait=False,
        )  # fmt: skip
        wait_for_reply(own.port, "-LOADING")
        hasty = RedisClient(HOST, own.port, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="LOADING"):
            await hasty.execute("GET", "key:1")
        assert time.monotonic() - started < 0.2 + SLACK
        patient = RedisClient(HOST, own.port, timeout=20)
        assert await patient.execute("GET", "key:20000") == b"20000"
        await hasty.close()
        await patient.close()


@contextmanager
def busy_script(port: int) -> Iterator[None]:
    """A client runs a script that never ends; every other client gets -BUSY until
    SCRIPT KILL (the script only reads, so it can be killed)."""
    assert command(port, "CONFIG", "RESETSTAT") == "+OK"
    with socket.create_connection((HOST, port)) as hog:
        hog.sendall(b'EVAL "while true do end" 0\r\n')
        wait_for_reply(port, "-BUSY")  # exactly one -BUSY goes to this probe
        try:
            yield
        finally:
            assert command(port, "SCRIPT", "KILL") == "+OK"
            wait_for_reply(port, "+PONG")  # the kill is asked for; the script stops a bit later


def busy_replies(port: int) -> int:
    stats = command(port, "INFO", "errorstats")
    return int(stats.split("errorstat_BUSY:count=")[1].split()[0])


async def test_busy_behind_a_long_script_is_retried_until_the_script_is_killed() -> None:
    with redis_server() as own:
        assert command(own.port, "CONFIG", "SET", "busy-reply-threshold", "50") == "+OK"
        assert command(own.port, "SET", "k", "v") == "+OK"
        hasty = RedisClient(HOST, own.port, timeout=0.5)
        with busy_script(own.port):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await hasty.execute("GET", "k")
            assert time.monotonic() - started < 0.5 + SLACK
        assert busy_replies(own.port) > 1  # the client was answered -BUSY, and gave up in time
        patient = RedisClient(HOST, own.port, timeout=10)
        with busy_script(own.port):
            waiting = asyncio.ensure_future(patient.execute("GET", "k"))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        assert await waiting == b"v"
        assert busy_replies(own.port) > 1  # it was answered -BUSY, and asked again
        await hasty.close()
        await patient.close()


async def test_cluster_retries_clusterdown_until_the_slot_is_served_again(
    cluster: RedisCluster,
) -> None:
    key = f"{{down-{secrets.token_hex(4)}}}:key"
    slot = key_slot(key.encode())
    patient = ClusterClient(HOST, cluster.nodes[0].port, timeout=10)
    hasty = ClusterClient(HOST, cluster.nodes[0].port, timeout=0.2)
    await patient.refresh_slots()
    await hasty.refresh_slots()
    assert await patient.execute("SET", key, "kept") == b"OK"
    owner = cluster.owner(slot)
    assert command(owner.port, "CLUSTER", "DELSLOTS", str(slot)) == "+OK"
    try:
        with pytest.raises(StoreUnavailable, match=r"CLUSTERDOWN|not served"):
            await hasty.execute("GET", key)
        waiting = asyncio.ensure_future(patient.execute("GET", key))
        await asyncio.sleep(0.3)
        assert not waiting.done()
    finally:
        assert command(owner.port, "CLUSTER", "ADDSLOTS", str(slot)) == "+OK"
    assert await waiting == b"kept"
    await patient.close()
    await hasty.close()


async def test_cluster_retries_tryagain_while_a_slot_migrates(cluster: RedisCluster) -> None:
    store = await open_vendor_store(cluster.url, timeout=10)
    channel = f"migrating-{secrets.token_hex(4)}"
    node = b"n" * 32
    await store.compare_and_set(channel, STATE, {5: node})  # v:{channel} and n:{channel}
    slot = key_slot(channel.encode())
    source = cluster.owner(slot)
    target = next(n for n in cluster.nodes if n is not source)
    source_id = command(source.port, "CLUSTER", "MYID")
    target_id = command(target.port, "CLUSTER", "MYID")
    assert command(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id) == "+OK"
    assert command(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id) == "+OK"
    migrate = ("MIGRATE", HOST, str(target.port))
    assert command(source.port, *migrate, f"n:{{{channel}}}", "0", "5000") == "+OK"
    # One key moved, one not: a two-key script on the source gets -TRYAGAIN.
    waiting = asyncio.ensure_future(store.load(channel, [5]))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert command(source.port, *migrate, f"v:{{{channel}}}", "0", "5000") == "+OK"
    for member in cluster.nodes:
        assert command(member.port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id) == "+OK"
    view = await waiting
    assert view.state == STATE and view.nodes == [node]
    await store.close()


async def test_sqlite_a_job_running_at_its_deadline_may_still_commit(tmp_path: Path) -> None:
    """The other side of the claim rule (an abandoned job never runs: see the contract
    tests): one already running when its caller gives up finishes, and its caller's
    503 asks for the retry that then finds it stored."""
    store = await open_vendor_store(f"sqlite:{tmp_path / 'v.sqlite3'}", timeout=0.2)
    assert isinstance(store, SqliteVendorStore)

    def slow_insert(conn: sqlite3.Connection) -> None:
        time.sleep(0.5)
        conn.execute(
            "INSERT INTO vendor_channels (channel_id, idx, owed, proof, created_at) "
            "VALUES ('late', 3, 30, x'00', 't')"
        )

    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="still running"):
        await store._writing(slow_insert)  # the job path every store method takes
    assert time.monotonic() - started < 0.2 + SLACK
    await asyncio.sleep(0.5)
    view = await store.load("late")
    assert view.state is not None and view.state.index == 3
    await store.close()
