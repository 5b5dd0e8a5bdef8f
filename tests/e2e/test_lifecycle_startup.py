"""Start-up and configuration: env-var flags, key files, the vendor registering in the
background while the issuer is down, and store failures answered 503, not crashes."""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from redis_servers import redis_server

from nanomoni import crypto
from nanomoni.launch import free_port, start_issuer, start_vendor


def test_flags_from_environment_and_key_file(tmp_path: Path) -> None:
    key = crypto.SigningKey.generate("ed25519")
    key_file = tmp_path / "issuer.pem"
    key_file.write_bytes(key.to_pem())
    env = {
        "NANOMONI_ISSUER_ADMIN_TOKEN": "from-env",
        "NANOMONI_ISSUER_INITIAL_BALANCE": "77",
        "NANOMONI_ISSUER_KEY_FILE": str(key_file),
    }
    with start_issuer(data_dir=tmp_path / "data", env=env) as issuer:
        base = issuer.url + "/api/v1/issuer"
        published = httpx.get(base + "/keys/public").json()["der_b64"]
        assert base64.b64decode(published) == key.public_key_der
        party = base64.b64encode(crypto.SigningKey.generate().public_key_der).decode()
        reply = httpx.post(base + "/accounts", json={"client_public_key_der_b64": party})
        assert reply.status_code == 201 and reply.json()["balance"] == 77
        deposit = {"public_key_der_b64": party, "amount": 3}
        ok = httpx.post(
            base + "/accounts/deposits", json=deposit, headers={"Authorization": "Bearer from-env"}
        )
        assert ok.status_code == 200 and ok.json()["balance"] == 80
        assert issuer.stop() == 0
    assert not (tmp_path / "data" / "issuer-key.pem").exists()  # the given key was used


def test_service_key_created_once_and_reused(tmp_path: Path) -> None:
    with start_issuer(data_dir=tmp_path) as issuer:
        first = httpx.get(issuer.url + "/api/v1/issuer/keys/public").json()["der_b64"]
    assert (tmp_path / "issuer-key.pem").exists()
    with start_issuer(data_dir=tmp_path) as issuer:
        assert httpx.get(issuer.url + "/api/v1/issuer/keys/public").json()["der_b64"] == first


def test_vendor_serves_and_registers_in_the_background_while_issuer_is_down(
    tmp_path: Path,
) -> None:
    port = free_port()
    issuer_url = f"http://127.0.0.1:{port}"
    with start_vendor(
        data_dir=tmp_path / "vendor",
        issuer_url=issuer_url,
        env={"NANOMONI_VENDOR_ISSUER_TIMEOUT": "2"},
    ) as vendor:
        base = vendor.url + "/api/v1/vendor"
        # Serving, but degraded until it is registered at the issuer (one short reason).
        health = httpx.get(vendor.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert health.json()["code"] == "issuer_unavailable"
        assert "cannot connect to 127.0.0.1" in health.json()["detail"]
        assert len(health.json()["detail"]) < 160
        vendor_pk = httpx.get(base + "/keys/public").json()["public_key_der_b64"]
        body = {"k": 1, "token_b64": base64.b64encode(bytes(32)).decode()}
        reply = httpx.post(base + "/channels/payword/" + "A" * 43 + "/payments", json=body)
        assert reply.status_code == 503 and reply.json()["code"] == "issuer_unavailable"
        with start_issuer(data_dir=tmp_path / "issuer", port=port) as issuer:
            deadline = time.monotonic() + 20
            while True:
                found = httpx.get(
                    issuer.url + "/api/v1/issuer/accounts", params={"public_key_der_b64": vendor_pk}
                )
                if found.status_code == 200:
                    break
                assert time.monotonic() < deadline, "the vendor never registered"
                time.sleep(0.1)
            while httpx.get(vendor.url + "/health").json()["status"] != "healthy":
                assert time.monotonic() < deadline, "registered but never healthy"
                time.sleep(0.05)
            reply = httpx.post(base + "/channels/payword/" + "A" * 43 + "/payments", json=body)
            assert reply.status_code == 404 and reply.json()["code"] == "channel_not_found"
            assert issuer.stop() == 0
        assert vendor.stop() == 0


def test_store_failure_is_a_503_not_a_crash(tmp_path: Path) -> None:
    with (
        start_issuer(data_dir=tmp_path / "issuer") as issuer,
        redis_server() as redis,
        start_vendor(
            data_dir=tmp_path / "vendor", issuer_url=issuer.url, store=redis.url
        ) as vendor,
    ):
        redis.stop()
        body = {"channel_id": "A" * 43, "client_signature_b64": "c2lnbmVk"}
        reply = httpx.post(
            f"{vendor.url}/api/v1/vendor/channels/payword/{'A' * 43}/closure-requests", json=body
        )
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert reply.json()["code"] == "store_unavailable"
        health = httpx.get(vendor.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert vendor.stop() == 0


def test_vendor_with_a_one_channel_terms_cache_relearns_channels(
    tmp_path: Path, stack_factory: Any
) -> None:
    with (
        start_issuer(data_dir=tmp_path / "issuer", initial_balance=1_000_000) as issuer,
        start_vendor(
            data_dir=tmp_path / "vendor",
            issuer_url=issuer.url,
            env={"NANOMONI_VENDOR_TERMS_CACHE": "1"},
        ) as vendor,
    ):
        stack = stack_factory(issuer, vendor)
        try:
            channels = [
                stack.open(mode, amount=640, max_index=64) for mode in ("payword", "paytree")
            ]
            for n in (1, 2, 3):
                for channel in channels:  # alternating: each payment evicts the other's terms
                    assert stack.pay(channel, n).status_code == 201
            for channel in channels:
                assert stack.close_channel(channel).status_code == 204
                assert stack.read(channel)["balance"] == 30
        finally:
            stack.close()
        assert vendor.stop() == 0


def test_two_workers_exit_zero_on_sigint(tmp_path: Path) -> None:
    issuer = start_issuer(data_dir=tmp_path, workers=2)
    try:
        assert httpx.get(issuer.url + "/health").status_code == 200
        issuer.process.send_signal(signal.SIGINT)
        assert issuer.process.wait(15) == 0
    finally:
        issuer.stop()


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    issuer = start_issuer(data_dir=tmp_path, workers=2)
    proc = Path("/proc")
    workers = [
        int(entry.name)
        for entry in proc.iterdir()
        if entry.name.isdigit() and _parent_of(entry) == issuer.pid
    ]
    assert len(workers) == 2
    issuer.process.kill()
    issuer.process.wait()
    deadline = time.monotonic() + 10
    while any(_running(proc / str(pid)) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.05)


def _parent_of(entry: Path) -> int | None:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _running(entry: Path) -> bool:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"
