"""Random ledger histories against a model: register, deposit, open (with lifetimes that
have or have not run out, dispute windows that have or have not passed), pay, the
vendor's close, settlements and checkpoints (racing the dispute deadline: before it,
or after finalization), client closes, top-ups, expiries and finalization sweeps.

After every step the store agrees with the model, and
* money is conserved: Σ balances + Σ locked = Σ grants + Σ deposits, where a channel
  open or closing locks amount − vendor_credited (SPEC §4.5);
* a client is never refunded less than amount − owed of the best proof the vendor
  acknowledged (its accepted payment state);
* every money movement left one receipt, in order.

Time: a channel's expiry (ttl 0: already past, or an hour) and dispute window (0: its
deadline passes as it starts, or an hour) make what is due deterministic; the model
applies it eagerly, the store lazily on the next access or sweep — the same money.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import uvloop
from contract.conftest import Backend
from contract.factories import HOUR_US, closure, state, terms
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import CasOutcome, ChannelState, PaymentState, ReceiptKind, Settled
from nanomoni.store import IssuerStore, VendorStore, open_issuer_store, open_vendor_store

T = TypeVar("T")

KEYS = ["key-alice", "key-bob", "key-carol", "key-dave"]
ROOTS = [None, *(bytes([n]) * 32 for n in range(1, 5))]
NONCES = [bytes([n]) * 16 for n in range(1, 4)]
# Few channels per history, so that many steps meet on each (a checkpoint, then a
# top-up, then the deadline ...).
MAX_CHANNELS = 3
EXAMPLES = {"sqlite": 100, "redis": 80, "cluster": 15}
CLOSING_RECEIPTS = (ReceiptKind.settlement, ReceiptKind.finalization)


def digest_of(owed: int) -> bytes:
    """One proof per owed amount: the same owed is the same proof (a retry)."""
    return b"proof-%d" % owed


@dataclass
class ChannelModel:
    client: str
    vendor: str
    amount: int
    expired: bool  # ttl 0: past its expiry from the start
    instant: bool  # dispute window 0: its deadline passes as closing starts
    best: PaymentState | None = None  # the vendor's acknowledged (accepted) payment
    acknowledged: list[int] = field(default_factory=list)  # owed of every accepted payment
    vendor_closing: bool = False  # the vendor store's flag
    vendor_record: Settled | None = None  # what the vendor recorded of its settlement
    state: ChannelState = ChannelState.open
    credited: int = 0
    settled: Settled | None = None  # the answer of the final settlement, if one closed it
    kinds: list[ReceiptKind] = field(default_factory=lambda: [ReceiptKind.open])
    nonces: dict[bytes, bytes] = field(default_factory=dict)  # top-up nonce -> body digest

    @property
    def locked(self) -> int:
        return 0 if self.state is ChannelState.closed else self.amount - self.credited

    @property
    def best_owed(self) -> int:
        return self.best.owed if self.best is not None else 0


class LedgerMachine(RuleBasedStateMachine):
    backend: ClassVar[Backend]

    channels = Bundle("channels")

    def __init__(self) -> None:
        super().__init__()
        self.loop = uvloop.new_event_loop()
        url = self.backend.fresh_url()
        self.issuer: IssuerStore = self.run(open_issuer_store(url))
        self.vendor: VendorStore = self.run(open_vendor_store(url))
        self.balances: dict[str, int] = {}
        self.issued = 0
        self.model: dict[str, ChannelModel] = {}
        self.used_roots: set[bytes] = set()
        self.opened = 0  # channels the rules work on (sweeps open more, untouched)

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)

    def teardown(self) -> None:
        self.run(self.issuer.close())
        self.run(self.vendor.close())
        self.loop.close()

    def refused(self, step: Coroutine[Any, Any, Any], code: Code) -> None:
        try:
            self.run(step)
        except NanoMoniError as refusal:
            assert refusal.code is code, refusal
            return
        raise AssertionError(f"expected {code.value}")

    # --- what is due (the model applies it at once) ------------------------------------

    def finalize(self, channel: ChannelModel) -> None:
        self.balances[channel.client] += channel.amount - channel.credited
        channel.state = ChannelState.closed
        channel.kinds.append(ReceiptKind.finalization)

    def apply_due(self) -> None:
        for channel in self.model.values():
            if channel.state is ChannelState.open and channel.expired:
                channel.state = ChannelState.closing
            if channel.state is ChannelState.closing and channel.instant:
                self.finalize(channel)

    # --- accounts ------------------------------------------------------------------------

    @initialize(initial=st.lists(st.integers(0, 1000), min_size=3, max_size=3))
    def register_parties(self, initial: list[int]) -> None:
        """Three funded clients (the register rule may add more) and a vendor at 0."""
        for key, balance in zip(KEYS, initial, strict=False):
            self.register(key, balance)
        self.register(KEYS[-1], 0)

    @rule(key=st.sampled_from(KEYS), initial=st.integers(0, 1000))
    def register(self, key: str, initial: int) -> None:
        account = self.run(self.issuer.register(key, initial))
        if key not in self.balances:
            self.balances[key] = initial
            self.issued += initial
        assert account.balance == self.balances[key]

    @rule(key=st.sampled_from(KEYS), amount=st.integers(0, 500))
    def deposit(self, key: str, amount: int) -> None:
        account = self.run(self.issuer.deposit(key, amount))
        if key not in self.balances:
            assert account is None
            return
        self.balances[key] += amount
        self.issued += amount
        assert account is not None and account.balance == self.balances[key]

    # --- opening --------------------------------------------------------------------------

    @precondition(lambda self: self.opened < MAX_CHANNELS)
    @rule(
        target=channels,
        client=st.sampled_from(KEYS),
        vendor=st.sampled_from(KEYS),
        amount=st.integers(1, 400),
        root=st.sampled_from(ROOTS),
        expired=st.booleans(),
        instant=st.booleans(),
    )
    def open(
        self,
        client: str,
        vendor: str,
        amount: int,
        root: bytes | None,
        expired: bool,
        instant: bool,
    ) -> object:
        channel = terms(client, vendor, amount, root=root, ttl_us=0 if expired else HOUR_US)
        expected: Code | None = None
        if client not in self.balances or vendor not in self.balances:
            expected = Code.not_registered
        elif self.balances[client] < amount:
            expected = Code.insufficient_balance
        elif root is not None and root in self.used_roots:
            expected = Code.commitment_reused
        window = 0 if instant else HOUR_US
        try:
            opened = self.run(self.issuer.open_channel(channel, dispute_window_us=window))
        except NanoMoniError as refused:
            assert refused.code is expected
            return multiple()
        assert expected is None
        self.balances[client] -= amount
        if root is not None:
            self.used_roots.add(root)
        self.model[channel.channel_id] = ChannelModel(client, vendor, amount, expired, instant)
        self.opened += 1
        assert opened.account.balance == self.balances[client]
        assert opened.receipt.kind is ReceiptKind.open and opened.receipt.amount == amount
        self.apply_due()
        return channel.channel_id

    # --- the vendor -----------------------------------------------------------------------

    @rule(channel_id=channels, fraction=st.floats(0.01, 1.0))
    def pay(self, channel_id: str, fraction: float) -> None:
        channel = self.model[channel_id]
        index = max(1, int(channel.amount * fraction))
        new = state(index)
        result = self.run(self.vendor.compare_and_set(channel_id, new, {index: bytes(32)}))
        if channel.vendor_closing:
            assert result.outcome is CasOutcome.closing
        elif channel.best is not None and channel.best.index >= index:
            assert result.outcome is CasOutcome.lost and result.current == channel.best
        else:
            assert result.outcome is CasOutcome.stored
            channel.best = new
            channel.acknowledged.append(new.owed)

    @rule(channel_id=channels, fraction=st.floats(0.01, 1.0))
    def pay_then_checkpoint(self, channel_id: str, fraction: float) -> None:
        """What a vendor's checkpoint task does: withdraw what the best payment owes."""
        self.pay(channel_id, fraction)
        acknowledged = self.model[channel_id].acknowledged
        self.settle(channel_id, len(acknowledged) - 1, final=False)

    @rule(channel_id=channels)
    def begin_close(self, channel_id: str) -> None:
        channel = self.model[channel_id]
        assert self.run(self.vendor.begin_close(channel_id)) == channel.best
        channel.vendor_closing = channel.vendor_closing or channel.best is not None

    # Checkpoints twice as often as final settlements: a final one ends the channel's story.
    @rule(
        channel_id=channels,
        pick=st.integers(0, 10**6),
        final=st.sampled_from([True, False, False]),
    )
    def settle(self, channel_id: str, pick: int, final: bool) -> None:
        """A settlement or checkpoint with one of the proofs the vendor acknowledged."""
        channel = self.model[channel_id]
        acknowledged = channel.acknowledged or [0]
        owed = acknowledged[pick % len(acknowledged)]
        step = self.issuer.settle(channel_id, closure(owed, digest_of(owed)), final=final)
        if channel.state is ChannelState.closed and final:
            if channel.settled is None or channel.settled.receipt.owed != owed:
                self.refused(step, Code.already_closed)  # finalized, or another proof
                return
            answer = self.run(step)
            assert answer.replayed and answer.receipt == channel.settled.receipt
            assert answer.closure == channel.settled.closure
            return
        if not final and channel.state is not ChannelState.open:
            self.refused(step, Code.channel_closed)
            return
        answer = self.run(step)
        if final:
            credited = max(owed, channel.credited)
            self.balances[channel.vendor] += credited - channel.credited
            self.balances[channel.client] += channel.amount - credited
            channel.credited, channel.state = credited, ChannelState.closed
            channel.kinds.append(ReceiptKind.settlement)
            channel.settled = answer
            assert not answer.replayed and answer.closure is not None
            assert answer.receipt.client_refund == channel.amount - credited
            # The vendor records the issuer's answer; its channel takes no more payments.
            self.run(self.vendor.record_settlement(channel_id, answer.closure))
            channel.vendor_record, channel.vendor_closing = answer, True
        elif owed <= channel.credited:
            assert answer.replayed and answer.receipt.vendor_credited == channel.credited
        else:
            self.balances[channel.vendor] += owed - channel.credited
            channel.credited = owed
            channel.kinds.append(ReceiptKind.checkpoint)
            assert not answer.replayed and answer.receipt.vendor_credited == owed
        assert answer.client_balance == self.balances[channel.client] or final
        assert answer.vendor_balance == self.balances[channel.vendor] or final
        self.apply_due()

    # --- the client ---------------------------------------------------------------------------

    @rule(channel_id=channels)
    def client_close(self, channel_id: str) -> None:
        channel = self.model[channel_id]
        found = self.run(self.issuer.client_close(channel_id))
        if channel.state is ChannelState.open:
            channel.state = ChannelState.closing
        assert found.state is channel.state
        self.apply_due()

    @rule(
        channel_id=channels,
        amount=st.integers(1, 300),
        nonce=st.sampled_from(NONCES),
        variant=st.integers(0, 1),
    )
    def top_up(self, channel_id: str, amount: int, nonce: bytes, variant: int) -> None:
        channel = self.model[channel_id]
        digest = b"%d-%d" % (amount, variant)
        step = self.issuer.top_up(channel_id, amount, nonce, digest.ljust(32, b"."))
        earlier = channel.nonces.get(nonce)
        if earlier is not None:
            if earlier != digest:
                self.refused(step, Code.duplicate_mismatch)
            else:
                assert self.run(step).replayed
            return
        if channel.state is not ChannelState.open:
            self.refused(step, Code.channel_closed)
            return
        if self.balances[channel.client] < amount:
            self.refused(step, Code.insufficient_balance)
            return
        topped = self.run(step)
        assert not topped.replayed and topped.receipt.kind is ReceiptKind.top_up
        self.balances[channel.client] -= amount
        channel.amount += amount
        channel.nonces[nonce] = digest
        channel.kinds.append(ReceiptKind.top_up)
        assert topped.channel.terms.amount == channel.amount == topped.receipt.amount

    @rule(client=st.sampled_from(KEYS[:3]), count=st.integers(0, 2))
    def finalization_sweep(self, client: str, count: int) -> None:
        """A sweep, after opening `count` channels past expiry and deadline that nothing
        touches before it."""
        count = min(count, self.balances.get(client, 0))
        for _ in range(count):
            channel = terms(client, KEYS[-1], 1, ttl_us=0)
            self.run(self.issuer.open_channel(channel, dispute_window_us=0))
            self.balances[client] -= 1
            self.model[channel.channel_id] = ChannelModel(client, KEYS[-1], 1, True, True)
        swept = 0
        while done := self.run(self.issuer.finalize_due(3)):
            swept += done
        assert swept >= count
        assert self.run(self.issuer.overdue()) == 0
        self.apply_due()

    # --- after every step -------------------------------------------------------------------

    @invariant()
    def money_is_conserved_and_stores_match_the_model(self) -> None:
        total = 0
        for key, balance in self.balances.items():
            account = self.run(self.issuer.get_account(key))
            assert account is not None and account.balance == balance
            total += account.balance
        for channel_id, channel in self.model.items():
            stored = self.run(self.issuer.get_channel(channel_id))
            assert stored is not None
            assert stored.state is channel.state, (stored.state, channel)
            assert stored.terms.amount == channel.amount
            assert stored.vendor_credited == channel.credited
            assert [receipt.kind for receipt in stored.receipts] == channel.kinds
            assert [receipt.seq for receipt in stored.receipts] == list(
                range(1, len(channel.kinds) + 1)
            )
            if channel.settled is not None:
                assert stored.closure == channel.settled.closure
            view = self.run(self.vendor.load(channel_id))
            assert (view.state, view.closing) == (channel.best, channel.vendor_closing)
            recorded = self.run(self.vendor.settlement(channel_id))
            expected = channel.vendor_record.closure if channel.vendor_record else None
            assert recorded == expected
            total += stored.locked
            assert stored.locked == channel.locked
            if stored.is_closed:
                final = stored.receipts[-1]
                assert final.kind in CLOSING_RECEIPTS
                assert final.client_refund == channel.amount - channel.credited
                assert final.client_refund >= channel.amount - channel.best_owed
        assert total == self.issued
        for vendor in self.balances:
            listed = self.run(self.issuer.closing_channels(vendor))
            assert {c.terms.channel_id for c in listed.channels} == {
                channel_id
                for channel_id, channel in self.model.items()
                if channel.vendor == vendor and channel.state is ChannelState.closing
            }


def test_random_ledger_histories_conserve_money(backend: Backend) -> None:
    machine = type("Ledger", (LedgerMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[backend.name],
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
