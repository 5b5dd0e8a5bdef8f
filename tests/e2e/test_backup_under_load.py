"""A backup taken under load restores to sound books (issue 15): real issuer and vendor
(SQLite, Redis) take 2,000 payments and 50 settlements from 8 threads; both stores are
backed up three times while that runs; each restored copy passes the audit and holds
every settlement the vendor had acknowledged before its backup began."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis_servers import redis_server

from nanomoni.launch import start_issuer, start_vendor
from nanomoni.protocol.model import ChannelState
from nanomoni.store import open_issuer_store, open_vendor_store
from nanomoni.store.audit import audit
from nanomoni.store.backup import backup, restore

CHANNELS = 50
PAYMENTS = 40  # per channel: 2,000 in all
THREADS = 8
UNIT = 10
BACKUP_POINTS = (10, 25, 40)  # settlements acknowledged before each backup starts


class Load:
    """Pays and closes channels from several threads, noting when each closure is acked."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.lock = threading.Lock()
        self.acked: dict[str, float] = {}  # channel id -> when its closure was acknowledged
        self.paid: list[float] = []  # when each payment was acknowledged
        self.owed: dict[str, int] = {}

    def channel(self, _: int) -> None:
        net = self.net
        channel = net.open("payword", net.client(), amount=PAYMENTS * UNIT, unit=UNIT,
                           max_index=PAYMENTS)
        for index in range(1, PAYMENTS + 1):
            reply = net.pay(channel, index)
            assert reply.status_code == 201, reply.text
            with self.lock:
                self.paid.append(time.monotonic())
        reply = net.close_channel(channel)
        assert reply.status_code == 204, reply.text
        with self.lock:
            self.acked[channel.channel_id] = time.monotonic()
            self.owed[channel.channel_id] = PAYMENTS * UNIT

    def settled(self) -> int:
        with self.lock:
            return len(self.acked)


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Live stores for the services and an empty pair to restore each backup into."""
    names = ["issuer", "vendor"] + [
        f"{side}_{n}" for n in range(len(BACKUP_POINTS)) for side in ("issuer", "vendor")
    ]
    if request.param == "sqlite":
        yield {name: f"sqlite:{tmp_path / f'{name}.sqlite3'}" for name in names}
        return
    with redis_server(aof=True) as redis:
        base = redis.url.rsplit("/", 1)[0]
        yield {name: f"{base}/{db}" for db, name in enumerate(names)}


@dataclass
class Taken:
    point: int
    acked: set[str]  # settlements acknowledged before the backup began
    began: float
    ended: float
    summary: str


def test_a_backup_under_load_restores_to_sound_books(
    stores: dict[str, str], tmp_path: Path, stack_factory: Any
) -> None:
    started = time.monotonic()
    taken: list[Taken] = []
    with (
        start_issuer(data_dir=tmp_path / "issuer", store=stores["issuer"],
                     initial_balance=1_000_000) as issuer,
        start_vendor(data_dir=tmp_path / "vendor", issuer_url=issuer.url,
                     store=stores["vendor"]) as vendor,
    ):
        net = stack_factory(issuer, vendor)
        load = Load(net)
        try:
            with ThreadPoolExecutor(THREADS) as pool:
                running = pool.map(load.channel, range(CHANNELS))
                deadline = time.monotonic() + 30
                for n, point in enumerate(BACKUP_POINTS):
                    while load.settled() < point:
                        assert time.monotonic() < deadline, "the load did not get going"
                        time.sleep(0.01)
                    with load.lock:
                        acked = set(load.acked)
                    began = time.monotonic()
                    summary = asyncio.run(take_backups(stores, tmp_path, n))
                    taken.append(Taken(point, acked, began, time.monotonic(), summary))
                list(running)  # the load ends; a failure in it fails the test
        finally:
            net.close()
        assert vendor.stop() == 0
        assert issuer.stop() == 0
    assert len(load.paid) == CHANNELS * PAYMENTS and len(load.acked) == CHANNELS
    lines = []
    for n, backup_taken in enumerate(taken):
        after = sum(at > backup_taken.began for at in load.acked.values())
        assert after > 0, "every settlement was over before the backup began"
        copies = {side: stores[f"{side}_{n}"] for side in ("issuer", "vendor")}
        asyncio.run(restore_backups(copies, tmp_path, n))
        for url in copies.values():
            report = asyncio.run(audit(url))
            assert report.ok, "\n".join(report.lines)
        missing = asyncio.run(missing_settlements(copies, backup_taken.acked, load.owed))
        assert missing == [], missing
        during = sum(backup_taken.began <= at <= backup_taken.ended for at in load.paid)
        lines.append(
            f"backup {n + 1} ({backup_taken.summary}, "
            f"{backup_taken.ended - backup_taken.began:.3f} s): {len(backup_taken.acked)} "
            f"settlements acknowledged before it, all restored; {after} after; {during} "
            "payments acknowledged while it ran; audit ok"
        )
    kind = stores["issuer"].split(":")[0]
    print(f"\n{kind}: " + f"\n{kind}: ".join(lines)
          + f"\n{kind}: test {time.monotonic() - started:.1f} s")


async def take_backups(stores: dict[str, str], tmp_path: Path, n: int) -> str:
    issuer, vendor = await asyncio.gather(
        backup(stores["issuer"], tmp_path / f"issuer-{n}.backup"),
        backup(stores["vendor"], tmp_path / f"vendor-{n}.backup"),
    )
    return f"issuer {issuer.keys} rows/keys, vendor {vendor.keys}"


async def restore_backups(copies: dict[str, str], tmp_path: Path, n: int) -> None:
    await restore(tmp_path / f"issuer-{n}.backup", copies["issuer"])
    await restore(tmp_path / f"vendor-{n}.backup", copies["vendor"])


async def missing_settlements(
    copies: dict[str, str], acked: set[str], owed: dict[str, int]
) -> list[str]:
    """The acknowledged settlements the restored stores do not hold as settled."""
    issuer = await open_issuer_store(copies["issuer"])
    vendor = await open_vendor_store(copies["vendor"])
    missing = []
    try:
        for channel_id in sorted(acked):
            channel = await issuer.get_channel(channel_id)
            recorded = await vendor.settlement(channel_id)
            if (
                channel is None
                or channel.state is not ChannelState.closed
                or channel.closure is None
                or channel.closure.owed != owed[channel_id]
                or recorded is None
                or recorded.owed != owed[channel_id]
            ):
                missing.append(channel_id)
    finally:
        await issuer.close()
        await vendor.close()
    return missing
