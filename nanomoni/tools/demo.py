"""`nanomoni demo`: the whole lifecycle in every mode against local services.

Starts an issuer and a vendor on free loopback ports with the embedded store,
then for each mode: open a channel, pay N times, close, and check that every
balance moved by exactly what was paid. Exits non-zero unless all reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import uvloop

from nanomoni.client.http import TRANSIENT, ApiError
from nanomoni.client.session import Client
from nanomoni.client.wallet import Wallet
from nanomoni.protocol.modes import RULES
from nanomoni.tools.display import Display, Tracker
from nanomoni.tools.local import local_services
from nanomoni.tools.paywall_demo import buy_through_paywall, cheapest_mode
from nanomoni.tools.runs import Run
from nanomoni.tools.stats import summary_ms

UNIT = 2  # owed per payment
SLACK = 100  # locked but never paid: must come back to the client at settlement
REGISTRATION_TIMEOUT = 20.0


@dataclass
class Outcome:
    run: Run
    payments: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    settled: int | None = None
    reconciled: bool = False
    problems: list[str] = field(default_factory=list)
    front: str = ""  # how it was paid, when not by payments to the vendor service

    @property
    def label(self) -> str:
        return f"{self.front} ({self.run.label})" if self.front else self.run.label


async def wait_for_account(client: Client, public_key_b64: str) -> None:
    """The vendor registers itself in the background after start-up."""
    deadline = time.monotonic() + REGISTRATION_TIMEOUT
    while True:
        try:
            await client.balance(public_key_b64)
            return
        except (ApiError, *TRANSIENT):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def lifecycle(client: Client, run: Run, payments: int, progress: Tracker) -> Outcome:
    outcome = Outcome(run)
    task = progress.add_task(outcome.label, total=payments)
    vendor_key = await client.vendor_public_key()
    client_before = await client.balance()
    vendor_before = await client.balance(vendor_key)
    amount = payments * UNIT + SLACK
    channel = await client.open_channel(
        run.mode, amount, unit_value=UNIT, max_index=payments, hash_alg=run.hash_alg
    )
    if await client.balance() != client_before - amount:
        outcome.problems.append("opening did not lock the amount")
    # A mode without a commitment pays amounts, not units of UNIT.
    step = UNIT if RULES[run.mode].members is None else 1
    started = time.perf_counter()
    for _ in range(payments):
        sent = time.perf_counter()
        result = await channel.pay(step)
        outcome.latencies_s.append(time.perf_counter() - sent)
        if result.replay and result.attempts == 1:  # a replay is only right for a retry
            outcome.problems.append(f"new payment {result.index} was answered as a replay")
        outcome.payments += 1
        progress.advance(task)
    outcome.elapsed_s = time.perf_counter() - started
    owed = channel.owed
    await channel.close()
    info = await channel.refresh()
    outcome.settled = info.balance
    client_after = await client.balance()
    vendor_after = await client.balance(vendor_key)
    checks = {
        "channel closed": info.is_closed,
        "settled what was paid": info.balance == owed == payments * UNIT,
        "client refunded the rest": client_after == client_before - owed,
        "vendor credited": vendor_after == vendor_before + owed,
    }
    outcome.problems += [f"{name} ✗" for name, ok in checks.items() if not ok]
    outcome.reconciled = not outcome.problems
    return outcome


async def run_all(
    issuer_url: str,
    vendor_url: str,
    runs: list[Run],
    payments: int,
    key_kind: str,
    display: Display,
    paywall: bool = False,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with Client(issuer_url, vendor_url, Wallet.generate(key_kind)) as client:
        await client.register()
        await wait_for_account(client, await client.vendor_public_key())
        with display.progress() as progress:
            for run in runs:
                try:
                    outcomes.append(await lifecycle(client, run, payments, progress))
                except Exception as error:  # report the failure in the table, go on
                    outcomes.append(Outcome(run, problems=[f"{type(error).__name__}: {error}"]))
            if paywall:
                outcomes.append(await paywall_row(issuer_url, payments, progress))
    return outcomes


async def paywall_row(issuer_url: str, requests: int, progress: Tracker) -> Outcome:
    """N requests bought through the 402 paywall (SPEC §11), reconciled."""
    outcome = Outcome(Run(cheapest_mode(), "sha256"), front="paywall")
    try:
        await buy_through_paywall(issuer_url, requests, progress, outcome)
    except Exception as error:
        outcome.problems.append(f"{type(error).__name__}: {error}")
    return outcome


HEADERS = ("mode", "payments", "payments/s", "p50 ms", "p99 ms", "settled", "reconciled")
SETTLED_NOTE = (
    "settled: what the issuer paid the vendor when the channel closed (payments × unit value "
    f"{UNIT}); the {SLACK} locked but never paid went back to the client. The paywall row "
    "buys requests through HTTP 402 (prepaid in steps); settled = the best payments."
)


def render(outcomes: list[Outcome]) -> list[tuple[str, ...]]:
    """The demo table's rows (HEADERS)."""
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        latency = summary_ms(outcome.latencies_s)
        rate = outcome.payments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        rows.append((
            outcome.label,
            str(outcome.payments),
            f"{rate:,.0f}",
            f"{latency['p50']:.2f}",
            f"{latency['p99']:.2f}",
            "-" if outcome.settled is None else str(outcome.settled),
            "✓" if outcome.reconciled else "✗",
        ))  # fmt: skip
    return rows


def main(args: argparse.Namespace) -> int:
    """`nanomoni demo` (its options are defined with the other commands in `nanomoni.cli`)."""
    display = Display()
    with local_services("embedded") as services:
        display.print(f"issuer {services.issuer_url}  vendor {services.vendor_url}")
        outcomes = uvloop.run(
            run_all(
                services.issuer_url,
                services.vendor_url,
                args.modes,
                args.payments,
                args.key_kind,
                display,
                paywall=True,
            )
        )
    display.table("NanoMoni demo", HEADERS, render(outcomes))
    display.print(SETTLED_NOTE)
    for outcome in outcomes:
        for problem in outcome.problems:
            display.print(f"[red]{outcome.label}: {problem}[/red]")
    ok = all(outcome.reconciled for outcome in outcomes)
    display.print("all balances reconcile ✓" if ok else "[red]balances do NOT reconcile ✗[/red]")
    return 0 if ok else 1
