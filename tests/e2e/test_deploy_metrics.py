"""The dashboard and the alerts query what the running services export.

An issuer and a vendor run as deployed (Redis stores, several workers, so
/metrics is the aggregate over worker processes) on loopback ports. A client
opens a channel in every mode, pays, replays a payment, sends one that is
refused and closes the channel. Then every metric, label and label value the
Grafana dashboard and the Prometheus alert rules select is looked up in the
scraped /metrics of the service their `job` names, and the counts must match
the traffic. The container file's health check is run against both services.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import monitoring
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families
from redis_servers import redis_cluster, redis_server

from nanomoni.client.http import ApiError
from nanomoni.client.session import SyncClient
from nanomoni.client.wallet import Wallet
from nanomoni.launch import ServiceProcess, free_port, start_issuer, start_vendor
from nanomoni.protocol.model import Mode

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
WORKERS = 2
# `python -m nanomoni` would otherwise import the source tree when run from the
# repository instead of the installed package the suite tests.
SERVICE_ENV = {"PYTHONSAFEPATH": "1"}
PAID = 3  # accepted payments per channel
# Labels Prometheus attaches when scraping; the services do not export them.
SCRAPE_LABELS = {"job", "instance"}
SPEC_METRICS = {
    "nanomoni_payments_total", "nanomoni_payment_rejections_total",
    "nanomoni_payment_duration_seconds", "nanomoni_settlements_total",
    "nanomoni_channels_opened_total", "nanomoni_store_duration_seconds",
}
SELECTOR = re.compile(r"\b(nanomoni_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")

Sample = tuple[str, dict[str, str], float]


@dataclass
class Scraped:
    samples: dict[str, list[Sample]]  # by job name

    def of(self, job: str, name: str) -> list[Sample]:
        return [s for s in self.samples[job] if s[0] == name]

    def total(self, job: str, name: str, **labels: str) -> float:
        return sum(value for _, have, value in self.of(job, name)
                   if all(have.get(k) == v for k, v in labels.items()))


Deployed = tuple[Scraped, dict[str, ServiceProcess]]  # scrapes and the running services


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel target and every alert rule, but those over
    metrics no service emits yet (test_prometheus_loop.py reports those)."""
    return [(q.where, q.expr) for q in monitoring.queries() if not monitoring.pending_in(q.expr)]


def scrape(url: str) -> list[Sample]:
    reply = httpx.get(url + "/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(reply.text) for s in family.samples]


def drive_traffic(issuer_url: str, vendor_url: str) -> None:
    """In every mode: 3 accepted payments, one exact replay, one refused, then closure."""
    with SyncClient(issuer_url, vendor_url, Wallet.generate("p256")) as client:
        client.register()
        vendor = client.client.vendor
        for mode in Mode:
            channel = client.open_channel(mode, 100)
            for _ in range(PAID - 1):
                assert not channel.pay().replay
            # The last payment goes out twice as the same bytes: accepted, then a replay.
            inner = channel.channel
            last = inner.encode_payment(PAID)
            assert client.run(vendor.pay(inner.rules, inner.channel_id, last))[0] == 201
            assert client.run(vendor.pay(inner.rules, inner.channel_id, last))[0] == 200
            with pytest.raises(ApiError) as refused:
                client.run(vendor.pay(inner.rules, inner.channel_id, inner.encode_payment(1)))
            assert refused.value.raw_code == "non_monotonic"
            channel.close()
            assert channel.refresh().balance == PAID * inner.unit_value


@pytest.fixture(scope="module", params=["redis", "cluster"])
def deployed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """Both compose variants: the vendor on its own Redis, or on a Redis Cluster."""
    root = tmp_path_factory.mktemp(f"deploy-metrics-{request.param}")
    with ExitStack() as stack:
        issuer_redis = stack.enter_context(redis_server(aof=True))
        if request.param == "redis":
            vendor_store = stack.enter_context(redis_server(aof=True)).url
        else:
            vendor_store = stack.enter_context(redis_cluster()).url
        issuer = stack.enter_context(start_issuer(
            data_dir=root / "issuer", store=issuer_redis.url, admin_token="deploy-test",
            initial_balance=1_000_000, workers=WORKERS, env=SERVICE_ENV))
        vendor = stack.enter_context(start_vendor(
            data_dir=root / "vendor", issuer_url=issuer.url, store=vendor_store,
            workers=WORKERS, env=SERVICE_ENV))
        drive_traffic(issuer.url, vendor.url)
        scraped = Scraped({"issuer": scrape(issuer.url), "vendor": scrape(vendor.url)})
        yield scraped, {"issuer": issuer, "vendor": vendor}
        assert vendor.stop() == 0
        assert issuer.stop() == 0


def jobs_selected(matchers: list[tuple[str, str, str]]) -> list[str]:
    jobs = ["issuer", "vendor"]
    for label, op, value in matchers:
        if label == "job":
            assert op in ("=", "=~"), f"unexpected job matcher {op}"
            jobs = [j for j in jobs if (j == value if op == "=" else re.fullmatch(value, j))]
    assert jobs, "selects no job"
    return jobs


def test_dashboard_shows_every_spec_metric() -> None:
    names = {m.group(1) for _, expr in queries() for m in SELECTOR.finditer(expr)}
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}
    # Alerts may watch more than SPEC §9 names; the test below finds each one exported.
    assert SPEC_METRICS <= bases


