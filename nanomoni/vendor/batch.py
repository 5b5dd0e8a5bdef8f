"""Batched payments (SPEC §12): many items, one decision each, one store round trip.

Every item is judged as if it had been POSTed alone at its position: items of
one channel in order, each against the state the ones before it left. What a
batch saves is the work around the decisions:

* the channels' states are read with one pipelined `load_many` (those this worker
  remembers from its own last read or write are not read: a write compares
  against the state it was decided on, and a refusal or replay decided on a
  remembered state is decided again on a fresh read);
* each channel's items are decided in order with `presume_payment`: the mode's
  costly check (a signature, a hash walk) is presumed to pass and collected, and
  all checks of the batch then run in one native call per mode (off the event
  loop when they are many). If one fails, its channel is decided again from that
  item on exactly as the single path does (`Vendor.decide`), so no answer
  changes;
* a channel's accepted items collapse into one compare-and-set of the last (the
  highest) of them, conditional on the state they were decided against, and all
  channels are written with one `compare_and_set_many`.

A channel that another request changed meanwhile (its compare-and-set lost) is
read and decided again, so every answer holds at the moment of its write; after
ROUNDS decisions its items get what a single payment that lost the race gets. A
store failure is the 503 of every item whose answer depended on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from nanomoni import crypto, encoding, metrics
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Payment
from nanomoni.protocol.model import CasOutcome, ChannelTerms, PaymentState, VendorView
from nanomoni.protocol.modes import AnyRules
from nanomoni.protocol.payments import Decision, presume_payment, require_mode
from nanomoni.store.base import StoreUnavailable
from nanomoni.wire import BatchItem, ItemAccepted, ItemRefused, item_accepted, item_refused

if TYPE_CHECKING:
    from nanomoni.vendor.core import Vendor

ROUNDS = 4  # decisions of a channel: on a remembered state, then fresh reads after lost races

Outcome = Decision | NanoMoniError
Result = ItemAccepted | ItemRefused


class _Item(msgspec.Struct, gc=False):  # one per item: cheaper to build than a dataclass
    position: int  # in the batch
    rules: AnyRules
    payment: Payment
    node_keys: list[int]  # Merkle nodes its decision needs (most modes: none)
    view: VendorView | None = None  # what it was decided against
    outcome: Outcome | None = None
    checks: tuple[int, int] = (0, 0)  # its presumed checks: [start, end) in its rules' list


@dataclass(slots=True)
class _Group:
    """The items of one channel, in batch order."""

    channel_id: str
    terms: ChannelTerms
    rules: AnyRules  # the channel's mode: require_mode lets only its items in
    items: list[_Item] = field(default_factory=list)
    stored: PaymentState | None = None  # the state read from the store this round
    write: PaymentState | None = None  # the last accepted: what the compare-and-set stores
    nodes: dict[int, bytes] = field(default_factory=dict)  # new nodes, stored with `write`
    loaded: dict[int, bytes] = field(default_factory=dict)  # nodes read from the store
    fresh: bool = True  # decided on a state read this round (else: one this worker remembered)
    keys: list[int] = field(default_factory=list)  # every item's node keys, once each
    all_new: bool = True  # every item's outcome accepts a new payment (no refusal, no replay)
    over_amount: bool = False  # an item was refused for the channel's amount

    def add(self, item: _Item) -> None:
        self.items.append(item)
        if item.node_keys:
            self.keys = list(dict.fromkeys([*self.keys, *item.node_keys]))

    def view_for(self, item: _Item, state: PaymentState | None, closing: bool) -> VendorView:
        if not item.node_keys:
            return VendorView(state=state, nodes=[], closing=closing)
        known = self.loaded | self.nodes
        return VendorView(
            state=state, nodes=[known.get(key) for key in item.node_keys], closing=closing
        )

    def took(self, decision: Decision) -> None:
        if not decision.replay:
            self.write = decision.state
            self.nodes.update(decision.nodes)

    def review(self) -> None:
        """`all_new` and `over_amount` from the items' outcomes."""
        outcomes = [item.outcome for item in self.items]
        self.all_new = all(isinstance(o, Decision) and not o.replay for o in outcomes)
        self.over_amount = any(
            isinstance(o, NanoMoniError) and o.code is Code.exceeds_amount for o in outcomes
        )

    def depends_on_write(self, outcome: Outcome) -> bool:
        """An answer that only holds if this round's write is stored."""
        return isinstance(outcome, Decision) and outcome.state is not self.stored


