"""Issuer ledger and vendor channel state on SQLite.

The event loop never touches SQLite. Each store owns two worker threads with
their own connections: a writer and a reader. A worker takes every operation
queued so far and runs them together — the writer inside ONE transaction with
one commit (so one fsync covers the whole batch), each operation inside its
own SAVEPOINT so a refusal in one rolls back only that one. Callers' futures are
resolved after the commit, so an acknowledged write is on disk
(journal_mode=WAL, synchronous=FULL). busy_timeout lets several worker
processes share one file.

Deadlines: each operation's caller waits at most the store's timeout, then gets
StoreUnavailable. An operation is claimed exactly once, either by the worker
(once its transaction has begun, i.e. it holds the write lock) or by its
caller's deadline: so an operation whose caller gave up before that never runs,
even if the worker was stuck behind another process's write lock for much
longer. Only an operation in a transaction already under way at the deadline
may still commit; its caller got 503 like any other, and repeating a store
transition is safe (see StoreUnavailable).
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec

from nanomoni.config import FINALIZE_BATCH
from nanomoni.protocol.audit import Ledger, VendorChannel
from nanomoni.protocol.model import (
    Account,
    CasOutcome,
    CasResult,
    ChannelState,
    ChannelTerms,
    Closing,
    ClosingChannel,
    Closure,
    IssuerChannel,
    Opened,
    PaymentState,
    Receipt,
    ReceiptKind,
    Settled,
    ToppedUp,
    VendorView,
)
from nanomoni.store.base import (
    DEFAULT_DISPUTE_WINDOW_US,
    DEFAULT_TIMEOUT,
    REQUEST_MEMORY,
    Charge,
    ChargeOutcome,
    StoreUnavailable,
)
from nanomoni.store.codec import (
    MAX_INT,
    check_amount,
    check_open_key,
    check_times,
    closure_to_blob,
    ledger_channel,
    receipt,
    refusal,
    settlement_from_blob,
    settlement_to_blob,
    stored_closure,
    terms_from_blob,
    terms_to_blob,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

MAX_BATCH = 512
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    public_key TEXT PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS used_roots (root BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS open_keys (
    open_key BLOB PRIMARY KEY, channel_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS issuer_channels (
    channel_id TEXT PRIMARY KEY, client TEXT NOT NULL, vendor TEXT NOT NULL,
    amount INTEGER NOT NULL, terms BLOB NOT NULL,
    proof_digest BLOB, closure BLOB, client_balance INTEGER, vendor_balance INTEGER);
CREATE TABLE IF NOT EXISTS issuer_receipts (
    channel_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    amount INTEGER NOT NULL, owed INTEGER NOT NULL, vendor_credited INTEGER NOT NULL,
    at INTEGER NOT NULL, PRIMARY KEY (channel_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS issuer_top_ups (
    channel_id TEXT NOT NULL, nonce BLOB NOT NULL, digest BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (channel_id, nonce)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vendor_channels (
    channel_id TEXT PRIMARY KEY, idx INTEGER, owed INTEGER, proof BLOB, created_at TEXT,
    closing INTEGER NOT NULL DEFAULT 0, settlement BLOB);
CREATE TABLE IF NOT EXISTS vendor_terms (
    channel_id TEXT PRIMARY KEY, amount INTEGER NOT NULL, terms BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vendor_nodes (
    channel_id TEXT NOT NULL, node INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (channel_id, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paywall_credit (
    channel_id TEXT PRIMARY KEY, consumed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paywall_requests (
    channel_id TEXT NOT NULL, request_id TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (channel_id, request_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS paywall_requests_expiry ON paywall_requests (expires);
"""

# Client protection (SPEC §4.6) added these columns: a file made before gets them here.
# Times are µs since the epoch (the store's clock); expires_at NULL: never expires.
_LIFECYCLE_COLUMNS = {
    "state": "TEXT NOT NULL DEFAULT 'open'",  # open | closing | closed
    "expires_at": "INTEGER",
    "dispute_window": "INTEGER NOT NULL DEFAULT 0",
    "dispute_deadline": "INTEGER",
    "vendor_credited": "INTEGER NOT NULL DEFAULT 0",
    "closed_at": "INTEGER",
    "settle_seq": "INTEGER",  # the receipt of the final settlement
    "receipts": "INTEGER NOT NULL DEFAULT 0",  # receipts recorded so far
}
# Sweeps and lazy transitions find what is due without scanning every channel.
_INDEXES = """
CREATE INDEX IF NOT EXISTS issuer_expiries ON issuer_channels (expires_at)
    WHERE state = 'open';
CREATE INDEX IF NOT EXISTS issuer_deadlines ON issuer_channels (dispute_deadline)
    WHERE state = 'closing';
CREATE INDEX IF NOT EXISTS issuer_client_live ON issuer_channels (client)
    WHERE state != 'closed';
CREATE INDEX IF NOT EXISTS issuer_vendor_closing ON issuer_channels (vendor)
    WHERE state = 'closing';
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the lifecycle columns to an issuer_channels table made before them; its
    settled channels are closed, the vendor credited with what they settled."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(issuer_channels)")}
    missing = [name for name in _LIFECYCLE_COLUMNS if name not in have]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in conn.execute("PRAGMA table_info(issuer_channels)")}
        for name in _LIFECYCLE_COLUMNS:
            if name not in have:
                column = _LIFECYCLE_COLUMNS[name]
                conn.execute(f"ALTER TABLE issuer_channels ADD COLUMN {name} {column}")
        if "state" not in have:
            settled = conn.execute(
                "SELECT channel_id, closure FROM issuer_channels WHERE closure IS NOT NULL"
            ).fetchall()
            for channel_id, blob in settled:
                owed = stored_closure(blob, 0, 0, 0, 0).owed
                conn.execute(
                    "UPDATE issuer_channels SET state = 'closed', vendor_credited = ?, "
                    "closed_at = 0 WHERE channel_id = ?",
                    (owed, channel_id),
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Switching a new file to WAL takes an exclusive lock that the busy handler
    # does not wait for: several processes opening one new file at once retry.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


QUEUED, RUNS, GIVEN_UP = 0, 1, 2  # who owns a job: nobody yet, the worker, its caller


class _Job:
    """One queued operation and its caller's side: future, loop and deadline."""

    __slots__ = ("deadline", "fut", "loop", "op", "owner", "timeout")

    def __init__(
        self, op: Op, fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, timeout: float
    ) -> None:
        self.op, self.fut, self.loop, self.timeout = op, fut, loop, timeout
        self.deadline = time.monotonic() + timeout
        # Set once (under the worker's claim lock), by whoever comes first: the worker
        # (RUNS: it runs the operation) or the caller's deadline (GIVEN_UP: it never will).
        self.owner = QUEUED


