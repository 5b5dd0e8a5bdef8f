"""Prometheus in the loop: the alert rules and the Grafana dashboard, run by a real Prometheus.

promtool checks the rule file and the scrape configuration (the compose file as it is, and
its loopback variant with the rule files included) and runs the rules' unit tests.

Live: an issuer and a vendor run as deployed (Redis stores, two workers each, so what is
scraped is /metrics aggregated over worker processes) and a Prometheus scrapes them every
second with the repository's rules loaded. The test opens, pays, replays, refuses and
settles channels in every mode, has a closure refused by the vendor and a settlement refused
by the issuer. Once Prometheus holds what the services export, every dashboard query (with
Grafana's variables filled in) and the left-hand side of every alert expression is evaluated
through /api/v1/query: none may fail and each must return series, except those over metrics
no service emits yet (monitoring.PENDING_METRICS), which are listed as pending.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from monitoring import (
    ALERT_TESTS,
    ALERTS,
    DATASOURCES,
    PENDING_METRICS,
    PROMETHEUS_CONFIG,
    Query,
    alert_queries,
    alert_rules,
    dashboard_queries,
    grafana_expr,
    loopback_config,
    pending_in,
    split_threshold,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import PrometheusServer, QueryError, prometheus_server, promtool
from redis_servers import RedisServer, redis_server

from nanomoni import crypto, metrics
from nanomoni.launch import ServiceProcess, start_issuer, start_vendor
from nanomoni.protocol.audit import ISSUER_CHECKS
from nanomoni.protocol.model import Mode

pytestmark = pytest.mark.redis

SCRAPE_SECONDS = 1.0
WORKERS = 2
SERVICE_ENV = {
    "PYTHONSAFEPATH": "1",  # never import the source tree instead of the wheel
    "NANOMONI_VENDOR_STORE_TIMEOUT": "0.5",  # the store deadline store_outage() runs into
    # The watch polls the issuer at start-up only: every count then comes from the load.
    "NANOMONI_VENDOR_WATCH_INTERVAL": "3600",
    # The ledger gauges and the audit follow the load within the test's waits.
    "NANOMONI_ISSUER_STATS_INTERVAL": "0.5",
    "NANOMONI_ISSUER_AUDIT_INTERVAL": "0.5",
}
MODES = [mode.value for mode in Mode]
Stack = Any  # conftest's Stack
WAIT_SECONDS = 30.0


# --- promtool ------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    # The check above can fail: a rule with a PromQL typo does not pass.
    groups = yaml.safe_load(ALERTS.read_text())
    groups["groups"][0]["rules"][0]["expr"] = "sum by (job (up)"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(groups))
    done = promtool("check", "rules", str(broken))
    assert done.returncode != 0 and "parse error" in done.stdout + done.stderr


def test_promtool_accepts_the_compose_scrape_config_as_it_is() -> None:
    # The rule files it names exist only inside the container: syntax only.
    done = promtool("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_loopback_scrape_config_with_its_rules(tmp_path: Path) -> None:
    config = loopback_config({"issuer": "127.0.0.1:8001", "vendor": "127.0.0.1:8000"}, "1s")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = promtool("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_every_alert_fires_in_the_rules_unit_tests() -> None:
    """alerts_test.yml feeds each alert series that must fire it (and some that must not)."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    assert tested == {rule["alert"] for rule in alert_rules()}
    done = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_grafana_assumes_the_scrape_interval_prometheus_uses() -> None:
    # $__rate_interval is derived from the data source's timeInterval.
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape


# --- the PromQL helpers --------------------------------------------------------------------


@pytest.mark.parametrize("expr,split", [
    ('up{job=~"a|b"} == 0', ('up{job=~"a|b"}', "==", "0")),
    ("sum(rate(x[5m])) / sum(rate(y[5m])) > 0.05", ("sum(rate(x[5m])) / sum(rate(y[5m]))", ">",
                                                    "0.05")),
    ('x{a!="b",c=~">|<"} >= bool 3', ('x{a!="b",c=~">|<"}', ">=", "3")),
    ("histogram_quantile(0.99, sum by (le) (x > 1)) <= 2  # p99",
     ("histogram_quantile(0.99, sum by (le) (x > 1))", "<=", "2  # p99")),
])
def test_split_threshold(expr: str, split: tuple[str, str, str]) -> None:
    assert split_threshold(expr) == split


@pytest.mark.parametrize("expr", ["x > 1 and y", "x > 1 > 2", "sum(x)"])
def test_split_threshold_refuses_what_has_no_single_left_side(expr: str) -> None:
    with pytest.raises(ValueError):
        split_threshold(expr)


