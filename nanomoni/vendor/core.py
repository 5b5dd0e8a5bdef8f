"""The vendor without HTTP (SPEC §5): what a payment, a closure or the issuer's
channel view does to a vendor's state. The HTTP service (`vendor.app`), the
batch and stream endpoints and the 402 paywall (`nanomoni.paywall`) all call
this one object, so one decision and one store step serve every front door.

Channel terms never change after open (but for a top-up's amount), so every
worker caches them in memory after learning them from the issuer.

Background tasks, started by `start()` for every front door (SPEC §4.5–§4.6):
the watch asks the issuer for our closing channels every `watch_interval`
(and at start-up) and settles each one we hold a payment for, through the same
path as a closure request, before its dispute deadline; checkpoints withdraw
what channels owe every `checkpoint_interval` (off when 0). Both are idempotent
and safe with any number of workers: the issuer moves money once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from nanomoni import config, crypto, encoding, metrics
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.consent import VENDOR_CLOSE, check_consent
from nanomoni.protocol.lifecycle import check_receipt, now_us, require_unexpired
from nanomoni.protocol.messages import CloseRequest, Payment, Settlement
from nanomoni.protocol.model import (
    CasOutcome,
    ChannelState,
    ChannelTerms,
    Closure,
    PaymentState,
    SignedReceipt,
    VendorView,
)
from nanomoni.protocol.modes import AnyRules, rules_for
from nanomoni.protocol.payments import Decision, decide_payment, learned_terms, require_mode
from nanomoni.serve import load_or_create_key
from nanomoni.store import open_vendor_store, store_url
from nanomoni.store.base import StoreUnavailable, VendorStore
from nanomoni.vendor.batch import Batch
from nanomoni.vendor.budget import HashBudget
from nanomoni.vendor.issuer_client import IssuerClient
from nanomoni.wire import BatchItem, ItemAccepted, ItemRefused

log = logging.getLogger("nanomoni.vendor")


class Accepted(msgspec.Struct, frozen=True):
    """A payment's outcome: the channel's terms and its accepted state (a replay: the
    state that was already stored)."""

    terms: ChannelTerms
    state: PaymentState
    replay: bool


class ViewCache:
    """The state this worker last read or wrote per channel, most recent last, at most
    `size` of them. Only a hint: every write compares against the state it was
    decided on, and the store keeps the truth (other workers write too)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._views: dict[str, VendorView] = {}

    def remember(self, channel_id: str, state: PaymentState | None, *, closing: bool) -> None:
        views = self._views
        views.pop(channel_id, None)
        if len(views) >= self.size:
            del views[next(iter(views))]  # bounded memory: forget the longest unused
        views[channel_id] = VendorView(state=state, nodes=[], closing=closing)

    def forget(self, channel_id: str) -> None:
        self._views.pop(channel_id, None)

    def get(self, channel_id: str) -> VendorView | None:
        return self._views.get(channel_id)

    def usable(self, rules: AnyRules, terms: ChannelTerms, payment: Payment) -> VendorView | None:
        """The remembered view, unless deciding on it could walk an expensive hash chain
        (whose failure spends the client's budget: that needs the current state)."""
        view = self._views.get(terms.channel_id)
        if view is None:
            return None
        accepted = view.accepted_index
        return view if rules.hash_walk(terms, accepted, payment) <= crypto.INLINE_HASHES else None


@dataclass(frozen=True, kw_only=True)
class VendorConfig:
    data_dir: Path
    issuer_url: str
    store: str | None = None  # default: sqlite file in data_dir
    key_file: Path | None = None  # default: vendor-key.pem in data_dir
    max_body: int = config.MAX_BODY
    max_batch_body: int = config.MAX_BATCH_BODY  # a batch body or stream frame (SPEC §12)
    max_hashes: int = config.MAX_HASHES
    issuer_timeout: float = config.ISSUER_TIMEOUT
    terms_cache: int = config.TERMS_CACHE
    admin_token: str | None = None  # lets the operator ask for a closure (SPEC §5.6)
    watch_interval: float = config.WATCH_INTERVAL  # seconds (SPEC §4.6)
    checkpoint_interval: float = config.CHECKPOINT_INTERVAL  # seconds; 0: no checkpoints
    amount_recheck: float = config.AMOUNT_RECHECK  # seconds between re-reads of an amount

    @property
    def store_url(self) -> str:
        return store_url(self.store, self.data_dir / "vendor.sqlite3")

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "vendor-key.pem"


