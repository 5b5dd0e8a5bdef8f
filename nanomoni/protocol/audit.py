"""The ledger audit (issue 15): the invariants of SPEC §4.5–§5 recomputed from the
stores' records alone. Pure rules over plain records; the stores read the records
(`IssuerStore.ledger`, `VendorStore.audit_records`), `nanomoni audit` and the
issuer's periodic audit print or count what these functions find.

Issuer side: Σ balances + Σ locked = Σ grants + Σ deposits; every channel's amount
and credit are those of its latest receipt; a closed channel has exactly one final
receipt (settlement or finalization), its last, and holds nothing; commitment roots
are unique and recorded as used. Vendor side: each accepted state lies within the
terms it was accepted under and its proof verifies by the mode's rules; a recorded
settlement marks the channel closing and claims no more than the accepted state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from nanomoni import crypto, encoding
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.model import (
    ChannelState,
    ChannelTerms,
    Closure,
    PaymentState,
    Receipt,
    ReceiptKind,
)
from nanomoni.protocol.modes import rules_for

SHOWN = 3  # violating ids a report line names

ISSUER_CHECKS = ("conservation", "accounts", "receipts", "locked", "closed", "settlements", "roots")
VENDOR_CHECKS = ("vendor_terms", "vendor_within_terms", "vendor_proofs", "vendor_settlements")
_FINAL = (ReceiptKind.settlement, ReceiptKind.finalization)


class LedgerChannel(msgspec.Struct, frozen=True, kw_only=True):
    """One issuer channel as stored: amount and credit as they are now."""

    channel_id: str
    client: str
    vendor: str
    amount: int
    state: ChannelState
    vendor_credited: int
    root: bytes | None
    settle_seq: int | None  # the receipt of its final settlement (None: none, or finalized)
    receipts: tuple[Receipt, ...]

    @property
    def locked(self) -> int:
        """What the channel still holds of the client's money (SPEC §4.5)."""
        return 0 if self.state is ChannelState.closed else self.amount - self.vendor_credited


class Ledger(msgspec.Struct, frozen=True, kw_only=True):
    """The issuer's whole ledger, read at one instant."""

    accounts: dict[str, int]  # public key -> balance
    supply: int  # Σ grants + Σ deposits
    channels: list[LedgerChannel]
    roots: list[bytes]  # commitment roots recorded as used


class VendorChannel(msgspec.Struct, frozen=True, kw_only=True):
    """One vendor channel as stored, with the terms its payments were accepted under
    and the Merkle nodes its settlement needs (in `settlement_node_keys` order)."""

    channel_id: str
    state: PaymentState | None
    closing: bool
    settlement: Closure | None
    terms: ChannelTerms | None
    nodes: list[bytes | None] = []


class Finding(msgspec.Struct, frozen=True):
    """One check's outcome: the ids (or sums) that break it; none: it holds."""

    check: str
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        if self.ok:
            return f"{self.check}: ok"
        shown = ", ".join(self.violations[:SHOWN])
        more = ", ..." if len(self.violations) > SHOWN else ""
        return f"{self.check}: {len(self.violations)} violation(s): {shown}{more}"


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """The operator's view of the ledger (GET /api/v1/issuer/stats)."""

    accounts: int
    channels: dict[str, int]  # by state: open, closing, closed
    total_locked: int
    settled_total: int  # credited to vendors (checkpoints and settlements)
    refunded_total: int  # given back to clients when channels closed
    receipts_issued: int
    supply: int  # Σ grants + Σ deposits


def _finding(check: str, bad: Sequence[str]) -> Finding:
    return Finding(check, list(bad))


# --- the issuer ---------------------------------------------------------------------------


def audit_ledger(ledger: Ledger) -> list[Finding]:
    """Every issuer check over one consistent read of the ledger, in ISSUER_CHECKS order."""
    channels = ledger.channels
    balances = sum(ledger.accounts.values())
    locked = sum(channel.locked for channel in channels)
    conservation = []
    if balances + locked != ledger.supply:
        conservation.append(
            f"balances {balances} + locked {locked} = {balances + locked} "
            f"!= grants + deposits {ledger.supply}"
        )
    accounts = [key[:16] for key, balance in ledger.accounts.items() if balance < 0]
    accounts += [
        channel.channel_id
        for channel in channels
        if channel.client not in ledger.accounts or channel.vendor not in ledger.accounts
    ]
    return [
        _finding("conservation", conservation),
        _finding("accounts", accounts),
        _finding("receipts", [c.channel_id for c in channels if not _receipts_ok(c)]),
        _finding("locked", [c.channel_id for c in channels if not _locked_ok(c)]),
        _finding("closed", [c.channel_id for c in channels if not _closed_ok(c)]),
        _finding("settlements", [c.channel_id for c in channels if not _settlements_ok(c)]),
        _finding("roots", _root_violations(ledger)),
    ]


