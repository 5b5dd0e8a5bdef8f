"""Connections that cannot lock a service out (SPEC §7): request heads and bodies
have a deadline (`--header-timeout`), idle keep-alive connections are closed, and
beyond `--max-connections` the longest-waiting connection is dropped, or a new one
is answered 503 when none is waiting. Raw sockets on loopback play the clients."""

from __future__ import annotations

import contextlib
import resource
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nanomoni import crypto
from nanomoni.encoding import b64encode
from nanomoni.launch import ServiceProcess, start_issuer

ACCOUNTS = "/api/v1/issuer/accounts"
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: nanomoni\r\n\r\n"


def start(
    tmp_path: Path, *, header_timeout: float, max_connections: int = 10_000
) -> ServiceProcess:
    env = {
        "NANOMONI_ISSUER_HEADER_TIMEOUT": str(header_timeout),
        "NANOMONI_ISSUER_MAX_CONNECTIONS": str(max_connections),
    }
    return start_issuer(data_dir=tmp_path, env=env)


def address(service: ServiceProcess) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(service: ServiceProcess) -> socket.socket:
    return socket.create_connection(address(service), timeout=10)


def wait_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def is_open(sock: socket.socket) -> bool:
    """True while the server holds this connection open without having sent anything
    (a refused connection has its 503 waiting, a dropped one its end)."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except ConnectionResetError:
        pass
    finally:
        sock.settimeout(10)
    return False


def read_response(sock: socket.socket) -> bytes:
    """One response with a content-length body, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_by_limits(service: ServiceProcess, reason: str) -> int:
    """How many connections the service closed for `reason`, from its /metrics."""
    sample = f'nanomoni_connections_closed_total{{reason="{reason}"}} '
    for line in httpx.get(service.url + "/metrics").text.splitlines():
        if line.startswith(sample):
            return int(float(line.removeprefix(sample)))
    return 0


def registration(key: crypto.SigningKey) -> bytes:
    return b'{"client_public_key_der_b64": "%s"}' % b64encode(key.public_key_der).encode()


def post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: nanomoni\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("after_a_request", [False, True], ids=["fresh", "keep-alive"])
def test_connection_sending_nothing_is_closed_after_the_header_timeout(
    tmp_path: Path, after_a_request: bool
) -> None:
    with start(tmp_path, header_timeout=0.5) as issuer:
        sock = connect(issuer)
        if after_a_request:
            sock.sendall(HEALTH_REQUEST)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()
        assert wait_closed(sock) == b""
        waited = time.monotonic() - idle_since
        # The guard looks every timeout/8, so it closes within timeout + 2 looks.
        assert 0.45 <= waited < 1.5, waited
        assert httpx.get(issuer.url + "/health").status_code == 200
        assert closed_by_limits(issuer, "header_timeout") == 1
        assert issuer.stop() == 0


@pytest.mark.parametrize("after_a_request", [False, True], ids=["fresh", "keep-alive"])
def test_request_head_trickling_in_is_closed(tmp_path: Path, after_a_request: bool) -> None:
    """One byte every 0.2 s: never idle for long, but the head never completes in time."""
    head = HEALTH_REQUEST
    with start(tmp_path, header_timeout=1.0) as issuer:
        sock = connect(issuer)
        if after_a_request:
            sock.sendall(head)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < len(head) - 1 and is_open(sock):
                sock.sendall(head[sent : sent + 1])
                sent += 1
                time.sleep(0.2)
        assert wait_closed(sock) == b""
        closed_after = time.monotonic() - started
        assert sent < len(head) - 1, "the server waited for the whole trickled head"
        assert 0.95 <= closed_after < 2.0, closed_after
        assert closed_by_limits(issuer, "header_timeout") == 1
        assert issuer.stop() == 0