_Result = tuple[_Job, bool, Any]  # job, succeeded, value or exception
_Claim = Callable[[_Job, int], bool]


def _resolve(results: list[_Result]) -> None:
    for job, ok, value in results:
        if job.fut.done():  # the caller's deadline came first
            continue
        if ok:
            job.fut.set_result(value)
        else:
            job.fut.set_exception(value)


def _expire(job: _Job, where: str, claim: _Claim) -> None:
    """The caller's deadline: abandon the operation unless the worker has started it."""
    if claim(job, GIVEN_UP):
        reason = f"not started within {job.timeout:g}s (it will not run)"
    else:
        reason = f"still running after {job.timeout:g}s"
    job.fut.set_exception(StoreUnavailable(f"sqlite {where}: {reason}"))


class _Deadlines:
    """The jobs one event loop queued on one worker, oldest first, watched by ONE
    timer at the earliest deadline (a timer per job costs ~2 µs: more than the
    rest of a coalesced write's event-loop work)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, claim: _Claim) -> None:
        self._loop = loop
        self._where = where
        self._claim = claim
        self._jobs: deque[_Job] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def watch(self, job: _Job) -> None:
        jobs = self._jobs
        while jobs and jobs[0].fut.done():  # answered jobs leave from the front
            jobs.popleft()
        jobs.append(job)
        if job.deadline < self._timer_at:
            self._arm(job.deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(max(0.0, when - time.monotonic()), self._check)
        self._timer_at = when

    def _check(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        earliest = math.inf
        for job in self._jobs:
            if job.fut.done():
                continue
            if job.deadline <= now:
                _expire(job, self._where, self._claim)
            else:
                earliest = min(earliest, job.deadline)
        while self._jobs and self._jobs[0].fut.done():
            self._jobs.popleft()
        if earliest < math.inf:
            self._arm(earliest)


def _failure(where: str, exc: Exception) -> Exception:
    """SQLite's own failures (locked, busy, I/O, disk full, read-only) are an unavailable
    store; everything else (refusals, bugs) reaches the caller unchanged."""
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"sqlite {where}: {exc}")
    return exc


class _Worker:
    """A thread that runs queued operations in batches on its own connection."""

    def __init__(self, path: str, name: str, *, writer: bool) -> None:
        self._path = path
        self._conn = _connect(path)
        self._writer = writer
        self._stopped = False
        self.batches = 0  # transactions run (for tests and metrics: ops / batches = coalescing)
        # Jobs go over in lists: all that one event-loop turn queued, handed over at its
        # end (`_hand_over`), so the worker wakes once per turn, not once per job, and
        # every request in flight shares its transaction (one commit, one fsync).
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._outboxes: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # one per caller loop
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}  # one per caller loop
        self._claims = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def claim(self, job: _Job, owner: int) -> bool:
        """Make `owner` the job's owner unless it has one: True if it did."""
        with self._claims:  # one lock per worker: cheaper than one per job
            if job.owner != QUEUED:
                return False
            job.owner = owner
            return True

    def _claim_all(self, batch: list[_Job]) -> list[_Job]:
        """The jobs of `batch` this worker now owns: those whose callers have not
        given up (one lock for the whole batch, taken once the transaction began)."""
        with self._claims:
            mine = [job for job in batch if job.owner == QUEUED]
            for job in mine:
                job.owner = RUNS
        return mine

    async def run(self, op: Callable[[sqlite3.Connection], T], timeout: float) -> T:
        """`op(connection)`'s result, or StoreUnavailable after `timeout` seconds."""
        if self._stopped:
            raise RuntimeError("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        job = _Job(op, fut, loop, timeout)
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            deadlines = self._deadlines[loop] = _Deadlines(loop, self._path, self.claim)
        deadlines.watch(job)
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = []
        if not outbox:
            loop.call_soon(self._hand_over, outbox)
        outbox.append(job)
        try:
            return await fut
        except asyncio.CancelledError:
            self.claim(job, GIVEN_UP)  # nobody waits any more: skip it if not started
            raise

    def _hand_over(self, outbox: list[_Job]) -> None:
        jobs = outbox.copy()
        outbox.clear()
        if self._stopped:  # closed meanwhile: these would queue behind the worker's end
            for job in jobs:
                if self.claim(job, GIVEN_UP):
                    job.fut.set_exception(RuntimeError("the SQLite store is closed"))
            return
        self._jobs.put(jobs)

    def stop(self) -> None:
        self._stopped = True
        self._jobs.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            jobs = self._jobs.get()
            if jobs is None:
                return
            batch = list(jobs)
            while len(batch) < MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._execute(batch)
                    return
                batch += more
            self._execute(batch)

    def _execute(self, batch: list[_Job]) -> None:
        self.batches += 1
        results: list[_Result] = []
        conn = self._conn
        try:
            # Readers take a deferred transaction: one consistent snapshot per batch.
            conn.execute("BEGIN IMMEDIATE" if self._writer else "BEGIN")
            for job in self._claim_all(batch):
                if self._writer:
                    conn.execute("SAVEPOINT op")
                try:
                    value = job.op(conn)
                except Exception as exc:  # this caller's failure only; the batch goes on
                    if self._writer:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    results.append((job, False, _failure(self._path, exc)))
                    continue
                if self._writer:
                    conn.execute("RELEASE op")
                results.append((job, True, value))
            conn.execute("COMMIT")
        except Exception as exc:  # the whole batch failed: nobody gets an acknowledgement
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (e.g. after an I/O error)
            failure = _failure(self._path, exc)
            results = [(job, False, failure) for job in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for result in results:
            by_loop.setdefault(result[0].loop, []).append(result)
        for loop, loop_results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, loop_results)
            except RuntimeError:
                pass  # that caller's event loop is closed: nobody is waiting any more


class _Database:
    """The writer and reader of one file, shared by every store of this process on
    it: an issuer and a vendor on one file then coalesce into the same commits
    instead of fighting over SQLite's write lock (whose busy handler is unfair)."""

    _open: ClassVar[dict[str, _Database]] = {}
    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        setup = _connect(path)
        try:
            setup.executescript(_SCHEMA)
            _migrate(setup)
            setup.executescript(_INDEXES)
        finally:
            setup.close()
        self.path = path
        self.users = 0
        self.write = _Worker(path, "nanomoni-sqlite-writer", writer=True)
        self.read = _Worker(path, "nanomoni-sqlite-reader", writer=False)

    @classmethod
    def acquire(cls, path: str) -> _Database:
        if path == ":memory:" or path.startswith("file:"):
            raise ValueError("the SQLite store needs a file path (its threads share the file)")
        key = os.path.realpath(path)
        with cls._lock:
            database = cls._open.get(key)
            if database is None:
                database = cls._open[key] = _Database(key)
            database.users += 1
            return database

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users:
                return
            del self._open[self.path]
        self.write.stop()
        self.read.stop()


def _nothing(conn: sqlite3.Connection) -> None:
    return None


class _SqliteBase:
    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not timeout > 0:
            raise ValueError(f"the store timeout must be positive, got {timeout}")
        self._database = _Database.acquire(path)
        self._write = self._database.write
        self._read = self._database.read
        self._timeout = timeout
        self._closed = False

    def _writing(self, op: Callable[[sqlite3.Connection], T]) -> Coroutine[Any, Any, T]:
        """Run `op` in the writer's next transaction, within the store's deadline."""
        return self._write.run(op, self._timeout)

    def _reading(self, op: Callable[[sqlite3.Connection], T]) -> Coroutine[Any, Any, T]:
        """Run `op` in the reader's next snapshot, within the store's deadline."""
        return self._read.run(op, self._timeout)

    async def ping(self, timeout: float | None = None) -> None:
        """Both workers get through an (empty) transaction: the writer needs the
        file's write lock, so another process holding it shows here."""
        if self._closed:
            return
        limit = self._timeout if timeout is None else timeout
        await asyncio.gather(self._write.run(_nothing, limit), self._read.run(_nothing, limit))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._database.release)


