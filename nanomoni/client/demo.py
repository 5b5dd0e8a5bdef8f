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
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from nanomoni.client.display import make_console, make_progress
from nanomoni.client.http import TRANSIENT, ApiError
from nanomoni.client.local import local_services
from nanomoni.client.session import Client
from nanomoni.client.stats import summary_ms
from nanomoni.client.wallet import Wallet
from nanomoni.crypto import HASH_ALGS, KEY_KINDS
from nanomoni.protocol.model import Mode

# Every mode on SHA-256, plus the hash-heavy modes again on BLAKE3.
DEFAULT_RUNS = [*(m.value for m in Mode), "payword:blake3", "paytree_second_opt:blake3"]
UNIT = 2  # owed per payment
SLACK = 100  # locked but never paid: must come back to the client at settlement
REGISTRATION_TIMEOUT = 20.0


@dataclass(frozen=True)
class Run:
    mode: Mode
    hash_alg: str

    @property
    def label(self) -> str:
        return (
            self.mode.value if self.hash_alg == "sha256" else f"{self.mode.value} ({self.hash_alg})"
        )


@dataclass
class Outcome:
    run: Run
    payments: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    settled: int | None = None
    reconciled: bool = False
    problems: list[str] = field(default_factory=list)


def parse_runs(text: str) -> list[Run]:
    """ "mode" or "mode:hash_alg", comma separated."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        mode_text, _, alg = item.partition(":")
        try:
            mode = Mode(mode_text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown mode {mode_text!r}; expected one of {', '.join(m.value for m in Mode)}"
            ) from None
        alg = alg or "sha256"
        if alg not in HASH_ALGS:
            raise argparse.ArgumentTypeError(f"unknown hash suite {alg!r}; expected {HASH_ALGS}")
        runs.append(Run(mode, alg))
    if not runs:
        raise argparse.ArgumentTypeError("no modes given")
    return runs


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


async def lifecycle(client: Client, run: Run, payments: int, progress: Progress) -> Outcome:
    outcome = Outcome(run)
    task = progress.add_task(run.label, total=payments)
    vendor_key = await client.vendor_public_key()
    client_before = await client.balance()
    vendor_before = await client.balance(vendor_key)
    amount = payments * UNIT + SLACK
    if run.mode is Mode.signature:
        channel = await client.open_channel(run.mode, amount, hash_alg=run.hash_alg)
    else:
        channel = await client.open_channel(
            run.mode, amount, unit_value=UNIT, max_index=payments, hash_alg=run.hash_alg
        )
    if await client.balance() != client_before - amount:
        outcome.problems.append("opening did not lock the amount")
    step = UNIT if run.mode is Mode.signature else 1  # signature mode pays amounts, not units
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
        "channel closed": info.is_closed is True,
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
    console: Console,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with Client(issuer_url, vendor_url, Wallet.generate(key_kind)) as client:
        await client.register()
        await wait_for_account(client, await client.vendor_public_key())
        with make_progress(console) as progress:
            for run in runs:
                try:
                    outcomes.append(await lifecycle(client, run, payments, progress))
                except Exception as error:  # report the failure in the table, go on
                    outcomes.append(Outcome(run, problems=[f"{type(error).__name__}: {error}"]))
    return outcomes


def render(outcomes: list[Outcome]) -> Table:
    table = Table(title="NanoMoni demo")
    for name in ("mode", "payments", "payments/s", "p50 ms", "p99 ms", "settled", "reconciled"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for outcome in outcomes:
        latency = summary_ms(outcome.latencies_s)
        rate = outcome.payments / outcome.elapsed_s if outcome.elapsed_s else 0.0
        table.add_row(
            outcome.run.label,
            str(outcome.payments),
            f"{rate:,.0f}",
            f"{latency['p50']:.2f}",
            f"{latency['p99']:.2f}",
            "-" if outcome.settled is None else str(outcome.settled),
            "✓" if outcome.reconciled else "✗",
        )
    return table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nanomoni demo", description=__doc__)
    parser.add_argument("--payments", type=int, default=1000, help="payments per mode")
    parser.add_argument(
        "--modes",
        type=parse_runs,
        default=parse_runs(",".join(DEFAULT_RUNS)),
        help="comma-separated modes, each optionally ':blake3' (default: all, plus BLAKE3 runs)",
    )
    parser.add_argument("--key-kind", choices=KEY_KINDS, default="p256")
    args = parser.parse_args(argv)
    if args.payments < 1:
        parser.error("--payments must be at least 1")
    console = make_console()
    with local_services("embedded") as services:
        console.print(f"issuer {services.issuer_url}  vendor {services.vendor_url}")
        outcomes = uvloop.run(
            run_all(
                services.issuer_url,
                services.vendor_url,
                args.modes,
                args.payments,
                args.key_kind,
                console,
            )
        )
    console.print(render(outcomes))
    for outcome in outcomes:
        for problem in outcome.problems:
            console.print(f"[red]{outcome.run.label}: {problem}[/red]")
    ok = all(outcome.reconciled for outcome in outcomes)
    console.print("all balances reconcile ✓" if ok else "[red]balances do NOT reconcile ✗[/red]")
    return 0 if ok else 1
