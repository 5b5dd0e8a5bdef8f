"""Issuer store costs of the client's protection (SPEC §4.5–§4.6), per backend:

* reading a channel, which now first applies what is due (Redis: a script that
  reads TIME and writes only when something is due) — against, measured in the
  same run, the plain HMGET of the same fields that a read was before;
* a final settlement, a checkpoint and a top-up: µs per step from Python;
* the finalization sweep: channels finalized per second, in steps of 100.

Run: PYTHONPATH=. .venv/bin/pytest bench/test_bench_lifecycle.py -q -s
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from nanomoni.protocol.model import ChannelTerms, Closure, Mode
from nanomoni.store import IssuerStore, open_issuer_store
from nanomoni.store.redis import RedisIssuerStore, _channel_key, _issuer_channel

OPS = 2000
CONCURRENCY = 32
SWEPT = 5000
HOUR_US = 3600 * 10**6
FIELDS = ("t", "a", "e", "st", "dl", "vc", "x", "cb", "vb", "ca", "d")


def run(work: Callable[[IssuerStore], Coroutine[Any, Any, float]], url: str) -> float:
    async def main() -> float:
        store = await open_issuer_store(url, timeout=60)
        try:
            return await work(store)
        finally:
            await store.close()

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def report(name: str, value: str) -> None:
    print(f"\n  {name:<58} {value}")


def channel_terms(client: str, vendor: str, amount: int, ttl_us: int | None) -> ChannelTerms:
    return ChannelTerms(
        id="bench",
        channel_id=secrets.token_urlsafe(32)[:43],
        mode=Mode.signature,
        client_public_key_der_b64=client,
        vendor_public_key_der_b64=vendor,
        salt_b64="c2FsdA==",
        amount=amount,
        hash_alg="sha256",
        created_at="2026-11-30T00:00:00.000000+00:00",
        open_key=secrets.token_bytes(32),
        ttl_us=ttl_us,
    )


async def opened(
    store: IssuerStore, count: int, *, ttl_us: int | None, window_us: int
) -> list[str]:
    client, vendor = secrets.token_urlsafe(20), secrets.token_urlsafe(20)
    await store.register(client, 200 * count)  # room for top-ups
    await store.register(vendor, 0)
    channels = [channel_terms(client, vendor, 100, ttl_us) for _ in range(count)]
    for start in range(0, count, 500):
        batch = channels[start : start + 500]
        await asyncio.gather(*(store.open_channel(t, dispute_window_us=window_us) for t in batch))
    return [t.channel_id for t in channels]


def closure(owed: int, digest: bytes) -> Closure:
    return Closure(owed=owed, proof_digest=digest, client_balance=0, vendor_balance=0, closed_at="")


async def per_op(ids: list[str], step: Callable[[int, str], Coroutine[Any, Any, object]]) -> float:
    """µs per step, CONCURRENCY in flight, each on its own channels."""
    lanes = [ids[n::CONCURRENCY] for n in range(CONCURRENCY)]

    async def lane(channels: list[str]) -> None:
        for n, cid in enumerate(channels):
            await step(n, cid)

    started = time.perf_counter()
    await asyncio.gather(*(lane(channels) for channels in lanes))
    return (time.perf_counter() - started) * 1e6 / len(ids)


BACKENDS = ["sqlite", "redis", "cluster"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_a_channel_with_its_due_check(
    backend: str, store_url: Callable[[str], str]
) -> None:
    async def work(store: IssuerStore) -> float:
        ids = await opened(store, 200, ttl_us=HOUR_US, window_us=HOUR_US)
        many = (ids * (OPS // len(ids) + 1))[:OPS]
        read = await per_op(many, lambda n, cid: store.get_channel(cid))
        report(f"{backend}: get_channel (applies what is due)", f"{read:7.1f} µs")
        if isinstance(store, RedisIssuerStore):
            redis = store._redis

            async def plain(n: int, cid: str) -> object:
                # What a read was before: the fields (and receipts) without the due check.
                fields, entries = await asyncio.gather(
                    redis.execute("HMGET", _channel_key(cid), *FIELDS),
                    redis.execute("LRANGE", f"{{nm-issuer}}:rc:{cid}", 0, -1),
                )
                return _issuer_channel(cid, [*fields, entries])

            baseline = await per_op(many, plain)
            report(f"{backend}: same fields, no due check (HMGET + LRANGE)", f"{baseline:7.1f} µs")
        return read

    run(work, store_url(backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_settlement_checkpoint_and_top_up_steps(
    backend: str, store_url: Callable[[str], str]
) -> None:
    async def work(store: IssuerStore) -> float:
        ids = await opened(store, OPS, ttl_us=HOUR_US, window_us=HOUR_US)
        half = ids[: OPS // 2]
        point = await per_op(
            half, lambda n, cid: store.settle(cid, closure(40, b"p40"), final=False)
        )
        report(f"{backend}: checkpoint", f"{point:7.1f} µs")
        top = await per_op(
            half, lambda n, cid: store.top_up(cid, 10, secrets.token_bytes(16), b"d" * 32)
        )
        report(f"{backend}: top-up", f"{top:7.1f} µs")
        final = await per_op(ids, lambda n, cid: store.settle(cid, closure(60, b"p60")))
        report(f"{backend}: final settlement", f"{final:7.1f} µs")
        return final

    run(work, store_url(backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_finalization_sweep_throughput(backend: str, store_url: Callable[[str], str]) -> None:
    async def work(store: IssuerStore) -> float:
        await opened(store, SWEPT, ttl_us=0, window_us=0)  # all past expiry and deadline
        started = time.perf_counter()
        done = 0
        while step := await store.finalize_due(100):
            done += step
        rate = done / (time.perf_counter() - started)
        assert done >= SWEPT and await store.overdue() == 0
        report(f"{backend}: finalization sweep ({SWEPT} channels)", f"{rate:9,.0f} /s")
        return rate

    run(work, store_url(backend))
