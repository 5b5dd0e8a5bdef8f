"""The monitoring files under services/ as the tests read them: every PromQL query the
Grafana dashboards and the Prometheus alert rules run, made evaluable outside Grafana.

    queries()                  # every dashboard target and every alert rule, as written
    grafana_expr(expr, 1.0)    # Grafana's $__interval etc. replaced for a 1 s scrape
    split_threshold(expr)      # 'a / b > 0.05' -> ('a / b', '>', '0.05')
    loopback_config({...})     # the compose prometheus.yml, scraping loopback ports
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "services" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "services" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"

# Metrics that alert rules already select but no service emits yet, and who adds them.
# Their expressions must still evaluate without error, and come back empty; the live test
# (tests/e2e/test_prometheus_loop.py) fails as soon as a service emits one of them, until it
# is deleted here, and from then on its expressions must be non-empty under that test's load.
PENDING_METRICS: dict[str, str] = {}

METRIC = re.compile(r"\b(nanomoni_[a-z0-9_]+)")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = re.compile(r"(?<![\w])(and|or|unless)(?![\w])")


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'Title' A" or "alert Name"
    expr: str


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def dashboard_queries() -> list[Query]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                where = f"panel {panel['title']!r} {target.get('refId', '')}".strip()
                assert target.get("expr"), f"{path.name}: {where} has no PromQL expr"
                found.append(Query(where, target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def queries() -> list[Query]:
    """Every dashboard target and every alert expression, as written in the files."""
    return dashboard_queries() + alert_queries()


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def pending_in(expr: str) -> set[str]:
    """The not-yet-emitted metrics an expression selects (bucket/sum/count included)."""
    return {name for name in metric_names(expr)
            if re.sub(r"_(bucket|sum|count)$", "", name) in PENDING_METRICS}


# --- Grafana's variables -------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def grafana_expr(expr: str, scrape_interval: float, range_seconds: float = 1800.0) -> str:
    """The query Grafana sends for a panel at its finest resolution: $__interval is the
    data source's scrape interval (Grafana never goes below it) and $__rate_interval is
    max($__interval + scrape interval, 4 × scrape interval), as Grafana defines it."""
    interval = scrape_interval
    values = {
        "__interval": _duration(interval),
        "__interval_ms": str(round(interval * 1000)),
        "__rate_interval": _duration(max(interval + scrape_interval, 4 * scrape_interval)),
        "__range": _duration(range_seconds),
        "__range_s": str(round(range_seconds)),
        "__range_ms": str(round(range_seconds * 1000)),
    }

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


# --- alert thresholds ----------------------------------------------------------------------


def _top_level(expr: str) -> list[tuple[int, str]]:
    """(position, text) of the parts of expr outside brackets, strings and comments."""
    parts: list[tuple[int, str]] = []
    depth, i, start = 0, 0, 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = i + 1
            while expr[end] != char:
                end += 2 if expr[end] == "\\" and char != "`" else 1
            if depth == 0:
                parts.append((start, expr[start:i]))
            i = start = end + 1
            continue
        if char == "#":
            end = expr.find("\n", i)
            end = len(expr) if end < 0 else end
            if depth == 0:
                parts.append((start, expr[start:i]))
            i = start = end
            continue
        if char in "([{":
            if depth == 0:
                parts.append((start, expr[start:i]))
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                start = i + 1
        i += 1
    if depth == 0:
        parts.append((start, expr[start:]))
    return parts


def split_threshold(expr: str) -> tuple[str, str, str]:
    """(left-hand side, operator, threshold) of an alert expression `<query> <op> <rhs>`.

    Comparisons bind looser than arithmetic, so the one comparison outside all brackets
    splits the expression; a top-level `and`/`or`/`unless` or a second comparison has no
    single left-hand side and is refused."""
    found: list[tuple[int, str]] = []
    for start, text in _top_level(expr):
        if SET_OPERATORS.search(text):
            raise ValueError(f"set operator at the top level of {expr!r}")
        i = 0
        while i < len(text):
            op = next((c for c in COMPARISONS if text.startswith(c, i)), None)
            if op is not None:
                found.append((start + i, op))
                i += len(op)
            else:
                i += 1
    if len(found) != 1:
        raise ValueError(f"expected one top-level comparison in {expr!r}, found {len(found)}")
    (at, op), = found
    rhs = expr[at + len(op):].strip()
    rhs = re.sub(r"^bool\b", "", rhs).strip()
    return expr[:at].strip(), op, rhs


# --- the scrape configuration --------------------------------------------------------------


def loopback_config(targets: dict[str, str], scrape_interval: str) -> dict[str, Any]:
    """The compose prometheus.yml with its container hosts replaced by `targets`
    (job name -> host:port), its rule files by the repository's and a shorter interval."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    timing = {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
              "evaluation_interval": scrape_interval}
    config["global"] = {**config.get("global", {}), **timing}
    # Compose mounts services/prometheus at the directory the rule files name.
    rule_files = [PROMETHEUS_DIR / Path(name).name for name in config["rule_files"]]
    assert all(path.is_file() for path in rule_files), rule_files
    config["rule_files"] = [str(path) for path in rule_files]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(targets), f"scrape jobs {jobs} != {set(targets)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config
