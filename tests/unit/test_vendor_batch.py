"""The vendor's batch engine without HTTP (SPEC §12): redo after a failed presumed
check, store failures, the failed-work budget, lost races, collapse to one write."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, b64url_nopad
from nanomoni.protocol.model import CasResult, ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import RULES, Payer
from nanomoni.store import StoreUnavailable, open_vendor_store
from nanomoni.store.base import VendorStore
from nanomoni.vendor.core import Vendor, VendorConfig

CLIENT = "192.0.2.1"  # only a key of the budget: nothing is sent anywhere


class Shop:
    """A vendor whose channels are known (no issuer needed) on a SQLite store."""

    def __init__(self, vendor: Vendor) -> None:
        self.vendor = vendor
        self.key = crypto.SigningKey.generate("ed25519")

    def channel(self, mode: Mode, max_index: int = 64) -> Payer:
        rules = RULES[mode]
        payer = rules.create_payer(self.key, max_index=max_index, hash_alg="sha256")
        payer.channel_id = b64url_nopad(os.urandom(32))
        committed = rules.members is not None
        self.vendor._terms[payer.channel_id] = ChannelTerms(
            id=str(uuid.uuid4()),
            channel_id=payer.channel_id,
            mode=mode,
            client_public_key_der_b64=b64encode(self.key.public_key_der),
            vendor_public_key_der_b64=self.vendor.public_key_b64,
            salt_b64="",
            amount=max_index,
            hash_alg="sha256",
            created_at="",
            root=payer.root,
            unit_value=1 if committed else None,
            max_index=max_index if committed else None,
        )
        return payer

    async def pay(self, mode: Mode, payments: Sequence[Any]) -> list[Any]:
        body = wire.encode_batch([(RULES[mode], payment) for payment in payments])
        return await self.vendor.pay_many(wire.decode_batch(body), CLIENT)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    vendor = Vendor(VendorConfig(data_dir=tmp_path, issuer_url="http://127.0.0.1:9"))
    vendor._store = await open_vendor_store(f"sqlite:{tmp_path / 'vendor.sqlite3'}")
    yield Shop(vendor)
    await vendor.store.close()


def statuses(results: list[Any]) -> list[int]:
    return [result.status for result in results]


async def test_a_failed_check_is_decided_again_exactly(shop: Shop) -> None:
    payword = shop.channel(Mode.payword)
    one, two, three = payword.payments([1, 2, 3])
    forged = msgspec.structs.replace(two, token=os.urandom(32))
    # 3's token chains to 1's as well: it is judged against the state 1 left.
    results = await shop.pay(Mode.payword, [one, forged, three])
    assert statuses(results) == [201, 400, 201] and results[1].code == "invalid_proof"

    pruned = shop.channel(Mode.paytree_first_opt)
    first, second, third = pruned.payments([1, 2, 3])
    wrong = msgspec.structs.replace(second, secret=os.urandom(32))
    # 3's pruned proof assumed 2 was accepted: it fails too, nothing else changes.
    results = await shop.pay(Mode.paytree_first_opt, [first, wrong, third])
    assert statuses(results) == [201, 400, 400]
    view = await shop.vendor.store.load(pruned.channel_id)
    assert view.state is not None and view.state.index == 1


async def test_one_write_per_channel_of_its_last_accepted_state(shop: Shop) -> None:
    payers = [shop.channel(mode) for mode in Mode]
    batch: list[tuple[Mode, Any]] = []
    for payer, mode in zip(payers, Mode, strict=True):
        batch += [(mode, payment) for payment in payer.payments([1, 2, 5])]
    body = wire.encode_batch([(RULES[mode], payment) for mode, payment in batch])
    writes: list[int] = []
    store = shop.vendor.store
    original = store.compare_and_set_many

    async def counting(items: Sequence[tuple[str, int, PaymentState, Mapping[int, bytes]]]) -> Any:
        writes.append(len(items))
        return await original(items)

    store.compare_and_set_many = counting  # type: ignore[method-assign]
    results = await shop.vendor.pay_many(wire.decode_batch(body), CLIENT)
    assert statuses(results) == [201] * len(batch)
    assert writes == [len(payers)]  # one round trip, one compare-and-set per channel
    for payer in payers:
        view = await store.load(payer.channel_id)
        assert view.state is not None and view.state.index == 5


class FailingWrites:
    """A store whose writes fail (StoreUnavailable) for the channels named."""

    def __init__(self, store: VendorStore, failing: set[str]) -> None:
        self.store = store
        self.failing = failing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def compare_and_set_many(
        self, writes: Sequence[tuple[str, int, PaymentState, Mapping[int, bytes]]]
    ) -> list[CasResult | StoreUnavailable]:
        kept = [write for write in writes if write[0] not in self.failing]
        done = iter(await self.store.compare_and_set_many(kept))
        return [
            StoreUnavailable("test outage") if write[0] in self.failing else next(done)
            for write in writes
        ]


async def test_a_store_failure_is_the_503_of_the_items_it_touched(shop: Shop) -> None:
    healthy, broken = shop.channel(Mode.payword), shop.channel(Mode.payword)
    (first,) = broken.payments([1])
    assert statuses(await shop.pay(Mode.payword, [first])) == [201]
    shop.vendor._store = FailingWrites(shop.vendor.store, {broken.channel_id})  # type: ignore[assignment]
    ok = healthy.payments([1, 2])
    more = broken.payments([2, 3])
    old = msgspec.structs.replace(first, k=1)
    results = await shop.pay(Mode.payword, [ok[0], old, more[0], ok[1], more[1]])
    # The replay of the stored state stands; the writes of the broken channel failed.
    assert statuses(results) == [201, 200, 503, 201, 503]
    assert results[2].code == "store_unavailable"


async def test_expensive_failures_spend_the_budget_of_batch_items(shop: Shop) -> None:
    payer = shop.channel(Mode.payword, max_index=2**20)
    vendor = shop.vendor
    vendor.budget.per_client = vendor.budget.per_worker = 3 * (crypto.INLINE_HASHES + 1)
    far = crypto.INLINE_HASHES + 1
    (payment,) = payer.payments([far])
    forged = msgspec.structs.replace(payment, token=os.urandom(32))
    results = await shop.pay(Mode.payword, [forged, forged, forged, forged])
    assert [r.code for r in results] == ["invalid_proof"] * 3 + ["rate_limited"]
    assert results[3].status == 429


class RacingStore:
    """A store on which another writer stores a higher state just before our first write."""

    def __init__(self, store: VendorStore, ahead: tuple[str, PaymentState]) -> None:
        self.store = store
        self.ahead: tuple[str, PaymentState] | None = ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def compare_and_set_many(self, writes: Any) -> Any:
        if self.ahead is not None:
            channel_id, state = self.ahead
            self.ahead = None
            await self.store.compare_and_set(channel_id, state, {})
        return await self.store.compare_and_set_many(writes)


async def test_a_lost_race_is_decided_again_on_the_new_state(shop: Shop) -> None:
    payer = shop.channel(Mode.payword)
    payments = payer.payments([1, 2, 3, 4, 5, 6])
    racer = PaymentState(index=4, owed=4, proof=payments[3].token, created_at="earlier")
    shop.vendor._store = RacingStore(shop.vendor.store, (payer.channel_id, racer))  # type: ignore[assignment]
    results = await shop.pay(Mode.payword, [payments[1], payments[3], payments[5]])
    # Read again after the race: 2 is behind, 4 is the racer's exact payment, 6 goes on.
    assert statuses(results) == [400, 200, 201]
    assert results[0].code == "non_monotonic" and results[1].created_at == "earlier"
    view = await shop.vendor.store.load(payer.channel_id)
    assert view == VendorView(state=view.state, nodes=[], closing=False)
    assert view.state is not None and view.state.index == 6
