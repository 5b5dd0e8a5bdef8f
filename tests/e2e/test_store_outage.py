"""Store outages end to end: real `nanomoni issuer` and `nanomoni vendor` processes,
the vendor on a store of its own with --store-timeout 1 (from the environment).

* Redis stalled (SIGSTOP): a payment answers 503 `store_unavailable` with
  Retry-After within the deadline, /health says 503 "degraded"; resumed, the
  payment goes through and /health is healthy again, with no restart.
* Redis stopped: 503 on the hot path and on framework routes, never a 500, one
  log line and no traceback in the vendor's stderr; started again on its port,
  the vendor reconnects by itself.
* SQLite whose write lock another process holds: 503, and the refused payment
  was provably not taken (the same payment is new afterwards: 201).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_servers import RedisServer, redis_server
from sqlite_locks import held_write_lock

from nanomoni.launch import start_issuer, start_vendor

STORE_TIMEOUT = 1.0
SLACK = 0.8  # HTTP round trip and scheduling on a busy 2-core CI machine
INITIAL_BALANCE = 1_000_000
VENDOR_ENV = {"NANOMONI_VENDOR_STORE_TIMEOUT": str(STORE_TIMEOUT)}


@contextmanager
def stderr_into(path: Path) -> Iterator[None]:
    """Processes started inside inherit `path` as their stderr (file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def services(root: Path, store: str | None, stack_factory: Any) -> Iterator[tuple[Any, Path]]:
    """An issuer (SQLite) and a vendor on `store`; yields the stack and the vendor's stderr."""
    stderr = root / "vendor.stderr"
    with start_issuer(data_dir=root / "issuer", initial_balance=INITIAL_BALANCE) as issuer:
        with stderr_into(stderr):
            vendor = start_vendor(
                data_dir=root / "vendor", issuer_url=issuer.url, store=store, env=VENDOR_ENV
            )
        with vendor:
            stack = stack_factory(issuer, vendor)
            try:
                yield stack, stderr
            finally:
                stack.close()
                assert vendor.stop() == 0
                assert issuer.stop() == 0


def assert_store_unavailable(reply: httpx.Response, took: float) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.json()["code"] == "store_unavailable", reply.text
    assert reply.headers["retry-after"] == "1"
    assert took < STORE_TIMEOUT + SLACK, took


def wait_for_health(vendor_url: str, status: int) -> dict[str, Any]:
    """/health is re-checked at most once a second: poll until it answers `status`."""
    deadline = time.monotonic() + 5
    while True:
        reply = httpx.get(vendor_url + "/health", timeout=5)
        if reply.status_code == status:
            body: dict[str, Any] = reply.json()
            assert body["service"] == "vendor" and body["version"]
            return body
        assert time.monotonic() < deadline, f"/health stayed {reply.status_code}: {reply.text}"
        time.sleep(0.1)


def timed_pay(stack: Any, channel: Any, index: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = stack.pay(channel, index)
    return reply, time.monotonic() - started


@pytest.fixture(scope="module")
def on_redis(
    tmp_path_factory: pytest.TempPathFactory, stack_factory: Any
) -> Iterator[tuple[Any, RedisServer, Path]]:
    root = tmp_path_factory.mktemp("outage-redis")
    with redis_server(aof=True) as redis, services(root, redis.url, stack_factory) as (stack, err):
        yield stack, redis, err


def test_a_stalled_redis_answers_503_in_time_and_recovers(
    on_redis: tuple[Any, RedisServer, Path],
) -> None:
    stack, redis, _ = on_redis
    channel = stack.open("payword", amount=640, unit=10, max_index=64)
    assert stack.pay(channel, 1).status_code == 201
    wait_for_health(stack.vendor_url, 200)
    with redis.paused():
        reply, took = timed_pay(stack, channel, 2)
        assert_store_unavailable(reply, took)
        degraded = wait_for_health(stack.vendor_url, 503)
        assert degraded["status"] == "degraded" and degraded["code"] == "store_unavailable"
    # The stalled write may have landed once Redis resumed: then this is its replay.
    assert stack.pay(channel, 2).status_code in (200, 201)
    assert stack.pay(channel, 3).status_code == 201
    assert wait_for_health(stack.vendor_url, 200)["status"] == "healthy"
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 30


def test_a_stopped_redis_is_a_503_not_a_500_and_its_restart_is_picked_up(
    on_redis: tuple[Any, RedisServer, Path],
) -> None:
    stack, redis, stderr = on_redis
    channel = stack.open("signature", amount=1000)
    assert stack.pay(channel, 10).status_code == 201
    redis.stop()
    try:
        reply, took = timed_pay(stack, channel, 20)  # the hot path
        assert_store_unavailable(reply, took)
        started = time.monotonic()
        reply = stack.close_channel(channel)  # a framework route
        assert_store_unavailable(reply, time.monotonic() - started)
        assert wait_for_health(stack.vendor_url, 503)["status"] == "degraded"
    finally:
        redis.start()  # same port; the append-only file kept the acknowledged payment
    # Refused connections sent nothing: the payment is new, not a replay.
    assert stack.pay(channel, 20).status_code == 201
    assert wait_for_health(stack.vendor_url, 200)["status"] == "healthy"
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 20
    metrics = httpx.get(stack.vendor_url + "/metrics").text
    assert "nanomoni_store_unavailable_total" in metrics
    log = stderr.read_text()
    assert "store unavailable on POST /api/v1/vendor/channels/" in log, log
    assert "Traceback" not in log and "internal error" not in log, log


def test_a_write_locked_sqlite_answers_503_and_took_nothing(
    tmp_path: Path, stack_factory: Any
) -> None:
    with services(tmp_path, None, stack_factory) as (stack, stderr):
        channel = stack.open("paytree", amount=640, unit=10, max_index=64)
        assert stack.pay(channel, 1).status_code == 201
        with held_write_lock(tmp_path / "vendor" / "vendor.sqlite3"):
            reply, took = timed_pay(stack, channel, 2)
            assert_store_unavailable(reply, took)
            assert wait_for_health(stack.vendor_url, 503)["status"] == "degraded"
        # The refused write was abandoned before it started: the same payment is new.
        assert stack.pay(channel, 2).status_code == 201
        assert wait_for_health(stack.vendor_url, 200)["status"] == "healthy"
        assert stack.close_channel(channel).status_code == 204
        assert stack.read(channel)["balance"] == 20
        assert "Traceback" not in stderr.read_text()