def _receipts_ok(channel: LedgerChannel) -> bool:
    """Receipts are numbered 1, 2, ... and the first (only the first) is the open."""
    receipts = channel.receipts
    return (
        bool(receipts)
        and [r.seq for r in receipts] == list(range(1, len(receipts) + 1))
        and [r.kind is ReceiptKind.open for r in receipts] == [True] + [False] * (len(receipts) - 1)
    )


def _locked_ok(channel: LedgerChannel) -> bool:
    """locked = amount − vendor_credited, both as the latest receipt signed them."""
    if not 0 <= channel.vendor_credited <= channel.amount or not channel.receipts:
        return False
    latest = channel.receipts[-1]
    return latest.amount == channel.amount and latest.vendor_credited == channel.vendor_credited


def _closed_ok(channel: LedgerChannel) -> bool:
    """Closed exactly when the latest receipt is final (it refunded what was locked)."""
    final = bool(channel.receipts) and channel.receipts[-1].kind in _FINAL
    return final == (channel.state is ChannelState.closed)


def _settlements_ok(channel: LedgerChannel) -> bool:
    """At most one final receipt (one on a closed channel); the settlement it records
    is a settlement receipt."""
    finals = [r for r in channel.receipts if r.kind in _FINAL]
    if len(finals) > 1 or (channel.state is ChannelState.closed) != bool(finals):
        return False
    if channel.settle_seq is None:
        return not finals or finals[0].kind is ReceiptKind.finalization
    return bool(finals) and finals[0].seq == channel.settle_seq and (
        finals[0].kind is ReceiptKind.settlement
    )


def _root_violations(ledger: Ledger) -> list[str]:
    used = set(ledger.roots)
    seen = Counter(c.root for c in ledger.channels if c.root is not None)
    return [
        channel.channel_id
        for channel in ledger.channels
        if channel.root is not None and (seen[channel.root] > 1 or channel.root not in used)
    ]


def ledger_stats(ledger: Ledger) -> Stats:
    by_state = Counter(channel.state.value for channel in ledger.channels)
    closed = [c for c in ledger.channels if c.state is ChannelState.closed]
    return Stats(
        accounts=len(ledger.accounts),
        channels={state.value: by_state.get(state.value, 0) for state in ChannelState},
        total_locked=sum(channel.locked for channel in ledger.channels),
        settled_total=sum(channel.vendor_credited for channel in ledger.channels),
        refunded_total=sum(channel.amount - channel.vendor_credited for channel in closed),
        receipts_issued=sum(len(channel.receipts) for channel in ledger.channels),
        supply=ledger.supply,
    )


# --- the vendor ---------------------------------------------------------------------------


class _Auditor:
    """Signs settlements of stored states so the mode's own settlement check can verify
    their proofs (the auditor holds no vendor key: it stands in for the vendor)."""

    def __init__(self) -> None:
        self.key = crypto.SigningKey.generate("ed25519")
        self.public_key_b64 = encoding.b64encode(self.key.public_key_der)

    def proof_ok(self, terms: ChannelTerms, state: PaymentState, nodes: list[bytes | None]) -> bool:
        rules = rules_for(terms.mode)
        as_auditor = msgspec.structs.replace(terms, vendor_public_key_der_b64=self.public_key_b64)
        try:
            body = rules.build_settlement(as_auditor, state, nodes, self.key)
            proved = rules.check_settlement(as_auditor, body)
        except (NanoMoniError, ValueError, TypeError, AssertionError):
            return False
        return proved.index == state.index


def settlement_node_keys(channel: VendorChannel) -> list[int]:
    """The Merkle nodes the audit needs to verify the channel's accepted proof."""
    if channel.state is None or channel.terms is None:
        return []
    return rules_for(channel.terms.mode).settlement_node_keys(channel.terms, channel.state)


def _within_terms(channel: VendorChannel) -> bool:
    state, terms = channel.state, channel.terms
    if state is None or terms is None:
        return True
    rules = rules_for(terms.mode)
    return (
        state.index >= 1
        and (terms.max_index is None or state.index <= terms.max_index)
        and state.owed == rules.owed(terms, state.index)
        and state.owed <= terms.amount
    )


def _settlement_ok(channel: VendorChannel) -> bool:
    settled = channel.settlement
    if settled is None:
        return True
    claimed = 0 if channel.state is None else channel.state.owed
    return channel.closing and settled.owed <= claimed


def audit_vendor(channels: Sequence[VendorChannel]) -> list[Finding]:
    """Every vendor check over the channels' records, in VENDOR_CHECKS order."""
    auditor = _Auditor()
    with_state = [c for c in channels if c.state is not None]
    proofs = [
        c.channel_id
        for c in with_state
        if c.terms is not None
        and c.state is not None
        and not auditor.proof_ok(c.terms, c.state, c.nodes)
    ]
    return [
        _finding("vendor_terms", [c.channel_id for c in with_state if c.terms is None]),
        _finding("vendor_within_terms", [c.channel_id for c in with_state if not _within_terms(c)]),
        _finding("vendor_proofs", proofs),
        _finding("vendor_settlements", [c.channel_id for c in channels if not _settlement_ok(c)]),
    ]
