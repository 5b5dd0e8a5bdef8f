"""The wallet-facing client: register, open, pay (with safe retries), top up, close.

Closing is the client's way (SPEC §4.6): ask the vendor to settle, and if it does not
within a timeout, close at the issuer — the client then gets back, at the dispute
deadline, everything the vendor did not settle. Every receipt the issuer sends is
checked against the issuer's key and kept (`Channel.receipts`).

Async first; `SyncClient` runs the same code on a private event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from nanomoni import config, wire
from nanomoni.client.http import (
    TRANSIENT,
    ApiError,
    Http,
    IssuerApi,
    PaymentStream,
    VendorApi,
    api_error,
)
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import b64decode, b64encode
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.consent import CLIENT_CLOSE, VENDOR_CLOSE, consent_message
from nanomoni.protocol.lifecycle import check_receipt, require_top_up
from nanomoni.protocol.model import ChannelInfo, Mode, SignedReceipt
from nanomoni.protocol.modes import RULES, AnyRules, Payer

if TYPE_CHECKING:
    from nanomoni.client.renewing import RenewingChannel

T = TypeVar("T")
NONCE_BYTES = 16


@dataclass(frozen=True)
class PaymentResult:
    index: int  # k, i, or the cumulative amount in signature mode
    owed: int
    replay: bool  # the vendor answered 200: it had already accepted this exact body
    attempts: int
    response: wire.PaymentResponse


class Channel:
    """An open channel and its payer; payments on one channel are sequential."""

    def __init__(
        self,
        client: Client,
        rules: AnyRules,
        info: ChannelInfo,
        payer: Payer,
        unit_value: int,
        *,
        issuer_der: bytes,
        opened: SignedReceipt | None = None,
    ) -> None:
        self.client = client
        self.rules = rules
        self.mode = rules.mode
        self.info = info
        self.channel_id = info.terms.channel_id
        self.payer = payer
        self.unit_value = unit_value
        self.max_index = payer.max_index
        self.issuer_der = issuer_der  # the key every receipt must verify with
        self.receipts: dict[int, SignedReceipt] = {}  # by seq, each checked
        self._lock = asyncio.Lock()
        # A body sent but not answered: it must be resolved before anything newer,
        # because the vendor may have accepted it.
        self._pending: tuple[int, bytes] | None = None
        self._keep(info, opened)

    def _keep(self, info: ChannelInfo, *more: SignedReceipt | None) -> ChannelInfo:
        """Take the issuer's view (and receipts from its answer): every receipt must be
        signed by the issuer for this channel, else invalid_signature."""
        for signed in (*info.receipts, *more):
            if signed is not None:
                check_receipt(self.issuer_der, signed, self.channel_id)
                self.receipts[signed.receipt.seq] = signed
        self.info = info
        return info

    @property
    def amount(self) -> int:
        """The channel's amount as last seen (top-ups raise it)."""
        return self.info.terms.amount

    @property
    def remaining(self) -> int:
        """Payment indices still available in this channel."""
        return self.max_index - self.payer.last

    @property
    def accepted_index(self) -> int:
        return self.payer.last

    @property
    def owed(self) -> int:
        return self.payer.last * self.unit_value

    def encode_payment(self, index: int) -> bytes:
        """The exact body for `index` against the accepted state (no I/O)."""
        return wire.encode_payment(self.payer.payment(index))

    async def pay(self, units: int = 1) -> PaymentResult:
        """Pay `units` more (unit_value each; 1 unit = 1 in signature mode)."""
        async with self._lock:
            await self._resolve_pending()
            return await self._send(self.payer.last + units)

    async def pay_to(self, index: int) -> PaymentResult:
        async with self._lock:
            await self._resolve_pending()
            return await self._send(index)

    async def _resolve_pending(self) -> None:
        if self._pending is not None:
            index, body = self._pending
            await self._deliver(index, body)

    async def _send(self, index: int) -> PaymentResult:
        # Past the commitment no proof exists; refuse here with the vendor's code.
        if not 1 <= index <= self.max_index:
            raise NanoMoniError(
                Code.exceeds_max if index > self.max_index else Code.invalid_amount,
                f"payment index {index} is outside this channel's 1..{self.max_index}",
            )
        return await self._deliver(index, self.encode_payment(index))

    async def _deliver(self, index: int, body: bytes) -> PaymentResult:
        self._pending = (index, body)
        attempts = 0
        while True:
            attempts += 1
            try:
                status, response = await self.client.vendor.pay(self.rules, self.channel_id, body)
                break
            except TRANSIENT:
                if attempts > self.client.retries:
                    raise
            except ApiError as error:
                if error.code is not Code.issuer_unavailable or attempts > self.client.retries:
                    # A definite refusal: nothing was accepted, nothing is pending.
                    self._pending = None
                    raise
            await asyncio.sleep(self.client.retry_delay * attempts)
        self._pending = None
        self.payer.accepted(index)
        return PaymentResult(
            index=index,
            owed=response.cumulative_owed_amount,
            replay=status == 200,
            attempts=attempts,
            response=response,
        )

    async def close(self, *, vendor_timeout: float | None = None) -> ChannelInfo:
        """Close the client's way (idempotent): ask the vendor to settle; if it does not
        within `vendor_timeout` seconds (default: the client's `close_timeout`), refuses
        or cannot be reached, close at the issuer, which refunds at the dispute deadline
        all the vendor has not settled by then. The issuer's view afterwards."""
        timeout = self.client.close_timeout if vendor_timeout is None else vendor_timeout
        async with self._lock:
            consent = self.client.wallet.sign(consent_message(VENDOR_CLOSE, self.channel_id))
            try:
                await asyncio.wait_for(
                    self.client.vendor.close(self.rules, self.channel_id, consent), timeout
                )
            except (ApiError, *TRANSIENT, TimeoutError):
                return await self._close_at_issuer()
        return await self.refresh()

    async def close_at_issuer(self) -> ChannelInfo:
        """Start the dispute window at the issuer, whatever the vendor does (SPEC §4.6)."""
        async with self._lock:
            return await self._close_at_issuer()

    async def _close_at_issuer(self) -> ChannelInfo:
        consent = self.client.wallet.sign(consent_message(CLIENT_CLOSE, self.channel_id))
        info = await self.client.retried(
            lambda: self.client.issuer.client_close(self.rules, self.channel_id, consent)
        )
        return self._keep(info)

    async def wait_closed(self, *, poll: float = 0.5, timeout: float | None = None) -> ChannelInfo:
        """Poll the issuer until the channel is closed (settled, or finalized at its
        dispute deadline); TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.refresh()
            if info.is_closed:
                return info
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"channel {self.channel_id} still {info.state.value}")
            await asyncio.sleep(poll)

    async def top_up(self, amount: int) -> SignedReceipt:
        """Raise a signature channel's amount by `amount` (SPEC §4.6); the receipt."""
        async with self._lock:
            return await self._top_up(amount)

    async def _top_up(self, amount: int) -> SignedReceipt:
        require_top_up(self.rules)
        # A fresh nonce; a retry of this very body is answered with the same top-up.
        body = wire.top_up_body(
            self.channel_id, amount, os.urandom(NONCE_BYTES), self.client.wallet.sign
        )
        info, receipt = await self.client.retried(
            lambda: self.client.issuer.top_up(self.rules, self.channel_id, body)
        )
        if receipt is None:
            raise NanoMoniError(Code.invalid_signature, "the issuer sent no top-up receipt")
        self._keep(info, receipt)
        self.payer.max_index = self.max_index = info.terms.amount  # the amount is the index
        return receipt

    async def refresh(self) -> ChannelInfo:
        """The issuer's current view (balance = what the vendor got, once closed); its
        receipts are checked and kept."""
        return self._keep(await self.client.issuer.channel(self.rules, self.channel_id))


