"""The ledger audit on every backend: it passes on a store after a realistic run (every
mode opened, paid with real proofs, checkpointed, topped up, closed and settled) and
catches each corruption planted behind the services' back, naming the check."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from commands import nanomoni_cli
from contract.conftest import Backend
from contract.factories import closure, new_key, state, terms

from nanomoni import crypto
from nanomoni.encoding import b64encode, utc_now
from nanomoni.protocol.audit import ISSUER_CHECKS, VENDOR_CHECKS, Finding, ledger_stats
from nanomoni.protocol.model import ChannelTerms, Mode
from nanomoni.protocol.modes import RULES, Payer
from nanomoni.protocol.payments import decide_payment
from nanomoni.store import _redis_client, _sqlite_path, open_issuer_store, open_vendor_store
from nanomoni.store.audit import audit, issuer_findings, vendor_findings
from nanomoni.store.base import IssuerStore, VendorStore
from nanomoni.store.redis import ISSUER_TAG, vendor_keys

MAX_INDEX = 32
PAID = 6  # payments per channel


@dataclass
class Channel:
    terms: ChannelTerms
    payer: Payer
    owed: int = 0


@dataclass
class Run:
    """What a realistic run left: the client's key and its channels by what happened."""

    client: str
    vendor: str
    settled: list[Channel]
    open: list[Channel]
    closing: Channel


async def pay(vendor: VendorStore, channel: Channel, index: int) -> None:
    """One payment as the vendor takes it: decided by the mode's rules, then stored."""
    rules = RULES[channel.terms.mode]
    payment = channel.payer.payment(index)
    view = await vendor.load(channel.terms.channel_id, rules.payment_node_keys(
        channel.terms, payment))
    decision = decide_payment(rules, channel.terms, view, payment, now=utc_now())
    stored = await vendor.compare_and_set(
        channel.terms.channel_id, decision.state, decision.nodes
    )
    assert stored.outcome.value == "stored"
    channel.payer.accepted(index)
    channel.owed = decision.state.owed


async def open_paid(
    issuer: IssuerStore, vendor: VendorStore, key: crypto.SigningKey, client: str, seller: str,
    mode: Mode,
) -> Channel:
    rules = RULES[mode]
    payer = rules.create_payer(key, max_index=MAX_INDEX, hash_alg="sha256")
    wanted = terms(client, seller, MAX_INDEX, mode=mode)
    committed = rules.members is not None
    wanted = msgspec.structs.replace(
        wanted,
        root=payer.root if committed else None,
        max_index=MAX_INDEX if committed else None,
        unit_value=1 if committed else None,
    )
    opened = await issuer.open_channel(wanted)
    payer.channel_id = opened.terms.channel_id
    channel = Channel(opened.terms, payer)
    await vendor.remember_terms(payer.channel_id, opened.terms)
    for index in range(1, PAID + 1):
        await pay(vendor, channel, index)
    return channel


async def realistic_run(issuer: IssuerStore, vendor: VendorStore) -> Run:
    key = crypto.SigningKey.generate("p256")
    client, seller = b64encode(key.public_key_der), new_key()
    await issuer.register(client, 1000)
    await issuer.register(seller, 0)
    await issuer.deposit(client, 500)
    channels = [
        await open_paid(issuer, vendor, key, client, seller, mode)
        for mode in Mode
        for _ in range(2)
    ]
    settled, still_open = channels[::2], channels[1::2]
    for channel in channels:  # a checkpoint on every channel, then more payments
        await issuer.settle(channel.terms.channel_id, closure(channel.owed), final=False)
        await pay(vendor, channel, PAID + 1)
    signature = next(c for c in still_open if c.terms.mode is Mode.signature)
    topped = await issuer.top_up(signature.terms.channel_id, 40, os.urandom(16), b"d" * 32)
    signature.terms = topped.channel.terms
    await vendor.remember_terms(signature.terms.channel_id, signature.terms)
    await pay(vendor, signature, MAX_INDEX + 20)  # beyond the amount it was opened with
    for channel in settled:  # the vendor's closure: stop payments, settle, remember it
        channel_id = channel.terms.channel_id
        assert await vendor.begin_close(channel_id) is not None
        done = await issuer.settle(channel_id, closure(channel.owed, secrets.token_bytes(16)))
        assert done.closure is not None
        await vendor.record_settlement(channel_id, done.closure)
    closing = still_open.pop()
    await issuer.client_close(closing.terms.channel_id)
    return Run(client, seller, settled, still_open, closing)


def failed(findings: list[Finding]) -> dict[str, list[str]]:
    return {finding.check: finding.violations for finding in findings if not finding.ok}


