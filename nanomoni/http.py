"""What both services share: body decoding, the error mapping, service endpoints, app assembly.

Every 4xx/5xx leaves as `{"detail", "code"}` (SPEC §6). Bodies are decoded by
msgspec straight from the raw bytes into the wire structs, so a schema error
names the bad member and a route's mode decides the body type.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import (
    ControllerRouterHandler,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    LifespanHook,
    Receive,
    Scope,
    Send,
)

from nanomoni import __version__, metrics, wire
from nanomoni.errors import Code, NanoMoniError, http_status
from nanomoni.protocol.model import Mode

log = logging.getLogger("nanomoni")

DEFAULT_MAX_BODY = 64 * 1024
JSON = MediaType.JSON

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class ValidationFailed(NanoMoniError):
    """A schema error (422) with the bad members listed."""

    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(Code.validation_error, detail)
        self.errors = errors


# msgspec messages end in "- at `$.member`" (or "$" for the whole object).
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"field `(?P<name>[^`]+)`")


def _validation_failure(exc: msgspec.MsgspecError) -> ValidationFailed:
    message = str(exc)
    where = _AT.search(message)
    path = where.group("path").lstrip(".") if where else ""
    named = _FIELD.search(message)  # unknown / missing members name themselves
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    reason = message[: where.start()] if where else message
    field = path or "body"
    return ValidationFailed(
        f"invalid request body: {reason} ({field})", [{"field": field, "message": reason}]
    )


def decode(raw: bytes, body_type: type[T]) -> T:
    """Decode a JSON body into `body_type`; any schema or syntax error is a 422."""
    try:
        return msgspec.json.decode(raw, type=body_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _validation_failure(exc) from None


def json_response(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=_encoder.encode(body), status_code=status, media_type=JSON)


def empty_response(status: int = 204) -> Response[bytes]:
    return Response(content=b"", status_code=status)


def error_response(
    code: Code, detail: str, errors: list[dict[str, str]] | None = None
) -> Response[bytes]:
    body = wire.ErrorResponse(detail=detail, code=code.value, errors=errors)
    return json_response(body, http_status(code))


def parse_mode(segment: str) -> Mode:
    """An unknown mode in the path is a resource that does not exist (404)."""
    try:
        return Mode(segment)
    except ValueError:
        raise NanoMoniError(Code.channel_not_found, f"unknown payment mode {segment!r}") from None


# --- exception mapping ------------------------------------------------------------

def _on_nanomoni_error(_: Request[Any, Any, Any], exc: NanoMoniError) -> Response[bytes]:
    status, payload = error_payload(exc)
    return Response(content=payload, status_code=status, media_type=JSON)


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Errors raised by the framework itself, in the SPEC's body."""
    status = exc.status_code
    if status >= 500:
        log.error("framework error %s: %s", status, exc.detail)
        return error_response(Code.internal_error, "internal error")
    if status == 413:
        return error_response(Code.payload_too_large, "request body exceeds the configured limit")
    if status == 404:  # no route: the resource does not exist
        return error_response(Code.channel_not_found, "no such resource")
    if status in (401, 403):
        code = Code.unauthorized if status == 401 else Code.forbidden
        return error_response(code, str(exc.detail))
    # A bad path or query parameter (400) is a schema error; 405 and the like keep their status.
    response = error_response(Code.validation_error, str(exc.detail))
    response.status_code = 422 if status == 400 else status
    return response


def _on_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(Code.internal_error, "internal error")


# --- service endpoints ----------------------------------------------------------


def service_routes(service: str) -> list[ControllerRouterHandler]:
    metrics.declare(service, [mode.value for mode in Mode])
    health = msgspec.json.encode(
        wire.HealthResponse(status="healthy", service=service, version=__version__)
    )

    @get("/health", sync_to_thread=False, include_in_schema=True)
    def health_endpoint() -> Response[bytes]:
        return Response(content=health, media_type=JSON)

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
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
) -> Litestar:
    handlers: dict[Any, Callable[..., Response[bytes]]] = {
        NanoMoniError: _on_nanomoni_error,
        HTTPException: _on_http_exception,
        Exception: _on_internal_error,
    }
    return Litestar(
        route_handlers=[*service_routes(service), *routes],
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        exception_handlers=handlers,
        request_max_body_size=max_body,
        openapi_config=OpenAPIConfig(
            title=f"NanoMoni {service}", version=__version__, path="/schema"
        ),
        logging_config=None,
        debug=False,
    )


# --- the hot path -------------------------------------------------------------------

RawHandler = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


def error_payload(exc: NanoMoniError) -> tuple[int, bytes]:
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    body = wire.ErrorResponse(detail=exc.detail, code=exc.code.value, errors=errors)
    return exc.status, _encoder.encode(body)


class BodyTooLarge(Exception):
    pass


class HotPath:
    """An ASGI front that serves one hot route (`{prefix}{a}/{b}{suffix}`, POST) directly
    and hands everything else, lifespan included, to the Litestar app.

    Litestar's routing, parameter parsing and response machinery cost more CPU than
    a whole payment; this route only needs the raw body and two path segments, and
    answers with the same bodies and error mapping as the framework routes.
    """

    def __init__(
        self, app: Litestar, *, prefix: str, suffix: str, handler: RawHandler, max_body: int
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.suffix = suffix
        self.handler = handler
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") == "POST":
            path: str = scope["path"]
            if path.startswith(self.prefix) and path.endswith(self.suffix):
                segments = path[len(self.prefix) : len(path) - len(self.suffix)].split("/")
                if len(segments) == 2:
                    await self._serve(segments[0], segments[1], receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, first: str, second: str, receive: Receive, send: Send) -> None:
        try:
            raw = await self._body(receive)
            status, payload = await self.handler(first, second, raw)
        except NanoMoniError as exc:
            status, payload = error_payload(exc)
        except BodyTooLarge:
            status, payload = error_payload(
                NanoMoniError(Code.payload_too_large, "request body exceeds the configured limit")
            )
        except Exception:
            log.exception("internal error on POST %s%s/%s", self.prefix, first, second)
            status, payload = error_payload(NanoMoniError(Code.internal_error, "internal error"))
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        start = HTTPResponseStartEvent(type="http.response.start", status=status, headers=headers)
        await send(start)
        await send(HTTPResponseBodyEvent(type="http.response.body", body=payload, more_body=False))

    async def _body(self, receive: Receive) -> bytes:
        message: dict[str, Any] = await receive()  # type: ignore[assignment]
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body:
                raise BodyTooLarge
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()  # type: ignore[assignment]
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)