def _balance(conn: sqlite3.Connection, public_key: str) -> int | None:
    sql = "SELECT balance FROM accounts WHERE public_key = ?"
    row = conn.execute(sql, (public_key,)).fetchone()
    return None if row is None else int(row[0])


def _grow_supply(conn: sqlite3.Connection, amount: int) -> None:
    """Σ grants + Σ deposits must stay below 2**63 so no balance can overflow int64."""
    row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'supply'").fetchone()
    supply = 0 if row is None else int(row[0])
    if supply + amount > MAX_INT:
        raise refusal("invalid_amount")
    conn.execute(
        "INSERT INTO ledger_meta (name, value) VALUES ('supply', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (supply + amount,),
    )


class _Row(NamedTuple):
    """One issuer_channels row (the columns of _CHANNEL_SQL, in order)."""

    client: str
    vendor: str
    amount: int
    terms: bytes
    state: str
    expires_at: int | None
    dispute_window: int
    dispute_deadline: int | None
    vendor_credited: int
    proof_digest: bytes | None
    closure: bytes | None
    client_balance: int | None
    vendor_balance: int | None
    closed_at: int | None
    settle_seq: int | None
    receipts: int


_CHANNEL_SQL = (
    "SELECT client, vendor, amount, terms, state, expires_at, dispute_window, dispute_deadline, "
    "vendor_credited, proof_digest, closure, client_balance, vendor_balance, closed_at, "
    "settle_seq, receipts FROM issuer_channels WHERE channel_id = ?"
)
_ALL_CHANNELS_SQL = "SELECT channel_id, " + _CHANNEL_SQL[len("SELECT ") :].split(" WHERE")[0]
_RECEIPT_SQL = (
    "SELECT seq, kind, amount, owed, vendor_credited, at FROM issuer_receipts "
    "WHERE channel_id = ?"
)
# What is due: an open channel past its expiry, a closing one past its deadline.
_DUE_SQL = (
    "(state = 'open' AND expires_at <= :now) OR (state = 'closing' AND dispute_deadline <= :now)"
)


def _clock() -> int:
    """The store's clock (µs): the host's, read inside the write transaction."""
    return time.time_ns() // 1000


