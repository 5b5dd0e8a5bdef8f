"""The vendor without HTTP (SPEC §5): what a payment, a closure or the issuer's
channel view does to a vendor's state. The HTTP service (`vendor.app`), the
batch and stream endpoints and the 402 paywall (`nanomoni.paywall`) all call
this one object, so one decision and one store step serve every front door.

Channel terms never change after open (but for a top-up's amount), so every
worker caches them in memory after learning them from the issuer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from nanomoni import config, crypto, encoding, metrics
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.consent import VENDOR_CLOSE, check_consent
from nanomoni.protocol.messages import CloseRequest, Payment
from nanomoni.protocol.model import CasOutcome, ChannelTerms, Closure, PaymentState, VendorView
from nanomoni.protocol.modes import AnyRules
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
        self.budget = HashBudget()
        self.views = ViewCache(config.terms_cache)

    @property
    def store(self) -> VendorStore:
        if self._store is None:
            raise RuntimeError("vendor store used before start-up")
        return self._store

    async def start(self) -> None:
        self._store = await open_vendor_store(self.config.store_url)
        self._registration = asyncio.create_task(self._register_until_done())

    async def stop(self) -> None:
        if self._registration is not None:
            self._registration.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registration
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
        """The cached terms of a channel, if this worker learned them already."""
        return self._terms.get(channel_id)

    async def terms(self, rules: AnyRules, channel_id: str) -> ChannelTerms:
        """Cached terms, or learned from the issuer once even under concurrent first payments."""
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
                return await self.terms(rules, channel_id)
            raise

    async def settlement_terms(self, rules: AnyRules, channel_id: str) -> ChannelTerms:
        """Terms for building a settlement, also for a channel the issuer already closed
        (a retry after a crash between the issuer's settlement and our record of it)."""
        terms = self._terms.get(channel_id)
        if terms is not None:
            return terms
        channel = await self.issuer.channel(rules, channel_id)
        return learned_terms(
            msgspec.structs.replace(channel, is_closed=False), self.public_key_b64
        )

    # --- payments ----------------------------------------------------------------

    async def pay(
        self, rules: AnyRules, channel_id: str, payment: Payment, client: str
    ) -> Accepted:
        """One payment for the (canonical) channel id, decided and stored; `client` is
        the sender's address (it keys the failed-work budget)."""
        mode = rules.mode.value
        started = time.perf_counter()
        try:
            accepted = await self._pay(rules, channel_id, payment, client)
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
        decided again on a fresh read."""
        if payment.channel_id is not None and payment.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        terms = self.known_terms(channel_id) or await self.terms(rules, channel_id)
        require_mode(rules, terms, "payment")
        now = encoding.utc_now()
        keys = rules.payment_node_keys(terms, payment)
        view = None if keys else self.views.usable(rules, terms, payment)
        if view is not None:
            try:
                decision = await self.decide(rules, terms, view, payment, client, now)
                return terms, decision, view.accepted_index
            except NanoMoniError as exc:
                if exc.status >= 500 or exc.code is Code.rate_limited:
                    raise
        view = await self._load(channel_id, keys)
        decision = await self.decide(rules, terms, view, payment, client, now)
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
        decide = functools.partial(
            decide_payment, rules, terms, view, payment, now=now, max_hashes=self.config.max_hashes
        )
        if walk <= crypto.INLINE_HASHES:
            return decide()
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
        async with metrics.timed_store("begin_close"):
            state = await store.begin_close(channel_id)
        if state is None:
            raise NanoMoniError(Code.no_payments, "no payment was ever accepted on this channel")
        node_keys = rules.settlement_node_keys(terms, state)
        nodes: list[bytes | None] = []
        if node_keys:
            async with metrics.timed_store("nodes"):
                nodes = await store.nodes(channel_id, node_keys)
        settlement = rules.build_settlement(terms, state, nodes, self.key)
        result = await self.issuer.settle(rules, channel_id, settlement)
        closure = Closure(
            owed=state.owed,
            proof_digest=hashlib.sha256(state.proof).digest(),
            client_balance=result.client_balance,
            vendor_balance=result.vendor_balance,
            closed_at=encoding.utc_now(),
        )
        async with metrics.timed_store("record_settlement"):
            await store.record_settlement(channel_id, closure)
        metrics.settlement(rules.mode.value, "settled")
