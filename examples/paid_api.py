"""A small priced API: quotes at 3 per request and a streamed "completion" at 1 per
token, behind NanoMoni's 402 paywall (SPEC §11).

    nanomoni issuer --port 8001 &
    NANOMONI_ISSUER=http://127.0.0.1:8001 uvicorn --factory examples.paid_api:create_app --port 8080

Then `python examples/paying_client.py` buys from it. The paywall keeps its
vendor key in `./paid-api-data/vendor-key.pem` and its state in SQLite there (a
`redis://` URL in NANOMONI_PAYWALL_STORE shares a vendor's Redis instead).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from litestar import Litestar, get
from litestar.response import Stream

from nanomoni.paywall import Paywall

QUOTES = {"ACME": 42.0, "INIT": 7.5, "NANO": 0.0001}


@get("/quotes/{symbol:str}", sync_to_thread=False)
def quote(symbol: str) -> dict[str, object]:
    return {"symbol": symbol, "price": QUOTES.get(symbol.upper())}


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}  # unpriced: passes the paywall untouched


async def words(prompt: str) -> AsyncIterator[bytes]:
    for word in f"You asked about {prompt}. Here is a short streamed answer.".split():
        yield f"data: {word}\n\n".encode()
        await asyncio.sleep(0.01)


@get("/completions", sync_to_thread=False)
def completion(prompt: str = "nothing") -> Stream:
    return Stream(words(prompt), media_type="text/event-stream")


def tokens(event: bytes) -> int:
    """What one event costs in tokens: its words (the data line's)."""
    return max(1, len(event.split()) - 1)


def create_app() -> Paywall:
    data = os.environ.get("NANOMONI_PAYWALL_DATA", "paid-api-data")
    return Paywall(
        Litestar([quote, health, completion]),
        issuer_url=os.environ.get("NANOMONI_ISSUER", "http://127.0.0.1:8001"),
        store=os.environ.get("NANOMONI_PAYWALL_STORE", f"sqlite:{data}/paywall.sqlite3"),
        key_file=f"{data}/vendor-key.pem",
        prices={
            "GET /quotes/{symbol}": 3,
            "GET /completions": {"price_per_chunk": 1, "units": tokens},
        },
    )
