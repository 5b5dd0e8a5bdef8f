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
from urllib.parse import urlsplit

from nanomoni.store.base import IssuerStore, VendorStore
from nanomoni.store.redis import RedisIssuerStore, RedisVendorStore
from nanomoni.store.resp import Client, ClusterClient, RedisClient
from nanomoni.store.sqlite import SqliteIssuerStore, SqliteVendorStore, default_path

__all__ = ["IssuerStore", "VendorStore", "open_issuer_store", "open_vendor_store"]


async def _redis_client(url: str) -> Client:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    auth = {"username": parts.username or "", "password": parts.password or ""}
    if parts.scheme == "redis+cluster":
        cluster = ClusterClient(host, port, **auth)
        await cluster.refresh_slots()
        return cluster
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"bad Redis database number in store URL {url!r}")
    client = RedisClient(host, port, int(db_text), **auth)
    await client.execute("PING")
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
