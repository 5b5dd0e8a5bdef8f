"""`nanomoni audit`: read a store's records and run the checks of protocol.audit over
them. Read-only: it never applies what is due nor changes a record, so it is safe
against a live store (the issuer's ledger is read at one instant; each vendor
channel at one instant of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from nanomoni.protocol.audit import (
    Finding,
    Ledger,
    VendorChannel,
    audit_ledger,
    audit_vendor,
    settlement_node_keys,
)
from nanomoni.store import (
    _redis_client,
    _scheme,
    _sqlite_path,
    open_issuer_store,
    open_vendor_store,
)
from nanomoni.store.base import IssuerStore, VendorStore

AUDIT_TIMEOUT = 120.0  # seconds for one read of a whole store
CONNECT_TIMEOUT = 5.0  # seconds to find a Redis store unreachable
NODE_READS = 256  # channels whose nodes are read at once


class AuditError(Exception):
    """An audit that cannot run (no such store): the message says why, in one line."""


@dataclass(frozen=True)
class Report:
    lines: list[str]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)


async def issuer_findings(store: IssuerStore) -> tuple[Ledger, list[Finding]]:
    ledger = await store.ledger()
    return ledger, audit_ledger(ledger)


async def vendor_findings(store: VendorStore) -> tuple[int, list[Finding]]:
    records = await store.audit_records()
    with_nodes = await _with_nodes(store, records)
    # Verifying proofs costs signatures and hash walks: off the event loop.
    return len(records), await asyncio.to_thread(audit_vendor, with_nodes)


async def _with_nodes(store: VendorStore, records: Sequence[VendorChannel]) -> list[VendorChannel]:
    """The records with the Merkle nodes their proofs are verified with."""
    done = list(records)
    wanted = [(n, keys) for n, record in enumerate(done) if (keys := settlement_node_keys(record))]
    for start in range(0, len(wanted), NODE_READS):
        chunk = wanted[start : start + NODE_READS]
        found = await asyncio.gather(
            *(store.nodes(done[n].channel_id, keys) for n, keys in chunk)
        )
        for (n, _), nodes in zip(chunk, found, strict=True):
            done[n] = msgspec.structs.replace(done[n], nodes=nodes)
    return done


async def audit(url: str, *, timeout: float = AUDIT_TIMEOUT) -> Report:
    """Audit whatever the store at `url` holds: an issuer's ledger and vendor channels."""
    if _scheme(url) == "sqlite":
        if not Path(_sqlite_path(url)).is_file():
            raise AuditError(f"no SQLite database at {_sqlite_path(url)}")
    else:  # an unreachable server is told within seconds, not the long read's deadline
        await (await _redis_client(url, CONNECT_TIMEOUT)).close()
    issuer = await open_issuer_store(url, timeout=timeout)
    try:
        ledger, issuer_side = await issuer_findings(issuer)
    finally:
        await issuer.close()
    vendor = await open_vendor_store(url, timeout=timeout)
    try:
        channels, vendor_side = await vendor_findings(vendor)
    finally:
        await vendor.close()
    lines = [
        f"issuer ledger: {len(ledger.accounts)} accounts, {len(ledger.channels)} channels, "
        f"grants + deposits {ledger.supply}",
        *(finding.line() for finding in issuer_side),
        f"vendor: {channels} channels",
        *(finding.line() for finding in vendor_side),
    ]
    return Report(lines, issuer_side + vendor_side)