@pytest.mark.parametrize("where,expr", queries(), ids=[w for w, _ in queries()])
def test_query_selects_what_the_services_export(
    deployed: Deployed, where: str, expr: str
) -> None:
    scraped = deployed[0]
    selected_labels: set[str] = set(SCRAPE_LABELS)
    selectors = list(SELECTOR.finditer(expr))
    if not selectors:
        # Only Prometheus's own scrape health may stand alone; its jobs must exist.
        up = re.fullmatch(r"(?:sum\()?up\{([^}]*)\}\)?\s*(?:==\s*0)?", expr.strip())
        assert up is not None, f"{where} queries no NanoMoni metric"
        assert jobs_selected(MATCHER.findall(up.group(1))) == ["issuer", "vendor"]
        return
    for selector in selectors:
        name = selector.group(1)
        matchers = MATCHER.findall(selector.group(2) or "")
        jobs = jobs_selected(matchers)
        samples = [s for job in jobs for s in scraped.of(job, name)]
        assert samples, f"{where}: no {name} exported by {jobs}"
        for label, op, value in matchers:
            if label in SCRAPE_LABELS:
                continue
            assert any(label in have for _, have, _ in samples), f"{where}: {name} has no {label}"
            if op == "=":
                assert any(have.get(label) == value for _, have, _ in samples), (
                    f"{where}: no {name} sample with {label}={value!r}")
        selected_labels |= {label for _, have, _ in samples for label in have}
    for grouping in GROUPING.findall(expr):
        for label in (part.strip() for part in grouping.split(",")):
            assert label in selected_labels, f"{where}: groups by unknown label {label!r}"


def test_counters_the_dashboard_sums_match_the_traffic(
    deployed: Deployed,
) -> None:
    # Sums over all workers: each worker saw only part of the traffic.
    scraped = deployed[0]
    for mode in Mode:
        m = mode.value
        payments = "nanomoni_payments_total"
        assert scraped.total("vendor", payments, mode=m, outcome="accepted") == PAID
        assert scraped.total("vendor", payments, mode=m, outcome="replay") == 1
        assert scraped.total("vendor", payments, mode=m, outcome="rejected") == 1
        assert scraped.total("vendor", "nanomoni_payment_rejections_total",
                             mode=m, code="non_monotonic") == 1
        assert scraped.total("vendor", "nanomoni_payment_duration_seconds_count",
                             mode=m) == PAID + 2
        assert scraped.total("issuer", "nanomoni_channels_opened_total", mode=m) == 1
        for job in ("issuer", "vendor"):
            assert scraped.total(job, "nanomoni_settlements_total",
                                 mode=m, outcome="settled") == 1
    for job in ("issuer", "vendor"):
        assert scraped.total(job, "nanomoni_store_duration_seconds_count") > 0


@pytest.mark.parametrize("service", ["issuer", "vendor"])
def test_container_health_check_passes_on_a_running_service(
    deployed: Deployed, service: str
) -> None:
    running = deployed[1][service]
    code = health_check_code(service)
    variable = f"NANOMONI_{service.upper()}_PORT"
    port = str(httpx.URL(running.url).port)
    assert run_python(code, {variable: port}).returncode == 0
    # And it fails where nothing answers, so a dead service turns unhealthy.
    assert run_python(code, {variable: str(free_port())}).returncode != 0


def health_check_code(stage: str) -> str:
    dockerfile = (REPO / "services" / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(rf"FROM runtime AS {stage}\n(?:.*\n)*?HEALTHCHECK .*?CMD (\[.*\])",
                      dockerfile)
    assert found is not None, stage
    argv = json.loads(found.group(1))
    assert argv[:2] == ["python", "-c"]
    code: str = argv[2]
    return code


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=30)


def test_bench_job_command_runs_against_deployed_services(tmp_path: Path) -> None:
    """The compose `bench` job's command line, against an issuer that grants nothing
    (as in production), so the run must fund itself through the admin token."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    token = "bench-deploy-test"
    with ExitStack() as stack:
        issuer = stack.enter_context(start_issuer(
            data_dir=tmp_path / "issuer", admin_token=token, initial_balance=0, env=SERVICE_ENV))
        vendor = stack.enter_context(start_vendor(
            data_dir=tmp_path / "vendor", issuer_url=issuer.url, env=SERVICE_ENV))
        # Compose's interpolation, with a short run and this test's ports and folder.
        given = {"NANOMONI_ADMIN_TOKEN": token, "NANOMONI_BENCH_PAYMENTS": "40"}
        argv = [re.sub(r"\$\{([A-Z0-9_]+)[^}]*\}", lambda m: given[m.group(1)], arg)
                for arg in services["bench"]["command"]]
        argv = [arg.replace("http://127.0.0.1:8001", issuer.url)
                .replace("http://127.0.0.1:8000", vendor.url) for arg in argv]
        out = tmp_path / "results"
        argv = [f"--out={out}" if arg.startswith("--out=") else arg for arg in argv]
        done = subprocess.run([sys.executable, "-m", "nanomoni", *argv],
                              env={**os.environ, **SERVICE_ENV}, capture_output=True,
                              text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert vendor.stop() == 0
        assert issuer.stop() == 0
    result = json.loads((out / "result.json").read_text())
    assert {run["mode"] for run in result["runs"]} == {mode.value for mode in Mode}
    for run in result["runs"]:
        assert run["accepted"] == 40 and not run["errors"]
        assert run["settled_exact"] and run["settled_total"] == run["owed_total"] > 0
    assert list(out.glob("*.png"))
