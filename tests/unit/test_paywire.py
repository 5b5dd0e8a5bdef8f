"""SPEC §11 on the wire (nanomoni.paywire) and route prices (nanomoni.paywall.prices)."""

from __future__ import annotations

import json
import os

import pytest

from nanomoni import paywire
from nanomoni.encoding import b64url_nopad, b64url_nopad_decode
from nanomoni.errors import Code, NanoMoniError
from nanomoni.paywall.prices import RouteTable
from nanomoni.protocol.messages import PaywordPayment, SignaturePayment
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import RULES

CID = "A" * 42 + "E"


def test_base64url_is_strict_and_canonical() -> None:
    for size in range(40):
        data = os.urandom(size)
        assert b64url_nopad_decode(b64url_nopad(data)) == data
        assert b64url_nopad_decode(b64url_nopad(data).encode()) == data
    for bad in ("a", "QR", "ab+c", "ab/c", "ab=c", "QQ==", "a b!", "ab\n", "é"):
        with pytest.raises(NanoMoniError) as refused:
            b64url_nopad_decode(bad)
        assert refused.value.code is Code.invalid_encoding, bad


def test_payment_header_round_trip() -> None:
    rules = RULES[Mode.payword]
    payment = PaywordPayment(k=7, token=b"t" * 32, channel_id=CID)
    value = paywire.encode_payment(rules, CID, payment, request_id="r" * 16)
    decoded = paywire.decode_payment(paywire.decode_value(value, "Payment"))
    assert decoded == paywire.PaymentHeader(rules, CID, "r" * 16, payment)
    credit = paywire.decode_payment(
        paywire.decode_value(paywire.encode_payment(rules, CID, None), "Payment")
    )
    assert credit.payment is None and credit.request_id is None
    signed = SignaturePayment(channel_id=CID, amount=3, signature=b"s" * 64)
    rules = RULES[Mode.signature]
    value = paywire.encode_payment(rules, CID, signed)
    assert paywire.decode_payment(paywire.decode_value(value, "Payment")).payment == signed


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[]", Code.validation_error),
        (b'{"channel_id": "%s"}' % CID.encode(), Code.validation_error),
        (b'{"mode": "cheque", "channel_id": "%s"}' % CID.encode(), Code.validation_error),
        (b'{"mode": 1, "channel_id": "%s"}' % CID.encode(), Code.validation_error),
        (b'{"mode": "payword"}', Code.validation_error),
        (b'{"mode": "payword", "channel_id": "x"}', Code.channel_not_found),
        (
            b'{"mode": "payword", "channel_id": "%s", "request_id": "short"}' % CID.encode(),
            Code.validation_error,
        ),
        (b'{"mode": "payword", "channel_id": "%s", "k": 1}' % CID.encode(), Code.validation_error),
        (
            b'{"mode": "payword", "channel_id": "%s", "k": 1, "token_b64": "@@"}' % CID.encode(),
            Code.invalid_encoding,
        ),
        (
            b'{"mode": "payword", "channel_id": "%s", "k": 1, "token_b64": "%s", "x": 1}'
            % (CID.encode(), b"A" * 43 + b"="),
            Code.validation_error,
        ),
    ],
)
def test_bad_payments_name_their_fault(body: bytes, code: Code) -> None:
    with pytest.raises(NanoMoniError) as refused:
        paywire.decode_payment(body)
    assert refused.value.code is code


def test_a_payments_url_body_takes_mode_and_channel_from_the_path() -> None:
    rules = RULES[Mode.payword]
    body = b'{"k": 2, "token_b64": "%s"}' % (b"A" * 43 + b"=")
    paid = paywire.decode_payment(body, path_mode=rules, path_channel=CID)
    assert paid.channel_id == CID and paid.payment == PaywordPayment(k=2, token=bytes(32))
    with pytest.raises(NanoMoniError) as refused:
        paywire.decode_payment(b'{"mode": "signature"}', path_mode=rules, path_channel=CID)
    assert refused.value.code is Code.mode_mismatch


def test_oversized_headers_are_refused_before_decoding() -> None:
    with pytest.raises(NanoMoniError) as refused:
        paywire.decode_value("A" * (paywire.MAX_HEADER + 1), "Payment")
    assert refused.value.code is Code.validation_error


def test_server_sent_events_split_and_read() -> None:
    stream = b"data: a\n\nevent: x\r\ndata: b\r\n\r\n: ping\n\ndata: c\r"
    events, rest = paywire.split_events(stream)
    assert events == [b"data: a\n\n", b"event: x\r\ndata: b\r\n\r\n", b": ping\n\n"]
    assert rest == b"data: c\r"  # a CR may be half of a CRLF
    assert paywire.event_fields(events[1]) == ("x", "b")
    assert paywire.event_fields(b"data: 1\ndata: 2\n\n") == ("message", "1\n2")
    assert [paywire.carries_data(event) for event in events] == [True, True, False]


