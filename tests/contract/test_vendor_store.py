"""VendorStore contract: load, compare-and-set, closing, nodes, settlement records."""

from __future__ import annotations

import msgspec
import pytest
from contract.factories import closure, new_channel_id, state

from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import CasOutcome, CasResult, PaymentState, VendorView
from nanomoni.store import VendorStore

NODE_A = (3 << 32) | 5  # level 3, position 5
NODE_B = 0
NODE_C = (20 << 32) | 1_048_575


async def test_unknown_channel_loads_empty(vendor: VendorStore) -> None:
    view = await vendor.load(new_channel_id(), [NODE_A, NODE_B])
    assert view == VendorView(state=None, nodes=[None, None], closing=False)
    assert (await vendor.load(new_channel_id())).nodes == []


async def test_compare_and_set_stores_state_and_nodes(vendor: VendorStore) -> None:
    cid = new_channel_id()
    nodes = {NODE_A: b"a" * 32, NODE_B: b"b" * 32}
    assert await vendor.compare_and_set(cid, state(3), nodes) == CasResult(
        outcome=CasOutcome.stored
    )
    view = await vendor.load(cid, [NODE_B, NODE_C, NODE_A])
    assert view == VendorView(state=state(3), nodes=[b"b" * 32, None, b"a" * 32], closing=False)
    assert await vendor.nodes(cid, [NODE_A, NODE_C]) == [b"a" * 32, None]
    assert await vendor.nodes(cid, []) == []
    # A later state adds nodes; earlier ones stay.
    assert (await vendor.compare_and_set(cid, state(4), {NODE_C: b"c" * 32})).outcome is (
        CasOutcome.stored
    )
    assert await vendor.nodes(cid, [NODE_A, NODE_B, NODE_C]) == [
        b"a" * 32,
        b"b" * 32,
        b"c" * 32,
    ]


