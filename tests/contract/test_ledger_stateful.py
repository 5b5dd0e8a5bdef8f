"""Random register/deposit/open/pay/close/settle sequences against a model.

After every step: the store agrees with the model, and money is conserved
(Σ balances + Σ amounts locked in open channels = Σ grants + Σ deposits).
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import uvloop
from contract.conftest import Backend
from contract.factories import closure, state, terms
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import CasOutcome, Closure, PaymentState
from nanomoni.store import IssuerStore, VendorStore, open_issuer_store, open_vendor_store

T = TypeVar("T")

KEYS = ["key-alice", "key-bob", "key-carol", "key-dave"]
ROOTS = [None, *(bytes([n]) * 32 for n in range(1, 5))]
DIGESTS = [b"proof-1", b"proof-2"]
EXAMPLES = {"sqlite": 60, "redis": 80, "cluster": 15}


@dataclass
class ChannelModel:
    client: str
    vendor: str
    amount: int
    best: PaymentState | None = None
    closing: bool = False
    settled: Closure | None = None


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

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)

    def teardown(self) -> None:
        self.run(self.issuer.close())
        self.run(self.vendor.close())
        self.loop.close()

    @initialize()
    def register_a_vendor(self) -> None:
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

    @rule(
        target=channels,
        client=st.sampled_from(KEYS),
        vendor=st.sampled_from(KEYS),
        amount=st.integers(1, 400),
        root=st.sampled_from(ROOTS),
    )
    def open(self, client: str, vendor: str, amount: int, root: bytes | None) -> object:
        channel = terms(client, vendor, amount, root=root)
        expected: Code | None = None
        if client not in self.balances or vendor not in self.balances:
            expected = Code.not_registered
        elif self.balances[client] < amount:
            expected = Code.insufficient_balance
        elif root is not None and root in self.used_roots:
            expected = Code.commitment_reused
        try:
            account = self.run(self.issuer.open_channel(channel)).account
        except NanoMoniError as refused:
            assert refused.code is expected
            return multiple()
        assert expected is None
        self.balances[client] -= amount
        if root is not None:
            self.used_roots.add(root)
        self.model[channel.channel_id] = ChannelModel(client, vendor, amount)
        assert account.balance == self.balances[client]
        return channel.channel_id

    @rule(channel_id=channels, fraction=st.floats(0.01, 1.0))
    def pay(self, channel_id: str, fraction: float) -> None:
        channel = self.model[channel_id]
        index = max(1, int(channel.amount * fraction))
        new = state(index)
        result = self.run(self.vendor.compare_and_set(channel_id, new, {index: bytes(32)}))
        if channel.closing:
            assert result.outcome is CasOutcome.closing
        elif channel.best is not None and channel.best.index >= index:
            assert result.outcome is CasOutcome.lost and result.current == channel.best
        else:
            assert result.outcome is CasOutcome.stored
            channel.best = new

    @rule(channel_id=channels)
    def begin_close(self, channel_id: str) -> None:
        channel = self.model[channel_id]
        assert self.run(self.vendor.begin_close(channel_id)) == channel.best
        channel.closing = channel.closing or channel.best is not None

    @rule(channel_id=channels, digest=st.sampled_from(DIGESTS))
    def settle(self, channel_id: str, digest: bytes) -> None:
        channel = self.model[channel_id]
        owed = channel.best.owed if channel.best is not None else 0
        try:
            answer = self.run(self.issuer.settle(channel_id, closure(owed, digest)))
        except NanoMoniError as refused:
            assert refused.code is Code.already_closed
            assert channel.settled is not None and channel.settled.proof_digest != digest
            return
        if channel.settled is not None:
            assert answer == channel.settled and digest == channel.settled.proof_digest
            return
        self.balances[channel.client] += channel.amount - owed
        self.balances[channel.vendor] += owed
        assert answer.client_balance == self.balances[channel.client]
        assert answer.vendor_balance == self.balances[channel.vendor]
        channel.settled = answer
        # The vendor records the issuer's answer; its channel takes no more payments.
        self.run(self.vendor.record_settlement(channel_id, answer))
        channel.closing = True

    @invariant()
    def money_is_conserved_and_stores_match_the_model(self) -> None:
        total = 0
        for key, balance in self.balances.items():
            account = self.run(self.issuer.get_account(key))
            assert account is not None and account.balance == balance
            total += account.balance
        for channel_id, channel in self.model.items():
            stored = self.run(self.issuer.get_channel(channel_id))
            assert stored is not None and stored.closure == channel.settled
            view = self.run(self.vendor.load(channel_id))
            assert (view.state, view.closing) == (channel.best, channel.closing)
            assert self.run(self.vendor.settlement(channel_id)) == channel.settled
            if not stored.is_closed:
                total += stored.terms.amount
        assert total == self.issued


def test_random_ledger_histories_conserve_money(backend: Backend) -> None:
    machine = type("Ledger", (LedgerMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[backend.name],
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
