"""What the store benchmarks share: a Redis server and a three-node Redis Cluster per
module (started on free loopback ports, stopped after it), and a fresh store URL per
backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_servers import RedisCluster, RedisServer, redis_cluster, redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        yield started


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster() as started:
        yield started


@pytest.fixture
def store_url(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`store_url(backend)`: an empty store of that backend (sqlite, redis, cluster); a
    Redis one starts its server on first use."""

    def url_of(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:{tmp_path / 'bench.sqlite3'}"
        target: RedisServer | RedisCluster = request.getfixturevalue(
            "server" if backend == "redis" else "cluster"
        )
        target.flush()
        return target.url

    return url_of
