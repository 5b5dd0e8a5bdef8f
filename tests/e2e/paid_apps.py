"""The priced API the paywall tests serve with uvicorn, in Litestar and in FastAPI.

    uvicorn --factory paid_apps:litestar_app    (PAID_ISSUER, PAID_STORE, PAID_KEY)
    uvicorn --factory paid_apps:fastapi_app

Routes (the same in both): GET /free (unpriced), GET /quotes/{symbol} (3 per
request), POST /echo (2, a callable price), GET /maybe (0 with ?free, else 4),
GET /boom (5, the app fails: refunded), GET /events (metered SSE, 2 per event;
?n=count&delay=seconds&tag=name), GET /tokens (metered, 1 per word of an event),
GET /plain (metered route answering plain JSON: priced per request), GET /served
(how many requests and events each handler produced).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi import Request as FastApiRequest
from fastapi.responses import StreamingResponse
from litestar import Litestar, Request, get, post
from litestar.response import Stream

from nanomoni.paywall import Paywall, Price

served: Counter[str] = Counter()


def _query(scope: Mapping[str, Any]) -> str:
    return bytes(scope.get("query_string", b"")).decode()


PRICES: dict[str, Price] = {
    "GET /quotes/{symbol}": 3,
    "POST /echo": lambda scope: 2,
    "GET /maybe": lambda scope: 0 if "free" in _query(scope) else 4,
    "GET /boom": 5,
    "GET /events": {"price_per_chunk": 2},
    "GET /tokens": {"price_per_chunk": 1, "units": lambda event: len(event.split()) - 1},
    "GET /plain": {"price_per_chunk": 6},
}


def paywall_options() -> dict[str, Any]:
    return {
        "issuer_url": os.environ["PAID_ISSUER"],
        "store": os.environ["PAID_STORE"],
        "key_file": os.environ["PAID_KEY"],
        "prices": PRICES,
        "pause_timeout": float(os.environ.get("PAID_PAUSE", "30")),
    }


async def events(count: int, delay: float, tag: str) -> AsyncIterator[bytes]:
    for n in range(count):
        yield f"id: {n}\ndata: event {n}\n\n".encode()
        served[f"events:{tag}"] += 1  # the previous yield was handed over
        if delay:
            await asyncio.sleep(delay)


async def tokens() -> AsyncIterator[bytes]:
    for words in ("one", "two words", "three more words"):
        yield f"data: {words}\n\n".encode()
    yield b": keep-alive comment, free\n\n"


def _params(query: str) -> dict[str, str]:
    pairs = (part.partition("=") for part in query.split("&") if part)
    return {name: value for name, _, value in pairs}


def litestar_app() -> Any:
    @get("/free", sync_to_thread=False)
    def free() -> dict[str, str]:
        return {"free": "yes"}

    @get("/quotes/{symbol:str}", sync_to_thread=False)
    def quote(symbol: str) -> dict[str, Any]:
        served["quotes"] += 1
        return {"symbol": symbol, "price": 42}

    @post("/echo")
    async def echo(request: Request[Any, Any, Any]) -> dict[str, str]:
        served["echo"] += 1
        return {"echo": (await request.body()).decode()}

    @get("/maybe", sync_to_thread=False)
    def maybe() -> dict[str, str]:
        served["maybe"] += 1
        return {"maybe": "served"}

    @get("/boom", sync_to_thread=False)
    def boom() -> dict[str, str]:
        served["boom"] += 1
        raise RuntimeError("the app failed")

    @get("/events", sync_to_thread=False)
    def stream(request: Request[Any, Any, Any]) -> Stream:
        params = _params(request.scope["query_string"].decode())
        count, delay = int(params.get("n", "5")), float(params.get("delay", "0"))
        return Stream(events(count, delay, params.get("tag", "")), media_type="text/event-stream")

    @get("/tokens", sync_to_thread=False)
    def token_stream() -> Stream:
        return Stream(tokens(), media_type="text/event-stream")

    @get("/plain", sync_to_thread=False)
    def plain() -> dict[str, str]:
        served["plain"] += 1
        return {"plain": "json"}

    @get("/served", sync_to_thread=False)
    def count() -> dict[str, int]:
        return dict(served)

    app = Litestar(
        [free, quote, echo, maybe, boom, stream, token_stream, plain, count], debug=False
    )
    return Paywall(app, **paywall_options())


def fastapi_app() -> Any:
    app = FastAPI()

    @app.get("/free")
    def free() -> dict[str, str]:
        return {"free": "yes"}

    @app.get("/quotes/{symbol}")
    def quote(symbol: str) -> dict[str, Any]:
        served["quotes"] += 1
        return {"symbol": symbol, "price": 42}

    @app.post("/echo")
    async def echo(request: FastApiRequest) -> dict[str, str]:
        served["echo"] += 1
        return {"echo": (await request.body()).decode()}

    @app.get("/maybe")
    def maybe() -> dict[str, str]:
        served["maybe"] += 1
        return {"maybe": "served"}

    @app.get("/boom")
    def boom() -> dict[str, str]:
        served["boom"] += 1
        raise RuntimeError("the app failed")

    @app.get("/events")
    def stream(n: int = 5, delay: float = 0.0, tag: str = "") -> StreamingResponse:
        return StreamingResponse(events(n, delay, tag), media_type="text/event-stream")

    @app.get("/tokens")
    def token_stream() -> StreamingResponse:
        return StreamingResponse(tokens(), media_type="text/event-stream")

    @app.get("/plain")
    def plain() -> dict[str, str]:
        served["plain"] += 1
        return {"plain": "json"}

    @app.get("/served")
    def count() -> dict[str, int]:
        return dict(served)

    # Starlette's own middleware stack: the paywall sees every request and the lifespan.
    app.add_middleware(Paywall, **paywall_options())
    return app
