"""A minimal pipelined asyncio Redis client on `hiredis.Reader`, with Redis Cluster routing.

Why not redis-py: its asyncio client costs ~56 µs per request and shows 30 ms
p99 spikes (PERFORMANCE.md). Here a command is one `pack` call (the native
core's RESP packer) and an append to a write buffer; every command issued in the
same event-loop turn goes out in one `write()`, and replies resolve futures in order.

Deadlines: every call gets one absolute deadline (time.monotonic() + the
client's timeout) that covers connecting, redirections and retries. A per-call timer
(`asyncio.wait_for`) would cost more than the request; instead each connection
keeps one timer, armed at the earliest deadline of its pending requests, that
fails the overdue ones and drops the connection once the server has sent
nothing for a whole timeout (replies come in order: nothing behind a stuck
request can arrive). The next call reconnects. Every failure leaves as
StoreUnavailable; error replies that mean "not executed, try again" (LOADING,
BUSY, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, NOREPLICAS) are retried
within the deadline, because the server ran nothing. A command whose
connection broke or timed out after it was sent may have run, so it is never
re-sent: the caller gets StoreUnavailable and the request is retried whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, cast

import hiredis

from nanomoni import _core
from nanomoni.store.base import DEFAULT_TIMEOUT, StoreUnavailable

Arg = bytes | str | int
Reply = Any  # bytes | int | list | None, as hiredis decodes RESP2

# Refusals sent instead of running the command: re-sending is safe, even for a
# script that writes. Retried with these pauses (doubling) until the deadline.
RETRY_SAFE = frozenset(
    ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "NOREPLICAS")
)
# Refusals that last (disk or memory trouble on the server): unavailable, no retry.
UNAVAILABLE = frozenset(("MISCONF", "OOM"))
# After these the cluster's slot map may have changed: re-read it before retrying.
REMAP = frozenset(("CLUSTERDOWN", "MASTERDOWN", "READONLY"))
FIRST_PAUSE = 0.01
MAX_PAUSE = 0.2
_now = time.monotonic  # the clock of every deadline here


class RedisReplyError(Exception):
    """An error reply from the server (e.g. WRONGTYPE, NOSCRIPT, MOVED)."""

    @property
    def kind(self) -> str:
        """The error's first word: its code (MOVED, LOADING, ERR, ...)."""
        return str(self).split(" ", 1)[0]