def _row(conn: sqlite3.Connection, channel_id: str) -> _Row | None:
    found = conn.execute(_CHANNEL_SQL, (channel_id,)).fetchone()
    return None if found is None else _Row(*found)


def _is_due(row: _Row, now: int) -> bool:
    if row.state == "open":
        return row.expires_at is not None and now >= row.expires_at
    deadline = row.dispute_deadline
    return row.state == "closing" and deadline is not None and now >= deadline


def _receipt_at(conn: sqlite3.Connection, channel_id: str, seq: int) -> Receipt:
    found = conn.execute(_RECEIPT_SQL + " AND seq = ?", (channel_id, seq)).fetchone()
    return receipt(channel_id, *found)


def _channel(conn: sqlite3.Connection, channel_id: str, row: _Row) -> IssuerChannel:
    receipts = tuple(
        receipt(channel_id, *found)
        for found in conn.execute(_RECEIPT_SQL + " ORDER BY seq", (channel_id,))
    )
    terms = msgspec.structs.replace(
        terms_from_blob(row.terms), amount=row.amount, expires_at=row.expires_at
    )
    closure = None
    if row.state == "closed":
        assert row.client_balance is not None and row.vendor_balance is not None
        assert row.closed_at is not None
        closure = stored_closure(
            row.closure, row.vendor_credited, row.client_balance, row.vendor_balance, row.closed_at
        )
    return IssuerChannel(
        terms=terms,
        closure=closure,
        state=ChannelState(row.state),
        dispute_deadline=row.dispute_deadline,
        vendor_credited=row.vendor_credited,
        receipts=receipts,
    )


def _read(conn: sqlite3.Connection, channel_id: str) -> IssuerChannel:
    row = _row(conn, channel_id)
    assert row is not None
    return _channel(conn, channel_id, row)


def _add(conn: sqlite3.Connection, public_key: str, delta: int) -> None:
    """A net change computed exactly in Python: the result stays within the supply."""
    if delta:
        conn.execute(
            "UPDATE accounts SET balance = balance + ? WHERE public_key = ?", (delta, public_key)
        )


def _record(
    conn: sqlite3.Connection, channel_id: str, kind: ReceiptKind, owed: int, now: int
) -> Receipt:
    """Append the channel's next receipt, of its amount and credit as they are now."""
    conn.execute(
        "UPDATE issuer_channels SET receipts = receipts + 1 WHERE channel_id = ?", (channel_id,)
    )
    seq, amount, credited = conn.execute(
        "SELECT receipts, amount, vendor_credited FROM issuer_channels WHERE channel_id = ?",
        (channel_id,),
    ).fetchone()
    conn.execute(
        "INSERT INTO issuer_receipts (channel_id, seq, kind, amount, owed, vendor_credited, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (channel_id, seq, kind.value, amount, owed, credited, now),
    )
    return receipt(channel_id, seq, kind.value, amount, owed, credited, now)


def _close_row(
    conn: sqlite3.Connection,
    channel_id: str,
    row: _Row,
    credited: int,
    now: int,
    *,
    digest: bytes | None = None,
    blob: bytes | None = None,
) -> None:
    """Credit the vendor up to `credited`, refund the client the rest, close."""
    _add(conn, row.vendor, credited - row.vendor_credited)
    _add(conn, row.client, row.amount - credited)
    conn.execute(
        "UPDATE issuer_channels SET state = 'closed', vendor_credited = ?, proof_digest = ?, "
        "closure = ?, client_balance = ?, vendor_balance = ?, closed_at = ? WHERE channel_id = ?",
        (
            credited,
            digest,
            blob,
            _balance(conn, row.client),
            _balance(conn, row.vendor),
            now,
            channel_id,
        ),
    )


def _apply_due(conn: sqlite3.Connection, channel_id: str, now: int) -> _Row | None:
    """SPEC §4.6 inside the write transaction: an expired open channel starts closing at
    its expiry; a closing channel past its deadline is finalized (the vendor keeps what
    checkpoints credited, the client gets the rest)."""
    row = _row(conn, channel_id)
    if row is None or not _is_due(row, now):
        return row
    if row.state == "open":
        assert row.expires_at is not None
        deadline = row.expires_at + row.dispute_window
        conn.execute(
            "UPDATE issuer_channels SET state = 'closing', dispute_deadline = ? "
            "WHERE channel_id = ?",
            (deadline, channel_id),
        )
        row = row._replace(state="closing", dispute_deadline=deadline)
    if _is_due(row, now):
        _close_row(conn, channel_id, row, row.vendor_credited, now)
        _record(conn, channel_id, ReceiptKind.finalization, 0, now)
    return _row(conn, channel_id)


def _sweep(conn: sqlite3.Connection, now: int, limit: int, where: str = "", *args: Any) -> int:
    """Apply what is due to at most `limit` expiring and `limit` closing channels."""
    done = 0
    for state, column in (("open", "expires_at"), ("closing", "dispute_deadline")):
        ids = conn.execute(
            f"SELECT channel_id FROM issuer_channels WHERE state = ? AND {column} <= ? {where} "
            f"ORDER BY {column} LIMIT ?",
            (state, now, *args, limit),
        ).fetchall()
        for (channel_id,) in ids:
            _apply_due(conn, channel_id, now)
        done += len(ids)
    return done


