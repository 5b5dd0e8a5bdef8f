"""VendorStore contract for the paywall's step (SPEC §11): credit = owed − consumed,
consumed += price atomically with the payment's compare-and-set, paid request ids
remembered for a while, refunds, and no record for channels without a payment."""

from __future__ import annotations

import asyncio

import pytest
from contract.factories import new_channel_id, state

from nanomoni.errors import NanoMoniError
from nanomoni.protocol.model import CasOutcome
from nanomoni.store import VendorStore
from nanomoni.store.base import Charge, ChargeOutcome

NODE = (2 << 32) | 3


async def test_payment_and_charge_are_one_step(vendor: VendorStore) -> None:
    cid = new_channel_id()
    charged = await vendor.charge(cid, 3, new=state(10), nodes={NODE: b"n" * 32})
    assert charged == Charge(outcome=ChargeOutcome.charged, owed=10, consumed=3)
    view = await vendor.load(cid, [NODE])
    assert view.state == state(10) and view.nodes == [b"n" * 32]
    # Credit alone (no payment) pays further requests until it runs out.
    assert (await vendor.charge(cid, 7)).consumed == 10
    refused = await vendor.charge(cid, 1)
    assert refused == Charge(outcome=ChargeOutcome.insufficient, owed=10, consumed=10)
    assert await vendor.credit(cid) == Charge(outcome=ChargeOutcome.charged, owed=10, consumed=10)


async def test_a_payment_that_is_not_enough_stays_stored(vendor: VendorStore) -> None:
    cid = new_channel_id()
    refused = await vendor.charge(cid, 5, new=state(4))
    assert refused == Charge(outcome=ChargeOutcome.insufficient, owed=4, consumed=0)
    assert (await vendor.load(cid)).state == state(4)  # the prepaid credit is kept
    assert (await vendor.charge(cid, 5, new=state(9))).consumed == 5


async def test_minimum_guards_without_charging_more(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 0, new=state(5))
    assert (await vendor.charge(cid, 0, minimum=6)).outcome is ChargeOutcome.insufficient
    admitted = await vendor.charge(cid, 0, minimum=5)
    assert admitted == Charge(outcome=ChargeOutcome.charged, owed=5, consumed=0)
    assert (await vendor.charge(cid, 2, minimum=5)).consumed == 2
    assert (await vendor.charge(cid, 1, minimum=4)).outcome is ChargeOutcome.insufficient


async def test_lost_and_closing_payments_change_nothing(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 1, new=state(8))
    lost = await vendor.charge(cid, 1, new=state(8, proof=b"other"), nodes={NODE: b"x" * 32})
    assert lost.outcome is ChargeOutcome.lost and lost.current == state(8)
    assert (await vendor.credit(cid)).consumed == 1
    assert (await vendor.nodes(cid, [NODE])) == [None]
    await vendor.begin_close(cid)
    closing = await vendor.charge(cid, 1, new=state(9))
    assert closing.outcome is ChargeOutcome.closing and closing.current == state(8)
    assert (await vendor.load(cid)).state == state(8)
    # Credit already paid may still be spent while the channel settles with its best proof.
    assert (await vendor.charge(cid, 2)).consumed == 3


async def test_request_id_is_charged_once(vendor: VendorStore) -> None:
    cid = new_channel_id()
    first = await vendor.charge(cid, 4, new=state(20), request_id="r" * 16)
    assert first == Charge(outcome=ChargeOutcome.charged, owed=20, consumed=4)
    again = await vendor.charge(cid, 4, new=state(30), request_id="r" * 16)
    assert again == Charge(outcome=ChargeOutcome.repeated, owed=20, consumed=4)
    assert (await vendor.load(cid)).state == state(20)  # a repeat changes nothing
    other = await vendor.charge(cid, 4, request_id="s" * 16)
    assert other.outcome is ChargeOutcome.charged and other.consumed == 8
    # Ids are per channel.
    elsewhere = new_channel_id()
    await vendor.charge(elsewhere, 0, new=state(5))
    assert (await vendor.charge(elsewhere, 1, request_id="r" * 16)).outcome is (
        ChargeOutcome.charged
    )


async def test_an_unpaid_request_id_is_not_remembered(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 0, new=state(2))
    assert (await vendor.charge(cid, 3, request_id="q" * 16)).outcome is (
        ChargeOutcome.insufficient
    )
    charged = await vendor.charge(cid, 3, new=state(3), request_id="q" * 16)
    assert charged.outcome is ChargeOutcome.charged and charged.consumed == 3


async def test_request_ids_expire(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 1, new=state(10), request_id="e" * 16, remember=0.05)
    await asyncio.sleep(0.3)
    assert (await vendor.charge(cid, 1, request_id="e" * 16)).outcome is ChargeOutcome.charged


async def test_concurrent_spends_never_share_credit(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 0, new=state(10))
    results = await asyncio.gather(*(vendor.charge(cid, 1) for _ in range(30)))
    served = [r for r in results if r.outcome is ChargeOutcome.charged]
    assert len(served) == 10
    assert sorted(r.consumed for r in served) == list(range(1, 11))
    assert (await vendor.credit(cid)).consumed == 10


async def test_concurrent_duplicates_are_charged_once(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 0, new=state(100))
    results = await asyncio.gather(*(vendor.charge(cid, 7, request_id="d" * 20) for _ in range(8)))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["charged"] + ["repeated"] * 7
    assert (await vendor.credit(cid)).consumed == 7


async def test_refund_gives_back_and_forgets_the_request(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.charge(cid, 5, new=state(10), request_id="f" * 16)
    back = await vendor.refund(cid, 5, "f" * 16)
    assert back == Charge(outcome=ChargeOutcome.charged, owed=10, consumed=0)
    again = await vendor.charge(cid, 5, request_id="f" * 16)
    assert again.outcome is ChargeOutcome.charged and again.consumed == 5
    # Never below zero, and a channel without anything is no record.
    assert (await vendor.refund(cid, 50)).consumed == 0
    empty = new_channel_id()
    assert (await vendor.refund(empty, 1)).consumed == 0
    assert (await vendor.load(empty)).state is None


async def test_no_credit_without_a_payment(vendor: VendorStore) -> None:
    cid = new_channel_id()
    refused = await vendor.charge(cid, 1, request_id="z" * 16)
    assert refused == Charge(outcome=ChargeOutcome.insufficient, owed=0, consumed=0)
    assert await vendor.credit(cid) == Charge(outcome=ChargeOutcome.charged)
    # Junk channel ids leave nothing behind: a later first payment is a normal one.
    assert (await vendor.compare_and_set(cid, state(1), {})).outcome is CasOutcome.stored


async def test_amounts_stay_exact_near_the_int64_limit(vendor: VendorStore) -> None:
    cid = new_channel_id()
    top = 2**63 - 1
    await vendor.charge(cid, 0, new=state(5, owed=top))
    assert (await vendor.charge(cid, top - 1)).consumed == top - 1
    assert (await vendor.charge(cid, 2)).outcome is ChargeOutcome.insufficient
    assert (await vendor.charge(cid, 1)).consumed == top
    assert (await vendor.charge(cid, top)).outcome is ChargeOutcome.insufficient
    assert (await vendor.credit(cid)).consumed == top


async def test_out_of_range_prices_are_refused(vendor: VendorStore) -> None:
    cid = new_channel_id()
    for price in (-1, 2**63):
        with pytest.raises(NanoMoniError):
            await vendor.charge(cid, price, new=state(1))
    assert (await vendor.load(cid)).state is None
