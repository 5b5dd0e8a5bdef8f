"""Paying for HTTP 402 without payment code (SPEC §11): `PaymentAuth` for httpx
(sync and async) and `PaymentMiddleware` for aiohttp, both driving one
`nanomoni.client.purse.Purse`.

    with PaymentAuth("http://127.0.0.1:8001", budget=10_000) as auth:
        with httpx.Client(auth=auth) as http:
            quote = http.get("http://127.0.0.1:8080/quotes/ACME").json()
            with http.stream("GET", "http://127.0.0.1:8080/completions") as events:
                for line in events.iter_lines():   # payment-required events are answered
                    ...                            # by the purse and never show up here
    # leaving the block settles every channel at the issuer

    async with aiohttp.ClientSession(middlewares=[PaymentMiddleware(ISSUER, budget=1000)]):
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import httpx
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from nanomoni import paywire
from nanomoni.client.purse import (
    Lane,
    Lease,
    Purse,
    Read,
    Run,
    Send,
    Step,
    rules_named,
)

IDEMPOTENCY_KEY = "idempotency-key"
__all__ = ["PaymentAuth", "PaymentMiddleware"]


def _origin(url: httpx.URL | Any) -> str:
    port = url.port
    default = {"http": 80, "https": 443}.get(url.scheme)
    host = url.host
    return f"{url.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


class _PurseOwner:
    """Options shared by both adapters (SPEC §11 `PaymentAuth(issuer_url, *, key_file,
    budget, modes)` plus how a purse prepays and spreads its lanes)."""

    def __init__(
        self,
        issuer_url: str,
        *,
        budget: int,
        key_file: str | Path | None = None,
        modes: list[str] | None = None,
        prepay: int = 4,
        channel_requests: int = 256,
        lanes: int = 4,
        key_kind: str = "p256",
    ) -> None:
        self.purse = Purse(
            issuer_url,
            budget,
            key_file=None if key_file is None else Path(key_file),
            modes=rules_named(modes),
            prepay=prepay,
            channel_requests=channel_requests,
            lanes=lanes,
            key_kind=key_kind,
        )

    def close(self) -> None:
        """Settle every channel at the issuer (through the paywall's vendor)."""
        self.purse.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.purse.close)


# --- httpx -------------------------------------------------------------------------------


class _HttpxReply:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status_code

    def header(self, name: str) -> str | None:
        value: str | None = self.response.headers.get(name)
        return value


class PaymentAuth(_PurseOwner, httpx.Auth):
    """An `httpx.Auth` that pays 402s: `httpx.Client(auth=PaymentAuth(ISSUER, budget=N))`."""

    requires_response_body = False

    def __enter__(self) -> PaymentAuth:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> PaymentAuth:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _flow(self, request: httpx.Request) -> Generator[Step, Any, None]:
        return self.purse.flow(_origin(request.url), request.headers.get(IDEMPOTENCY_KEY))

    @staticmethod
    def _prepare(request: httpx.Request, step: Send) -> httpx.Request:
        if step.payment is None:
            request.headers.pop(paywire.PAYMENT, None)
        else:
            request.headers[paywire.PAYMENT] = step.payment
        return request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        response: httpx.Response | None = None
        answer: Any = None
        try:
            while True:
                try:
                    step = flow.send(answer)
                except StopIteration:
                    return
                if isinstance(step, Send):
                    response = yield self._prepare(request, step)
                    answer = _HttpxReply(response)
                elif isinstance(step, Read):
                    assert response is not None
                    answer = response.read()
                elif isinstance(step, Run):
                    answer = self.purse.call(step.step)
                elif isinstance(step, Lease):
                    answer = self.purse.pool.take()
                else:
                    assert response is not None
                    response.stream = _SyncPaidStream(self.purse, step.lane, response.stream)
                    answer = None
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        response: httpx.Response | None = None
        answer: Any = None
        try:
            while True:
                try:
                    step = flow.send(answer)
                except StopIteration:
                    return
                if isinstance(step, Send):
                    response = yield self._prepare(request, step)
                    answer = _HttpxReply(response)
                elif isinstance(step, Read):
                    assert response is not None
                    answer = await response.aread()
                elif isinstance(step, Run):
                    answer = await self.purse.call_async(step.step)
                elif isinstance(step, Lease):
                    answer = await self.purse.pool.take_async()
                else:
                    assert response is not None
                    response.stream = _AsyncPaidStream(self.purse, step.lane, response.stream)
                    answer = None
        finally:
            flow.close()


