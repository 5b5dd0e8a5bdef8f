"""A minimal pipelined asyncio Redis client on `hiredis.Reader`, with Redis Cluster routing.

Why not redis-py: its asyncio client costs ~56 µs per request and shows 30 ms
p99 spikes (PERFORMANCE.md). Here a command is one `pack_command` call and an
append to a write buffer; every command issued in the same event-loop turn goes
out in one `write()`, and replies resolve futures in order.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis

Arg = bytes | str | int
Reply = Any  # bytes | int | list | None, as hiredis decodes RESP2


class RedisReplyError(Exception):
    """An error reply from the server (e.g. WRONGTYPE, NOSCRIPT, MOVED)."""


class _Connection(asyncio.Protocol):
    """One connection: requests are written back to back, replies matched in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._pending: deque[asyncio.Future[Reply]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None
        self._flush_scheduled = False

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    @property
    def usable(self) -> bool:
        return self._lost is None and self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("redis connection closed")
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"redis connection lost: {self._lost}"))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                # Replies can no longer be matched to requests: drop the connection
                # (connection_lost fails every pending request).
                assert self._transport is not None
                self._transport.abort()
                return
            if reply is False:
                return
            fut = pending.popleft()
            if fut.done():  # caller was cancelled; the reply is simply dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(RedisReplyError(str(reply)))
            else:
                fut.set_result(reply)

    def send(self, packed: bytes) -> asyncio.Future[Reply]:
        """Queue one packed command; it is written with the others of this loop turn."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"redis connection unusable: {self._lost or 'not connected'}")
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and self._lost is None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def pack(*args: Arg) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub says 1-tuple
    return packed


class Script:
    """A Lua script run with EVALSHA; reloaded on NOSCRIPT (server restart, other node)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# --- CRC16 (XMODEM: poly 0x1021, init 0), the key-slot function of Redis Cluster ---


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC16_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    crc = 0
    table = _CRC16_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: bytes) -> int:
    """Cluster slot of a key: only the `{tag}` part is hashed when it is non-empty."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % 16384


def _as_bytes(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class RedisClient:
    """Standalone Redis: one pipelined connection, re-opened lazily after a loss."""

    def __init__(
        self, host: str, port: int, db: int = 0, *, username: str = "", password: str = ""
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self._auth = (username, password)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is None or not self._conn.usable:
                conn = await _Connection.open(self.host, self.port)
                username, password = self._auth
                try:
                    if password:
                        await conn.send(pack("AUTH", *([username] if username else []), password))
                    if self.db:
                        await conn.send(pack("SELECT", self.db))
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return self._conn

    async def execute(self, *args: Arg) -> Reply:
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connection()
        return await conn.send(pack(*args))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.execute("SCRIPT", "LOAD", script.source)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ClusterClient:
    """Redis Cluster: slot table from CLUSTER SLOTS, one connection per master,
    MOVED refreshes the table, ASK is followed once with ASKING."""

    MAX_REDIRECTS = 5

    def __init__(self, host: str, port: int, *, username: str = "", password: str = "") -> None:
        self._seeds = [(host, port)]
        self._auth = (username, password)
        self._slots: list[tuple[str, int] | None] = [None] * 16384
        self._nodes: dict[tuple[str, int], RedisClient] = {}
        self._slot_cache: dict[bytes, int] = {}
        self._refreshing: asyncio.Lock | None = None
        self._stale = False

    def _node(self, addr: tuple[str, int]) -> RedisClient:
        client = self._nodes.get(addr)
        if client is None:
            username, password = self._auth
            client = RedisClient(*addr, username=username, password=password)
            self._nodes[addr] = client
        return client

    async def refresh_slots(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            candidates = list(dict.fromkeys([*self._nodes, *self._seeds]))
            last_error: Exception | None = None
            for addr in candidates:
                try:
                    ranges = await self._node(addr).execute("CLUSTER", "SLOTS")
                except (OSError, RedisReplyError) as exc:
                    last_error = exc
                    continue
                slots: list[tuple[str, int] | None] = [None] * 16384
                for start, end, master, *_replicas in ranges:
                    node_addr = (master[0].decode(), int(master[1]))
                    for slot in range(start, end + 1):
                        slots[slot] = node_addr
                self._slots = slots
                self._seeds = list(dict.fromkeys([*self._seeds, *(s for s in slots if s)]))
                return
            raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {last_error}")

    def slot_of(self, key: bytes) -> int:
        slot = self._slot_cache.get(key)
        if slot is None:
            if len(self._slot_cache) > 100_000:
                self._slot_cache.clear()
            slot = self._slot_cache[key] = key_slot(key)
        return slot

    async def _route(self, key: Arg, args: Sequence[Arg]) -> Reply:
        slot = self.slot_of(_as_bytes(key))
        if self._stale:
            self._stale = False
            await self.refresh_slots()
        for _ in range(self.MAX_REDIRECTS):
            addr = self._slots[slot]
            if addr is None:
                await self.refresh_slots()
                addr = self._slots[slot]
                if addr is None:
                    raise ConnectionError(f"cluster slot {slot} is not served")
            try:
                return await self._node(addr).execute(*args)
            except OSError:
                # The command may have run before the connection broke: never resend it
                # (a transition is not idempotent), but re-read the slot map next time
                # in case a failover moved the slot.
                self._stale = True
                raise
            except RedisReplyError as exc:
                kind, _, rest = str(exc).partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                host, _, port = rest.split(" ")[1].rpartition(":")
                target = (host or addr[0], int(port))
                if kind == "MOVED":
                    self._slots[slot] = target
                    continue
                # ASK: the slot is migrating; this one command goes to the target after ASKING.
                conn = await self._node(target)._connection()
                asking = conn.send(pack("ASKING"))
                reply = conn.send(pack(*args))
                await asking
                return await reply
        raise ConnectionError(f"too many cluster redirects for slot {slot}")

    async def execute(self, *args: Arg) -> Reply:
        """Route a single-key command by its first key (args[1])."""
        return await self._route(args[1], args)

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        """All `keys` must share one slot (hash tag); routed by the first."""
        cmd = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._route(keys[0], cmd)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self._route(keys[0], ("SCRIPT", "LOAD", script.source))
            return await self._route(keys[0], cmd)

    def masters(self) -> list[RedisClient]:
        """A client per master of the current slot map."""
        return [self._node(addr) for addr in sorted({a for a in self._slots if a is not None})]

    async def close(self) -> None:
        for client in self._nodes.values():
            await client.close()
        self._nodes.clear()


Client = RedisClient | ClusterClient
