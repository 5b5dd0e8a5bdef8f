"""The client's protection in the issuer store (SPEC §4.5–§4.6), on every backend:
expiry, client close, dispute deadline, finalization, checkpoints, top-ups and
receipts — each step atomic, exactly once, judged with the store's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from contract.factories import HOUR_US, closure, new_channel_id, new_key, opened_channel, terms

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.lifecycle import us_from_iso
from nanomoni.protocol.model import ChannelState, IssuerChannel, Mode, ReceiptKind, Settled
from nanomoni.store import IssuerStore, open_issuer_store

SECOND_US = 1_000_000


async def channel(issuer: IssuerStore, channel_id: str) -> IssuerChannel:
    found = await issuer.get_channel(channel_id)
    assert found is not None
    return found


async def balance(issuer: IssuerStore, key: str) -> int:
    account = await issuer.get_account(key)
    assert account is not None
    return account.balance


async def refused(call: object, code: Code) -> NanoMoniError:
    assert asyncio.iscoroutine(call)
    with pytest.raises(NanoMoniError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value


def kinds(found: IssuerChannel) -> list[ReceiptKind]:
    return [receipt.kind for receipt in found.receipts]


def now_us() -> int:
    return time.time_ns() // 1000


# --- opening, expiry ------------------------------------------------------------------------


async def test_an_open_channel_expires_ttl_after_opening(issuer: IssuerStore) -> None:
    before = now_us()
    _, _, opened = await opened_channel(issuer, 10, ttl_us=HOUR_US)
    assert opened.expires_at is not None
    assert before + HOUR_US <= opened.expires_at <= now_us() + HOUR_US
    found = await channel(issuer, opened.channel_id)
    assert found.state is ChannelState.open and found.terms.expires_at == opened.expires_at
    assert found.dispute_deadline is None and found.vendor_credited == 0


async def test_an_expired_channel_closes_from_its_expiry(issuer: IssuerStore) -> None:
    """However late the store notices, the dispute window starts at expires_at."""
    client, vendor, opened = await opened_channel(issuer, 40, ttl_us=0, dispute_window_us=HOUR_US)
    assert opened.expires_at is not None
    found = await channel(issuer, opened.channel_id)
    assert found.state is ChannelState.closing
    assert found.dispute_deadline == opened.expires_at + HOUR_US
    listed = await issuer.closing_channels(vendor)
    assert [c.terms.channel_id for c in listed.channels] == [opened.channel_id]
    assert listed.channels[0].dispute_deadline == found.dispute_deadline
    assert listed.now >= opened.expires_at
    assert (await issuer.closing_channels(client)).channels == []
    # Closing: the vendor may still settle (the channel closes at once), nothing else.
    await refused(issuer.settle(opened.channel_id, closure(5), final=False), Code.channel_closed)
    await refused(issuer.top_up(opened.channel_id, 1, b"n" * 16, b"d" * 32), Code.channel_closed)
    settled = await issuer.settle(opened.channel_id, closure(5))
    assert (settled.client_balance, settled.vendor_balance) == (95, 5)
    assert (await issuer.closing_channels(vendor)).channels == []


async def test_expiry_and_deadline_both_past_finalize_in_one_step(issuer: IssuerStore) -> None:
    client, vendor, opened = await opened_channel(issuer, 40, ttl_us=0, dispute_window_us=0)
    assert await balance(issuer, client) == 100  # reading the account finalizes it
    found = await channel(issuer, opened.channel_id)
    assert found.state is ChannelState.closed and found.locked == 0
    assert kinds(found) == [ReceiptKind.open, ReceiptKind.finalization]
    final = found.receipts[-1]
    assert (final.owed, final.vendor_credited, final.client_refund, final.amount) == (0, 0, 40, 40)
    assert found.closure is not None and found.closure.closed_at == final.at
    assert await balance(issuer, vendor) == 0


# --- the client's close and the dispute deadline ------------------------------------------


async def test_client_close_starts_the_window_once(issuer: IssuerStore) -> None:
    _, vendor, opened = await opened_channel(issuer, 30, dispute_window_us=HOUR_US)
    before = now_us()
    closing = await issuer.client_close(opened.channel_id)
    assert closing.state is ChannelState.closing and closing.dispute_deadline is not None
    assert before + HOUR_US <= closing.dispute_deadline <= now_us() + HOUR_US
    again = await issuer.client_close(opened.channel_id)
    assert again == closing  # idempotent: the deadline keeps its value
    listed = await issuer.closing_channels(vendor)
    assert [(c.terms.channel_id, c.dispute_deadline) for c in listed.channels] == [
        (opened.channel_id, closing.dispute_deadline)
    ]
    assert listed.channels[0].terms.mode is Mode.payword
    await refused(issuer.client_close(new_channel_id()), Code.channel_not_found)


async def test_finalization_refunds_what_checkpoints_did_not_credit(issuer: IssuerStore) -> None:
    client, vendor, opened = await opened_channel(issuer, 60, dispute_window_us=0)
    checkpoint = await issuer.settle(opened.channel_id, closure(25, b"p25"), final=False)
    assert (checkpoint.client_balance, checkpoint.vendor_balance) == (40, 25)
    await issuer.client_close(opened.channel_id)  # window 0: due at once
    assert await issuer.finalize_due(10) == 1
    assert await issuer.finalize_due(10) == 0  # exactly once
    found = await channel(issuer, opened.channel_id)
    assert kinds(found) == [ReceiptKind.open, ReceiptKind.checkpoint, ReceiptKind.finalization]
    final = found.receipts[-1]
    assert (final.seq, final.vendor_credited, final.client_refund) == (3, 25, 35)
    assert found.closure is not None and found.closure.owed == 25
    assert (await balance(issuer, client), await balance(issuer, vendor)) == (75, 25)
    # After finalization: no settlement (not even the checkpoint's proof), no checkpoint.
    for digest in (b"p25", b"p30"):
        await refused(issuer.settle(opened.channel_id, closure(30, digest)), Code.already_closed)
    await refused(issuer.settle(opened.channel_id, closure(30), final=False), Code.channel_closed)
    assert await channel(issuer, opened.channel_id) == found  # refusals changed nothing
    assert await issuer.overdue() == 0


async def test_sweeps_advance_due_channels_in_bounded_steps(issuer: IssuerStore) -> None:
    client, vendor = new_key(), new_key()
    await issuer.register(client, 1000)
    await issuer.register(vendor, 0)
    expired = [terms(client, vendor, 10, ttl_us=0) for _ in range(7)]
    for item in expired:
        await issuer.open_channel(item, dispute_window_us=0)
    lasting = terms(client, vendor, 10, ttl_us=HOUR_US)
    await issuer.open_channel(lasting, dispute_window_us=0)
    steps = []
    while done := await issuer.finalize_due(3):
        steps.append(done)
    assert sum(steps) == 7 and max(steps) <= 6
    assert await balance(issuer, client) == 990
    for item in expired:
        assert (await channel(issuer, item.channel_id)).state is ChannelState.closed
    assert (await channel(issuer, lasting.channel_id)).state is ChannelState.open


# --- checkpoints -----------------------------------------------------------------------------


async def test_checkpoints_credit_the_difference_and_keep_the_channel_open(
    issuer: IssuerStore,
) -> None:
    client, vendor, opened = await opened_channel(issuer, 100, client_balance=100)
    cid = opened.channel_id
    assert (await balance(issuer, client), await balance(issuer, vendor)) == (0, 0)
    first = await issuer.settle(cid, closure(30, b"p30"), final=False)
    assert not first.replayed and first.closure is None
    assert (first.client_balance, first.vendor_balance) == (0, 30)
    assert (first.receipt.kind, first.receipt.owed, first.receipt.vendor_credited) == (
        ReceiptKind.checkpoint,
        30,
        30,
    )
    assert first.receipt.client_refund == 0 and first.receipt.seq == 2
    # The same proof again, or an older one: nothing moves, the latest receipt.
    for owed, digest in ((30, b"p30"), (10, b"p10")):
        again = await issuer.settle(cid, closure(owed, digest), final=False)
        assert again.replayed and again.receipt == first.receipt
    second = await issuer.settle(cid, closure(70, b"p70"), final=False)
    assert (second.vendor_balance, second.receipt.vendor_credited, second.receipt.seq) == (
        70,
        70,
        3,
    )
    found = await channel(issuer, cid)
    assert found.state is ChannelState.open and found.locked == 30
    # A final settlement with the same proof as the last checkpoint closes: the rest moves.
    final = await issuer.settle(cid, closure(70, b"p70"))
    assert not final.replayed and (final.client_balance, final.vendor_balance) == (30, 70)
    assert (final.receipt.kind, final.receipt.client_refund) == (ReceiptKind.settlement, 30)
    assert (await issuer.settle(cid, closure(70, b"p70"))).receipt == final.receipt
    await refused(issuer.settle(cid, closure(70, b"p70"), final=False), Code.channel_closed)


async def test_a_final_settlement_below_the_checkpoint_keeps_the_credit(
    issuer: IssuerStore,
) -> None:
    _, _, opened = await opened_channel(issuer, 50)
    await issuer.settle(opened.channel_id, closure(40, b"p40"), final=False)
    settled = await issuer.settle(opened.channel_id, closure(20, b"p20"))
    assert (settled.client_balance, settled.vendor_balance) == (60, 40)
    assert (settled.receipt.owed, settled.receipt.vendor_credited) == (20, 40)


async def test_checkpoint_owed_above_the_amount_is_refused(issuer: IssuerStore) -> None:
    _, vendor, opened = await opened_channel(issuer, 50)
    await refused(issuer.settle(opened.channel_id, closure(51), final=False), Code.exceeds_amount)
    assert await balance(issuer, vendor) == 0


async def test_checkpoints_and_top_ups_stay_exact_beyond_doubles(issuer: IssuerStore) -> None:
    big = 2**62 + 7
    _, _, opened = await opened_channel(issuer, 2**53 + 3, client_balance=big, mode=Mode.signature)
    cid = opened.channel_id
    point = await issuer.settle(cid, closure(2**53 + 1), final=False)
    assert point.vendor_balance == 2**53 + 1 and point.receipt.vendor_credited == 2**53 + 1
    topped = await issuer.top_up(cid, 2**53 + 5, b"t" * 16, b"d" * 32)
    assert topped.channel.terms.amount == 2**54 + 8
    assert topped.receipt.amount == 2**54 + 8
    final = await issuer.settle(cid, closure(2**54 + 1, b"last"))
    assert final.vendor_balance == 2**54 + 1
    assert final.client_balance == big - (2**54 + 1)
    assert final.receipt.client_refund == 7


# --- top-ups --------------------------------------------------------------------------------


async def test_a_top_up_moves_money_once_per_nonce(issuer: IssuerStore) -> None:
    client, _, opened = await opened_channel(issuer, 10, mode=Mode.signature)
    cid = opened.channel_id
    topped = await issuer.top_up(cid, 25, b"a" * 16, b"d1" * 16)
    assert not topped.replayed and topped.channel.terms.amount == 35
    assert (topped.receipt.kind, topped.receipt.amount, topped.receipt.seq) == (
        ReceiptKind.top_up,
        35,
        2,
    )
    assert await balance(issuer, client) == 65
    again = await issuer.top_up(cid, 25, b"a" * 16, b"d1" * 16)
    assert again.replayed and again.receipt == topped.receipt
    assert again.channel.terms.amount == 35 and await balance(issuer, client) == 65
    await refused(issuer.top_up(cid, 26, b"a" * 16, b"d2" * 16), Code.duplicate_mismatch)
    await refused(issuer.top_up(cid, 66, b"b" * 16, b"d3" * 16), Code.insufficient_balance)
    second = await issuer.top_up(cid, 65, b"c" * 16, b"d4" * 16)
    assert second.channel.terms.amount == 100 and await balance(issuer, client) == 0
    # The settlement may now owe up to the raised amount.
    settled = await issuer.settle(cid, closure(90))
    assert (settled.client_balance, settled.receipt.client_refund) == (10, 10)
    # After closing: no new top-up, but a retried one is still answered.
    await refused(issuer.top_up(cid, 1, b"e" * 16, b"d5" * 16), Code.channel_closed)
    assert (await issuer.top_up(cid, 25, b"a" * 16, b"d1" * 16)).receipt == topped.receipt


async def test_a_top_up_beyond_int64_is_refused_without_change(issuer: IssuerStore) -> None:
    same = new_key()  # a client paying itself can hold what it already locked twice over
    await issuer.register(same, 2**63 - 1)
    channel_terms = terms(same, same, 2**62, mode=Mode.signature)
    await issuer.open_channel(channel_terms)
    cid = channel_terms.channel_id
    await issuer.settle(cid, closure(2**62), final=False)  # credited back to the same account
    await refused(issuer.top_up(cid, 2**62, b"o" * 16, b"d" * 32), Code.invalid_amount)
    assert (await channel(issuer, cid)).terms.amount == 2**62
    assert await balance(issuer, same) == 2**63 - 1


# --- receipts -------------------------------------------------------------------------------


async def test_every_money_movement_leaves_one_receipt_in_order(issuer: IssuerStore) -> None:
    _, _, opened = await opened_channel(issuer, 20, mode=Mode.signature, dispute_window_us=0)
    cid = opened.channel_id
    await issuer.top_up(cid, 10, b"x" * 16, b"d" * 32)
    await issuer.settle(cid, closure(5), final=False)
    await issuer.client_close(cid)  # no receipt: no money moves yet
    found = await channel(issuer, cid)
    assert [r.seq for r in found.receipts] == [1, 2, 3, 4]
    assert kinds(found) == [
        ReceiptKind.open,
        ReceiptKind.top_up,
        ReceiptKind.checkpoint,
        ReceiptKind.finalization,
    ]
    assert [r.amount for r in found.receipts] == [20, 30, 30, 30]
    assert [r.vendor_credited for r in found.receipts] == [0, 0, 5, 5]
    assert [r.client_refund for r in found.receipts] == [0, 0, 0, 25]
    times = [us_from_iso(r.at) for r in found.receipts]
    assert times == sorted(times)


# --- several workers at once -------------------------------------------------------------------


@pytest.fixture
async def issuers(store_url: str) -> AsyncIterator[list[IssuerStore]]:
    stores = [await open_issuer_store(store_url) for _ in range(2)]
    yield stores
    for store in stores:
        await store.close()


async def test_concurrent_finalizers_finalize_each_channel_once(
    issuers: list[IssuerStore],
) -> None:
    client, vendor = new_key(), new_key()
    await issuers[0].register(client, 2000)
    await issuers[0].register(vendor, 0)
    channels = [terms(client, vendor, 10 + n, ttl_us=0) for n in range(40)]
    for item in channels:
        await issuers[0].open_channel(item, dispute_window_us=0)

    async def finalize(store: IssuerStore) -> int:
        total = 0
        while done := await store.finalize_due(5):
            total += done
        return total

    done = await asyncio.gather(*(finalize(issuers[n % 2]) for n in range(6)))
    assert sum(done) >= 40  # a channel may be picked by two sweeps, finalized by one
    assert await balance(issuers[1], client) == 2000
    for item in channels:
        found = await channel(issuers[1], item.channel_id)
        assert kinds(found) == [ReceiptKind.open, ReceiptKind.finalization]


async def test_settlements_racing_the_deadline_move_money_once(
    issuers: list[IssuerStore],
) -> None:
    """50 channels whose deadline falls while their vendor settles and two finalizers
    sweep: each closes once, by the settlement or by finalization, never both."""
    client, vendor = new_key(), new_key()
    await issuers[0].register(client, 50 * 100)
    await issuers[0].register(vendor, 0)
    window_us = 300_000
    channels = [terms(client, vendor, 100) for _ in range(50)]
    for item in channels:
        await issuers[0].open_channel(item, dispute_window_us=window_us)
    for n, item in enumerate(channels[:25]):  # half of them checkpointed first
        await issuers[0].settle(item.channel_id, closure(10 + n, b"early"), final=False)
    deadline = time.monotonic() + window_us / 1e6
    for n, item in enumerate(channels):
        await issuers[n % 2].client_close(item.channel_id)

    async def settle(n: int, item_id: str) -> Settled | NanoMoniError:
        # Spread around the deadline: some before, some after.
        await asyncio.sleep(max(0.0, deadline - time.monotonic() + (n % 10 - 5) * 0.01))
        try:
            return await issuers[n % 2].settle(item_id, closure(50, b"final"))
        except NanoMoniError as exc:
            return exc

    async def sweep(store: IssuerStore) -> None:
        while time.monotonic() < deadline + 0.15:
            await store.finalize_due(7)
            await asyncio.sleep(0.005)

    outcomes = await asyncio.gather(
        *(settle(n, item.channel_id) for n, item in enumerate(channels)),
        sweep(issuers[0]),
        sweep(issuers[1]),
    )
    vendor_total = client_refunds = 0
    settled = finalized = 0
    for n, (item, outcome) in enumerate(zip(channels, outcomes, strict=False)):
        found = await channel(issuers[0], item.channel_id)
        closing = [
            k for k in kinds(found) if k in (ReceiptKind.settlement, ReceiptKind.finalization)
        ]
        assert len(closing) == 1, kinds(found)
        checkpointed = 10 + n if n < 25 else 0
        if isinstance(outcome, Settled):
            assert closing == [ReceiptKind.settlement]
            assert found.vendor_credited == 50
            settled += 1
        else:
            assert outcome.code is Code.already_closed
            assert closing == [ReceiptKind.finalization]
            assert found.vendor_credited == checkpointed
            finalized += 1
        vendor_total += found.vendor_credited
        client_refunds += found.receipts[-1].client_refund
        assert found.receipts[-1].client_refund == 100 - found.vendor_credited
    assert settled + finalized == 50
    assert await balance(issuers[1], vendor) == vendor_total
    assert await balance(issuers[1], client) == 50 * 100 - vendor_total
    assert client_refunds + vendor_total == 50 * 100
    print(f"race at the deadline: {settled} settled, {finalized} finalized")
