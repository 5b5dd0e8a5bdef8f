"""The issuer's request bodies (SPEC §4) through the edge and the rules: account
registration and deposits, opens of every mode (decoded, then judged down to the
terms), and every mode's settlement checked against a channel that took
payments. Anything but a 4xx refusal is a bug."""

from __future__ import annotations

import json

from channels import CHANNELS, UNIT, open_body, settlement_body
from data import FuzzInput

from nanomoni import crypto, wire
from nanomoni.encoding import b64decode
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.modes import ALL
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.settlement import check_settlement

MAX_LEN = 3000
KINDS = ["register", "deposit", *(f"open {r.mode.value}" for r in ALL)]
KINDS += [f"settle {r.mode.value}" for r in ALL]


def _refused(error: NanoMoniError) -> None:
    assert 400 <= error.status < 500, error


def _judge(kind: str, body: bytes) -> None:
    if kind == "register":
        request = wire.decode(body, wire.RegisterRequest)
        key = b64decode(request.client_public_key_der_b64, field="client_public_key_der_b64")
        crypto.public_key_kind(key)
        return
    if kind == "deposit":
        deposit = wire.decode(body, wire.DepositRequest)
        assert 0 <= deposit.amount < 2**63
        return
    action, mode = kind.split(" ")
    rules = next(r for r in ALL if r.mode.value == mode)
    if action == "open":
        terms = open_channel_terms(
            rules, wire.decode_open(body), salt=bytes(32), channel_uuid="fuzz", created_at="t"
        )
        assert terms.amount >= 1 and terms.mode is rules.mode
        if terms.max_index is not None and terms.unit_value is not None:
            assert terms.max_index * terms.unit_value <= terms.amount
        return
    channel = CHANNELS[rules.mode]
    settlement = wire.decode_settlement(rules, body)
    closure = check_settlement(rules, channel.terms, channel.terms.channel_id, settlement, now="t")
    assert 1 <= closure.owed <= channel.terms.amount


def test_one_input(data: bytes) -> None:
    inp = FuzzInput(data)
    kind = inp.pick(KINDS)
    try:
        _judge(kind, inp.rest())
    except NanoMoniError as error:
        _refused(error)


def seeds() -> dict[str, bytes]:
    def tagged(kind: str, body: bytes) -> bytes:
        return bytes([KINDS.index(kind)]) + body

    key = wire.encode(
        wire.RegisterRequest(next(iter(CHANNELS.values())).terms.vendor_public_key_der_b64)
    )
    out = {
        "register": tagged("register", key),
        "deposit": tagged(
            "deposit", json.dumps({"public_key_der_b64": "QQ==", "amount": UNIT}).encode()
        ),
    }
    for rules in ALL:
        channel = CHANNELS[rules.mode]
        out[f"open-{rules.mode.value}"] = tagged(
            f"open {rules.mode.value}", open_body(rules.mode, channel.terms.root)
        )
        out[f"settle-{rules.mode.value}"] = tagged(
            f"settle {rules.mode.value}", settlement_body(rules.mode)
        )
    return out
