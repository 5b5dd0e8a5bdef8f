"""Regression tests for the holes an outside review found (issue 10, SPEC v1.1 §1,
§4.3, §5.3, §5.6, §6): each attack as the reviewer ran it, over real HTTP, on
SQLite, Redis and a Redis Cluster.

Every refusal is checked to change nothing: balances and channel state.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from e2e.conftest import ADMIN_TOKEN, Deployment
from redis_servers import redis_cluster, redis_server

from nanomoni import crypto
from nanomoni.encoding import b64encode, canonical_json

Stack = Any  # the `stack` fixture of conftest.py

INITIAL = 1_000_000


@pytest.fixture(scope="module", params=["sqlite", "redis", "cluster"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """conftest's deployments plus both services on a 3-master Redis Cluster."""
    root = tmp_path_factory.mktemp(f"money-{request.param}")
    if request.param == "sqlite":
        yield Deployment(root, None, None)
    elif request.param == "redis":
        with redis_server() as redis:
            base = redis.url.rsplit("/", 1)[0]
            yield Deployment(root, f"{base}/0", f"{base}/1")
    else:
        with redis_cluster() as cluster:
            yield Deployment(root, cluster.url, cluster.url)


def issuer_key(stack: Stack) -> str:
    reply = stack.issuer.get("/keys/public")
    assert reply.status_code == 200
    return str(reply.json()["der_b64"])


# --- 1. aliased channel ids ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["payword", "paytree", "paytree_second_opt"])
def test_an_escaped_suffix_is_no_second_state_of_the_same_channel(stack: Stack, mode: str) -> None:
    """The reviewer paid k=1 on `<cid>%3F`, k=3 on `<cid>`, closed (issuer settled 3),
    then k=100 on `<cid>%3F` and got 201 after settlement."""
    client = stack.client()
    channel = stack.open(mode, client, amount=1000, unit=1, max_index=128)
    aliases = ["%3F", "%3Fx=1", "%23", "%23frag"]
    for alias in aliases:
        path = f"/channels/{mode}/{channel.channel_id}{alias}/payments"
        stack.expect_error(stack.vendor.post(path, json=channel.body(1)), 404, "channel_not_found")
    assert stack.pay(channel, 3).status_code == 201
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 3
    for alias in aliases:
        path = f"/channels/{mode}/{channel.channel_id}{alias}/payments"
        stack.expect_error(
            stack.vendor.post(path, json=channel.body(100)), 404, "channel_not_found"
        )
    after = stack.read(channel)
    assert after["balance"] == 3 and after["is_closed"] is True
    assert stack.balance(client.pk) == INITIAL - 3


# --- 2. replayable opens, mode not bound --------------------------------------------------


def test_twenty_identical_opens_at_once_are_one_channel_and_one_debit(stack: Stack) -> None:
    client = stack.client()
    body = stack.open_request(
        "signature", client, amount=700, unit=1, max_index=1, alg=None, root=None
    )
    with ThreadPoolExecutor(20) as pool:
        replies = list(
            pool.map(
                lambda _: httpx.post(
                    stack.issuer_url + "/api/v1/issuer/channels/signature", json=body, timeout=30
                ),
                range(20),
            )
        )
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] * 19 + [201], [reply.text for reply in replies]
    assert len({reply.json()["channel_id"] for reply in replies}) == 1
    assert stack.balance(client.pk) == INITIAL - 700


def test_a_lost_answer_is_retried_to_the_same_channel(stack: Stack) -> None:
    client = stack.client()
    channel = stack.open("payword", client, amount=500, unit=5, max_index=100)
    again = stack.issuer.post("/channels/payword", json=channel.open_body)
    assert again.status_code == 200 and again.json()["channel_id"] == channel.channel_id
    assert stack.balance(client.pk) == INITIAL - 500


def test_another_nonce_is_another_channel_with_equal_terms(stack: Stack) -> None:
    client = stack.client()
    first = stack.open("signature", client, amount=300)
    second = stack.open("signature", client, amount=300)
    assert first.channel_id != second.channel_id
    assert stack.balance(client.pk) == INITIAL - 600


