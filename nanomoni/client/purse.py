"""What a paying HTTP client does on a 402 (SPEC §11), apart from any HTTP library.

`Purse.flow` is a generator that says what to do with one request — send it
(with this `Payment` header), read the answer's body, run a coroutine (open a
channel, pay a stream), lease a lane, meter a stream — and learns from the
answers. `nanomoni.client.auth` drives it for httpx (sync and async) and
aiohttp, so the three behave alike.

* A **lane** is one channel used by one request at a time (payments in a
  channel are serial); concurrent requests take different lanes, at most
  `lanes` of them, and wait for one beyond that.
* A lane **prepays** `prepay` requests' worth at a time, in the request's own
  header when its credit (per the last receipt) will not cover the next price,
  so most requests spend credit without a round trip to pay.
* A channel that cannot take the next payment is **renewed**: a new channel is
  opened for the lane (within `budget`: the most this purse will ever have paid
  or locked) and the old one is settled — but a `signature` channel is topped
  up in place (SPEC §4.6): no new channel, no settlement.
* Every request carries a fresh request id (or one derived from its
  `Idempotency-Key`), the same on each retry, so the paywall charges it once; a
  payment whose answer was lost is sent again identically until the vendor's
  answer (a receipt or a refusal) settles it.
* It pays only the issuer it was given, and only the first origin that asked.
  A 503 is returned to the caller as is: no new channel for an outage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import math
import secrets
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from nanomoni import config, paywire, wire
from nanomoni.client.http import TRANSIENT, ApiError
from nanomoni.client.session import Channel, Client
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import b64url_nopad
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import Payment
from nanomoni.protocol.modes import ALL, AnyRules, rules_for

log = logging.getLogger("nanomoni.client")

ATTEMPTS = 4  # paid retries of one request before its 402 is handed to the caller
PAY_RETRIES = 5
# Refusals after which the lane's channel cannot go on: pay on a new one.
_RENEW = frozenset(
    {
        Code.channel_closed,
        Code.channel_not_found,
        Code.exceeds_amount,
        Code.exceeds_max,
        Code.wrong_vendor,
        Code.mode_mismatch,
        Code.non_monotonic,
        Code.duplicate_mismatch,
    }
)


class BudgetExhausted(NanoMoniError):
    """Paying on would pass the purse's budget."""

    def __init__(self, detail: str) -> None:
        super().__init__(Code.insufficient_balance, detail)


# --- what the flow asks its driver to do -----------------------------------------------


@dataclass(frozen=True)
class Send:
    payment: str | None  # the Payment header value, None: no header


@dataclass(frozen=True)
class Read:
    pass


@dataclass(frozen=True)
class Run:
    step: Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Lease:
    pass


@dataclass(frozen=True)
class Meter:
    lane: Lane


Step = Send | Read | Run | Lease | Meter


class Reply(Protocol):
    """An answer as the flow reads it (the driver's response object adapted)."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None: ...


# --- lanes ---------------------------------------------------------------------------------


@dataclass
class Lane:
    channel: Channel | None = None
    consumed: int = 0  # per the vendor's last word (receipt, credit, stream event)
    price: int = 0  # the last price this lane was asked
    pending: tuple[int, Payment] | None = None  # sent; not yet acknowledged or refused
    worn: bool = False  # the channel must not take more payments: renew it

    @property
    def owed(self) -> int:
        return 0 if self.channel is None else self.channel.owed

    def acknowledged(self, channel_id: str, owed: int, consumed: int) -> None:
        """The vendor's word on this channel: what it holds (resolves a pending payment)."""
        channel = self.channel
        if channel is None or channel.channel_id != channel_id:
            return
        self.consumed = consumed
        if self.pending is not None:
            index = self.pending[0]
            if owed >= index * channel.unit_value:
                channel.payer.accepted(index)
                self.pending = None


