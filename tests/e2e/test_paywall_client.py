"""The paying client (SPEC §11) against a priced API under uvicorn: PaymentAuth for
sync and async httpx and PaymentMiddleware for aiohttp pay, prepay, answer
payment-required stream events, renew channels, settle on exit; an outage of the
paywall's store is a 503 and opens no channel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import pytest
from e2e.paywall_support import PaidApi, credit, paid_api, receipt_of
from redis_servers import RedisServer, redis_server

from nanomoni.client import PaymentAuth, PaymentMiddleware
from nanomoni.client.purse import BudgetExhausted
from nanomoni.launch import ServiceProcess, start_issuer

INITIAL_BALANCE = 1_000_000


@dataclass
class World:
    issuer: ServiceProcess
    api: PaidApi
    redis: RedisServer

    def issuer_channel(self, mode: str, channel_id: str) -> dict[str, Any]:
        url = f"{self.issuer.url}/api/v1/issuer/channels/{mode}/{channel_id}"
        return httpx.get(url).json()  # type: ignore[no-any-return]

    def served(self) -> dict[str, int]:
        return httpx.get(f"{self.api.url}/served").json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["litestar", "fastapi"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"paying-{request.param}")
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        base = redis.url.rsplit("/", 1)[0]
        issuer = stack.enter_context(
            start_issuer(
                data_dir=root / "issuer", store=f"{base}/0", initial_balance=INITIAL_BALANCE
            )
        )
        api = stack.enter_context(
            paid_api(
                request.param,
                issuer_url=issuer.url,
                store=f"{base}/1",
                key_file=root / "vendor-key.pem",
                env={"PAID_PAUSE": "5"},
            )
        )
        yield World(issuer, api, redis)


def _settled_equals_best_payment(world: World, auth: PaymentAuth | PaymentMiddleware) -> None:
    """After close: every channel settled at its best payment, consumed ≤ owed."""
    for channel in auth.purse.closed:
        info = world.issuer_channel(channel.mode.value, channel.channel_id)
        owed, consumed = credit(world.api.store, channel.channel_id)
        assert info["is_closed"] and info["balance"] == owed == channel.owed
        assert consumed <= owed


def test_sync_httpx_pays_prepays_and_settles(world: World) -> None:
    before = world.served().get("quotes", 0)
    auth = PaymentAuth(world.issuer.url, budget=3 * 100, prepay=4)
    with auth, httpx.Client(auth=auth, timeout=30) as http:
        receipts = []
        for n in range(10):
            reply = http.get(f"{world.api.url}/quotes/S{n}")
            assert reply.status_code == 200, reply.text
            receipts.append(receipt_of(reply))
        free = http.get(f"{world.api.url}/free")  # unpriced: the header is ignored there
        assert free.status_code == 200 and "payment-receipt" not in free.headers
    assert world.served()["quotes"] == before + 10
    assert [r["consumed"] for r in receipts] == [3 * n for n in range(1, 11)]
    # Prepaid 4 requests at a time: owed moves in steps of 12 (paid before running dry).
    assert sorted({r["owed"] for r in receipts}) == [12, 24, 36]
    assert len(auth.purse.closed) == 1
    assert auth.purse.closed[0].mode.value == "payword"  # the cheapest mode offered
    _settled_equals_best_payment(world, auth)


def test_retried_request_with_idempotency_key_is_charged_once(world: World) -> None:
    with PaymentAuth(world.issuer.url, budget=300) as auth, httpx.Client(auth=auth) as http:
        url = f"{world.api.url}/quotes/IDEM"
        first = http.get(url, headers={"Idempotency-Key": "order-7"})
        again = http.get(url, headers={"Idempotency-Key": "order-7"})
        other = http.get(url)
    assert receipt_of(first)["consumed"] == receipt_of(again)["consumed"] == 3
    assert receipt_of(other)["consumed"] == 6


def test_async_httpx_lanes_and_renewal(world: World) -> None:
    async def run() -> PaymentAuth:
        auth = PaymentAuth(world.issuer.url, budget=1000, prepay=2, channel_requests=6, lanes=3)
        async with auth, httpx.AsyncClient(auth=auth, timeout=30) as http:
            replies = await asyncio.gather(
                *(http.get(f"{world.api.url}/quotes/A{n}") for n in range(30))
            )
            assert [r.status_code for r in replies] == [200] * 30
            assert len(auth.purse.pool.lanes) <= 3
            # 30 requests on channels of 6: renewed channels were opened (and the old settled).
            assert len(auth.purse.channels) + len(auth.purse.closed) >= 5
        return auth

    auth = asyncio.run(run())
    assert not auth.purse.channels
    spent = sum(channel.owed for channel in auth.purse.closed)
    assert spent >= 30 * 3 and auth.purse.reserved == spent <= 1000
    _settled_equals_best_payment(world, auth)


def test_a_signature_channel_is_topped_up_in_place(world: World) -> None:
    auth = PaymentAuth(
        world.issuer.url, budget=1000, prepay=2, channel_requests=4, modes=["signature"]
    )
    with auth, httpx.Client(auth=auth, timeout=30) as http:
        for n in range(12):  # 36 at 3 a request, on a channel opened for 12
            reply = http.get(f"{world.api.url}/quotes/T{n}")
            assert reply.status_code == 200, reply.text
            assert receipt_of(reply)["consumed"] == 3 * (n + 1)
        (channel,) = auth.purse.channels  # raised in place, never renewed
        assert not auth.purse.closed
        kinds = [channel.receipts[seq].receipt.kind for seq in sorted(channel.receipts)]
        assert kinds[0] == "open" and kinds.count("top_up") >= 2
        assert channel.amount >= 36
    assert auth.purse.closed == [channel] and not auth.purse.channels
    info = world.issuer_channel("signature", channel.channel_id)
    assert info["is_closed"] and info["balance"] == channel.owed >= 36
    assert auth.purse.reserved == channel.owed  # the unpaid rest went back to the wallet
    _settled_equals_best_payment(world, auth)


def test_streams_are_paid_event_by_event(world: World) -> None:
    auth = PaymentAuth(world.issuer.url, budget=1000, prepay=2)
    with auth, httpx.Client(auth=auth, timeout=30) as http:
        with http.stream("GET", f"{world.api.url}/events?n=12") as reply:
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    # Credit came in steps of 2 events: the payment-required events were answered, unseen.
    assert lines == [f"data: event {n}" for n in range(12)]
    channel = auth.purse.closed[0]
    owed, consumed = credit(world.api.store, channel.channel_id)
    assert consumed == 24 and owed >= 24
    _settled_equals_best_payment(world, auth)


def test_async_stream_and_aiohttp(world: World) -> None:
    async def run() -> tuple[list[str], list[str], PaymentMiddleware]:
        auth = PaymentAuth(world.issuer.url, budget=500, prepay=1)
        async with auth, httpx.AsyncClient(auth=auth, timeout=30) as http:
            async with http.stream("GET", f"{world.api.url}/events?n=5") as reply:
                seen = [line async for line in reply.aiter_lines() if line.startswith("data")]
        middleware = PaymentMiddleware(world.issuer.url, budget=500, prepay=3)
        async with middleware, aiohttp.ClientSession(middlewares=[middleware]) as session:
            for n in range(4):
                async with session.get(f"{world.api.url}/quotes/H{n}") as answer:
                    assert answer.status == 200
                    assert (await answer.json())["symbol"] == f"H{n}"
            async with session.get(f"{world.api.url}/events?n=7") as answer:
                body = (await answer.content.read()).decode()
        events = [line for line in body.splitlines() if line.startswith("data")]
        return seen, events, middleware

    seen, events, middleware = asyncio.run(run())
    assert seen == [f"data: event {n}" for n in range(5)]
    assert events == [f"data: event {n}" for n in range(7)]
    _settled_equals_best_payment(world, middleware)


def test_budget_is_never_passed(world: World) -> None:
    with PaymentAuth(world.issuer.url, budget=10, channel_requests=2) as auth:
        with httpx.Client(auth=auth) as http:
            assert http.get(f"{world.api.url}/quotes/B1").status_code == 200
            assert http.get(f"{world.api.url}/quotes/B2").status_code == 200
            assert http.get(f"{world.api.url}/quotes/B3").status_code == 200  # 9 of 10
            with pytest.raises(BudgetExhausted):
                http.get(f"{world.api.url}/quotes/B4")
    assert sum(channel.owed for channel in auth.purse.closed) <= 10


def test_an_outage_is_503_and_opens_no_channel(world: World) -> None:
    with PaymentAuth(world.issuer.url, budget=300) as auth, httpx.Client(auth=auth) as http:
        assert http.get(f"{world.api.url}/quotes/O1").status_code == 200
        opened = len(auth.purse.channels)
        with world.redis.paused():
            reply = http.get(f"{world.api.url}/quotes/O2", timeout=30)
            assert reply.status_code == 503, reply.text
            assert reply.json()["code"] == "store_unavailable"
            assert "retry-after" in reply.headers
        assert len(auth.purse.channels) == opened
        assert http.get(f"{world.api.url}/quotes/O3").status_code == 200
        assert len(auth.purse.channels) == opened


def test_another_issuer_is_never_paid(world: World) -> None:
    with PaymentAuth("http://127.0.0.1:9", budget=300) as auth, httpx.Client(auth=auth) as http:
        reply = http.get(f"{world.api.url}/quotes/N")
        assert reply.status_code == 402
        assert not auth.purse.channels
