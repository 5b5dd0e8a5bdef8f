"""Prometheus metrics of both services (SPEC §9).

With several workers, `PROMETHEUS_MULTIPROC_DIR` must be set (by the command,
before this module is imported) so every worker writes its samples to shared
files and /metrics aggregates them; one worker keeps the cheaper in-process
registry.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.metrics_core import Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class _Tally:
    """Counter increments and histogram observations kept in plain numbers (one lock
    per call instead of one per bucket and sum inside prometheus_client) and moved into
    the Prometheus objects whenever the registry is read. Registered ahead of every
    metric of this module, so a collection moves them before it reads any: /metrics
    stays exact. Only in-process: with PROMETHEUS_MULTIPROC_DIR another process reads
    the samples, so everything is recorded directly (`_inc`, `_observe`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[Counter, float] = {}
        self.times: dict[Histogram, list[float]] = {}  # count per bucket (le, +Inf), sum

    def inc(self, counter: Counter, amount: float) -> None:
        with self.lock:
            counts = self.counts
            counts[counter] = counts.get(counter, 0) + amount

    def observe(self, timer: Histogram, seconds: float, counter: Counter | None = None) -> None:
        """`seconds` observed by `timer`, and `counter` (if any) incremented by 1."""
        with self.lock:
            if counter is not None:
                counts = self.counts
                counts[counter] = counts.get(counter, 0) + 1
            times = self.times.get(timer)
            if times is None:
                times = self.times[timer] = [0.0] * (len(_FAST) + 2)
            times[bisect.bisect_left(_FAST, seconds)] += 1  # every histogram here has _FAST
            times[-1] += seconds

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, {}
            times, self.times = self.times, {}
        for counter, count in counts.items():
            counter.inc(count)
        for timer, observed in times.items():
            # Histogram.observe adds 1 to the first bucket whose bound holds the value
            # and the value to the sum; these are those additions, many at once
            # (prometheus_client has no public call for that).
            for bucket, many in zip(timer._buckets, observed[:-1], strict=True):
                if many:
                    bucket.inc(many)
            timer._sum.inc(observed[-1])

    def collect(self) -> Iterable[Metric]:
        self.flush()
        return ()


_MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))
_tally = _Tally()
if not _MULTIPROCESS:
    REGISTRY.register(_tally)  # first: see _Tally


def _inc(counter: Counter, amount: float = 1) -> None:
    if _MULTIPROCESS:
        counter.inc(amount)
    else:
        _tally.inc(counter, amount)


def _observe(timer: Histogram, seconds: float) -> None:
    if _MULTIPROCESS:
        timer.observe(seconds)
    else:
        _tally.observe(timer, seconds)

payments_total = Counter("nanomoni_payments_total", "Payments by outcome", ["mode", "outcome"])
payment_rejections_total = Counter(
    "nanomoni_payment_rejections_total", "Refused payments by error code", ["mode", "code"]
)
payment_duration_seconds = Histogram(
    "nanomoni_payment_duration_seconds", "Payment handler time", ["mode"], buckets=_FAST
)
settlements_total = Counter(
    "nanomoni_settlements_total", "Settlements by outcome", ["mode", "outcome"]
)
channels_opened_total = Counter("nanomoni_channels_opened_total", "Channels opened", ["mode"])
store_duration_seconds = Histogram(
    "nanomoni_store_duration_seconds", "Time of one store operation", ["op"], buckets=_FAST
)
connections_closed_total = Counter(
    "nanomoni_connections_closed_total",
    "Connections closed by the limits (header/body/unread_timeout, evicted, refused)",
    ["reason"],
)
worker_restarts_total = Counter("nanomoni_worker_restarts_total", "Dead workers replaced")
store_unavailable_total = Counter(
    "nanomoni_store_unavailable_total",
    "Requests answered 503 store_unavailable (store down or past its deadline)",
)
# Set by each issuer worker's finalization sweep; the largest live worker's value counts
# ("livemax": a dead worker's last value must not page forever).
channels_closing_overdue = Gauge(
    "nanomoni_channels_closing_overdue",
    "Channels still closing after their dispute deadline (finalization is not keeping up)",
    multiprocess_mode="livemax",
)
# The issuer's periodic audit (protocol.audit): runs that found a check violated.
audit_failures_total = Counter(
    "nanomoni_audit_failures_total",
    "Audit runs that found an invariant of the ledger violated, by check",
    ["check"],
)
# The operator's view of the ledger (GET /api/v1/issuer/stats), refreshed by an issuer
# task; with several workers the most recent refresh counts.
ledger_accounts = Gauge(
    "nanomoni_ledger_accounts", "Registered accounts", multiprocess_mode="mostrecent"
)
ledger_channels = Gauge(
    "nanomoni_ledger_channels", "Channels by state", ["state"], multiprocess_mode="mostrecent"
)
ledger_amounts = Gauge(
    "nanomoni_ledger_amount",
    "Money in the ledger: locked in channels, settled to vendors, refunded to clients, "
    "supply (grants + deposits)",
    ["kind"],
    multiprocess_mode="mostrecent",
)
ledger_receipts = Gauge(
    "nanomoni_ledger_receipts", "Receipts the issuer has issued", multiprocess_mode="mostrecent"
)

