"""Batch bodies and stream frames at the edge (SPEC §12), and the presumed checks
a batch decides with (exact once they pass)."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import pytest

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, b64url_nopad
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import PaywordPayment, SignaturePayment
from nanomoni.protocol.model import ChannelTerms, Mode, VendorView
from nanomoni.protocol.modes import RULES
from nanomoni.protocol.payments import decide_payment, presume_payment

CID = b64url_nopad(os.urandom(32))


def payword_item(k: int = 1, **extra: Any) -> dict[str, Any]:
    return {"mode": "payword", "channel_id": CID, "k": k, "token_b64": b64encode(bytes(32))} | extra


def encoded(*items: Any) -> bytes:
    return msgspec.json.encode({"payments": list(items)})


def codes(decoded: list[wire.BatchItem | NanoMoniError]) -> list[str]:
    return ["ok" if isinstance(d, wire.BatchItem) else d.code.value for d in decoded]


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", b"[]", b"5", b"{}", b'{"payments": {}}', b'{"payments": []}',
     b'{"payments": [], "more": 1}'],
)  # fmt: skip
def test_envelope_errors_raise_422(body: bytes) -> None:
    with pytest.raises(NanoMoniError) as caught:
        wire.decode_batch(body)
    assert caught.value.code is Code.validation_error and caught.value.status == 422


def test_more_than_the_item_limit_is_413() -> None:
    assert len(wire.decode_batch(encoded(*[payword_item()] * 1024))) == 1024
    with pytest.raises(NanoMoniError) as caught:
        wire.decode_batch(encoded(*[payword_item()] * 1025))
    assert caught.value.code is Code.payload_too_large
    with pytest.raises(NanoMoniError):
        wire.decode_batch(encoded(*[payword_item()] * 3), max_items=2)


def test_each_item_is_decoded_or_refused_as_it_would_be_alone() -> None:
    items = [
        payword_item(),
        payword_item(mode="nope"),  # unknown mode: 404, like an unknown path segment
        {k: v for k, v in payword_item().items() if k != "mode"},  # 422
        payword_item(channel_id="short"),  # 404
        payword_item(channel_id=None),  # not a string: 404
        {k: v for k, v in payword_item().items() if k != "channel_id"},  # 422
        payword_item(token_b64="AAAA"),  # wrong length: 400
        payword_item(token_b64=b64encode(bytes(32))[:-2] + "B="),  # non-canonical: 400
        payword_item(k=-1),  # 422
        payword_item(k=2**63),  # 422
        payword_item(extra=1),  # unknown member: 422
        "a string",  # 422
    ]
    decoded = wire.decode_batch(encoded(*items))
    assert codes(decoded) == [
        "ok", "channel_not_found", "validation_error", "channel_not_found", "channel_not_found",
        "validation_error", "invalid_encoding", "invalid_encoding", "validation_error",
        "validation_error", "validation_error", "validation_error",
    ]  # fmt: skip
    first = decoded[0]
    assert isinstance(first, wire.BatchItem)
    assert first.rules is RULES[Mode.payword] and first.channel_id == CID
    assert first.payment == PaywordPayment(k=1, token=bytes(32), channel_id=CID)
    # The well-formed fast path gives what the item-by-item path gives.
    assert wire.decode_batch(encoded(*items[:1])) == decoded[:1]


def test_frames_are_batches_or_single_payments() -> None:
    assert codes(wire.decode_frame(msgspec.json.encode(payword_item()))) == ["ok"]
    assert codes(wire.decode_frame(msgspec.json.encode(payword_item()).decode())) == ["ok"]
    bad = msgspec.json.encode(payword_item(mode="nope"))
    assert codes(wire.decode_frame(bad)) == ["channel_not_found"]
    assert codes(wire.decode_frame(encoded(payword_item(), payword_item(k=2)))) == ["ok", "ok"]
    for frame in (b"not json", b"[1]", b'{"payments": []}', b"7"):
        with pytest.raises(NanoMoniError) as caught:
            wire.decode_frame(frame)
        assert caught.value.code is Code.validation_error


def test_client_batches_decode_back_to_their_payments() -> None:
    payment = PaywordPayment(k=3, token=os.urandom(32), channel_id=CID)
    signature = SignaturePayment(channel_id=CID, amount=9, signature=b"sig")
    body = wire.encode_batch([(RULES[Mode.payword], payment), (RULES[Mode.signature], signature)])
    decoded = wire.decode_batch(body)
    assert [d.payment for d in decoded if isinstance(d, wire.BatchItem)] == [payment, signature]
    with pytest.raises(ValueError):
        wire.encode_batch([(RULES[Mode.payword], PaywordPayment(k=1, token=bytes(32)))])


# --- presumed checks ----------------------------------------------------------------------


def terms_of(mode: Mode, key: crypto.SigningKey, root: bytes | None) -> ChannelTerms:
    committed = mode is not Mode.signature
    return ChannelTerms(
        id="id",
        channel_id=CID,
        mode=mode,
        client_public_key_der_b64=b64encode(key.public_key_der),
        vendor_public_key_der_b64="vendor",
        salt_b64="",
        amount=1000,
        hash_alg="sha256",
        created_at="",
        root=root,
        unit_value=1 if committed else None,
        max_index=100 if committed else None,
    )


@pytest.mark.parametrize("mode", [Mode.signature, Mode.payword])
def test_presumed_decisions_are_exact_once_their_checks_pass(mode: Mode) -> None:
    rules = RULES[mode]
    key = crypto.SigningKey.generate("ed25519")
    payer = rules.create_payer(key, max_index=100, hash_alg="sha256")
    payer.channel_id = CID
    terms = terms_of(mode, key, payer.root)
    payments = list(payer.payments([3, 7, 8]))
    view = VendorView(state=None, nodes=[], closing=False)
    checks: list[Any] = []
    for payment in payments:
        presumed = presume_payment(rules, terms, view, payment, checks, now="t")
        assert presumed == decide_payment(rules, terms, view, payment, now="t")
        view = VendorView(state=presumed.state, nodes=[], closing=False)
    # A replay of the last is presumed too (signatures: its signature is checked).
    replay = presume_payment(rules, terms, view, payments[-1], checks, now="t2")
    assert replay.replay and replay.state == view.state
    assert rules.run_checks(checks) == [True] * len(checks) and len(checks) >= 3
    assert rules.check_cost(checks) > 0
    # A forged payment is presumed, and its check fails.
    forged: Any = (
        msgspec.structs.replace(payments[-1], amount=9, signature=payments[0].signature)
        if mode is Mode.signature
        else msgspec.structs.replace(payments[-1], k=9, token=os.urandom(32))
    )
    more: list[Any] = []
    presume_payment(rules, terms, view, forged, more, now="t")
    assert rules.run_checks(more) == [False]
    with pytest.raises(NanoMoniError) as caught:
        decide_payment(rules, terms, view, forged, now="t")
    assert caught.value.code in (Code.invalid_signature, Code.invalid_proof)


def test_modes_without_a_native_batch_verify_at_once() -> None:
    rules = RULES[Mode.paytree]
    assert rules.run_checks([]) == [] and rules.check_cost([]) == 0
    with pytest.raises(NotImplementedError):
        rules.run_checks([("anything",)])
