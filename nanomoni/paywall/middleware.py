"""The 402 paywall (SPEC §11): ASGI middleware that prices routes of any ASGI app.

A priced request pays with its `Payment` header. Decoded at the edge
(`nanomoni.paywire`), its payment goes through the vendor's own decision
(`Vendor.decide`: same terms, same rules) and ONE atomic store step
(`VendorStore.charge`): the vendor's compare-and-set, then consumed += price if
the channel's credit (owed − consumed) covers it, with the request id recorded
in the same step. So concurrent requests never spend the same credit and a
retried request is charged once. Store or issuer trouble is 503, never 402.

The paywall is a front door of the vendor: it sells under the vendor's key at
the vendor's issuer, in the vendor's store, and serves the vendor's payment,
closure and key endpoints (`/api/v1/vendor/...`) on its own origin, so clients
pay and settle streams and channels there. A `Vendor` core runs in the
app's lifespan (or starts with the first priced request), with its background
tasks (registration at the issuer, the watch of closing channels).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from nanomoni import config, crypto, metrics, paywire, wire
from nanomoni.encoding import require_channel_id
from nanomoni.errors import Code, NanoMoniError
from nanomoni.http import error_payload
from nanomoni.paywall.prices import Price, Route, RouteTable
from nanomoni.paywall.stream import InsufficientCredit, Meter
from nanomoni.protocol.model import CasOutcome
from nanomoni.protocol.modes import ALL, RULES, rules_for
from nanomoni.store import StoreUnavailable
from nanomoni.store.base import REQUEST_MEMORY, Charge, ChargeOutcome
from nanomoni.vendor.core import Vendor, VendorConfig, lost_race

log = logging.getLogger("nanomoni.paywall")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Any, Any, Any], Awaitable[None]]  # any ASGI app, whatever its typing

API = "/api/v1/vendor"  # the vendor endpoints the paywall serves itself (SPEC §5 paths)
_CHANNELS = f"{API}/channels/"
PAUSE_TIMEOUT = 30.0  # seconds a metered stream waits for credit (SPEC §11)
_JSON = (b"content-type", b"application/json")
_RECEIPT = paywire.PAYMENT_RECEIPT.encode()
_INTERNAL = error_payload(NanoMoniError(Code.internal_error, "internal error"))


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def respond(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise NanoMoniError(Code.validation_error, "the client left before its body arrived")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise NanoMoniError(Code.payload_too_large, "request body exceeds the configured limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_receipt(start: Message, receipt: paywire.Receipt) -> Message:
    """A copy of a response's start message with the receipt among its headers."""
    headers = [*start.get("headers", ()), (_RECEIPT, paywire.encode_header(receipt))]
    return {**start, "headers": headers}


class _OutageLog:
    """One warning line a second at most while the store fails every request."""

    def __init__(self) -> None:
        self._next = -math.inf

    def __call__(self, where: str, exc: StoreUnavailable) -> None:
        metrics.store_unavailable()
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 1.0
            log.warning("store unavailable on %s: %s", where, exc.reason)


