"""The 402 paywall over real HTTP (SPEC §11): a priced API under uvicorn, once as
Litestar on Redis and once as FastAPI on SQLite, an issuer beside it, and
Payment headers built by hand from channels opened at the issuer."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from e2e.paywall_support import (
    PaidApi,
    Url,
    b64url,
    credit,
    paid_api,
    payment_header,
    receipt_of,
    requirements_of,
)
from redis_servers import redis_server

from nanomoni.launch import start_issuer
from nanomoni.protocol.model import Mode

MODES = [mode.value for mode in Mode]
PAUSE = 2.0  # seconds a metered stream waits for credit in these tests
INITIAL_BALANCE = 1_000_000


@dataclass
class Paid:
    stack: Any  # the e2e Stack: issuer and the paywall's vendor endpoints
    api: PaidApi
    http: httpx.Client

    def get(self, path: str, header: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {} if header is None else {"Payment": header}
        return self.http.get(path, headers=headers, **kwargs)

    def served(self) -> dict[str, int]:
        return self.http.get("/served").json()  # type: ignore[no-any-return]

    def open(self, mode: str, price: int, units: int, **kwargs: Any) -> Any:
        """A channel worth `units` prices (unit value = price; signature: amounts)."""
        return self.stack.open(mode, amount=price * units, unit=price, max_index=units, **kwargs)


def index(channel: Any, owed: int) -> int:
    """The index that owes `owed` on this channel."""
    return owed if channel.mode == "signature" else owed // channel.unit


@pytest.fixture(scope="module", params=[("litestar", "redis"), ("fastapi", "sqlite")], ids=str)
def paid(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stack_factory: Any
) -> Iterator[Paid]:
    framework, store = request.param
    root = tmp_path_factory.mktemp(f"paywall-{framework}")
    with ExitStack() as stack:
        if store == "redis":
            base = stack.enter_context(redis_server()).url.rsplit("/", 1)[0]
            issuer_store, api_store = f"{base}/0", f"{base}/1"
        else:
            issuer_store, api_store = None, f"sqlite:{root / 'paywall.sqlite3'}"
        issuer = stack.enter_context(
            start_issuer(
                data_dir=root / "issuer", store=issuer_store, initial_balance=INITIAL_BALANCE
            )
        )
        api = stack.enter_context(
            paid_api(
                framework,
                issuer_url=issuer.url,
                store=api_store,
                key_file=root / "vendor-key.pem",
                env={"PAID_PAUSE": str(PAUSE)},
            )
        )
        net = stack_factory(issuer, Url(api.url))
        stack.callback(net.close)
        with httpx.Client(base_url=api.url, timeout=30) as http:
            yield Paid(net, api, http)
        assert issuer.stop() == 0


def test_unpriced_routes_pass_untouched(paid: Paid) -> None:
    reply = paid.get("/free", header="not even base64")
    assert reply.status_code == 200 and reply.json() == {"free": "yes"}
    assert "payment-receipt" not in reply.headers
    assert paid.get("/maybe", params={"free": "1"}).status_code == 200  # priced 0 this time


def test_a_priced_route_asks_for_payment(paid: Paid) -> None:
    before = paid.served()
    reply = paid.get("/quotes/ACME")
    wanted = requirements_of(reply)
    assert reply.json()["code"] == "payment_required"
    assert wanted == {
        "version": 1,
        "issuer_url": paid.stack.issuer_url,
        "vendor_public_key_der_b64": paid.stack.vendor_pk,
        "price": 3,
        "modes": MODES,
        "hash_algs": ["sha256", "blake3"],
        "per": "request",
    }
    metered = requirements_of(paid.get("/events"))
    assert metered["per"] == "chunk" and metered["price"] == 2
    assert requirements_of(paid.get("/maybe"))["price"] == 4  # a callable's price
    assert paid.served() == before  # nothing ran unpaid


@pytest.mark.parametrize("mode", MODES)
def test_pay_per_request_and_prepaid_credit(paid: Paid, mode: str) -> None:
    channel = paid.open(mode, 3, 20)
    before = paid.served().get("quotes", 0)
    # One payment worth one request.
    body = channel.body(index(channel, 3))
    reply = paid.get("/quotes/ACME", payment_header(channel, body))
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"symbol": "ACME", "price": 42}
    channel.accepted(index(channel, 3), body)
    assert receipt_of(reply) == {
        "channel_id": channel.channel_id, "owed": 3, "consumed": 3, "price": 3,
    }  # fmt: skip
    # No credit left: the channel alone is refused, with where it stands.
    credit_only = payment_header(channel, None)
    refused = paid.get("/quotes/ACME", credit_only)
    requirements_of(refused)
    assert refused.json()["code"] == "insufficient_credit"
    assert refused.json()["credit"] == {"channel_id": channel.channel_id, "owed": 3, "consumed": 3}
    # Prepay three requests at once, then spend the credit without paying again.
    body = channel.body(index(channel, 12))
    assert receipt_of(paid.get("/quotes/X", payment_header(channel, body)))["consumed"] == 6
    channel.accepted(index(channel, 12), body)
    assert receipt_of(paid.get("/quotes/Y", credit_only))["consumed"] == 9
    assert receipt_of(paid.get("/quotes/Z", credit_only))["consumed"] == 12
    assert paid.get("/quotes/Z", credit_only).json()["code"] == "insufficient_credit"
    assert paid.served()["quotes"] == before + 4
    # A POST with a body and a callable price pays the same way.
    body = channel.body(index(channel, 15))
    echoed = paid.http.post(
        "/echo", content=b"hello", headers={"Payment": payment_header(channel, body)}
    )
    assert echoed.json() == {"echo": "hello"} and receipt_of(echoed)["price"] == 2
    channel.accepted(index(channel, 15), body)
    # Settlement is the best payment: prepaid credit never consumed stays paid.
    assert paid.stack.close_channel(channel).status_code == 204
    read = paid.stack.read(channel)
    assert read["is_closed"] and read["balance"] == 15


def test_a_replayed_payment_adds_no_credit(paid: Paid) -> None:
    channel = paid.open("payword", 3, 10)
    header = payment_header(channel, channel.body(2))  # owed 6: two requests
    assert receipt_of(paid.get("/quotes/A", header))["consumed"] == 3
    assert receipt_of(paid.get("/quotes/A", header))["consumed"] == 6  # the credit, not the replay
    refused = paid.get("/quotes/A", header)
    assert refused.json()["code"] == "insufficient_credit"
    assert refused.json()["credit"]["owed"] == 6


def test_a_retried_request_is_charged_once(paid: Paid) -> None:
    channel = paid.open("payword", 3, 30)
    header = payment_header(channel, channel.body(4), request_id="retry-" + "a" * 20)
    first = paid.get("/quotes/R", header)
    again = paid.get("/quotes/R", header)
    assert first.status_code == again.status_code == 200
    assert receipt_of(first) == receipt_of(again) == {
        "channel_id": channel.channel_id, "owed": 12, "consumed": 3, "price": 3,
    }  # fmt: skip
    # Concurrent duplicates in flight: all served, charged once.
    twin = payment_header(channel, None, request_id="twin-" + "b" * 20)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: paid.get("/quotes/T", twin), range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    assert {receipt_of(r)["consumed"] for r in replies} == {6}
    assert receipt_of(paid.get("/quotes/S", payment_header(channel, None)))["consumed"] == 9


def test_concurrent_requests_never_share_credit(paid: Paid) -> None:
    """50 requests at once against credit for exactly 20: exactly 20 are served."""
    channel = paid.open("payword", 3, 40)
    body = channel.body(20)
    assert paid.stack.pay(channel, 20, body).status_code == 201  # prepaid: owed 60
    before = paid.served()["quotes"]
    credit_only = payment_header(channel, None)
    start = threading.Barrier(50)

    def one(n: int) -> int:
        start.wait()
        return paid.get(f"/quotes/C{n}", credit_only).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses.count(200) == 20 and statuses.count(402) == 30
    assert paid.served()["quotes"] == before + 20
    refused = paid.get("/quotes/C", credit_only).json()
    assert refused["credit"] == {"channel_id": channel.channel_id, "owed": 60, "consumed": 60}


BAD_HEADERS = {
    "not base64url": ("!!!!", "invalid_encoding"),
    "padded": (b64url(b'{"mode":"payword"}') + "==", "invalid_encoding"),
    "standard alphabet": ("eyJh+/8", "invalid_encoding"),
    "non-canonical": ("QR", "invalid_encoding"),
    "oversized": ("A" * 9000, "validation_error"),
    "not JSON": (b64url(b"nope"), "validation_error"),
    "a JSON list": (b64url(b"[1, 2]"), "validation_error"),
    "no mode": (b64url(b'{"channel_id": "x"}'), "validation_error"),
    "unknown mode": (b64url(b'{"mode": "cheque", "channel_id": "x"}'), "validation_error"),
    "bad channel id": (b64url(b'{"mode": "payword", "channel_id": "x"}'), "channel_not_found"),
}


@pytest.mark.parametrize("case", BAD_HEADERS, ids=str)
def test_bad_payment_headers_are_402_and_run_nothing(paid: Paid, case: str) -> None:
    header, code = BAD_HEADERS[case]
    before = paid.served()
    reply = paid.get("/quotes/BAD", header)
    requirements_of(reply)
    assert reply.json()["code"] == code, reply.text
    assert paid.served() == before


def test_bad_payment_members_are_402(paid: Paid) -> None:
    channel = paid.open("payword", 3, 10)
    good = channel.body(1)
    cases = {
        "validation_error": {**good, "surprise": 1},
        "invalid_encoding": {**good, "token_b64": "not base64"},
        "invalid_proof": {**good, "token_b64": channel.body(2)["token_b64"]},
    }
    for code, body in cases.items():
        reply = paid.get("/quotes/M", payment_header(channel, body))
        assert reply.status_code == 402 and reply.json()["code"] == code, reply.text
    short = payment_header(channel, good, request_id="short")
    assert paid.get("/quotes/M", short).json()["code"] == "validation_error"
    other_mode = paid.get(
        "/quotes/M", payment_header(channel, good).replace(b64url(b'"payword"')[:4], "")
    )
    assert other_mode.status_code == 402


def test_a_payment_for_another_vendor_is_refused(paid: Paid) -> None:
    elsewhere = paid.stack.party()
    paid.stack.register(elsewhere)
    channel = paid.stack.open("payword", amount=30, unit=3, max_index=10, vendor_pk=elsewhere.pk)
    reply = paid.get("/quotes/W", payment_header(channel, channel.body(1)))
    assert reply.status_code == 402 and reply.json()["code"] == "wrong_vendor"


def test_a_failing_app_is_not_paid_for(paid: Paid) -> None:
    channel = paid.open("payword", 5, 10)
    body = channel.body(2)
    # (A server drops the connection of a request whose app raised: use a fresh one.)
    failed = httpx.get(
        f"{paid.api.url}/boom", headers={"Payment": payment_header(channel, body)}, timeout=30
    )
    assert failed.status_code == 500
    channel.accepted(2, body)
    if "payment-receipt" in failed.headers:  # the app answered 500 itself: given back
        assert receipt_of(failed) == {
            "channel_id": channel.channel_id, "owed": 10, "consumed": 0, "price": 0,
        }  # fmt: skip
    assert paid.served()["boom"] >= 1
    spent = paid.get("/quotes/ok", payment_header(channel, None))
    assert receipt_of(spent)["consumed"] == 3  # the failed request was given back


def _events(reply: httpx.Response) -> list[tuple[str, str]]:
    found = []
    kind = "message"
    for line in reply.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            found.append((kind, line[6:]))
            kind = "message"
    return found


def test_metered_stream_pauses_for_credit(paid: Paid) -> None:
    channel = paid.open("payword", 2, 20)
    body = channel.body(3)  # owed 6: three events of 2
    header = payment_header(channel, body)
    channel.accepted(3, body)
    seen: list[tuple[str, str]] = []
    with paid.http.stream("GET", "/events?n=5", headers={"Payment": header}) as reply:
        assert reply.status_code == 200
        assert receipt_of(reply)["consumed"] == 0
        kind = "message"
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen.append((kind, line[6:]))
                if kind == "payment-required":
                    wanted = json.loads(line[6:])
                    assert wanted["channel_id"] == channel.channel_id
                    assert wanted["per"] == "chunk" and wanted["price"] == 2
                    assert (wanted["owed"], wanted["consumed"]) == (6, 6)
                    url = wanted["payments_url"]
                    paying = paid.http.post(url, json={"mode": "payword", **channel.body(5)})
                    assert paying.status_code == 201, paying.text
                kind = "message"
    kinds = [kind for kind, _ in seen]
    assert kinds == ["message"] * 3 + ["payment-required"] + ["message"] * 2
    assert [data for _, data in seen if _ == "message"] == [f"event {n}" for n in range(5)]
    refused = paid.get("/quotes/S", payment_header(channel, None)).json()
    assert refused["credit"] == {"channel_id": channel.channel_id, "owed": 10, "consumed": 10}


def test_an_unpaid_stream_ends_after_its_pause(paid: Paid) -> None:
    channel = paid.open("payword", 2, 20)
    header = payment_header(channel, channel.body(1))
    started = time.monotonic()
    with paid.http.stream("GET", "/events?n=5", headers={"Payment": header}) as reply:
        seen = _events(reply)
    waited = time.monotonic() - started
    assert [kind for kind, _ in seen] == ["message", "payment-required"]
    assert PAUSE - 0.5 < waited < PAUSE + 5
    # Admission needs the price of one event; nothing at all is 402.
    refused = paid.get("/events", payment_header(channel, None))
    assert refused.status_code == 402 and refused.json()["code"] == "insufficient_credit"


def test_metered_by_units_and_per_request_otherwise(paid: Paid) -> None:
    channel = paid.open("payword", 1, 64)
    body = channel.body(12)  # 6 for the tokens, 6 for one plain answer
    paying = {"Payment": payment_header(channel, body)}
    with paid.http.stream("GET", "/tokens", headers=paying) as r:
        assert [data for _, data in _events(r)] == ["one", "two words", "three more words"]
    credit_only = payment_header(channel, None)
    plain = paid.get("/plain", credit_only)  # a metered route answering JSON: per request
    assert plain.json() == {"plain": "json"} and receipt_of(plain)["consumed"] == 6 + 6
    refused = paid.get("/plain", credit_only)
    assert refused.status_code == 402 and refused.json()["code"] == "insufficient_credit"


KILLED_CLIENT = """
import sys, httpx
with httpx.stream("GET", sys.argv[1], headers={"Payment": sys.argv[2]}, timeout=30) as reply:
    for line in reply.iter_lines():
        if line.startswith("data: "):
            print(line, flush=True)
