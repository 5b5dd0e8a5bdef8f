"""Running a priced API for the paywall tests: an issuer subprocess, the API of
`paid_apps` under a real uvicorn subprocess (Litestar or FastAPI), and hand-built
Payment headers from the e2e `Stack` helpers (independent of the client library)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import nanomoni
from nanomoni.launch import free_port, stop_process

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


@dataclass
class Url:
    """Stands in for a ServiceProcess where the e2e Stack only needs a URL."""

    url: str


@dataclass
class PaidApi:
    url: str
    process: subprocess.Popen[bytes]
    store: str
    key_file: Path

    def stop(self) -> int:
        return stop_process(self.process)


@contextmanager
def paid_api(
    framework: str,
    *,
    issuer_url: str,
    store: str,
    key_file: Path,
    env: dict[str, str] | None = None,
) -> Iterator[PaidApi]:
    """`paid_apps:{framework}_app` under uvicorn on a free loopback port, stopped after."""
    port = free_port()
    package_root = str(Path(nanomoni.__file__).resolve().parent.parent)
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), package_root]),
        "PAID_ISSUER": issuer_url,
        "PAID_STORE": store,
        "PAID_KEY": str(key_file),
        **(env or {}),
    }
    argv = [
        sys.executable, "-P", "-m", "uvicorn", "--factory", f"paid_apps:{framework}_app",
        "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--lifespan", "on", "--log-level", "warning", "--no-access-log",
        "--app-dir", str(HERE),  # not the working directory: it may hold a source tree
    ]  # fmt: skip
    process = subprocess.Popen(argv, env=full_env)
    api = PaidApi(f"http://{HOST}:{port}", process, store, key_file)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"the {framework} app exited with {process.returncode}"
            try:
                if httpx.get(f"{api.url}/free", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the {framework} app did not start"
            time.sleep(0.05)
        yield api
    finally:
        code = api.stop()
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
        assert code in (0, -signal.SIGTERM), f"the {framework} app exited with {code}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_b64url_json(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def payment_header(channel: Any, body: dict[str, Any] | None, request_id: str | None = None) -> str:
    """A Payment header for an e2e `Channel`: its mode and id plus a payment body."""
    members: dict[str, Any] = {"mode": channel.mode, "channel_id": channel.channel_id}
    if request_id is not None:
        members["request_id"] = request_id
    if body is not None:
        members.update(body)
    return b64url(json.dumps(members).encode())


def requirements_of(reply: httpx.Response) -> dict[str, Any]:
    """The 402's Payment-Required header, checked against its body's copy."""
    assert reply.status_code == 402, reply.text
    wanted = decode_b64url_json(reply.headers["payment-required"])
    assert reply.json()["requirements"] == wanted
    return wanted  # type: ignore[no-any-return]


def receipt_of(reply: httpx.Response) -> dict[str, Any]:
    return decode_b64url_json(reply.headers["payment-receipt"])  # type: ignore[no-any-return]


def credit(store: str, channel_id: str) -> tuple[int, int]:
    """(owed, consumed) of a channel, read from the paywall's store directly."""
    from nanomoni.store import open_vendor_store

    async def read() -> tuple[int, int]:
        opened = await open_vendor_store(store)
        try:
            found = await opened.credit(channel_id)
        finally:
            await opened.close()
        return found.owed, found.consumed

    return asyncio.run(read())
