"""The issuer's request bodies (SPEC §4) through the edge and the rules: account
registration and deposits, opens of every mode (decoded, then judged down to the
terms), every mode's settlement (final or checkpoint) checked against a channel
that took payments, and the client's protection (§4.6–§4.7): top-ups, client
closes, and the signed header of a vendor's closing list. Anything but a 4xx
refusal is a bug."""

from __future__ import annotations

import json

from channels import CHANNELS, CLIENT, UNIT, VENDOR, consent, open_body, settlement_body
from data import FuzzInput

from nanomoni import crypto, wire
from nanomoni.encoding import b64decode
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.consent import CLIENT_CLOSE, check_consent
from nanomoni.protocol.lifecycle import check_top_up
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import ALL
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.settlement import check_settlement, is_final
from nanomoni.protocol.signed_requests import authorization, check_authorization

MAX_LEN = 3000
KINDS = ["register", "deposit", *(f"open {r.mode.value}" for r in ALL)]
KINDS += [f"settle {r.mode.value}" for r in ALL]
KINDS += ["top-up", "client-close", "closing-list"]  # [v1.1] (appended: old seeds keep tags)
CLOSING_PATH = "/api/v1/issuer/vendors/closing-channels"
NOW = 1_800_000_000  # the server clock the closing-list header is judged at


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
    signature = CHANNELS[Mode.signature].terms
    if kind == "top-up":
        top_up = wire.decode_top_up(body)
        check_top_up(signature, top_up)
        assert top_up.amount >= 1 and 16 <= len(top_up.nonce) <= 64
        return
    if kind == "client-close":
        closing = wire.decode_client_closure(body)
        assert closing.client_signature is not None
        check_consent(signature, CLIENT_CLOSE, closing.client_signature)
        return
    if kind == "closing-list":
        signer = check_authorization(body.decode("latin-1"), "GET", CLOSING_PATH, b"", NOW)
        assert crypto.public_key_kind(b64decode(signer)) is not None
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
    assert is_final(settlement) is (settlement.final is not False)


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
        out[f"checkpoint-{rules.mode.value}"] = tagged(
            f"settle {rules.mode.value}", settlement_body(rules.mode, final=False)
        )
    channel_id = CHANNELS[Mode.signature].terms.channel_id
    out["top-up"] = tagged("top-up", wire.top_up_body(channel_id, UNIT, bytes(16), CLIENT.sign))
    closure = {"channel_id": channel_id, "client_signature_b64": consent(CLIENT_CLOSE, channel_id)}
    out["client-close"] = tagged("client-close", json.dumps(closure).encode())
    header = authorization(VENDOR, "GET", CLOSING_PATH, b"", NOW - 10)
    out["closing-list"] = tagged("closing-list", header.encode())
    return out
