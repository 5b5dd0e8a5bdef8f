"""The vendor's budgets of failed expensive verification (SPEC §6 rate_limited)."""

from __future__ import annotations

import pytest

from nanomoni.errors import Code, NanoMoniError
from nanomoni.vendor.budget import HashBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(budget: HashBudget, channel: str, client: str) -> NanoMoniError:
    with pytest.raises(NanoMoniError) as caught:
        budget.check(channel, client, 2**20)
    assert caught.value.code is Code.rate_limited and caught.value.status == 429
    return caught.value


def test_a_client_spends_its_own_budget_on_one_channel() -> None:
    clock = Clock()
    budget = HashBudget(per_client=2**24, per_worker=2**30, clock=clock)
    for _ in range(16):
        budget.check("c1", "10.0.0.1", 2**20)
        budget.spend("c1", "10.0.0.1", 2**20)
    error = refused(budget, "c1", "10.0.0.1")
    # Refilled at 2^24 per minute: one 2^20 failure's worth in 60/16 s, so ~4 s.
    assert error.retry_after is not None and 1 <= error.retry_after <= 4
    clock.now += 0.2  # 2^24 / 60 / 5 ≈ 56k hashes come back
    budget.check("c1", "10.0.0.1", 2**15)  # a smaller walk fits what refilled
    refused(budget, "c1", "10.0.0.1")
    # Another address on the same channel, or the same address on another channel: unaffected.
    budget.check("c1", "10.0.0.2", 2**20)
    budget.check("c2", "10.0.0.1", 2**20)
    clock.now += 3.8
    budget.check("c1", "10.0.0.1", 2**20)


def test_the_worker_budget_bounds_many_addresses_together() -> None:
    clock = Clock()
    budget = HashBudget(per_client=2**24, per_worker=2**22, clock=clock)
    for n in range(4):
        budget.check("c1", f"10.0.0.{n}", 2**20)
        budget.spend("c1", f"10.0.0.{n}", 2**20)
    refused(budget, "c9", "10.9.9.9")  # a newcomer too: the worker's budget is spent
    clock.now += 60
    budget.check("c9", "10.9.9.9", 2**20)


def test_remembered_clients_are_bounded() -> None:
    budget = HashBudget(per_client=2**20, per_worker=2**40, max_clients=3, clock=Clock())
    for n in range(10):
        budget.spend("c", f"addr-{n}", 2**20)
    assert len(budget._clients) == 3
    refused(budget, "c", "addr-9")
    budget.check("c", "addr-0", 2**20)  # forgotten: starts afresh
