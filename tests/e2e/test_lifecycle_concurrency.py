"""Races, restarts and repairs: concurrent payments and closures on one channel, a vendor
killed mid-stream, a settlement the vendor never recorded, several vendor workers."""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanomoni import crypto
from nanomoni.protocol.model import Mode

MODES = [mode.value for mode in Mode]
Stack = Any  # the `stack` fixture of conftest.py
Deployment = Any  # the `deployment` fixture of conftest.py


def unit_of(mode: str) -> int:
    return 1 if mode == "signature" else 10


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=30) as http:
        return http.post(path, json=body)


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_payments_and_closures_on_one_channel(stack: Stack, mode: str) -> None:
    client = stack.client()
    vendor_before = stack.balance(stack.vendor_pk)
    channel = stack.open(mode, client, amount=640, unit=unit_of(mode), max_index=64)
    # Full-path proofs built up front; the pruned modes prune against "nothing accepted",
    # so racing payments that arrive after another one are refused, never mis-accepted.
    indices = list(range(1, 41))
    random.shuffle(indices)
    bodies = {index: channel.body(index) for index in indices}
    base = stack.vendor_url + "/api/v1/vendor"
    path = f"/channels/{mode}/{channel.channel_id}/payments"
    with ThreadPoolExecutor(8) as pool:
        replies = dict(
            zip(indices, pool.map(lambda i: _post(base, path, bodies[i]), indices), strict=True)
        )
    accepted = [index for index, reply in replies.items() if reply.status_code == 201]
    assert accepted, "no payment was accepted"
    for reply in replies.values():
        assert reply.status_code in (201, 400), reply.text
        if reply.status_code == 400:
            assert reply.json()["code"] in ("non_monotonic", "invalid_proof"), reply.text
    best = max(accepted)

    close_path = f"/channels/{mode}/{channel.channel_id}/closure-requests"
    closure = {"channel_id": channel.channel_id, "client_signature_b64": channel.consent()}
    with ThreadPoolExecutor(6) as pool:
        closures = list(pool.map(lambda _: _post(base, close_path, closure), range(6)))
    assert [c.status_code for c in closures] == [204] * 6, [c.text for c in closures]
    owed = best * unit_of(mode)
    assert stack.read(channel)["balance"] == owed
    assert stack.balance(stack.vendor_pk) == vendor_before + owed
    assert stack.balance(client.pk) == 1_000_000 - owed


@pytest.fixture(scope="module")
def issuer(deployment: Deployment) -> Iterator[Any]:
    with deployment.start_issuer() as service:
        yield service
        assert service.stop() == 0


def _vendor(deployment: Deployment, issuer_url: str, data_dir: Path, workers: int = 1) -> Any:
    from nanomoni.launch import start_vendor

    return start_vendor(
        data_dir=data_dir, issuer_url=issuer_url, store=deployment.vendor_store, workers=workers
    )


@pytest.mark.parametrize("mode", MODES)
def test_vendor_killed_mid_stream_keeps_acknowledged_payments(
    deployment: Deployment, issuer: Any, stack_factory: Any, tmp_path: Path, mode: str
) -> None:
    vendor = _vendor(deployment, issuer.url, tmp_path / "vendor")
    stack = stack_factory(issuer, vendor)
    try:
        client = stack.client()
        channel = stack.open(mode, client, amount=640, unit=unit_of(mode), max_index=64)
        for index in (1, 2, 3, 6):
            assert stack.pay(channel, index).status_code == 201
        vendor.process.send_signal(
            signal.SIGKILL
        )  # no graceful shutdown: only durable state survives
        vendor.process.wait()
        vendor = _vendor(deployment, issuer.url, tmp_path / "vendor")
        stack.use_vendor(vendor)
        assert stack.pay(channel, 6).status_code == 200  # the replay of the acknowledged one
        stack.expect_error(stack.pay(channel, 5), 400, "non_monotonic")
        assert stack.pay(channel, 9).status_code == 201
        assert stack.close_channel(channel).status_code == 204
        assert stack.read(channel)["balance"] == 9 * unit_of(mode)
        assert stack.balance(client.pk) == 1_000_000 - 9 * unit_of(mode)
    finally:
        stack.close()
        assert vendor.stop() == 0


