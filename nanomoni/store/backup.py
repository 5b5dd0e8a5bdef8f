"""Online backup and restore of a store (issue 15), safe against a live service.

* SQLite: SQLite's online backup API copies the database as of one moment, so a
  backup is consistent as a whole even while payments and settlements run.
* Redis (standalone or cluster): DUMP/RESTORE in groups, each group read by one
  script, so each is consistent in itself: the issuer's whole ledger (all its
  keys share the `{nm-issuer}` slot, so one script sees accounts, channels and
  indexes at one instant) and each vendor channel (its keys share the channel's
  hash tag). Different groups are read at different instants: a backup of a
  vendor store is a set of channels each as it was when its group was read, as
  is every backup of a Redis Cluster. That is what restoring needs: a vendor
  settles each channel on its own.

A backup file is self-describing (the first bytes tell SQLite from Redis); a
restore refuses a store that already holds data unless told to replace it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from nanomoni.store import _redis_client, _scheme, _sqlite_path
from nanomoni.store.redis import ISSUER_TAG, vendor_keys
from nanomoni.store.resp import Client, ClusterClient, RedisClient, Script

SQLITE_MAGIC = b"SQLite format 3\x00"
REDIS_MAGIC = b"NANOMONI-REDIS-BACKUP 1\n"
SCAN_COUNT = 1000

# Every key of the issuer's ledger, read at one instant (KEYS[1] routes it to its slot).
_DUMP_LEDGER = Script(
    """