def test_grafana_variables_are_filled_in_as_grafana_does() -> None:
    expr = "rate(x[$__rate_interval]) + rate(y[${__interval}]) + z[$__range]"
    assert grafana_expr(expr, 1.0, 600) == "rate(x[4000ms]) + rate(y[1000ms]) + z[600000ms]"
    assert grafana_expr("rate(x[$__rate_interval])", 5.0) == "rate(x[20000ms])"
    with pytest.raises(ValueError, match="instance"):
        grafana_expr('x{instance="$instance"}', 1.0)


# --- live: real services, real load, real Prometheus ---------------------------------------


Sample = tuple[str, dict[str, str], float]


class PendingMetric(UserWarning):
    """An alert or panel over a metric no service emits yet (monitoring.PENDING_METRICS)."""


@dataclass
class Loop:
    prometheus: PrometheusServer
    exported: dict[str, list[Sample]]  # job -> its /metrics after the load
    seconds: float  # wall time of the set-up


def scrape(url: str) -> list[Sample]:
    reply = httpx.get(url + "/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples]


def counter_totals(url: str) -> dict[str, float]:
    """Per counter and histogram count: the sum over its series, as /metrics has it now."""
    totals: dict[str, float] = {}
    for name, _, value in scrape(url):
        if name.startswith("nanomoni_") and name.endswith(("_total", "_count")):
            totals[name] = totals.get(name, 0.0) + value
    return totals


# Only a vendor that counts its 503s can be held to them (monitoring.PENDING_METRICS).
STORE_OUTAGE = "nanomoni_store_unavailable_total" not in PENDING_METRICS


def apply_load(net: Stack, vendor_key: crypto.SigningKey, vendor_redis: RedisServer) -> None:
    """Traffic in every mode, with every outcome the dashboard and the alerts count."""
    client = net.party()
    net.register(client)
    for mode in MODES:
        channel = net.open(mode, client, amount=640, unit=10, max_index=64)
        for index in (1, 2, 3):
            assert net.pay(channel, index).status_code == 201
        assert net.pay(channel, 3).status_code == 200  # the same payment again: a replay
        net.expect_error(net.pay(channel, 2), 400, "non_monotonic")
        assert net.close_channel(channel).status_code == 204
    # A closure the vendor refuses: nothing was ever paid on the channel.
    empty = net.open("signature", client, amount=100)
    net.expect_error(net.close_channel(empty), 400, "no_payments")
    # A settlement the issuer refuses: someone holding the vendor's key settled the
    # channel at the issuer with an earlier proof (repeated: a replay), so the vendor's
    # own closure fails (SPEC §4.5: a different proof on a closed channel).
    settled = net.open("payword", client, amount=640, unit=10, max_index=64)
    assert net.pay(settled, 4).status_code == 201
    earlier = settled.payword_settlement(vendor_key, net.vendor_pk, 3)
    path = f"/channels/payword/{settled.channel_id}/settlements"
    assert net.issuer.post(path, json=earlier).status_code == 200
    assert net.issuer.post(path, json=earlier).status_code == 200
    net.expect_error(net.close_channel(settled), 502, "settlement_failed")
    assert net.read(settled)["balance"] == 30
    if STORE_OUTAGE:
        store_outage(net, net.open("signature", client, amount=100), vendor_redis)


def store_outage(net: Stack, channel: Any, vendor_redis: RedisServer) -> None:
    """The vendor's Redis stops answering (SIGSTOP): a payment is refused with 503
    store_unavailable at the store deadline; once Redis answers again it goes through."""
    assert vendor_redis.process is not None
    vendor_redis.process.send_signal(signal.SIGSTOP)
    try:
        refused = net.pay(channel, 1)
    finally:
        vendor_redis.process.send_signal(signal.SIGCONT)
    net.expect_error(refused, 503, "store_unavailable")
    assert refused.headers["retry-after"]
    deadline = time.monotonic() + WAIT_SECONDS
    while (reply := net.pay(channel, 1)).status_code == 503:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.2)
    assert reply.status_code == 201, reply.text


def scraped_since(prometheus: PrometheusServer, since: float) -> bool:
    """Whether Prometheus has scraped both services successfully after `since` (unix time)."""
    targets = prometheus.targets()
    return {target["labels"]["job"] for target in targets} == {"issuer", "vendor"} and all(
        target["health"] == "up" and _seconds(target["lastScrape"]) > since
        for target in targets)