def test_settlement_the_vendor_never_recorded_is_repaired(
    deployment: Deployment, issuer: Any, stack_factory: Any, tmp_path: Path
) -> None:
    """The issuer settled, the vendor crashed before recording it: a retry answers 204 and
    money moves once."""
    vendor = _vendor(deployment, issuer.url, tmp_path / "vendor")
    stack = stack_factory(issuer, vendor)
    try:
        client = stack.client()
        vendor_before = stack.balance(stack.vendor_pk)
        channel = stack.open("payword", client, amount=640, max_index=64)
        assert stack.pay(channel, 4).status_code == 201
        # What the vendor would have sent, signed with its own key from its data directory.
        key = crypto.SigningKey.from_pem((tmp_path / "vendor" / "vendor-key.pem").read_bytes())
        settlement = channel.payword_settlement(key, stack.vendor_pk, 4)
        path = f"/channels/payword/{channel.channel_id}/settlements"
        first = stack.issuer.post(path, json=settlement)
        assert first.status_code == 200, first.text
        assert stack.issuer.post(path, json=settlement).json() == first.json()  # safe retry
        # ...counted as a replay, so "open channels = opened - settled" stays right.
        replays = [
            line
            for line in httpx.get(issuer.url + "/metrics").text.splitlines()
            if line.startswith('nanomoni_settlements_total{mode="payword",outcome="replay"}')
        ]
        assert replays and float(replays[0].rsplit(" ", 1)[1]) >= 1
        # A restarted vendor no longer caches the (now closed) channel: it re-learns it.
        assert vendor.stop() == 0
        vendor = _vendor(deployment, issuer.url, tmp_path / "vendor")
        stack.use_vendor(vendor)
        assert stack.close_channel(channel).status_code == 204
        assert stack.close_channel(channel).status_code == 204
        assert stack.balance(stack.vendor_pk) == vendor_before + 40
        assert stack.balance(client.pk) == 1_000_000 - 40
        # A different proof on the closed channel is refused.
        other = channel.payword_settlement(key, stack.vendor_pk, 3)
        stack.expect_error(stack.issuer.post(path, json=other), 400, "already_closed")
    finally:
        stack.close()
        assert vendor.stop() == 0


def test_several_vendor_workers_share_one_port_and_one_metrics_view(
    deployment: Deployment, issuer: Any, stack_factory: Any, tmp_path: Path
) -> None:
    vendor = _vendor(deployment, issuer.url, tmp_path / "vendor", workers=2)
    stack = stack_factory(issuer, vendor)
    try:
        channels = [
            stack.open(mode, amount=640, unit=unit_of(mode), max_index=64) for mode in MODES
        ]
        jobs = [(channel, n) for n in (1, 2, 3, 4) for channel in channels]
        base = stack.vendor_url + "/api/v1/vendor"
        for channel, n in jobs:  # in order per channel, spread over fresh connections (and workers)
            index = n * 10 if channel.mode == "signature" else n
            body = channel.body(index)
            reply = _post(base, f"/channels/{channel.mode}/{channel.channel_id}/payments", body)
            assert reply.status_code == 201, reply.text
            channel.accepted(index, body)
        text = httpx.get(stack.vendor_url + "/metrics").text
        total = sum(
            float(value)
            for value in re.findall(
                r'nanomoni_payments_total\{mode="[a-z_]+",outcome="accepted"\} ([0-9.e+]+)', text
            )
        )
        assert total == len(jobs)
        for channel in channels:
            assert stack.close_channel(channel).status_code == 204
            assert stack.read(channel)["balance"] == 40
    finally:
        stack.close()
        assert vendor.stop() == 0


def test_issuer_refusal_is_a_settlement_failure(
    deployment: Deployment, issuer: Any, stack_factory: Any, tmp_path: Path
) -> None:
    """The issuer already settled the channel with another proof: closing answers 502
    settlement_failed with the issuer's reason, and no money moves again."""
    vendor = _vendor(deployment, issuer.url, tmp_path / "vendor")
    stack = stack_factory(issuer, vendor)
    try:
        client = stack.client()
        channel = stack.open("payword", client, amount=640, max_index=64)
        assert stack.pay(channel, 4).status_code == 201
        key = crypto.SigningKey.from_pem((tmp_path / "vendor" / "vendor-key.pem").read_bytes())
        earlier = channel.payword_settlement(key, stack.vendor_pk, 3)
        path = f"/channels/payword/{channel.channel_id}/settlements"
        assert stack.issuer.post(path, json=earlier).status_code == 200
        vendor_balance = stack.balance(stack.vendor_pk)
        refused = stack.close_channel(channel)
        stack.expect_error(refused, 502, "settlement_failed")
        assert "already settled" in refused.json()["detail"]
        assert stack.balance(stack.vendor_pk) == vendor_balance
        assert stack.read(channel)["balance"] == 30
    finally:
        stack.close()
        assert vendor.stop() == 0

