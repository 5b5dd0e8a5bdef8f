"""How the services answer when the store fails, without a server process: 503
`store_unavailable` with Retry-After from the hot path and from framework routes,
one log line without traceback (at most one a second), /health asking the open
stores at most once a second, degraded while one does not answer; and the
--store-timeout flag."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import get
from litestar.testing import AsyncTestClient
from sqlite_locks import held_write_lock

from nanomoni import http
from nanomoni.cli import build_parser
from nanomoni.http import HotPath, build_app
from nanomoni.store import (
    DEFAULT_TIMEOUT,
    StoreUnavailable,
    open_vendor_store,
    set_default_timeout,
)
from nanomoni.store.sqlite import SqliteVendorStore

OUTAGE = StoreUnavailable("redis 127.0.0.1:6390: no reply for 2s")


async def _refuse(first: str, second: str, raw: bytes, client: str) -> tuple[int, bytes]:
    raise OUTAGE


async def test_hot_path_answers_503_with_retry_after_and_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    hot = HotPath(
        build_app(service="vendor", routes=[], on_startup=[], on_shutdown=[], max_body=100),
        prefix="/api/v1/vendor/channels/",
        suffix="/payments",
        handler=_refuse,
        max_body=100,
    )
    scope = {"type": "http", "method": "POST", "path": "/api/v1/vendor/channels/payword/c/payments"}
    with caplog.at_level(logging.WARNING, logger="nanomoni"):
        await hot(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]
    body = msgspec.json.decode(sent[1]["body"])
    assert body == {"detail": OUTAGE.detail, "code": "store_unavailable"}
    [record] = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert "POST /api/v1/vendor/channels/payword/c/payments" in record.getMessage()
    assert "no reply for 2s" in record.getMessage() and record.exc_info is None


async def test_framework_routes_answer_503_with_retry_after() -> None:
    @get("/needs-the-store")
    async def needs_the_store() -> None:
        raise OUTAGE

    app = build_app(
        service="issuer", routes=[needs_the_store], on_startup=[], on_shutdown=[], max_body=100
    )
    async with AsyncTestClient(app) as client:
        reply = await client.get("/needs-the-store")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert reply.json()["code"] == "store_unavailable"


def test_outage_lines_are_one_a_second_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    outage_log = http._OutageLog(every=0.2)
    with caplog.at_level(logging.WARNING, logger="nanomoni"):
        for _ in range(50):
            outage_log("GET /x", OUTAGE)
        time.sleep(0.25)
        outage_log("GET /x", OUTAGE)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].endswith("(and 49 more since the last line)")


async def test_health_is_degraded_while_the_store_does_not_answer(tmp_path: Path) -> None:
    path = tmp_path / "vendor.sqlite3"
    store = await open_vendor_store(f"sqlite:{path}")
    assert isinstance(store, SqliteVendorStore)
    app = build_app(service="vendor", routes=[], on_startup=[], on_shutdown=[], max_body=100)
    async with AsyncTestClient(app) as client:
        healthy = await client.get("/health")
        assert healthy.status_code == 200 and healthy.json()["status"] == "healthy"
        # A flood of health checks asks the store at most once per second.
        reads = store._read.batches
        replies = await asyncio.gather(*(client.get("/health") for _ in range(50)))
        assert {reply.status_code for reply in replies} == {200}
        assert store._read.batches - reads <= 1
        with held_write_lock(path):
            await asyncio.sleep(http.HEALTH_CACHE_SECONDS)  # let the cached answer expire
            started = time.monotonic()
            degraded = await client.get("/health")
            assert time.monotonic() - started < http.HEALTH_PING_TIMEOUT + 0.5
            assert degraded.status_code == 503 and degraded.headers["retry-after"] == "1"
            assert degraded.json() == {
                "status": "degraded",
                "service": "vendor",
                "version": degraded.json()["version"],
                "detail": "the store does not answer",
                "code": "store_unavailable",
            }
        await asyncio.sleep(http.HEALTH_CACHE_SECONDS)
        assert (await client.get("/health")).status_code == 200
    await store.close()
    await store.ping(0.1)  # a closed store has nothing to check: no error


def test_store_timeout_flag_reads_the_environment_and_refuses_nonsense(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["issuer"]).store_timeout == 2.0
    monkeypatch.setenv("NANOMONI_VENDOR_STORE_TIMEOUT", "0.25")
    vendor = build_parser().parse_args(["vendor", "--issuer-url", "http://127.0.0.1:9"])
    assert vendor.store_timeout == 0.25
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["issuer", "--store-timeout", bad])
    assert "--store-timeout" in capsys.readouterr().err


async def test_stores_opened_without_a_timeout_take_the_process_default(tmp_path: Path) -> None:
    set_default_timeout(0.25)
    try:
        store = await open_vendor_store(f"sqlite:{tmp_path / 'v.sqlite3'}")
        explicit = await open_vendor_store(f"sqlite:{tmp_path / 'w.sqlite3'}", timeout=3)
    finally:
        set_default_timeout(DEFAULT_TIMEOUT)
    assert isinstance(store, SqliteVendorStore) and isinstance(explicit, SqliteVendorStore)
    assert (store._timeout, explicit._timeout) == (0.25, 3)
    with pytest.raises(ValueError):
        set_default_timeout(0)
    await store.close()
    await explicit.close()