def lost_race(
    decision: Decision, outcome: CasOutcome, current: PaymentState | None
) -> PaymentState:
    """A decided payment whose compare-and-set did not store it: the stored state if an
    identical payment won the race (this one is its replay), else the refusal."""
    if outcome is CasOutcome.closing:
        raise NanoMoniError(Code.channel_closed, "the channel is closed: no more payments")
    if current is not None and (current.index, current.proof) == (
        decision.state.index,
        decision.state.proof,
    ):
        return current
    raise NanoMoniError(Code.non_monotonic, "payment index must be strictly increasing")


class Vendor:
    """One worker's state: store connection, key, issuer client, cached channel terms."""

    def __init__(self, config: VendorConfig) -> None:
        self.config = config
        self.key = load_or_create_key(config.key_path)
        self.public_key_b64 = encoding.b64encode(self.key.public_key_der)
        self.issuer = IssuerClient(config.issuer_url, timeout=config.issuer_timeout)
        self._store: VendorStore | None = None
        self._terms: dict[str, ChannelTerms] = {}
        self._learning: dict[str, asyncio.Future[ChannelTerms]] = {}
        self._registration: asyncio.Task[None] | None = None
        # Why the vendor is not registered at the issuer yet (None once it is).
        self.unregistered: NanoMoniError | None = NanoMoniError(
            Code.issuer_unavailable, "not registered at the issuer yet"
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.budget = HashBudget()
        self.views = ViewCache(config.terms_cache)
        # Checkpoints: channels this worker accepted payments on since their last one,
        # and what the issuer's receipts say we were credited.
        self._unchecked: dict[str, AnyRules] = {}
        self._credited: dict[str, int] = {}
        self._rechecked: dict[str, float] = {}  # channel -> when its amount was re-read
        self._issuer_der: bytes | None = None

    @property
    def store(self) -> VendorStore:
        if self._store is None:
            raise RuntimeError("vendor store used before start-up")
        return self._store

    async def start(self) -> None:
        self._store = await open_vendor_store(self.config.store_url)
        self._registration = asyncio.create_task(self._register_until_done())
        self._tasks.append(asyncio.create_task(self._every(self.config.watch_interval, self.watch)))
        if self.config.checkpoint_interval > 0:
            checkpoints = self._every(
                self.config.checkpoint_interval, self.checkpoint_all, first_wait=True
            )
            self._tasks.append(asyncio.create_task(checkpoints))

    async def stop(self) -> None:
        for task in [*self._tasks, self._registration]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        await self.issuer.close()
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def _register_until_done(self) -> None:
        """Register our key at the issuer, retrying with back-off; we serve meanwhile."""
        delay = 0.1
        while True:
            try:
                await self.issuer.register(self.public_key_b64)
                self.unregistered = None
                return
            except NanoMoniError as exc:
                self.unregistered = NanoMoniError(
                    Code.issuer_unavailable, f"not registered at the issuer yet: {exc.detail}"
                )
                log.warning(
                    "registration at the issuer failed, retrying in %.1fs: %s", delay, exc.detail
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # --- channel terms ---------------------------------------------------------

    def known_terms(self, channel_id: str) -> ChannelTerms | None:
        """The cached terms of a channel that may take payments, if this worker learned
        them already; refused once expired (SPEC §4.6)."""
        terms = self._terms.get(channel_id)
        if terms is not None:
            require_unexpired(terms, now_us())
        return terms

    async def terms(self, rules: AnyRules, channel_id: str) -> ChannelTerms:
        """Terms of a channel that may take payments: cached, or learned from the issuer
        once even under concurrent first payments; refused once expired (SPEC §4.6)."""
        terms = await self._known_terms(rules, channel_id)
        require_unexpired(terms, now_us())
        return terms

    async def _known_terms(self, rules: AnyRules, channel_id: str) -> ChannelTerms:
        terms = self._terms.get(channel_id)
        if terms is not None:
            return terms
        pending = self._learning.get(channel_id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._learning[channel_id] = pending
            try:
                channel = await self.issuer.channel(rules, channel_id)
                terms = learned_terms(channel, self.public_key_b64)
                # Kept before any payment under them is accepted: the audit checks
                # every accepted state against the terms it was accepted under.
                await self.store.remember_terms(channel_id, terms)
                if len(self._terms) >= self.config.terms_cache:
                    # Bounded memory: forget the longest-known channel (re-learned on demand).
                    del self._terms[next(iter(self._terms))]
                self._terms[channel_id] = terms
                pending.set_result(terms)
            except asyncio.CancelledError:
                pending.cancel()
                raise
            except Exception as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: waiters may not exist
                raise
            finally:
                del self._learning[channel_id]
            return terms
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():  # the learning request went away, not us: learn it ourselves
                return await self._known_terms(rules, channel_id)
            raise

    async def settlement_terms(self, rules: AnyRules, channel_id: str) -> ChannelTerms:
        """Terms for building a settlement, also for a channel the issuer already closed
        (a retry after a crash between the issuer's settlement and our record of it)."""
        terms = self._terms.get(channel_id)
        if terms is not None:
            return terms
        channel = await self.issuer.channel(rules, channel_id)
        return learned_terms(channel, self.public_key_b64, settling=True)

    async def amount_grew(self, rules: AnyRules, channel_id: str) -> bool:
        """Re-read the channel (a top-up may have raised its amount, SPEC §5.0): True if
        the amount grew. A re-read that finds nothing new waits `amount_recheck` seconds
        before the next one on this channel, so junk payments cannot flood the issuer;
        one that finds a top-up does not (each top-up is a signed, paid issuer request)."""
        cached = self._terms.get(channel_id)
        now = time.monotonic()
        last = self._rechecked.get(channel_id)
        if cached is None or (last is not None and now - last < self.config.amount_recheck):
            return False
        if len(self._rechecked) >= self.config.terms_cache:
            self._rechecked.clear()
        self._rechecked[channel_id] = now
        channel = await self.issuer.channel(rules, channel_id)
        if channel.state is not ChannelState.open:
            self._terms.pop(channel_id, None)  # re-learned (and refused) as not open
            return False
        if channel.terms.amount <= cached.amount:
            return False
        grown = msgspec.structs.replace(cached, amount=channel.terms.amount)
        await self.store.remember_terms(channel_id, grown)
        self._terms[channel_id] = grown
        del self._rechecked[channel_id]
        return True

    # --- payments ----------------------------------------------------------------

    async def pay(
        self, rules: AnyRules, channel_id: str, payment: Payment, client: str
    ) -> Accepted:
        """One payment for the (canonical) channel id, decided and stored; `client` is
        the sender's address (it keys the failed-work budget)."""
        mode = rules.mode.value
        started = time.perf_counter()
        try:
            try:
                accepted = await self._pay(rules, channel_id, payment, client)
            except NanoMoniError as exc:
                if exc.code is not Code.exceeds_amount or not await self.amount_grew(
                    rules, channel_id
                ):
                    raise
                accepted = await self._pay(rules, channel_id, payment, client)  # topped up
        except NanoMoniError as exc:
            metrics.payment(mode, "rejected", time.perf_counter() - started, exc.code.value)
            raise
        outcome = "replay" if accepted.replay else "accepted"
        metrics.payment(mode, outcome, time.perf_counter() - started)
        return accepted

    async def _pay(
        self, rules: AnyRules, channel_id: str, payment: Payment, client: str
    ) -> Accepted:
        """Decided against the state this worker last saw of the channel when it has
        one (and the decision is cheap), written with a compare-and-set against that
        state: one store round trip. A write that finds the state moved, and any
        refusal or replay decided on a remembered state, is decided again on a fresh
        read, so no answer rests on an outdated state."""
        if payment.channel_id is not None and payment.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        terms = self.known_terms(channel_id) or await self.terms(rules, channel_id)
        require_mode(rules, terms, "payment")
        now = encoding.utc_now()
        keys = rules.payment_node_keys(terms, payment)
        view = None if keys else self.views.usable(rules, terms, payment)
        fresh = view is None
        if view is None:
            view = await self._load(channel_id, keys)
        lost = False
        while True:
            try:
                decision = await self.decide(rules, terms, view, payment, client, now)
            except NanoMoniError:
                if fresh:
                    raise
                view, fresh = await self._load(channel_id, keys), True
                continue
            if decision.replay:
                if fresh:
                    return Accepted(terms, decision.state, replay=True)
                view, fresh = await self._load(channel_id, keys), True
                continue
            expected = view.accepted_index
            started = time.perf_counter()
            try:
                result = await self.store.compare_and_set(
                    channel_id, decision.state, decision.nodes, expected
                )
            except StoreUnavailable:
                self.views.forget(channel_id)
                raise
            metrics.store_time("compare_and_set", time.perf_counter() - started)
            if result.outcome is CasOutcome.stored:
                if not keys:
                    self.views.remember(channel_id, decision.state, closing=False)
                self.note_accepted(rules, channel_id)
                return Accepted(terms, decision.state, replay=False)
            if result.outcome is CasOutcome.closing:
                self.views.remember(channel_id, result.current, closing=True)
                raise NanoMoniError(Code.channel_closed, "the channel is closed: no more payments")
            current = result.current
            if lost:  # moved twice under us: answered as a payment that lost its race
                if current is not None and (current.index, current.proof) == (
                    decision.state.index,
                    decision.state.proof,
                ):
                    return Accepted(terms, current, replay=True)  # an identical one won
                raise NanoMoniError(
                    Code.non_monotonic, "payment index must be strictly increasing"
                )
            lost = True
            if keys:
                view = await self._load(channel_id, keys)
            else:  # the compare-and-set answered with the current state: decide on it
                view = VendorView(state=current, nodes=[], closing=False)
                self.views.remember(channel_id, current, closing=False)
            fresh = True

    async def decide_for(
        self, rules: AnyRules, channel_id: str, payment: Payment, client: str
    ) -> tuple[ChannelTerms, Decision, int]:
        """The terms, the decision on one payment and the index it was decided against
        (0: none), nothing stored yet (the paywall stores it with its charge): on the
        state this worker last saw when usable, a refusal decided on that state being
        decided again on a fresh read (and, refused for its amount, on re-read terms
        when a top-up raised it)."""
        try:
            return await self._decide_for(rules, channel_id, payment, client)
        except NanoMoniError as exc:
            if exc.code is not Code.exceeds_amount or not await self.amount_grew(
                rules, channel_id
            ):
                raise
        return await self._decide_for(rules, channel_id, payment, client)

    def decide_known(
        self, rules: AnyRules, channel_id: str, payment: Payment
    ) -> tuple[ChannelTerms, Decision, int] | None:
        """`decide_for` when it needs no I/O (the terms and a usable view are known and
        the payment is accepted or replayed on them); None: await `decide_for`."""
        terms = self.known_terms(channel_id)
        return None if terms is None else self._decide_on_view(rules, channel_id, payment, terms)

    def _decide_on_view(
        self, rules: AnyRules, channel_id: str, payment: Payment, terms: ChannelTerms
    ) -> tuple[ChannelTerms, Decision, int] | None:
        """The decision on the view this worker remembers, if it has a usable one and the
        payment passes on it (a refusal there is decided again on a fresh read)."""
        if payment.channel_id is not None and payment.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        require_mode(rules, terms, "payment")
        if rules.payment_node_keys(terms, payment):
            return None
        view = self.views.usable(rules, terms, payment)
        if view is None:
            return None
        try:  # a usable view's walk is short: decided inline, as `decide` would
            max_hashes = self.config.max_hashes
            now = encoding.utc_now()
            decision = decide_payment(rules, terms, view, payment, now=now, max_hashes=max_hashes)
        except NanoMoniError as exc:
            if exc.status >= 500 or exc.code is Code.rate_limited:
                raise
            return None
        return terms, decision, view.accepted_index

    async def _decide_for(
        self, rules: AnyRules, channel_id: str, payment: Payment, client: str
    ) -> tuple[ChannelTerms, Decision, int]:
        if payment.channel_id is not None and payment.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        terms = self.known_terms(channel_id) or await self.terms(rules, channel_id)
        found = self._decide_on_view(rules, channel_id, payment, terms)
        if found is not None:
            return found
        keys = rules.payment_node_keys(terms, payment)
        view = await self._load(channel_id, keys)
        decision = await self.decide(rules, terms, view, payment, client, encoding.utc_now())
        return terms, decision, view.accepted_index

    async def _load(self, channel_id: str, keys: Sequence[int]) -> VendorView:
        started = time.perf_counter()
        view = await self.store.load(channel_id, keys)
        metrics.store_time("load", time.perf_counter() - started)
        if not keys:
            self.views.remember(channel_id, view.state, closing=view.closing)
        return view

    def check_budget(
        self,
        rules: AnyRules,
        terms: ChannelTerms,
        view: VendorView,
        payment: Payment,
        client: str,
    ) -> int:
        """The hash walk verifying `payment` against `view` costs; 429 `rate_limited` if
        it is an expensive one and `client` failed too many of those lately."""
        accepted = view.accepted_index
        walk = rules.hash_walk(terms, accepted, payment)
        if walk > crypto.INLINE_HASHES:
            self.budget.check(terms.channel_id, client, walk)
        return walk

    async def decide(
        self,
        rules: AnyRules,
        terms: ChannelTerms,
        view: VendorView,
        payment: Payment,
        client: str,
        now: str,
    ) -> Decision:
        """The decision on `payment` against `view` (no store write): long walks run in a
        thread and, when they fail, spend from `client`'s budget."""
        walk = self.check_budget(rules, terms, view, payment, client)
        max_hashes = self.config.max_hashes
        if walk <= crypto.INLINE_HASHES:
            return decide_payment(rules, terms, view, payment, now=now, max_hashes=max_hashes)
        decide = functools.partial(
            decide_payment, rules, terms, view, payment, now=now, max_hashes=max_hashes
        )
        try:
            # The native core releases the GIL: a thread keeps this worker's loop serving.
            return await asyncio.to_thread(decide)
        except NanoMoniError as exc:
            if exc.code is Code.invalid_proof:  # the walk was done for nothing
                self.budget.spend(terms.channel_id, client, walk)
            raise

    async def pay_many(
        self, items: Sequence[BatchItem | NanoMoniError], client: str
    ) -> list[ItemAccepted | ItemRefused]:
        """A batch (SPEC §12): each item's answer as if it had been sent alone, in
        order; `items` as `wire.decode_batch` gives them."""
        return await Batch(self, items, client).run()

    # --- closure -------------------------------------------------------------------

    async def close(
        self,
        rules: AnyRules,
        channel_id: str,
        request: CloseRequest,
        authorization: str | None,
    ) -> None:
        """SPEC §5.6: settle the channel at the issuer once, if its client (or the
        operator, by `authorization`) asks."""
        try:
            await self._close(rules, channel_id, request, authorization)
        except NanoMoniError as exc:
            metrics.settlement(rules.mode.value, "rejected" if exc.status < 500 else "failed")
            raise

    def _operator(self, authorization: str | None) -> bool:
        """True for the operator's bearer token; 401 for any other Authorization."""
        if authorization is None:
            return False
        token = self.config.admin_token
        expected = f"Bearer {token}".encode()
        if not token or not hmac.compare_digest(authorization.encode(), expected):
            raise NanoMoniError(
                Code.unauthorized, "the Authorization header is not the admin token"
            )
        return True

    async def _close(
        self,
        rules: AnyRules,
        channel_id: str,
        body: CloseRequest,
        authorization: str | None,
    ) -> None:
        """Order: no credential 401, nothing accepted 400, wrong signature 401."""
        if body.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        operator = self._operator(authorization)
        if not operator and body.client_signature is None:
            raise NanoMoniError(
                Code.unauthorized,
                "a closure needs the client's signature (client_signature_b64) "
                "or the vendor's admin token",
            )
        store = self.store
        async with metrics.timed_store("settlement"):
            settled = await store.settlement(channel_id) is not None
        # An empty channel stays open for payments: only a channel with a state is frozen.
        async with metrics.timed_store("load"):
            view = await store.load(channel_id)
        if view.state is None and not settled:
            raise NanoMoniError(Code.no_payments, "no payment was ever accepted on this channel")
        terms = await self.settlement_terms(rules, channel_id)
        require_mode(rules, terms, "closure")
        if body.client_signature is not None and not operator:
            check_consent(terms, VENDOR_CLOSE, body.client_signature)
        if settled:
            return  # already settled: 204 again, nothing moves twice
        await self._settle_final(rules, channel_id, terms)

    async def _settle_final(self, rules: AnyRules, channel_id: str, terms: ChannelTerms) -> None:
        """Freeze the channel (no more payments), settle its accepted state at the issuer
        and record the answer: what a closure request and the watch both do."""
        store = self.store
        async with metrics.timed_store("begin_close"):
            state = await store.begin_close(channel_id)
        if state is None:
            raise NanoMoniError(Code.no_payments, "no payment was ever accepted on this channel")
        settlement = await self._settlement(rules, channel_id, terms, state, final=None)
        result = await self.issuer.settle(rules, channel_id, settlement)
        await self._check_receipt(channel_id, result.signed_receipt())
        closure = Closure(
            owed=state.owed,
            proof_digest=hashlib.sha256(state.proof).digest(),
            client_balance=result.client_balance,
            vendor_balance=result.vendor_balance,
            closed_at=encoding.utc_now(),
        )
        async with metrics.timed_store("record_settlement"):
            await store.record_settlement(channel_id, closure)
        self._unchecked.pop(channel_id, None)
        metrics.settlement(rules.mode.value, "settled")

    async def _settlement(
        self,
        rules: AnyRules,
        channel_id: str,
        terms: ChannelTerms,
        state: PaymentState,
        *,
        final: bool | None,
    ) -> Settlement:
        node_keys = rules.settlement_node_keys(terms, state)
        nodes: list[bytes | None] = []
        if node_keys:
            async with metrics.timed_store("nodes"):
                nodes = await self.store.nodes(channel_id, node_keys)
        settlement: Settlement = rules.build_settlement(terms, state, nodes, self.key, final=final)
        return settlement

    async def _check_receipt(self, channel_id: str, signed: SignedReceipt | None) -> bool:
        """Whether the issuer's receipt is there and signed by it (logged when not)."""
        if signed is None:
            log.warning("the issuer sent no receipt for channel %s", channel_id)
            return False
        try:
            if self._issuer_der is None:
                self._issuer_der = await self.issuer.public_key()
            check_receipt(self._issuer_der, signed, channel_id)
        except NanoMoniError as exc:  # the money moved anyway: record it, say so
            log.error("receipt of channel %s not verified: %s", channel_id, exc.detail)
            return False
        return True

    # --- the watch (SPEC §4.6) ------------------------------------------------------

    async def _every(
        self, seconds: float, job: Callable[[], Awaitable[int]], *, first_wait: bool = False
    ) -> None:
        """Run `job` now (unless `first_wait`) and then every `seconds`, whatever it raises."""
        if first_wait:
            await asyncio.sleep(seconds)
        while True:
            try:
                await job()
            except NanoMoniError as exc:
                log.warning("%s failed, retrying in %gs: %s", job.__name__, seconds, exc.detail)
            except Exception:
                log.exception("%s failed, retrying in %gs", job.__name__, seconds)
            await asyncio.sleep(seconds)

    async def watch(self) -> int:
        """Settle every channel of ours the issuer lists as closing and that we hold a
        payment for; refuse further payments on all of them. The number settled now."""
        listed = await self.issuer.closing_channels(self.key)
        limit = asyncio.Semaphore(config.SETTLE_CONCURRENCY)

        async def settle(mode: str, channel_id: str) -> bool:
            async with limit:
                return await self._settle_closing(mode, channel_id)

        done = await asyncio.gather(
            *(settle(item.mode, item.channel_id) for item in listed.channels)
        )
        return sum(done)

    async def _settle_closing(self, mode: str, channel_id: str) -> bool:
        try:
            rules = rules_for(mode)
            encoding.require_channel_id(channel_id)
        except NanoMoniError:
            log.warning("the issuer listed an unknown channel %s %r", mode, channel_id)
            return False
        # Forget it: a payment re-learns the channel, and is refused as closing.
        self._terms.pop(channel_id, None)
        self.views.forget(channel_id)
        store = self.store
        try:
            async with metrics.timed_store("settlement"):
                if await store.settlement(channel_id) is not None:
                    return False
            async with metrics.timed_store("load"):
                if (await store.load(channel_id)).state is None:
                    return False  # nothing accepted: nothing to settle
            terms = await self.settlement_terms(rules, channel_id)
            await self._settle_final(rules, channel_id, terms)
        except NanoMoniError as exc:
            metrics.settlement(mode, "rejected" if exc.status < 500 else "failed")
            log.error("settling closing channel %s failed: %s", channel_id, exc.detail)
            return False
        return True

    # --- checkpoints (SPEC §4.5) -----------------------------------------------------

    def note_accepted(self, rules: AnyRules, channel_id: str) -> None:
        """A payment was stored on this channel: its next checkpoint has work to do.
        (Every front door that stores payments calls this.)"""
        if self.config.checkpoint_interval > 0:
            self._unchecked[channel_id] = rules

    async def checkpoint_all(self) -> int:
        """Checkpoint every channel this worker accepted payments on since its last
        checkpoint; the number that moved money."""
        due, self._unchecked = self._unchecked, {}
        limit = asyncio.Semaphore(config.SETTLE_CONCURRENCY)

        async def one(rules: AnyRules, channel_id: str) -> bool:
            async with limit:
                try:
                    return await self.checkpoint(rules, channel_id)
                except NanoMoniError as exc:
                    if exc.status >= 500 and exc.code is not Code.settlement_failed:
                        self._unchecked.setdefault(channel_id, rules)  # try again next time
                    log.warning("checkpoint of %s failed: %s", channel_id, exc.detail)
                    return False

        done = await asyncio.gather(*(one(rules, cid) for cid, rules in due.items()))
        return sum(done)

    async def checkpoint(self, rules: AnyRules, channel_id: str) -> bool:
        """Withdraw what the accepted state owes beyond what we were credited, leaving the
        channel open (`final: false`). True if money moved."""
        async with metrics.timed_store("load"):
            view = await self.store.load(channel_id)
        state = view.state
        credited = self._credited.get(channel_id, 0)
        if state is None or view.closing or state.owed <= credited:
            return False
        terms = await self.settlement_terms(rules, channel_id)
        settlement = await self._settlement(rules, channel_id, terms, state, final=False)
        result = await self.issuer.settle(rules, channel_id, settlement)
        signed = result.signed_receipt()
        if not await self._check_receipt(channel_id, signed):
            return False
        assert signed is not None
        if len(self._credited) >= self.config.terms_cache:
            del self._credited[next(iter(self._credited))]
        self._credited[channel_id] = signed.receipt.vendor_credited
        return signed.receipt.vendor_credited > credited


