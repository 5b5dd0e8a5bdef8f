"""`nanomoni demo`: the whole lifecycle in every mode against local services.

Starts an issuer and a vendor on free loopback ports with the embedded store,
then for each mode: open a channel, pay N times, close, and check that every
balance moved by exactly what was paid. Then requests bought through the 402
paywall (SPEC §11), and the client's protection (SPEC
§4.5–§4.6): a channel whose vendor withdraws with a checkpoint while it stays
open, and a channel its client closes while the vendor is offline, refunded
at the dispute deadline. Exits non-zero unless all reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import uvloop

from nanomoni.client.http import TRANSIENT, ApiError
from nanomoni.client.session import Channel, Client
from nanomoni.client.wallet import Wallet
from nanomoni.protocol.model import ChannelState, ReceiptKind
from nanomoni.protocol.modes import ALL, RULES
from nanomoni.tools.display import Display, Tracker
from nanomoni.tools.local import LocalServices, local_services
from nanomoni.tools.paywall_demo import buy_through_paywall, cheapest_mode
from nanomoni.tools.runs import Run
from nanomoni.tools.stats import summary_ms

UNIT = 2  # owed per payment
SLACK = 100  # locked but never paid: must come back to the client at settlement
REGISTRATION_TIMEOUT = 20.0
# The client's protection, short enough to watch: the demo issuer's dispute window and
# the demo vendor's checkpoint interval.
DISPUTE_WINDOW = 3.0
CHECKPOINT_INTERVAL = 0.5
SERVICE_WAIT = 15.0  # seconds a protection row waits for a checkpoint or a refund
# A mode whose amount is its index (it could also be topped up), and a hash-chain mode.
AMOUNT_MODE = next(rules.mode for rules in ALL if rules.members is None)
CHAIN_MODE = next(rules.mode for rules in ALL if rules.members is not None)
CHECKPOINT_LABEL = f"{AMOUNT_MODE.value} · checkpoint"
OFFLINE_LABEL = f"{CHAIN_MODE.value} · client close, vendor offline"


@dataclass
class Outcome:
    run: Run
    payments: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    settled: int | None = None
    reconciled: bool = False
    problems: list[str] = field(default_factory=list)
    label: str | None = None  # a row not paid mode by mode (default: the run's label)
    note: str | None = None  # what the row showed, printed under the table

    @property
    def title(self) -> str:
        return self.label or self.run.label


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
    task = progress.add_task(outcome.title, total=payments)
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
    run = Run(cheapest_mode(), "sha256")
    outcome = Outcome(run, label=f"paywall ({run.label})")
    try:
        await buy_through_paywall(issuer_url, requests, progress, outcome)
    except Exception as error:
        outcome.problems.append(f"{type(error).__name__}: {error}")
    return outcome


# --- the client's protection -----------------------------------------------------------


async def _pay(
    channel: Channel, outcome: Outcome, count: int, step: int, progress: Tracker, task: object
) -> None:
    started = time.perf_counter()
    for _ in range(count):
        sent = time.perf_counter()
        await channel.pay(step)
        outcome.latencies_s.append(time.perf_counter() - sent)
        outcome.payments += 1
        progress.advance(task)
    outcome.elapsed_s += time.perf_counter() - started


async def _until_checkpointed(channel: Channel, owed: int) -> int:
    """What the vendor was credited once a checkpoint covers `owed`."""
    deadline = time.monotonic() + SERVICE_WAIT
    while (info := await channel.refresh()).vendor_credited < owed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no checkpoint reached {owed} (credited {info.vendor_credited})")
        await asyncio.sleep(0.1)
    return info.vendor_credited


def _kinds(channel: Channel) -> list[ReceiptKind]:
    return [channel.receipts[seq].receipt.kind for seq in sorted(channel.receipts)]


async def checkpoint_row(client: Client, payments: int, progress: Tracker) -> Outcome:
    """The vendor withdraws what half the payments owe while the channel stays open; the
    close then settles only the rest."""
    outcome = Outcome(Run(AMOUNT_MODE, "sha256"), label=CHECKPOINT_LABEL)
    task = progress.add_task(outcome.title, total=payments)
    vendor_key = await client.vendor_public_key()
    client_before, vendor_before = await client.balance(), await client.balance(vendor_key)
    channel = await client.open_channel(AMOUNT_MODE, payments * UNIT + SLACK)
    half = payments // 2
    await _pay(channel, outcome, half, UNIT, progress, task)
    withdrawn = await _until_checkpointed(channel, half * UNIT)
    still_open = (await channel.refresh()).state is ChannelState.open
    await _pay(channel, outcome, payments - half, UNIT, progress, task)
    info = await channel.close()
    outcome.settled = info.balance
    owed = payments * UNIT
    kinds = _kinds(channel)
    checks = {
        "open while withdrawing": still_open,
        "receipts: open, checkpoint, settlement": kinds[0] is ReceiptKind.open
        and ReceiptKind.checkpoint in kinds
        and kinds[-1] is ReceiptKind.settlement,
        "settled what was paid": info.is_closed and info.balance == owed,
        "client refunded the rest": await client.balance() == client_before - owed,
        "vendor credited": await client.balance(vendor_key) == vendor_before + owed,
    }
    outcome.problems += [f"{name} ✗" for name, ok in checks.items() if not ok]
    outcome.reconciled = not outcome.problems
    outcome.note = (
        f"{outcome.title}: the vendor withdrew {withdrawn} while the channel stayed open, "
        f"the close settled the other {owed - withdrawn}"
    )
    return outcome


async def offline_row(
    client: Client, services: LocalServices, payments: int, progress: Tracker
) -> Outcome:
    """The client closes a channel at the issuer while its vendor is offline: at the
    dispute deadline the vendor keeps what its checkpoint withdrew, the client gets the
    rest (also what the vendor was paid but never settled)."""
    outcome = Outcome(Run(CHAIN_MODE, "sha256"), label=OFFLINE_LABEL)
    task = progress.add_task(outcome.title, total=payments)
    vendor_key = await client.vendor_public_key()
    client_before, vendor_before = await client.balance(), await client.balance(vendor_key)
    amount = payments * UNIT + SLACK
    channel = await client.open_channel(
        CHAIN_MODE, amount, unit_value=UNIT, max_index=payments
    )
    half = payments // 2
    await _pay(channel, outcome, half, 1, progress, task)
    withdrawn = await _until_checkpointed(channel, half * UNIT)
    await _pay(channel, outcome, payments - half, 1, progress, task)
    assert services.vendor is not None
    services.vendor.stop()  # gone for good, before it could settle or withdraw the rest
    started = time.monotonic()
    closing = await channel.close(vendor_timeout=2.0)
    info = await channel.wait_closed(poll=0.2, timeout=DISPUTE_WINDOW + SERVICE_WAIT)
    waited = time.monotonic() - started
    kept = outcome.settled = info.balance  # what checkpoints withdrew before it went away
    checks = {
        "closed by the client": closing.state is ChannelState.closing,
        "finalized at the deadline": _kinds(channel)[-1] is ReceiptKind.finalization,
        "vendor kept its checkpoints": withdrawn <= kept == info.vendor_credited,
        "client refunded the rest": await client.balance() == client_before - kept,
        "vendor credited": await client.balance(vendor_key) == vendor_before + kept,
    }
    outcome.problems += [f"{name} ✗" for name, ok in checks.items() if not ok]
    outcome.reconciled = not outcome.problems
    outcome.note = (
        f"{outcome.title}: refunded {amount - kept} {waited:.1f} s after the close "
        f"(dispute window {DISPUTE_WINDOW:g} s); the vendor kept the {kept} its checkpoints "
        f"withdrew and lost the {payments * UNIT - kept} it never settled"
    )
    return outcome


async def run_protection(
    services: LocalServices, payments: int, key_kind: str, display: Display
) -> list[Outcome]:
    """The two protection rows (the second takes the vendor offline: it runs last)."""
    outcomes: list[Outcome] = []
    wallet = Wallet.generate(key_kind)
    async with Client(services.issuer_url, services.vendor_url, wallet) as client:
        await client.register()
        with display.progress() as progress:
            rows: list[tuple[str, Callable[[], Awaitable[Outcome]]]] = [
                (CHECKPOINT_LABEL, lambda: checkpoint_row(client, payments, progress)),
                (OFFLINE_LABEL, lambda: offline_row(client, services, payments, progress)),
            ]
            for (label, row), mode in zip(rows, (AMOUNT_MODE, CHAIN_MODE), strict=True):
                try:
                    outcomes.append(await row())
                except Exception as error:  # report the failure in the table, go on
                    failed = Outcome(Run(mode, "sha256"), label=label)
                    failed.problems.append(f"{type(error).__name__}: {error}")
                    outcomes.append(failed)
    return outcomes


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
            outcome.title,
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
    issuer_flags = ["--dispute-window", f"{DISPUTE_WINDOW:g}"]
    vendor_flags = ["--checkpoint-interval", f"{CHECKPOINT_INTERVAL:g}"]
    with local_services(
        "embedded", issuer_flags=issuer_flags, vendor_flags=vendor_flags
    ) as services:
        display.print(f"issuer {services.issuer_url}  vendor {services.vendor_url}")

        async def everything() -> list[Outcome]:
            lifecycles = await run_all(
                services.issuer_url,
                services.vendor_url,
                args.modes,
                args.payments,
                args.key_kind,
                display,
                paywall=True,
            )
            protection = await run_protection(services, args.payments, args.key_kind, display)
            return lifecycles + protection

        outcomes = uvloop.run(everything())
    display.table("NanoMoni demo", HEADERS, render(outcomes))
    display.print(SETTLED_NOTE)
    for outcome in outcomes:
        if outcome.note:
            display.print(outcome.note)
        for problem in outcome.problems:
            display.print(f"[red]{outcome.title}: {problem}[/red]")
    ok = all(outcome.reconciled for outcome in outcomes)
    display.print("all balances reconcile ✓" if ok else "[red]balances do NOT reconcile ✗[/red]")
    return 0 if ok else 1
