"""Races: many callers on two store instances (two connections / two SQLite writers)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from contract.factories import closure, new_channel_id, new_key, opened_channel, state, terms

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import CasOutcome, CasResult, Settled
from nanomoni.store import IssuerStore, VendorStore, open_issuer_store, open_vendor_store


@pytest.fixture
async def issuers(store_url: str) -> AsyncIterator[list[IssuerStore]]:
    stores = [await open_issuer_store(store_url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


@pytest.fixture
async def vendors(store_url: str) -> AsyncIterator[list[VendorStore]]:
    stores = [await open_vendor_store(store_url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


async def test_50_concurrent_opens_with_room_for_10(issuers: list[IssuerStore]) -> None:
    client, vendor = new_key(), new_key()
    await issuers[0].register(client, 100)
    await issuers[0].register(vendor, 0)
    channels = [terms(client, vendor, 10) for _ in range(50)]
    outcomes = await asyncio.gather(
        *(issuers[n % 2].open_channel(channel) for n, channel in enumerate(channels)),
        return_exceptions=True,
    )
    opened = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(opened) == 10
    assert all(
        isinstance(r, NanoMoniError) and r.code is Code.insufficient_balance for r in refused
    )
    # Each success saw its own debit: balances after debit are 90, 80, ..., 0 in some order.
    assert sorted(done.account.balance for done in opened) == list(range(0, 100, 10))
    account = await issuers[1].get_account(client)
    assert account is not None and account.balance == 0
    stored = [await issuers[0].get_channel(c.channel_id) for c in channels]
    assert sum(1 for channel in stored if channel is not None) == 10


async def test_10_concurrent_settlements_move_money_once(issuers: list[IssuerStore]) -> None:
    client, vendor, channel = await opened_channel(issuers[0], 80)
    answers = await asyncio.gather(
        *(issuers[n % 2].settle(channel.channel_id, closure(30)) for n in range(10))
    )
    assert sum(not answer.replayed for answer in answers) == 1
    first = next(answer for answer in answers if not answer.replayed)
    assert all(answer.closure == first.closure for answer in answers)
    assert all(answer.receipt == first.receipt for answer in answers)
    assert (first.client_balance, first.vendor_balance) == (70, 30)
    client_account = await issuers[1].get_account(client)
    vendor_account = await issuers[1].get_account(vendor)
    assert client_account is not None and client_account.balance == 70
    assert vendor_account is not None and vendor_account.balance == 30


async def test_competing_settlements_have_one_winner(issuers: list[IssuerStore]) -> None:
    client, vendor, channel = await opened_channel(issuers[0], 80)
    outcomes = await asyncio.gather(
        *(
            issuers[n % 2].settle(channel.channel_id, closure(n + 1, f"proof-{n}".encode()))
            for n in range(10)
        ),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, Settled)]
    losers = [o for o in outcomes if not isinstance(o, Settled)]
    assert len(winners) == 1
    assert all(isinstance(r, NanoMoniError) and r.code is Code.already_closed for r in losers)
    owed = winners[0].receipt.owed
    vendor_account = await issuers[1].get_account(vendor)
    client_account = await issuers[1].get_account(client)
    assert vendor_account is not None and vendor_account.balance == owed
    assert client_account is not None and client_account.balance == 100 - owed


async def test_200_shuffled_compare_and_sets_keep_the_maximum(vendors: list[VendorStore]) -> None:
    cid = new_channel_id()
    indices = list(range(1, 201))
    random.Random(7).shuffle(indices)
    observed: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        # A reader that keeps loading: what it sees must never go backwards.
        while not done.is_set():
            view = await vendors[1].load(cid)
            observed.append(view.state.index if view.state else 0)
            await asyncio.sleep(0)

    async def pay(n: int, index: int) -> CasResult:
        return await vendors[n % 2].compare_and_set(cid, state(index), {index: bytes(32)})

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(pay(n, index) for n, index in enumerate(indices)))
    done.set()
    await watcher

    final = await vendors[0].load(cid, [200])
    assert final.state == state(200)
    assert final.nodes == [bytes(32)]
    assert observed == sorted(observed)
    for index, result in zip(indices, results, strict=True):
        if result.outcome is CasOutcome.lost:
            assert result.current is not None and result.current.index >= index
        else:
            assert result.outcome is CasOutcome.stored
    assert any(r.outcome is CasOutcome.stored for r in results)


async def test_payments_racing_begin_close_never_land_after_it(
    vendors: list[VendorStore],
) -> None:
    cid = new_channel_id()
    await vendors[0].compare_and_set(cid, state(1), {})

    async def pay(index: int) -> CasResult:
        return await vendors[index % 2].compare_and_set(cid, state(index), {})

    tasks = [asyncio.create_task(pay(index)) for index in range(2, 60)]
    await asyncio.sleep(0)
    closed_at = await vendors[1].begin_close(cid)
    results = await asyncio.gather(*tasks)
    assert closed_at is not None
    final = await vendors[0].load(cid)
    # The state returned by begin_close is the final one: nothing was stored after it.
    assert final.state == closed_at and final.closing
    assert all(
        r.outcome is not CasOutcome.stored or index <= closed_at.index
        for index, r in zip(range(2, 60), results, strict=True)
    )