def wait_for_first_scrape(prometheus: PrometheusServer) -> None:
    """Until Prometheus has scraped both services once: it runs before the traffic."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not scraped_since(prometheus, 0.0):
        assert time.monotonic() < deadline, prometheus.targets()
        time.sleep(0.1)


def wait_until_scraped(prometheus: PrometheusServer, services: dict[str, str]) -> None:
    """Until Prometheus holds every counter total the services export now, then one more
    scrape of each, so every series has at least two samples for rate()."""
    deadline = time.monotonic() + WAIT_SECONDS
    expected = {job: counter_totals(url) for job, url in services.items()}
    while True:
        held: dict[str, dict[str, float]] = {job: {} for job in services}
        for sample in prometheus.query(
            'sum by (job, __name__) ({__name__=~"nanomoni_.+_(total|count)"})'
        ):
            held[sample["metric"]["job"]][sample["metric"]["__name__"]] = float(
                sample["value"][1]
            )
        if held == expected:
            break
        assert time.monotonic() < deadline, f"Prometheus holds {held}, services export {expected}"
        time.sleep(0.2)
    matched = time.time()
    while not scraped_since(prometheus, matched):
        assert time.monotonic() < deadline, prometheus.targets()
        time.sleep(0.2)


def _seconds(rfc3339: str) -> float:
    # Prometheus writes nanoseconds and "Z"; fromisoformat takes microseconds.
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def host_port(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, stack_factory: Any) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("prometheus-loop")
    started = time.monotonic()
    with ExitStack() as stack:
        issuer_redis = stack.enter_context(redis_server(aof=True))
        vendor_redis = stack.enter_context(redis_server(aof=True))
        issuer: ServiceProcess = stack.enter_context(start_issuer(
            data_dir=root / "issuer", store=issuer_redis.url, admin_token="loop-test",
            initial_balance=1_000_000, workers=WORKERS, env=SERVICE_ENV))
        vendor: ServiceProcess = stack.enter_context(start_vendor(
            data_dir=root / "vendor", issuer_url=issuer.url, store=vendor_redis.url,
            workers=WORKERS, env=SERVICE_ENV))
        config = loopback_config(
            {"issuer": host_port(issuer.url), "vendor": host_port(vendor.url)},
            f"{SCRAPE_SECONDS:g}s",
        )
        prometheus = stack.enter_context(prometheus_server(config))
        net = stack_factory(issuer, vendor)
        stack.callback(net.close)
        key = crypto.SigningKey.from_pem((root / "vendor" / "vendor-key.pem").read_bytes())
        wait_for_first_scrape(prometheus)
        apply_load(net, key, vendor_redis)
        services = {"issuer": issuer.url, "vendor": vendor.url}
        wait_until_scraped(prometheus, services)
        exported = {job: scrape(url) for job, url in services.items()}
        yield Loop(prometheus, exported, time.monotonic() - started)
        assert prometheus.stop() == 0, prometheus.log
        assert vendor.stop() == 0
        assert issuer.stop() == 0


def evaluated_queries() -> list[Query]:
    """What the live test runs: dashboard targets with Grafana's variables filled in, and
    the left-hand side of every alert's threshold comparison."""
    panels = [Query(q.where, grafana_expr(q.expr, SCRAPE_SECONDS)) for q in dashboard_queries()]
    alerts = [Query(q.where, split_threshold(q.expr)[0]) for q in alert_queries()]
    return panels + alerts


def test_every_dashboard_and_alert_query_returns_series(loop: Loop) -> None:
    problems, pending, lines = [], [], []
    queries = evaluated_queries()
    for query in queries:
        try:
            result = loop.prometheus.query(query.expr)
        except QueryError as exc:
            problems.append(f"{query.where}: {exc}\n    {query.expr}")
            continue
        waiting = pending_in(query.expr)
        if waiting:
            # Shown in every run's warnings summary until a service emits the metric.
            note = (f"{query.where} evaluates, but stays untested under load until a service "
                    f"emits {', '.join(sorted(waiting))}")
            warnings.warn(PendingMetric(note), stacklevel=1)
            pending.append(f"PENDING {note} ({len(result)} series)")
        elif not result:
            problems.append(f"{query.where}: no series\n    {query.expr}")
        else:
            values = ", ".join(sorted({s["value"][1] for s in result})[:4])
            lines.append(f"ok {query.where}: {len(result)} series ({values})")
    print("\n".join(["", *lines, *pending]))
    print(f"evaluated {len(queries)} expressions ({len(dashboard_queries())} dashboard "
          f"targets, {len(alert_queries())} alert expressions): {len(lines)} with series, "
          f"{len(pending)} pending, {len(problems)} failed; set-up {loop.seconds:.1f} s")
    assert not problems, "\n".join(problems)


