"""Issuer API over real HTTP (SPEC §4): accounts, deposits, opening, reading, endpoints."""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from nanomoni.crypto import SigningKey
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.launch import start_issuer
from nanomoni.protocol.audit import ISSUER_CHECKS

Stack = Any  # the `stack` fixture of conftest.py
ADMIN = {"Authorization": "Bearer e2e-admin-token"}


def test_registration_is_idempotent_also_when_concurrent(stack: Stack) -> None:
    party = stack.party("ed25519")

    def register(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.issuer_url + "/api/v1/issuer") as http:
            return http.post("/accounts", json={"client_public_key_der_b64": party.pk})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(register, range(16)))
    assert {r.status_code for r in replies} == {201}
    assert {r.json()["balance"] for r in replies} == {1_000_000}
    assert {r.json()["client_public_key_der_b64"] for r in replies} == {party.pk}
    assert stack.balance(party.pk) == 1_000_000


def test_account_lookup(stack: Stack) -> None:
    party = stack.party()
    stack.expect_error(
        stack.issuer.get("/accounts", params={"public_key_der_b64": party.pk}),
        404,
        "account_not_found",
    )
    stack.register(party)
    # A '+' that arrived as a space (unencoded query string) still finds the account.
    key = party.pk
    while "+" not in key:
        party = stack.party()
        key = party.pk
    stack.register(party)
    raw = httpx.get(f"{stack.issuer_url}/api/v1/issuer/accounts?public_key_der_b64={key}")
    assert raw.status_code == 200 and raw.json()["client_public_key_der_b64"] == key
    reply = stack.issuer.post("/accounts", json={"client_public_key_der_b64": b64encode(b"nokey")})
    stack.expect_error(reply, 400, "invalid_encoding")
    stack.expect_error(
        stack.issuer.post("/accounts", json={"client_public_key_der_b64": "@@"}),
        400,
        "invalid_encoding",
    )