class LanePool:
    """At most `limit` lanes; a request waits (sync or async) for a free one."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._free: list[Lane] = []
        self._waiters: deque[Callable[[Lane], None]] = deque()
        self._lock = threading.Lock()
        self.lanes: list[Lane] = []

    def _take_or_wait(self, waiter: Callable[[Lane], None]) -> Lane | None:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._count < self._limit:
                self._count += 1
                lane = Lane()
                self.lanes.append(lane)
                return lane
            self._waiters.append(waiter)
            return None

    def take(self) -> Lane:
        got: list[Lane] = []
        ready = threading.Event()

        def hand(lane: Lane) -> None:
            got.append(lane)
            ready.set()

        lane = self._take_or_wait(hand)
        if lane is not None:
            return lane
        ready.wait()
        return got[0]

    async def take_async(self) -> Lane:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lane] = loop.create_future()

        def hand(lane: Lane) -> None:
            loop.call_soon_threadsafe(_resolve, future, lane, self)

        lane = self._take_or_wait(hand)
        if lane is not None:
            return lane
        return await future

    def give_back(self, lane: Lane) -> None:
        with self._lock:
            if not self._waiters:
                self._free.append(lane)
                return
            waiter = self._waiters.popleft()
        waiter(lane)


def _resolve(future: asyncio.Future[Lane], lane: Lane, pool: LanePool) -> None:
    if future.cancelled():  # the waiter left: the lane goes to the next one
        pool.give_back(lane)
    else:
        future.set_result(lane)


# --- the purse ------------------------------------------------------------------------------


def request_id_for(idempotency_key: str | None) -> str:
    """A fresh request id, or the one a caller's Idempotency-Key stands for."""
    if idempotency_key is None:
        return secrets.token_urlsafe(18)
    if paywire.REQUEST_ID.fullmatch(idempotency_key):
        return idempotency_key
    return b64url_nopad(hashlib.sha256(idempotency_key.encode()).digest())


