"""Every contract test runs against each backend: SQLite on a temp file, a
standalone redis-server and a 3-master Redis Cluster (both started here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
import uvloop
from redis_servers import RedisCluster, RedisServer, cluster_redis, standalone_redis

from nanomoni.store import IssuerStore, VendorStore, open_issuer_store, open_vendor_store

BACKENDS = ["sqlite", "redis", "cluster"]
__all__ = ["cluster_redis", "standalone_redis"]  # session fixtures shared by the contract tests


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The services run on uvloop, so the contract does too (unit tests use asyncio's loop)."""
    return {"uvloop": uvloop.new_event_loop}


class Backend:
    """Hands out store URLs of one backend, each starting from an empty store."""

    def __init__(self, name: str, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.name = name
        self._tmp = tmp
        self._request = request
        self._count = 0

    def fresh_url(self) -> str:
        """A URL of an empty store (a new SQLite file; the Redis data flushed)."""
        self._count += 1
        if self.name == "sqlite":
            return f"sqlite:{self._tmp / f'store{self._count}.sqlite3'}"
        server: RedisServer | RedisCluster = self._request.getfixturevalue(
            "standalone_redis" if self.name == "redis" else "cluster_redis"
        )
        server.flush()
        return server.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path, request)


@pytest.fixture
def store_url(backend: Backend) -> str:
    return backend.fresh_url()


@pytest.fixture
async def issuer(store_url: str) -> AsyncIterator[IssuerStore]:
    store = await open_issuer_store(store_url)
    yield store
    await store.close()


@pytest.fixture
async def vendor(store_url: str) -> AsyncIterator[VendorStore]:
    store = await open_vendor_store(store_url)
    yield store
    await store.close()