def test_pending_metrics_are_still_not_emitted(loop: Loop) -> None:
    """A pending metric a service now emits must leave the pending list, so that its
    expressions are held to returning series under load (with load that produces it)."""
    used = set().union(*(pending_in(q.expr) for q in evaluated_queries()))
    assert used == set(PENDING_METRICS), "a pending metric no alert or panel uses"
    for job, samples in loop.exported.items():
        emitted = {name for name, _, _ in samples} & PENDING_METRICS.keys()
        assert not emitted, (
            f"{job} emits {emitted} now: delete it from PENDING_METRICS in tests/monitoring.py "
            "and see that apply_load() causes it")


def _rules_by_name(loop: Loop) -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for group in loop.prometheus.rules() for rule in group["rules"]}


def test_alert_rules_load_and_evaluate_healthy(loop: Loop) -> None:
    names = {rule["alert"] for rule in alert_rules()}
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        rules = _rules_by_name(loop)
        assert set(rules) == names
        unhealthy = {n: (r["health"], r.get("lastError")) for n, r in rules.items()
                     if r["health"] != "ok"}
        if not unhealthy:
            break
        assert time.monotonic() < deadline, unhealthy
        time.sleep(0.2)
    assert all(rule["type"] == "alerting" and not rule.get("lastError")
               for rule in rules.values())


def test_alerts_catch_the_trouble_the_load_caused(loop: Loop) -> None:
    """The refused closures and payments put the money alerts into pending or firing."""
    expected = {
        # The vendor's closure failed: the issuer refused it.
        "NanoMoniSettlementsFailing": ({"job": "vendor", "mode": "payword"}, "firing"),
        "NanoMoniSettlementsRefused": ({"mode": "payword"}, "firing"),
        # One payment in five refused in every mode; `for: 10m` keeps it pending.
        "NanoMoniPaymentRejectionsHigh": ({"mode": "signature"}, "pending"),
    }
    if STORE_OUTAGE:  # one refused payment; `for: 2m` keeps it pending
        expected["NanoMoniStoreUnavailable"] = ({"job": "vendor"}, "pending")
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        rules = _rules_by_name(loop)
        missing = {}
        for name, (labels, state) in expected.items():
            alerts = rules[name]["alerts"]
            if not any(a["state"] == state and labels.items() <= a["labels"].items()
                       for a in alerts):
                missing[name] = alerts
        if not missing:
            break
        assert time.monotonic() < deadline, missing
        time.sleep(0.2)
    assert rules["NanoMoniServiceDown"]["alerts"] == []


def test_the_outcomes_alerts_watch_are_exported_before_they_happen(loop: Loop) -> None:
    """metrics.declare() lists each service's outcomes; an outcome a service counts that it
    does not declare would start at its first event, which rate() and increase() miss."""
    for job, samples in loop.exported.items():
        outcomes = {labels["outcome"] for name, labels, _ in samples
                    if name == "nanomoni_settlements_total"}
        assert outcomes == set(metrics.SETTLEMENT_OUTCOMES[job]), job
    payments = {labels["outcome"] for name, labels, _ in loop.exported["vendor"]
                if name == "nanomoni_payments_total"}
    assert payments == set(metrics.PAYMENT_OUTCOMES)


def test_the_issuers_audit_ran_under_the_load_and_found_the_books_balanced(loop: Loop) -> None:
    """Both issuer workers audit the ledger every 0.5 s while the load runs: every check's
    counter is exported and stays 0, and the ledger gauges show the load's channels."""
    issuer = loop.exported["issuer"]
    failures = {labels["check"]: value for name, labels, value in issuer
                if name == "nanomoni_audit_failures_total"}
    assert set(failures) == set(ISSUER_CHECKS) and set(failures.values()) == {0.0}
    deadline = time.monotonic() + WAIT_SECONDS
    while True:  # the gauges as Prometheus holds them, once a refresh saw the load
        closed = loop.prometheus.query('max(nanomoni_ledger_channels{state="closed"})')
        if closed and float(closed[0]["value"][1]) >= len(MODES) + 1:
            break
        assert time.monotonic() < deadline, closed
        time.sleep(0.2)
    locked = loop.prometheus.query('max(nanomoni_ledger_amount{kind="locked"})')
    assert float(locked[0]["value"][1]) > 0