# The outcomes each service counts (issuer/app.py, vendor/app.py), declared up front.
SETTLEMENT_OUTCOMES = {
    "issuer": ("settled", "replay", "rejected", "error"),
    "vendor": ("settled", "rejected", "failed"),
}
PAYMENT_OUTCOMES = ("accepted", "replay", "rejected")

# Bound label children, looked up once: `.labels()` costs more than the increment.
_payment_counts: dict[tuple[str, str], Counter] = {}
_payment_times: dict[str, Histogram] = {}
_store_times: dict[str, Histogram] = {}


def declare(service: str, modes: Iterable[str]) -> None:
    """Export the series the alerts watch at 0 from the service's start: rate() and
    increase() only see an event in a series that existed before it, so without this the
    first failed settlement after a restart would never page."""
    if service == "issuer":
        channels_closing_overdue.set(0)
    for mode in modes:
        for outcome in SETTLEMENT_OUTCOMES.get(service, ()):
            settlements_total.labels(mode, outcome)
        if service == "issuer":
            channels_opened_total.labels(mode)
        if service == "vendor":
            for outcome in PAYMENT_OUTCOMES:
                _payment_counts[(mode, outcome)] = payments_total.labels(mode, outcome)
            _payment_times[mode] = payment_duration_seconds.labels(mode)


def _payment_counter(mode: str, outcome: str) -> Counter:
    counter = _payment_counts.get((mode, outcome))
    if counter is None:
        counter = _payment_counts[(mode, outcome)] = payments_total.labels(mode, outcome)
    return counter


def _payment_timer(mode: str) -> Histogram:
    timer = _payment_times.get(mode)
    if timer is None:
        timer = _payment_times[mode] = payment_duration_seconds.labels(mode)
    return timer


def payment(mode: str, outcome: str, seconds: float, code: str | None = None) -> None:
    counter, timer = _payment_counter(mode, outcome), _payment_timer(mode)
    if _MULTIPROCESS:
        counter.inc()
        timer.observe(seconds)
    else:  # one lock for both (a payment's own cost)
        _tally.observe(timer, seconds, counter)
    if code is not None:
        payment_rejections_total.labels(mode, code).inc()


def payments(counts: Mapping[tuple[str, str, str | None], int], seconds: float) -> None:
    """A batch's items, counted by (mode, outcome, rejection code); its handler time
    observed once per mode it carried (a batch costs one handler run, not one per item)."""
    for (mode, outcome, code), count in counts.items():
        mode, code = str(mode), None if code is None else str(code)  # plain text labels
        _inc(_payment_counter(mode, outcome), count)
        if code is not None:
            payment_rejections_total.labels(mode, code).inc(count)
    for mode in {str(mode) for mode, _, _ in counts}:
        _observe(_payment_timer(mode), seconds)


def settlement(mode: str, outcome: str) -> None:
    settlements_total.labels(mode, outcome).inc()


def channel_opened(mode: str) -> None:
    channels_opened_total.labels(mode).inc()


def closing_overdue(count: int) -> None:
    channels_closing_overdue.set(count)


def declare_audit(checks: Iterable[str]) -> None:
    """A zero series per audit check, so the first failure is seen by increase()."""
    for check in checks:
        audit_failures_total.labels(check)


def audit_failed(check: str) -> None:
    audit_failures_total.labels(check).inc()


def ledger(
    *,
    accounts: int,
    channels: Mapping[str, int],
    amounts: Mapping[str, int],
    receipts: int,
) -> None:
    ledger_accounts.set(accounts)
    for state, count in channels.items():
        ledger_channels.labels(state).set(count)
    for kind, amount in amounts.items():
        ledger_amounts.labels(kind).set(amount)
    ledger_receipts.set(receipts)


def store_time(op: str, seconds: float) -> None:
    timer = _store_times.get(op)
    if timer is None:
        timer = _store_times[op] = store_duration_seconds.labels(op)
    _observe(timer, seconds)


def store_unavailable() -> None:
    store_unavailable_total.inc()


@asynccontextmanager
async def timed_store(op: str) -> AsyncIterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        store_time(op, time.perf_counter() - started)


def render() -> bytes:
    """The text exposition, aggregated over all workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def connection_closed(reason: str) -> None:
    connections_closed_total.labels(reason).inc()


def worker_replaced() -> None:
    worker_restarts_total.inc()


def worker_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (counters and histograms stay summed)."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