async def test_compare_and_set_loses_to_equal_or_higher(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.compare_and_set(cid, state(10), {})
    for index in (10, 9, 1):
        losing = state(index, proof=b"other")
        result = await vendor.compare_and_set(cid, losing, {NODE_A: b"x" * 32})
        assert result == CasResult(outcome=CasOutcome.lost, current=state(10))
    # The losing write stored none of its nodes.
    assert await vendor.nodes(cid, [NODE_A]) == [None]


async def test_indices_compare_as_integers_not_text(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.compare_and_set(cid, state(9), {})
    assert (await vendor.compare_and_set(cid, state(10), {})).outcome is CasOutcome.stored
    assert (await vendor.compare_and_set(cid, state(2**62), {})).outcome is CasOutcome.stored
    big = state(2**63 - 1, owed=2**63 - 1)
    assert (await vendor.compare_and_set(cid, big, {})).outcome is CasOutcome.stored
    assert (await vendor.compare_and_set(cid, state(2**62 + 1), {})).outcome is CasOutcome.lost
    assert (await vendor.load(cid)).state == big


async def test_begin_close_blocks_later_payments(vendor: VendorStore) -> None:
    cid = new_channel_id()
    await vendor.compare_and_set(cid, state(5), {})
    assert await vendor.begin_close(cid) == state(5)
    assert (await vendor.load(cid)).closing
    assert await vendor.compare_and_set(cid, state(6), {NODE_A: b"a" * 32}) == CasResult(
        outcome=CasOutcome.closing, current=state(5)
    )
    assert await vendor.begin_close(cid) == state(5)  # repeatable
    assert (await vendor.load(cid, [NODE_A])).nodes == [None]


async def test_begin_close_without_payments_returns_none(vendor: VendorStore) -> None:
    cid = new_channel_id()
    assert await vendor.begin_close(cid) is None
    # Nothing was accepted, so nothing was closed: a first payment is still accepted.
    assert not (await vendor.load(cid)).closing
    assert (await vendor.compare_and_set(cid, state(1), {})).outcome is CasOutcome.stored


async def test_settlement_record_roundtrip_and_idempotent(vendor: VendorStore) -> None:
    cid = new_channel_id()
    assert await vendor.settlement(cid) is None
    await vendor.compare_and_set(cid, state(7), {})
    await vendor.begin_close(cid)
    record = msgspec.structs.replace(closure(7), client_balance=93, vendor_balance=7)
    await vendor.record_settlement(cid, record)
    await vendor.record_settlement(cid, record)
    assert await vendor.settlement(cid) == record
    view = await vendor.load(cid)
    assert view.closing and view.state == state(7)


async def test_channels_are_independent(vendor: VendorStore) -> None:
    first, second = new_channel_id(), new_channel_id()
    await vendor.compare_and_set(first, state(50), {NODE_A: b"1" * 32})
    assert (await vendor.compare_and_set(second, state(2), {})).outcome is CasOutcome.stored
    await vendor.begin_close(first)
    assert not (await vendor.load(second)).closing
    assert await vendor.nodes(second, [NODE_A]) == [None]


async def test_out_of_range_index_is_refused(vendor: VendorStore) -> None:
    cid = new_channel_id()
    for index, owed in ((-1, 1), (2**63, 1), (5, -3)):
        bad = PaymentState(index=index, owed=owed, proof=b"p", created_at="t")
        with pytest.raises(NanoMoniError) as refused:
            await vendor.compare_and_set(cid, bad, {})
        assert refused.value.code is Code.invalid_amount
    assert (await vendor.load(cid)).state is None


# --- many channels in one round trip (batches, SPEC §12) ------------------------------------


async def test_load_many_and_compare_and_set_many_match_their_single_forms(
    vendor: VendorStore,
) -> None:
    # Enough channels to span every master of the cluster; one closing, one ahead.
    cids = [new_channel_id() for _ in range(12)]
    await vendor.compare_and_set(cids[0], state(5), {NODE_A: b"a" * 32})
    await vendor.compare_and_set(cids[1], state(2), {})
    await vendor.begin_close(cids[1])
    views = await vendor.load_many(
        [(cid, [NODE_A] if n == 0 else []) for n, cid in enumerate(cids)]
    )
    assert views[0] == VendorView(state=state(5), nodes=[b"a" * 32], closing=False)
    assert views[1] == VendorView(state=state(2), nodes=[], closing=True)
    assert all(view == VendorView(state=None, nodes=[], closing=False) for view in views[2:])

    writes = [
        (cid, 0, state(3), {NODE_B: cid.encode()[:32]} if n == 2 else {})
        for n, cid in enumerate(cids)
    ]
    writes[0] = (cids[0], 5, state(3), {})  # not above the state it was decided against: lost
    results = await vendor.compare_and_set_many(writes)
    assert results[0] == CasResult(outcome=CasOutcome.lost, current=state(5))
    assert results[1] == CasResult(outcome=CasOutcome.closing, current=state(2))
    assert results[2:] == [CasResult(outcome=CasOutcome.stored)] * 10
    for n, cid in enumerate(cids[2:], start=2):
        assert await vendor.load(cid, [NODE_B]) == VendorView(
            state=state(3), nodes=[cid.encode()[:32] if n == 2 else None], closing=False
        )
    assert await vendor.load_many([]) == [] and await vendor.compare_and_set_many([]) == []


async def test_compare_and_set_many_checks_amounts_before_writing(vendor: VendorStore) -> None:
    cids = [new_channel_id(), new_channel_id()]
    with pytest.raises(NanoMoniError) as caught:
        await vendor.compare_and_set_many(
            [(cids[0], 0, state(1), {}), (cids[1], 0, state(2**63), {})]
        )
    assert caught.value.code is Code.invalid_amount
    assert [view.state for view in await vendor.load_many([(c, []) for c in cids])] == [None] * 2


async def test_compare_and_set_many_loses_when_the_state_moved_since_it_was_read(
    vendor: VendorStore,
) -> None:
    cid = new_channel_id()
    await vendor.compare_and_set(cid, state(4), {})
    # Decided against "no state" (0) or index 2, but 4 is stored: lost, even though 6 > 4.
    for expected in (0, 2):
        (result,) = await vendor.compare_and_set_many([(cid, expected, state(6), {})])
        assert result == CasResult(outcome=CasOutcome.lost, current=state(4))
    (result,) = await vendor.compare_and_set_many([(cid, 4, state(6), {})])
    assert result == CasResult(outcome=CasOutcome.stored)
    assert (await vendor.load(cid)).state == state(6)


async def test_compare_and_set_with_an_expected_index(vendor: VendorStore) -> None:
    cid = new_channel_id()
    assert (await vendor.compare_and_set(cid, state(2), {}, expected=1)).outcome is (
        CasOutcome.lost
    )  # decided against index 1, but there is no state
    assert (await vendor.compare_and_set(cid, state(2), {}, expected=0)).outcome is (
        CasOutcome.stored
    )
    lost = await vendor.compare_and_set(cid, state(5), {}, expected=0)
    assert lost == CasResult(outcome=CasOutcome.lost, current=state(2))
    assert (await vendor.compare_and_set(cid, state(5), {}, expected=2)).outcome is (
        CasOutcome.stored
    )
    # Never backwards, whatever was expected.
    assert (await vendor.compare_and_set(cid, state(4), {}, expected=5)).outcome is (
        CasOutcome.lost
    )
