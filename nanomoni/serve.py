"""Running a service: key files, store opening, and uvicorn with N pre-forked workers.

The parent binds the listening socket, forks the workers (each builds its own
app, store connection and event loop), prints `listening on http://H:P` once
every worker has started, and on SIGTERM/SIGINT lets the workers finish their
in-flight requests before exiting 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from nanomoni import crypto, metrics

AppFactory = Callable[[], Any]


def load_or_create_key(key_file: Path) -> crypto.SigningKey:
    """The service key from a PKCS#8 PEM file, created (P-256) on first start."""
    if key_file.exists():
        return crypto.SigningKey.from_pem(key_file.read_bytes())
    key = crypto.SigningKey.generate("p256")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so two workers or restarts never read a half-written key.
    partial = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.to_pem())
    try:
        os.link(partial, key_file)  # fails if another process won the race: use theirs
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return crypto.SigningKey.from_pem(key_file.read_bytes())


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class _Server(uvicorn.Server):
    """uvicorn that reports once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # no proxy in front: X-Forwarded-* must not be trusted (and costs CPU)
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


def _ignore(sig: int, frame: FrameType | None) -> None:
    """Replaces the default action so uvicorn's re-raised signal does not kill us (exit 0)."""


def _run_worker(factory: AppFactory, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    server = _Server(_uvicorn_config(factory()), on_ready)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(1)


def serve(factory: AppFactory, *, host: str, port: int, workers: int) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    banner = f"listening on http://{url_host}:{bound_port}"

    def announce() -> None:
        print(banner, flush=True)

    if workers <= 1:
        try:
            _run_worker(factory, sock, announce)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    return _prefork(factory, sock, workers, announce)


def _report_ready(pipe: int) -> None:
    os.write(pipe, b".")


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the supervisor dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: workers may outlive a killed supervisor
        pass


_PR_SET_PDEATHSIG = 1
# The supervisor SIGKILLs workers still running this long after asking them to stop
# (uvicorn gives in-flight requests GRACEFUL_SECONDS of it).
GRACEFUL_SECONDS = 5
KILL_AFTER_SECONDS = 8


def _prefork(
    factory: AppFactory, sock: socket.socket, workers: int, announce: Callable[[], None]
) -> int:
    ready_read, ready_write = os.pipe()
    parent = os.getpid()
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            os.close(ready_read)
            _die_with_parent()
            code = 0
            try:
                if os.getppid() != parent:  # the supervisor died before prctl took effect
                    raise SystemExit(1)
                _run_worker(factory, sock, lambda: _report_ready(ready_write))
            except SystemExit as exc:
                code = int(exc.code or 0)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    os.close(ready_write)
    sock.close()

    stopping = False

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    alive = set(children)
    failed = False

    def reap() -> None:
        """Collect exited workers; any exit before we are told to stop is a failure."""
        nonlocal failed
        while alive:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return
            alive.discard(pid)
            metrics.worker_exited(pid)
            if not stopping or os.waitstatus_to_exitcode(status) != 0:
                failed = True

    started = 0
    while started < workers and not stopping and not failed:
        readable, _, _ = select.select([ready_read], [], [], 0.1)
        if readable:
            started += len(os.read(ready_read, workers))
        reap()
    os.close(ready_read)
    if not failed and not stopping:
        announce()

    while alive and not stopping and not failed:
        time.sleep(0.1)
        reap()

    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_AFTER_SECONDS
    while alive:
        time.sleep(0.05)
        reap()
        if alive and time.monotonic() > deadline:
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            failed = True
            deadline = time.monotonic() + 60
    return 1 if failed else 0
