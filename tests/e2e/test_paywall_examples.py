"""examples/paid_api.py and examples/paying_client.py work as their docstrings say."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

import nanomoni
from nanomoni.launch import HOST, free_port, start_issuer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_paying_client_buys_from_the_paid_api(tmp_path: Path) -> None:
    package_root = str(Path(nanomoni.__file__).resolve().parent.parent)
    with start_issuer(data_dir=tmp_path / "issuer", initial_balance=100_000) as issuer:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES), package_root]),
            "NANOMONI_ISSUER": issuer.url,
            "NANOMONI_PAYWALL_DATA": str(tmp_path / "api"),
        }
        argv = [
            sys.executable, "-P", "-m", "uvicorn", "--factory", "paid_api:create_app",
            "--host", HOST, "--port", str(port), "--log-level", "warning",
            "--app-dir", str(EXAMPLES),  # not the working directory (a source tree)
        ]  # fmt: skip
        api = subprocess.Popen(argv, env=env)
        try:
            url = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and api.poll() is None
                    time.sleep(0.05)
            assert httpx.get(f"{url}/quotes/ACME").status_code == 402
            client = [sys.executable, "-P", str(EXAMPLES / "paying_client.py"), url, issuer.url]
            done = subprocess.run(client, env=env, capture_output=True, text=True, timeout=120)
        finally:
            api.terminate()
            api.wait(10)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "{'symbol': 'ACME', 'price': 42.0}"
    assert lines[3].startswith("You asked about micropayments.")
    assert lines[-1].startswith("settled payword channel ")
