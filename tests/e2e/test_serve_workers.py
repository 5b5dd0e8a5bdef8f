"""Worker supervision: a worker that dies after start-up is replaced while the
others keep answering; a replacement that keeps failing is retried with a growing
delay; a worker failing during start-up still fails the start."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import nanomoni
from nanomoni import crypto
from nanomoni.encoding import b64encode
from nanomoni.launch import start_issuer

# Once a worker is killed, requests may fail only this long (those it had accepted).
FAILURE_WINDOW = 1.0


def workers_of(pid: int) -> set[int]:
    """Running child processes of `pid`, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(parent) == pid and state != "Z":
            children.add(int(entry.name))
    return children


def wait_for_workers(pid: int, count: int, timeout: float, gone: int | None = None) -> set[int]:
    """`count` live workers of `pid`, none of them `gone` (a killed worker stays a
    live-looking child for a moment after SIGKILL is sent)."""
    deadline = time.monotonic() + timeout
    while len(found := workers_of(pid)) != count or gone in found:
        assert time.monotonic() < deadline, f"{pid} has workers {found}, wanted {count}"
        time.sleep(0.05)
    return found


def test_killed_worker_is_replaced_while_the_service_keeps_answering(tmp_path: Path) -> None:
    with start_issuer(data_dir=tmp_path, workers=2) as issuer:
        before = wait_for_workers(issuer.pid, 2, timeout=5)
        outcomes: list[tuple[float, float, bool]] = []  # (sent, answered, succeeded)
        stop = threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=issuer.url, timeout=5) as client:
                while not stop.is_set():
                    key = crypto.SigningKey.generate()
                    body = {"client_public_key_der_b64": b64encode(key.public_key_der)}
                    for method, path, json in (
                        ("GET", "/health", None),
                        ("POST", "/api/v1/issuer/accounts", body),
                    ):
                        sent = time.monotonic()
                        try:
                            reply = client.request(method, path, json=json)
                            ok = reply.status_code in (200, 201)
                        except httpx.TransportError:
                            ok = False
                        outcomes.append((sent, time.monotonic(), ok))

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            time.sleep(0.5)
            victim = min(before)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            after = wait_for_workers(issuer.pid, 2, timeout=10, gone=victim)
            time.sleep(1.5)  # keep asking the replaced set of workers
        finally:
            stop.set()
            asker.join()
        assert victim not in after and len(after - before) == 1, (before, after)
        assert all(ok for _, answered, ok in outcomes if answered < killed_at)
        late = [ok for sent, _, ok in outcomes if sent > killed_at + FAILURE_WINDOW]
        assert len(late) > 20 and all(late), f"{late.count(False)} of {len(late)} failed"
        exposition = httpx.get(issuer.url + "/metrics").text.splitlines()
        assert "nanomoni_worker_restarts_total 1.0" in exposition
        assert issuer.stop() == 0


# A bare service on nanomoni.serve whose app cannot start while a marker file exists;
# each failed start-up is recorded (with the system-wide monotonic clock).
FLAKY_SERVICE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nanomoni.serve import ConnectionLimits, serve

    marker, attempts = Path(sys.argv[1]), Path(sys.argv[2])

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def factory():
        if marker.exists():
            with attempts.open("a") as log:
                log.write(f"{time.monotonic()}\\n")
            raise SystemExit(3)
        return app

    limits = ConnectionLimits(header_timeout=10.0, max_connections=100)
    sys.exit(serve(factory, host="127.0.0.1", port=0, workers=2, limits=limits))
    """
)


@contextmanager
def flaky_service(marker: Path, attempts: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The service and its URL ("" if it never announced one)."""
    # The nanomoni this test imported (installed or a source tree), never the working directory's.
    env = dict(os.environ, PYTHONPATH=str(Path(nanomoni.__file__).resolve().parent.parent))
    process = subprocess.Popen(
        [sys.executable, "-P", "-c", FLAKY_SERVICE, str(marker), str(attempts)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield process, line.removeprefix("listening on ").strip()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_failing_replacement_is_retried_with_a_growing_delay(tmp_path: Path) -> None:
    marker, attempts = tmp_path / "broken", tmp_path / "attempts"
    with flaky_service(marker, attempts) as (service, url):
        assert url.startswith("http://127.0.0.1:")
        victim = min(wait_for_workers(service.pid, 2, timeout=5))
        marker.touch()
        os.kill(victim, signal.SIGKILL)
        time.sleep(4.5)
        # The other worker serves alone meanwhile.
        assert httpx.get(url).text == "ok"
        tries = [float(line) for line in attempts.read_text().split()]
        gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
        # Delays 0.25, 0.5, 1, 2, 4 s: four tries in 4.5 s, each gap about twice the last.
        assert 3 <= len(tries) <= 5, tries
        assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(gaps))
        marker.unlink()
        wait_for_workers(service.pid, 2, timeout=10, gone=victim)  # the next try succeeds
        assert httpx.get(url).text == "ok"
        service.send_signal(signal.SIGTERM)
        assert service.wait(15) == 0


def test_worker_failing_during_start_up_fails_the_start(tmp_path: Path) -> None:
    marker, attempts = tmp_path / "broken", tmp_path / "attempts"
    marker.touch()
    with flaky_service(marker, attempts) as (service, url):
        assert url == ""
        assert service.wait(15) == 1
    assert len(attempts.read_text().split()) in (1, 2)  # no replacement was tried
