"""The client's open requests and payments judged by the vendor's and issuer's own
protocol rules (nanomoni.protocol), without HTTP: every mode, both suites."""

from __future__ import annotations

import os

import pytest

from nanomoni import crypto, wire
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import utc_now
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import RULES, Payer
from nanomoni.protocol.opening import channel_id_for, open_channel_terms
from nanomoni.protocol.payments import decide_payment

UNIT = 4
MAX_INDEX = 300


class VendorState:
    """What a vendor store would hold for one channel: state and Merkle nodes."""

    def __init__(self, terms: ChannelTerms) -> None:
        self.terms = terms
        self.state: PaymentState | None = None
        self.nodes: dict[int, bytes] = {}

    def offer(self, body: bytes) -> bool:
        """Decide one encoded payment as the vendor would; True for a replay."""
        rules = RULES[self.terms.mode]
        payment = wire.decode_payment(rules, body)
        keys = rules.payment_node_keys(self.terms, payment)
        view = VendorView(
            state=self.state, nodes=[self.nodes.get(key) for key in keys], closing=False
        )
        decision = decide_payment(rules, self.terms, view, payment, now=utc_now())
        if not decision.replay:
            self.state = decision.state
            self.nodes.update(decision.nodes)
        return decision.replay


def open_both_sides(mode: Mode, alg: str) -> tuple[Payer, VendorState]:
    client, vendor = Wallet.generate("secp256k1"), Wallet.generate("ed25519")
    rules = RULES[mode]
    committed = rules.members is not None
    count = MAX_INDEX if committed else MAX_INDEX * UNIT
    payer = rules.create_payer(client.key, max_index=count, hash_alg=alg)
    common = {
        "client_public_key_der_b64": client.public_key_b64,
        "vendor_public_key_der_b64": vendor.public_key_b64,
        "amount": MAX_INDEX * UNIT,
        "hash_alg": None if alg == "sha256" else alg,
    }
    commitment = (payer.root, UNIT, MAX_INDEX) if payer.root is not None else None
    request = wire.decode_open(wire.open_body(rules, common, commitment, client.key.sign))
    salt = os.urandom(32)
    terms = open_channel_terms(
        rules, request, salt=salt, channel_uuid="00000000-0000-4000-8000-000000000000",
        created_at=utc_now(),
    )  # fmt: skip
    assert terms.channel_id == channel_id_for(
        client.key.public_key_der, vendor.key.public_key_der, salt
    )
    assert terms.hash_alg == alg
    payer.channel_id = terms.channel_id
    return payer, VendorState(terms)


@pytest.mark.parametrize("alg", crypto.HASH_ALGS)
@pytest.mark.parametrize("mode", list(Mode))
def test_vendor_rules_accept_every_client_payment(mode: Mode, alg: str) -> None:
    payer, vendor = open_both_sides(mode, alg)
    for index in (1, 2, 3, 10, 25, 70, 71, 128, 129, 255, 256, 300):
        body = wire.encode_payment(payer.payment(index))
        assert vendor.offer(body) is False  # newly accepted
        assert vendor.offer(body) is True  # the identical retry is a replay
        payer.accepted(index)
        assert vendor.state is not None and vendor.state.index == index
    # An index the vendor already passed is refused, whatever proof the client builds.
    with pytest.raises(NanoMoniError) as refused:
        vendor.offer(wire.encode_payment(payer.payment(299)))
    assert refused.value.code is Code.non_monotonic


@pytest.mark.parametrize("mode", [Mode.paytree_first_opt, Mode.paytree_second_opt])
def test_vendor_refuses_a_proof_built_against_another_accepted_state(mode: Mode) -> None:
    payer, vendor = open_both_sides(mode, "sha256")
    first = wire.encode_payment(payer.payment(10))
    assert vendor.offer(first) is False
    # The client never learned that 10 was accepted: its proof for 25 carries
    # too many siblings for the vendor, which refuses it as invalid_proof.
    with pytest.raises(NanoMoniError) as refused:
        vendor.offer(wire.encode_payment(payer.payment(25)))
    assert refused.value.code is Code.invalid_proof
    payer.accepted(10)
    assert vendor.offer(wire.encode_payment(payer.payment(25))) is False
