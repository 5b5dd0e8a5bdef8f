"""Batched and streamed payments (SPEC §12) against real services, on SQLite and Redis.

The differential test pays one vendor with single POSTs and a second vendor (same
key, its own store) with the same payments as batches and WebSocket frames: every
answer and every final state must be identical. Around it: the envelope's errors,
stream frames, concurrent batches on one channel, and a vendor killed mid-batch.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.sync.client import connect

from nanomoni.launch import ServiceProcess, start_vendor
from nanomoni.protocol.model import Mode, PaymentState
from nanomoni.store import open_vendor_store

MODES = [mode.value for mode in Mode]
Stack = Any  # conftest.Stack
Channel = Any  # conftest.Channel
BAD_ID = "not-a-channel-id"


def stream_url(vendor_url: str) -> str:
    return vendor_url.replace("http://", "ws://") + "/api/v1/vendor/payments/stream"


def item(mode: str, channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "mode": mode, "channel_id": channel_id}


def answer(status: int, body: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal between the two vendors: status and code, or the §5 answer
    (created_at is each vendor's own clock)."""
    if status >= 400:
        return (status, body["code"])
    return (status, *sorted((k, v) for k, v in body.items() if k not in ("created_at", "status")))


def vendor_state(url: str, channel_ids: list[str]) -> list[PaymentState | None]:
    async def read() -> list[PaymentState | None]:
        store = await open_vendor_store(url)
        try:
            views = await store.load_many([(cid, []) for cid in channel_ids])
        finally:
            await store.close()
        states = []
        for view in views:
            assert not isinstance(view, Exception)
            states.append(view.state)
        return states

    return asyncio.run(read())


def without_time(states: list[PaymentState | None]) -> list[tuple[int, int, bytes] | None]:
    return [None if s is None else (s.index, s.owed, s.proof) for s in states]


def with_vendor_key(deployment: Any, name: str) -> Path:
    """A data directory for another vendor process with the first vendor's key."""
    directory: Path = deployment.root / name
    directory.mkdir(exist_ok=True)
    shutil.copy(deployment.root / "vendor" / "vendor-key.pem", directory / "vendor-key.pem")
    return directory


@pytest.fixture(scope="module")
def twin(deployment: Any, stack: Stack) -> Iterator[tuple[ServiceProcess, str, str]]:
    """A second vendor with the first one's key and its own store: (process, its store
    URL, the first vendor's store URL)."""
    first_dir = deployment.root / "vendor"
    second_dir = with_vendor_key(deployment, "vendor-twin")
    if deployment.vendor_store is None:
        first_url = f"sqlite:{first_dir / 'vendor.sqlite3'}"
        second_store = None
        second_url = f"sqlite:{second_dir / 'vendor.sqlite3'}"
    else:
        first_url = deployment.vendor_store
        second_url = second_store = deployment.vendor_store.rsplit("/", 1)[0] + "/2"
    process = start_vendor(data_dir=second_dir, issuer_url=stack.issuer_url, store=second_store)
    try:
        yield process, second_url, first_url
    finally:
        assert process.stop() == 0


