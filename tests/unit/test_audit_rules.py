"""The audit's rules over hand-made records: a sound ledger passes, and each broken
invariant is named by its check (the stores' records: tests/contract/test_audit.py)."""

from __future__ import annotations

import msgspec

from nanomoni.protocol.audit import (
    ISSUER_CHECKS,
    Finding,
    Ledger,
    LedgerChannel,
    audit_ledger,
    ledger_stats,
)
from nanomoni.protocol.model import ChannelState, Receipt, ReceiptKind

AT = "2026-12-01T00:00:00.000000+00:00"


def receipt(seq: int, kind: ReceiptKind, amount: int, credited: int) -> Receipt:
    return Receipt(channel_id="c", kind=kind, amount=amount, owed=credited,
                   vendor_credited=credited, client_refund=0, seq=seq, at=AT)


def sound() -> Ledger:
    """Client granted 100 + deposited 20: 30 locked in an open channel (5 checkpointed),
    a closed channel of 40 that paid the vendor 15 and refunded 25."""
    live = LedgerChannel(
        channel_id="live", client="C", vendor="V", amount=30, state=ChannelState.open,
        vendor_credited=5, root=b"r1", settle_seq=None,
        receipts=(receipt(1, ReceiptKind.open, 30, 0), receipt(2, ReceiptKind.checkpoint, 30, 5)),
    )
    done = LedgerChannel(
        channel_id="done", client="C", vendor="V", amount=40, state=ChannelState.closed,
        vendor_credited=15, root=b"r2", settle_seq=2,
        receipts=(receipt(1, ReceiptKind.open, 40, 0), receipt(2, ReceiptKind.settlement, 40, 15)),
    )
    # C: 120 - 30 - 40 + 25 = 75; V: 5 + 15 = 20; locked 25: 75 + 20 + 25 = 120
    return Ledger(accounts={"C": 75, "V": 20}, supply=120, channels=[live, done],
                  roots=[b"r1", b"r2"])


def failed(ledger: Ledger) -> dict[str, list[str]]:
    found = audit_ledger(ledger)
    assert [f.check for f in found] == list(ISSUER_CHECKS)
    return {f.check: f.violations for f in found if not f.ok}


def changed(ledger: Ledger, name: str, **changes: object) -> Ledger:
    channels = [msgspec.structs.replace(c, **changes) if c.channel_id == name else c
                for c in ledger.channels]
    return msgspec.structs.replace(ledger, channels=channels)


def test_a_sound_ledger_passes_and_gives_its_stats() -> None:
    assert failed(sound()) == {}
    stats = ledger_stats(sound())
    assert stats.channels == {"open": 1, "closing": 0, "closed": 1}
    assert (stats.total_locked, stats.settled_total, stats.refunded_total) == (25, 20, 25)
    assert stats.receipts_issued == 4 and stats.accounts == 2 and stats.supply == 120


def test_a_closed_channel_still_counted_open() -> None:
    # Its settlement refunded the client, yet it would still lock 25: counted twice.
    found = failed(changed(sound(), "done", state=ChannelState.open))
    assert found == {
        "conservation": ["balances 95 + locked 50 = 145 != grants + deposits 120"],
        "closed": ["done"],
        "settlements": ["done"],
    }


def test_a_reused_root_and_an_unrecorded_one() -> None:
    assert failed(changed(sound(), "done", root=b"r1")) == {"roots": ["live", "done"]}
    unrecorded = msgspec.structs.replace(sound(), roots=[b"r1"])
    assert failed(unrecorded) == {"roots": ["done"]}


def test_receipts_out_of_order_and_a_second_open() -> None:
    live = sound().channels[0]
    swapped = changed(sound(), "live", receipts=live.receipts[::-1])
    assert set(failed(swapped)) == {"receipts", "locked"}  # the latest is now the open
    reopened = changed(sound(), "live", receipts=(
        live.receipts[0], receipt(2, ReceiptKind.open, 30, 5)))
    assert failed(reopened) == {"receipts": ["live"]}


def test_a_negative_balance_and_an_unknown_vendor() -> None:
    ledger = sound()
    negative = msgspec.structs.replace(ledger, accounts={"C": -1, "V": 96})
    assert failed(negative) == {"accounts": ["C"]}
    stranger = changed(ledger, "live", vendor="W")
    assert failed(stranger) == {"accounts": ["live"]}


def test_a_finalized_channel_has_no_settlement_to_point_at() -> None:
    done = sound().channels[1]
    finalized = changed(sound(), "done", settle_seq=None, receipts=(
        done.receipts[0], receipt(2, ReceiptKind.finalization, 40, 15)))
    assert failed(finalized) == {}
    pointing = changed(sound(), "done", settle_seq=1)  # at the open receipt
    assert failed(pointing) == {"settlements": ["done"]}


def test_a_report_line_names_the_first_few() -> None:
    assert Finding("roots", []).line() == "roots: ok"
    many = Finding("locked", ["a", "b", "c", "d"])
    assert many.line() == "locked: 4 violation(s): a, b, c, ..."
