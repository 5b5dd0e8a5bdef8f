"""The whole lifecycle of every mode with both services on a 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_servers import redis_cluster

from nanomoni.launch import start_issuer, start_vendor
from nanomoni.protocol.model import Mode


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory, stack_factory: Any) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("cluster")
    with (
        redis_cluster() as cluster,
        start_issuer(
            data_dir=root / "issuer", store=cluster.url, initial_balance=1_000_000
        ) as issuer,
        start_vendor(data_dir=root / "vendor", issuer_url=issuer.url, store=cluster.url) as vendor,
    ):
        stack = stack_factory(issuer, vendor)
        try:
            yield stack
        finally:
            stack.close()
            assert vendor.stop() == 0
            assert issuer.stop() == 0


@pytest.mark.parametrize("mode", [mode.value for mode in Mode])
def test_lifecycle_on_a_cluster(cluster_stack: Any, mode: str) -> None:
    stack = cluster_stack
    client = stack.client()
    vendor_before = stack.balance(stack.vendor_pk)
    channel = stack.open(mode, client, amount=640, unit=10, max_index=64)
    indices = [10, 30, 70] if mode == "signature" else [1, 3, 7]
    for index in indices:
        reply = stack.pay(channel, index)
        assert reply.status_code == 201, reply.text
    assert stack.pay(channel, indices[-1]).status_code == 200
    assert stack.close_channel(channel).status_code == 204
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 70
    assert stack.balance(client.pk) == 1_000_000 - 70
    assert stack.balance(stack.vendor_pk) == vendor_before + 70


def test_one_batch_over_every_mode_and_many_slots(cluster_stack: Any) -> None:
    """A batch whose channels live on all three masters: one script call per slot."""
    stack = cluster_stack
    client = stack.client()
    vendor_before = stack.balance(stack.vendor_pk)
    channels = [
        stack.open(mode.value, client, amount=640, unit=10, max_index=64)
        for mode in Mode
        for _ in range(3)
    ]
    items = []
    for step in (1, 2, 4):
        for channel in channels:
            index = step * 10 if channel.mode == "signature" else step
            body = channel.body(index)
            channel.accepted(index, body)  # the next body prunes against it (first/second opt)
            items.append({**body, "mode": channel.mode, "channel_id": channel.channel_id})
    reply = stack.vendor.post("/payments/batch", json={"payments": items})
    assert reply.status_code == 200, reply.text
    assert [result["status"] for result in reply.json()["results"]] == [201] * len(items)
    for channel in channels:
        assert stack.close_channel(channel).status_code == 204
        assert stack.read(channel)["balance"] == 40
    assert stack.balance(stack.vendor_pk) == vendor_before + 40 * len(channels)
    assert stack.balance(client.pk) == 1_000_000 - 40 * len(channels)
