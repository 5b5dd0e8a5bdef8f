"""The vendor's request bodies (SPEC §5, §12) through the edge and the rules: every
payment mode's body decoded by `wire`, then decided against a channel that has
already accepted a payment, closure bodies, and batch bodies / stream frames
(each item decoded or refused on its own). Anything but a 4xx refusal is a
bug; a decoded payment survives encode/decode unchanged (strict base64: one
text per value)."""

from __future__ import annotations

import json
import os

from channels import CHANNELS, honest_body
from data import FuzzInput

from nanomoni import wire
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.model import VendorView
from nanomoni.protocol.modes import ALL
from nanomoni.protocol.payments import decide_payment

MAX_LEN = 3000
MAX_HASHES = 2**12  # bounds the hashing one input can cause


def _refused(error: NanoMoniError) -> None:
    assert 400 <= error.status < 500, error


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    which = inp.below(len(ALL) + 2)
    body = inp.rest()
    if which == len(ALL) + 1:
        _frame(body)
        return
    if which == len(ALL):
        try:
            closure = wire.decode_closure(body)
        except NanoMoniError as error:
            _refused(error)
            return
        assert isinstance(closure.channel_id, str)
        return
    rules = ALL[which]
    try:
        payment = wire.decode_payment(rules, body)
    except NanoMoniError as error:
        _refused(error)
        return
    assert wire.decode_payment(rules, wire.encode_payment(payment)) == payment
    channel = CHANNELS[rules.mode]
    keys = rules.payment_node_keys(channel.terms, payment)
    view = VendorView(
        state=channel.state, nodes=[channel.nodes.get(key) for key in keys], closing=False
    )
    try:
        decision = decide_payment(
            rules, channel.terms, view, payment, now="t", max_hashes=MAX_HASHES
        )
    except NanoMoniError as error:
        _refused(error)
        return
    assert decision.state.index >= channel.state.index
    assert decision.state.owed <= channel.terms.amount


def _frame(body: bytes) -> None:
    """A batch body or stream frame: refused whole (4xx), or one result per item."""
    try:
        items = wire.decode_frame(body, max_items=64)
    except NanoMoniError as error:
        _refused(error)
        return
    assert 1 <= len(items) <= 64
    for item in items:
        if isinstance(item, NanoMoniError):
            _refused(item)
            continue
        again = wire.decode_batch(wire.encode_batch([(item.rules, item.payment)]))
        assert again == [item]


def seeds() -> dict[str, bytes]:
    out = {}
    for n, rules in enumerate(ALL):
        for index in (9, 10, 33):
            out[f"{rules.mode.value}-{index}"] = bytes([n]) + honest_body(rules.mode, index)
    out["closure"] = (
        bytes([len(ALL)])
        + json.dumps({"channel_id": "A" * 43, "client_signature_b64": "c2ln"}).encode()
    )
    out["junk"] = bytes([1]) + os.urandom(40)
    frame = len(ALL) + 1
    items = [
        {**json.loads(honest_body(rules.mode, 10)), "mode": rules.mode.value,
         "channel_id": CHANNELS[rules.mode].terms.channel_id}
        for rules in ALL
    ]  # fmt: skip
    out["batch"] = bytes([frame]) + json.dumps({"payments": items}).encode()
    out["frame-one"] = bytes([frame]) + json.dumps(items[1]).encode()
    out["frame-junk"] = bytes([frame]) + b'{"payments": [1, "x", {"mode": 5}]}'
    return out
