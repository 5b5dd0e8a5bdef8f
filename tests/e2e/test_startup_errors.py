"""Every start-up mistake says what is wrong in one line and exits non-zero, without a
traceback (issue 14): `nanomoni <command>: <what>: <why>`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from commands import PACKAGE_ROOT, nanomoni_cli
from redis_servers import RedisServer


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that wants the password `sekret`."""
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"))
    server.start("--requirepass", "sekret", wait=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"-NOAUTH"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield server.port
    finally:
        server.stop()


def one_line(done: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == expected, done.stderr


def test_port_in_use_names_the_address(tmp_path: Path, taken_port: int) -> None:
    done = nanomoni_cli(
        "issuer", "--port", str(taken_port), "--data-dir", str(tmp_path), cwd=tmp_path
    )
    one_line(
        done,
        1,
        f"nanomoni issuer: cannot listen on 127.0.0.1:{taken_port}: the address is already in use",
    )
    assert len(done.stderr.strip().splitlines()) == 1


def test_data_dir_that_cannot_be_created_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = nanomoni_cli(
        "vendor",
        "--issuer-url",
        "http://127.0.0.1:9",
        "--data-dir",
        str(blocker / "data"),
        cwd=tmp_path,
    )
    one_line(
        done,
        1,
        f"nanomoni vendor: cannot create the data directory {blocker / 'data'}: Not a directory",
    )


def test_sqlite_file_that_cannot_be_opened_names_the_store(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = f"sqlite:{blocker}/x.sqlite3"
    done = nanomoni_cli("issuer", "--store", store, "--data-dir", str(tmp_path), cwd=tmp_path)
    one_line(done, 1, f"nanomoni issuer: cannot open the store {store}: File exists: {blocker}")


def test_an_empty_sqlite_path_means_the_data_directory(tmp_path: Path) -> None:
    from nanomoni.store import store_url

    assert (
        store_url("sqlite:", tmp_path / "issuer.sqlite3") == f"sqlite:{tmp_path / 'issuer.sqlite3'}"
    )
    assert store_url(None, tmp_path / "v.sqlite3") == f"sqlite:{tmp_path / 'v.sqlite3'}"
    assert store_url("redis://127.0.0.1:1/0", tmp_path / "v") == "redis://127.0.0.1:1/0"


def test_bad_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    done = nanomoni_cli("issuer", "--key-file", str(key), "--data-dir", str(tmp_path), cwd=tmp_path)
    one_line(
        done,
        1,
        f"nanomoni issuer: cannot use the key file {key}: "
        "expected a PKCS#8 PEM private key (BEGIN PRIVATE KEY)",
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://127.0.0.1:{port}/0", "NOAUTH Authentication required."),
        (
            "redis://:wrong@127.0.0.1:{port}/0",
            "redis 127.0.0.1:{port}: connection set-up refused: "
            "WRONGPASS invalid username-password pair or user is disabled.",
        ),
        (
            "redis://:sekret@127.0.0.1:{port}/99",
            "redis 127.0.0.1:{port}: connection set-up refused: ERR DB index is out of range",
        ),
    ],
)
def test_redis_refusals_name_the_store_without_its_password(
    tmp_path: Path, protected_redis: int, url: str, why: str
) -> None:
    store = url.format(port=protected_redis)
    done = nanomoni_cli("issuer", "--store", store, "--data-dir", str(tmp_path), cwd=tmp_path)
    shown = store.replace(":wrong@", ":***@").replace(":sekret@", ":***@")
    one_line(
        done,
        1,
        f"nanomoni issuer: cannot open the store {shown}: {why.format(port=protected_redis)}",
    )
    assert "sekret" not in done.stderr and "wrong@" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["issuer", "--bogus"], "nanomoni issuer: error: unrecognized arguments: --bogus"),
        (
            ["issuer", "--port", "abc"],
            "nanomoni issuer: error: argument --port: expected a whole number, got 'abc'",
        ),
        (
            ["vendor", "--issuer-url", "x", "--workers", "0"],
            "nanomoni vendor: error: argument --workers: must be at least 1, got 0",
        ),
        (
            ["issuer", "--store-timeout", "soon"],
            "nanomoni issuer: error: argument --store-timeout: expected a number, got 'soon'",
        ),
        (
            ["bench", "--rate", "-1"],
            "nanomoni bench: error: argument --rate: must not be negative, got -1",
        ),
    ],
)
def test_flag_mistakes_show_the_subcommands_usage(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    done = nanomoni_cli(*argv, cwd=tmp_path)
    one_line(done, 2, expected)
    assert done.stderr.startswith(f"usage: nanomoni {argv[0]}")


def test_ctrl_c_in_the_demo_prints_one_line_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOMONI_")}
    demo = subprocess.Popen(
        [sys.executable, "-P", "-m", "nanomoni", "demo", "--payments", "100000"],
        env={**env, "PYTHONPATH": PACKAGE_ROOT},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    line = demo.stdout.readline()  # "issuer http://... vendor http://...": services are up
    assert line.startswith("issuer http://127.0.0.1:"), line
    time.sleep(1.0)
    demo.send_signal(signal.SIGINT)
    _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "nanomoni demo: interrupted"
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # the services' temp dir is gone with them
