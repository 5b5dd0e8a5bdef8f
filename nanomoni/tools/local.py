"""Services the demo and the load generator start for themselves on loopback.

Everything started here is stopped when the context exits, also on errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import nanomoni
from nanomoni import launch

STORES = ("embedded", "redis")


def cli_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run this same nanomoni's command line (installed
    or from a source tree) in a subprocess, whatever its working directory."""
    root = str(Path(nanomoni.__file__).resolve().parent.parent)
    # -P: a source tree in the working directory must not shadow that package.
    return [sys.executable, "-P", "-m", "nanomoni", *args], {**os.environ, "PYTHONPATH": root}


@dataclass(frozen=True)
class LocalServices:
    issuer_url: str
    vendor_url: str
    issuer_pid: int
    vendor_pid: int
    redis_pid: int | None
    store: str
    vendor: launch.ServiceProcess | None = None  # to take the vendor offline (demo)


class RedisServer:
    """A private redis-server on a free loopback port, without persistence."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = launch.free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _wait_ready(self, timeout: float = 10.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not become ready")

    def stop(self) -> None:
        launch.stop_process(self.process)


@contextmanager
def local_services(
    store: str = "embedded",
    *,
    workers: int = 1,
    issuer_flags: Sequence[str] = (),
    vendor_flags: Sequence[str] = (),
) -> Iterator[LocalServices]:
    """An issuer and a vendor (and redis-server for store="redis") in a temp dir; the
    flags are added to each service's command line."""
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}")
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nanomoni-")))
        redis_pid: int | None = None
        if store == "redis":
            redis = RedisServer(root)
            stack.callback(redis.stop)
            redis_pid = redis.pid
            issuer_store, vendor_store = redis.url(0), redis.url(1)
        else:
            issuer_store = f"sqlite:{root / 'issuer.sqlite'}"
            vendor_store = f"sqlite:{root / 'vendor.sqlite'}"
        issuer = stack.enter_context(
            launch.start_issuer(
                data_dir=root / "issuer", store=issuer_store, workers=workers, extra=issuer_flags
            )
        )
        vendor = stack.enter_context(
            launch.start_vendor(
                data_dir=root / "vendor",
                issuer_url=issuer.url,
                store=vendor_store,
                workers=workers,
                extra=vendor_flags,
            )
        )
        yield LocalServices(
            issuer_url=issuer.url,
            vendor_url=vendor.url,
            issuer_pid=issuer.pid,
            vendor_pid=vendor.pid,
            redis_pid=redis_pid,
            store=store,
            vendor=vendor,
        )