class _Connection(asyncio.Protocol):
    """One connection: requests are written back to back, replies matched in order;
    one timer enforces the requests' deadlines (see the module's docstring)."""

    def __init__(self, stall_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._pending: deque[asyncio.Future[Reply]] = deque()
        self._deadlines: deque[float] = deque()  # when each reply is due (time.monotonic)
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None
        self._flush_scheduled = False
        self._stall_timeout = stall_timeout
        self._heard_at = 0.0  # when the server last sent something (or we began waiting)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @classmethod
    async def open(cls, host: str, port: int, stall_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(stall_timeout), host, port)
        return conn

    @property
    def usable(self) -> bool:
        return self._lost is None and self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._lost or exc or ConnectionError("redis connection closed")
        self._fail_all(ConnectionError, f"redis connection lost: {self._lost}")

    def _fail_all(self, error: type[OSError], message: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(error(message))
        self._deadlines.clear()

    def data_received(self, data: bytes) -> None:
        self._heard_at = _now()
        self._reader.feed(data)
        pending = self._pending
        deadlines = self._deadlines
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
            deadlines.popleft()
            if fut.done():  # the caller gave up (cancelled or overdue): the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(RedisReplyError(str(reply)))
            else:
                fut.set_result(reply)

    def send(self, packed: bytes, deadline: float) -> asyncio.Future[Reply]:
        """Queue one packed command, due by `deadline` (time.monotonic); it is written with
        the others of this loop turn."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"redis connection unusable: {self._lost or 'not connected'}")
        fut: asyncio.Future[Reply] = self._loop.create_future()
        if not self._pending:
            self._heard_at = _now()  # the silence that counts starts now
        self._pending.append(fut)
        self._deadlines.append(deadline)
        self._out.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if deadline < self._timer_at:  # usually armed already, for an earlier request
            self._arm(deadline)
        return fut

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(max(0.0, when - _now()), self._check)
        self._timer_at = when

    def _check(self) -> None:
        """Fail the overdue requests; drop the connection if the server went silent."""
        self._timer, self._timer_at = None, math.inf
        if not self._pending:
            return
        now = _now()
        silent_until = self._heard_at + self._stall_timeout
        if now >= silent_until:
            self._lost = TimeoutError(f"no reply for {self._stall_timeout:g}s")
            self._fail_all(TimeoutError, str(self._lost))
            if self._transport is not None:
                self._transport.abort()
            return
        earliest = silent_until
        for fut, deadline in zip(self._pending, self._deadlines, strict=True):
            if deadline > now:
                earliest = min(earliest, deadline)
            elif not fut.done():
                fut.set_exception(TimeoutError("no reply within the deadline"))
        self._arm(earliest)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and self._lost is None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# One command in RESP (bytes, str or int64 arguments); 3-4x cheaper than hiredis's
# pack_command, and a store call's own cost.
pack = _core.resp_command


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


def _deadline(timeout: float) -> float:
    return _now() + timeout


async def _pause(deadline: float, pause: float) -> bool:
    """Sleep `pause` seconds unless that passes `deadline`; False when no time is left."""
    if _now() + pause >= deadline:
        return False
    await asyncio.sleep(pause)
    return True


_PING = pack("PING")
_ASKING = pack("ASKING")


class RedisClient:
    """Standalone Redis: one pipelined connection, re-opened lazily after a loss.
    Every call finishes within `timeout` seconds or raises StoreUnavailable."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        *,
        username: str = "",
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"the store timeout must be positive, got {timeout}")
        self.host, self.port, self.db = host, port, db
        self.timeout = timeout
        self._auth = (username, password)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False

    def _unavailable(self, what: object) -> StoreUnavailable:
        return StoreUnavailable(f"redis {self.host}:{self.port}: {what}")

    async def _connection(self, deadline: float) -> _Connection:
        """The open connection, or a new one by `deadline`."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        try:
            async with asyncio.timeout(deadline - _now()), self._connecting:
                if self._conn is None or not self._conn.usable:
                    self._conn = await self._connect(deadline)
                return self._conn
        except TimeoutError:
            raise self._unavailable("no connection within the deadline") from None

    async def _connect(self, deadline: float) -> _Connection:
        pause = FIRST_PAUSE
        while True:  # a refused connection sent nothing: trying again is safe
            try:
                conn = await _Connection.open(self.host, self.port, self.timeout)
                break
            except OSError as exc:
                if not await _pause(deadline, pause):
                    raise self._unavailable(f"cannot connect: {exc}") from None
                pause = min(pause * 2, MAX_PAUSE)
        try:
            username, password = self._auth
            if password:
                auth = pack("AUTH", *([username] if username else []), password)
                await conn.send(auth, deadline)
            if self.db:
                await conn.send(pack("SELECT", self.db), deadline)
        except RedisReplyError as exc:  # e.g. the server's password changed
            conn.close()
            raise self._unavailable(f"connection set-up refused: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def execute(self, *args: Arg) -> Coroutine[Any, Any, Reply]:
        """Run one command within the timeout. Raises RedisReplyError for an error
        reply, StoreUnavailable when the server cannot answer in time."""
        return self.call(pack(*args), _deadline(self.timeout))

    async def call(
        self,
        packed: bytes,
        deadline: float,
        *,
        retry: bool = True,
        asking: bool = False,
        script: Script | None = None,
    ) -> Reply:
        """One packed command by `deadline` (time.monotonic). Refusals that ran nothing
        are retried until then, unless `retry` is False (the cluster router decides
        itself); `asking` sends ASKING first (a slot being migrated). `packed` runs
        `script`: on NOSCRIPT (it ran nothing) the script is loaded and it is sent again."""
        pause = FIRST_PAUSE
        while True:
            try:
                conn = self._conn
                if conn is None or not conn.usable:
                    conn = await self._connection(deadline)
                if not asking:
                    return await conn.send(packed, deadline)
                return await _send_asking(conn, packed, deadline)
            except RedisReplyError as exc:
                if script is not None and exc.kind == "NOSCRIPT":
                    await self.call(pack("SCRIPT", "LOAD", script.source), deadline)
                    script = None  # loaded: a second NOSCRIPT is an error
                    continue
                if exc.kind in UNAVAILABLE:
                    raise self._unavailable(exc) from None
                if not retry or exc.kind not in RETRY_SAFE:
                    raise
                if not await _pause(deadline, pause):
                    raise self._unavailable(exc) from None
                pause = min(pause * 2, MAX_PAUSE)
            except OSError as exc:  # timed out or lost after sending: it may have run
                raise self._unavailable(exc) from None

    def evalsha(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Coroutine[Any, Any, Reply]:
        command = pack("EVALSHA", script.sha, len(keys), *keys, *args)
        return self.evalsha_packed(script, keys[0] if keys else b"", command)

    def evalsha_packed(
        self, script: Script, key: Arg, command: bytes
    ) -> Coroutine[Any, Any, Reply]:
        """`evalsha` packed already (`pack("EVALSHA", script.sha, ...)`); `key` routes it
        on a cluster."""
        return self.call(command, _now() + self.timeout, script=script)

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StoreUnavailable unless the server answers PING within `timeout`."""
        if self._closed:
            return
        deadline = _deadline(self.timeout if timeout is None else timeout)
        try:
            await self.call(_PING, deadline, retry=False)
        except RedisReplyError as exc:  # up but not serving (LOADING, BUSY, NOAUTH, ...)
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _send_asking(conn: _Connection, packed: bytes, deadline: float) -> Reply:
    """ASKING and the command back to back on one connection (SPEC of Redis Cluster)."""
    asking = conn.send(_ASKING, deadline)
    reply = conn.send(packed, deadline)
    try:
        await asking
    except BaseException:
        reply.cancel()  # its outcome no longer matters: never leave it unretrieved
        raise
    return await reply


class ClusterClient:
    """Redis Cluster: slot table from CLUSTER SLOTS, one connection per master,
    MOVED corrects the table, ASK is followed once with ASKING, refusals during a
    failover or resharding are retried within the deadline. A call never waits
    for a full re-read of the table unless its slot has no known owner: after a
    failure the table is re-read in the background."""

    MAX_REDIRECTS = 5

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"the store timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._seeds = [(host, port)]
        self._auth = (username, password)
        self._slots: list[tuple[str, int] | None] = [None] * 16384
        self._nodes: dict[tuple[str, int], RedisClient] = {}
        self._slot_cache: dict[bytes, int] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._closed = False

    def _node(self, addr: tuple[str, int]) -> RedisClient:
        client = self._nodes.get(addr)
        if client is None:
            username, password = self._auth
            client = RedisClient(*addr, username=username, password=password, timeout=self.timeout)
            self._nodes[addr] = client
        return client

    async def refresh_slots(self) -> None:
        """Read the slot table from the first node that answers (StoreUnavailable if none)."""
        candidates = list(dict.fromkeys([*self._nodes, *self._seeds]))
        last_error: Exception | None = None
        for addr in candidates:
            # Each node gets half a timeout: a stalled node must not hide the others.
            deadline = _deadline(self.timeout / 2)
            try:
                ranges = await self._node(addr).call(pack("CLUSTER", "SLOTS"), deadline)
            except (StoreUnavailable, RedisReplyError) as exc:
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
        raise StoreUnavailable(f"redis cluster: no node answered CLUSTER SLOTS ({last_error!r})")

    def _refresh_soon(self) -> None:
        """One background re-read of the slot table at a time; calls go on meanwhile."""
        if not self._closed and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_slots()
        except StoreUnavailable:
            pass  # the table stays as it was; the next failure asks again

    async def _refreshed(self, deadline: float) -> None:
        """Wait (until `deadline` at most) for a re-read of the slot table."""
        self._refresh_soon()
        if self._refresh is None:  # closed
            return
        try:
            async with asyncio.timeout(deadline - _now()):
                await asyncio.shield(self._refresh)
        except TimeoutError:
            pass

    def slot_of(self, key: bytes) -> int:
        slot = self._slot_cache.get(key)
        if slot is None:
            if len(self._slot_cache) > 100_000:
                self._slot_cache.clear()
            slot = self._slot_cache[key] = key_slot(key)
        return slot

    async def _route(self, key: Arg, packed: bytes, deadline: float) -> Reply:
        slot = self.slot_of(_as_bytes(key))
        asking_at: tuple[str, int] | None = None
        redirects = 0
        pause = FIRST_PAUSE
        while True:
            addr = asking_at or self._slots[slot]
            if addr is None:  # nothing was sent: waiting for an owner is safe
                await self._refreshed(deadline)
                addr = self._slots[slot]
                if addr is None:
                    if not await _pause(deadline, pause):
                        raise StoreUnavailable(f"redis cluster: slot {slot} is not served")
                    pause = min(pause * 2, MAX_PAUSE)
                    continue
            try:
                return await self._node(addr).call(
                    packed, deadline, retry=False, asking=asking_at is not None
                )
            except StoreUnavailable:
                # Whatever was sent may have run: never re-send it, but re-read the
                # slot table in case a failover moved the slot.
                self._refresh_soon()
                raise
            except RedisReplyError as exc:
                asking_at = None
                kind = exc.kind
                if kind in ("MOVED", "ASK"):
                    redirects += 1
                    if redirects > self.MAX_REDIRECTS:
                        reason = f"redis cluster: too many redirects ({exc})"
                        raise StoreUnavailable(reason) from None
                    host, _, port = str(exc).split(" ")[2].rpartition(":")
                    target = (host or addr[0], int(port))
                    if kind == "MOVED":
                        self._slots[slot] = target
                    else:  # the slot is migrating: this one command goes to the target
                        asking_at = target
                    continue
                if kind not in RETRY_SAFE:
                    raise
                if kind in REMAP:
                    self._refresh_soon()
                if not await _pause(deadline, pause):
                    raise StoreUnavailable(f"redis {addr[0]}:{addr[1]}: {exc}") from None
                pause = min(pause * 2, MAX_PAUSE)

    def execute(self, *args: Arg) -> Coroutine[Any, Any, Reply]:
        """Route a single-key command by its first key (args[1])."""
        return self._route(args[1], pack(*args), _deadline(self.timeout))

    def evalsha(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Coroutine[Any, Any, Reply]:
        """All `keys` must share one slot (hash tag); routed by the first."""
        command = pack("EVALSHA", script.sha, len(keys), *keys, *args)
        return self.evalsha_packed(script, keys[0], command)

    async def evalsha_packed(self, script: Script, key: Arg, command: bytes) -> Reply:
        """`evalsha` packed already (`pack("EVALSHA", script.sha, ...)`), routed by `key`."""
        deadline = _deadline(self.timeout)
        try:
            return await self._route(key, command, deadline)
        except RedisReplyError as exc:
            if exc.kind != "NOSCRIPT":
                raise
        await self._route(key, pack("SCRIPT", "LOAD", script.source), deadline)
        return await self._route(key, command, deadline)

    async def ping(self, timeout: float | None = None) -> None:
        """Raise StoreUnavailable unless every master answers PING within `timeout`."""
        if self._closed:
            return
        try:
            await asyncio.gather(*(node.ping(timeout) for node in self.masters()))
        except StoreUnavailable:
            self._refresh_soon()  # maybe a failover changed the masters
            raise

    def masters(self) -> list[RedisClient]:
        """A client per master of the current slot map."""
        return [self._node(addr) for addr in sorted({a for a in self._slots if a is not None})]

    async def close(self) -> None:
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        for client in self._nodes.values():
            await client.close()
        self._nodes.clear()


Client = RedisClient | ClusterClient