def test_request_body_trickling_in_is_dropped_and_changes_nothing(tmp_path: Path) -> None:
    slow, quick = crypto.SigningKey.generate(), crypto.SigningKey.generate()
    body = registration(slow)
    with start(tmp_path, header_timeout=1.0) as issuer:
        sock = connect(issuer)
        sock.sendall(post_head(ACCOUNTS, len(body)))
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < len(body) - 1 and is_open(sock):
                sock.sendall(body[sent : sent + 1])
                sent += 1
                time.sleep(0.1)
        assert wait_closed(sock) == b""
        assert sent < len(body) - 1, "the server waited for the whole trickled body"
        assert 0.95 <= time.monotonic() - started < 2.0

        accounts = httpx.Client(base_url=issuer.url + ACCOUNTS)
        lookup = accounts.get("", params={"public_key_der_b64": b64encode(slow.public_key_der)})
        assert lookup.status_code == 404 and lookup.json()["code"] == "account_not_found"
        reply = accounts.post("", content=registration(quick))
        assert reply.status_code == 201, reply.text
        accounts.close()
        assert closed_by_limits(issuer, "body_timeout") == 1
        assert issuer.stop() == 0


def test_client_that_does_not_read_its_answers_is_dropped(tmp_path: Path) -> None:
    """Thousands of pipelined requests, answers never read: beyond what the kernel
    buffers (megabytes) they pile up in the service until it drops the connection
    (close() alone would wait forever to flush them)."""
    with start(tmp_path, header_timeout=1.0) as issuer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(address(issuer))
        sock.sendall(b"GET /schema/openapi.json HTTP/1.1\r\nHost: nanomoni\r\n\r\n" * 2000)
        started = time.monotonic()
        while closed_by_limits(issuer, "unread_timeout") == 0:
            assert time.monotonic() - started < 5, "the service kept a client that does not read"
            time.sleep(0.1)
        assert time.monotonic() - started >= 0.95
        wait_closed(sock)  # ends: reset after what the kernel had delivered
        sock.close()
        assert issuer.stop() == 0


def test_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(tmp_path: Path) -> None:
    with start(tmp_path, header_timeout=60) as issuer:
        sock = connect(issuer)
        sock.sendall(HEALTH_REQUEST)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()
        assert wait_closed(sock) == b""
        assert 4.5 <= time.monotonic() - idle_since < 7.0  # uvicorn's 5 s
        assert closed_by_limits(issuer, "header_timeout") == 0
        assert issuer.stop() == 0


def test_at_the_cap_the_longest_waiting_connection_makes_room(tmp_path: Path) -> None:
    with start(tmp_path, header_timeout=60, max_connections=5) as issuer:
        idle = []
        for _ in range(5):
            idle.append(connect(issuer))
            time.sleep(0.05)  # accepted in this order
        busy = connect(issuer)  # a keep-alive client between requests is waiting too
        busy.sendall(HEALTH_REQUEST)
        assert read_response(busy).startswith(b"HTTP/1.1 200")
        # That sixth connection made the first (longest waiting) one go.
        assert wait_closed(idle[0]) == b""
        assert all(is_open(sock) for sock in idle[1:])
        assert httpx.get(issuer.url + "/health").status_code == 200  # the next one goes
        assert wait_closed(idle[1]) == b""
        # That newcomer has gone too: there is room again, nobody else is dropped.
        for _ in range(3):
            assert httpx.get(issuer.url + "/health").status_code == 200
        assert all(is_open(sock) for sock in [*idle[2:], busy])
        assert closed_by_limits(issuer, "evicted") == 2
        for sock in [*idle, busy]:
            sock.close()
        assert issuer.stop() == 0


def test_a_burst_beyond_the_cap_does_not_run_out_of_connections_to_drop(
    tmp_path: Path,
) -> None:
    """Between two sweeps a burst of idle connections can take every victim the list
    held (all waiting when it was made); the ones admitted since are listed again, so a
    newcomer is never refused while idle connections are held."""
    cap = 16
    with start(tmp_path, header_timeout=60, max_connections=cap) as issuer:
        burst = [connect(issuer) for _ in range(3 * cap)]  # well within one sweep (1 s)
        try:
            assert httpx.get(issuer.url + "/health").status_code == 200
            assert sum(is_open(sock) for sock in burst) <= cap
        finally:
            for sock in burst:
                sock.close()
        assert closed_by_limits(issuer, "refused") == 0
        assert closed_by_limits(issuer, "evicted") >= 2 * cap
        assert issuer.stop() == 0


