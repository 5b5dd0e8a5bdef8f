"""Running a service: key files, store opening, and uvicorn with N pre-forked workers.

The parent binds the listening socket, forks the workers (each builds its own
app, store connection and event loop), prints `listening on http://H:P` once
every worker has started, replaces a worker that dies afterwards, and on
SIGTERM/SIGINT lets the workers finish their in-flight requests before exiting 0.

Each worker guards its connections (SPEC §7): a request head (and then its
body) must arrive within the header timeout, and beyond the connection cap the
connection that has waited longest for a request is dropped, or, if none is
waiting, the newcomer is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, NoReturn, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from nanomoni import crypto, metrics
from nanomoni.errors import Code, NanoMoniError, StartupError
from nanomoni.http import error_payload

AppFactory = Callable[[], Any]

log = logging.getLogger("nanomoni")


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


# --- connection limits (SPEC §7) ----------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    """Per worker: seconds a client may keep it waiting (for a request head, then
    for its body, or to read an answer), and how many connections it may hold open."""

    header_timeout: float
    max_connections: int


# An idle keep-alive connection is closed after this (uvicorn's default, made explicit).
KEEP_ALIVE_SECONDS = 5
# A refused connection is kept this long at most to deliver its 503 cleanly.
LINGER_SECONDS = 1.0
# File descriptors a worker keeps for everything but client connections (store, files).
FD_RESERVE = 100

# What a connection is doing, as the guard sees it. In all but _SERVING the client
# has to act, and gets the header timeout to do so.
_WAITING = 0  # no request in progress: waiting for (the rest of) a request head
_READING = 1  # head complete, body still arriving, no answer started
_UNREAD = 2  # answers pile up unsent: the client does not read them
_SERVING = 3  # the app works on the request: the store deadline bounds that
_STREAMING = 4  # a WebSocket (SPEC §12): long-lived by design, evictable at the cap
_EVICTABLE = (_WAITING, _STREAMING)  # what may be closed to admit a newcomer at the cap
_TIMEOUT_REASONS = {_WAITING: "header_timeout", _READING: "body_timeout", _UNREAD: "unread_timeout"}

_BUSY_DETAIL = "the service is at its connection limit; retry shortly"


def _phase(conn: _GuardedHttp | _GuardedStream) -> int:
    if conn.transport.get_write_buffer_size():
        return _UNREAD
    if isinstance(conn, _GuardedStream):
        return _STREAMING
    cycle: RequestResponseCycle | None = conn.cycle
    if cycle is None or cycle.response_complete:
        return _WAITING
    if cycle.more_body and not cycle.response_started:
        return _READING
    return _SERVING


def _drop(transport: asyncio.Transport) -> None:
    """Close now: close() alone would wait forever to flush to a client that does not read."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class _GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, admitted by its worker's guard.

    Nothing is added per request: the guard looks at every connection's request
    state a few times per header timeout instead of arming timers on the hot path.
    """

    guard: ClassVar[_ConnectionGuard]
    seen: tuple[RequestResponseCycle | None, int]  # (request, phase) at the guard's last look
    seen_at: float  # loop time the guard first saw `seen`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.admit(self)

    def send_400_response(self, msg: str) -> None:
        """A request uvicorn cannot parse (a raw path that is no text, a broken
        header): a JSON 400 like any other error (SPEC §1, §6), then close."""
        self.transport.write(_UNPARSABLE_RESPONSE)
        self.transport.close()


class _GuardedStream(WebSocketsSansIOProtocol):
    """A connection upgraded to a WebSocket, as its worker's guard sees it: never timed
    out for being quiet, closed when its answers pile up unread, evictable at the cap."""

    cycle = None  # no HTTP request in progress, ever
    seen: tuple[None, int]
    seen_at: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.seen, self.seen_at = (None, _STREAMING), self.loop.time()


class _Lingering(asyncio.Protocol):
    """A refused connection after its 503: drops what the client still sends, so
    closing is a clean FIN (closing over unread data would reset the connection
    and could destroy the answer), and closes on the client's EOF or a timer."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = loop.call_later(LINGER_SECONDS, _drop, transport)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