def test_deposits_need_the_admin_token(stack: Stack) -> None:
    party = stack.client()
    body = {"public_key_der_b64": party.pk, "amount": 250}
    stack.expect_error(stack.issuer.post("/accounts/deposits", json=body), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    stack.expect_error(
        stack.issuer.post("/accounts/deposits", json=body, headers=wrong), 401, "unauthorized"
    )
    reply = stack.issuer.post("/accounts/deposits", json=body, headers=ADMIN)
    assert reply.status_code == 200 and reply.json()["balance"] == 1_000_250
    zero = {"public_key_der_b64": party.pk, "amount": 0}
    stack.expect_error(
        stack.issuer.post("/accounts/deposits", json=zero, headers=ADMIN), 400, "invalid_amount"
    )
    unknown = {"public_key_der_b64": stack.party().pk, "amount": 5}
    stack.expect_error(
        stack.issuer.post("/accounts/deposits", json=unknown, headers=ADMIN),
        404,
        "account_not_found",
    )
    assert stack.balance(party.pk) == 1_000_250


def test_issuer_without_admin_token_refuses_deposits(tmp_path: Any) -> None:
    with start_issuer(data_dir=tmp_path, initial_balance=5) as issuer:
        base = issuer.url + "/api/v1/issuer"
        key = b64encode(os.urandom(4))
        reply = httpx.post(
            base + "/accounts/deposits",
            json={"public_key_der_b64": key, "amount": 1},
            headers=ADMIN,
        )
        assert reply.status_code == 403 and reply.json()["code"] == "forbidden"
        stats = httpx.get(base + "/stats", headers=ADMIN)
        assert stats.status_code == 403 and stats.json()["code"] == "forbidden"
        assert httpx.get(base + "/keys/public").json()["der_b64"]
        assert issuer.stop() == 0


def _stats(stack: Stack) -> dict[str, Any]:
    reply = stack.issuer.get("/stats", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def _gauges(stack: Stack) -> dict[str, float]:
    text = httpx.get(stack.issuer_url + "/metrics").text
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("nanomoni_ledger_")
        for name, value in [line.rsplit(" ", 1)]
    }


def test_the_stats_need_the_admin_token_and_follow_the_money(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "e2e-admin-token"}):
        stack.expect_error(stack.issuer.get("/stats", headers=headers), 401, "unauthorized")
    before = _stats(stack)
    assert set(before) == {"accounts", "channels", "total_locked", "settled_total",
                           "refunded_total", "receipts_issued", "supply"}
    assert set(before["channels"]) == {"open", "closing", "closed"}
    client = stack.client()  # one account more (its grant adds to the supply)
    kept = stack.open("payword", client, amount=1000, unit=10, max_index=100)
    settled = stack.open("payword", client, amount=500, unit=10, max_index=50)
    for index in (1, 2, 3):
        assert stack.pay(settled, index).status_code == 201
    assert stack.close_channel(settled).status_code == 204
    after = _stats(stack)
    assert after["accounts"] == before["accounts"] + 1
    assert after["supply"] == before["supply"] + 1_000_000
    assert after["channels"]["open"] == before["channels"]["open"] + 1
    assert after["channels"]["closed"] == before["channels"]["closed"] + 1
    assert after["total_locked"] == before["total_locked"] + 1000
    assert after["settled_total"] == before["settled_total"] + 30
    assert after["refunded_total"] == before["refunded_total"] + 470
    assert after["receipts_issued"] == before["receipts_issued"] + 3  # 2 opens, 1 settlement
    assert kept.channel_id != settled.channel_id
    gauges = _gauges(stack)  # the same numbers on /metrics, as of this read
    assert gauges["nanomoni_ledger_accounts"] == after["accounts"]
    assert gauges['nanomoni_ledger_channels{state="closed"}'] == after["channels"]["closed"]
    assert gauges['nanomoni_ledger_amount{kind="locked"}'] == after["total_locked"]
    assert gauges['nanomoni_ledger_amount{kind="refunded"}'] == after["refunded_total"]
    assert gauges["nanomoni_ledger_receipts"] == after["receipts_issued"]


