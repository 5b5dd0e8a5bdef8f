"""Starting `nanomoni issuer|vendor` as subprocesses on loopback (tests, demo, bench)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import nanomoni

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
_BANNER = "listening on "


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, and SIGKILL if it is still running after `timeout` seconds: its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ServiceProcess:
    """A started `nanomoni issuer|vendor`; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.pid = process.pid
        self.url = url

    def stop(self, timeout: float = 10.0) -> int:
        return stop_process(self.process, timeout)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _start(
    service: str, args: list[str], env: Mapping[str, str] | None, port: int | None
) -> ServiceProcess:
    full_env = dict(os.environ)
    # Run the same nanomoni as the caller, installed or from a source tree.
    package_root = str(Path(nanomoni.__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, full_env.get("PYTHONPATH")])
    )
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    argv = [
        sys.executable,
        "-P",  # never let the working directory shadow the nanomoni chosen above
        "-m",
        "nanomoni",
        service,
        "--host",
        HOST,
        "--port",
        str(port or 0),
        *args,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, env=full_env)
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # Keeps reading so the service never blocks on a full pipe; echoes what it prints.
        for raw in stdout:
            line = raw.decode("utf-8", "replace")
            lines.put(line)
            if not line.startswith(_BANNER):
                sys.stdout.write(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"nanomoni-{service}-stdout", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            code = ServiceProcess(process, "").stop()
            raise RuntimeError(f"nanomoni {service} did not start (exit code {code})")
        if line.startswith(_BANNER):
            return ServiceProcess(process, line[len(_BANNER) :].strip())


def start_issuer(
    *,
    data_dir: Path,
    store: str | None = None,
    port: int | None = None,
    admin_token: str | None = None,
    initial_balance: int | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> ServiceProcess:
    """`extra`: more command-line flags (e.g. --dispute-window 5)."""
    args = ["--data-dir", str(data_dir), "--workers", str(workers)]
    if store is not None:
        args += ["--store", store]
    if admin_token is not None:
        args += ["--admin-token", admin_token]
    if initial_balance is not None:
        args += ["--initial-balance", str(initial_balance)]
    return _start("issuer", [*args, *extra], env, port)


def start_vendor(
    *,
    data_dir: Path,
    issuer_url: str,
    store: str | None = None,
    port: int | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> ServiceProcess:
    """`extra`: more command-line flags (e.g. --watch-interval 1)."""
    args = ["--data-dir", str(data_dir), "--issuer-url", issuer_url, "--workers", str(workers)]
    if store is not None:
        args += ["--store", store]
    return _start("vendor", [*args, *extra], env, port)
