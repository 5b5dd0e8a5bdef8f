"""Storage: one small interface per side, adapters selected by a --store URL.

    store = await open_issuer_store("sqlite:nanomoni-data/issuer.sqlite3")
    store = await open_vendor_store("redis://127.0.0.1:6379/0")
    store = await open_vendor_store("redis+cluster://127.0.0.1:7000")
    (redis://:PASSWORD@HOST:PORT/DB and redis://USER:PASSWORD@... send AUTH first.)

The factories are coroutines: they connect (and for a cluster read its slot
map) before returning, so a bad URL or an unreachable server fails at start-up
(StoreUnavailable). Call them inside the event loop that will use the store;
`await store.close()` when done.

Every call on a store has a deadline: `timeout` seconds (the services'
--store-timeout; default: `set_default_timeout`, else DEFAULT_TIMEOUT). A call
that misses it or finds the store down raises StoreUnavailable (503). The
services' /health pings every store the process has open (`ping_open_stores`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from nanomoni.store.base import DEFAULT_TIMEOUT, IssuerStore, StoreUnavailable, VendorStore
from nanomoni.store.redis import RedisIssuerStore, RedisVendorStore
from nanomoni.store.resp import Client, ClusterClient, RedisClient, RedisReplyError
from nanomoni.store.sqlite import SqliteIssuerStore, SqliteVendorStore, default_path

__all__ = [
    "DEFAULT_TIMEOUT",
    "IssuerStore",
    "StoreUnavailable",
    "VendorStore",
    "describe_failure",
    "masked",
    "open_issuer_store",
    "open_vendor_store",
    "ping_open_stores",
    "set_default_timeout",
    "store_url",
]

log = logging.getLogger(__name__)

S = TypeVar("S", IssuerStore, VendorStore)

_default_timeout = DEFAULT_TIMEOUT
_open_stores: weakref.WeakSet[IssuerStore | VendorStore] = weakref.WeakSet()


def set_default_timeout(seconds: float) -> None:
    """The deadline of stores opened without an explicit `timeout` in this process."""
    global _default_timeout
    if not seconds > 0:
        raise ValueError(f"the store timeout must be positive, got {seconds}")
    _default_timeout = seconds


def _opened(store: S) -> S:
    _open_stores.add(store)
    return store


async def ping_open_stores(timeout: float) -> None:
    """Raise StoreUnavailable unless every store this process has open answers within
    `timeout` seconds (closed stores have nothing to check)."""
    stores = list(_open_stores)
    if stores:
        await asyncio.gather(*(store.ping(timeout) for store in stores))


def store_url(given: str | None, default_file: Path) -> str:
    """The --store URL a service uses: SQLite in its data directory unless another is
    given (also for `sqlite:` with an empty path, which has no file of its own)."""
    if not given or given in ("sqlite:", "sqlite://"):
        return f"sqlite:{default_file}"
    return given


def masked(url: str) -> str:
    """The store URL with its password hidden: URLs in logs and messages never show it."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:***" if parts.username else ":***"
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def describe_failure(exc: BaseException) -> str:
    """One short line saying why a store could not be opened."""
    if isinstance(exc, StoreUnavailable):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


async def _warn_unless_durable(client: Client, url: str) -> None:
    """SPEC §7: an acknowledged payment must survive a crash. Redis guarantees that
    only with `appendonly yes` and `appendfsync always`; say so when it is not set."""
    nodes = client.masters() if isinstance(client, ClusterClient) else [client]
    for node in nodes:
        try:
            reply = await node.execute("CONFIG", "GET", "append*")
        except RedisReplyError:  # CONFIG may be disabled (managed Redis): cannot tell
            return
        config = dict(zip(reply[::2], reply[1::2], strict=True))
        if config.get(b"appendonly") != b"yes" or config.get(b"appendfsync") != b"always":
            log.warning(
                "Redis at %s:%s does not fsync every write (appendonly=%s, appendfsync=%s): "
                "acknowledged writes of %s can be lost if that server crashes",
                node.host, node.port, config.get(b"appendonly", b"?").decode(),
                config.get(b"appendfsync", b"?").decode(), masked(url),
            )  # fmt: skip


async def _redis_client(url: str, timeout: float) -> Client:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    auth = {"username": parts.username or "", "password": parts.password or ""}
    if parts.scheme == "redis+cluster":
        cluster = ClusterClient(host, port, **auth, timeout=timeout)
        await cluster.refresh_slots()
        await _warn_unless_durable(cluster, url)
        return cluster
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"bad Redis database number {db_text!r}")
    client = RedisClient(host, port, int(db_text), **auth, timeout=timeout)
    await client.execute("PING")
    await _warn_unless_durable(client, url)
    return client


def _sqlite_path(url: str) -> str:
    path = url.removeprefix("sqlite:")
    if path.startswith("//"):  # also accept sqlite:///abs/path and sqlite://rel/path
        path = path[2:]
    return path or default_path()


def _scheme(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme not in ("sqlite", "redis", "redis+cluster") or ":" not in url:
        raise ValueError(
            f"unsupported store URL {url!r}: use sqlite:PATH, redis://HOST:PORT/DB "
            "or redis+cluster://HOST:PORT"
        )
    return scheme


async def open_issuer_store(url: str, *, timeout: float | None = None) -> IssuerStore:
    seconds = _default_timeout if timeout is None else timeout
    if _scheme(url) == "sqlite":
        return _opened(await asyncio.to_thread(SqliteIssuerStore, _sqlite_path(url), seconds))
    return _opened(RedisIssuerStore(await _redis_client(url, seconds)))


async def open_vendor_store(url: str, *, timeout: float | None = None) -> VendorStore:
    seconds = _default_timeout if timeout is None else timeout
    if _scheme(url) == "sqlite":
        return _opened(await asyncio.to_thread(SqliteVendorStore, _sqlite_path(url), seconds))
    return _opened(RedisVendorStore(await _redis_client(url, seconds)))
