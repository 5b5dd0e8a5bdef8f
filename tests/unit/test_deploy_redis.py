"""The Redis commands of the compose files run on a real redis-server 7.0.

Each Redis service's command line is started here as it is written (only the
port, bind address and data directory changed), so a misspelt or unsupported
option fails the test. The cluster variant's one-shot init script is run
against three real cluster nodes and must form the cluster, and do nothing on
a second run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
# Three loopback addresses stand in for the three node containers, which all use one port.
NODE_ADDRESSES = {"redis-node-1": "127.0.0.11", "redis-node-2": "127.0.0.12",
                  "redis-node-3": "127.0.0.13"}


def compose_services(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((REPO / name).read_text())["services"]
    return services


def port_free_on_all(addresses: list[str]) -> int:
    """A TCP port (and its cluster bus port, +10000) free on every address."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
        if port > 55535:
            continue
        try:
            with ExitStack() as stack:
                for address in addresses:
                    for candidate in (port, port + 10000):
                        sock = stack.enter_context(socket.socket())
                        sock.bind((address, candidate))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def cli(address: str, port: int, *command: str) -> str:
    return subprocess.run(["redis-cli", "-h", address, "-p", str(port), *command],
                          capture_output=True, text=True, check=True, timeout=10).stdout


@contextmanager
def redis_server(args: list[str], address: str, port: int, data: Path) -> Iterator[None]:
    """redis-server with the compose arguments, pinned to a loopback address and a temp dir."""
    data.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["redis-server", *args, "--port", str(port), "--bind", address, "--dir", str(data),
         "--daemonize", "no", "--logfile", str(data / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                errors = process.stderr.read().decode() if process.stderr else ""
                log = (data / "redis.log").read_text() if (data / "redis.log").exists() else ""
                raise AssertionError(f"redis-server {args} exited: {errors}{log}")
            try:
                if cli(address, port, "ping").strip() == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def without_port(command: list[str]) -> list[str]:
    """The redis-server options of a compose command, minus the program and its --port."""
    assert command[0] == "redis-server"
    args = command[1:]
    if "--port" in args:
        at = args.index("--port")
        del args[at:at + 2]
    return args


@pytest.fixture(autouse=True)
def _redis_installed() -> None:
    assert shutil.which("redis-server") and shutil.which("redis-cli"), "install redis-server"


@pytest.mark.parametrize("name", ["issuer-redis", "vendor-redis"])
def test_service_redis_command_starts_with_every_write_fsynced(name: str, tmp_path: Path) -> None:
    args = without_port(compose_services("docker-compose.yml")[name]["command"])
    port = port_free_on_all(["127.0.0.1"])
    with redis_server(args, "127.0.0.1", port, tmp_path):
        assert cli("127.0.0.1", port, "config", "get", "appendonly").split() == [
            "appendonly", "yes"]
        assert cli("127.0.0.1", port, "config", "get", "appendfsync").split() == [
            "appendfsync", "always"]
        cli("127.0.0.1", port, "set", "probe", "1")
    assert list(tmp_path.rglob("*.aof")), "no append-only file written"


def test_cluster_init_job_forms_the_cluster_once(tmp_path: Path) -> None:
    services = compose_services("docker-compose.cluster.yml")
    port = port_free_on_all(list(NODE_ADDRESSES.values()))

    def local(text: str) -> str:
        # Container names and the shared port become this test's loopback addresses and port.
        for name, address in NODE_ADDRESSES.items():
            text = text.replace(name, address)
        return text.replace("7000", str(port))

    # Compose unescapes `$$` to `$` before the shell sees the script.
    script = local(services["redis-cluster-init"]["command"][0].replace("$$", "$"))
    assert services["redis-cluster-init"]["entrypoint"] == ["sh", "-ec"]
    # Inside compose getent resolves service names; here the names are already addresses.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "getent").write_text('#!/bin/sh\necho "$2 $2"\n')
    (shim / "getent").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}

    with ExitStack() as stack:
        for name, address in NODE_ADDRESSES.items():
            args = [local(arg) for arg in without_port(services[name]["command"])]
            # Containers each have their own address; nodes sharing this host's loopback
            # would otherwise see each other's gossip as coming from 127.0.0.1.
            args += ["--cluster-announce-ip", address]
            stack.enter_context(redis_server(args, address, port, tmp_path / name))
        first = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True,
                               timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        info = cli(NODE_ADDRESSES["redis-node-1"], port, "cluster", "info")
        assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
        assert "cluster_slots_assigned:16384" in info
        second = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 0 and "already formed" in second.stdout
