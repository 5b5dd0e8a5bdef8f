"""µs per vendor payment decision, per mode, next to the bare crypto it wraps.

Each group holds two benchmarks measured in the same run: `decide` (the edge's
decoding of the JSON body into the domain payment, then the whole pure protocol
step: checks, verification, new state) and `crypto` (only the native
verification on already-decoded bytes). Their difference is the protocol
layer's own cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.protocol.messages import TreePayment
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import RULES
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.payments import decide_payment

MAX_INDEX = 2**16 - 1  # depth 16
WARM = 1000  # payments accepted before the measured one


def open_terms(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey, root: bytes
) -> ChannelTerms:
    fields: dict[str, Any] = {
        "client_public_key_der_b64": b64encode(client.public_key_der),
        "vendor_public_key_der_b64": b64encode(vendor.public_key_der),
        "amount": MAX_INDEX,
    }
    members = RULES[mode].members
    if members is not None:
        fields.update({members.root: b64encode(root), members.unit: 1, members.max: MAX_INDEX})
    fields["open_signature_b64"] = b64encode(client.sign(canonical_json(fields)))
    request = wire.decode_open(wire.encode(fields))
    return open_channel_terms(
        RULES[mode], request, salt=os.urandom(32), channel_uuid="bench", created_at="t"
    )


def decider(mode: Mode, terms: ChannelTerms, view: VendorView, raw: bytes) -> Callable[[], object]:
    """Decode at the edge, then decide: what the vendor does per payment besides I/O."""
    rules = RULES[mode]

    def decide() -> object:
        return decide_payment(rules, terms, view, wire.decode_payment(rules, raw), now="t")

    return decide


def prepare(mode: Mode) -> tuple[Callable[[], object], Callable[[], object]]:
    """(decide the next payment, bare crypto check of the same payment)."""
    client = crypto.SigningKey.generate("p256")
    vendor = crypto.SigningKey.generate("ed25519")
    if mode == Mode.signature:
        terms = open_terms(mode, client, vendor, b"")
        message = canonical_json(
            {"channel_id": terms.channel_id, "cumulative_owed_amount": WARM + 1}
        )
        signature = client.sign(message)
        state = PaymentState(index=WARM, owed=WARM, proof=client.sign(b"x"), created_at="t")
        view = VendorView(state=state, nodes=[], closing=False)
        raw = wire.encode(
            wire.SignaturePaymentBody(
                channel_id=terms.channel_id,
                cumulative_owed_amount=WARM + 1,
                signature_b64=b64encode(signature),
            )
        )
        der = client.public_key_der
        return (
            decider(mode, terms, view, raw),
            lambda: crypto.verify_signature(der, message, signature),
        )
    if mode == Mode.payword:
        chain = crypto.PaywordChain(os.urandom(32), MAX_INDEX)
        terms = open_terms(mode, client, vendor, chain.root)
        previous, token = chain.token(WARM), chain.token(WARM + 1)
        state = PaymentState(index=WARM, owed=WARM, proof=previous, created_at="t")
        view = VendorView(state=state, nodes=[], closing=False)
        raw = wire.encode(wire.PaywordPaymentBody(k=WARM + 1, token_b64=b64encode(token)))
        return (
            decider(mode, terms, view, raw),
            lambda: crypto.verify_payword(token, 1, previous),
        )
    return prepare_tree(mode, client, vendor)


def prepare_tree(
    mode: Mode, client: crypto.SigningKey, vendor: crypto.SigningKey
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The client's own payer builds every payment; the vendor accepts 1..WARM as it
    would, and WARM + 1 is the measured one."""
    rules = RULES[mode]
    payer = rules.create_payer(client, max_index=MAX_INDEX, hash_alg="sha256")
    assert payer.root is not None
    terms = open_terms(mode, client, vendor, payer.root)
    payer.channel_id = terms.channel_id
    accepted: PaymentState | None = None
    nodes: dict[int, bytes] = {}

    def body_and_view(i: int) -> tuple[bytes, VendorView]:
        raw = wire.encode(wire.TreePaymentBody.of(payer.payment(i)))
        keys = rules.payment_node_keys(terms, wire.decode_payment(rules, raw))
        return raw, VendorView(state=accepted, nodes=[nodes.get(k) for k in keys], closing=False)

    for i in range(1, WARM + 1):
        raw, view = body_and_view(i)
        decision = decide_payment(rules, terms, view, wire.decode_payment(rules, raw), now="t")
        accepted = decision.state
        nodes.update(decision.nodes)
        payer.accepted(i)
    i = WARM + 1
    raw, view = body_and_view(i)
    payment = payer.payment(i)
    assert isinstance(payment, TreePayment)
    secret, sent, root = payment.secret, payment.siblings, payer.root
    depth = len(sent)  # the full path (paytree: the tree's depth)
    decide = decider(mode, terms, view, raw)

    def bare() -> object:
        # The leaf is the hash of the revealed secret (SPEC v1.1 §5.3): part of the crypto.
        leaf = crypto.digest(secret, "sha256")
        if mode == Mode.paytree:
            return crypto.verify_merkle(leaf, i, sent, root, depth)
        return crypto.merkle_fold(leaf, i, sent)

    return decide, bare


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("part", ["decide", "crypto"])
def test_decide_payment(benchmark: Any, mode: Mode, part: str) -> None:
    decide, bare = prepare(mode)
    decide()  # must be accepted, or the benchmark measures a refusal
    benchmark.group = f"decide_payment {mode.value}"
    benchmark(decide if part == "decide" else bare)
