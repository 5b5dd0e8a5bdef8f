"""SPEC §4.5–§4.7 [v1.1] rules that need no store: checkpoints signed as such, channel
lifetimes, receipts, top-ups, signed requests, and the views that carry them."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from unit.test_protocol_channels import Channel

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.lifecycle import (
    channel_ttl_us,
    check_receipt,
    check_top_up,
    client_refund,
    iso_from_us,
    receipt_message,
    require_top_up,
    require_unexpired,
    top_up_digest,
    us_from_iso,
)
from nanomoni.protocol.model import (
    ChannelState,
    IssuerChannel,
    Mode,
    Receipt,
    ReceiptKind,
    SignedReceipt,
)
from nanomoni.protocol.modes import RULES
from nanomoni.protocol.payments import learned_terms
from nanomoni.protocol.settlement import is_final
from nanomoni.protocol.signed_requests import authorization, check_authorization

PATH = "/api/v1/issuer/vendors/closing-channels"


def refused(code: Code, call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(NanoMoniError) as caught:
        call(*args, **kwargs)
    assert caught.value.code is code, caught.value.detail
    return caught.value.detail


# --- checkpoints: `final` is signed (§4.5) ----------------------------------------------------


def settlement(channel: Channel, final: bool | None) -> wire.SettlementBody:
    assert channel.state is not None
    rules = RULES[channel.mode]
    keys = rules.settlement_node_keys(channel.terms, channel.state)
    nodes = [channel.nodes.get(key) for key in keys]
    built = rules.build_settlement(channel.terms, channel.state, nodes, channel.vendor, final=final)
    return wire.settlement_body(built)


@pytest.mark.parametrize("mode", list(Mode))
def test_a_checkpoint_is_a_settlement_whose_signature_covers_final(mode: Mode) -> None:
    channel = Channel(mode, max_index=64)
    channel.pay(20)
    bodies = {final: settlement(channel, final) for final in (None, True, False)}
    assert "final" not in json.loads(wire.encode(bodies[None]))  # older bodies are unchanged
    digests = set()
    for final, body in bodies.items():
        closure = channel.check(body)
        assert is_final(body.domain()) is (final is not False)
        digests.add(closure.proof_digest)
    assert len(digests) == 1  # one proof, whether it checkpoints or closes
    # A checkpoint's body turned into a final settlement (or the other way) does not verify.
    for final, flipped in ((False, True), (False, None), (True, False), (None, False)):
        forged = msgspec.structs.replace(bodies[final], final=flipped)
        detail = channel.check_refused(forged, Code.invalid_signature)
        assert "vendor" in detail


def test_the_clients_close_signature_stays_over_the_amount() -> None:
    channel = Channel(Mode.signature)
    channel.pay(30)
    closure = channel.check(settlement(channel, False))
    payload = canonical_json({"channel_id": channel.terms.channel_id, "cumulative_owed_amount": 30})
    assert closure.close_payload_b64 == b64encode(payload)
    assert channel.state is not None
    body = settlement(channel, False)
    assert isinstance(body, wire.SignatureSettlementBody)
    assert body.client_close_signature_b64 == b64encode(channel.state.proof)


# --- lifetimes ----------------------------------------------------------------------------------


def test_the_ttl_an_open_may_ask_for() -> None:
    assert channel_ttl_us(None, min_s=60, max_s=3600) == 3600 * 10**6
    assert channel_ttl_us(60, min_s=60, max_s=3600) == 60 * 10**6
    assert channel_ttl_us(3600, min_s=60, max_s=3600) == 3600 * 10**6
    for ttl in (0, 59, 3601):
        detail = refused(Code.invalid_ttl, channel_ttl_us, ttl, min_s=60, max_s=3600)
        assert "ttl_s" in detail


def test_an_open_body_carries_ttl_s_as_a_signed_integer() -> None:
    channel = Channel(Mode.signature)
    assert channel.terms.ttl_us == 30 * 24 * 3600 * 10**6  # the issuer's default maximum
    base = {
        "client_public_key_der_b64": channel.terms.client_public_key_der_b64,
        "vendor_public_key_der_b64": channel.terms.vendor_public_key_der_b64,
        "amount": 10,
        "open_signature_b64": "AAAA",
    }
    assert wire.decode_open(json.dumps(base | {"ttl_s": 90}).encode()).ttl_s == 90
    assert b'"ttl_s":90' in wire.decode_open(json.dumps(base | {"ttl_s": 90}).encode()).signed
    for bad in ("90", 1.5, -1, True):
        with pytest.raises(NanoMoniError) as caught:
            wire.decode_open(json.dumps(base | {"ttl_s": bad}).encode())
        assert caught.value.code is Code.validation_error


def test_times_are_exact_microseconds_in_iso_8601() -> None:
    for micros in (0, 1, 1_764_547_630_123_456, 2**53 - 1):
        text = iso_from_us(micros)
        assert text.endswith("+00:00") and len(text.split("+")[0].split(".")[1]) == 6
        assert us_from_iso(text) == micros
    assert us_from_iso("2026-11-29T23:27:10.123456+01:00") == us_from_iso(
        "2026-11-29T22:27:10.123456+00:00"
    )
    with pytest.raises(ValueError):
        us_from_iso("2026-11-29T23:27:10")


def test_an_expired_channel_takes_no_payment() -> None:
    terms = msgspec.structs.replace(Channel(Mode.payword).terms, expires_at=1000)
    require_unexpired(terms, 999)
    refused(Code.channel_closed, require_unexpired, terms, 1000)
    require_unexpired(msgspec.structs.replace(terms, expires_at=None), 10**18)


def test_a_vendor_learns_only_open_channels() -> None:
    channel = Channel(Mode.payword)
    vendor = b64encode(channel.vendor.public_key_der)
    for state in (ChannelState.closing, ChannelState.closed):
        issued = IssuerChannel(terms=channel.terms, state=state)
        view = wire.channel_view(RULES[Mode.payword], issued, opened=False)
        info = wire.decode_channel(RULES[Mode.payword], wire.encode(view))
        assert info.state is state
        detail = refused(Code.channel_closed, learned_terms, info, vendor)
        assert state.value in detail
        assert learned_terms(info, vendor, settling=True).channel_id == channel.terms.channel_id


def test_a_view_from_an_older_issuer_is_read_by_its_is_closed() -> None:
    channel = Channel(Mode.signature)
    view = wire.channel_view(
        RULES[Mode.signature], IssuerChannel(terms=channel.terms), opened=False
    )
    for name in ("state", "expires_at", "dispute_deadline", "vendor_credited", "receipts"):
        del view[name]
    for closed in (False, True):
        info = wire.decode_channel(RULES[Mode.signature], wire.encode(view | {"is_closed": closed}))
        assert info.state is (ChannelState.closed if closed else ChannelState.open)
        assert info.terms.expires_at is None and info.receipts == ()


# --- receipts ---------------------------------------------------------------------------------


def receipt(**changes: Any) -> Receipt:
    base = Receipt(
        channel_id="C" * 43,
        kind=ReceiptKind.settlement,
        amount=2**53 + 3,
        owed=2**53 + 1,
        vendor_credited=2**53 + 1,
        client_refund=2,
        seq=4,
        at=iso_from_us(1_764_547_630_123_456),
    )
    return msgspec.structs.replace(base, **changes)


def test_a_refund_is_what_closing_did_not_credit() -> None:
    for kind in ReceiptKind:
        expected = 70 if kind in (ReceiptKind.settlement, ReceiptKind.finalization) else 0
        assert client_refund(kind, 100, 30) == expected


def test_receipts_are_signed_canonical_json_and_survive_the_wire() -> None:
    issuer = crypto.SigningKey.generate("p256")
    original = receipt()
    message = receipt_message(original)
    assert message == canonical_json(json.loads(message))  # canonical JSON of the object
    assert json.loads(message)["amount"] == 2**53 + 3  # integers stay exact
    signed = SignedReceipt(receipt=original, signature=issuer.sign(message))
    check_receipt(issuer.public_key_der, signed, original.channel_id)
    # Through a read view and back, as a client or vendor gets it.
    issued = IssuerChannel(terms=Channel(Mode.signature).terms, receipts=(original,))
    view = wire.channel_view(RULES[Mode.signature], issued, opened=False, receipts=[signed])
    decoded = wire.decode_channel(RULES[Mode.signature], wire.encode(view)).receipts
    assert decoded == (signed,)
    for forged in (
        SignedReceipt(receipt=receipt(client_refund=3), signature=signed.signature),
        SignedReceipt(receipt=original, signature=crypto.SigningKey.generate().sign(message)),
    ):
        refused(Code.invalid_signature, check_receipt, issuer.public_key_der, forged, "C" * 43)
    refused(Code.invalid_signature, check_receipt, issuer.public_key_der, signed, "D" * 43)


# --- top-ups ----------------------------------------------------------------------------------


def top_up(
    channel: Channel, amount: int, nonce: bytes, key: crypto.SigningKey | None = None
) -> Any:
    body = wire.top_up_body(channel.terms.channel_id, amount, nonce, (key or channel.client).sign)
    return wire.decode_top_up(body)


def test_a_top_up_is_signed_by_the_client_with_a_nonce() -> None:
    channel = Channel(Mode.signature)
    good = top_up(channel, 5, b"n" * 16)
    check_top_up(channel.terms, good)
    assert top_up_digest(good) == top_up_digest(top_up(channel, 5, b"n" * 16))
    assert top_up_digest(good) != top_up_digest(top_up(channel, 6, b"n" * 16))
    refused(
        Code.unauthorized,
        check_top_up,
        channel.terms,
        top_up(channel, 5, b"n" * 16, channel.vendor),
    )
    refused(Code.invalid_amount, check_top_up, channel.terms, top_up(channel, 0, b"n" * 16))
    for nonce in (b"n" * 15, b"n" * 65):
        refused(Code.invalid_encoding, check_top_up, channel.terms, top_up(channel, 5, nonce))
    other = Channel(Mode.signature)
    refused(Code.id_mismatch, check_top_up, channel.terms, top_up(other, 5, b"n" * 16))
    require_top_up(RULES[Mode.signature])
    for mode in (Mode.payword, Mode.paytree):
        assert "new channel" in refused(Code.mode_mismatch, require_top_up, RULES[mode])


# --- signed requests (§4.7) --------------------------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_a_signed_request_names_its_key(kind: str) -> None:
    key = crypto.SigningKey.generate(kind)
    header = authorization(key, "GET", PATH, b"", 1_000_000)
    assert check_authorization(header, "GET", PATH, b"", 1_000_000 + 300) == b64encode(
        key.public_key_der
    )
    assert check_authorization(header, "GET", PATH, b"", 1_000_000 - 300)


def test_a_signed_request_is_bound_to_its_method_target_time_and_body() -> None:
    key = crypto.SigningKey.generate("p256")
    assert b64encode(key.public_key_der).endswith("=")  # split at the first '=' only
    header = authorization(key, "GET", PATH, b"", 1_000_000)
    wrong = [
        (None, "GET", PATH, b"", 1_000_000),
        (header, "POST", PATH, b"", 1_000_000),
        (header, "GET", PATH + "?a=1", b"", 1_000_000),
        (header, "GET", PATH, b"{}", 1_000_000),
        (header, "GET", PATH, b"", 1_000_301),
        (header, "GET", PATH, b"", 999_699),
        (header.replace("NanoMoni ", "Bearer "), "GET", PATH, b"", 1_000_000),
        (header.replace("ts=1000000", "ts=1000001"), "GET", PATH, b"", 1_000_000),
        (header.replace("ts=1000000", "ts=+1000000"), "GET", PATH, b"", 1_000_000),
        (header + ", ts=1000000", "GET", PATH, b"", 1_000_000),
        (header.replace(", sig=", ", sign="), "GET", PATH, b"", 1_000_000),
        (header.split(", sig=")[0] + ", sig=AAAA", "GET", PATH, b"", 1_000_000),
        (header.split(", sig=")[0] + ", sig=!!", "GET", PATH, b"", 1_000_000),
        ("NanoMoni key=QUFB, ts=1000000, sig=AAAA", "GET", PATH, b"", 1_000_000),
    ]
    for args in wrong:
        detail = refused(Code.unauthorized, check_authorization, *args)
        assert "NanoMoni" in detail
