"""The demo's paywall row (SPEC §11): an API priced per request behind `Paywall`,
served by uvicorn in this process, bought N times by `PaymentAuth`; then what the
client paid, what the API served and what the issuer settled must agree."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from nanomoni.client import PaymentAuth
from nanomoni.client.session import Client
from nanomoni.launch import HOST, free_port
from nanomoni.paywall import Paywall
from nanomoni.protocol.modes import ALL
from nanomoni.tools.display import Tracker

PRICE = 2  # per request
PREPAY = 4  # requests paid per payment


class CountingApi:
    """The smallest priced API: every request it serves is counted."""

    def __init__(self) -> None:
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.served += 1
        body = b'{"quote": 42}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"13")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def buy_through_paywall(
    issuer_url: str, requests: int, progress: Tracker, outcome: Any
) -> None:
    """Fill `outcome` (the demo's Outcome) with the paywall's row."""
    api = CountingApi()
    with tempfile.TemporaryDirectory(prefix="nanomoni-paywall-") as root:
        paywall = Paywall(
            api,
            issuer_url=issuer_url,
            store=f"sqlite:{Path(root) / 'paywall.sqlite3'}",
            key_file=Path(root) / "vendor-key.pem",
            prices={"GET /quote": PRICE},
        )
        port = free_port()
        config = uvicorn.Config(paywall, host=HOST, port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.02)
            url = f"http://{HOST}:{port}"
            await _buy(url, issuer_url, paywall, api, requests, progress, outcome)
        finally:
            server.should_exit = True
            await serving


async def _buy(
    url: str,
    issuer_url: str,
    paywall: Paywall,
    api: CountingApi,
    requests: int,
    progress: Tracker,
    outcome: Any,
) -> None:
    from nanomoni.tools.demo import wait_for_account

    task = progress.add_task(outcome.title, total=requests)
    auth = PaymentAuth(issuer_url, budget=requests * PRICE * 2, prepay=PREPAY)
    async with Client(issuer_url, url, auth.purse.wallet) as bank:
        vendor_key = paywall.vendor.public_key_b64
        await wait_for_account(bank, vendor_key)
        vendor_before = await bank.balance(vendor_key)
        client_before = await bank.register()  # the purse's own registration finds it
        async with httpx.AsyncClient(auth=auth, timeout=30) as http:
            started = time.perf_counter()
            for n in range(requests):
                sent = time.perf_counter()
                reply = await http.get(f"{url}/quote")
                outcome.latencies_s.append(time.perf_counter() - sent)
                if reply.status_code != 200:
                    outcome.problems.append(f"request {n}: {reply.status_code} {reply.text}")
                    break
                outcome.payments += 1
                progress.advance(task)
            outcome.elapsed_s = time.perf_counter() - started
        await auth.aclose()  # settles every channel at the issuer
        # Every channel paid into is among the closed ones by now, renewed ones included
        # (a renewal settles the channel it replaces in the background).
        consumed = settled = 0
        for channel in auth.purse.closed:
            consumed += (await paywall.vendor.store.credit(channel.channel_id)).consumed
            settled += (await bank.get_channel(channel.mode, channel.channel_id)).balance
        paid = sum(channel.owed for channel in auth.purse.closed)
        client_after = await bank.balance()
        vendor_after = await bank.balance(vendor_key)
    outcome.settled = settled
    checks = {
        "the API served every request": api.served == outcome.payments == requests,
        "consumed = requests × price": consumed == requests * PRICE,
        "settled what the client paid": settled == paid and consumed <= paid,
        "client charged what was settled": client_before - client_after == settled,
        "vendor credited what was settled": vendor_after - vendor_before == settled,
        "every channel settled": not auth.purse.channels,
    }
    outcome.problems += [f"{name} ✗" for name, ok in checks.items() if not ok]
    outcome.reconciled = not outcome.problems


def cheapest_mode() -> Any:
    """The mode a PaymentAuth picks when the paywall takes every mode."""
    return min(ALL, key=lambda rules: rules.payment_cost).mode