def test_at_the_cap_with_nothing_waiting_a_newcomer_gets_503(tmp_path: Path) -> None:
    body = registration(crypto.SigningKey.generate())
    with start(tmp_path, header_timeout=1.0, max_connections=3) as issuer:
        uploads = [connect(issuer) for _ in range(3)]
        for sock in uploads:  # each holds a request whose body is still to come
            sock.sendall(post_head(ACCOUNTS, len(body)) + body[:5])
        time.sleep(0.2)
        refused = connect(issuer)
        refused.sendall(HEALTH_REQUEST)
        answer = wait_closed(refused)
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 1" in head.lower()
        assert httpx.Response(503, content=payload).json() == {
            "detail": "the service is at its connection limit; retry shortly",
            "code": "service_busy",
        }
        # The unfinished bodies are dropped at their deadline; then there is room again.
        for sock in uploads:
            assert wait_closed(sock) == b""
        assert httpx.get(issuer.url + "/health").status_code == 200
        assert closed_by_limits(issuer, "refused") == 1
        assert closed_by_limits(issuer, "body_timeout") == 3
        assert issuer.stop() == 0


# --- a flood of idle connections ------------------------------------------------------------


FLOOD_FILES = 8192  # open files the flood test wants, in this process and the service


@contextlib.contextmanager
def open_files_raised() -> Iterator[int]:
    """This process's open-file limit (inherited by the services it starts) raised to
    FLOOD_FILES if allowed (root may raise the hard limit), else to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FLOOD_FILES, max(hard, FLOOD_FILES)))
        raised = FLOOD_FILES
    except (ValueError, OSError):  # not allowed above the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        raised = hard
    try:
        yield raised
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


KINDS = ("keep-alive /health", "registration", "new-connection /health")


def well_behaved(url: str, rounds: int) -> dict[str, list[float]]:
    """Latencies of a client doing real work: per round a /health on its keep-alive
    connection, an account registration, and a /health on a new connection."""
    keys = [crypto.SigningKey.generate() for _ in range(rounds)]
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    fresh = httpx.Limits(max_keepalive_connections=0)
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        httpx.Client(base_url=url, timeout=10, limits=fresh) as one_shot,
    ):
        for key in keys:
            register = client.build_request("POST", ACCOUNTS, content=registration(key))
            for kind, sender, request, status in (
                (KINDS[0], client, client.build_request("GET", "/health"), 200),
                (KINDS[1], client, register, 201),
                (KINDS[2], one_shot, one_shot.build_request("GET", "/health"), 200),
            ):
                started = time.perf_counter()
                reply = sender.send(request)
                latencies[kind].append(time.perf_counter() - started)
                assert reply.status_code == status, (kind, reply.text)
    return latencies


def percentiles(latencies: list[float]) -> str:
    """p50/p99 in milliseconds."""
    cuts = statistics.quantiles(latencies, n=100)
    return f"{cuts[49] * 1000:.2f}/{cuts[98] * 1000:.2f}"


def test_idle_flood_does_not_lock_out_a_well_behaved_client(tmp_path: Path) -> None:
    with open_files_raised() as limit:
        flood_size = min(6000, limit - 500)
        assert flood_size >= 2000, f"open-file limit {limit} too low for the flood test"
        cap = flood_size // 2
        with start(tmp_path, header_timeout=60, max_connections=cap) as issuer:
            baseline = well_behaved(issuer.url, 60)
            flood: list[socket.socket] = []
            try:
                for _ in range(flood_size):
                    flood.append(connect(issuer))
                time.sleep(0.5)
                flooded = well_behaved(issuer.url, 60)
                held = sum(is_open(sock) for sock in flood)
            finally:
                for sock in flood:
                    sock.close()
            assert issuer.stop() == 0
    print(f"\n{flood_size} idle connections, cap {cap}, the service holds {held} of them")
    for kind in KINDS:
        print(
            f"{kind:>24} p50/p99 ms: {percentiles(baseline[kind])} without, "
            f"{percentiles(flooded[kind])} with the flood"
        )
    assert held <= cap
    every = [seconds for times in flooded.values() for seconds in times]
    assert statistics.quantiles(every, n=100)[98] < 1.0
