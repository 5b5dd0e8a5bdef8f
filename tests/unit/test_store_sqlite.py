"""SQLite adapter specifics: coalesced commits, several processes on one file,
store URLs."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from contract.factories import closure, terms

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import CasOutcome, ChannelState, ChannelTerms, Mode, PaymentState
from nanomoni.store import open_issuer_store, open_vendor_store
from nanomoni.store.codec import closure_to_blob, terms_to_blob
from nanomoni.store.sqlite import SqliteIssuerStore, SqliteVendorStore


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    store = await open_vendor_store(f"sqlite:{tmp_path / 'v.sqlite3'}")
    assert isinstance(store, SqliteVendorStore)
    state = PaymentState(index=1, owed=1, proof=b"p", created_at="t")
    results = await asyncio.gather(
        *(store.compare_and_set(f"channel-{n}", state, {}) for n in range(200))
    )
    assert all(result.outcome is CasOutcome.stored for result in results)
    # 200 acknowledged writes, far fewer transactions (fsyncs).
    assert store._write.batches < 100
    await store.close()


OPENER = """
import asyncio, sys
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Mode
from nanomoni.store import open_issuer_store

async def main(url, tag):
    store = await open_issuer_store(url)
    async def one(n):
        terms = ChannelTerms(id="u", channel_id=f"{tag}-{n}", mode=Mode.signature,
            client_public_key_der_b64="client", vendor_public_key_der_b64="vendor",
            salt_b64="s", amount=10, hash_alg="sha256", created_at="t",
            open_key=f"{tag}-{n}".encode())
        try:
            await store.open_channel(terms)
            return 1
        except NanoMoniError:
            return 0
    opened = sum(await asyncio.gather(*(one(n) for n in range(40))))
    await store.close()
    print(opened)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_processes_sharing_a_file_never_overdraw(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'shared.sqlite3'}"
    store = await open_issuer_store(url)
    await store.register("client", 250)
    await store.register("vendor", 0)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-c", OPENER, url, tag, stdout=subprocess.PIPE, env=_child_env()
        )
        for tag in ("a", "b", "c")
    ]
    outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert sum(int(out.decode()) for out, _ in outputs) == 25
    account = await store.get_account("client")
    assert account is not None and account.balance == 0
    await store.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*sys.path, env.get("PYTHONPATH")]))
    return env


async def test_default_path_is_under_nanomoni_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_issuer_store("sqlite:")
    assert isinstance(store, SqliteIssuerStore)
    await store.register("someone", 1)
    await store.close()
    assert (tmp_path / "nanomoni-data" / "nanomoni.sqlite3").exists()


async def test_triple_slash_url_is_an_absolute_path(tmp_path: Path) -> None:
    store = await open_vendor_store(f"sqlite://{tmp_path}/abs.sqlite3")
    await store.close()
    assert (tmp_path / "abs.sqlite3").exists()


@pytest.mark.parametrize(
    "url", ["postgres://127.0.0.1/x", "sqlite", "redis://127.0.0.1:6379/notanumber", ":memory:"]
)
async def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        await open_issuer_store(url)


async def test_memory_database_is_refused() -> None:
    with pytest.raises(ValueError):
        await open_vendor_store("sqlite::memory:")


async def test_issuer_and_vendor_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'both.sqlite3'}"
    issuer, vendor = await open_issuer_store(url), await open_vendor_store(url)
    await issuer.register("c", 10)
    await issuer.register("v", 0)
    terms = ChannelTerms(
        id="u", channel_id="ch", mode=Mode.signature, client_public_key_der_b64="c",
        vendor_public_key_der_b64="v", salt_b64="s", amount=10, hash_alg="sha256",
        created_at="t", open_key=b"open-1",
    )  # fmt: skip
    await issuer.open_channel(terms)
    state = PaymentState(index=4, owed=4, proof=b"sig", created_at="t")
    assert (await vendor.compare_and_set("ch", state, {})).outcome is CasOutcome.stored
    await issuer.close()
    assert (await vendor.load("ch")).state == state  # the vendor outlives the issuer's close
    await vendor.close()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await open_issuer_store(f"sqlite:{tmp_path / 'closed.sqlite3'}")
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.get_account("anyone")


def _open_at_barrier(url: str, barrier: Any) -> None:
    async def open_and_close() -> None:
        store = await open_vendor_store(url)
        await store.close()

    barrier.wait()
    asyncio.run(open_and_close())


def test_processes_opening_one_new_file_at_once(tmp_path: Path) -> None:
    """Switching a new file to WAL races between processes; every opener must succeed."""
    context = multiprocessing.get_context("fork")
    for trial in range(15):
        url = f"sqlite:{tmp_path / f'new-{trial}.sqlite3'}"
        barrier = context.Barrier(6)
        openers = [context.Process(target=_open_at_barrier, args=(url, barrier)) for _ in range(6)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=30)
        assert [opener.exitcode for opener in openers] == [0] * 6


async def test_a_file_from_before_client_protection_gets_its_columns(tmp_path: Path) -> None:
    """Channels stored before v1.1's lifecycle: the settled one is closed (the vendor
    credited what it settled), the open one stays open and never expires."""
    path = tmp_path / "old.sqlite3"
    settled, still_open = closure(25), "B" * 43
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE accounts (public_key TEXT PRIMARY KEY, balance INTEGER NOT NULL);"
            "CREATE TABLE issuer_channels (channel_id TEXT PRIMARY KEY, client TEXT NOT NULL,"
            " vendor TEXT NOT NULL, amount INTEGER NOT NULL, terms BLOB NOT NULL,"
            " proof_digest BLOB, closure BLOB, client_balance INTEGER, vendor_balance INTEGER);"
        )
        conn.execute("INSERT INTO accounts VALUES ('client', 75), ('vendor', 25)")
        rows = [("A" * 43, closure_to_blob(settled), 75, 25), (still_open, None, None, None)]
        for cid, blob, client_balance, vendor_balance in rows:
            old_terms = terms("client", "vendor", 60, channel_id=cid)
            conn.execute(
                "INSERT INTO issuer_channels VALUES (?, 'client', 'vendor', 60, ?, ?, ?, ?, ?)",
                (cid, terms_to_blob(old_terms), blob and b"digest", blob, client_balance,
                 vendor_balance),
            )
    store = await open_issuer_store(f"sqlite:{path}")
    try:
        closed = await store.get_channel("A" * 43)
        assert closed is not None and closed.state is ChannelState.closed
        assert closed.vendor_credited == 25 and closed.closure is not None
        assert closed.closure.owed == 25 and closed.receipts == ()
        with pytest.raises(NanoMoniError) as refused:  # no receipt to answer a retry with
            await store.settle("A" * 43, settled)
        assert refused.value.code is Code.already_closed
        found = await store.get_channel(still_open)
        assert found is not None and found.state is ChannelState.open
        assert found.terms.expires_at is None
        answer = await store.settle(still_open, closure(10, b"new"))
        assert (answer.client_balance, answer.vendor_balance) == (125, 35)
    finally:
        await store.close()
