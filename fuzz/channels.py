"""Real channels of every mode for the body targets: terms as the issuer opened
them, and the vendor's state after accepting payment 9 (fixed secrets, so the
seeds stay valid from run to run)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import reference

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import ALL, RULES, Payer
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.payments import decide_payment

MAX_INDEX = 64
UNIT = 3
_KEYS = reference.fixed_keys()
CLIENT = crypto.SigningKey(reference.pkcs8(_KEYS["p256"]))
VENDOR = crypto.SigningKey(reference.pkcs8(_KEYS["ed25519"]))


@dataclass
class Channel:
    terms: ChannelTerms
    payer: Payer
    state: PaymentState
    nodes: dict[int, bytes] = field(default_factory=dict)


def open_body(mode: Mode, root: bytes | None) -> bytes:
    """The client's signed open body for this mode (what the issuer target starts from)."""
    common = {
        "client_public_key_der_b64": b64encode(CLIENT.public_key_der),
        "vendor_public_key_der_b64": b64encode(VENDOR.public_key_der),
        "amount": MAX_INDEX * UNIT,
        "nonce_b64": b64encode(hashlib.sha256(mode.value.encode()).digest()[:16]),
    }
    commitment = None if root is None else (root, UNIT, MAX_INDEX)
    return wire.open_body(RULES[mode], common, commitment, CLIENT.sign)


def _open(mode: Mode) -> Channel:
    rules = RULES[mode]
    committed = rules.members is not None
    payer = rules.create_payer(
        CLIENT,
        max_index=MAX_INDEX if committed else MAX_INDEX * UNIT,
        hash_alg="sha256",
        seed=hashlib.sha256(b"fuzz " + mode.value.encode()).digest(),
    )
    request = wire.decode_open(open_body(mode, payer.root))
    terms = open_channel_terms(rules, request, salt=bytes(32), channel_uuid="fuzz", created_at="t")
    payer.channel_id = terms.channel_id
    nodes: dict[int, bytes] = {}
    state = None
    for index in (3, 9):
        payment = payer.payment(index)
        keys = rules.payment_node_keys(terms, payment)
        view = VendorView(state=state, nodes=[nodes.get(k) for k in keys], closing=False)
        decision = decide_payment(rules, terms, view, payment, now="t")
        state = decision.state
        nodes.update(decision.nodes)
        payer.accepted(index)
    assert state is not None
    return Channel(terms, payer, state, nodes)


CHANNELS = {rules.mode: _open(rules.mode) for rules in ALL}


def honest_body(mode: Mode, index: int) -> bytes:
    """The client's payment body for `index` against the accepted state (9)."""
    return wire.encode_payment(CHANNELS[mode].payer.payment(index))


def settlement_body(mode: Mode, final: bool | None = None) -> bytes:
    """The vendor's settlement of the accepted state (`final=False`: a checkpoint)."""
    channel = CHANNELS[mode]
    rules = RULES[mode]
    keys = rules.settlement_node_keys(channel.terms, channel.state)
    nodes = [channel.nodes.get(key) for key in keys]
    return wire.encode_settlement(
        rules.build_settlement(channel.terms, channel.state, nodes, VENDOR, final=final)
    )


def consent(action: str, channel_id: str) -> str:
    return b64encode(CLIENT.sign(canonical_json({"action": action, "channel_id": channel_id})))
