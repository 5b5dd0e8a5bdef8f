"""Money moves exactly once when the parties crash in the middle of the client's
protection (SPEC §4.5–§4.6), on SQLite and on Redis:

* the issuer SIGKILLed while its background task finalizes channels past their
  dispute deadline: after a restart with two workers (two finalizers) each is
  finalized once;
* the vendor SIGKILLed while its watch settles the channels its clients closed, and
  while its checkpoint task withdraws: after a restart each settles once, and the
  vendor ends up credited exactly what it was paid;
* a vendor down for half the dispute window settles every closing channel when it
  returns, before the deadline.

Progress is read from the issuer's store directly (not through the issuer, whose
reads apply what is due), so each kill lands while the work is half done."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from contract.factories import closure, new_key, terms
from e2e.conftest import Channel, Stack
from redis_servers import RedisServer, redis_server

from nanomoni.launch import ServiceProcess, start_issuer, start_vendor
from nanomoni.protocol.model import ChannelState, Mode, ReceiptKind
from nanomoni.store import open_issuer_store

INITIAL = 1_000_000
WAIT = 60.0


@dataclass
class Rig:
    """An issuer and a vendor on their own stores, which the test can kill and restart."""

    root: Path
    issuer_store: str
    vendor_store: str
    redis: RedisServer | None
    issuer_flags: list[str] = field(default_factory=list)
    vendor_flags: list[str] = field(default_factory=list)
    issuer: ServiceProcess | None = None
    vendor: ServiceProcess | None = None
    port: int | None = None  # the issuer's, kept across restarts (the vendor knows it)

    def start_issuer(self, workers: int = 1) -> ServiceProcess:
        self.issuer = start_issuer(
            data_dir=self.root / "issuer",
            store=self.issuer_store,
            initial_balance=INITIAL,
            port=self.port,
            workers=workers,
            extra=self.issuer_flags,
        )
        self.port = int(self.issuer.url.rsplit(":", 1)[1])
        return self.issuer

    def start_vendor(self) -> ServiceProcess:
        assert self.issuer is not None
        self.vendor = start_vendor(
            data_dir=self.root / "vendor",
            issuer_url=self.issuer.url,
            store=self.vendor_store,
            extra=self.vendor_flags,
        )
        return self.vendor

    def stop(self) -> None:
        for service in (self.vendor, self.issuer):
            if service is not None:
                service.stop()

    # --- the issuer's store, read directly --------------------------------------------------

    def count(self, sql: str, redis_count: Callable[[redis.Redis], int]) -> int:
        if self.redis is None:
            path = self.issuer_store.removeprefix("sqlite:")
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
                return int(conn.execute(sql).fetchone()[0])
        with redis.Redis(host="127.0.0.1", port=self.redis.port, db=0) as client:
            return redis_count(client)

    def closing(self) -> int:
        """Channels still closing (their window runs, or finalization is due)."""
        return self.count(
            "SELECT COUNT(*) FROM issuer_channels WHERE state = 'closing'",
            lambda client: int(client.zcard("{nm-issuer}:deadlines")),
        )

    def credited(self, channel_ids: list[str]) -> int:
        """Channels the vendor was credited on (by a checkpoint)."""

        def in_redis(client: redis.Redis) -> int:
            pipe = client.pipeline(transaction=False)
            for cid in channel_ids:
                pipe.hget(f"{{nm-issuer}}:ch:{cid}", "vc")
            return sum(1 for value in pipe.execute() if value not in (None, b"0"))

        return self.count(
            "SELECT COUNT(*) FROM issuer_channels WHERE vendor_credited > 0", in_redis
        )


@pytest.fixture(params=["sqlite", "redis"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            made = Rig(
                tmp_path,
                f"sqlite:{tmp_path / 'issuer.sqlite3'}",
                f"sqlite:{tmp_path / 'vendor.sqlite3'}",
                None,
            )
        else:
            server = stack.enter_context(redis_server(aof=True))
            base = server.url.rsplit("/", 1)[0]
            made = Rig(tmp_path, f"{base}/0", f"{base}/1", server)
        stack.callback(made.stop)
        yield made


def kill_midway(service: ServiceProcess, done: Callable[[], int], total: int) -> int:
    """SIGKILL `service` as soon as some but not all of `total` are done: how many were."""
    deadline = time.monotonic() + WAIT
    while True:
        count = done()
        if 0 < count < total:
            os.kill(service.pid, signal.SIGKILL)
            service.process.wait()
            return count
        assert count < total, "all done before the kill: nothing was interrupted"
        assert time.monotonic() < deadline and service.process.poll() is None
        time.sleep(0.001)


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the issuer, killed while finalizing ------------------------------------------------------


async def _closing_channels(url: str, count: int) -> tuple[str, str, dict[str, int]]:
    """`count` channels whose dispute deadline has passed (closed by their client with a
    window of 0), every other one checkpointed: channel id -> what the vendor holds."""
    store = await open_issuer_store(url, timeout=60)
    client, vendor = new_key(), new_key()
    await store.register(client, 10 * count)
    await store.register(vendor, 0)
    opened = [
        terms(client, vendor, 10, mode=Mode.signature, ttl_us=3600 * 10**6) for _ in range(count)
    ]
    await asyncio.gather(*(store.open_channel(t, dispute_window_us=0) for t in opened))
    credited = {t.channel_id: (n % 2) * (1 + n % 9) for n, t in enumerate(opened)}
    await asyncio.gather(
        *(store.settle(cid, closure(owed), final=False) for cid, owed in credited.items() if owed)
    )
    await asyncio.gather(*(store.client_close(t.channel_id) for t in opened))
    await store.close()
    return client, vendor, credited


async def _finalized_once(url: str, client: str, vendor: str, credited: dict[str, int]) -> None:
    store = await open_issuer_store(url, timeout=60)
    try:
        for cid, owed in credited.items():
            found = await store.get_channel(cid)
            assert found is not None and found.state is ChannelState.closed
            kinds = [receipt.kind for receipt in found.receipts]
            assert kinds.count(ReceiptKind.finalization) == 1 and kinds[-1] == "finalization"
            assert found.vendor_credited == owed and found.receipts[-1].client_refund == 10 - owed
        vendor_gets = sum(credited.values())
        assert (await store.get_account(vendor)).balance == vendor_gets  # type: ignore[union-attr]
        refunds = 10 * len(credited) - vendor_gets
        assert (await store.get_account(client)).balance == refunds  # type: ignore[union-attr]
    finally:
        await store.close()


def test_an_issuer_killed_while_finalizing_finalizes_each_channel_once(rig: Rig) -> None:
    count = 3000 if rig.redis is None else 8000
    client, vendor, credited = asyncio.run(_closing_channels(rig.issuer_store, count))
    assert rig.closing() == count
    started = time.monotonic()
    issuer = rig.start_issuer()  # its finalizer finds every deadline past
    at_kill = count - kill_midway(issuer, lambda: count - rig.closing(), count)
    print(f"issuer SIGKILLed with {count - at_kill} of {count} channels finalized")
    rig.start_issuer(workers=2)  # two finalizers now, racing for the rest
    wait_until(lambda: rig.closing() == 0, "the restarted issuer to finalize the rest")
    print(f"all {count} finalized {time.monotonic() - started:.1f} s after the first start")
    asyncio.run(_finalized_once(rig.issuer_store, client, vendor, credited))


# --- the vendor, killed while settling or checkpointing ----------------------------------------


AMOUNT = 200


def open_paid_channels(net: Stack, count: int) -> list[tuple[Channel, int]]:
    """`count` signature channels, each with an accepted payment of 1..100: (channel, owed)."""
    rng = random.Random(count)
    client = net.client()
    channels = [net.open("signature", client, amount=AMOUNT) for _ in range(count)]
    paid = []
    for channel in channels:  # the payments in one burst
        owed = rng.randint(1, 100)
        assert net.pay(channel, owed).status_code == 201
        paid.append((channel, owed))
    return paid


def client_close(net: Stack, channel: Channel) -> dict[str, Any]:
    reply = net.issuer.post(
        f"/channels/{channel.mode}/{channel.channel_id}/client-closures",
        json={
            "channel_id": channel.channel_id,
            "client_signature_b64": channel.consent("client_close"),
        },
    )
    assert reply.status_code == 202, reply.text
    result: dict[str, Any] = reply.json()
    return result


def settled_once(net: Stack, paid: list[tuple[Channel, int]], vendor_before: int) -> None:
    for channel, owed in paid:
        view = net.read(channel)
        assert view["state"] == "closed" and view["balance"] == owed, view
        kinds = [signed["receipt"]["kind"] for signed in view["receipts"]]
        assert kinds.count("settlement") == 1 and "finalization" not in kinds, kinds
    assert net.balance(net.vendor_pk) == vendor_before + sum(owed for _, owed in paid)


def test_a_vendor_killed_while_its_watch_settles_settles_each_channel_once(
    rig: Rig, stack_factory: type[Stack]
) -> None:
    rig.issuer_flags = ["--dispute-window", "120"]
    rig.vendor_flags = ["--watch-interval", "0.2"]
    net = stack_factory(rig.start_issuer(), rig.start_vendor())
    try:
        count = 300 if rig.redis is None else 400
        paid = open_paid_channels(net, count)
        before = net.balance(net.vendor_pk)
        assert rig.vendor is not None and rig.vendor.stop() == 0
        for channel, _ in paid:  # the clients close while the vendor is away
            client_close(net, channel)
        assert rig.closing() == count
        vendor = rig.start_vendor()  # its watch runs at start-up
        settled = kill_midway(vendor, lambda: count - rig.closing(), count)
        print(f"vendor SIGKILLed in its watch with {settled} of {count} channels settled")
        net.use_vendor(rig.start_vendor())
        wait_until(lambda: rig.closing() == 0, "the restarted vendor's watch")
        settled_once(net, paid, before)
    finally:
        net.close()


def test_a_vendor_killed_while_checkpointing_is_credited_exactly_once(
    rig: Rig, stack_factory: type[Stack]
) -> None:
    rig.vendor_flags = ["--checkpoint-interval", "0.5"]
    net = stack_factory(rig.start_issuer(), rig.start_vendor())
    try:
        count = 300 if rig.redis is None else 400
        before = net.balance(net.vendor_pk)
        paid = open_paid_channels(net, count)
        ids = [channel.channel_id for channel, _ in paid]
        assert rig.vendor is not None
        checkpointed = kill_midway(rig.vendor, lambda: rig.credited(ids), count)
        print(f"vendor SIGKILLed while checkpointing, {checkpointed} of {count} done")
        net.use_vendor(rig.start_vendor())
        # New payments: the restarted vendor checkpoints them (it forgot the old ones).
        final = []
        for channel, owed in paid:
            more = owed + 50
            assert net.pay(channel, more).status_code == 201
            final.append((channel, more))

        def all_checkpointed() -> bool:
            return all(net.read(channel)["vendor_credited"] == owed for channel, owed in final)

        wait_until(all_checkpointed, "checkpoints of every channel")
        for channel, _ in final:
            assert net.close_channel(channel).status_code == 204
        settled_once(net, final, before)
        for channel, owed in final:
            receipts = [signed["receipt"] for signed in net.read(channel)["receipts"]]
            credits = [r["vendor_credited"] for r in receipts if r["kind"] == "checkpoint"]
            assert credits == sorted(set(credits)) and credits[-1] == owed
            assert receipts[-1]["client_refund"] == AMOUNT - owed
    finally:
        net.close()


def test_a_vendor_down_for_half_the_window_settles_every_closing_channel(
    rig: Rig, stack_factory: type[Stack]
) -> None:
    window = 6.0
    rig.issuer_flags = ["--dispute-window", str(window)]
    rig.vendor_flags = ["--watch-interval", "0.5"]
    net = stack_factory(rig.start_issuer(), rig.start_vendor())
    try:
        paid = open_paid_channels(net, 20)
        before = net.balance(net.vendor_pk)
        assert rig.vendor is not None and rig.vendor.stop() == 0
        deadlines = [client_close(net, channel)["dispute_deadline"] for channel, _ in paid]
        time.sleep(window / 2)
        net.use_vendor(rig.start_vendor())
        wait_until(lambda: rig.closing() == 0, "the returning vendor's watch", window)
        settled_once(net, paid, before)
        for (channel, _), deadline in zip(paid, deadlines, strict=True):
            assert net.read(channel)["closed_at"] < deadline
    finally:
        net.close()
