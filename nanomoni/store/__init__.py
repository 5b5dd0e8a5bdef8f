"""Storage: one small interface per side, adapters selected by a --store URL.

    store = await open_issuer_store("sqlite:nanomoni-data/issuer.sqlite3")
    store = await open_vendor_store("redis://127.0.0.1:6379/0")
    store = await open_vendor_store("redis+cluster://127.0.0.1:7000")
    (redis://:PASSWORD@HOST:PORT/DB and redis://USER:PASSWORD@... send AUTH first.)

The factories are coroutines: they connect (and for a cluster read its slot
map) before returning, so a bad URL or an unreachable server fails at start-up.
Call them inside the event loop that will use the store; `await store.close()`
when done.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from nanomoni.store.base import IssuerStore, VendorStore
from nanomoni.store.redis import RedisIssuerStore, RedisVendorStore
from nanomoni.store.resp import Client, ClusterClient, RedisClient, RedisReplyError
from nanomoni.store.sqlite import SqliteIssuerStore, SqliteVendorStore, default_path

__all__ = ["IssuerStore", "VendorStore", "open_issuer_store", "open_vendor_store"]

log = logging.getLogger(__name__)


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
                config.get(b"appendfsync", b"?").decode(), url,
            )  # fmt: skip


async def _redis_client(url: str) -> Client:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    auth = {"username": parts.username or "", "password": parts.password or ""}
    if parts.scheme == "redis+cluster":
        cluster = ClusterClient(host, port, **auth)
        await cluster.refresh_slots()
        await _warn_unless_durable(cluster, url)
        return cluster
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"bad Redis database number in store URL {url!r}")
    client = RedisClient(host, port, int(db_text), **auth)
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


async def open_issuer_store(url: str) -> IssuerStore:
    if _scheme(url) == "sqlite":
        return await asyncio.to_thread(SqliteIssuerStore, _sqlite_path(url))
    return RedisIssuerStore(await _redis_client(url))


async def open_vendor_store(url: str) -> VendorStore:
    if _scheme(url) == "sqlite":
        return await asyncio.to_thread(SqliteVendorStore, _sqlite_path(url))
    return RedisVendorStore(await _redis_client(url))