def _closing_response(exc: NanoMoniError, reason: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer carrying the SPEC §6 error body, closing the connection."""
    status, body = error_payload(exc)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


def _busy_response() -> bytes:
    busy = NanoMoniError(Code.service_busy, _BUSY_DETAIL)
    return _closing_response(busy, "Service Unavailable", "retry-after: 1\r\n")


_UNPARSABLE_RESPONSE = _closing_response(
    NanoMoniError(
        Code.invalid_encoding, "the request cannot be parsed (its path or a header is not valid)"
    ),
    "Bad Request",
)


class _ConnectionGuard:
    """Enforces ConnectionLimits on one worker's connections."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.timeout = limits.header_timeout
        self.max_connections = limits.max_connections
        # A sweep notices a new state up to one interval late and acts on it up to one
        # interval late: a client gets between timeout and timeout + 2 intervals.
        self.interval = min(1.0, max(0.05, self.timeout / 8))
        self.busy_response = _busy_response()
        self.connections: set[_GuardedHttp] = set()
        # Waiting connections, longest-waiting first, to drop at the cap: listed once
        # per sweep, and again only once the list gave up an eighth of the cap in
        # victims, so a flood of new connections costs O(1) each.
        self.candidates: deque[tuple[_GuardedHttp, RequestResponseCycle | None]] | None = None
        self.evicted = 0  # victims the current list gave up

    def start(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.timer = loop.call_later(self.interval, self.sweep)

    def admit(self, conn: _GuardedHttp) -> None:
        conn.seen, conn.seen_at = (None, _WAITING), self.loop.time()
        if len(self.connections) <= self.max_connections:
            return
        victim = self._longest_waiting(conn)
        if victim is not None:
            _drop(victim.transport)
            metrics.connection_closed("evicted")
        else:
            self._refuse(conn)
            metrics.connection_closed("refused")

    def sweep(self) -> None:
        """Close connections on which the client kept us waiting too long."""
        now = self.loop.time()
        for conn in list(self.connections):
            phase = _phase(conn)
            state = (conn.cycle, phase)
            if state != conn.seen:
                conn.seen, conn.seen_at = state, now
            elif phase not in (_SERVING, _STREAMING) and now - conn.seen_at >= self.timeout:
                _drop(conn.transport)
                metrics.connection_closed(_TIMEOUT_REASONS[phase])
        self.candidates = None
        self.timer = self.loop.call_later(self.interval, self.sweep)

    def _longest_waiting(self, newcomer: _GuardedHttp) -> _GuardedHttp | None:
        if self.candidates is None or (
            not self.candidates and self.evicted >= max(1, self.max_connections // 8)
        ):  # none listed yet, or all given up: connections admitted since may wait now
            self.evicted = 0
            now = self.loop.time()
            waiting = [
                (conn.seen_at if conn.seen == (conn.cycle, _phase(conn)) else now, conn)
                for conn in self.connections
                if _phase(conn) in _EVICTABLE and not conn.transport.is_closing()
            ]
            waiting.sort(key=itemgetter(0))
            self.candidates = deque((conn, conn.cycle) for _, conn in waiting)
        while self.candidates:
            conn, cycle = self.candidates.popleft()
            if (
                conn is not newcomer
                and conn.cycle is cycle
                and _phase(conn) in _EVICTABLE
                and not conn.transport.is_closing()
            ):
                self.evicted += 1
                return conn
        return None

    def _refuse(self, conn: _GuardedHttp) -> None:
        self.connections.discard(conn)
        transport = conn.transport
        transport.set_protocol(_Lingering(transport, self.loop))
        transport.write(self.busy_response)
        transport.write_eof()


def _guarded_protocol(guard: _ConnectionGuard) -> type[asyncio.Protocol]:
    """The protocol class of one worker, bound to its guard."""
    return cast(type[asyncio.Protocol], type("GuardedHttp", (_GuardedHttp,), {"guard": guard}))


def _connection_cap(wanted: int) -> int:
    """Lift the open-file limit to its hard maximum (workers inherit it) and fit
    the per-worker connection cap under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY or wanted <= soft - FD_RESERVE:
        return wanted
    cap = max(1, soft - FD_RESERVE)
    log.warning(
        "--max-connections %d exceeds the open-file limit (%d): capping at %d", wanted, soft, cap
    )
    return cap


# --- one worker ------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn that guards its connections and reports once it accepts them."""

    def __init__(
        self, config: uvicorn.Config, guard: _ConnectionGuard, on_ready: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._guard = guard
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._guard.start(asyncio.get_running_loop(), self.server_state.connections)
        await super().startup(sockets)
        if _stop_requested:  # a signal came before uvicorn listened for it
            self.should_exit = True
        if self.started and not self.should_exit:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {host}:{port}: {why}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, protocol: type[asyncio.Protocol]) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=protocol,
        ws=_GuardedStream,  # the payment stream; the guard keeps seeing upgraded connections
        ws_per_message_deflate=False,  # compressing base64 proofs costs more CPU than it saves
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # no proxy in front: X-Forwarded-* must not be trusted (and costs CPU)
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_stop_requested = False


def _remember_stop(sig: int, frame: FrameType | None) -> None:
    """A worker's handler until uvicorn installs its own, and after (uvicorn re-raises
    the signal on exit, which must not kill us: we exit 0)."""
    global _stop_requested
    _stop_requested = True


def freeze_startup_heap() -> None:
    """Hide what start-up left alive (modules, classes, the app: ~70,000 objects) from
    the cyclic collector. Under load a full collection otherwise rescans all of it every
    few hundred ms (~40 ms each, ~2 µs per batched payment) and finds nothing; garbage
    made later is still collected."""
    gc.collect()
    gc.freeze()


def _run_worker(
    factory: AppFactory,
    sock: socket.socket,
    limits: ConnectionLimits,
    on_ready: Callable[[], None],
) -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _remember_stop)
    guard = _ConnectionGuard(limits)
    server = _Server(_uvicorn_config(factory(), _guarded_protocol(guard)), guard, on_ready)
    freeze_startup_heap()
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(1)


def serve(
    factory: AppFactory, *, host: str, port: int, workers: int, limits: ConnectionLimits
) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    limits = ConnectionLimits(limits.header_timeout, _connection_cap(limits.max_connections))
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    banner = f"listening on http://{url_host}:{bound_port}"

    def announce() -> None:
        print(banner, flush=True)

    if workers <= 1:
        try:
            _run_worker(factory, sock, limits, announce)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    return _Supervisor(factory, sock, limits, workers).run(announce)


# --- the supervisor ------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
# The supervisor SIGKILLs workers still running this long after asking them to stop
# (uvicorn gives in-flight requests GRACEFUL_SECONDS of it).
GRACEFUL_SECONDS = 5
KILL_AFTER_SECONDS = 8
# A worker that dies within STABLE_SECONDS of its start is replaced after a delay
# that doubles with each such death, so a crash loop cannot spin; one that ran
# longer is replaced at once.
STABLE_SECONDS = 10.0
FIRST_RESTART_DELAY = 0.25
MAX_RESTART_DELAY = 10.0


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the supervisor dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: workers may outlive a killed supervisor
        pass


class RestartBackoff:
    """How long to wait before replacing a worker that died."""

    def __init__(self) -> None:
        self.delay = 0.0

    def after_death(self, lived_seconds: float) -> float:
        if lived_seconds >= STABLE_SECONDS:
            self.delay = 0.0
        else:
            self.delay = min(MAX_RESTART_DELAY, max(FIRST_RESTART_DELAY, self.delay * 2))
        return self.delay


def _describe_exit(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


class _Supervisor:
    """Keeps `workers` processes serving one socket.

    A worker that exits before all have started fails the start; one that dies
    later is replaced (after a back-off). SIGTERM/SIGINT stop them all.
    """

    def __init__(
        self, factory: AppFactory, sock: socket.socket, limits: ConnectionLimits, workers: int
    ) -> None:
        self.factory = factory
        self.sock = sock
        self.limits = limits
        self.workers = workers
        self.parent = os.getpid()
        self.ready_read, self.ready_write = os.pipe()
        self.started_at: dict[int, float] = {}  # live worker pid -> monotonic start
        self.replacements: list[float] = []  # when each pending replacement is due
        self.backoff = RestartBackoff()
        self.stopping = False
        self.failed = False

    def run(self, announce: Callable[[], None]) -> int:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._stop)
        for _ in range(self.workers):
            self._spawn()
        started = 0
        while started < self.workers and not self.stopping and not self.failed:
            started += self._drain_ready(0.1)
            for _, code, _ in self._reap():
                self.failed |= code != 0 or not self.stopping
        if not self.failed and not self.stopping:
            announce()
            self._supervise()
        return self._stop_workers()

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _spawn(self) -> None:
        # Stop signals wait until the child has its own handlers (and the parent its pid).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._worker()
            self.started_at[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _worker(self) -> NoReturn:
        code = 0
        try:
            os.close(self.ready_read)
            for sig in _STOP_SIGNALS:
                signal.signal(sig, _remember_stop)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            _die_with_parent()
            if os.getppid() != self.parent:  # the supervisor died before prctl took effect
                raise SystemExit(1)
            _run_worker(self.factory, self.sock, self.limits, self._report_ready)
        except SystemExit as exc:
            code = int(exc.code or 0)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    def _report_ready(self) -> None:  # in a worker
        os.write(self.ready_write, b".")

    def _drain_ready(self, timeout: float) -> int:
        """Waits up to `timeout` for workers reporting ready; returns how many did."""
        readable, _, _ = select.select([self.ready_read], [], [], timeout)
        return len(os.read(self.ready_read, 4096)) if readable else 0

    def _reap(self) -> list[tuple[int, int, float]]:
        """Exited workers: (pid, exit code, seconds it ran)."""
        exited = []
        while self.started_at:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            started = self.started_at.pop(pid)
            metrics.worker_exited(pid)
            exited.append((pid, os.waitstatus_to_exitcode(status), time.monotonic() - started))
        return exited

    def _supervise(self) -> None:
        while not self.stopping:
            self._drain_ready(0.1)
            now = time.monotonic()
            for pid, code, lived in self._reap():
                if self.stopping:  # a signal to the whole process group
                    self.failed |= code != 0
                    continue
                delay = self.backoff.after_death(lived)
                log.warning(
                    "worker %d %s; replacing it in %.2f s", pid, _describe_exit(code), delay
                )
                self.replacements.append(now + delay)
            due = [when for when in self.replacements if when <= now]
            self.replacements = [when for when in self.replacements if when > now]
            for _ in due:
                if not self.stopping:
                    self._spawn()
                    metrics.worker_replaced()

    def _stop_workers(self) -> int:
        failed = self.failed
        for pid in self.started_at:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_AFTER_SECONDS
        while self.started_at:
            time.sleep(0.05)
            if any(code != 0 for _, code, _ in self._reap()):
                failed = True
            if self.started_at and time.monotonic() > deadline:
                for pid in self.started_at:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                failed = True
                deadline = time.monotonic() + 60
        os.close(self.ready_read)
        os.close(self.ready_write)
        self.sock.close()
        return 1 if failed else 0