def test_route_table_matches_methods_and_templates() -> None:
    table = RouteTable(
        {
            "GET /quotes/{symbol}": 3,
            "POST /search": lambda scope: 5,
            "GET /stream": {"price_per_chunk": 2, "units": len},
            "GET /a.b": 1,
        }
    )
    quote = table.match("GET", "/quotes/ACME")
    assert quote is not None and quote.price_for({}) == 3
    assert table.match("GET", "/quotes/A/B") is None
    assert table.match("POST", "/quotes/ACME") is None
    assert table.match("GET", "/aXb") is None  # literal text is literal
    search = table.match("POST", "/search")
    assert search is not None and search.price_for({}) == 5
    stream = table.match("GET", "/stream")
    assert stream is not None and stream.metered and stream.chunk_cost(2, b"abc") == 6


@pytest.mark.parametrize(
    "prices",
    [
        {"/no-method": 1},
        {"GET no-slash": 1},
        {"GET /x": -1},
        {"GET /x": 2**63},
        {"GET /x": True},
        {"GET /x": 1.5},
        {"GET /x": {"price_per_chunk": 1, "other": 2}},
        {"GET /x": {"units": len}},
    ],
)
def test_bad_prices_are_configuration_errors(prices: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RouteTable(prices)  # type: ignore[arg-type]


def test_a_callable_price_must_be_money() -> None:
    route = RouteTable({"GET /x": lambda scope: -3}).match("GET", "/x")
    assert route is not None
    with pytest.raises(ValueError):
        route.price_for({})


def _header_json(**members: object) -> bytes:
    return json.dumps(members).encode()


TOKEN = "A" * 43 + "="


@pytest.mark.parametrize(
    "body",
    [
        _header_json(mode="payword", channel_id=CID),
        _header_json(mode="payword", channel_id=CID, request_id="r" * 16),
        _header_json(mode="payword", channel_id=CID, request_id="r" * 15),
        _header_json(mode="payword", channel_id=CID, request_id="r" * 16 + "\n"),
        _header_json(mode="payword", channel_id=CID, request_id=None),
        _header_json(mode="payword", channel_id=CID[:-1] + "B"),
        _header_json(mode="payword", channel_id=CID + "\n"),
        _header_json(mode="cheque", channel_id=CID),
        _header_json(mode=None, channel_id=CID),
        _header_json(channel_id=CID, request_id="r" * 16, x=1),
        _header_json(mode="payword", channel_id=CID, k=1, token_b64=TOKEN),
        _header_json(mode="payword", channel_id=CID, k=1, token_b64=TOKEN, request_id="q" * 20),
        _header_json(mode="payword", k=1, token_b64=TOKEN),
        _header_json(mode="payword", channel_id=CID, k=0, token_b64=TOKEN),
        _header_json(mode="payword", channel_id=CID, k=1, token_b64="@@"),
        _header_json(mode="payword", channel_id=CID, k=1, token_b64=TOKEN, x=1),
        _header_json(mode="signature", channel_id=CID, k=1, token_b64=TOKEN),
        _header_json(
            mode="signature", channel_id=CID, cumulative_owed_amount=3, signature_b64="c2ln"
        ),
        _header_json(mode="signature", channel_id=CID, cumulative_owed_amount=3),
        b'{"mode": "payword", "channel_id": "%s", "channel_id": "x"}' % CID.encode(),
        b"[]",
        b"{",
    ],
)
def test_the_fast_decoding_agrees_with_the_checks(body: bytes) -> None:
    """The fast path (one msgspec call) takes a header only as the member-by-member
    checks take it; whatever it leaves is theirs to refuse."""
    fast = paywire._fast(body)
    try:
        checked = paywire._checked(body, None, None)
    except NanoMoniError:
        assert fast is None
    else:
        assert fast is None or fast == checked


def test_well_formed_headers_take_the_fast_path() -> None:
    rules = RULES[Mode.payword]
    payment = PaywordPayment(k=7, token=b"t" * 32, channel_id=CID)
    for paid, request_id in ((payment, "r" * 16), (payment, None), (None, "r" * 64)):
        raw = paywire.decode_value(paywire.encode_payment(rules, CID, paid, request_id), "P")
        assert paywire._fast(raw) == paywire.PaymentHeader(rules, CID, request_id, paid)
