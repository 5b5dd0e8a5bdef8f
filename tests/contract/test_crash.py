"""A writer killed with SIGKILL mid-stream loses no acknowledged write.

SQLite: the writer process dies. Redis (AOF, appendfsync always): the server is
SIGKILLed too, restarted on the same directory, and must still hold every write
the writer had acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from contract.crash_writer import ACCOUNT, CHANNELS
from redis_servers import redis_server

from nanomoni.store import open_issuer_store, open_vendor_store

WRITER = Path(__file__).with_name("crash_writer.py")
ACKS_BEFORE_KILL = 400


def run_writer_and_kill(url: str, kill_server: Callable[[], None]) -> list[str]:
    """Start the writer, let it acknowledge writes, kill it mid-stream; its acknowledgements."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*sys.path, env.get("PYTHONPATH")]))
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), url], stdout=subprocess.PIPE, env=env, text=True
    )
    assert writer.stdout is not None
    lines: list[str] = []
    try:
        assert writer.stdout.readline().strip() == "ready"
        while len(lines) < ACKS_BEFORE_KILL:
            line = writer.stdout.readline()
            assert line, "writer stopped before it was killed"
            lines.append(line)
        kill_server()
        writer.send_signal(signal.SIGKILL)
        lines.extend(writer.stdout.readlines())  # whatever it acknowledged before dying
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    return [line.strip() for line in lines if line.endswith("\n")]


async def check_nothing_acknowledged_was_lost(url: str, acks: list[str]) -> None:
    highest = dict.fromkeys(range(CHANNELS), 0)
    deposits = 0
    for ack in acks:
        kind, *rest = ack.split()
        if kind == "cas":
            highest[int(rest[0])] = max(highest[int(rest[0])], int(rest[1]))
        else:
            deposits += 1
    assert sum(highest.values()) > 0 and deposits > 0
    vendor = await open_vendor_store(url)
    issuer = await open_issuer_store(url)
    try:
        for channel, index in highest.items():
            view = await vendor.load(f"crash-{channel}", [index])
            assert view.state is not None and view.state.index >= index
            assert view.nodes == [bytes(32)]
        account = await issuer.get_account(ACCOUNT)
        assert account is not None and account.balance >= deposits
    finally:
        await vendor.close()
        await issuer.close()


async def test_sqlite_keeps_acknowledged_writes(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'crash.sqlite3'}"
    acks = run_writer_and_kill(url, lambda: None)
    await check_nothing_acknowledged_was_lost(url, acks)


@pytest.mark.redis
async def test_redis_aof_keeps_acknowledged_writes() -> None:
    with redis_server(aof=True) as server:
        acks = run_writer_and_kill(server.url, server.kill)
        server.start()  # same port and directory: Redis replays its AOF
        await check_nothing_acknowledged_was_lost(server.url, acks)
