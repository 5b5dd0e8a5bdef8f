"""The client's open requests and payments judged by the vendor's and issuer's own
protocol rules (nanomoni.protocol), without HTTP: every mode, both suites."""

from __future__ import annotations

import os

import msgspec
import pytest

from nanomoni import crypto, wire
from nanomoni.client.proofs import (
    Payer,
    SignaturePayer,
    build_open_request,
    create_commitment_payer,
)
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import utc_now
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.opening import channel_id_for, open_channel_terms
from nanomoni.protocol.payments import decide_payment, payment_node_keys

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
        kind = {Mode.signature: wire.SignaturePayment, Mode.payword: wire.PaywordPayment}.get(
            self.terms.mode, wire.PaytreePayment
        )
        payment = msgspec.json.decode(body, type=kind)
        keys = payment_node_keys(self.terms, payment)
        view = VendorView(
            state=self.state, nodes=[self.nodes.get(key) for key in keys], closing=False
        )
        decision = decide_payment(self.terms.mode, self.terms, view, payment, now=utc_now())
        if not decision.replay:
            self.state = decision.state
            self.nodes.update(decision.nodes)
        return decision.replay


def open_both_sides(mode: Mode, alg: str) -> tuple[Payer, VendorState]:
    client, vendor = Wallet.generate("secp256k1"), Wallet.generate("ed25519")
    if mode is Mode.signature:
        request = build_open_request(client, vendor.public_key_b64, mode, 1000, hash_alg=alg)
    else:
        commitment = create_commitment_payer(mode, MAX_INDEX, alg)
        request = build_open_request(
            client,
            vendor.public_key_b64,
            mode,
            MAX_INDEX * UNIT,
            hash_alg=alg,
            unit_value=UNIT,
            max_index=MAX_INDEX,
            root=commitment.root,
        )
    salt = os.urandom(32)
    terms = open_channel_terms(
        mode, request, salt=salt, channel_uuid="00000000-0000-4000-8000-000000000000",
        created_at=utc_now(),
    )  # fmt: skip
    assert terms.channel_id == channel_id_for(
        client.key.public_key_der, vendor.key.public_key_der, salt
    )
    assert terms.hash_alg == alg
    payer: Payer
    if mode is Mode.signature:
        payer = SignaturePayer(client, terms.channel_id)
    else:
        commitment.channel_id = terms.channel_id
        payer = commitment
    return payer, VendorState(terms)


@pytest.mark.parametrize("alg", crypto.HASH_ALGS)
@pytest.mark.parametrize("mode", list(Mode))
def test_vendor_rules_accept_every_client_payment(mode: Mode, alg: str) -> None:
    payer, vendor = open_both_sides(mode, alg)
    for index in (1, 2, 3, 10, 25, 70, 71, 128, 129, 255, 256, 300):
        body = msgspec.json.encode(payer.body(index))
        assert vendor.offer(body) is False  # newly accepted
        assert vendor.offer(body) is True  # the identical retry is a replay
        payer.accepted(index)
        assert vendor.state is not None and vendor.state.index == index
    # An index the vendor already passed is refused, whatever proof the client builds.
    with pytest.raises(NanoMoniError) as refused:
        vendor.offer(msgspec.json.encode(payer.body(299)))
    assert refused.value.code is Code.non_monotonic


@pytest.mark.parametrize("mode", [Mode.paytree_first_opt, Mode.paytree_second_opt])
def test_vendor_refuses_a_proof_built_against_another_accepted_state(mode: Mode) -> None:
    payer, vendor = open_both_sides(mode, "sha256")
    first = msgspec.json.encode(payer.body(10))
    assert vendor.offer(first) is False
    # The client never learned that 10 was accepted: its proof for 25 carries
    # too many siblings for the vendor, which refuses it as invalid_proof.
    with pytest.raises(NanoMoniError) as refused:
        vendor.offer(msgspec.json.encode(payer.body(25)))
    assert refused.value.code is Code.invalid_proof
    payer.accepted(10)
    assert vendor.offer(msgspec.json.encode(payer.body(25))) is False
