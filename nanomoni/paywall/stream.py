"""Metered responses (SPEC §11): a priced server-sent-event stream pays per event.

Each event is charged (one atomic store step) just before it is handed to the
server, so a client is charged only for events it was sent: none after it left,
and an event charged as it left is given back. When the credit runs out the
stream sends a `payment-required` event and waits, holding the app back, until
a payment arrives (`POST {payments_url}` on this origin, or any worker's, seen
by polling the store) or `pause_timeout` passes; then it ends. Other responses
of a metered route are charged once, per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from nanomoni import paywire
from nanomoni.errors import Code, NanoMoniError
from nanomoni.paywall.prices import Route
from nanomoni.protocol.modes import AnyRules
from nanomoni.store import StoreUnavailable
from nanomoni.store.base import Charge, ChargeOutcome

if TYPE_CHECKING:
    from nanomoni.paywall.middleware import Message, Paywall, Receive, Scope, Send

POLL = 0.25  # seconds between looks at the store while waiting for credit from elsewhere


class InsufficientCredit(NanoMoniError):
    """402 insufficient_credit, with where the channel stands."""

    def __init__(self, channel_id: str, charge: Charge) -> None:
        super().__init__(
            Code.insufficient_credit,
            f"the channel's credit ({charge.owed - charge.consumed}) does not cover the price",
        )
        self.credit = paywire.Credit(
            channel_id=channel_id, owed=charge.owed, consumed=charge.consumed
        )


class Meter:
    """One metered request: runs the app, charging its events as they leave."""

    def __init__(
        self,
        paywall: Paywall,
        route: Route,
        rules: AnyRules,
        channel_id: str,
        price: int,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.paywall = paywall
        self.route = route
        self.rules = rules
        self.channel_id = channel_id
        self.price = price
        self.scope = scope
        self._receive = receive
        self._send = send
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.left = asyncio.Event()  # the client disconnected
        self.ended = False  # the response is complete (or abandoned): drop what follows
        self.events = False  # the answer is an event stream
        self._rest = b""
        self.sent_events = 0
        self.charged = 0

    async def run(self, receipt: paywire.Receipt) -> None:
        self._receipt = receipt
        listener = asyncio.create_task(self._listen())
        try:
            await self.paywall.app(self.scope, self._app_receive, self._app_send)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        """Read the request for the app, and notice when the client leaves."""
        while True:
            message = await self._receive()
            self._inbox.put_nowait(message)
            if message["type"] == "http.disconnect":
                self.left.set()
                return

    async def _app_receive(self) -> Message:
        return await self._inbox.get()

    def _stop_app(self) -> None:
        """Tell the app its client is gone (frameworks then stop streaming)."""
        self._inbox.put_nowait({"type": "http.disconnect"})

    async def _app_send(self, message: Message) -> None:
        if self.ended or self.left.is_set():
            return  # as servers do once a client left: nothing more goes out
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.events:
            await self._body(message.get("body", b""), message.get("more_body", False))
        else:
            await self._send(message)

    async def _start(self, message: Message) -> None:
        headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
        kind = next((value for name, value in headers if name.lower() == b"content-type"), b"")
        self.events = kind.lower().startswith(paywire.EVENT_STREAM)
        if not self.events:  # other answers of a metered route pay once, per request
            try:
                charge = await self.paywall.vendor.store.charge(self.channel_id, self.price)
                if charge.outcome is not ChargeOutcome.charged:
                    raise InsufficientCredit(self.channel_id, charge)
            except NanoMoniError as exc:
                wanted, required = self.paywall.requirements(self.price, True)
                await self.paywall.refuse(self.scope, self._send, exc, wanted, required)
                self.ended = True
                self._stop_app()
                return
            self._receipt = paywire.Receipt(
                channel_id=self.channel_id,
                owed=charge.owed,
                consumed=charge.consumed,
                price=self.price,
            )
        value = paywire.encode_header(self._receipt)
        headers.append((paywire.PAYMENT_RECEIPT.encode(), value))
        await self._send({**message, "headers": headers})

    async def _body(self, body: bytes, more: bool) -> None:
        events, self._rest = paywire.split_events(self._rest + body)
        for event in events:
            if not await self._deliver(event):
                return
        if not more:
            rest, self._rest = self._rest, b""
            if rest and not await self._deliver(rest):
                return
            await self._finish()

    async def _finish(self) -> None:
        self.ended = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _deliver(self, event: bytes) -> bool:
        """Charge one event, then send it; False once the stream is over."""
        cost = self.route.chunk_cost(self.price, event) if paywire.carries_data(event) else 0
        if cost and not await self._pay(cost):
            return False
        if self.left.is_set():
            if cost:  # charged as the client left: it was never sent
                await self.paywall.vendor.store.refund(self.channel_id, cost)
            return False
        await self._send({"type": "http.response.body", "body": event, "more_body": True})
        self.sent_events += 1
        self.charged += cost
        return True

    async def _pay(self, cost: int) -> bool:
        """Take `cost` from the credit, waiting for payments while there is too little."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        announced: int | None = None  # the owed amount last told to the client
        store = self.paywall.vendor.store
        while not self.left.is_set():
            arrived = self.paywall.credit_event(self.channel_id)
            charge = None
            try:
                charge = await store.charge(self.channel_id, cost)
                if charge.outcome is ChargeOutcome.charged:
                    return True
            except StoreUnavailable as exc:  # our outage: wait, but ask the client for nothing
                self.paywall.outage(f"stream {self.scope['path']}", exc)
            now = loop.time()
            deadline = now + self.paywall.pause_timeout if deadline is None else deadline
            if charge is not None and charge.owed != announced:
                announced = charge.owed
                await self._send(
                    {
                        "type": "http.response.body",
                        "body": paywire.payment_required_event(self._wanted(cost, charge)),
                        "more_body": True,
                    }
                )
            if now >= deadline:
                await self._finish()
                self._stop_app()
                return False
            await _first(arrived, self.left, timeout=min(POLL, deadline - now))
            self.paywall.forget_credit_event(self.channel_id, arrived)
        return False

    def _wanted(self, cost: int, charge: Charge) -> paywire.StreamRequirements:
        wanted, _ = self.paywall.requirements(cost, True)
        fields: dict[str, Any] = {
            name: getattr(wanted, name) for name in paywire.Requirements.__struct_fields__
        }
        return paywire.StreamRequirements(
            **fields,
            channel_id=self.channel_id,
            payments_url=f"/api/v1/vendor/channels/{self.rules.mode.value}/"
            f"{self.channel_id}/payments",
            owed=charge.owed,
            consumed=charge.consumed,
        )


async def _first(*events: asyncio.Event, timeout: float) -> None:
    """Until one of `events` is set or `timeout` passes."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
