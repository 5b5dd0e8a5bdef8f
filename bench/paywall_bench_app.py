"""The API the paywall benchmark serves: one tiny raw-ASGI handler, reached unpriced
at GET /free and priced (1 per request) at GET /paid, behind `Paywall`; GET /probe
is the free handler after one read of the paywall's store (the cost of a store
round trip, measured in the same process under the same load).

    uvicorn --factory paywall_bench_app:create_app   (BENCH_ISSUER, BENCH_STORE, BENCH_KEY)
"""

from __future__ import annotations

import os
from typing import Any

from nanomoni.paywall import Paywall

BODY = b'{"quote":42}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"12")]


PROBE_CHANNEL = "P" * 42 + "A"
paywall: Paywall | None = None


async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/probe" and paywall is not None:
        await paywall.vendor.store.credit(PROBE_CHANNEL)
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def create_app() -> Paywall:
    global paywall
    paywall = Paywall(
        api,
        issuer_url=os.environ["BENCH_ISSUER"],
        store=os.environ["BENCH_STORE"],
        key_file=os.environ["BENCH_KEY"],
        prices={"GET /paid": 1},
    )
    return paywall