class Sequence:
    """A random, client-realistic sequence of payments over several channels, sent as
    single POSTs to the first vendor (bodies built against what it accepted)."""

    def __init__(self, stack: Stack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.channels: list[Channel] = []
        self.sent: list[tuple[dict[str, Any], tuple[Any, ...]]] = []  # (item, answer)

    def open(self, mode: str, count: int) -> None:
        for _ in range(count):
            unit = 1 if mode == "signature" else 10  # both: 40 steps of 10
            self.channels.append(self.stack.open(mode, amount=400, unit=unit, max_index=40))

    def step(self) -> None:
        rng, stack = self.rng, self.stack
        channel = rng.choice(self.channels)
        last = channel.last or 0
        stride = 10 if channel.mode == "signature" else 1  # signature indices are amounts
        kind = rng.choices(
            ["next", "replay", "old", "tamper", "mode", "badid", "over"],
            weights=[12, 2, 2, 2, 1, 1, 1],
        )[0]
        if kind == "replay" and last:
            index = last
        elif kind == "old" and last > stride:
            index = last - stride
        else:
            index = last + stride * rng.randint(1, 3)
        if index > channel.max_index and channel.mode != "signature":
            return  # no proof exists past the commitment
        if channel.mode == "signature" and kind == "over":
            index = channel.amount + 1  # exceeds_amount
        body = dict(channel.body(index))
        mode, channel_id = channel.mode, channel.channel_id
        if kind == "tamper":
            for name in ("signature_b64", "token_b64", "secret_b64"):
                if name in body:
                    text = body[name]
                    body[name] = ("B" if text[0] == "A" else "A") + text[1:]
        elif kind == "mode":
            mode = rng.choice([m for m in MODES if m != channel.mode])
        elif kind == "badid":
            channel_id = BAD_ID
        if mode == "signature" and "channel_id" in body and channel_id != BAD_ID:
            body["channel_id"] = channel_id
        path = f"/channels/{mode}/{channel_id}/payments"
        reply = stack.vendor.post(path, json=body)
        if reply.status_code in (200, 201) and kind != "mode":
            channel.accepted(index, body)
        self.sent.append((item(mode, channel_id, body), answer(reply.status_code, reply.json())))


def send_to_twin(
    vendor_url: str, sent: list[tuple[dict[str, Any], tuple[Any, ...]]], rng: random.Random
) -> list[tuple[Any, ...]]:
    """The same items in random chunks: batch POSTs and stream frames (a lone item
    sometimes as a bare payment object)."""
    answers: list[tuple[Any, ...]] = []
    items = [sent_item for sent_item, _ in sent]
    with (
        httpx.Client(base_url=vendor_url, timeout=30) as http,
        connect(stream_url(vendor_url)) as socket,
    ):
        start = 0
        while start < len(items):
            chunk = items[start : start + rng.randint(1, 16)]
            start += len(chunk)
            if rng.random() < 0.5:
                reply = http.post("/api/v1/vendor/payments/batch", json={"payments": chunk})
                assert reply.status_code == 200, reply.text
                results = reply.json()["results"]
            else:
                lone = len(chunk) == 1 and rng.random() < 0.5
                socket.send(msgspec.json.encode(chunk[0] if lone else {"payments": chunk}).decode())
                results = msgspec.json.decode(socket.recv(timeout=30))["results"]
            assert len(results) == len(chunk)
            answers += [answer(result["status"], result) for result in results]
    return answers


@pytest.mark.parametrize("seed", [1, 2])
def test_batches_and_frames_answer_like_single_posts(
    stack: Stack, twin: tuple[ServiceProcess, str, str], seed: int
) -> None:
    second, second_url, first_url = twin
    rng = random.Random(seed)
    sequence = Sequence(stack, rng)
    for mode in MODES:
        sequence.open(mode, 2)
    for _ in range(220):
        sequence.step()
    expected = [expected for _, expected in sequence.sent]
    statuses = {answer[0] for answer in expected}
    assert {200, 201, 400, 404} <= statuses  # the sequence exercised refusals and replays
    got = send_to_twin(second.url, sequence.sent, rng)
    assert got == expected
    ids = [channel.channel_id for channel in sequence.channels]
    first_states = without_time(vendor_state(first_url, ids))
    assert first_states == without_time(vendor_state(second_url, ids))
    assert sum(state is not None for state in first_states) == len(ids)


# --- the envelope and the stream's frames --------------------------------------------------


def test_envelope_errors_are_whole_batch_errors(stack: Stack) -> None:
    post = stack.vendor.post
    path = "/payments/batch"
    for content in (b"not json", b"[]", b"{}", b'{"payments": 5}', b'{"payments": []}'):
        stack.expect_error(post(path, content=content), 422, "validation_error")
    stack.expect_error(post(path, content=b'{"payments": [], "extra": 1}'), 422, "validation_error")
    channel = stack.open("payword", amount=100, unit=1, max_index=50)
    one = item("payword", channel.channel_id, channel.body(1))
    stack.expect_error(post(path, json={"payments": [one] * 1025}), 413, "payload_too_large")
    huge = {"payments": [{**one, "pad": "x" * 1024}] * 1024}  # well over 1 MiB
    stack.expect_error(post(path, json=huge), 413, "payload_too_large")
    # Nothing of those was applied: the first payment is still new.
    reply = post(path, json={"payments": [one, one]})
    assert [r["status"] for r in reply.json()["results"]] == [201, 200]


def test_every_item_error_is_that_items_result(stack: Stack) -> None:
    channel = stack.open("paytree", amount=100, unit=1, max_index=50)
    good = item("paytree", channel.channel_id, channel.body(1))
    cases = [
        (good, 201, None),  # the vendor learns the channel here
        ({**good, "mode": "nope"}, 404, "channel_not_found"),
        ({k: v for k, v in good.items() if k != "mode"}, 422, "validation_error"),
        ({**good, "channel_id": BAD_ID}, 404, "channel_not_found"),
        ({**good, "channel_id": 7}, 404, "channel_not_found"),
        ({k: v for k, v in good.items() if k != "channel_id"}, 422, "validation_error"),
        ({**good, "secret_b64": "!!"}, 400, "invalid_encoding"),
        ({**good, "unknown": 1}, 422, "validation_error"),
        ({**good, "mode": "payword"}, 422, "validation_error"),
        ({**good, "mode": "paytree_first_opt"}, 400, "mode_mismatch"),
        ([1, 2], 422, "validation_error"),
        (good, 200, None),  # every refusal left the state as it was: an exact replay
    ]
    reply = stack.vendor.post("/payments/batch", json={"payments": [c for c, _, _ in cases]})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    for (_, status, code), result in zip(cases, results, strict=True):
        assert result["status"] == status, result
        if code is not None:
            assert result["code"] == code and result["detail"], result
    assert results[0] == {**results[-1], "status": 201}
    assert results[-1]["i"] == 1 and results[-1]["channel_id"] == channel.channel_id


def test_stream_frames_errors_keep_the_socket_open(stack: Stack) -> None:
    channel = stack.open("payword", amount=100, unit=1, max_index=50)
    with connect(stream_url(stack.vendor_url)) as socket:
        for frame, code in (("not json", "validation_error"), ("[1]", "validation_error")):
            socket.send(frame)
            assert msgspec.json.decode(socket.recv(timeout=30))["code"] == code
        socket.send("x" * (1024 * 1024 + 1))
        assert msgspec.json.decode(socket.recv(timeout=30))["code"] == "payload_too_large"
        payment = item("payword", channel.channel_id, channel.body(1))
        socket.send(msgspec.json.encode(payment).decode())
        results = msgspec.json.decode(socket.recv(timeout=30))["results"]
        assert [r["status"] for r in results] == [201]
        socket.send(msgspec.json.encode({"payments": [payment, payment]}).decode())
        results = msgspec.json.decode(socket.recv(timeout=30))["results"]
        assert [r["status"] for r in results] == [200, 200]


def test_a_quiet_stream_outlives_the_header_timeout(deployment: Any, stack: Stack) -> None:
    root = with_vendor_key(deployment, "vendor-quiet")
    env = {"NANOMONI_VENDOR_HEADER_TIMEOUT": "0.5"}
    with start_vendor(
        data_dir=root, issuer_url=stack.issuer_url, store=deployment.vendor_store, env=env
    ) as vendor:
        channel = stack.open("payword", amount=100, unit=1, max_index=50)
        with connect(stream_url(vendor.url)) as socket:
            threading.Event().wait(1.5)  # three header timeouts without a frame
            socket.send(msgspec.json.encode(item("payword", channel.channel_id, channel.body(1))))
            assert msgspec.json.decode(socket.recv(timeout=30))["results"][0]["status"] == 201
        assert vendor.stop() == 0


# --- concurrency and crashes ---------------------------------------------------------------


def test_concurrent_batches_on_one_channel_never_go_backwards(stack: Stack) -> None:
    client = stack.client()
    vendor_before = stack.balance(stack.vendor_pk)
    channel = stack.open("payword", client, amount=600, unit=1, max_index=600)
    rng = random.Random(7)
    batches = []
    for _ in range(24):  # overlapping runs of increasing indices, sent all at once
        start = rng.randint(1, 560)
        indices = sorted(rng.sample(range(start, start + 40), 12))
        batches.append([item("payword", channel.channel_id, channel.body(k)) for k in indices])

    def send(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with httpx.Client(base_url=stack.vendor_url, timeout=60) as http:
            reply = http.post("/api/v1/vendor/payments/batch", json={"payments": batch})
            assert reply.status_code == 200, reply.text
            results: list[dict[str, Any]] = reply.json()["results"]
            return results

    results: list[list[dict[str, Any]]] = [[] for _ in batches]
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, send(batches[n])))
        for n in range(len(batches))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r["k"] for batch in results for r in batch if r["status"] in (200, 201)]
    refused = {r["code"] for batch in results for r in batch if r["status"] >= 400}
    assert accepted and refused <= {"non_monotonic", "duplicate_mismatch"}
    for batch in results:  # within a batch, what was accepted only grows
        ks = [r["k"] for r in batch if r["status"] == 201]
        assert ks == sorted(ks)
    highest = max(accepted)
    # The vendor kept the highest accepted payment and settles exactly that.
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == highest
    assert stack.balance(client.pk) == 1_000_000 - highest  # conservation: the rest came back
    assert stack.balance(stack.vendor_pk) == vendor_before + highest