@dataclass
class Purse:
    """Keys, channels and lanes of one paying client (see the module doc)."""

    issuer_url: str
    budget: int
    key_file: Path | None = None
    modes: list[AnyRules] = field(default_factory=lambda: list(ALL))
    prepay: int = 4  # requests' worth per payment
    channel_requests: int = 256  # a channel's size, in requests at the first price
    lanes: int = 4
    key_kind: str = "p256"

    def __post_init__(self) -> None:
        if self.budget < 1 or self.prepay < 1 or self.channel_requests < 1 or self.lanes < 1:
            raise ValueError("budget, prepay, channel_requests and lanes must be at least 1")
        self.issuer_url = self.issuer_url.rstrip("/")
        if self.key_file is not None:
            self.wallet = Wallet.load_or_create(Path(self.key_file), self.key_kind)
        else:
            self.wallet = Wallet.generate(self.key_kind)
        self.origin: str | None = None
        self.pool = LanePool(self.lanes)
        self.reserved = 0  # locked in open channels + paid in settled ones
        self.channels: list[Channel] = []  # open channels, settled at the end
        self.closed: list[Channel] = []  # channels settled at the issuer
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._registered = False
        self._closing: set[asyncio.Task[None]] = set()

    # --- a private event loop for the purse's own I/O (issuer, payments, closures) ---

    def submit(self, step: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="nanomoni-purse", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop

        async def run() -> Any:
            return await step()

        return asyncio.run_coroutine_threadsafe(run(), loop)

    def call(self, step: Callable[[], Awaitable[Any]]) -> Any:
        return self.submit(step).result()

    async def call_async(self, step: Callable[[], Awaitable[Any]]) -> Any:
        return await asyncio.wrap_future(self.submit(step))

    def close(self) -> None:
        """Settle every channel that holds a payment, then stop the private loop."""
        if self._loop is None:
            return
        try:
            self.call(self._close_all)
        finally:
            with self._lock:
                loop, thread = self._loop, self._thread
                self._loop = self._thread = None
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(10)
                loop.close()

    async def _close_all(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for channel in list(self.channels):
            await self._settle(channel)
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _settle(self, channel: Channel) -> None:
        """Ask the vendor behind the paywall to settle (SPEC §5.6); unspent credit
        stays paid, the rest of the channel goes back to the wallet."""
        if channel not in self.channels:
            return
        self.channels.remove(channel)
        owed = channel.owed
        if owed > 0:
            try:
                await channel.close()
            except (NanoMoniError, *TRANSIENT) as exc:
                log.warning("closing channel %s failed: %s", channel.channel_id, exc)
                return
            self.closed.append(channel)
        with self._lock:
            self.reserved -= channel.info.terms.amount - owed

    # --- the flow of one request ----------------------------------------------------

    def flow(self, origin: str, idempotency_key: str | None) -> Generator[Step, Any, None]:
        if self.origin is not None and origin != self.origin:
            yield Send(None)  # bound to one origin: others are never paid
            return
        lane: Lane = yield Lease()
        metered = False
        try:
            request_id = request_id_for(idempotency_key)
            reply: Reply = yield Send(self._header(lane, request_id, before=True))
            for _ in range(ATTEMPTS):
                self._learn(lane, reply)
                if reply.status != 402:
                    if self._streams(reply) and lane.channel is not None:
                        metered = True
                        yield Meter(lane)
                    return
                body: bytes = yield Read()
                wanted = self._refusal(reply, body, origin, lane)
                if wanted is None:
                    return  # not ours to pay: the caller gets the 402
                yield Run(functools.partial(self._ready, lane, wanted.price))
                reply = yield Send(self._header(lane, request_id, before=False))
        finally:
            if not metered:
                self.pool.give_back(lane)

    @staticmethod
    def _streams(reply: Reply) -> bool:
        kind = reply.header("content-type") or ""
        return kind.lower().startswith(paywire.EVENT_STREAM.decode())

    def _learn(self, lane: Lane, reply: Reply) -> None:
        text = reply.header(paywire.PAYMENT_RECEIPT)
        if text is None:
            return
        try:
            receipt = paywire.decode_receipt(text)
        except NanoMoniError:
            return
        lane.acknowledged(receipt.channel_id, receipt.owed, receipt.consumed)

    def _refusal(
        self, reply: Reply, body: bytes, origin: str, lane: Lane
    ) -> paywire.Requirements | None:
        """What a 402 asks for, if this purse should pay it; updates the lane."""
        try:
            refusal = msgspec.json.decode(body, type=paywire.Refusal)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        wanted = refusal.requirements
        if wanted is None or wanted.version != paywire.VERSION:
            return None
        if wanted.issuer_url.rstrip("/") != self.issuer_url:
            log.warning("not paying %s: its issuer %s is not ours", origin, wanted.issuer_url)
            return None
        with self._lock:
            if self.origin is None:
                self.origin = origin
        if self.origin != origin:
            return None
        if lane.channel is not None and (
            lane.channel.info.terms.vendor_public_key_der_b64 != wanted.vendor_public_key_der_b64
        ):
            lane.worn = True  # another vendor key now: a new channel toward it
        lane.price = wanted.price
        self._offered = wanted.modes
        algs = wanted.hash_algs
        self._hash_alg = "sha256" if "sha256" in algs or not algs else algs[0]
        if refusal.credit is not None:
            credit = refusal.credit
            lane.acknowledged(credit.channel_id, credit.owed, credit.consumed)
        try:
            code = Code(refusal.code)
        except ValueError:
            return None
        if code in (Code.payment_required, Code.insufficient_credit):
            return wanted
        lane.pending = None  # the payment was refused: it was not taken
        if code in _RENEW:
            lane.worn = True
            return wanted
        return None

    def _header(self, lane: Lane, request_id: str, *, before: bool) -> str | None:
        channel = lane.channel
        if channel is None or lane.worn:
            return None
        payment: Payment | None = None
        if lane.pending is not None:
            payment = lane.pending[1]  # unresolved: the identical payment again
        elif not before or lane.owed - lane.consumed < lane.price:
            payment = self._next_payment(lane, lane.price)
        return paywire.encode_payment(channel.rules, channel.channel_id, payment, request_id)

    def _next_payment(self, lane: Lane, price: int) -> Payment | None:
        """A payment raising the lane's credit to `prepay` prices (as far as the channel
        goes); None if the credit covers `price` already or the channel cannot."""
        channel = lane.channel
        assert channel is not None
        if lane.owed - lane.consumed >= price:
            return None
        unit = channel.unit_value
        needed = math.ceil((lane.consumed + price) / unit)
        if needed > channel.max_index:
            return None
        index = min(channel.max_index, math.ceil((lane.consumed + price * self.prepay) / unit))
        payment = channel.payer.payment(index)
        lane.pending = (index, payment)
        return payment

    def _room(self, lane: Lane, price: int) -> bool:
        channel = lane.channel
        if channel is None or lane.worn:
            return False
        return math.ceil((lane.consumed + price) / channel.unit_value) <= channel.max_index

    # --- channels (run on the private loop) -----------------------------------------------

    def _client_for(self) -> Client:
        if self._client is None:
            assert self.origin is not None
            self._client = Client(self.issuer_url, self.origin, self.wallet)
        return self._client

    async def _ready(self, lane: Lane, price: int) -> None:
        """Make the lane able to pay `price`: its channel as is, topped up, or a new one."""
        if lane.pending is not None and not lane.worn:
            return  # the unresolved payment goes again first
        if self._room(lane, price):
            return
        if lane.channel is not None and not lane.worn and await self._top_up(lane, price):
            return
        old = lane.channel
        lane.channel = await self._open(price)
        lane.consumed, lane.pending, lane.worn = 0, None, False
        if old is not None:  # renewed: settle the old one meanwhile
            task = asyncio.create_task(self._settle(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _top_up(self, lane: Lane, price: int) -> bool:
        """Raise the lane's channel in place by another channel's worth (SPEC §4.6: a
        `signature` channel's amount is its index) instead of opening a new one. False
        where a new channel is needed: a mode of fixed units, no budget for it, or a
        top-up the issuer refused (an expired or closing channel)."""
        channel = lane.channel
        if channel is None or channel.rules.members is not None:
            return False
        with self._lock:
            amount = min(self.budget - self.reserved, price * self.channel_requests)
            if amount < 1 or channel.max_index + amount < lane.consumed + price:
                return False
            self.reserved += amount
        try:
            await channel.top_up(amount)
        except (NanoMoniError, *TRANSIENT) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:  # refused: nothing locked
                with self._lock:
                    self.reserved -= amount
            # Else its outcome is unknown: it stays reserved (the budget is never passed);
            # the channel's view at settlement says what it locked.
            log.info("top-up of channel %s failed (%s): opening another", channel.channel_id, exc)
            return False
        return True

    async def _open(self, price: int) -> Channel:
        client = self._client_for()
        rules = self._choose_mode()
        unit = price if rules.members is not None else 1  # one index per price
        with self._lock:
            amount = min(self.budget - self.reserved, price * self.channel_requests)
            if amount < price:
                raise BudgetExhausted(
                    f"a channel for price {price} would pass the budget {self.budget} "
                    f"({self.reserved} paid or locked)"
                )
            count = min(amount // unit, config.CLIENT_MAX_INDEX)
            if rules.members is not None:
                amount = count * unit
            self.reserved += amount
        try:
            if not self._registered:
                await client.register()
                self._registered = True
            channel = await client.open_channel(
                rules.mode, amount, unit_value=unit, max_index=count, hash_alg=self._hash_alg
            )
        except BaseException:
            with self._lock:
                self.reserved -= amount
            raise
        self.channels.append(channel)
        return channel

    def _choose_mode(self) -> AnyRules:
        offered = [rules for rules in self.modes if rules.mode.value in self._offered]
        if not offered:
            raise NanoMoniError(Code.mode_mismatch, "the paywall takes none of our modes")
        return min(offered, key=lambda rules: rules.payment_cost)

    # --- metered streams ------------------------------------------------------------------

    def stream_step(self, lane: Lane, event: bytes) -> Callable[[], Awaitable[None]] | None:
        """What to do about one event of a paid stream: None to pass it on, else the
        payment that answers a `payment-required` event (the event is swallowed)."""
        kind, data = paywire.event_fields(event)
        if kind != paywire.PAYMENT_REQUIRED:
            return None
        try:
            wanted = msgspec.json.decode(data, type=paywire.StreamRequirements)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return functools.partial(self._pay_stream, lane, wanted)

    async def _pay_stream(self, lane: Lane, wanted: paywire.StreamRequirements) -> None:
        channel = lane.channel
        if channel is None or channel.channel_id != wanted.channel_id:
            return
        lane.acknowledged(wanted.channel_id, wanted.owed, wanted.consumed)
        lane.price = max(lane.price, wanted.price)
        payment = lane.pending[1] if lane.pending is not None else None
        if payment is None:
            payment = self._next_payment(lane, wanted.price)
        if payment is None:
            if not await self._top_up(lane, wanted.price):
                log.warning("channel %s is spent: the stream will end", channel.channel_id)
            return
        assert lane.pending is not None
        index = lane.pending[0]
        body = wire.encode_payment(payment)
        for attempt in range(PAY_RETRIES):
            try:
                await self._client_for().vendor.pay(channel.rules, channel.channel_id, body)
            except TRANSIENT:
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            except ApiError as error:
                if error.status >= 500:
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                lane.pending = None
                lane.worn = True
                return
            channel.payer.accepted(index)
            lane.pending = None
            return


def rules_named(modes: list[str] | None) -> list[AnyRules]:
    return list(ALL) if modes is None else [rules_for(mode) for mode in modes]