class _SyncPaidStream(httpx.SyncByteStream):
    """A paid event stream: answers `payment-required` events, passes the rest on;
    gives the lane back when closed."""

    def __init__(self, purse: Purse, lane: Lane, inner: Any) -> None:
        self.purse, self.lane, self.inner = purse, lane, inner
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        for chunk in self.inner:
            events, rest = paywire.split_events(rest + chunk)
            for event in events:
                step = self.purse.stream_step(self.lane, event)
                if step is None:
                    yield event
                else:
                    self.purse.call(step)
        if rest:
            yield rest

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if not self._released:
                self._released = True
                self.purse.pool.give_back(self.lane)


class _AsyncPaidStream(httpx.AsyncByteStream):
    def __init__(self, purse: Purse, lane: Lane, inner: Any) -> None:
        self.purse, self.lane, self.inner = purse, lane, inner
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        rest = b""
        async for chunk in self.inner:
            events, rest = paywire.split_events(rest + chunk)
            for event in events:
                step = self.purse.stream_step(self.lane, event)
                if step is None:
                    yield event
                else:
                    await self.purse.call_async(step)
        if rest:
            yield rest

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if not self._released:
                self._released = True
                self.purse.pool.give_back(self.lane)


# --- aiohttp --------------------------------------------------------------------------------


class _AiohttpReply:
    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status

    def header(self, name: str) -> str | None:
        return self.response.headers.get(name)


class PaymentMiddleware(_PurseOwner):
    """The aiohttp equivalent of `PaymentAuth`, as a client middleware:
    `aiohttp.ClientSession(middlewares=[PaymentMiddleware(ISSUER, budget=N)])`.
    A paid event stream's `response.content` answers `payment-required` events
    itself. `await middleware.aclose()` settles the channels."""

    async def __aenter__(self) -> PaymentMiddleware:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        flow = self.purse.flow(_origin(request.url), request.headers.get(IDEMPOTENCY_KEY))
        response: ClientResponse | None = None
        answer: Any = None
        try:
            while True:
                try:
                    step = flow.send(answer)
                except StopIteration:
                    assert response is not None
                    return response
                if isinstance(step, Send):
                    if response is not None:
                        response.release()
                    if step.payment is None:
                        request.headers.pop(paywire.PAYMENT, None)
                    else:
                        request.headers[paywire.PAYMENT] = step.payment
                    response = await handler(request)
                    answer = _AiohttpReply(response)
                elif isinstance(step, Read):
                    assert response is not None
                    answer = await response.read()
                elif isinstance(step, Run):
                    answer = await self.purse.call_async(step.step)
                elif isinstance(step, Lease):
                    answer = await self.purse.pool.take_async()
                else:
                    assert response is not None
                    _meter(self.purse, step.lane, response)
                    answer = None
        finally:
            flow.close()


def _meter(purse: Purse, lane: Lane, response: ClientResponse) -> None:
    """Put a reader in front of the response's content that answers payment-required
    events and passes the rest on; the lane comes back when the stream ends."""
    original = response.content
    loop = asyncio.get_running_loop()
    paid = aiohttp.StreamReader(original._protocol, 2**16, loop=loop)

    async def pump() -> None:
        rest = b""
        try:
            async for chunk in original.iter_any():
                events, rest = paywire.split_events(rest + chunk)
                for event in events:
                    step = purse.stream_step(lane, event)
                    if step is None:
                        paid.feed_data(event)
                    else:
                        await purse.call_async(step)
            if rest:
                paid.feed_data(rest)
            paid.feed_eof()
        except Exception as exc:  # the connection broke: the reader says so
            paid.set_exception(exc)
        finally:
            purse.pool.give_back(lane)

    task = loop.create_task(pump())
    _pumps.add(task)
    task.add_done_callback(_pumps.discard)
    response.content = paid


_pumps: set[asyncio.Task[None]] = set()  # running pumps (a task needs a strong reference)