Transport = Literal["batch", "websocket"]


class Client:
    """Async client for one wallet against one issuer and one vendor."""

    def __init__(
        self,
        issuer_url: str,
        vendor_url: str,
        wallet: Wallet,
        *,
        connections: int = config.CLIENT_CONNECTIONS,
        timeout: float = config.CLIENT_TIMEOUT,
        retries: int = config.CLIENT_RETRIES,
        retry_delay: float = config.CLIENT_RETRY_DELAY,
        close_timeout: float = config.CLIENT_CLOSE_TIMEOUT,
    ) -> None:
        self.wallet = wallet
        self.http = Http(connections=connections, timeout=timeout)
        self.issuer = IssuerApi(self.http, issuer_url)
        self.vendor = VendorApi(self.http, vendor_url)
        self.retries = retries
        self.retry_delay = retry_delay
        self.close_timeout = close_timeout  # seconds the vendor gets to settle a close
        self._vendor_key: str | None = None
        self._issuer_key: str | None = None
        self._stream: PaymentStream | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        await self.http.close()

    async def pay_many(
        self,
        payments: Sequence[tuple[Channel, int]],
        *,
        batch_size: int = 64,
        transport: Transport = "batch",
    ) -> list[PaymentResult | ApiError]:
        """Pay `units` more on each (channel, units), in order, grouped into batches of
        `batch_size` (SPEC §12) sent as POSTs or as frames of one WebSocket. Each item's
        result is what paying it alone would give. A lost answer is retried with the
        identical batch; items it then finds already covered by their channel's accepted
        amount count as paid (a batch re-sent answers its earlier items non_monotonic)."""
        if not 1 <= batch_size <= config.MAX_BATCH_ITEMS:
            raise ValueError(f"batch_size must be in 1..{config.MAX_BATCH_ITEMS}")
        channels = list(dict.fromkeys(channel for channel, _ in payments))
        async with contextlib.AsyncExitStack() as held:
            for channel in sorted(channels, key=lambda c: c.channel_id):  # one lock order
                await held.enter_async_context(channel._lock)
            for channel in channels:
                await channel._resolve_pending()
            planned = self._plan(payments)
            results: list[PaymentResult | ApiError] = []
            for start in range(0, len(planned), batch_size):
                chunk = planned[start : start + batch_size]
                results += await self._send_batch(chunk, transport)
            return results

    def _plan(self, payments: Sequence[tuple[Channel, int]]) -> list[tuple[Channel, int, Any]]:
        """(channel, index, payment) per item, each built as if the ones before it on
        its channel were accepted; the payers are then put back where the vendor is."""
        accepted = {channel: channel.payer.last for channel, _ in payments}
        planned = []
        for channel, units in payments:
            index = channel.payer.last + units
            if not 1 <= index <= channel.max_index:
                raise NanoMoniError(
                    Code.exceeds_max if index > channel.max_index else Code.invalid_amount,
                    f"payment index {index} is outside this channel's 1..{channel.max_index}",
                )
            planned.append((channel, index, channel.payer.payment(index)))
            channel.payer.accepted(index)
        for channel, last in accepted.items():
            channel.payer.last = last
        return planned

    async def _send_batch(
        self, chunk: list[tuple[Channel, int, Any]], transport: Transport
    ) -> list[PaymentResult | ApiError]:
        body = wire.encode_batch([(channel.rules, payment) for channel, _, payment in chunk])
        attempts = 0
        while True:
            attempts += 1
            try:
                if transport == "websocket":
                    if self._stream is None:
                        self._stream = await self.vendor.stream()
                    answers = await self._stream.send(body)
                else:
                    answers = await self.vendor.pay_batch(body)
                break
            except TRANSIENT:
                self._stream = None  # a broken stream is replaced on the next attempt
                if attempts > self.retries:
                    raise
            await asyncio.sleep(self.retry_delay * attempts)
        # The highest index each channel's vendor state now covers.
        covered: dict[Channel, int] = {}
        for (channel, index, _), answer in zip(chunk, answers, strict=True):
            if answer.status in (200, 201):
                covered[channel] = max(covered.get(channel, 0), index)
        results: list[PaymentResult | ApiError] = []
        resent = attempts > 1
        for (channel, index, _), answer in zip(chunk, answers, strict=True):
            covered_by_later = index < covered.get(channel, 0)
            paid = answer.status in (200, 201) or (
                resent and answer.code == Code.non_monotonic and covered_by_later
            )
            if not paid:
                results.append(api_error(answer.status, wire.encode(answer)))
                continue
            channel.payer.accepted(index)
            response = wire.PaymentResponse(
                channel.channel_id,
                index * channel.unit_value,
                answer.created_at or "",
            )
            results.append(
                PaymentResult(
                    index=index,
                    owed=index * channel.unit_value,
                    replay=answer.status != 201,
                    attempts=attempts,
                    response=response,
                )
            )
        return results

    async def register(self) -> int:
        """Create (or find) this wallet's account; its balance."""
        return (await self.issuer.register(self.wallet.public_key_b64)).balance

    async def balance(self, public_key_b64: str | None = None) -> int:
        key = public_key_b64 or self.wallet.public_key_b64
        return (await self.issuer.account(key)).balance

    async def vendor_public_key(self) -> str:
        if self._vendor_key is None:
            self._vendor_key = await self.vendor.public_key()
        return self._vendor_key

    async def issuer_public_key(self) -> str:
        if self._issuer_key is None:
            self._issuer_key = await self.issuer.public_key()
        return self._issuer_key

    async def retried(self, send: Callable[[], Awaitable[T]]) -> T:
        """Send an idempotent request; a lost answer is retried with the identical body."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return await send()
            except TRANSIENT:
                if attempts > self.retries:
                    raise
            await asyncio.sleep(self.retry_delay * attempts)

    async def open_channel(
        self,
        mode: Mode | str,
        amount: int,
        *,
        unit_value: int = 1,
        max_index: int | None = None,
        hash_alg: str = "sha256",
        ttl_s: int | None = None,
    ) -> Channel:
        """Lock `amount` toward the vendor. For PayWord/PayTree modes the channel can
        take `max_index` payments of `unit_value` (default: as many as `amount`
        covers, at most DEFAULT_MAX_INDEX, since the client holds every secret).
        `ttl_s`: the channel's lifetime (default: the issuer's maximum)."""
        rules = RULES[Mode(mode)]
        vendor_key = await self.vendor_public_key()
        if rules.members is None:  # the amount itself is the index: no commitment
            count, unit_value = amount, 1
        elif max_index is not None:
            count = max_index
        else:
            count = min(amount // unit_value, config.CLIENT_MAX_INDEX)
        # Building a commitment hashes up to 2^24 values: keep it off the event loop.
        payer = await asyncio.to_thread(
            rules.create_payer, self.wallet.key, max_index=count, hash_alg=hash_alg
        )
        common = {
            "client_public_key_der_b64": self.wallet.public_key_b64,
            "vendor_public_key_der_b64": vendor_key,
            "amount": amount,
            # sha256 is the default; leaving it out keeps bodies identical to older clients'.
            "hash_alg": None if hash_alg == "sha256" else hash_alg,
            # A fresh nonce: equal terms open a new channel, and a retry of this very
            # body (same nonce) is answered with the same channel, never a second debit.
            "nonce_b64": b64encode(os.urandom(NONCE_BYTES)),
            "issuer_public_key_der_b64": await self.issuer_public_key(),
            "ttl_s": ttl_s,
        }
        commitment = None if payer.root is None else (payer.root, unit_value, count)
        body = wire.open_body(rules, common, commitment, self.wallet.key.sign)
        # A lost answer is retried with the identical body (idempotent).
        info, opened = await self.retried(lambda: self.issuer.open_channel(rules, body))
        payer.channel_id = info.terms.channel_id
        issuer_der = b64decode(await self.issuer_public_key(), field="der_b64")
        return Channel(self, rules, info, payer, unit_value, issuer_der=issuer_der, opened=opened)

    async def open_renewing(
        self,
        mode: Mode | str,
        amount: int,
        *,
        margin: float = config.CLIENT_RENEW_MARGIN,
        **options: Any,
    ) -> RenewingChannel:
        """A channel that does not run out: topped up (signature mode) or followed by a
        successor opened with the same terms (hash-chain modes) before it does, the old
        one closed; `options` as for `open_channel`."""
        from nanomoni.client.renewing import RenewingChannel

        def open_next() -> Coroutine[Any, Any, Channel]:
            return self.open_channel(mode, amount, **options)

        return RenewingChannel(await open_next(), open_next, amount=amount, margin=margin)

    async def get_channel(self, mode: Mode | str, channel_id: str) -> ChannelInfo:
        return await self.issuer.channel(RULES[Mode(mode)], channel_id)


class SyncChannel:
    """Blocking view of a Channel, driven by its SyncClient's loop."""

    def __init__(self, owner: SyncClient, channel: Channel) -> None:
        self._owner = owner
        self.channel = channel
        self.channel_id = channel.channel_id
        self.mode = channel.mode

    @property
    def owed(self) -> int:
        return self.channel.owed

    def pay(self, units: int = 1) -> PaymentResult:
        return self._owner.run(self.channel.pay(units))

    def pay_to(self, index: int) -> PaymentResult:
        return self._owner.run(self.channel.pay_to(index))

    def close(self, *, vendor_timeout: float | None = None) -> ChannelInfo:
        return self._owner.run(self.channel.close(vendor_timeout=vendor_timeout))

    def top_up(self, amount: int) -> SignedReceipt:
        return self._owner.run(self.channel.top_up(amount))

    def wait_closed(self, *, poll: float = 0.5, timeout: float | None = None) -> ChannelInfo:
        return self._owner.run(self.channel.wait_closed(poll=poll, timeout=timeout))

    def refresh(self) -> ChannelInfo:
        return self._owner.run(self.channel.refresh())


class SyncClient:
    """The same client for synchronous code: each call runs to completion."""

    def __init__(self, issuer_url: str, vendor_url: str, wallet: Wallet, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self.client = Client(issuer_url, vendor_url, wallet, **options)

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(step)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.run(self.client.close())
        self._runner.close()

    def register(self) -> int:
        return self.run(self.client.register())

    def balance(self, public_key_b64: str | None = None) -> int:
        return self.run(self.client.balance(public_key_b64))

    def vendor_public_key(self) -> str:
        return self.run(self.client.vendor_public_key())

    def open_channel(self, mode: Mode | str, amount: int, **options: Any) -> SyncChannel:
        return SyncChannel(self, self.run(self.client.open_channel(mode, amount, **options)))

    def get_channel(self, mode: Mode | str, channel_id: str) -> ChannelInfo:
        return self.run(self.client.get_channel(mode, channel_id))
