"""Payments are tallied in plain ints and moved into Prometheus when the registry is
read (nanomoni.metrics._Tally): what /metrics shows must be exactly what
observing every payment directly would show, at every read."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from nanomoni import metrics

NAMES = {
    "nanomoni_payment_duration_seconds": "reference_seconds",
    "nanomoni_payments_total": "reference_total",
}


def _samples(text: str, prefixes: tuple[str, ...]) -> dict[str, str]:
    """sample line (names mapped to the reference's) -> value, without *_created."""
    found = {}
    for line in text.splitlines():
        if line.startswith(prefixes) and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            for ours, theirs in NAMES.items():
                name = name.replace(ours, theirs)
            found[name] = value
    return found


def test_tallied_payments_read_as_if_observed_one_by_one() -> None:
    registry = CollectorRegistry()
    seconds = Histogram("reference_seconds", "", ["mode"], buckets=metrics._FAST, registry=registry)
    total = Counter("reference_total", "", ["mode", "outcome"], registry=registry)
    before = _samples(metrics.render().decode(), tuple(NAMES))
    rng = random.Random(12)
    # Every bound exactly (a value on a bound falls in that bucket), around them, beyond.
    values = [*metrics._FAST, 0.0, 1e-9, 2.0, *(rng.uniform(0, 1.2) for _ in range(300))]
    for round_ in range(3):  # reads between payments see all of them, and only once
        for n, value in enumerate(values):
            mode = ("payword", "signature")[n % 2]
            outcome = ("accepted", "replay")[n % 3 == 0]
            metrics.payment(mode, outcome, value)
            seconds.labels(mode).observe(value)
            total.labels(mode, outcome).inc()
        ours = _samples(metrics.render().decode(), tuple(NAMES))
        reference = _samples(generate_latest(registry).decode(), tuple(NAMES.values()))
        # Other tests of this process may have paid before: compare what this one added.
        added = {
            name: float(value) - float(before.get(name, "0")) for name, value in ours.items()
        }
        assert reference.keys() <= added.keys(), round_
        for name, value in reference.items():
            assert abs(added[name] - float(value)) <= 1e-9 * max(1.0, float(value)), name
        counts = [name for name in reference if "_sum{" not in name]
        wrong = {n: (added[n], reference[n]) for n in counts if added[n] != float(reference[n])}
        assert counts and not wrong, wrong


def test_tallied_store_times_read_as_if_observed_one_by_one() -> None:
    registry = CollectorRegistry()
    reference = Histogram("reference_store", "", ["op"], buckets=metrics._FAST, registry=registry)
    name = "nanomoni_store_duration_seconds"
    before = _samples(metrics.render().decode(), (name,))
    for value in (*metrics._FAST, 0.0, 3.0, 0.0007):
        metrics.store_time("tally_probe", value)
        reference.labels("tally_probe").observe(value)
    ours = {
        line.replace(name, "reference_store"): float(value) - float(before.get(line, "0"))
        for line, value in _samples(metrics.render().decode(), (name,)).items()
        if 'op="tally_probe"' in line and "_sum{" not in line
    }
    read = _samples(generate_latest(registry).decode(), ("reference_store",))
    theirs = {line: float(value) for line, value in read.items() if "_sum{" not in line}
    assert theirs and ours == theirs