@pytest.mark.parametrize("path_mode", ["signature", "paytree", "paytree_first_opt"])
def test_a_payword_open_body_opens_nothing_on_another_modes_path(
    stack: Stack, path_mode: str
) -> None:
    client = stack.client()
    body = stack.open_request(
        "payword", client, amount=400, unit=4, max_index=100, alg=None, root=os.urandom(32)
    )
    for _ in range(3):
        reply = stack.issuer.post(f"/channels/{path_mode}", json=body)
        stack.expect_error(reply, 400, "mode_mismatch")
    assert stack.balance(client.pk) == INITIAL


def test_an_open_bound_to_another_issuer_is_refused(stack: Stack) -> None:
    client = stack.client()
    elsewhere = b64encode(crypto.SigningKey.generate("p256").public_key_der)
    body = stack.open_request(
        "signature", client, amount=100, unit=1, max_index=1, alg=None, root=None,
        issuer_key=elsewhere,
    )  # fmt: skip
    stack.expect_error(stack.issuer.post("/channels/signature", json=body), 400, "wrong_issuer")
    assert stack.balance(client.pk) == INITIAL
    ours = stack.open_request(
        "signature", client, amount=100, unit=1, max_index=1, alg=None, root=None,
        issuer_key=issuer_key(stack),
    )  # fmt: skip
    assert stack.issuer.post("/channels/signature", json=ours).status_code == 201


@pytest.mark.parametrize("size", [0, 8, 15, 65])
def test_a_nonce_of_another_length_is_invalid_encoding(stack: Stack, size: int) -> None:
    client = stack.client()
    body = stack.open_request(
        "signature", client, amount=100, unit=1, max_index=1, alg=None, root=None,
        nonce=os.urandom(size),
    )  # fmt: skip
    stack.expect_error(
        stack.issuer.post("/channels/signature", json=body), 400, "invalid_encoding", "nonce"
    )
    assert stack.balance(client.pk) == INITIAL


# --- 3. PayTree leaves are no payments -------------------------------------------------------


@pytest.mark.parametrize("mode", ["paytree", "paytree_first_opt", "paytree_second_opt"])
def test_a_neighbouring_leaf_seen_as_a_sibling_pays_nothing(stack: Stack, mode: str) -> None:
    """A proof for even i shows leaf i+1 as its level-0 sibling; the reviewer presented
    it as payment i+1 and the vendor settled one unit more than the client paid."""
    client = stack.client()
    channel = stack.open(mode, client, amount=640, unit=10, max_index=63)
    honest = channel.body(2)
    assert stack.pay(channel, 2).status_code == 201
    assert channel.tree is not None
    leaf3 = channel.tree.proof(2)[0]  # revealed by the payment for 2
    # The full path of leaf 3: sibling at level 0 is leaf 2; above that, the same path.
    path3 = [channel.tree.leaf(2), *channel.tree.proof(2)[1:]]
    url = f"/channels/{mode}/{channel.channel_id}/payments"
    without_secret = {"i": 3, "leaf_b64": b64encode(leaf3), "siblings_b64": []}
    stack.expect_error(stack.vendor.post(url, json=without_secret), 422, "validation_error")
    guessed = {
        "i": 3,
        "secret_b64": b64encode(os.urandom(32)),
        "leaf_b64": b64encode(leaf3),
        "siblings_b64": [b64encode(s) for s in path3][: 0 if mode != "paytree" else None],
    }
    stack.expect_error(stack.vendor.post(url, json=guessed), 400, "invalid_proof")
    assert stack.pay(channel, 2, honest).status_code == 200  # still the accepted payment
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 20
    assert stack.balance(client.pk) == INITIAL - 20


# --- 4. closure needs the client or the operator ----------------------------------------------


def test_nobody_but_the_client_or_the_operator_closes_a_channel(stack: Stack) -> None:
    client = stack.client()
    channel = stack.open("payword", client, amount=500, unit=5, max_index=100)
    assert stack.pay(channel, 4).status_code == 201
    url = f"/channels/payword/{channel.channel_id}/closure-requests"
    stranger = stack.party()
    other = stack.open("payword", client, amount=100, unit=1, max_index=100)
    forged = [
        {"channel_id": channel.channel_id},
        {"channel_id": channel.channel_id, "client_signature_b64": stranger.sign_b64(b"x")},
        # The client's consent, but to another action or for another channel.
        {"channel_id": channel.channel_id, "client_signature_b64": channel.consent("client_close")},
        {"channel_id": channel.channel_id, "client_signature_b64": other.consent()},
    ]
    for body in forged:
        stack.expect_error(stack.vendor.post(url, json=body), 401, "unauthorized")
    wrong_token = {"Authorization": "Bearer not-the-token"}
    stack.expect_error(
        stack.vendor.post(url, json={"channel_id": channel.channel_id}, headers=wrong_token),
        401,
        "unauthorized",
    )
    read = stack.read(channel)
    assert read["is_closed"] is False and read["balance"] == 0
    assert stack.pay(channel, 5).status_code == 201  # still open for payments
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 25


