"""Vendor payments and closure for every mode, on SQLite and on Redis (SPEC §5)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from nanomoni.encoding import b64encode
from nanomoni.protocol.model import Mode

MODES = [mode.value for mode in Mode]
TREE_MODES = ("paytree", "paytree_first_opt", "paytree_second_opt")
Stack = Any  # the `stack` fixture of conftest.py


def idx(mode: str, n: int) -> int:
    """The n-th index: cumulative amount in signature mode (unit 1), else k or i (unit 10)."""
    return n * 10 if mode == "signature" else n


@pytest.mark.parametrize("mode", MODES)
def test_lifecycle_with_exact_balances(stack: Stack, mode: str) -> None:
    client = stack.client()
    vendor_before = stack.balance(stack.vendor_pk)
    channel = stack.open(mode, client, amount=1000, unit=10, max_index=64)
    assert stack.balance(client.pk) == 1_000_000 - 1000

    replies = [stack.pay(channel, idx(mode, n)) for n in (1, 2, 5)]  # skipping 3 and 4
    assert [r.status_code for r in replies] == [201, 201, 201], [r.text for r in replies]
    accepted = replies[-1].json()
    assert accepted["channel_id"] == channel.channel_id
    assert accepted["cumulative_owed_amount"] == 50
    if mode != "signature":
        assert accepted["k" if mode == "payword" else "i"] == 5

    replay = stack.pay(channel, idx(mode, 5))
    assert replay.status_code == 200, replay.text
    assert replay.json() == accepted  # same created_at: the original acceptance

    assert stack.close_channel(channel).status_code == 204
    assert stack.balance(client.pk) == 1_000_000 - 50
    assert stack.balance(stack.vendor_pk) == vendor_before + 50
    read = stack.read(channel)
    assert read["is_closed"] is True and read["balance"] == 50 and read["closed_at"]
    if mode == "signature":
        assert read["client_close_signature_b64"] and read["vendor_close_signature_b64"]

    # Closing twice settles once; payments after closure are refused.
    assert stack.close_channel(channel).status_code == 204
    assert stack.balance(stack.vendor_pk) == vendor_before + 50
    stack.expect_error(stack.pay(channel, idx(mode, 6)), 400, "channel_closed")
    stack.expect_error(stack.pay(channel, idx(mode, 5)), 400, "channel_closed")


@pytest.mark.parametrize("mode", MODES)
def test_replays_duplicates_and_ordering(stack: Stack, mode: str) -> None:
    channel = stack.open(mode, amount=640, unit=10, max_index=64)
    first = stack.pay(channel, idx(mode, 3))
    assert first.status_code == 201, first.text
    body = channel.body(idx(mode, 3))

    # A conflicting duplicate of the accepted index.
    conflicting = dict(body)
    if mode == "signature":
        conflicting["signature_b64"] = stack.party().sign_b64(b"something else")
        stack.expect_error(
            stack.pay(channel, 30, conflicting), 400, "invalid_signature", "invalid", "signature"
        )
    elif mode == "payword":
        conflicting["token_b64"] = b64encode(os.urandom(32))
        stack.expect_error(
            stack.pay(channel, 3, conflicting), 400, "duplicate_mismatch", "duplicate"
        )
    else:
        conflicting["leaf_b64"] = b64encode(os.urandom(32))
        stack.expect_error(
            stack.pay(channel, 3, conflicting), 400, "duplicate_mismatch", "duplicate"
        )

    stack.expect_error(stack.pay(channel, idx(mode, 2)), 400, "non_monotonic", "increasing")
    beyond = 641 if mode == "signature" else 65
    reply = stack.pay(channel, beyond, channel.body(64) | {index_key(mode): beyond})
    if mode == "signature":
        stack.expect_error(stack.pay(channel, beyond), 400, "exceeds_amount", "exceeds")
    else:
        stack.expect_error(reply, 400, "exceeds_max", "exceeds")
    zero = channel.body(idx(mode, 3)) | {index_key(mode): 0}
    assert stack.pay(channel, 0, zero).status_code == 400

    # Nothing above changed the accepted state: the replay still matches the first answer.
    again = stack.pay(channel, idx(mode, 3), body)
    assert again.status_code == 200 and again.json() == first.json()
    assert stack.pay(channel, idx(mode, 64)).status_code == 201


def index_key(mode: str) -> str:
    return {"signature": "cumulative_owed_amount", "payword": "k"}.get(mode, "i")


@pytest.mark.parametrize("mode", MODES)
def test_tampered_proofs_are_refused(stack: Stack, mode: str) -> None:
    channel = stack.open(mode, amount=640, unit=10, max_index=64)
    if mode == "signature":
        forged = channel.body(10) | {"signature_b64": stack.party().sign_b64(b"x")}
        stack.expect_error(
            stack.pay(channel, 10, forged), 400, "invalid_signature", "invalid", "signature"
        )
        other = dataclasses.replace(channel, client=stack.party())
        stack.expect_error(stack.pay(channel, 10, other.body(10)), 400, "invalid_signature")
    elif mode == "payword":
        bad = {"k": 4, "token_b64": b64encode(os.urandom(32))}
        stack.expect_error(
            stack.pay(channel, 4, bad), 400, "invalid_proof", "invalid", "token", "mismatch"
        )
        off_by_one = {"k": 4, "token_b64": channel.body(5)["token_b64"]}
        stack.expect_error(stack.pay(channel, 4, off_by_one), 400, "invalid_proof")
    else:
        body = channel.body(4)
        flipped = list(body["siblings_b64"])
        flipped[0] = b64encode(os.urandom(32))
        stack.expect_error(
            stack.pay(channel, 4, body | {"siblings_b64": flipped}), 400, "invalid_proof"
        )
        stack.expect_error(
            stack.pay(channel, 4, body | {"leaf_b64": b64encode(os.urandom(32))}),
            400,
            "invalid_proof",
        )
        stack.expect_error(stack.pay(channel, 4, body | {"i": 5}), 400, "invalid_proof")
        short = body | {"siblings_b64": body["siblings_b64"][:-1]}
        stack.expect_error(stack.pay(channel, 4, short), 400, "invalid_proof")
        longer = body | {"siblings_b64": [*body["siblings_b64"], body["siblings_b64"][0]]}
        stack.expect_error(stack.pay(channel, 4, longer), 400, "invalid_proof")
    # The channel still works with honest payments after every refusal.
    ok = stack.pay(channel, idx(mode, 4))
    assert ok.status_code == 201, ok.text
    if mode in ("paytree_first_opt", "paytree_second_opt"):
        empty = channel.body(idx(mode, 6)) | {"siblings_b64": []}
        stack.expect_error(stack.pay(channel, 6, empty), 400, "invalid_proof")
        assert stack.pay(channel, idx(mode, 6)).status_code == 201
        assert stack.pay(channel, idx(mode, 6)).status_code == 200


@pytest.mark.parametrize("mode", MODES)
def test_wrong_vendor_and_unknown_channels(stack: Stack, mode: str) -> None:
    other_vendor = stack.client()
    channel = stack.open(mode, amount=640, max_index=64, vendor_pk=other_vendor.pk)
    stack.expect_error(stack.pay(channel, idx(mode, 1)), 400, "wrong_vendor")
    unknown = dataclasses.replace(channel, channel_id="A" * 43)
    stack.expect_error(stack.pay(unknown, idx(mode, 1)), 404, "channel_not_found")
    stack.expect_error(stack.close_channel(unknown), 400, "no_payments", "payment")


@pytest.mark.parametrize("mode", MODES)
def test_empty_channel_cannot_be_closed_but_stays_usable(stack: Stack, mode: str) -> None:
    channel = stack.open(mode, amount=640, max_index=64)
    stack.expect_error(stack.close_channel(channel), 400, "no_payments", "payment")
    assert stack.pay(channel, idx(mode, 2)).status_code == 201
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == 20


def test_channel_used_through_another_modes_path(stack: Stack) -> None:
    channel = stack.open("payword", amount=640, max_index=64)
    assert stack.pay(channel, 1).status_code == 201
    tree_body = {"i": 2, "secret_b64": b64encode(os.urandom(32)), "siblings_b64": []}
    reply = stack.vendor.post(f"/channels/paytree/{channel.channel_id}/payments", json=tree_body)
    stack.expect_error(reply, 400, "mode_mismatch")
    stack.expect_error(
        stack.vendor.post(f"/channels/bogus/{channel.channel_id}/payments", json=tree_body),
        404,
        "channel_not_found",
    )


@pytest.mark.parametrize(
    ("mode", "kind", "alg"),
    [("signature", kind, None) for kind in ("p256", "secp256k1", "ed25519")]
    + [
        (mode, kind, "blake3")
        for mode in ("payword", *TREE_MODES)
        for kind in ("secp256k1", "ed25519")
    ],
)
def test_key_kinds_and_hash_suites(stack: Stack, mode: str, kind: str, alg: str | None) -> None:
    client = stack.client(kind)
    channel = stack.open(mode, client, amount=500, unit=5, max_index=100, alg=alg)
    for n in (1, 7, 9):
        reply = stack.pay(channel, idx(mode, n))
        assert reply.status_code == 201, reply.text
    assert stack.close_channel(channel).status_code == 204
    owed = 90 if mode == "signature" else 45
    assert stack.balance(client.pk) == 1_000_000 - owed
    read = stack.read(channel)
    assert read["hash_alg"] == (alg or "sha256") and read["balance"] == owed


def test_payword_hash_work_per_payment_is_bounded(stack: Stack) -> None:
    client = stack.client()
    top = 2**20 + 5
    deposit = stack.issuer.post(
        "/accounts/deposits",
        json={"public_key_der_b64": client.pk, "amount": top},
        headers={"Authorization": "Bearer e2e-admin-token"},
    )
    assert deposit.status_code == 200, deposit.text
    channel = stack.open("payword", client, amount=top, unit=1, max_index=top)
    stack.expect_error(stack.pay(channel, 2**20 + 2), 400, "exceeds_max", "exceeds")
    assert stack.pay(channel, 2**20).status_code == 201  # 2**20 hashes, off the event loop
    assert stack.pay(channel, top).status_code == 201
    assert stack.close_channel(channel).status_code == 204
    assert stack.read(channel)["balance"] == top
    assert stack.balance(client.pk) == 1_000_000
