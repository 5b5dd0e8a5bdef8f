"""A real Prometheus server for tests, on a free 127.0.0.1 port with its own data dir.

    with prometheus_server(config) as prometheus:   # config: the prometheus.yml as a dict
        prometheus.query('up{job="vendor"}')          # instant query: the result vector
        prometheus.rules()                            # /api/v1/rules groups

The binaries come from Debian's `prometheus` package (`make system-deps`
installs it); a missing binary fails the test with that hint, never skips it.
The server is stopped and its directory removed on exit.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from redis_servers import HOST, free_port

START_TIMEOUT = 20.0


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; fails the calling test if it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"`{name}` is not on PATH: install Debian's `prometheus` package "
            "(`make system-deps` does)",
            pytrace=False,
        )
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


class QueryError(Exception):
    """Prometheus answered a query with an error (bad PromQL, evaluation failure)."""


class PrometheusServer:
    def __init__(self, directory: Path, config_file: Path) -> None:
        self.directory = directory
        self.config_file = config_file
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=10)

    @property
    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    def start(self) -> None:
        args = [
            binary("prometheus"),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            "--storage.tsdb.retention.time=10m",
            f"--web.listen-address={HOST}:{self.port}",
            "--log.level=warn",
        ]
        with (self.directory / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready:\n{self.log}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        self.http.close()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def _get(self, path: str, **params: str) -> Any:
        reply = self.http.get(path, params=params)
        body = reply.json()
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result: the samples of a vector (a scalar as one sample)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self._get("/query", **params)
        result: list[dict[str, Any]]
        if data["resultType"] in ("scalar", "string"):
            result = [{"metric": {}, "value": data["result"]}]
        else:
            result = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one sample (None when it yields none)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} gave {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/targets")["activeTargets"]
        return active


@contextmanager
def prometheus_server(config: dict[str, Any]) -> Iterator[PrometheusServer]:
    directory = Path(tempfile.mkdtemp(prefix="nanomoni-prometheus-"))
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    server = PrometheusServer(directory, config_file)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