class Paywall:
    """`Paywall(app, issuer_url=..., store=..., key_file=..., prices={...})`: see SPEC §11.

    `modes` limits the payment modes offered (default: every mode of the registry),
    `pause_timeout` how long a metered stream waits for credit, `remember` how long
    a paid request id is served again without a charge.
    """

    def __init__(
        self,
        app: App,
        *,
        issuer_url: str,
        store: str,
        key_file: str | Path,
        prices: dict[str, Price],
        modes: Sequence[str] | None = None,
        hash_algs: Sequence[str] = crypto.HASH_ALGS,
        pause_timeout: float = PAUSE_TIMEOUT,
        remember: float = REQUEST_MEMORY,
        max_header: int = paywire.MAX_HEADER,
        max_body: int = config.MAX_BODY,
        data_dir: str | Path | None = None,
    ) -> None:
        self.app = app
        self.routes = RouteTable(prices)
        key_path = Path(key_file)
        self.vendor = Vendor(
            VendorConfig(
                data_dir=Path(data_dir) if data_dir is not None else key_path.parent,
                issuer_url=issuer_url,
                store=store,
                key_file=key_path,
                max_body=max_body,
            )
        )
        offered = [rules.mode.value for rules in ALL] if modes is None else list(modes)
        for mode in offered:
            rules_for(mode)  # an unknown mode is a configuration error here, not later
        unknown = set(hash_algs) - set(crypto.HASH_ALGS)
        if unknown or not offered or not hash_algs:
            raise ValueError(f"bad modes {offered} or hash algorithms {list(hash_algs)}")
        self.modes = {RULES[rules.mode] for rules in ALL if rules.mode.value in offered}
        self._requirement = paywire.Requirements(
            issuer_url=issuer_url.rstrip("/"),
            vendor_public_key_der_b64=self.vendor.public_key_b64,
            price=0,
            modes=offered,
            hash_algs=list(hash_algs),
        )
        self._requirements: dict[tuple[int, bool], tuple[paywire.Requirements, bytes]] = {}
        self.pause_timeout = pause_timeout
        self.remember = remember
        self.max_header = max_header
        self.max_body = max_body
        self._credit_arrived: dict[str, asyncio.Event] = {}
        self._started = False
        self._starting = asyncio.Lock()
        self.outage = _OutageLog()

    # --- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(API) and await self._vendor_api(scope, receive, send):
                return
            route = self.routes.match(scope["method"], path)
            if route is not None:
                await self._priced(route, scope, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The vendor core starts before the app and stops after it."""

        async def starting_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            return message

        async def stopping_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.stop()
            await send(message)

        await self.app(scope, starting_receive, stopping_send)

    async def start(self) -> None:
        """Open the store and start the vendor's tasks (once; also lazily on first use,
        for servers or apps that run no lifespan)."""
        async with self._starting:
            if not self._started:
                await self.vendor.start()
                self._started = True

    async def stop(self) -> None:
        async with self._starting:
            if self._started:
                self._started = False
                await self.vendor.stop()

    # --- priced routes -------------------------------------------------------------------

    def requirements(self, price: int, metered: bool) -> tuple[paywire.Requirements, bytes]:
        """What a route asks for, and its Payment-Required header value (cached)."""
        found = self._requirements.get((price, metered))
        if found is None:
            per = paywire.PER_CHUNK if metered else paywire.PER_REQUEST
            wanted = msgspec.structs.replace(self._requirement, price=price, per=per)
            found = (wanted, paywire.encode_header(wanted))
            if len(self._requirements) < 4096:  # callable prices could make many
                self._requirements[(price, metered)] = found
        return found

    async def _priced(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            price = route.price_for(scope)
        except Exception:
            log.exception("the price of %s failed", route.key)
            await respond(send, *_INTERNAL)
            return
        if price == 0 and not route.metered:
            await self.app(scope, receive, send)  # free this time
            return
        if not self._started:
            await self.start()
        raw = header(scope, b"payment")
        try:
            if raw is None:
                raise NanoMoniError(
                    Code.payment_required, "this route is priced: pay with a Payment header"
                )
            paid = paywire.decode_payment(paywire.decode_value(raw, "Payment", self.max_header))
            if paid.rules not in self.modes:
                raise NanoMoniError(
                    Code.mode_mismatch, f"this paywall takes no {paid.rules.mode.value} payments"
                )
            if route.metered:  # admitted with credit for one event; events pay as they go
                charge = await self.spend(paid, scope, 0, minimum=price)
            else:  # `spend`, one coroutine less
                charge = await self._step(paid, scope, price, 0, paid.request_id)
                if charge.outcome is ChargeOutcome.insufficient:
                    raise InsufficientCredit(paid.channel_id, charge)
        except NanoMoniError as exc:
            await self.refuse(scope, send, exc, *self.requirements(price, route.metered))
            return
        receipt = paywire.Receipt(
            channel_id=paid.channel_id, owed=charge.owed, consumed=charge.consumed, price=price
        )
        if route.metered:
            meter = Meter(self, route, paid.rules, paid.channel_id, price, scope, receive, send)
            await meter.run(receipt)
            return
        charged = charge.outcome is ChargeOutcome.charged
        await self._serve(scope, receive, send, receipt, charged, paid.request_id)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        receipt: paywire.Receipt,
        charged: bool,
        request_id: str | None,
    ) -> None:
        """Run the app with the receipt on its answer. A request this call charged is
        refunded if the app fails it (an exception or a 5xx): nobody pays for that."""
        started = False

        def paid_send(message: Message) -> Awaitable[None]:
            # A plain function returning `send`'s awaitable: no coroutine per message.
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                if message["status"] >= 500 and charged:
                    return refunded_send(message)
                return send(_with_receipt(message, receipt))
            return send(message)

        async def refunded_send(message: Message) -> None:
            await send(_with_receipt(message, await self._refund(receipt, request_id)))

        try:
            await self.app(scope, receive, paid_send)
        except BaseException:
            if not started and charged:
                await self._refund(receipt, request_id)
            raise

    async def _refund(self, receipt: paywire.Receipt, request_id: str | None) -> paywire.Receipt:
        try:
            back = await self.vendor.store.refund(receipt.channel_id, receipt.price, request_id)
        except StoreUnavailable as exc:
            self.outage("refund", exc)
            return receipt
        return paywire.Receipt(
            channel_id=receipt.channel_id, owed=back.owed, consumed=back.consumed, price=0
        )

    async def spend(
        self,
        paid: paywire.PaymentHeader,
        scope: Scope,
        price: int,
        *,
        minimum: int = 0,
        request_id: str | None = None,
    ) -> Charge:
        """The paywall's step: the header's payment (if any) decided and stored, and
        `price` taken from the channel's credit, atomically. Charged or repeated, or
        raises (insufficient_credit, the payment's refusal, an outage). The header's
        channel id is canonical already (`paywire.decode_payment`)."""
        charge = await self._step(paid, scope, price, minimum, request_id)
        if charge.outcome is ChargeOutcome.insufficient:
            raise InsufficientCredit(paid.channel_id, charge)
        return charge

    def _step(
        self,
        paid: paywire.PaymentHeader,
        scope: Scope,
        price: int,
        minimum: int,
        request_id: str | None,
    ) -> Awaitable[Charge]:
        """`spend` but for refusing insufficient credit: its charge."""
        if paid.payment is None:
            return self.vendor.store.charge(
                paid.channel_id,
                price,
                request_id=request_id,
                minimum=minimum,
                remember=self.remember,
            )
        return self._pay(paid, scope, price, minimum, request_id)

    async def _pay(
        self,
        paid: paywire.PaymentHeader,
        scope: Scope,
        price: int,
        minimum: int,
        request_id: str | None,
    ) -> Charge:
        rules, channel_id, payment = paid.rules, paid.channel_id, paid.payment
        assert payment is not None
        mode = rules.mode.value
        started = time.perf_counter()
        vendor = self.vendor
        store = vendor.store
        try:
            found = vendor.decide_known(rules, channel_id, payment)
            if found is None:  # a read of the store or the issuer first
                client = scope.get("client")
                address = client[0] if client else ""
                found = await vendor.decide_for(rules, channel_id, payment, address)
            _, decision, expected = found
            new = None if decision.replay else decision.state
            charge = await store.charge(
                channel_id,
                price,
                new=new,
                nodes=decision.nodes,
                expected=expected,
                request_id=request_id,
                minimum=minimum,
                remember=self.remember,
            )
            replay = decision.replay
            outcome = charge.outcome
            if outcome is ChargeOutcome.lost or outcome is ChargeOutcome.closing:
                self.vendor.views.forget(channel_id)
                closing = outcome is ChargeOutcome.closing
                lost = CasOutcome.closing if closing else CasOutcome.lost
                lost_race(decision, lost, charge.current)  # refuses, or: a replay
                replay = True
                charge = await store.charge(
                    channel_id,
                    price,
                    request_id=request_id,
                    minimum=minimum,
                    remember=self.remember,
                )
            elif new is not None and outcome is not ChargeOutcome.repeated:
                vendor.views.remember(channel_id, new, closing=False)
                vendor.note_accepted(rules, channel_id)
        except NanoMoniError as exc:
            metrics.payment(mode, "rejected", time.perf_counter() - started, exc.code.value)
            raise
        repeated = replay or charge.outcome is ChargeOutcome.repeated
        metrics.payment(mode, "replay" if repeated else "accepted", time.perf_counter() - started)
        return charge

    async def refuse(
        self,
        scope: Scope,
        send: Send,
        exc: NanoMoniError,
        requirements: paywire.Requirements,
        required: bytes,
    ) -> None:
        """402 with what to pay for anything a payment did wrong; outages and rate
        limits keep their own status (a client must not pay again because of them)."""
        if exc.status >= 500 or exc.code is Code.rate_limited:
            if isinstance(exc, StoreUnavailable):
                self.outage(f"{scope['method']} {scope['path']}", exc)
            status, body = error_payload(exc)
            retry = [] if exc.retry_after is None else [(b"retry-after", str(exc.retry_after))]
            await respond(send, status, body, [(k, v.encode()) for k, v in retry])
            return
        refusal = paywire.Refusal(
            detail=exc.detail,
            code=exc.code.value,
            requirements=requirements,
            credit=exc.credit if isinstance(exc, InsufficientCredit) else None,
            errors=exc.errors if isinstance(exc, wire.ValidationFailed) else None,
        )
        headers = [(paywire.PAYMENT_REQUIRED.encode(), required)]
        await respond(send, 402, wire.encode(refusal), headers)

    # --- credit arriving for paused streams ----------------------------------------------

    def credit_event(self, channel_id: str) -> asyncio.Event:
        event = self._credit_arrived.get(channel_id)
        if event is None:
            event = self._credit_arrived[channel_id] = asyncio.Event()
        return event

    def forget_credit_event(self, channel_id: str, event: asyncio.Event) -> None:
        if self._credit_arrived.get(channel_id) is event:
            del self._credit_arrived[channel_id]

    def _credit_paid(self, channel_id: str) -> None:
        event = self._credit_arrived.pop(channel_id, None)
        if event is not None:
            event.set()

    # --- the vendor endpoints on this origin ---------------------------------------------

    async def _vendor_api(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the vendor's key, payment and closure endpoints; False for other paths."""
        path: str = scope["path"]
        method = scope["method"]
        if path == f"{API}/keys/public" and method == "GET":
            body = wire.encode(wire.VendorKeyResponse(self.vendor.public_key_b64))
            await respond(send, 200, body)
            return True
        if not path.startswith(_CHANNELS) or method != "POST":
            return False
        parts = path[len(_CHANNELS) :].split("/")
        if len(parts) != 3 or parts[2] not in ("payments", "closure-requests"):
            return False
        mode, channel_id, action = parts
        try:
            require_channel_id(channel_id)
            rules = rules_for(mode)
            if not self._started:
                await self.start()
            raw = await read_body(receive, self.max_body)
            if action == "payments":
                status, body = await self._payment(rules, channel_id, raw, scope)
                await respond(send, status, body)
            else:
                closure = wire.decode_closure(raw)
                authorization = header(scope, b"authorization")
                await self.vendor.close(
                    rules,
                    channel_id,
                    closure,
                    None if authorization is None else authorization.decode("latin-1"),
                )
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except NanoMoniError as exc:
            if isinstance(exc, StoreUnavailable):
                self.outage(f"POST {path}", exc)
            status, body = error_payload(exc)
            retry = () if exc.retry_after is None else [(b"retry-after", b"%d" % exc.retry_after)]
            await respond(send, status, body, retry)
        except Exception:
            log.exception("internal error on POST %s", path)
            await respond(send, *_INTERNAL)
        return True

    async def _payment(
        self, rules: Any, channel_id: str, raw: bytes, scope: Scope
    ) -> tuple[int, bytes]:
        """`POST {payments_url}` (SPEC §11): a payment as the vendor takes it (§5),
        which wakes the streams of this worker waiting for credit on the channel."""
        paid = paywire.decode_payment(raw, path_mode=rules, path_channel=channel_id)
        if paid.channel_id != channel_id:
            raise NanoMoniError(Code.id_mismatch, "body channel_id differs from the path")
        if paid.payment is None:
            raise NanoMoniError(Code.validation_error, "the body carries no payment")
        client = scope.get("client")
        address = client[0] if client else ""
        accepted = await self.vendor.pay(rules, channel_id, paid.payment, address)
        self._credit_paid(channel_id)
        body = wire.payment_response(rules, accepted.terms, accepted.state)
        return (200 if accepted.replay else 201), body
