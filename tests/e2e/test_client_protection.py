"""The client's protection over HTTP (SPEC §4.5–§4.7), on SQLite and on Redis: channel
lifetimes, client closes and the dispute window, the vendor's watch, finalization,
checkpoints, top-ups, signed receipts and signed requests.

The issuer runs with a 3 s dispute window (and 1 s shortest lifetime), the vendor
polls for closing channels every 0.3 s."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from e2e.conftest import Channel, Deployment, Party, Stack
from websockets.sync.client import connect

from nanomoni import crypto
from nanomoni.client import Client, Wallet
from nanomoni.client.http import VendorApi
from nanomoni.encoding import b64decode, b64encode, canonical_json
from nanomoni.launch import free_port
from nanomoni.protocol.lifecycle import receipt_message, us_from_iso
from nanomoni.protocol.model import ChannelState, Mode, Receipt
from nanomoni.protocol.signed_requests import authorization

WINDOW = 3.0
ISSUER_FLAGS = ["--dispute-window", str(WINDOW), "--min-channel-ttl", "1"]
VENDOR_FLAGS = ["--watch-interval", "0.3"]
CLOSING_PATH = "/api/v1/issuer/vendors/closing-channels"


@dataclass
class Protected:
    net: Stack
    vendor_key: crypto.SigningKey
    issuer_der: bytes

    def verify(self, signed: dict[str, Any], channel_id: str) -> Receipt:
        """A receipt the issuer signed for this channel (else the test fails)."""
        receipt = Receipt(**signed["receipt"])
        assert receipt.channel_id == channel_id
        signature = b64decode(signed["receipt_signature_b64"])
        assert crypto.verify_signature(self.issuer_der, receipt_message(receipt), signature)
        return receipt

    def receipts(self, channel: Channel) -> list[Receipt]:
        view = self.net.read(channel)
        found = [self.verify(signed, channel.channel_id) for signed in view["receipts"]]
        assert [r.seq for r in found] == list(range(1, len(found) + 1))
        return found

    def settle(self, channel: Channel, k: int, final: bool | None = None) -> httpx.Response:
        """The vendor's settlement (or checkpoint) of payword token k, sent directly."""
        body = channel.payword_settlement(self.vendor_key, self.net.vendor_pk, k, final)
        return self.net.issuer.post(
            f"/channels/payword/{channel.channel_id}/settlements", json=body
        )

    def client_close(
        self, channel: Channel, signer: Party | None = None, action: str = "client_close"
    ) -> httpx.Response:
        message = canonical_json({"action": action, "channel_id": channel.channel_id})
        signature = b64encode((signer or channel.client).key.sign(message))
        return self.net.issuer.post(
            f"/channels/{channel.mode}/{channel.channel_id}/client-closures",
            json={"channel_id": channel.channel_id, "client_signature_b64": signature},
        )

    def wait_state(self, channel: Channel, state: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (view := self.net.read(channel))["state"] != state:
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
        return view


@pytest.fixture(scope="module")
def protected(deployment: Deployment, stack_factory: type[Stack]) -> Iterator[Protected]:
    with (
        deployment.start_issuer(extra=ISSUER_FLAGS) as issuer,
        deployment.start_vendor(issuer.url, extra=VENDOR_FLAGS) as vendor,
    ):
        net = stack_factory(issuer, vendor)
        try:
            key = crypto.SigningKey.from_pem(
                (deployment.root / "vendor" / "vendor-key.pem").read_bytes()
            )
            der = b64decode(net.issuer.get("/keys/public").json()["der_b64"])
            yield Protected(net, key, der)
        finally:
            net.close()
            assert vendor.stop() == 0
            assert issuer.stop() == 0


def seconds(iso: str) -> float:
    return us_from_iso(iso) / 1e6


# --- lifetimes -------------------------------------------------------------------------------


def test_a_channel_lives_ttl_s_and_answers_with_its_receipt(protected: Protected) -> None:
    net = protected.net
    client = net.client()
    for bad in (0, 30 * 24 * 3600 + 1):
        body = net.open_request(
            "signature", client, amount=10, unit=1, max_index=10, alg=None, root=None, ttl_s=bad
        )
        net.expect_error(net.issuer.post("/channels/signature", json=body), 400, "invalid_ttl")
    assert net.balance(client.pk) == 1_000_000  # refused opens locked nothing
    before = time.time()
    body = net.open_request(
        "signature", client, amount=10, unit=1, max_index=10, alg=None, root=None, ttl_s=60
    )
    reply = net.issuer.post("/channels/signature", json=body)
    assert reply.status_code == 201, reply.text
    opened = reply.json()
    assert opened["state"] == "open"
    assert before + 59 <= seconds(opened["expires_at"]) <= time.time() + 61
    receipt = protected.verify(opened, opened["channel_id"])
    assert (receipt.kind, receipt.seq, receipt.amount, receipt.client_refund) == ("open", 1, 10, 0)
    # The same open again: the same channel and receipt, nothing locked twice.
    again = net.issuer.post("/channels/signature", json=body)
    assert again.status_code == 200 and again.json()["receipt"] == opened["receipt"]
    assert net.balance(client.pk) == 1_000_000 - 10
    view = net.issuer.get(f"/channels/signature/{opened['channel_id']}").json()
    assert view["dispute_deadline"] is None and view["vendor_credited"] == 0
    assert [r["receipt"] for r in view["receipts"]] == [opened["receipt"]]


def test_an_expired_channel_takes_no_payment_and_is_settled_by_the_watch(
    protected: Protected,
) -> None:
    net = protected.net
    channel = net.open("signature", amount=100, ttl_s=1)
    assert net.pay(channel, 7).status_code == 201
    expires = seconds(net.read(channel)["expires_at"])
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    net.expect_error(net.pay(channel, 8), 400, "channel_closed")
    # The issuer starts the window at expires_at; the vendor's watch settles what it holds.
    view = protected.wait_state(channel, "closed", WINDOW)
    assert view["balance"] == 7 and view["vendor_credited"] == 7
    kinds = [r.kind for r in protected.receipts(channel)]
    assert kinds == ["open", "settlement"]
    assert net.balance(channel.client.pk) == 1_000_000 - 7


# --- the client's close --------------------------------------------------------------------


def test_a_client_close_needs_the_clients_consent(protected: Protected) -> None:
    net = protected.net
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    stranger = net.party()
    net.expect_error(protected.client_close(channel, signer=stranger), 401, "unauthorized")
    net.expect_error(protected.client_close(channel, action="vendor_close"), 401, "unauthorized")
    path = f"/channels/payword/{channel.channel_id}/client-closures"
    other = net.open("payword", amount=640, unit=10, max_index=64)
    mismatch = {"channel_id": other.channel_id, "client_signature_b64": "AAAA"}
    net.expect_error(net.issuer.post(path, json=mismatch), 400, "id_mismatch")
    net.expect_error(
        net.issuer.post("/channels/payword/x/client-closures", json=mismatch),
        404,
        "channel_not_found",
    )
    net.expect_error(
        net.issuer.post(path, json={"channel_id": channel.channel_id}), 422, "validation_error"
    )
    assert net.read(channel)["state"] == "open"  # every refusal changed nothing
    before = time.time()
    first = protected.client_close(channel)
    assert first.status_code == 202, first.text
    closing = first.json()
    assert closing["state"] == "closing"
    assert before + WINDOW - 0.5 <= seconds(closing["dispute_deadline"]) <= time.time() + WINDOW
    again = protected.client_close(channel)
    assert again.status_code == 202
    assert again.json()["dispute_deadline"] == closing["dispute_deadline"]


def test_the_vendor_watch_settles_a_client_closed_channel_in_time(protected: Protected) -> None:
    net = protected.net
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    for k in (1, 2, 5):
        assert net.pay(channel, k).status_code == 201
    closing = protected.client_close(channel).json()
    view = protected.wait_state(channel, "closed", WINDOW)
    assert seconds(view["closed_at"]) < seconds(closing["dispute_deadline"])
    assert view["balance"] == 50
    receipts = protected.receipts(channel)
    assert [(r.kind, r.owed, r.client_refund) for r in receipts[1:]] == [("settlement", 50, 590)]
    net.expect_error(net.pay(channel, 6), 400, "channel_closed")
    assert net.balance(channel.client.pk) == 1_000_000 - 50


def test_finalization_refunds_all_checkpoints_did_not_pay(protected: Protected) -> None:
    net = protected.net
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    before = net.balance(net.vendor_pk)
    checkpoint = protected.settle(channel, 4, final=False)
    assert checkpoint.status_code == 200, checkpoint.text
    assert protected.verify(checkpoint.json(), channel.channel_id).vendor_credited == 40
    # The vendor holds no payment of its own here: its watch has nothing to settle.
    closing = protected.client_close(channel).json()
    view = protected.wait_state(channel, "closed", WINDOW + 2)
    assert seconds(view["closed_at"]) >= seconds(closing["dispute_deadline"])
    assert view["balance"] == view["vendor_credited"] == 40
    receipts = protected.receipts(channel)
    assert [r.kind for r in receipts] == ["open", "checkpoint", "finalization"]
    assert (receipts[-1].client_refund, receipts[-1].owed) == (600, 0)
    assert net.balance(channel.client.pk) == 1_000_000 - 40
    assert net.balance(net.vendor_pk) == before + 40
    # Too late: no settlement (not even with the checkpoint's proof), no checkpoint.
    for k in (4, 9):
        net.expect_error(protected.settle(channel, k), 400, "already_closed")
    net.expect_error(protected.settle(channel, 9, final=False), 400, "channel_closed")
    assert net.balance(net.vendor_pk) == before + 40 and len(protected.receipts(channel)) == 3


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoints_withdraw_without_closing(protected: Protected) -> None:
    net = protected.net
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    first = protected.settle(channel, 3, final=False)
    assert first.status_code == 200, first.text
    answer = first.json()
    receipt = protected.verify(answer, channel.channel_id)
    assert (receipt.kind, receipt.owed, receipt.vendor_credited, receipt.seq) == (
        "checkpoint",
        30,
        30,
        2,
    )
    assert answer["client_balance"] == 1_000_000 - 640
    again = protected.settle(channel, 3, final=False)  # nothing new owed: the same receipt
    assert again.status_code == 200 and again.json()["receipt"] == answer["receipt"]
    # `final` is signed: flipping it in the body breaks the vendor's signature.
    forged = channel.payword_settlement(protected.vendor_key, net.vendor_pk, 5, final=False)
    forged["final"] = True
    net.expect_error(
        net.issuer.post(f"/channels/payword/{channel.channel_id}/settlements", json=forged),
        400,
        "invalid_signature",
    )
    assert net.read(channel)["state"] == "open"
    final = protected.settle(channel, 3)  # the checkpoint's proof, now final: it closes
    assert final.status_code == 200
    assert protected.verify(final.json(), channel.channel_id).client_refund == 610
    assert [r.kind for r in protected.receipts(channel)] == ["open", "checkpoint", "settlement"]


def test_a_checkpoint_on_a_closing_channel_is_refused(protected: Protected) -> None:
    net = protected.net
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    protected.client_close(channel)
    net.expect_error(protected.settle(channel, 2, final=False), 400, "channel_closed")
    settled = protected.settle(channel, 2)  # a final settlement closes it at once
    assert settled.status_code == 200 and net.read(channel)["state"] == "closed"


# --- top-ups ------------------------------------------------------------------------------------


def top_up(
    net: Stack, channel: Channel, amount: int, nonce: bytes, signer: Party | None = None
) -> httpx.Response:
    body: dict[str, Any] = {
        "channel_id": channel.channel_id,
        "amount": amount,
        "nonce_b64": b64encode(nonce),
    }
    body["client_signature_b64"] = (signer or channel.client).sign_b64(canonical_json(body))
    return net.issuer.post(f"/channels/{channel.mode}/{channel.channel_id}/top-ups", json=body)


def test_a_top_up_raises_the_amount_once_per_nonce(protected: Protected) -> None:
    net = protected.net
    channel = net.open("signature", amount=100)
    assert net.pay(channel, 100).status_code == 201
    topped = top_up(net, channel, 50, b"n" * 16)
    assert topped.status_code == 200, topped.text
    view = topped.json()
    assert view["amount"] == 150
    receipt = protected.verify(view, channel.channel_id)
    assert (receipt.kind, receipt.amount, receipt.seq) == ("top_up", 150, 2)
    again = top_up(net, channel, 50, b"n" * 16)
    assert again.status_code == 200 and again.json()["receipt"] == view["receipt"]
    net.expect_error(top_up(net, channel, 51, b"n" * 16), 400, "duplicate_mismatch")
    net.expect_error(top_up(net, channel, 5, b"m" * 16, signer=net.party()), 401, "unauthorized")
    net.expect_error(top_up(net, channel, 0, b"z" * 16), 400, "invalid_amount")
    net.expect_error(top_up(net, channel, 10**9, b"y" * 16), 400, "insufficient_balance")
    net.expect_error(top_up(net, channel, 5, b"short"), 400, "invalid_encoding")
    assert net.balance(channel.client.pk) == 1_000_000 - 150
    # The vendor re-reads the amount before refusing (at most once per channel every few
    # seconds): the payment fits now; beyond the new amount it does not.
    assert net.pay(channel, 120).status_code == 201
    net.expect_error(net.pay(channel, 151), 400, "exceeds_amount")
    hashed = net.open("payword", amount=640, unit=10, max_index=64)
    net.expect_error(top_up(net, hashed, 5, b"h" * 16), 400, "mode_mismatch")
    protected.client_close(channel)
    net.expect_error(top_up(net, channel, 5, b"late" * 4), 400, "channel_closed")


# --- signed requests -------------------------------------------------------------------------


def test_batches_and_frames_pay_past_the_amount_once_topped_up(protected: Protected) -> None:
    """Every front door re-reads a channel whose payment passes its known amount."""
    net = protected.net
    channel = net.open("signature", amount=20)

    def items(*owed: int) -> dict[str, Any]:
        return {"payments": [
            {**channel.body(n), "mode": "signature", "channel_id": channel.channel_id}
            for n in owed
        ]}  # fmt: skip

    def batch(*owed: int) -> list[tuple[int, str | None]]:
        reply = net.vendor.post("/payments/batch", json=items(*owed))
        assert reply.status_code == 200, reply.text
        return [(r["status"], r.get("code")) for r in reply.json()["results"]]

    assert batch(10, 20) == [(201, None)] * 2  # the vendor knows the amount: 20
    assert top_up(net, channel, 30, b"b" * 16).status_code == 200
    assert batch(25, 40) == [(201, None)] * 2
    assert top_up(net, channel, 10, b"s" * 16).status_code == 200
    stream = net.vendor_url.replace("http://", "ws://") + "/api/v1/vendor/payments/stream"
    with connect(stream) as socket:
        socket.send(json.dumps(items(60)))
        results = json.loads(socket.recv(timeout=30))["results"]
    assert [(r["status"], r.get("code")) for r in results] == [(201, None)]
    assert batch(61) == [(400, "exceeds_amount")]
    assert net.close_channel(channel).status_code == 204
    assert protected.wait_state(channel, "closed", 5)["balance"] == 60


def test_the_closing_list_answers_only_a_signed_request(protected: Protected) -> None:
    net = protected.net
    url = net.issuer_url + CLOSING_PATH
    vendor = protected.vendor_key
    now = int(time.time())
    good = authorization(vendor, "GET", CLOSING_PATH, b"", now)
    wrong = [
        None,
        "Bearer x",
        authorization(vendor, "GET", CLOSING_PATH + "?x=1", b"", now),  # another target
        authorization(vendor, "GET", CLOSING_PATH, b"", now - 301),  # too old
        authorization(vendor, "POST", CLOSING_PATH, b"", now),
        good.replace("ts=", "ts=1"),
    ]
    for header in wrong:
        headers = {} if header is None else {"authorization": header}
        reply = httpx.get(url, headers=headers, timeout=10)
        net.expect_error(reply, 401, "unauthorized")
    channel = net.open("payword", amount=640, unit=10, max_index=64)
    closing = protected.client_close(channel).json()
    reply = httpx.get(url, headers={"authorization": good}, timeout=10)
    assert reply.status_code == 200, reply.text
    listed = reply.json()
    assert abs(seconds(listed["now"]) - datetime.now(UTC).timestamp()) < 5
    entry = {
        "mode": "payword",
        "channel_id": channel.channel_id,
        "dispute_deadline": closing["dispute_deadline"],
    }
    assert entry in listed["channels"]
    # Another key sees its own channels only.
    stranger = net.party().key
    mine = httpx.get(
        url,
        headers={
            "authorization": authorization(stranger, "GET", CLOSING_PATH, b"", int(time.time()))
        },
        timeout=10,
    )
    assert mine.status_code == 200 and mine.json()["channels"] == []


# --- the client library ----------------------------------------------------------------------


async def library_client(protected: Protected) -> Client:
    client = Client(protected.net.issuer_url, protected.net.vendor_url, Wallet.generate())
    await client.register()
    return client


async def test_the_library_closes_through_the_vendor_and_keeps_its_receipts(
    protected: Protected,
) -> None:
    client = await library_client(protected)
    try:
        channel = await client.open_channel(Mode.paytree, 300, unit_value=3, max_index=100)
        assert [s.receipt.kind for s in channel.receipts.values()] == ["open"]
        await channel.pay_to(40)
        info = await channel.close()
        assert info.is_closed and info.balance == 120
        kinds = [channel.receipts[seq].receipt.kind for seq in sorted(channel.receipts)]
        assert kinds == ["open", "settlement"]
        assert channel.receipts[2].receipt.client_refund == 180
        assert await client.balance() == 1_000_000 - 120
    finally:
        await client.close()


async def test_with_the_vendor_gone_the_client_closes_at_the_issuer(protected: Protected) -> None:
    client = await library_client(protected)
    try:
        channel = await client.open_channel(Mode.payword, 500, unit_value=5, max_index=100)
        await channel.pay_to(10)  # the vendor holds 50 it will never settle
        client.vendor = VendorApi(client.http, f"http://127.0.0.1:{free_port()}")
        started = time.monotonic()
        closing = await channel.close(vendor_timeout=2.0)
        assert closing.state is ChannelState.closing and closing.dispute_deadline is not None
        # The real vendor's watch would settle it; here it holds the payment, so it does:
        # refusing the vendor's settlement is not the client's to decide. Either way the
        # channel closes by its deadline, and the client gets back all that was not paid.
        info = await channel.wait_closed(poll=0.2, timeout=WINDOW + 3)
        assert time.monotonic() - started < WINDOW + 3
        assert info.balance == 50 and await client.balance() == 1_000_000 - 50
        last = channel.receipts[max(channel.receipts)].receipt
        assert last.client_refund == 450 and last.kind in ("settlement", "finalization")
    finally:
        await client.close()


async def test_a_channel_no_vendor_settles_is_refunded_at_its_deadline(
    protected: Protected,
) -> None:
    client = await library_client(protected)
    try:
        channel = await client.open_channel(Mode.signature, 80)
        client.vendor = VendorApi(client.http, f"http://127.0.0.1:{free_port()}")
        await channel.close(vendor_timeout=1.0)  # nothing paid: only the issuer can close
        info = await channel.wait_closed(poll=0.2, timeout=WINDOW + 3)
        assert info.balance == 0 and await client.balance() == 1_000_000
        kinds = [channel.receipts[seq].receipt.kind for seq in sorted(channel.receipts)]
        assert kinds == ["open", "finalization"]
    finally:
        await client.close()


async def test_the_library_tops_up_and_renews_before_a_channel_runs_out(
    protected: Protected,
) -> None:
    client = await library_client(protected)
    try:
        signature = await client.open_channel(Mode.signature, 30)
        await signature.pay(30)
        receipt = await signature.top_up(20)
        assert receipt.receipt.amount == 50 and signature.max_index == 50
        assert (await signature.pay(15)).owed == 45
        # Renewing payers: the caller just pays.
        for mode in (Mode.signature, Mode.payword, Mode.paytree_second_opt):
            options: dict[str, Any] = (
                {} if mode is Mode.signature else {"unit_value": 2, "max_index": 10}
            )
            payer = await client.open_renewing(mode, 20, **options)
            for _ in range(25):
                await payer.pay(2 if mode is Mode.signature else 1)
            assert payer.owed == 50
            infos = await payer.close()
            assert all(info.state is not ChannelState.open for info in infos)
            if mode is Mode.signature:
                assert len(payer.channels) == 1 and payer.current.amount >= 50
            else:
                assert len([c for c in payer.channels if c.owed]) == 3  # 10 + 10 + 5 units
            settled = sum(info.balance for info in infos)
            assert settled == 50, [(info.state, info.balance) for info in infos]
        # The open signature channel locks 50; each renewing payer paid exactly 50.
        assert await client.balance() == 1_000_000 - 50 - 3 * 50
    finally:
        await client.close()