"""


def test_a_client_killed_mid_stream_pays_only_for_what_it_was_sent(paid: Paid) -> None:
    import signal
    import subprocess
    import sys

    channel = paid.open("payword", 2, 200)
    body = channel.body(200)  # plenty of credit: 200 events
    header = payment_header(channel, body)
    url = f"{paid.api.url}/events?n=200&delay=0.05&tag=killed-{os.getpid()}"
    client = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, url, header], stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None
    received = 0
    try:
        for _ in client.stdout:
            received += 1
            if received == 10:
                client.send_signal(signal.SIGKILL)
                break
    finally:
        client.kill()
        client.wait()
    time.sleep(1.0)
    spent = _consumed(paid, channel)
    time.sleep(0.5)
    assert _consumed(paid, channel) == spent  # nothing more is charged once it left
    assert 10 * 2 <= spent <= (10 + 3) * 2, spent  # what it read, plus what was in flight


def _consumed(paid: Paid, channel: Any) -> int:
    """What the paywall's store says the channel has consumed."""
    return credit(paid.api.store, channel.channel_id)[1]


def test_payments_url_answers_like_the_vendor(paid: Paid) -> None:
    channel = paid.open("paytree_second_opt", 2, 16)
    for n in (1, 2, 5):
        assert paid.stack.pay(channel, n).status_code == 201
    assert paid.stack.pay(channel, 5).status_code == 200  # replay
    paid.stack.expect_error(paid.stack.pay(channel, 4), 400, "non_monotonic")
    mismatched = paid.http.post(
        f"/api/v1/vendor/channels/payword/{channel.channel_id}/payments",
        json={"mode": "signature", "channel_id": channel.channel_id},
    )
    assert mismatched.status_code == 400 and mismatched.json()["code"] == "mode_mismatch"
    assert paid.stack.close_channel(channel).status_code == 204
    assert paid.stack.read(channel)["balance"] == 10


def test_keys_and_unknown_vendor_paths(paid: Paid) -> None:
    key = paid.http.get("/api/v1/vendor/keys/public").json()["public_key_der_b64"]
    assert key == paid.stack.vendor_pk
    bad = paid.http.post("/api/v1/vendor/channels/payword/%3F/payments", content=b"{}")
    assert bad.status_code == 404 and bad.json()["code"] == "channel_not_found"