class Raw:
    """Writes behind the services' back: plain SQL, or plain Redis commands."""

    def __init__(self, url: str, backend: Backend) -> None:
        self.url, self.backend = url, backend

    async def __aenter__(self) -> Raw:
        self.redis: Any = None
        if self.backend.name != "sqlite":
            self.redis = await _redis_client(self.url, 5.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.redis is not None:
            await self.redis.close()

    def sql(self, statement: str, *args: object) -> list[Any]:
        with sqlite3.connect(_sqlite_path(self.url)) as conn:
            return conn.execute(statement, args).fetchall()

    async def cmd(self, *args: Any) -> Any:
        return await self.redis.execute(*args)


@pytest.fixture
async def ran(
    issuer: IssuerStore, vendor: VendorStore
) -> AsyncIterator[tuple[IssuerStore, VendorStore, Run]]:
    run = await realistic_run(issuer, vendor)
    yield issuer, vendor, run


async def test_the_audit_passes_after_a_realistic_run(
    ran: tuple[IssuerStore, VendorStore, Run],
) -> None:
    issuer, vendor, run = ran
    ledger, issuer_side = await issuer_findings(issuer)
    assert [f.check for f in issuer_side] == list(ISSUER_CHECKS)
    assert failed(issuer_side) == {}
    assert len(ledger.channels) == 2 * len(Mode) and ledger.supply == 1500
    count, vendor_side = await vendor_findings(vendor)
    assert [f.check for f in vendor_side] == list(VENDOR_CHECKS)
    assert failed(vendor_side) == {} and count == 2 * len(Mode)
    # The operator's stats come from the same read.
    stats = ledger_stats(ledger)
    live = [*run.open, run.closing]
    assert stats.accounts == 2 and stats.supply == 1500
    assert stats.channels == {"open": len(run.open), "closing": 1, "closed": len(run.settled)}
    assert stats.total_locked == sum(c.terms.amount - PAID for c in live)  # checkpointed PAID
    assert stats.settled_total == sum(c.owed for c in run.settled) + PAID * len(live)
    assert stats.refunded_total == sum(c.terms.amount - c.owed for c in run.settled)
    # open, checkpoint, settlement per settled channel; open, checkpoint (+ top-up) else
    assert stats.receipts_issued == 3 * len(run.settled) + 2 * len(live) + 1


async def test_a_balance_changed_behind_the_issuers_back(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    issuer, _, run = ran
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql("UPDATE accounts SET balance = balance + 7 WHERE public_key = ?", run.client)
        else:
            await raw.cmd("HINCRBY", f"{ISSUER_TAG}:accounts", run.client, 7)
    found = failed((await issuer_findings(issuer))[1])
    assert set(found) == {"conservation"}, found
    assert "!= grants + deposits 1500" in found["conservation"][0]


async def test_a_duplicated_settlement(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    issuer, _, run = ran
    channel_id = run.settled[0].terms.channel_id
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql(
                "INSERT INTO issuer_receipts (channel_id, seq, kind, amount, owed, "
                "vendor_credited, at) SELECT channel_id, seq + 1, kind, amount, owed, "
                "vendor_credited, at FROM issuer_receipts WHERE channel_id = ? "
                "AND kind = 'settlement'",
                channel_id,
            )
        else:
            receipts = f"{ISSUER_TAG}:rc:{channel_id}"
            await raw.cmd("RPUSH", receipts, await raw.cmd("LINDEX", receipts, -1))
    found = failed((await issuer_findings(issuer))[1])
    assert found == {"settlements": [channel_id]}, found


async def test_a_locked_amount_off_by_one(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    issuer, _, run = ran
    channel_id = run.open[0].terms.channel_id
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql(
                "UPDATE issuer_channels SET amount = amount + 1 WHERE channel_id = ?", channel_id
            )
        else:
            await raw.cmd("HINCRBY", f"{ISSUER_TAG}:ch:{channel_id}", "a", 1)
    found = failed((await issuer_findings(issuer))[1])
    assert found.get("locked") == [channel_id], found
    assert set(found) == {"locked", "conservation"}  # the extra unit came from nowhere


async def test_a_vendor_state_beyond_its_terms(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    _, vendor, run = ran
    channel = next(c for c in run.open if c.terms.mode is Mode.payword)
    channel_id, beyond = channel.terms.channel_id, MAX_INDEX + 1
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql(
                "UPDATE vendor_channels SET idx = ?, owed = ? WHERE channel_id = ?",
                beyond, beyond, channel_id,
            )
        else:
            await raw.cmd("HSET", vendor_keys(channel_id)[0], "i", beyond, "o", beyond)
    found = failed((await vendor_findings(vendor))[1])
    assert found == {
        "vendor_within_terms": [channel_id],
        "vendor_proofs": [channel_id],  # and no proof of k = 33 chains to its root
    }, found


async def test_a_forged_proof_and_a_state_without_terms(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    _, vendor, run = ran
    forged = next(c for c in run.open if c.terms.mode is Mode.paytree).terms.channel_id
    bare = "x" * 43  # a state stored without the vendor ever keeping its terms
    await vendor.compare_and_set(bare, state(1), {})
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql("UPDATE vendor_channels SET proof = ? WHERE channel_id = ?",
                    os.urandom(64), forged)
        else:
            proof = await raw.cmd("HGET", vendor_keys(forged)[0], "p")
            await raw.cmd("HSET", vendor_keys(forged)[0], "p", bytes(len(proof)))
    found = failed((await vendor_findings(vendor))[1])
    assert found == {"vendor_proofs": [forged], "vendor_terms": [bare]}, found


async def test_a_settlement_recorded_on_a_channel_still_taking_payments(
    ran: tuple[IssuerStore, VendorStore, Run], store_url: str, backend: Backend
) -> None:
    _, vendor, run = ran
    channel_id = run.settled[0].terms.channel_id
    async with Raw(store_url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql("UPDATE vendor_channels SET closing = 0 WHERE channel_id = ?", channel_id)
        else:
            await raw.cmd("HDEL", vendor_keys(channel_id)[0], "c")
    found = failed((await vendor_findings(vendor))[1])
    assert found == {"vendor_settlements": [channel_id]}, found


# --- the command ------------------------------------------------------------------------


async def test_the_command_reports_each_check_and_fails_on_a_violation(
    backend: Backend, tmp_path: Path
) -> None:
    url = backend.fresh_url()
    issuer, vendor = await open_issuer_store(url), await open_vendor_store(url)
    try:
        run = await realistic_run(issuer, vendor)
    finally:
        await issuer.close()
        await vendor.close()
    done = nanomoni_cli("audit", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines[:-1] if line.endswith(": ok")] == [
        f"{check}: ok" for check in ISSUER_CHECKS + VENDOR_CHECKS
    ]
    assert lines[-1] == f"audit of {url}: ok"
    async with Raw(url, backend) as raw:
        if backend.name == "sqlite":
            raw.sql("UPDATE accounts SET balance = balance - 1 WHERE public_key = ?", run.vendor)
        else:
            await raw.cmd("HINCRBY", f"{ISSUER_TAG}:accounts", run.vendor, -1)
    broken = nanomoni_cli("audit", "--store", url, cwd=tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "conservation: 1 violation(s): balances " in broken.stdout
    assert broken.stdout.splitlines()[-1] == f"audit of {url}: 1 check(s) failed"


def test_the_command_says_why_it_cannot_audit_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite3"
    done = nanomoni_cli("audit", "--store", f"sqlite:{missing}", cwd=tmp_path)
    assert done.returncode == 1 and not missing.exists()
    assert done.stderr.strip() == f"nanomoni audit: no SQLite database at {missing}"
    down = nanomoni_cli("audit", "--store", "redis://:pw@127.0.0.1:1/0", cwd=tmp_path)
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert down.stderr.startswith("nanomoni audit: redis://:***@127.0.0.1:1/0: ")
    assert "pw@" not in down.stderr and not down.stdout


async def test_the_audit_only_reads(backend: Backend) -> None:
    url = backend.fresh_url()
    if backend.name == "sqlite":  # a store file the services made, holding nothing yet
        await (await open_issuer_store(url)).close()
    empty = await audit(url)
    assert empty.ok and empty.lines[0].startswith("issuer ledger: 0 accounts, 0 channels")
    issuer, vendor = await open_issuer_store(url), await open_vendor_store(url)
    try:
        await realistic_run(issuer, vendor)
    finally:
        await issuer.close()
        await vendor.close()
    async with Raw(url, backend) as raw:
        before = await contents(raw)
        assert (await audit(url)).ok
        assert await contents(raw) == before


async def contents(raw: Raw) -> object:
    """Everything the store holds: SQLite's dump, or every Redis key's serialized value."""
    if raw.redis is None:
        with sqlite3.connect(_sqlite_path(raw.url)) as conn:
            return list(conn.iterdump())
    nodes = raw.redis.masters() if hasattr(raw.redis, "masters") else [raw.redis]
    found = {}
    for node in nodes:
        for key in await node.execute("KEYS", "*"):
            found[key] = await node.execute("DUMP", key)
    assert found
    return found