class SqliteIssuerStore(_SqliteBase):
    async def register(self, public_key_der_b64: str, initial_balance: int) -> Account:
        check_amount(initial_balance, allow_zero=True)

        def op(conn: sqlite3.Connection) -> Account:
            balance = _balance(conn, public_key_der_b64)
            if balance is None:
                _grow_supply(conn, initial_balance)
                conn.execute(
                    "INSERT INTO accounts (public_key, balance) VALUES (?, ?)",
                    (public_key_der_b64, initial_balance),
                )
                balance = initial_balance
            return Account(public_key_der_b64=public_key_der_b64, balance=balance)

        return await self._writing(op)

    async def get_account(self, public_key_der_b64: str) -> Account | None:
        def read(conn: sqlite3.Connection) -> tuple[int | None, bool]:
            due = conn.execute(
                "SELECT 1 FROM issuer_channels WHERE client = :key AND state != 'closed' "
                f"AND ({_DUE_SQL}) LIMIT 1",
                {"key": public_key_der_b64, "now": _clock()},
            ).fetchone()
            return _balance(conn, public_key_der_b64), due is not None

        def advance(conn: sqlite3.Connection) -> int | None:
            now = _clock()
            while _sweep(conn, now, FINALIZE_BATCH, "AND client = ?", public_key_der_b64):
                pass
            return _balance(conn, public_key_der_b64)

        balance, due = await self._reading(read)
        if due:  # a finalization refunds this client: apply it before answering
            balance = await self._writing(advance)
        if balance is None:
            return None
        return Account(public_key_der_b64=public_key_der_b64, balance=balance)

    async def deposit(self, public_key_der_b64: str, amount: int) -> Account | None:
        check_amount(amount, allow_zero=True)

        def op(conn: sqlite3.Connection) -> Account | None:
            balance = _balance(conn, public_key_der_b64)
            if balance is None:
                return None
            _grow_supply(conn, amount)
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE public_key = ?",
                (balance + amount, public_key_der_b64),
            )
            return Account(public_key_der_b64=public_key_der_b64, balance=balance + amount)

        return await self._writing(op)

    async def open_channel(
        self, terms: ChannelTerms, *, dispute_window_us: int = DEFAULT_DISPUTE_WINDOW_US
    ) -> Opened:
        check_amount(terms.amount, allow_zero=False)
        check_open_key(terms)
        check_times(terms.ttl_us, dispute_window_us)
        client, vendor = terms.client_public_key_der_b64, terms.vendor_public_key_der_b64
        blob = terms_to_blob(terms)

        def op(conn: sqlite3.Connection) -> Opened:
            earlier = conn.execute(
                "SELECT channel_id FROM open_keys WHERE open_key = ?", (terms.open_key,)
            ).fetchone()
            if earlier is not None:
                first = _read(conn, earlier[0])
                account = Account(
                    public_key_der_b64=client, balance=_balance(conn, client) or 0
                )
                return Opened(
                    terms=first.terms, account=account, receipt=first.receipts[0], replayed=True
                )
            balance = _balance(conn, client)
            if balance is None:
                raise refusal("not_registered", "client")
            if _balance(conn, vendor) is None:
                raise refusal("not_registered", "vendor")
            if balance < terms.amount:
                raise refusal("insufficient_balance")
            if terms.root is not None:
                used = conn.execute(
                    "SELECT 1 FROM used_roots WHERE root = ?", (terms.root,)
                ).fetchone()
                if used is not None:
                    raise refusal("commitment_reused")
                conn.execute("INSERT INTO used_roots (root) VALUES (?)", (terms.root,))
            now = _clock()
            expires_at = None if terms.ttl_us is None else now + terms.ttl_us
            conn.execute(
                "UPDATE accounts SET balance = ? WHERE public_key = ?",
                (balance - terms.amount, client),
            )
            conn.execute(
                "INSERT INTO issuer_channels (channel_id, client, vendor, amount, terms, state, "
                "expires_at, dispute_window) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
                (
                    terms.channel_id,
                    client,
                    vendor,
                    terms.amount,
                    blob,
                    expires_at,
                    dispute_window_us,
                ),
            )
            conn.execute(
                "INSERT INTO open_keys (open_key, channel_id) VALUES (?, ?)",
                (terms.open_key, terms.channel_id),
            )
            opened = _record(conn, terms.channel_id, ReceiptKind.open, 0, now)
            account = Account(public_key_der_b64=client, balance=balance - terms.amount)
            return Opened(
                terms=msgspec.structs.replace(terms, expires_at=expires_at),
                account=account,
                receipt=opened,
            )

        return await self._writing(op)

    async def get_channel(self, channel_id: str) -> IssuerChannel | None:
        def read(conn: sqlite3.Connection) -> IssuerChannel | bool | None:
            row = _row(conn, channel_id)
            if row is None:
                return None
            if _is_due(row, _clock()):
                return True  # something to apply first: the writer's job
            return _channel(conn, channel_id, row)

        def advance(conn: sqlite3.Connection) -> IssuerChannel:
            _apply_due(conn, channel_id, _clock())
            return _read(conn, channel_id)

        found = await self._reading(read)
        if found is True:
            return await self._writing(advance)
        assert found is not False
        return found

    async def settle(self, channel_id: str, closure: Closure, *, final: bool = True) -> Settled:
        check_amount(closure.owed, allow_zero=True)
        blob = closure_to_blob(closure)
        owed = closure.owed

        def op(conn: sqlite3.Connection) -> Settled:
            now = _clock()
            row = _apply_due(conn, channel_id, now)
            if row is None:
                raise refusal("channel_not_found")
            if final and row.state == "closed":
                # A retry of the settlement that closed it (one settled before receipts
                # existed has none to answer with: refused like any other).
                if row.settle_seq is None or row.proof_digest != closure.proof_digest:
                    raise refusal("already_closed")
                stored = _channel(conn, channel_id, row).closure
                assert stored is not None
                return Settled(
                    client_balance=stored.client_balance,
                    vendor_balance=stored.vendor_balance,
                    receipt=_receipt_at(conn, channel_id, row.settle_seq),
                    closure=stored,
                    replayed=True,
                )
            if not final and row.state != "open":
                raise refusal("channel_closed", row.state)
            if owed > row.amount:
                raise refusal("exceeds_amount")
            if final:
                _close_row(
                    conn,
                    channel_id,
                    row,
                    max(owed, row.vendor_credited),
                    now,
                    digest=closure.proof_digest,
                    blob=blob,
                )
                settled = _record(conn, channel_id, ReceiptKind.settlement, owed, now)
                conn.execute(
                    "UPDATE issuer_channels SET settle_seq = ? WHERE channel_id = ?",
                    (settled.seq, channel_id),
                )
                stored = _read(conn, channel_id).closure
                assert stored is not None
                return Settled(
                    client_balance=stored.client_balance,
                    vendor_balance=stored.vendor_balance,
                    receipt=settled,
                    closure=stored,
                )
            replayed = owed <= row.vendor_credited
            if replayed:  # nothing new is owed: the latest receipt
                latest = _receipt_at(conn, channel_id, row.receipts)
            else:
                _add(conn, row.vendor, owed - row.vendor_credited)
                conn.execute(
                    "UPDATE issuer_channels SET vendor_credited = ? WHERE channel_id = ?",
                    (owed, channel_id),
                )
                latest = _record(conn, channel_id, ReceiptKind.checkpoint, owed, now)
            client_balance, vendor_balance = _balance(conn, row.client), _balance(conn, row.vendor)
            assert client_balance is not None and vendor_balance is not None
            return Settled(
                client_balance=client_balance,
                vendor_balance=vendor_balance,
                receipt=latest,
                replayed=replayed,
            )

        return await self._writing(op)

    async def client_close(self, channel_id: str) -> IssuerChannel:
        def op(conn: sqlite3.Connection) -> IssuerChannel:
            now = _clock()
            row = _apply_due(conn, channel_id, now)
            if row is None:
                raise refusal("channel_not_found")
            if row.state == "open":
                conn.execute(
                    "UPDATE issuer_channels SET state = 'closing', dispute_deadline = ? "
                    "WHERE channel_id = ?",
                    (now + row.dispute_window, channel_id),
                )
            return _read(conn, channel_id)

        return await self._writing(op)

    async def top_up(
        self, channel_id: str, amount: int, nonce: bytes, digest: bytes
    ) -> ToppedUp:
        check_amount(amount, allow_zero=False)

        def op(conn: sqlite3.Connection) -> ToppedUp:
            now = _clock()
            row = _apply_due(conn, channel_id, now)
            if row is None:
                raise refusal("channel_not_found")
            earlier = conn.execute(
                "SELECT digest, seq FROM issuer_top_ups WHERE channel_id = ? AND nonce = ?",
                (channel_id, nonce),
            ).fetchone()
            if earlier is not None:
                if earlier[0] != digest:
                    raise refusal("duplicate_mismatch")
                return ToppedUp(
                    channel=_channel(conn, channel_id, row),
                    receipt=_receipt_at(conn, channel_id, earlier[1]),
                    replayed=True,
                )
            if row.state != "open":
                raise refusal("channel_closed", row.state)
            balance = _balance(conn, row.client)
            assert balance is not None
            if balance < amount:
                raise refusal("insufficient_balance")
            if row.amount + amount > MAX_INT:
                raise refusal("amount_overflow")
            _add(conn, row.client, -amount)
            conn.execute(
                "UPDATE issuer_channels SET amount = amount + ? WHERE channel_id = ?",
                (amount, channel_id),
            )
            topped = _record(conn, channel_id, ReceiptKind.top_up, 0, now)
            conn.execute(
                "INSERT INTO issuer_top_ups (channel_id, nonce, digest, seq) VALUES (?, ?, ?, ?)",
                (channel_id, nonce, digest, topped.seq),
            )
            return ToppedUp(channel=_read(conn, channel_id), receipt=topped)

        return await self._writing(op)

    async def closing_channels(self, vendor_public_key_der_b64: str) -> Closing:
        def op(conn: sqlite3.Connection) -> Closing:
            now = _clock()
            while _sweep(conn, now, FINALIZE_BATCH, "AND vendor = ?", vendor_public_key_der_b64):
                pass
            rows = conn.execute(
                "SELECT terms, amount, expires_at, dispute_deadline FROM issuer_channels "
                "WHERE vendor = ? AND state = 'closing' ORDER BY dispute_deadline",
                (vendor_public_key_der_b64,),
            ).fetchall()
            channels = [
                ClosingChannel(
                    terms=msgspec.structs.replace(
                        terms_from_blob(blob), amount=amount, expires_at=expires_at
                    ),
                    dispute_deadline=deadline,
                )
                for blob, amount, expires_at, deadline in rows
            ]
            return Closing(now=now, channels=channels)

        return await self._writing(op)

    async def finalize_due(self, limit: int) -> int:
        return await self._writing(lambda conn: _sweep(conn, _clock(), limit))

    async def overdue(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found = conn.execute(
                "SELECT COUNT(*) FROM issuer_channels WHERE state = 'closing' "
                "AND dispute_deadline <= ?",
                (_clock(),),
            ).fetchone()
            return int(found[0])

        return await self._reading(op)

    async def ledger(self) -> Ledger:
        def op(conn: sqlite3.Connection) -> Ledger:
            supply = conn.execute("SELECT value FROM ledger_meta WHERE name = 'supply'").fetchone()
            channels = []
            for channel_id, *found in conn.execute(_ALL_CHANNELS_SQL).fetchall():
                row = _Row(*found)
                channels.append(ledger_channel(_channel(conn, channel_id, row), row.settle_seq))
            return Ledger(
                accounts=dict(conn.execute("SELECT public_key, balance FROM accounts")),
                supply=0 if supply is None else int(supply[0]),
                channels=channels,
                roots=[root for (root,) in conn.execute("SELECT root FROM used_roots")],
            )

        return await self._reading(op)


def _row_state(row: Sequence[Any] | None) -> PaymentState | None:
    if row is None or row[0] is None:
        return None
    return PaymentState(index=row[0], owed=row[1], proof=row[2], created_at=row[3])


_STATE_SQL = (
    "SELECT idx, owed, proof, created_at, closing FROM vendor_channels WHERE channel_id = ?"
)


def _read_nodes(
    conn: sqlite3.Connection, channel_id: str, node_keys: Sequence[int]
) -> list[bytes | None]:
    found: dict[int, bytes] = {}
    for start in range(0, len(node_keys), 500):  # stay under SQLite's bound-parameter limit
        chunk = list(node_keys[start : start + 500])
        marks = ",".join("?" * len(chunk))
        for node, value in conn.execute(
            f"SELECT node, value FROM vendor_nodes WHERE channel_id = ? AND node IN ({marks})",
            (channel_id, *chunk),
        ):
            found[node] = value
    return [found.get(key) for key in node_keys]


def _load(conn: sqlite3.Connection, channel_id: str, node_keys: Sequence[int]) -> VendorView:
    row = conn.execute(_STATE_SQL, (channel_id,)).fetchone()
    nodes = _read_nodes(conn, channel_id, node_keys) if node_keys else []
    return VendorView(state=_row_state(row), nodes=nodes, closing=row is not None and bool(row[4]))


def _compare_and_set(
    conn: sqlite3.Connection,
    channel_id: str,
    new: PaymentState,
    nodes: Mapping[int, bytes],
    expected: int | None = None,
) -> CasResult:
    """The vendor's compare-and-set, shared by payments, batches and the paywall's
    charge: store `new` unless closing or a state >= it is stored (or, with
    `expected`, unless the stored index is not exactly that: 0 for none)."""
    row = conn.execute(_STATE_SQL, (channel_id,)).fetchone()
    if row is not None and row[4]:
        return CasResult(outcome=CasOutcome.closing, current=_row_state(row))
    current = _row_state(row)
    stored = current.index if current is not None else 0
    if stored >= new.index or (expected is not None and stored != expected):
        return CasResult(outcome=CasOutcome.lost, current=current)
    conn.execute(
        "INSERT INTO vendor_channels (channel_id, idx, owed, proof, created_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET "
        "idx = excluded.idx, owed = excluded.owed, proof = excluded.proof, "
        "created_at = excluded.created_at",
        (channel_id, new.index, new.owed, new.proof, new.created_at),
    )
    if nodes:
        conn.executemany(
            "INSERT OR REPLACE INTO vendor_nodes (channel_id, node, value) VALUES (?, ?, ?)",
            [(channel_id, key, value) for key, value in nodes.items()],
        )
    return CasResult(outcome=CasOutcome.stored)


def _credit(conn: sqlite3.Connection, channel_id: str) -> tuple[int | None, int]:
    """(owed by the stored payment or None without one, consumed)."""
    row = conn.execute(
        "SELECT owed FROM vendor_channels WHERE channel_id = ?", (channel_id,)
    ).fetchone()
    spent = conn.execute(
        "SELECT consumed FROM paywall_credit WHERE channel_id = ?", (channel_id,)
    ).fetchone()
    return (None if row is None else row[0]), (0 if spent is None else spent[0])


_SEEN_SQL = (
    "SELECT 1 FROM paywall_requests WHERE channel_id = ? AND request_id = ? AND expires >= ?"
)


def _check_state(new: PaymentState) -> None:
    check_amount(new.index, allow_zero=True)
    check_amount(new.owed, allow_zero=True)


class SqliteVendorStore(_SqliteBase):
    async def load(self, channel_id: str, node_keys: Sequence[int] = ()) -> VendorView:
        return await self._reading(lambda conn: _load(conn, channel_id, node_keys))

    async def load_many(
        self, requests: Sequence[tuple[str, Sequence[int]]]
    ) -> list[VendorView | StoreUnavailable]:
        """One read job (one snapshot) for all channels."""
        try:
            views = await self._reading(
                lambda conn: [_load(conn, channel_id, keys) for channel_id, keys in requests]
            )
        except StoreUnavailable as exc:
            return [exc] * len(requests)
        return list(views)

    async def compare_and_set(
        self,
        channel_id: str,
        new: PaymentState,
        nodes: Mapping[int, bytes],
        expected: int | None = None,
    ) -> CasResult:
        _check_state(new)
        if expected is not None:
            check_amount(expected, allow_zero=True)
        return await self._writing(
            lambda conn: _compare_and_set(conn, channel_id, new, nodes, expected)
        )

    async def compare_and_set_many(
        self, writes: Sequence[tuple[str, int, PaymentState, Mapping[int, bytes]]]
    ) -> list[CasResult | StoreUnavailable]:
        """One write job: inside the writer's next transaction, with every other
        request's writes queued meanwhile (one commit, one fsync for all)."""
        for _, expected, new, _ in writes:
            check_amount(expected, allow_zero=True)
            _check_state(new)
        try:
            results = await self._writing(
                lambda conn: [
                    _compare_and_set(conn, channel_id, new, nodes, expected)
                    for channel_id, expected, new, nodes in writes
                ]
            )
        except StoreUnavailable as exc:
            return [exc] * len(writes)
        return list(results)

    async def begin_close(self, channel_id: str) -> PaymentState | None:
        def op(conn: sqlite3.Connection) -> PaymentState | None:
            state = _row_state(conn.execute(_STATE_SQL, (channel_id,)).fetchone())
            if state is not None:
                conn.execute(
                    "UPDATE vendor_channels SET closing = 1 WHERE channel_id = ?", (channel_id,)
                )
            return state

        return await self._writing(op)

    async def nodes(self, channel_id: str, node_keys: Sequence[int]) -> list[bytes | None]:
        return await self._reading(lambda conn: _read_nodes(conn, channel_id, node_keys))

    async def record_settlement(self, channel_id: str, closure: Closure) -> None:
        blob = settlement_to_blob(closure)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO vendor_channels (channel_id, closing, settlement) VALUES (?, 1, ?) "
                "ON CONFLICT (channel_id) DO UPDATE SET closing = 1, "
                "settlement = excluded.settlement",
                (channel_id, blob),
            )

        await self._writing(op)

    async def remember_terms(self, channel_id: str, terms: ChannelTerms) -> None:
        blob = terms_to_blob(terms)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO vendor_terms (channel_id, amount, terms) VALUES (?, ?, ?) "
                "ON CONFLICT (channel_id) DO UPDATE SET amount = excluded.amount, "
                "terms = excluded.terms WHERE excluded.amount > vendor_terms.amount",
                (channel_id, terms.amount, blob),
            )

        await self._writing(op)

    async def audit_records(self) -> list[VendorChannel]:
        def op(conn: sqlite3.Connection) -> list[VendorChannel]:
            rows = conn.execute(
                "SELECT c.channel_id, idx, owed, proof, created_at, closing, settlement, "
                "t.terms FROM vendor_channels c LEFT JOIN vendor_terms t USING (channel_id)"
            ).fetchall()
            return [
                VendorChannel(
                    channel_id=channel_id,
                    state=_row_state(row[:4]),
                    closing=bool(row[4]),
                    settlement=None if row[5] is None else settlement_from_blob(row[5]),
                    terms=None if row[6] is None else terms_from_blob(row[6]),
                )
                for channel_id, *row in rows
            ]

        return await self._reading(op)

    async def settlement(self, channel_id: str) -> Closure | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT settlement FROM vendor_channels WHERE channel_id = ?", (channel_id,)
            ).fetchone()
            return None if row is None else row[0]

        blob = await self._reading(op)
        return None if blob is None else settlement_from_blob(blob)

    async def charge(
        self,
        channel_id: str,
        price: int,
        *,
        new: PaymentState | None = None,
        nodes: Mapping[int, bytes] | None = None,
        expected: int | None = None,
        request_id: str | None = None,
        minimum: int = 0,
        remember: float = REQUEST_MEMORY,
    ) -> Charge:
        check_amount(price, allow_zero=True)
        check_amount(minimum, allow_zero=True)
        if new is not None:
            _check_state(new)
        if expected is not None:
            check_amount(expected, allow_zero=True)
        need = max(price, minimum)

        def op(conn: sqlite3.Connection) -> Charge:
            now = time.time()  # one file, one clock: this machine's
            if request_id is not None:
                # Forget expired ids (the index makes this one probe when none expired).
                conn.execute("DELETE FROM paywall_requests WHERE expires < ?", (now,))
                if conn.execute(_SEEN_SQL, (channel_id, request_id, now)).fetchone():
                    owed, consumed = _credit(conn, channel_id)
                    return Charge(outcome=ChargeOutcome.repeated, owed=owed or 0, consumed=consumed)
            if new is not None:
                stored = _compare_and_set(conn, channel_id, new, nodes or {}, expected)
                if stored.outcome is not CasOutcome.stored:
                    closing = stored.outcome is CasOutcome.closing
                    current = stored.current
                    return Charge(
                        outcome=ChargeOutcome.closing if closing else ChargeOutcome.lost,
                        owed=0 if current is None else current.owed,
                        current=current,
                    )
            owed, consumed = _credit(conn, channel_id)
            if owed is None or owed - consumed < need:
                return Charge(outcome=ChargeOutcome.insufficient, owed=owed or 0, consumed=consumed)
            conn.execute(
                "INSERT INTO paywall_credit (channel_id, consumed) VALUES (?, ?) "
                "ON CONFLICT (channel_id) DO UPDATE SET consumed = consumed + excluded.consumed",
                (channel_id, price),
            )
            if request_id is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO paywall_requests (channel_id, request_id, expires) "
                    "VALUES (?, ?, ?)",
                    (channel_id, request_id, now + remember),
                )
            return Charge(outcome=ChargeOutcome.charged, owed=owed, consumed=consumed + price)

        return await self._writing(op)

    async def refund(self, channel_id: str, amount: int, request_id: str | None = None) -> Charge:
        check_amount(amount, allow_zero=True)

        def op(conn: sqlite3.Connection) -> Charge:
            conn.execute(
                "UPDATE paywall_credit SET consumed = MAX(0, consumed - ?) WHERE channel_id = ?",
                (amount, channel_id),
            )
            if request_id is not None:
                conn.execute(
                    "DELETE FROM paywall_requests WHERE channel_id = ? AND request_id = ?",
                    (channel_id, request_id),
                )
            owed, consumed = _credit(conn, channel_id)
            return Charge(outcome=ChargeOutcome.charged, owed=owed or 0, consumed=consumed)

        return await self._writing(op)

    async def credit(self, channel_id: str) -> Charge:
        def op(conn: sqlite3.Connection) -> Charge:
            owed, consumed = _credit(conn, channel_id)
            return Charge(outcome=ChargeOutcome.charged, owed=owed or 0, consumed=consumed)

        return await self._reading(op)


def default_path() -> str:
    return os.path.join("nanomoni-data", "nanomoni.sqlite3")