local out = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  out[#out + 1] = {key, redis.call('PTTL', key), redis.call('DUMP', key)}
end
return out
"""
)
# The given keys (one hash tag), read at one instant; missing ones are left out.
_DUMP_GROUP = Script(
    """
local out = {}
for _, key in ipairs(KEYS) do
  local value = redis.call('DUMP', key)
  if value then out[#out + 1] = {key, redis.call('PTTL', key), value} end
end
return out
"""
)
# ARGV: ttl, value per key (a ttl of -1 is kept as no expiry).
_RESTORE_GROUP = Script(
    """
for n, key in ipairs(KEYS) do
  local ttl = tonumber(ARGV[2 * n - 1])
  redis.call('RESTORE', key, ttl < 0 and 0 or ttl, ARGV[2 * n], 'REPLACE')
end
return #KEYS
"""
)


class BackupError(Exception):
    """A backup or restore that cannot be done: the message says why, in one line."""


@dataclass(frozen=True)
class Summary:
    groups: int  # SQLite: 1 (the database)
    keys: int  # Redis keys, or SQLite rows
    seconds: float


class _Group(msgspec.Struct, array_like=True):
    keys: list[bytes]
    ttls: list[int]
    values: list[bytes]


class _RedisBackup(msgspec.Struct):
    taken_at: float
    groups: list[_Group]


# --- SQLite ----------------------------------------------------------------------------


def _rows(conn: sqlite3.Connection) -> int:
    tables = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not row[0].startswith("sqlite_")
    ]
    return sum(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in tables)


def _sqlite_copy(source: str, target: str) -> int:
    """Copy one database onto another with SQLite's online backup API; rows copied."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.execute("PRAGMA busy_timeout = 10000")
        src.backup(dst)
        return _rows(dst)


def _sqlite_backup(url: str, out: Path) -> Summary:
    started = time.monotonic()
    path = _sqlite_path(url)
    if not Path(path).is_file():
        raise BackupError(f"no SQLite database at {path}")
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    rows = _sqlite_copy(path, str(partial))
    partial.replace(out)  # a backup file is whole or absent
    return Summary(groups=1, keys=rows, seconds=time.monotonic() - started)


def _sqlite_restore(source: Path, url: str, force: bool) -> Summary:
    started = time.monotonic()
    path = Path(_sqlite_path(url))
    if path.exists() and path.stat().st_size:
        with sqlite3.connect(path) as conn:
            present = _rows(conn)
        if present and not force:
            raise BackupError(f"{path} already holds {present} rows: restore with --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _sqlite_copy(str(source), str(path))
    return Summary(groups=1, keys=rows, seconds=time.monotonic() - started)


# --- Redis -------------------------------------------------------------------------------


def _masters(client: Client) -> list[RedisClient]:
    return client.masters() if isinstance(client, ClusterClient) else [client]


def _tag(key: bytes) -> bytes | None:
    start = key.find(b"{")
    end = key.find(b"}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else None


async def _scan(node: RedisClient) -> list[bytes]:
    keys: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, batch = await node.execute("SCAN", cursor, "COUNT", SCAN_COUNT)
        keys += batch
        if cursor == b"0":
            return keys


def _group(reply: list[list[bytes | int]]) -> _Group:
    keys = [item[0] for item in reply]
    ttls = [int(item[1]) for item in reply]
    values = [item[2] for item in reply]
    return _Group(keys, ttls, values)  # type: ignore[arg-type]


async def _redis_backup(url: str, out: Path) -> Summary:
    started = time.monotonic()
    client = await _redis_client(url, timeout=30.0)
    try:
        ledger_key = f"{ISSUER_TAG}:accounts"
        groups = [_group(await client.evalsha(_DUMP_LEDGER, [ledger_key], [f"{ISSUER_TAG}:*"]))]
        tagged: dict[bytes, set[bytes]] = {}
        untagged: list[bytes] = []
        for node in _masters(client):
            for key in await _scan(node):
                tag = _tag(key)
                if tag == ISSUER_TAG.strip("{}").encode():
                    continue  # read with the ledger, at one instant
                if tag is None:
                    untagged.append(key)
                else:
                    tagged.setdefault(tag, set()).add(key)
        reads = [
            client.evalsha(
                _DUMP_GROUP, sorted(keys | {k.encode() for k in vendor_keys(tag.decode())}), []
            )
            for tag, keys in tagged.items()
        ]
        reads += [client.evalsha(_DUMP_GROUP, [key], []) for key in untagged]
        groups += [_group(reply) for reply in await asyncio.gather(*reads) if reply]
    finally:
        await client.close()
    backup = _RedisBackup(taken_at=time.time(), groups=[g for g in groups if g.keys])
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(REDIS_MAGIC + msgspec.msgpack.encode(backup))
    partial.replace(out)
    keys = sum(len(group.keys) for group in backup.groups)
    return Summary(groups=len(backup.groups), keys=keys, seconds=time.monotonic() - started)


async def _redis_restore(source: Path, url: str, force: bool) -> Summary:
    started = time.monotonic()
    data = source.read_bytes()
    try:
        backup = msgspec.msgpack.decode(data[len(REDIS_MAGIC) :], type=_RedisBackup)
    except msgspec.DecodeError as exc:
        raise BackupError(f"{source} is not a whole NanoMoni Redis backup: {exc}") from None
    client = await _redis_client(url, timeout=30.0)
    try:
        sizes = [await node.execute("DBSIZE") for node in _masters(client)]
        if sum(sizes) and not force:
            raise BackupError(f"the store already holds {sum(sizes)} keys: restore with --force")
        writes = []
        for group in backup.groups:
            args: list[bytes | int] = []
            for ttl, value in zip(group.ttls, group.values, strict=True):
                args += [ttl, value]
            writes.append(client.evalsha(_RESTORE_GROUP, group.keys, args))
        await asyncio.gather(*writes)
    finally:
        await client.close()
    keys = sum(len(group.keys) for group in backup.groups)
    return Summary(groups=len(backup.groups), keys=keys, seconds=time.monotonic() - started)


# --- the commands' entry points -----------------------------------------------------------


async def backup(url: str, out: Path) -> Summary:
    """Write a backup of the store at `url` to `out` (replaced atomically)."""
    if _scheme(url) == "sqlite":
        return await asyncio.to_thread(_sqlite_backup, url, out)
    return await _redis_backup(url, out)


async def restore(source: Path, url: str, *, force: bool = False) -> Summary:
    """Load a backup into the store at `url`; a store holding data needs `force`."""
    try:
        with source.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror}") from None
    kind = _scheme(url)
    if head.startswith(REDIS_MAGIC[: len(head)]) and len(head) == len(SQLITE_MAGIC):
        if kind == "sqlite":
            raise BackupError(f"{source} is a Redis backup: restore it into a Redis store")
        return await _redis_restore(source, url, force)
    if head == SQLITE_MAGIC:
        if kind != "sqlite":
            raise BackupError(f"{source} is a SQLite backup: restore it into a SQLite store")
        return await asyncio.to_thread(_sqlite_restore, source, url, force)
    raise BackupError(f"{source} is not a NanoMoni backup")
