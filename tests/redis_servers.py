"""Real redis-server processes for tests, on free 127.0.0.1 ports in temp dirs.

    with redis_server(aof=True) as server:      # standalone; server.url, server.restart()
        with server.paused():                    # SIGSTOP ... SIGCONT
            ...
    with redis_cluster() as cluster:             # 3 masters; cluster.url
        ...

Both stop every process they started. Importable by any test (pytest's
`pythonpath` includes tests/): `from redis_servers import redis_server`.
As session fixtures (import them into a test module or conftest):
`standalone_redis` and `cluster_redis`; call `.flush()` for an empty store.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port(bus_offset: int | None = None) -> int:
    """A free loopback port; with bus_offset, port + bus_offset must be free too (cluster bus)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if bus_offset is None:
            return port
        if port + bus_offset < 65536:
            try:
                with socket.socket() as bus:
                    bus.bind((HOST, port + bus_offset))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair found")


def command(port: int, *args: str) -> str:
    """One command over a raw socket (inline protocol), the reply as text."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"$"):  # bulk string: read until the announced length arrived
            length = int(data[1 : data.index(b"\r\n")])
            header = data.index(b"\r\n") + 2
            while len(data) < header + length + 2:
                data += sock.recv(65536)
            return data[header : header + length].decode()
        return data.decode().strip()


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {process.returncode}")
        try:
            # While loading the AOF the server answers -LOADING: wait for PONG.
            if command(port, "PING") == "+PONG":
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not become ready")


class RedisServer:
    """One redis-server process; `restart()` starts it again on the same port and dir."""

    def __init__(self, directory: Path, *, aof: bool = False, cluster: bool = False) -> None:
        self.directory = directory
        self.port = free_port(10000 if cluster else None)
        self.aof = aof
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, *options: str, wait: bool = True) -> None:
        """Start the server with extra `options` (e.g. "--key-load-delay", "50"); with
        wait=False return at once (it may still be loading its data)."""
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "always",
        ]  # fmt: skip
        args += options
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            _wait_ready(self.port, self.process)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no final fsync (what a crash looks like)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP for the duration: the port still accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        command(self.port, "FLUSHALL")

    def info(self, section: str) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in command(self.port, "INFO", section).splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name] = value
        return fields


@contextmanager
def redis_server(*, aof: bool = False) -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="nanomoni-redis-"))
    server = RedisServer(directory, aof=aof)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class RedisCluster:
    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def owner(self, slot: int) -> RedisServer:
        """The master that serves `slot`, by its own account (CLUSTER NODES, "myself")."""
        for node in self.nodes:
            mine = next(
                line.split()
                for line in command(node.port, "CLUSTER", "NODES").splitlines()
                if "myself" in line.split()[2]
            )
            for served in mine[8:]:
                if served.startswith("["):  # a slot being migrated, not a served range
                    continue
                first, _, last = served.partition("-")
                if int(first) <= slot <= int(last or first):
                    return node
        raise LookupError(f"no node serves slot {slot}")

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        while not all(
            "cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in self.nodes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    directory = Path(tempfile.mkdtemp(prefix="nanomoni-cluster-"))
    nodes: list[RedisServer] = []
    try:
        for n in range(masters):
            node_dir = directory / f"node{n}"
            node_dir.mkdir()
            node = RedisServer(node_dir, cluster=True)
            nodes.append(node)
            node.start()
        create = [
            shutil.which("redis-cli") or "redis-cli",
            "--cluster", "create",
            *(f"{HOST}:{node.port}" for node in nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        subprocess.run(
            create,
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster = RedisCluster(nodes)
        cluster.wait_ok()
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def standalone_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_redis() -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster
