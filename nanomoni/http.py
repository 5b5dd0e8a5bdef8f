"""What both services share: body decoding, the error mapping, service endpoints, app assembly.

Every 4xx/5xx leaves as `{"detail", "code"}` (SPEC §6). Bodies are decoded by
msgspec straight from the raw bytes into the wire structs, so a schema error
names the bad member and a route's mode decides the body type. A store that
fails or misses its deadline is a 503 `store_unavailable` with `Retry-After`
and one log line, never a 500; /health then answers 503 "degraded".
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import (
    ControllerRouterHandler,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    LifespanHook,
    Receive,
    Scope,
    Send,
)

from nanomoni import __version__, config, metrics, openapi, wire
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.modes import ALL
from nanomoni.store import StoreUnavailable, ping_open_stores
from nanomoni.wire import ValidationFailed

log = logging.getLogger("nanomoni")

DEFAULT_MAX_BODY = config.MAX_BODY
JSON = MediaType.JSON
HEALTH_PING_TIMEOUT = 0.5  # /health's own deadline for the store's answer
HEALTH_CACHE_SECONDS = 1.0  # /health asks the store at most this often per worker

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encoder.encode(body), status_code=status, media_type=JSON)


def empty_response(status: int = 204) -> Response[bytes]:
    return Response(content=b"", status_code=status)


# --- exception mapping ------------------------------------------------------------


class _OutageLog:
    """One warning line per store failure, no traceback; at most one line a second
    (an outage fails every request: the log must not become the next outage)."""

    def __init__(self, every: float = 1.0) -> None:
        self._every = every
        self._next = -math.inf
        self._skipped = 0

    def __call__(self, where: str, exc: StoreUnavailable) -> None:
        metrics.store_unavailable()
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        self._next = now + self._every
        more = f" (and {self._skipped} more since the last line)" if self._skipped else ""
        self._skipped = 0
        log.warning("store unavailable on %s: %s%s", where, exc.reason, more)


_outage_log = _OutageLog()


def _on_nanomoni_error(request: Request[Any, Any, Any], exc: NanoMoniError) -> Response[bytes]:
    status, payload = error_payload(exc)
    if isinstance(exc, StoreUnavailable):
        _outage_log(f"{request.method} {request.url.path}", exc)
    headers = None if exc.retry_after is None else {"retry-after": str(exc.retry_after)}
    return Response(content=payload, status_code=status, media_type=JSON, headers=headers)


class FrameworkRefusal(NanoMoniError):
    """A refusal by the HTTP layer itself, keeping its own status (e.g. 405)."""

    def __init__(self, status: int, code: Code, detail: str) -> None:
        super().__init__(code, detail)
        self._status = status

    @property
    def status(self) -> int:
        return self._status


def framework_error(status: int, detail: str) -> NanoMoniError:
    """What the framework refused (Litestar, or the hot path reading its own body),
    as SPEC §6 says it: one mapping for both."""
    if status == 413:
        return NanoMoniError(Code.payload_too_large, "request body exceeds the configured limit")
    if status == 404:
        return NanoMoniError(Code.not_found, "no such route")
    if status in (401, 403):
        return NanoMoniError(Code.unauthorized if status == 401 else Code.forbidden, detail)
    if status >= 500:
        return NanoMoniError(Code.internal_error, "internal error")
    # A bad path or query parameter (400) is a schema error; 405 and the like keep their status.
    return FrameworkRefusal(422 if status == 400 else status, Code.validation_error, detail)


_CLIENT_GONE = "client disconnected prematurely"


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code >= 500:
        if exc.detail == _CLIENT_GONE:  # nobody is waiting for the answer: not our error
            log.info("client went away before sending its whole request")
        else:
            log.error("framework error %s: %s", exc.status_code, exc.detail)
    response = _on_nanomoni_error(_, framework_error(exc.status_code, str(exc.detail)))
    allow = (exc.headers or {}).get("allow")
    if allow is not None:  # a 405 says which methods the route has (RFC 9110)
        response.headers["allow"] = allow
    return response


def _on_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _on_nanomoni_error(request, NanoMoniError(Code.internal_error, "internal error"))


# --- service endpoints ----------------------------------------------------------


class StoreHealth:
    """Whether this worker's stores answer, asked with a short deadline at most once
    per HEALTH_CACHE_SECONDS and by one request at a time, so a flood of health
    checks cannot flood the store (or pile up waiting on a stalled one)."""

    def __init__(self) -> None:
        self._failure: StoreUnavailable | None = None
        self._checked_at = -math.inf
        self._checking: asyncio.Future[StoreUnavailable | None] | None = None

    async def failure(self) -> StoreUnavailable | None:
        """None while every open store answers, else why one does not."""
        if time.monotonic() - self._checked_at < HEALTH_CACHE_SECONDS:
            return self._failure
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._checking)

    async def _check(self) -> StoreUnavailable | None:
        try:
            await ping_open_stores(HEALTH_PING_TIMEOUT)
            self._failure = None
        except StoreUnavailable as exc:
            self._failure = exc
        finally:
            self._checked_at = time.monotonic()
            self._checking = None
        return self._failure


# A service's own readiness besides its store: None when ready, else why not.
Readiness = Callable[[], NanoMoniError | None]


def schema_routes(
    service: str, operations: Sequence[openapi.Operation], streams: Mapping[str, str]
) -> list[ControllerRouterHandler]:
    """/schema/openapi.json and /schema (a page that needs no network), built once."""
    doc = openapi.document(service, operations, streams)
    document = msgspec.json.encode(doc)
    page = openapi.docs_page(doc).encode()

    @get("/schema/openapi.json", sync_to_thread=False)
    def schema_document() -> Response[bytes]:
        return Response(content=document, media_type=JSON)

    @get("/schema", sync_to_thread=False)
    def schema_page() -> Response[bytes]:
        return Response(content=page, media_type=MediaType.HTML)

    return [schema_document, schema_page]


def service_routes(
    service: str, readiness: Readiness | None = None
) -> list[ControllerRouterHandler]:
    metrics.declare(service, [rules.mode.value for rules in ALL])
    health = msgspec.json.encode(
        wire.HealthResponse(status="healthy", service=service, version=__version__)
    )
    stores = StoreHealth()

    def degraded(problem: NanoMoniError) -> Response[bytes]:
        body = wire.HealthDegraded(
            status="degraded",
            service=service,
            version=__version__,
            detail=problem.detail,
            code=problem.code.value,
        )
        headers = {"retry-after": str(problem.retry_after or StoreUnavailable.RETRY_AFTER)}
        return Response(
            content=_encoder.encode(body), status_code=503, media_type=JSON, headers=headers
        )

    @get("/health")
    async def health_endpoint() -> Response[bytes]:
        failure = await stores.failure()
        if failure is not None:
            return degraded(NanoMoniError(Code.store_unavailable, "the store does not answer"))
        problem = readiness() if readiness is not None else None
        if problem is not None:
            return degraded(problem)
        return Response(content=health, media_type=JSON)

    @get("/metrics", sync_to_thread=False)
    def metrics_endpoint() -> Response[bytes]:
        return Response(content=metrics.render(), media_type=metrics.CONTENT_TYPE)

    return [health_endpoint, metrics_endpoint]


def build_app(
    *,
    service: str,
    routes: Sequence[ControllerRouterHandler],
    on_startup: Sequence[LifespanHook],
    on_shutdown: Sequence[LifespanHook],
    max_body: int,
    operations: Sequence[openapi.Operation] = (),
    streams: Mapping[str, str] | None = None,
    readiness: Readiness | None = None,
) -> Litestar:
    """The service's app: `routes`, /health, /metrics, and the OpenAPI document of
    `operations` (Litestar's own is off: it would describe no request body)."""
    handlers: dict[Any, Callable[..., Response[bytes]]] = {
        NanoMoniError: _on_nanomoni_error,
        HTTPException: _on_http_exception,
        Exception: _on_internal_error,
    }
    return Litestar(
        route_handlers=[
            *service_routes(service, readiness),
            *schema_routes(service, operations, streams or {}),
            *routes,
        ],
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        exception_handlers=handlers,
        request_max_body_size=max_body,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


# --- the hot path -------------------------------------------------------------------

# (first path segment, second path segment, body, client address) -> (status, body)
RawHandler = Callable[[str, str, bytes, str], Awaitable[tuple[int, bytes]]]
# (body, client address) -> (status, body): a POST route at one exact path
BodyHandler = Callable[[bytes, str], Awaitable[tuple[int, bytes]]]
# A WebSocket route at one exact path, as plain ASGI
StreamHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


def error_payload(exc: NanoMoniError) -> tuple[int, bytes]:
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    body = wire.ErrorResponse(detail=exc.detail, code=exc.code.value, errors=errors)
    return exc.status, _encoder.encode(body)


class BodyTooLarge(Exception):
    pass


class HotPath:
    """An ASGI front that serves the hot routes directly — one parameterised route
    (`{prefix}{a}/{b}{suffix}`, POST), POSTs at exact paths (`posts`: handler and
    body limit) and WebSockets at exact paths (`streams`) — and hands everything
    else, lifespan included, to the Litestar app.

    Litestar's routing, parameter parsing and response machinery cost more CPU than
    a whole payment; these routes only need the raw body (and two path segments),
    and answer with the same bodies and error mapping as the framework routes.
    """

    def __init__(
        self,
        app: Litestar,
        *,
        prefix: str,
        suffix: str,
        handler: RawHandler,
        max_body: int,
        posts: Mapping[str, tuple[BodyHandler, int]] | None = None,
        streams: Mapping[str, StreamHandler] | None = None,
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.suffix = suffix
        self.handler = handler
        self.max_body = max_body
        self.posts = dict(posts or {})
        self.streams = dict(streams or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "POST":
            path: str = scope["path"]
            if path.startswith(self.prefix) and path.endswith(self.suffix):
                segments = path[len(self.prefix) : len(path) - len(self.suffix)].split("/")
                if len(segments) == 2:
                    first, second = segments
                    await self._serve(
                        path,
                        lambda raw, address: self.handler(first, second, raw, address),
                        self.max_body,
                        scope,
                        receive,
                        send,
                    )
                    return
            post = self.posts.get(path)
            if post is not None:
                await self._serve(path, *post, scope, receive, send)
                return
        elif scope["type"] == ScopeType.WEBSOCKET:
            stream = self.streams.get(scope["path"])
            if stream is not None:
                await stream(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        path: str,
        handler: BodyHandler,
        max_body: int,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        client = scope.get("client")
        address = client[0] if client else ""
        retry_after = None
        try:
            raw = await read_body(receive, max_body)
            status, payload = await handler(raw, address)
        except NanoMoniError as exc:
            status, payload = error_payload(exc)
            retry_after = exc.retry_after
            if isinstance(exc, StoreUnavailable):
                _outage_log(f"POST {path}", exc)
        except BodyTooLarge:
            status, payload = error_payload(framework_error(413, "body too large"))
        except Exception:
            log.exception("internal error on POST %s", path)
            status, payload = error_payload(NanoMoniError(Code.internal_error, "internal error"))
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        start = HTTPResponseStartEvent(type="http.response.start", status=status, headers=headers)
        await send(start)
        await send(HTTPResponseBodyEvent(type="http.response.body", body=payload, more_body=False))



async def read_body(receive: Receive, max_body: int) -> bytes:
    """A request's whole body; BodyTooLarge as soon as it exceeds `max_body` bytes."""
    message: dict[str, Any] = await receive()  # type: ignore[assignment]
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > max_body:
            raise BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()  # type: ignore[assignment]
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# --- WebSocket streams ------------------------------------------------------------

# (frame, client address) -> the answer frame (JSON bytes)
FrameHandler = Callable[[bytes | str, str], Awaitable[bytes]]


def frame_stream(handle: FrameHandler, max_frame: int) -> StreamHandler:
    """A WebSocket that answers each frame with one text frame, in order. A frame over
    `max_frame` bytes, or one `handle` refuses as a whole, gets an error frame
    `{"detail", "code"}` (SPEC §6 body) and the socket stays open."""
    too_large = error_payload(framework_error(413, "frame too large"))[1].decode()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        message: dict[str, Any] = await receive()  # type: ignore[assignment]
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})  # type: ignore[typeddict-item]
        client = scope.get("client")
        address = client[0] if client else ""
        while True:
            message = await receive()  # type: ignore[assignment]
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect: whatever was answered stays answered
            frame: bytes | str = message.get("text") or message.get("bytes") or b""
            size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(
                frame.encode()
            )
            if size > max_frame:
                answer = too_large
            else:
                answer = (await _frame_answer(handle, frame, address)).decode()
            try:
                await send({"type": "websocket.send", "text": answer})  # type: ignore[arg-type]
            except OSError:
                return  # the client went away meanwhile

    return stream


async def _frame_answer(handle: FrameHandler, frame: bytes | str, address: str) -> bytes:
    try:
        return await handle(frame, address)
    except NanoMoniError as exc:
        if isinstance(exc, StoreUnavailable):
            _outage_log("stream frame", exc)
        return error_payload(exc)[1]
    except Exception:
        log.exception("internal error on a stream frame")
        return error_payload(NanoMoniError(Code.internal_error, "internal error"))[1]