def test_the_periodic_audit_counts_a_broken_ledger(tmp_path: Any) -> None:
    """An issuer auditing every 0.3 s: its counters stay at 0 until a balance is changed
    in its SQLite file behind its back, then the conservation check counts failures."""
    def failures(url: str) -> dict[str, float]:
        text = httpx.get(url + "/metrics").text
        return {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nanomoni_audit_failures_total{")
        }

    extra = ["--audit-interval", "0.3", "--stats-interval", "0.1"]
    with start_issuer(data_dir=tmp_path, initial_balance=5, extra=extra) as issuer:
        key = b64encode(SigningKey.generate("p256").public_key_der)
        reply = httpx.post(issuer.url + "/api/v1/issuer/accounts",
                           json={"client_public_key_der_b64": key})
        assert reply.status_code == 201
        time.sleep(1.0)  # several audits of a sound ledger
        counted = failures(issuer.url)
        assert set(counted) == set(ISSUER_CHECKS)
        assert set(counted.values()) == {0.0}
        with sqlite3.connect(tmp_path / "issuer.sqlite3") as conn:
            conn.execute("UPDATE accounts SET balance = balance + 1")
        deadline = time.monotonic() + 10
        while failures(issuer.url)["conservation"] < 2:
            assert time.monotonic() < deadline, failures(issuer.url)
            time.sleep(0.1)
        assert failures(issuer.url)["locked"] == 0
        assert issuer.stop() == 0


def test_issuer_key_is_stable(stack: Stack) -> None:
    first = stack.issuer.get("/keys/public").json()["der_b64"]
    assert first == stack.issuer.get("/keys/public").json()["der_b64"]


def _opening(stack: Stack, mode: str = "payword", **changes: Any) -> tuple[Any, dict[str, Any]]:
    client = stack.client()
    body = stack.open_request(
        mode,
        client,
        amount=1000,
        unit=10,
        max_index=100,
        alg=None,
        root=os.urandom(32) if mode != "signature" else None,
    )
    return client, body


def _resign(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in body.items() if k != "open_signature_b64"}
    body["open_signature_b64"] = client.sign_b64(canonical_json(body))
    return body


def test_opening_rules(stack: Stack) -> None:
    post = stack.issuer.post
    client, body = _opening(stack)
    tampered = body | {"amount": 999}
    stack.expect_error(
        post("/channels/payword", json=tampered), 400, "invalid_signature", "signature"
    )
    # A body claiming key B but signed by key A.
    other = stack.client()
    claimed = body | {"client_public_key_der_b64": other.pk}
    stack.expect_error(post("/channels/payword", json=claimed), 400, "invalid_signature")
    stranger = stack.party()
    unregistered = _resign(stranger, body | {"client_public_key_der_b64": stranger.pk})
    stack.expect_error(post("/channels/payword", json=unregistered), 400, "not_registered")
    no_vendor = _resign(client, body | {"vendor_public_key_der_b64": stack.party().pk})
    stack.expect_error(post("/channels/payword", json=no_vendor), 400, "not_registered")
    cases = [
        ({"amount": 0, "payword_unit_value": 0}, "invalid_amount"),
        ({"amount": 2_000_000, "payword_max_k": 100}, "insufficient_balance"),
        ({"payword_unit_value": 0}, "invalid_amount"),
        ({"payword_max_k": 0}, "invalid_amount"),
        ({"payword_max_k": 101}, "exceeds_amount"),
        ({"payword_max_k": 2**24 + 1, "payword_unit_value": 1, "amount": 2**25}, "exceeds_max"),
        ({"payword_root_b64": b64encode(os.urandom(31))}, "invalid_encoding"),
        ({"payword_root_b64": "not base64!"}, "invalid_encoding"),
        ({"payword_root_b64": None}, "missing_field"),
    ]
    for change, code in cases:
        changed = {k: v for k, v in (body | change).items() if v is not None}
        reply = post("/channels/payword", json=_resign(client, changed))
        stack.expect_error(reply, 400, code)
    assert stack.balance(client.pk) == 1_000_000  # no refusal moved money
    # A PayWord body sent to another mode's path: its members are another mode's.
    stack.expect_error(post("/channels/paytree", json=body), 400, "mode_mismatch")
    stack.expect_error(post("/channels/signature", json=body), 400, "mode_mismatch")
    stack.expect_error(post("/channels/nonsense", json=body), 404, "channel_not_found")
    assert post("/channels/payword", json=body).status_code == 201
    assert stack.balance(client.pk) == 1_000_000 - 1000


@pytest.mark.parametrize("mode", ["payword", "paytree", "paytree_first_opt", "paytree_second_opt"])
def test_commitment_root_is_single_use(stack: Stack, mode: str) -> None:
    client, body = _opening(stack, mode)
    first = stack.issuer.post(f"/channels/{mode}", json=body)
    assert first.status_code == 201
    # The same signed body again is the same open (SPEC §4.3 [v1.1]): 200, same channel.
    again = stack.issuer.post(f"/channels/{mode}", json=body)
    assert again.status_code == 200 and again.json() == first.json()
    other = stack.client()
    root = body[f"{mode}_root_b64"]
    reused = stack.open_request(
        "payword", other, amount=1000, unit=10, max_index=100, alg=None, root=b""
    ) | {"payword_root_b64": root}
    stack.expect_error(
        stack.issuer.post("/channels/payword", json=_resign(other, reused)),
        400,
        "commitment_reused",
    )
    assert stack.balance(client.pk) == 1_000_000 - 1000
    assert stack.balance(other.pk) == 1_000_000


def test_concurrent_opens_never_overdraw(stack: Stack) -> None:
    client = stack.client()
    bodies = [
        stack.open_request(
            "signature", client, amount=300_000, unit=1, max_index=1, alg=None, root=None
        )
        for _ in range(6)
    ]

    def open_one(body: dict[str, Any]) -> int:
        with httpx.Client(base_url=stack.issuer_url + "/api/v1/issuer") as http:
            return http.post("/channels/signature", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(open_one, bodies))
    assert sorted(statuses) == [201, 201, 201, 400, 400, 400]
    assert stack.balance(client.pk) == 100_000


def test_reading_channels(stack: Stack) -> None:
    channel = stack.open("paytree", amount=640, max_index=64)
    read = stack.read(channel)
    assert read["channel_id"] == channel.channel_id and read["is_closed"] is False
    assert read["balance"] == 0 and read["closed_at"] is None and read["id"]
    assert read["paytree_max_i"] == 64 and read["paytree_unit_value"] == 10
    assert "payword_root_b64" not in read and "close_payload_b64" not in read
    for path in (
        f"/channels/payword/{channel.channel_id}",
        f"/channels/paytree/{'B' * 43}",
        f"/channels/bogus/{channel.channel_id}",
    ):
        stack.expect_error(stack.issuer.get(path), 404, "channel_not_found")
    signature = stack.open("signature", amount=100)
    read = stack.read(signature)
    assert read["close_payload_b64"] is None and read["client_close_signature_b64"] is None


def test_settlement_through_another_modes_path(stack: Stack) -> None:
    channel = stack.open("payword", amount=640, max_index=64)
    body = {
        "vendor_public_key_der_b64": stack.vendor_pk,
        "i": 1,
        "secret_b64": b64encode(os.urandom(32)),
        "leaf_b64": b64encode(os.urandom(32)),
        "siblings_b64": [],
        "vendor_signature_b64": b64encode(b"x" * 64),
    }
    reply = stack.issuer.post(f"/channels/paytree/{channel.channel_id}/settlements", json=body)
    stack.expect_error(reply, 400, "mode_mismatch")
    forged = {
        "vendor_public_key_der_b64": stack.vendor_pk,
        "k": 1,
        "token_b64": b64encode(channel.chain.token(1)),
        "vendor_signature_b64": b64encode(b"x" * 64),
    }
    reply = stack.issuer.post(f"/channels/payword/{channel.channel_id}/settlements", json=forged)
    stack.expect_error(reply, 400, "invalid_signature")
    assert stack.read(channel)["is_closed"] is False


def test_service_endpoints(stack: Stack) -> None:
    for url, service in ((stack.issuer_url, "issuer"), (stack.vendor_url, "vendor")):
        health = httpx.get(url + "/health").json()
        assert health == {"status": "healthy", "service": service, "version": health["version"]}
        schema = httpx.get(url + "/schema/openapi.json")
        assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    channel = stack.open("payword", amount=640, max_index=64)
    assert stack.pay(channel, 1).status_code == 201
    stack.pay(channel, 1)
    zero = {"k": 0, "token_b64": "A" * 43 + "="}
    stack.expect_error(stack.pay(channel, 1, zero), 400, "invalid_amount")
    vendor_metrics = httpx.get(stack.vendor_url + "/metrics").text
    for name in (
        'nanomoni_payments_total{mode="payword",outcome="accepted"}',
        'nanomoni_payments_total{mode="payword",outcome="replay"}',
        'nanomoni_payment_rejections_total{code="invalid_amount",mode="payword"}',
        'nanomoni_payment_duration_seconds_bucket{le="0.001",mode="payword"}',
        "nanomoni_store_duration_seconds_count",
    ):
        assert name in vendor_metrics, name
    issuer_metrics = httpx.get(stack.issuer_url + "/metrics").text
    assert 'nanomoni_channels_opened_total{mode="payword"}' in issuer_metrics