def test_a_channel_without_payments_refuses_before_checking_the_signature(stack: Stack) -> None:
    channel = stack.open("signature", stack.client(), amount=100)
    url = f"/channels/signature/{channel.channel_id}/closure-requests"
    body = {"channel_id": channel.channel_id, "client_signature_b64": b64encode(b"junk")}
    stack.expect_error(stack.vendor.post(url, json=body), 400, "no_payments")


# --- 7. low: encodings, routes --------------------------------------------------------------


def test_base64_with_non_zero_padding_bits_is_refused(stack: Stack) -> None:
    key = crypto.SigningKey.generate("p256").public_key_der  # 91 bytes: text ends in '=='
    text = b64encode(key)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = len(text.rstrip("=")) - 1
    assert last < len(text) - 1
    # Same bytes, another text: the character before the padding with a padding bit set.
    other = text[:last] + alphabet[alphabet.index(text[last]) | 1] + text[last + 1 :]
    assert base64.b64decode(other) == key
    reply = stack.issuer.post("/accounts", json={"client_public_key_der_b64": other})
    stack.expect_error(reply, 400, "invalid_encoding", "canonical")
    found = stack.issuer.get("/accounts", params={"public_key_der_b64": other})
    assert found.status_code == 404


def test_a_raw_path_that_is_no_text_gets_a_json_400(stack: Stack) -> None:
    host, port = stack.vendor_url.removeprefix("http://").split(":")
    request = (
        b"POST /api/v1/vendor/channels/payword/\xff\xfe/payments HTTP/1.1\r\n"
        b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"application/json" in head.lower()
    assert httpx.Response(400, content=body).json()["code"] == "invalid_encoding"


def test_a_consent_is_bound_to_its_action_and_channel() -> None:
    # What the client library and these tests sign (SPEC §5.6).
    message = canonical_json({"action": "vendor_close", "channel_id": "A" * 43})
    assert message == b'{"action":"vendor_close","channel_id":"' + b"A" * 43 + b'"}'


# --- 8. hashing amplification -----------------------------------------------------------------


def test_failed_expensive_payments_are_rate_limited_per_channel_and_address(stack: Stack) -> None:
    """A wrong token for k − k_prev = 2^20 costs the vendor ~45 ms of hashing. The
    budget per (channel, client address) is 2^24 failed hashes a minute: 16 such
    failures, then 429 with Retry-After; other addresses and cheap failures are
    unaffected."""
    client = stack.client()
    max_k = 2**20 + 8
    deposit = {"public_key_der_b64": client.pk, "amount": max_k}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert stack.issuer.post("/accounts/deposits", json=deposit, headers=headers).status_code == 200
    channel = stack.open("payword", client, amount=max_k, unit=1, max_index=max_k)
    url = f"{stack.vendor_url}/api/v1/vendor/channels/payword/{channel.channel_id}/payments"
    bad = {"k": 2**20, "token_b64": b64encode(os.urandom(32))}
    # Loopback is all of 127/8: the attacker sends from 127.0.0.2.
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30)
    try:
        replies = [attacker.post(url, json=bad) for _ in range(17)]
        assert [reply.json()["code"] for reply in replies[:16]] == ["invalid_proof"] * 16
        limited = replies[16]
        stack.expect_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # Cheap refusals still answer as usual: nothing is hashed for them.
        stale = attacker.post(url, json={"k": 0, "token_b64": bad["token_b64"]})
        stack.expect_error(stale, 400, "invalid_amount")
    finally:
        attacker.close()
    # The channel's own client, from another address, pays on: even an expensive payment.
    assert stack.pay(channel, 2**20).status_code == 201
    assert stack.pay(channel, 2**20 + 1).status_code == 201
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 2**20 + 1
    assert stack.balance(client.pk) == INITIAL + max_k - (2**20 + 1)
