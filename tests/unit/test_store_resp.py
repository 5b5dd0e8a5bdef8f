"""The RESP client: slots, pipelining, errors, script reloads, reconnects, and
cluster redirections (MOVED, ASK) against real redis-server processes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
from redis_servers import RedisCluster, RedisServer, command, redis_cluster, redis_server

from nanomoni.store import StoreUnavailable, open_vendor_store
from nanomoni.store.resp import (
    ClusterClient,
    RedisClient,
    RedisReplyError,
    Script,
    crc16,
    key_slot,
    pack,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as started:
        yield started


def test_crc16_reference_vector() -> None:
    assert crc16(b"123456789") == 0x31C3  # CRC-16/XMODEM check value


def test_key_slot_hash_tags() -> None:
    assert key_slot(b"foo") == 12182
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"v:{abc}") == key_slot(b"n:{abc}") == crc16(b"abc") % 16384
    assert key_slot(b"foo{}{bar}") == crc16(b"foo{}{bar}") % 16384  # empty tag: whole key
    assert key_slot(b"foo{{bar}}zap") == crc16(b"{bar") % 16384


def test_key_slot_agrees_with_the_server(cluster: RedisCluster) -> None:
    port = cluster.nodes[0].port
    for _ in range(100):
        key = f"k{secrets.token_hex(6)}" + ("{" + secrets.token_hex(3) + "}" if _ % 2 else "")
        assert key_slot(key.encode()) == int(command(port, "CLUSTER", "KEYSLOT", key)[1:])


async def test_pipelined_replies_resolve_in_order(server: RedisServer) -> None:
    client = RedisClient("127.0.0.1", server.port)
    key = secrets.token_hex(8)
    replies = await asyncio.gather(*(client.execute("INCR", key) for _ in range(1000)))
    assert replies == list(range(1, 1001))
    await client.close()


async def test_error_reply_raises_and_connection_stays_usable(server: RedisServer) -> None:
    client = RedisClient("127.0.0.1", server.port)
    key = secrets.token_hex(8)
    await client.execute("SET", key, b"\x00\xffbinary")
    with pytest.raises(RedisReplyError, match="WRONGTYPE"):
        await client.execute("HGET", key, "field")
    assert await client.execute("GET", key) == b"\x00\xffbinary"
    await client.close()


async def test_script_is_reloaded_after_flush(server: RedisServer) -> None:
    client = RedisClient("127.0.0.1", server.port)
    script = Script("return ARGV[1] .. KEYS[1]")
    assert await client.evalsha(script, ["k"], ["v"]) == b"vk"
    await client.execute("SCRIPT", "FLUSH")
    assert await client.evalsha(script, ["k2"], ["v"]) == b"vk2"
    await client.close()


async def test_a_script_packed_by_its_caller_runs_and_is_reloaded(server: RedisServer) -> None:
    client = RedisClient("127.0.0.1", server.port)
    script = Script("return {KEYS[1], ARGV[1], ARGV[2]}")
    command = pack("EVALSHA", script.sha, 1, "{k}x", b"", b"\x00\r\n")
    await client.execute("SCRIPT", "FLUSH")
    assert await client.evalsha_packed(script, b"k", command) == [b"{k}x", b"", b"\x00\r\n"]
    await client.close()


async def test_database_number_is_selected(server: RedisServer) -> None:
    client0, client3 = (
        RedisClient("127.0.0.1", server.port),
        RedisClient("127.0.0.1", server.port, 3),
    )
    key = secrets.token_hex(8)
    await client3.execute("SET", key, "in-db-3")
    assert await client0.execute("GET", key) is None
    assert await client3.execute("GET", key) == b"in-db-3"
    await client0.close()
    await client3.close()


async def test_pending_requests_fail_when_the_server_dies_then_reconnect() -> None:
    with redis_server() as own:
        client = RedisClient("127.0.0.1", own.port)
        await client.execute("PING")
        blocked = asyncio.ensure_future(client.execute("BLPOP", "never", 0))
        await asyncio.sleep(0.05)
        own.kill()
        with pytest.raises(StoreUnavailable, match="connection lost"):
            await asyncio.wait_for(blocked, 5)
        own.start()
        assert await client.execute("PING") == b"PONG"  # a fresh connection
        await client.close()


async def test_cluster_follows_moved_from_a_wrong_slot_table(cluster: RedisCluster) -> None:
    client = ClusterClient("127.0.0.1", cluster.nodes[0].port)
    await client.refresh_slots()
    wrong = ("127.0.0.1", cluster.nodes[0].port)
    client._slots = [wrong] * 16384  # every slot claimed by one node: most requests get MOVED
    keys = [f"moved-{n}" for n in range(50)]
    for key in keys:
        await client.execute("SET", key, key)
    assert [await client.execute("GET", key) for key in keys] == [k.encode() for k in keys]
    assert len(set(client._slots)) == 3  # the table learned the real owners
    await client.close()


async def test_cluster_follows_ask_during_slot_migration() -> None:
    with redis_cluster() as own:
        client = ClusterClient("127.0.0.1", own.nodes[0].port)
        await client.refresh_slots()
        key = "{migrating}:key"
        slot = key_slot(key.encode())
        source_addr = client._slots[slot]
        assert source_addr is not None
        source = next(n for n in own.nodes if n.port == source_addr[1])
        target = next(n for n in own.nodes if n is not source)
        source_id = command(source.port, "CLUSTER", "MYID")
        target_id = command(target.port, "CLUSTER", "MYID")
        assert (
            command(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id) == "+OK"
        )
        assert (
            command(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id) == "+OK"
        )
        # The key is not on the source, so the source answers ASK and the client retries there.
        assert await client.execute("SET", key, "moved-along") == b"OK"
        assert await client.execute("GET", key) == b"moved-along"
        assert client._slots[slot] == source_addr  # ASK does not change the slot table
        await client.close()


async def test_password_in_the_url_is_sent_with_auth() -> None:
    with redis_server() as own:
        assert command(own.port, "CONFIG", "SET", "requirepass", "s3cret") == "+OK"
        refused = RedisClient("127.0.0.1", own.port)
        with pytest.raises(RedisReplyError, match="NOAUTH"):
            await refused.execute("PING")
        await refused.close()
        store = await open_vendor_store(f"redis://:s3cret@127.0.0.1:{own.port}/2")
        assert (await store.load("any-channel")).state is None
        await store.close()


async def test_a_garbled_reply_stream_fails_requests_instead_of_hanging() -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        await reader.read(100)  # hold the connection until the client drops it
        writer.close()

    peer = await asyncio.start_server(garble, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    client = RedisClient("127.0.0.1", port)
    with pytest.raises(StoreUnavailable, match="connection lost"):
        await asyncio.wait_for(client.execute("PING"), 5)
    await client.close()
    peer.close()
    await peer.wait_closed()


async def test_opening_warns_when_redis_does_not_fsync_every_write(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_vendor_store(server.url)
    await store.close()
    assert "does not fsync every write" in caplog.text
    caplog.clear()
    with redis_server(aof=True) as durable:
        store = await open_vendor_store(durable.url)
        await store.close()
    assert "fsync" not in caplog.text