class Batch:
    """One batch's items on their way through a vendor."""

    def __init__(self, vendor: Vendor, items: Sequence[BatchItem | NanoMoniError], client: str):
        self.vendor = vendor
        self.client = client
        self.items = items
        self.results: list[Result | None] = [None] * len(items)
        self.now = encoding.utc_now()
        # For the metrics: (mode, outcome, code); StrEnums, so they are their names.
        self.counts: Counter[tuple[str, str, str | None]] = Counter()

    async def run(self) -> list[Result]:
        started = time.perf_counter()
        groups = await self._group()
        for round_number in range(ROUNDS):
            if not groups:
                break
            groups = await self._round(groups, first_round=round_number == 0)
        for group in groups:  # still losing races: answered as a lost single payment
            self._finish(group, lost=True)
        results = [result for result in self.results if result is not None]
        assert len(results) == len(self.items)
        metrics.payments(self.counts, time.perf_counter() - started)
        return results

    def _refuse(self, position: int, exc: NanoMoniError, rules: AnyRules | None = None) -> None:
        self.results[position] = item_refused(exc)
        if rules is not None:  # decoded far enough to have a mode (as the single path counts)
            self.counts[(rules.mode, "rejected", exc.code)] += 1

    async def _group(self) -> list[_Group]:
        """Items by channel (terms learned as the single path learns them), in order."""
        groups: dict[str, _Group] = {}
        vendor = self.vendor
        for position, item in enumerate(self.items):
            if isinstance(item, NanoMoniError):
                self._refuse(position, item)
                continue
            group = groups.get(item.channel_id)
            if group is None or item.rules is not group.rules:  # else: checked at its first item
                try:
                    terms = vendor.known_terms(item.channel_id) or await vendor.terms(
                        item.rules, item.channel_id
                    )
                    require_mode(item.rules, terms, "payment")
                except NanoMoniError as exc:
                    self._refuse(position, exc, item.rules)
                    continue
                if group is None:
                    group = groups[item.channel_id] = _Group(item.channel_id, terms, item.rules)
            keys = item.rules.payment_node_keys(group.terms, item.payment)
            group.add(_Item(position, item.rules, item.payment, keys))
        return list(groups.values())

    def _remembered(self, group: _Group, first_round: bool) -> VendorView | None:
        """The state this worker remembers of the group's channel, where deciding on it
        is safe: first round, no Merkle nodes needed, no expensive hash walk."""
        if not first_round or group.keys:
            return None
        view = self.vendor.views.get(group.channel_id)
        if view is None:
            return None
        accepted = view.accepted_index
        for item in group.items:
            if item.rules.hash_walk(group.terms, accepted, item.payment) > crypto.INLINE_HASHES:
                return None
        return view

    async def _round(self, groups: list[_Group], first_round: bool) -> list[_Group]:
        """Read (what is not remembered), decide and write `groups`; the ones to decide
        again: their write lost a race, or a remembered state led to a refusal or replay."""
        store, views = self.vendor.store, self.vendor.views
        loaded: list[tuple[_Group, VendorView]] = []
        reading = []
        for group in groups:
            remembered = self._remembered(group, first_round)
            group.fresh = remembered is None
            if remembered is None:
                reading.append(group)
            else:
                loaded.append((group, remembered))
        if reading:
            read = await store.load_many([(group.channel_id, group.keys) for group in reading])
            for group, view in zip(reading, read, strict=True):
                if isinstance(view, StoreUnavailable):
                    for item in group.items:
                        self._refuse(item.position, view, item.rules)
                    continue
                if not group.keys:
                    views.remember(group.channel_id, view.state, closing=view.closing)
                loaded.append((group, view))
        checks: dict[AnyRules, list[Any]] = {}
        for group, view in loaded:
            self._presume(group, view, checks)
        verdicts = await self._run_checks(checks)
        # Mostly every check passes: only the groups of a mode with a failure look item by item.
        failing = {rules for rules, results in verdicts.items() if not all(results)}
        again = []
        writing = []
        for group, _ in loaded:
            if group.rules in failing:
                await self._confirm(group, verdicts)
            if not group.fresh and not group.all_new:
                again.append(group)  # a refusal or replay must hold for the current state
            elif await self._topped_up(group):
                again.append(group)  # refused for its amount, which a top-up raised
            elif group.write is None:
                self._finish(group)
            else:
                writing.append(group)
        outcomes = await store.compare_and_set_many(
            [
                (group.channel_id, group.stored.index if group.stored else 0, write, group.nodes)
                for group in writing
                if (write := group.write) is not None
            ]
        )
        for group, result in zip(writing, outcomes, strict=True):
            if isinstance(result, StoreUnavailable):
                views.forget(group.channel_id)
                self._finish(group, failure=result)
            elif result.outcome is CasOutcome.stored:
                if not group.keys:
                    views.remember(group.channel_id, group.write, closing=False)
                self.vendor.note_accepted(group.rules, group.channel_id)
                self._finish(group)
            else:  # lost a race, or the channel began closing: decide again on a fresh read
                views.forget(group.channel_id)
                again.append(group)
        return again

    async def _topped_up(self, group: _Group) -> bool:
        """Whether an item was refused for the channel's amount and re-reading the
        channel found a top-up (then `group.terms` are the new ones)."""
        if not group.over_amount:
            return False
        try:
            grew = await self.vendor.amount_grew(group.rules, group.channel_id)
            terms = self.vendor.known_terms(group.channel_id) if grew else None
        except NanoMoniError:
            return False  # the issuer cannot say now: the refusal for the amount stands
        if terms is None:
            return False
        group.terms = terms
        return True

    def _presume(self, group: _Group, view: VendorView, checks: dict[AnyRules, list[Any]]) -> None:
        """Decide the group's items in order, costly checks presumed (collected in `checks`)."""
        group.stored, group.write, group.nodes = view.state, None, {}
        group.all_new, group.over_amount = True, False
        known = zip(group.keys, view.nodes, strict=True)
        group.loaded = {key: node for key, node in known if node is not None}
        state, closing, terms = view.state, view.closing, group.terms
        vendor, client, now = self.vendor, self.client, self.now
        max_hashes = vendor.config.max_hashes
        rules = group.rules
        collected = checks.setdefault(rules, [])
        for item in group.items:
            item.view = item_view = group.view_for(item, state, closing)
            start = len(collected)
            try:
                vendor.check_budget(rules, terms, item_view, item.payment, client)
                decision = presume_payment(
                    rules, terms, item_view, item.payment, collected, now=now, max_hashes=max_hashes
                )
            except NanoMoniError as exc:
                item.outcome = exc
                group.all_new = False
                group.over_amount |= exc.code is Code.exceeds_amount
            else:
                item.outcome = decision
                group.took(decision)
                state = decision.state
                group.all_new &= not decision.replay
            item.checks = (start, len(collected))

    async def _run_checks(self, checks: dict[AnyRules, list[Any]]) -> dict[AnyRules, list[bool]]:
        """Every presumed check, one native call per mode; off the loop past ~1 ms of work."""
        pending = {rules: collected for rules, collected in checks.items() if collected}

        def run() -> dict[AnyRules, list[bool]]:
            return {rules: rules.run_checks(collected) for rules, collected in pending.items()}

        cost = sum(rules.check_cost(collected) for rules, collected in pending.items())
        if cost <= crypto.INLINE_HASHES:
            return run()
        return await asyncio.to_thread(run)

    async def _confirm(self, group: _Group, verdicts: dict[AnyRules, list[bool]]) -> None:
        """From the first item whose presumed check failed, decide the group again exactly."""
        for n, item in enumerate(group.items):
            start, end = item.checks
            if start == end or all(verdicts[item.rules][start:end]):
                continue
            group.write = None
            group.nodes = {}
            for earlier in group.items[:n]:
                if isinstance(earlier.outcome, Decision):
                    group.took(earlier.outcome)
            assert item.view is not None
            state, closing = item.view.state, item.view.closing
            for later in group.items[n:]:
                later.view = group.view_for(later, state, closing)
                try:
                    decision = await self.vendor.decide(
                        later.rules, group.terms, later.view, later.payment, self.client, self.now
                    )
                except NanoMoniError as exc:
                    later.outcome = exc
                else:
                    later.outcome = decision
                    group.took(decision)
                    state = decision.state
            group.review()
            return

    def _finish(
        self, group: _Group, *, failure: StoreUnavailable | None = None, lost: bool = False
    ) -> None:
        """The group's answers once its write is settled: stored (or nothing to write),
        failed (`failure`: its outcome unknown), or `lost` for good (answered as a
        single payment that lost the race)."""
        results, terms, rules = self.results, group.terms, group.rules
        accepted = replayed = 0
        for item in group.items:
            outcome = item.outcome
            assert outcome is not None
            if isinstance(outcome, NanoMoniError):
                self._refuse(item.position, outcome, rules)
            elif failure is not None and group.depends_on_write(outcome):
                self._refuse(item.position, failure, rules)
            elif lost and group.depends_on_write(outcome):
                lost_race = NanoMoniError(
                    Code.non_monotonic, "payment index must be strictly increasing"
                )
                self._refuse(item.position, lost_race, rules)
            else:
                replay = outcome.replay
                results[item.position] = item_accepted(rules, terms, outcome.state, replay)
                replayed += replay
                accepted += not replay
        # For the metrics: counted per group (StrEnums, so they are their names).
        if accepted:
            self.counts[(rules.mode, "accepted", None)] += accepted
        if replayed:
            self.counts[(rules.mode, "replay", None)] += replayed