def test_a_vendor_killed_mid_batch_keeps_every_acknowledged_item(
    deployment: Any, stack: Stack
) -> None:
    root = with_vendor_key(deployment, "vendor-crash")
    store = deployment.vendor_store
    store_url = f"sqlite:{root / 'vendor.sqlite3'}" if store is None else store
    channels = [stack.open("payword", amount=5000, unit=1, max_index=5000) for _ in range(8)]
    acknowledged: dict[str, int] = {}
    vendor = start_vendor(data_dir=root, issuer_url=stack.issuer_url, store=store)
    stop = threading.Event()

    def pay() -> None:
        index = 0
        with httpx.Client(base_url=vendor.url, timeout=30) as http:
            while not stop.is_set():
                batch = []  # 8 payments on each of the 8 channels, interleaved
                for _ in range(8):
                    index += 1
                    for channel in channels:
                        batch.append(item("payword", channel.channel_id, channel.body(index)))
                try:
                    reply = http.post("/api/v1/vendor/payments/batch", json={"payments": batch})
                except httpx.HTTPError:
                    return  # the vendor died mid-request: that batch was never acknowledged
                for result in reply.json()["results"]:
                    assert result["status"] == 201, result
                    acknowledged[result["channel_id"]] = result["k"]

    payer = threading.Thread(target=pay)
    payer.start()
    try:
        while sum(acknowledged.values()) < 8 * 200:
            assert payer.is_alive()
            threading.Event().wait(0.01)
        os.kill(vendor.pid, signal.SIGKILL)
    finally:
        stop.set()
        payer.join(30)
        vendor.stop()
    states = vendor_state(store_url, [channel.channel_id for channel in channels])
    for channel, state in zip(channels, states, strict=True):
        assert state is not None and state.index >= acknowledged[channel.channel_id]
