"""SPEC §4.5, §5.0–§5.6: payment decisions and settlements of real channels.

Real keys of every kind, real PayWord chains and Merkle trees; the client end
builds payments the way the SPEC describes, the vendor end applies each
accepted decision as the store's compare-and-set would.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanomoni import crypto, wire
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.errors import Code, NanoMoniError
from nanomoni.protocol.messages import TreePayment, TreeSettlement
from nanomoni.protocol.model import Closure, IssuerChannel, Mode, PaymentState, VendorView
from nanomoni.protocol.modes import RULES
from nanomoni.protocol.opening import open_channel_terms
from nanomoni.protocol.payments import Decision, decide_payment, learned_terms
from nanomoni.protocol.settlement import check_settlement

# The three open members (root, unit value, max index) of each committed mode.
MEMBERS = {mode: r.members.names for mode, r in RULES.items() if r.members is not None}
TREE_MODES = {Mode.paytree, Mode.paytree_first_opt, Mode.paytree_second_opt}


def payment_node_keys(terms: Any, body: wire.PaymentBody) -> list[int]:
    return RULES[terms.mode].payment_node_keys(terms, body.domain())


def settlement_node_keys(terms: Any, state: PaymentState) -> list[int]:
    return RULES[terms.mode].settlement_node_keys(terms, state)


def payment_response(terms: Any, state: PaymentState) -> wire.PaymentResponse:
    raw = wire.payment_response(RULES[terms.mode], terms, state)
    return msgspec.json.decode(raw, type=wire.PaymentResponse)


T0 = "2026-11-30T01:00:00.000000+00:00"
T1 = "2026-11-30T01:00:01.000000+00:00"
T2 = "2026-11-30T01:00:02.000000+00:00"


class Channel:
    """A real channel from both ends: the client's secrets and a vendor's accepted state.

    The vendor end keeps state and nodes in memory exactly as the store would
    after each compare-and-set of an accepted decision.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        max_index: int = 127,
        unit: int = 3,
        amount: int | None = None,
        hash_alg: str = "sha256",
        kind: str = "p256",
        vendor_kind: str = "ed25519",
    ) -> None:
        self.mode = mode
        self.client = crypto.SigningKey.generate(kind)
        self.vendor = crypto.SigningKey.generate(vendor_kind)
        self.chain: crypto.PaywordChain | None = None
        self.tree: crypto.MerkleTree | None = None
        self.secrets: list[bytes] = []  # leaf j = H(secrets[j])
        fields: dict[str, Any] = {
            "client_public_key_der_b64": b64encode(self.client.public_key_der),
            "vendor_public_key_der_b64": b64encode(self.vendor.public_key_der),
            "amount": amount if amount is not None else max_index * unit,
            "hash_alg": hash_alg,
        }
        if mode == Mode.payword:
            self.chain = crypto.PaywordChain(os.urandom(32), max_index, hash_alg)
            root = self.chain.root
        elif mode in TREE_MODES:
            self.secrets = [os.urandom(32) for _ in range(max_index + 1)]
            self.tree = crypto.MerkleTree.from_secrets(self.secrets, hash_alg)
            root = self.tree.root
        if mode in MEMBERS:
            root_name, unit_name, max_name = MEMBERS[mode]
            fields.update({root_name: b64encode(root), unit_name: unit, max_name: max_index})
        signature = self.client.sign(canonical_json(fields))
        raw = wire.encode({**fields, "open_signature_b64": b64encode(signature)})
        self.terms = open_channel_terms(
            RULES[mode], wire.decode_open(raw), salt=os.urandom(32), channel_uuid="uuid-1",
            created_at=T0,
        )  # fmt: skip
        self.state: PaymentState | None = None
        self.nodes: dict[int, bytes] = {}
        self.closing = False
        # Client side: last accepted index and, for second-opt, the known set K.
        self.last: int | None = None
        self.known: set[tuple[int, int]] = set()

    # --- client end -------------------------------------------------------------

    def sign_amount(self, amount: int, key: crypto.SigningKey | None = None) -> str:
        message = canonical_json(
            {"channel_id": self.terms.channel_id, "cumulative_owed_amount": amount}
        )
        return b64encode((key or self.client).sign(message))

    def payment(self, index: int) -> wire.PaymentBody:
        """The honest client's payment for `index` given what it knows was accepted."""
        if self.mode == Mode.signature:
            return wire.SignaturePaymentBody(
                channel_id=self.terms.channel_id,
                cumulative_owed_amount=index,
                signature_b64=self.sign_amount(index),
            )
        if self.mode == Mode.payword:
            assert self.chain is not None
            return wire.PaywordPaymentBody(k=index, token_b64=b64encode(self.chain.token(index)))
        assert self.tree is not None
        proof = self.tree.proof(index)
        if self.mode == Mode.paytree:
            siblings = proof
        elif self.mode == Mode.paytree_first_opt:
            siblings = proof[: crypto.first_opt_levels(index, self.last, self.tree.depth)]
        else:
            missing, _ = crypto.second_opt_levels(
                index, self.tree.depth, lambda level, pos: (level, pos) in self.known
            )
            siblings = [proof[level] for level in missing]
        return wire.TreePaymentBody(
            i=index,
            secret_b64=b64encode(self.secrets[index]),
            siblings_b64=[b64encode(s) for s in siblings],
        )

    def client_accepted(self, index: int) -> None:
        self.last = index
        if self.tree is not None:
            for level in range(self.tree.depth):
                self.known.add((level, index >> level))
                self.known.add((level, (index >> level) ^ 1))

    # --- vendor end -------------------------------------------------------------

    def decide(self, payment: wire.PaymentBody, *, now: str = T1, **kwargs: Any) -> Decision:
        """The vendor decides a body: decoded at the edge, then judged by the rules."""
        decoded = payment.domain()
        rules = RULES[self.mode]
        # (A body of another mode's type reaches decide_payment only in these tests.)
        keys = (
            rules.payment_node_keys(self.terms, decoded)
            if isinstance(decoded, rules.payment_type)
            else []
        )
        view = VendorView(
            state=self.state, nodes=[self.nodes.get(key) for key in keys], closing=self.closing
        )
        decision = decide_payment(rules, self.terms, view, decoded, now=now, **kwargs)
        if not decision.replay:
            self.state = decision.state
            self.nodes.update(decision.nodes)
        return decision

    def pay(self, index: int, now: str = T1) -> Decision:
        decision = self.decide(self.payment(index), now=now)
        assert not decision.replay
        self.client_accepted(index)
        return decision

    def refused(self, payment: wire.PaymentBody, code: Code, **kwargs: Any) -> str:
        before = (self.state, dict(self.nodes))
        with pytest.raises(NanoMoniError) as caught:
            self.decide(payment, **kwargs)
        assert caught.value.code == code, caught.value.detail
        assert (self.state, self.nodes) == before  # a refusal changes nothing
        return caught.value.detail

    # --- settlement ---------------------------------------------------------------

    def settlement(self) -> wire.SettlementBody:
        assert self.state is not None
        rules = RULES[self.mode]
        keys = rules.settlement_node_keys(self.terms, self.state)
        nodes = [self.nodes.get(key) for key in keys]
        built = rules.build_settlement(self.terms, self.state, nodes, self.vendor)
        return wire.settlement_body(built)

    def check(
        self, body: wire.SettlementBody, mode: Mode | None = None, path_id: str | None = None
    ) -> Closure:
        return check_settlement(
            RULES[mode or self.mode],
            self.terms,
            path_id or self.terms.channel_id,
            body.domain(),
            now=T2,
        )

    def check_refused(self, body: wire.SettlementBody, code: Code, **kwargs: Any) -> str:
        with pytest.raises(NanoMoniError) as caught:
            self.check(body, **kwargs)
        assert caught.value.code == code, caught.value.detail
        return caught.value.detail

    def vendor_signed(
        self, body: wire.SettlementBody, key: crypto.SigningKey | None = None
    ) -> wire.SettlementBody:
        """Re-sign a (tampered) PayWord/PayTree settlement as SPEC §4.5 says."""
        assert not isinstance(body, wire.SignatureSettlementBody)
        fields = msgspec.to_builtins(body)
        del fields["vendor_public_key_der_b64"], fields["vendor_signature_b64"]
        fields["channel_id"] = self.terms.channel_id
        signature = (key or self.vendor).sign(canonical_json(fields))
        return msgspec.structs.replace(body, vendor_signature_b64=b64encode(signature))

    def both_signed(self, channel_id: str, amount: int) -> wire.SignatureSettlementBody:
        message = canonical_json({"channel_id": channel_id, "cumulative_owed_amount": amount})
        return wire.SignatureSettlementBody(
            channel_id=channel_id,
            cumulative_owed_amount=amount,
            client_close_signature_b64=b64encode(self.client.sign(message)),
            vendor_close_signature_b64=b64encode(self.vendor.sign(message)),
        )


def tamper(text: str) -> str:
    """A well-formed but wrong 32-byte value in place of `text`."""
    return b64encode(crypto.digest(text.encode()))


def with_siblings(payment: wire.PaymentBody, siblings: list[str]) -> wire.TreePaymentBody:
    assert isinstance(payment, wire.TreePaymentBody)
    return msgspec.structs.replace(payment, siblings_b64=siblings)


ALL_MODES = list(Mode)
INDEXED_MODES = [mode for mode in Mode if mode != Mode.signature]


# --- §5.0 common rules, every mode ---------------------------------------------------


EXPIRES_AT = 1_900_000_000_123_456  # µs: 2030-03-17T17:46:40.123456+00:00


def read_view(channel: Channel, mode: Mode | None = None, **changes: Any) -> bytes:
    """The issuer's read view of the channel as JSON (SPEC §4.4)."""
    terms = msgspec.structs.replace(channel.terms, expires_at=EXPIRES_AT)
    view = wire.channel_view(RULES[mode or channel.mode], IssuerChannel(terms=terms), opened=False)
    return wire.encode(view | changes)


def test_learned_terms_match_the_issuers_terms() -> None:
    for mode in ALL_MODES:
        channel = Channel(mode, max_index=20)
        info = wire.decode_channel(RULES[mode], read_view(channel))
        learned = learned_terms(info, b64encode(channel.vendor.public_key_der))
        # Everything but the issuer's record of the open request it came from.
        assert learned == msgspec.structs.replace(
            channel.terms, open_key=b"", ttl_us=None, expires_at=EXPIRES_AT
        )


def test_learning_refuses_closed_and_foreign_channels() -> None:
    channel = Channel(Mode.paytree, max_index=20)
    vendor_b64 = b64encode(channel.vendor.public_key_der)
    closed = wire.decode_channel(RULES[Mode.paytree], read_view(channel, is_closed=True))
    read = wire.decode_channel(RULES[Mode.paytree], read_view(channel))
    cases = [
        (closed, vendor_b64, Code.channel_closed),
        (read, b64encode(channel.client.public_key_der), Code.wrong_vendor),
    ]
    for info, key, code in cases:
        with pytest.raises(NanoMoniError) as caught:
            learned_terms(info, key)
        assert caught.value.code == code


@pytest.mark.parametrize("mode", [Mode.payword, Mode.paytree_first_opt])
def test_a_view_without_the_modes_members_is_unreadable(mode: Mode) -> None:
    # An issuer answering a paytree channel for another mode's path: the view lacks
    # that mode's commitment, so the vendor cannot read it as that mode's channel.
    channel = Channel(Mode.paytree, max_index=20)
    with pytest.raises(NanoMoniError) as caught:
        wire.decode_channel(RULES[mode], read_view(channel))
    assert caught.value.code == Code.validation_error


@pytest.mark.parametrize("mode", ALL_MODES)
def test_payment_through_another_modes_path_is_mode_mismatch(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    other = Mode.payword if mode != Mode.payword else Mode.signature
    view = VendorView(state=None, nodes=[], closing=False)
    with pytest.raises(NanoMoniError) as caught:
        decide_payment(RULES[other], channel.terms, view, channel.payment(1).domain(), now=T1)
    assert caught.value.code == Code.mode_mismatch


@pytest.mark.parametrize("mode", ALL_MODES)
def test_payment_body_of_another_mode_is_mode_mismatch(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    foreign: wire.PaymentBody = (
        wire.PaywordPaymentBody(k=1, token_b64=b64encode(bytes(32)))
        if mode != Mode.payword
        else wire.TreePaymentBody(i=1, secret_b64=b64encode(bytes(32)), siblings_b64=[])
    )
    channel.refused(foreign, Code.mode_mismatch)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_body_channel_id_differing_from_the_path_is_id_mismatch(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    payment = msgspec.structs.replace(channel.payment(1), channel_id="x" * 43)
    channel.refused(payment, Code.id_mismatch)
    same = msgspec.structs.replace(channel.payment(1), channel_id=channel.terms.channel_id)
    assert channel.decide(same).state.index == 1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_payments_on_closing_channels_are_refused_in_every_mode(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    channel.pay(1)
    channel.closing = True
    channel.refused(channel.payment(2), Code.channel_closed)
    channel.refused(channel.payment(1), Code.channel_closed)  # even an exact replay


@pytest.mark.parametrize("mode", ALL_MODES)
def test_index_zero_is_invalid_amount(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    if mode == Mode.signature:
        payment: wire.PaymentBody = wire.SignaturePaymentBody(
            channel_id=channel.terms.channel_id,
            cumulative_owed_amount=0,
            signature_b64=channel.sign_amount(0),
        )
    elif mode == Mode.payword:
        assert channel.chain is not None
        payment = wire.PaywordPaymentBody(k=0, token_b64=b64encode(channel.chain.root))
    else:
        assert channel.tree is not None
        payment = wire.TreePaymentBody(
            i=0,
            secret_b64=b64encode(channel.secrets[0]),
            siblings_b64=[b64encode(s) for s in channel.tree.proof(0)],
        )
    channel.refused(payment, Code.invalid_amount)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_lower_index_is_non_monotonic(mode: Mode) -> None:
    channel = Channel(mode, max_index=16)
    stale = channel.payment(3)
    channel.pay(5)
    assert "increasing" in channel.refused(stale, Code.non_monotonic)


@pytest.mark.parametrize("mode", INDEXED_MODES)
def test_index_above_the_channel_max_is_exceeds_max(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    payment = channel.payment(8)
    if isinstance(payment, wire.PaywordPaymentBody):
        beyond: wire.PaymentBody = msgspec.structs.replace(payment, k=9)
    else:
        assert isinstance(payment, wire.TreePaymentBody)
        beyond = msgspec.structs.replace(payment, i=9)
    assert "exceeds" in channel.refused(beyond, Code.exceeds_max)
    assert channel.decide(payment).state.owed == 8 * 3


@pytest.mark.parametrize("mode", ALL_MODES)
def test_owed_above_the_channel_amount_is_exceeds_amount(mode: Mode) -> None:
    channel = Channel(mode, max_index=8)
    # Terms as they could never be opened (max × unit > amount) isolate the rule.
    channel.terms = msgspec.structs.replace(channel.terms, amount=20)
    if mode == Mode.signature:
        assert channel.pay(20).state.owed == 20
        detail = channel.refused(channel.payment(21), Code.exceeds_amount)
    else:
        assert channel.pay(6).state.owed == 18
        detail = channel.refused(channel.payment(7), Code.exceeds_amount)
    assert "exceeds" in detail


@pytest.mark.parametrize("mode", ALL_MODES)
def test_accepted_payments_and_their_responses(mode: Mode) -> None:
    channel = Channel(mode, max_index=40, unit=2, amount=100)
    first = channel.pay(3, now=T1)
    assert first.state.index == 3 and first.state.created_at == T1
    second = channel.pay(17, now=T2)
    assert second.state.index == 17
    assert second.state.owed == (17 if mode == Mode.signature else 34)
    response = payment_response(channel.terms, second.state)
    assert response.channel_id == channel.terms.channel_id
    assert response.cumulative_owed_amount == second.state.owed
    assert response.created_at == T2
    assert response.k == (17 if mode == Mode.payword else None)
    assert response.i == (17 if mode in TREE_MODES else None)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_exact_replay_returns_the_stored_state(mode: Mode) -> None:
    channel = Channel(mode, max_index=40)
    payment = channel.payment(9)
    accepted = channel.decide(payment, now=T1)
    replay = channel.decide(payment, now=T2)
    assert replay.replay and replay.state == accepted.state and replay.nodes == {}
    assert payment_response(channel.terms, replay.state).created_at == T1


def test_undecodable_proof_is_invalid_encoding() -> None:
    for mode in INDEXED_MODES:
        channel = Channel(mode, max_index=8)
        payment = channel.payment(2)
        if isinstance(payment, wire.PaywordPaymentBody):
            bad: wire.PaymentBody = msgspec.structs.replace(payment, token_b64="@@@@")
            short: wire.PaymentBody = msgspec.structs.replace(
                payment, token_b64=b64encode(bytes(31))
            )
        else:
            assert isinstance(payment, wire.TreePaymentBody)
            bad = msgspec.structs.replace(payment, secret_b64="not base64")
            short = with_siblings(payment, [*payment.siblings_b64[:-1], b64encode(bytes(33))])
        channel.refused(bad, Code.invalid_encoding)
        channel.refused(short, Code.invalid_encoding)


# --- §5.1 signature ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_signature_payments_with_every_key_kind(kind: str) -> None:
    channel = Channel(Mode.signature, max_index=1000, kind=kind)
    for amount in (1, 2, 500, 3000):
        decision = channel.pay(amount)
        assert decision.state.owed == amount
        assert crypto.verify_signature(
            channel.client.public_key_der,
            canonical_json(
                {"channel_id": channel.terms.channel_id, "cumulative_owed_amount": amount}
            ),
            decision.state.proof,
        )


def test_signature_by_another_key_or_over_another_amount_is_invalid_signature() -> None:
    channel = Channel(Mode.signature, max_index=1000)
    stranger = crypto.SigningKey.generate("p256")
    forged = wire.SignaturePaymentBody(
        channel_id=channel.terms.channel_id,
        cumulative_owed_amount=10,
        signature_b64=channel.sign_amount(10, stranger),
    )
    detail = channel.refused(forged, Code.invalid_signature)
    assert "invalid" in detail and "signature" in detail
    moved = msgspec.structs.replace(forged, signature_b64=channel.sign_amount(11))
    channel.refused(moved, Code.invalid_signature)
    channel.refused(msgspec.structs.replace(forged, signature_b64="!!"), Code.invalid_encoding)


def test_signature_replay_needs_a_valid_signature_not_the_same_bytes() -> None:
    channel = Channel(Mode.signature, max_index=1000, kind="secp256k1")
    accepted = channel.pay(50)
    # A fresh signature over the same amount is different bytes but the same payment.
    fresh = channel.payment(50)
    replay = channel.decide(fresh, now=T2)
    assert replay.replay and replay.state == accepted.state
    stranger = crypto.SigningKey.generate("secp256k1")
    forged = msgspec.structs.replace(fresh, signature_b64=channel.sign_amount(50, stranger))
    channel.refused(forged, Code.invalid_signature)
    assert channel.state == accepted.state


def test_signature_amount_zero_is_refused_even_when_signed() -> None:
    channel = Channel(Mode.signature, max_index=1000)
    zero = wire.SignaturePaymentBody(
        channel_id=channel.terms.channel_id,
        cumulative_owed_amount=0,
        signature_b64=channel.sign_amount(0),
    )
    channel.refused(zero, Code.invalid_amount)


# --- §5.2 payword --------------------------------------------------------------------------


@pytest.mark.parametrize("hash_alg", crypto.HASH_ALGS)
def test_payword_sequence_with_jumps(hash_alg: str) -> None:
    channel = Channel(Mode.payword, max_index=1000, unit=1, hash_alg=hash_alg)
    for k in (1, 2, 3, 10, 500, 1000):
        decision = channel.pay(k)
        assert channel.chain is not None
        assert decision.state.proof == channel.chain.token(k)
    assert channel.state is not None and channel.state.owed == 1000


def test_payword_wrong_token_is_invalid_proof() -> None:
    channel = Channel(Mode.payword, max_index=100)
    channel.pay(5)
    assert channel.chain is not None
    wrong = wire.PaywordPaymentBody(k=7, token_b64=b64encode(channel.chain.token(8)))
    detail = channel.refused(wrong, Code.invalid_proof)
    assert "invalid" in detail and "token" in detail and "mismatch" in detail
    other_chain = Channel(Mode.payword, max_index=100)
    assert other_chain.chain is not None
    foreign = wire.PaywordPaymentBody(k=7, token_b64=b64encode(other_chain.chain.token(7)))
    channel.refused(foreign, Code.invalid_proof)


def test_payword_first_payment_is_checked_against_the_root() -> None:
    channel = Channel(Mode.payword, max_index=100)
    assert channel.chain is not None
    # The root itself hashes to something else: not a token for k = 1.
    channel.refused(
        wire.PaywordPaymentBody(k=1, token_b64=b64encode(channel.chain.root)), Code.invalid_proof
    )
    assert channel.pay(100).state.proof == channel.chain.token(100)


def test_payword_same_k_with_another_token_is_duplicate_mismatch() -> None:
    channel = Channel(Mode.payword, max_index=100)
    channel.pay(4)
    payment = channel.payment(4)
    assert isinstance(payment, wire.PaywordPaymentBody)
    other = msgspec.structs.replace(payment, token_b64=tamper(payment.token_b64))
    assert "duplicate" in channel.refused(other, Code.duplicate_mismatch)
    garbage = msgspec.structs.replace(payment, token_b64="***")
    channel.refused(garbage, Code.invalid_encoding)  # decided at the edge, before any rule


def test_payword_hash_work_per_payment_is_capped() -> None:
    channel = Channel(Mode.payword, max_index=300, unit=1)
    channel.pay(10)
    channel.refused(channel.payment(111), Code.exceeds_max, max_hashes=100)
    assert channel.decide(channel.payment(110), max_hashes=100).state.index == 110
    fresh = Channel(Mode.payword, max_index=300, unit=1)
    fresh.refused(fresh.payment(101), Code.exceeds_max, max_hashes=100)


# --- §5.3 paytree ----------------------------------------------------------------------------


@pytest.mark.parametrize("hash_alg", crypto.HASH_ALGS)
@pytest.mark.parametrize("max_index", [1, 5, 64, 127, 128])
def test_paytree_full_proofs_verify(hash_alg: str, max_index: int) -> None:
    channel = Channel(Mode.paytree, max_index=max_index, hash_alg=hash_alg)
    assert channel.tree is not None and channel.tree.depth == max_index.bit_length()
    for i in sorted({1, max_index // 2 or 1, max_index}):
        state = channel.pay(i).state
        assert state.proof == channel.secrets[i] + b"".join(channel.tree.proof(i))


def test_paytree_wrong_sibling_count_is_invalid_proof() -> None:
    channel = Channel(Mode.paytree, max_index=127)
    payment = channel.payment(9)
    assert isinstance(payment, wire.TreePaymentBody)
    short = with_siblings(payment, payment.siblings_b64[:-1])
    channel.refused(short, Code.invalid_proof)
    padded = with_siblings(payment, [*payment.siblings_b64, payment.siblings_b64[-1]])
    channel.refused(padded, Code.invalid_proof)
    channel.refused(with_siblings(payment, []), Code.invalid_proof)
    channel.refused(with_siblings(payment, payment.siblings_b64 * 20), Code.invalid_proof)


def test_paytree_tampered_leaf_or_sibling_is_invalid_proof() -> None:
    channel = Channel(Mode.paytree, max_index=127)
    payment = channel.payment(9)
    assert isinstance(payment, wire.TreePaymentBody)
    for level in range(len(payment.siblings_b64)):
        siblings = list(payment.siblings_b64)
        siblings[level] = tamper(siblings[level])
        channel.refused(with_siblings(payment, siblings), Code.invalid_proof)
    wrong_secret = msgspec.structs.replace(payment, secret_b64=tamper(payment.secret_b64))
    channel.refused(wrong_secret, Code.invalid_proof)
    # A leaf sent beside the secret must be its hash.
    assert channel.tree is not None
    other_leaf = msgspec.structs.replace(payment, leaf_b64=b64encode(channel.tree.leaf(8)))
    assert "hash of secret" in channel.refused(other_leaf, Code.invalid_proof)
    right_leaf = msgspec.structs.replace(payment, leaf_b64=b64encode(channel.tree.leaf(9)))
    assert channel.decide(right_leaf).state.index == 9
    channel.state = None
    # A real proof for another index does not pay this one.
    channel.refused(msgspec.structs.replace(channel.payment(10), i=9), Code.invalid_proof)


@pytest.mark.parametrize("mode", sorted(TREE_MODES))
def test_tree_secret_of_another_length_folds_to_no_leaf(mode: Mode) -> None:
    """The wire only decodes 32-byte secrets; a payment built in-process with another
    length (the same bytes re-split) pays nothing and changes nothing."""
    channel = Channel(mode, max_index=127)
    channel.pay(5)
    payment = channel.payment(9).domain()
    assert isinstance(payment, TreePayment)
    view = VendorView(state=channel.state, nodes=[], closing=False)
    rules = RULES[mode]
    assert decide_payment(rules, channel.terms, view, payment, now=T1).state.index == 9
    assert payment.siblings  # the same count of siblings, the same bytes in all
    blob = payment.secret + payment.path
    for cut in (16, 48):
        resplit = TreePayment(i=9, secret=blob[:cut], path=blob[cut:])
        assert resplit.secret + resplit.path == blob
        with pytest.raises(NanoMoniError) as caught:
            decide_payment(rules, channel.terms, view, resplit, now=T1)
        assert caught.value.code == Code.invalid_proof


def test_paytree_same_i_with_another_proof_is_duplicate_mismatch() -> None:
    channel = Channel(Mode.paytree, max_index=127)
    channel.pay(9)
    payment = channel.payment(9)
    assert isinstance(payment, wire.TreePaymentBody)
    siblings = [*payment.siblings_b64[:-1], tamper(payment.siblings_b64[-1])]
    assert "duplicate" in channel.refused(with_siblings(payment, siblings), Code.duplicate_mismatch)
    channel.refused(with_siblings(payment, []), Code.duplicate_mismatch)


@pytest.mark.parametrize("mode", sorted(TREE_MODES))
def test_same_bytes_split_differently_are_not_a_replay(mode: Mode) -> None:
    channel = Channel(mode, max_index=127)
    payment = channel.payment(9)
    channel.pay(9)
    assert isinstance(payment, wire.TreePaymentBody) and len(payment.siblings_b64) >= 1
    secret = base64.b64decode(payment.secret_b64)
    first = base64.b64decode(payment.siblings_b64[0])
    shifted = wire.TreePaymentBody(
        i=9,
        secret_b64=b64encode(secret + first[:1]),
        siblings_b64=[b64encode(first[1:]), *payment.siblings_b64[1:]],
    )
    # Parts of the wrong size never reach the rules: the edge checks every length.
    channel.refused(shifted, Code.invalid_encoding)


# --- §5.4 paytree_first_opt ------------------------------------------------------------------


def test_first_opt_sibling_counts_10_25_70_on_a_128_leaf_tree() -> None:
    channel = Channel(Mode.paytree_first_opt, max_index=127)
    assert channel.tree is not None and channel.tree.depth == 7
    counts = []
    for i in (10, 25, 70):
        payment = channel.payment(i)
        assert isinstance(payment, wire.TreePaymentBody)
        counts.append(len(payment.siblings_b64))
        state = channel.pay(i).state
        # The state keeps the full path of the accepted index, whatever was sent.
        assert state.proof[1:] == channel.secrets[i] + b"".join(channel.tree.proof(i))
    assert counts == [7, 5, 7]


def test_first_opt_any_other_sibling_count_is_invalid_proof() -> None:
    channel = Channel(Mode.paytree_first_opt, max_index=127)
    channel.pay(10)
    assert channel.tree is not None
    full = [b64encode(s) for s in channel.tree.proof(25)]
    payment = channel.payment(25)
    for count in (0, 1, 4, 6, 7):
        channel.refused(with_siblings(payment, full[:count]), Code.invalid_proof)
    assert channel.decide(with_siblings(payment, full[:5])).state.index == 25


def test_first_opt_empty_sibling_list_is_only_an_exact_replay() -> None:
    channel = Channel(Mode.paytree_first_opt, max_index=127)
    channel.pay(10)
    channel.pay(11)  # t = bit_length(10 ^ 11) = 1: one sibling was sent
    assert channel.tree is not None
    full = [b64encode(s) for s in channel.tree.proof(11)]
    payment = wire.TreePaymentBody(
        i=11, secret_b64=b64encode(channel.secrets[11]), siblings_b64=full
    )
    sent_one = with_siblings(payment, payment.siblings_b64[:1])
    assert channel.decide(sent_one).replay
    channel.refused(with_siblings(payment, []), Code.duplicate_mismatch)
    channel.refused(payment, Code.duplicate_mismatch)  # full path: not the body accepted
    channel.refused(with_siblings(channel.payment(12), []), Code.invalid_proof)


def test_first_opt_tampered_pruned_proof_is_invalid_proof() -> None:
    channel = Channel(Mode.paytree_first_opt, max_index=127)
    channel.pay(10)
    payment = channel.payment(25)
    assert isinstance(payment, wire.TreePaymentBody)
    for level in range(5):
        siblings = list(payment.siblings_b64)
        siblings[level] = tamper(siblings[level])
        channel.refused(with_siblings(payment, siblings), Code.invalid_proof)
    wrong_leaf = msgspec.structs.replace(payment, secret_b64=tamper(payment.secret_b64))
    channel.refused(wrong_leaf, Code.invalid_proof)


# --- §5.5 paytree_second_opt ---------------------------------------------------------------


def test_second_opt_sends_only_unknown_siblings_and_keeps_the_full_path() -> None:
    channel = Channel(Mode.paytree_second_opt, max_index=127)
    tree = channel.tree
    assert tree is not None
    sent = []
    for i in (1, 2, 3, 6, 100):
        payment = channel.payment(i)
        assert isinstance(payment, wire.TreePaymentBody)
        sent.append(len(payment.siblings_b64))
        decision = channel.pay(i)
        assert decision.nodes == {}  # no node map: the state holds all the vendor needs
        # count ‖ secret ‖ the full path of i, whatever the body carried
        assert decision.state.proof[0] == len(payment.siblings_b64)
        assert decision.state.proof[33:] == b"".join(tree.proof(i))
    # 1: full path; 2: only leaf 3 is new (node(1,1) known); 3: leaf 3 already known;
    # 6: leaves 6, 7 and node(1,3) unknown, node(2,1) known; 100: the other half.
    assert sent == [7, 1, 0, 2, 6]


def test_second_opt_extra_or_missing_siblings_are_invalid_proof() -> None:
    channel = Channel(Mode.paytree_second_opt, max_index=127)
    channel.pay(1)
    assert channel.tree is not None
    payment = channel.payment(6)
    assert isinstance(payment, wire.TreePaymentBody) and len(payment.siblings_b64) == 2
    full = [b64encode(s) for s in channel.tree.proof(6)]
    channel.refused(with_siblings(payment, full), Code.invalid_proof)
    channel.refused(with_siblings(payment, [*payment.siblings_b64, full[2]]), Code.invalid_proof)
    channel.refused(with_siblings(payment, payment.siblings_b64[:1]), Code.invalid_proof)
    channel.refused(with_siblings(payment, []), Code.invalid_proof)
    assert channel.decide(payment).state.index == 6


def test_second_opt_tampered_proof_is_invalid_proof() -> None:
    channel = Channel(Mode.paytree_second_opt, max_index=127)
    channel.pay(1)
    payment = channel.payment(6)
    assert isinstance(payment, wire.TreePaymentBody)
    for level in range(2):
        siblings = list(payment.siblings_b64)
        siblings[level] = tamper(siblings[level])
        channel.refused(with_siblings(payment, siblings), Code.invalid_proof)
    channel.refused(
        msgspec.structs.replace(payment, secret_b64=tamper(payment.secret_b64)), Code.invalid_proof
    )
    channel.pay(2)
    # Leaf 3 is known from payment 2: a wrong leaf with no siblings is caught too.
    leaf_three = channel.payment(3)
    assert isinstance(leaf_three, wire.TreePaymentBody) and leaf_three.siblings_b64 == []
    channel.refused(
        msgspec.structs.replace(leaf_three, secret_b64=tamper(leaf_three.secret_b64)),
        Code.invalid_proof,
    )


def test_second_opt_replay_and_duplicate_mismatch() -> None:
    channel = Channel(Mode.paytree_second_opt, max_index=127)
    payment = channel.payment(5)
    accepted = channel.decide(payment, now=T1)
    channel.client_accepted(5)
    assert channel.decide(payment, now=T2).replay
    assert isinstance(payment, wire.TreePaymentBody)
    channel.refused(with_siblings(payment, payment.siblings_b64[:2]), Code.duplicate_mismatch)
    assert channel.state == accepted.state


def test_no_mode_loads_merkle_nodes() -> None:
    for mode in TREE_MODES:
        channel = Channel(mode, max_index=127)
        assert payment_node_keys(channel.terms, channel.payment(6)) == []


# --- §4.5 / §5.6 settlement ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("vendor_kind", crypto.KEY_KINDS)
def test_built_settlement_is_accepted_with_the_owed_amount(mode: Mode, vendor_kind: str) -> None:
    channel = Channel(mode, max_index=127, unit=3, vendor_kind=vendor_kind)
    for i in (10, 25, 70):
        channel.pay(i)
    body = channel.settlement()
    closure = channel.check(body)
    owed = 70 if mode == Mode.signature else 210
    assert closure.owed == owed and closure.closed_at == T2
    assert (closure.client_balance, closure.vendor_balance) == (0, 0)
    if isinstance(body, wire.TreeSettlementBody):
        assert channel.tree is not None
        assert body.siblings_b64 == [b64encode(s) for s in channel.tree.proof(70)]
        assert body.leaf_b64 == b64encode(channel.tree.leaf(70))
        assert body.secret_b64 == b64encode(channel.secrets[70])
    if mode == Mode.signature:
        assert isinstance(body, wire.SignatureSettlementBody)
        payload = canonical_json(
            {"channel_id": channel.terms.channel_id, "cumulative_owed_amount": 70}
        )
        assert closure.close_payload_b64 == b64encode(payload)
        # The client's last payment signature closes the channel.
        assert channel.state is not None
        assert body.client_close_signature_b64 == b64encode(channel.state.proof)
        assert closure.client_close_signature_b64 == body.client_close_signature_b64
        assert closure.vendor_close_signature_b64 == body.vendor_close_signature_b64
    else:
        assert closure.close_payload_b64 is None and closure.client_close_signature_b64 is None


@pytest.mark.parametrize("mode", ALL_MODES)
def test_retried_settlement_with_fresh_signatures_has_the_same_digest(mode: Mode) -> None:
    channel = Channel(mode, max_index=64, kind="p256", vendor_kind="p256")
    channel.pay(33)
    first, again = channel.settlement(), channel.settlement()
    assert first != again  # fresh ECDSA signatures
    assert channel.check(first).proof_digest == channel.check(again).proof_digest
    channel.pay(34)
    assert channel.check(channel.settlement()).proof_digest != channel.check(first).proof_digest


@pytest.mark.parametrize("mode", ALL_MODES)
def test_settlement_through_another_modes_path_is_mode_mismatch(mode: Mode) -> None:
    channel = Channel(mode, max_index=16)
    channel.pay(3)
    other = Mode.signature if mode != Mode.signature else Mode.paytree
    channel.check_refused(channel.settlement(), Code.mode_mismatch, mode=other)
    foreign: wire.SettlementBody = (
        wire.PaywordSettlementBody(
            vendor_public_key_der_b64=channel.terms.vendor_public_key_der_b64,
            k=3,
            token_b64=b64encode(bytes(32)),
            vendor_signature_b64="",
        )
        if mode != Mode.payword
        else channel.both_signed(channel.terms.channel_id, 3)
    )
    channel.check_refused(foreign, Code.mode_mismatch)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_settlement_for_another_path_id_is_id_mismatch(mode: Mode) -> None:
    channel = Channel(mode, max_index=16)
    channel.pay(3)
    channel.check_refused(channel.settlement(), Code.id_mismatch, path_id="y" * 43)


def test_signature_settlement_refusals() -> None:
    channel = Channel(Mode.signature, max_index=100, amount=100)
    channel.pay(40)
    body = channel.settlement()
    assert isinstance(body, wire.SignatureSettlementBody)
    cid = channel.terms.channel_id
    channel.check_refused(channel.both_signed("z" * 43, 40), Code.id_mismatch)
    raised = msgspec.structs.replace(body, cumulative_owed_amount=41)
    assert "signature" in channel.check_refused(raised, Code.invalid_signature)
    stranger = crypto.SigningKey.generate("ed25519")
    message = canonical_json({"channel_id": cid, "cumulative_owed_amount": 40})
    by_stranger = b64encode(stranger.sign(message))
    channel.check_refused(
        msgspec.structs.replace(body, client_close_signature_b64=by_stranger),
        Code.invalid_signature,
    )
    channel.check_refused(
        msgspec.structs.replace(body, vendor_close_signature_b64=by_stranger),
        Code.invalid_signature,
    )
    channel.check_refused(
        msgspec.structs.replace(body, vendor_close_signature_b64="?"), Code.invalid_encoding
    )
    channel.check_refused(channel.both_signed(cid, 0), Code.invalid_amount)
    assert "exceeds" in channel.check_refused(channel.both_signed(cid, 101), Code.exceeds_amount)
    assert channel.check(channel.both_signed(cid, 100)).owed == 100


def test_payword_settlement_refusals() -> None:
    channel = Channel(Mode.payword, max_index=100, unit=2)
    channel.pay(30)
    body = channel.settlement()
    assert isinstance(body, wire.PaywordSettlementBody) and channel.chain is not None
    unsigned_change = msgspec.structs.replace(body, k=31)
    channel.check_refused(unsigned_change, Code.invalid_signature)
    wrong_k = channel.vendor_signed(msgspec.structs.replace(body, k=31))
    detail = channel.check_refused(wrong_k, Code.invalid_proof)
    assert "invalid" in detail and "token" in detail and "mismatch" in detail
    wrong_token = channel.vendor_signed(
        msgspec.structs.replace(body, token_b64=tamper(body.token_b64))
    )
    channel.check_refused(wrong_token, Code.invalid_proof)
    stranger = crypto.SigningKey.generate("p256")
    channel.check_refused(channel.vendor_signed(body, stranger), Code.invalid_signature)
    claimed = msgspec.structs.replace(
        body, vendor_public_key_der_b64=b64encode(stranger.public_key_der)
    )
    channel.check_refused(channel.vendor_signed(claimed, stranger), Code.invalid_signature)
    beyond = wire.PaywordSettlementBody(
        vendor_public_key_der_b64=body.vendor_public_key_der_b64,
        k=101,
        token_b64=b64encode(crypto.digest(channel.chain.token(100))),
        vendor_signature_b64="",
    )
    channel.check_refused(channel.vendor_signed(beyond), Code.exceeds_max)
    zero = msgspec.structs.replace(body, k=0, token_b64=b64encode(channel.chain.root))
    channel.check_refused(channel.vendor_signed(zero), Code.invalid_amount)
    bad = channel.vendor_signed(msgspec.structs.replace(body, token_b64="AAAA"))
    channel.check_refused(bad, Code.invalid_encoding)
    # The full chain, settled straight from the root, is the largest valid settlement.
    top = msgspec.structs.replace(body, k=100, token_b64=b64encode(channel.chain.token(100)))
    assert channel.check(channel.vendor_signed(top)).owed == 200


@pytest.mark.parametrize("mode", sorted(TREE_MODES))
def test_paytree_settlement_refusals(mode: Mode) -> None:
    channel = Channel(mode, max_index=127, unit=1)
    for i in (10, 25, 70):
        channel.pay(i)
    body = channel.settlement()
    assert isinstance(body, wire.TreeSettlementBody) and channel.tree is not None
    for siblings in (body.siblings_b64[:-1], [*body.siblings_b64, body.siblings_b64[0]], []):
        resigned = channel.vendor_signed(msgspec.structs.replace(body, siblings_b64=siblings))
        channel.check_refused(resigned, Code.invalid_proof)
    for level in range(len(body.siblings_b64)):
        siblings = list(body.siblings_b64)
        siblings[level] = tamper(siblings[level])
        resigned = channel.vendor_signed(msgspec.structs.replace(body, siblings_b64=siblings))
        channel.check_refused(resigned, Code.invalid_proof)
    moved = channel.vendor_signed(msgspec.structs.replace(body, i=71))
    channel.check_refused(moved, Code.invalid_proof)
    channel.check_refused(msgspec.structs.replace(body, i=71), Code.invalid_signature)
    stranger = crypto.SigningKey.generate("secp256k1")
    channel.check_refused(channel.vendor_signed(body, stranger), Code.invalid_signature)
    beyond = channel.vendor_signed(msgspec.structs.replace(body, i=128))
    channel.check_refused(beyond, Code.exceeds_max)
    zero = wire.TreeSettlementBody(
        vendor_public_key_der_b64=body.vendor_public_key_der_b64,
        i=0,
        secret_b64=b64encode(channel.secrets[0]),
        leaf_b64=b64encode(channel.tree.leaf(0)),
        siblings_b64=[b64encode(s) for s in channel.tree.proof(0)],
        vendor_signature_b64="",
    )
    channel.check_refused(channel.vendor_signed(zero), Code.invalid_amount)
    bad = channel.vendor_signed(msgspec.structs.replace(body, leaf_b64="x"))
    channel.check_refused(bad, Code.invalid_encoding)


def test_second_opt_settles_with_the_full_path_it_kept() -> None:
    channel = Channel(Mode.paytree_second_opt, max_index=127)
    for i in (5, 6, 9):
        channel.pay(i)
    assert channel.state is not None and channel.tree is not None
    assert settlement_node_keys(channel.terms, channel.state) == []
    settlement = RULES[channel.mode].build_settlement(
        channel.terms, channel.state, [], channel.vendor
    )
    assert isinstance(settlement, TreeSettlement)
    assert settlement.i == 9 and settlement.siblings == channel.tree.proof(9)


# --- properties -----------------------------------------------------------------------------


@st.composite
def payment_runs(draw: st.DrawFn) -> tuple[Mode, int, int, str, list[int]]:
    mode = draw(st.sampled_from(ALL_MODES))
    max_index = draw(st.integers(min_value=1, max_value=150))
    unit = draw(st.integers(min_value=1, max_value=7))
    hash_alg = draw(st.sampled_from(crypto.HASH_ALGS))
    indices = draw(
        st.lists(
            st.integers(min_value=1, max_value=max_index), min_size=1, max_size=12, unique=True
        )
    )
    return mode, max_index, unit, hash_alg, sorted(indices)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payment_runs())
def test_monotone_payment_runs_verify_and_settle_to_the_last_index(
    run: tuple[Mode, int, int, str, list[int]],
) -> None:
    mode, max_index, unit, hash_alg, indices = run
    channel = Channel(mode, max_index=max_index, unit=unit, hash_alg=hash_alg)
    for i in indices:
        payment = channel.payment(i)
        if isinstance(payment, wire.TreePaymentBody):
            assert len(payment.siblings_b64) <= max_index.bit_length()
        channel.pay(i)
        assert channel.decide(payment).replay  # every accepted body replays exactly
    closure = channel.check(channel.settlement())
    last = indices[-1]
    assert closure.owed == (last if mode == Mode.signature else last * unit)


_B64_TEXT = st.one_of(
    st.binary(min_size=0, max_size=40).map(b64encode),
    st.text(alphabet="ABCDabcd0123+/=-_ *\n\u00e9", max_size=48),
)
_INDEX = st.integers(min_value=0, max_value=2**63 - 1)
_SMALL_INDEX = st.integers(min_value=0, max_value=70)


@st.composite
def hostile_tree_payments(draw: st.DrawFn) -> wire.TreePaymentBody:
    return wire.TreePaymentBody(
        i=draw(st.one_of(_SMALL_INDEX, _INDEX)),
        secret_b64=draw(_B64_TEXT),
        leaf_b64=draw(st.none() | _B64_TEXT),
        siblings_b64=draw(st.lists(_B64_TEXT, max_size=70)),
        channel_id=draw(st.none() | st.text(max_size=50)),
    )


@pytest.fixture(scope="module")
def warm_channels() -> dict[Mode, Channel]:
    channels = {}
    for mode in ALL_MODES:
        channel = Channel(mode, max_index=63)
        channel.pay(9)
        channels[mode] = channel
    return channels


def only_spec_refusals(channel: Channel, payment: wire.PaymentBody) -> None:
    """Forged input is refused with a 4xx SPEC code, never a crash, and changes nothing."""
    with pytest.raises(NanoMoniError) as caught:
        channel.decide(payment)
    assert 400 <= caught.value.status < 500, caught.value


@settings(max_examples=300, deadline=None)
@given(payment=hostile_tree_payments(), mode=st.sampled_from(sorted(TREE_MODES)))
def test_hostile_tree_payments_get_spec_errors_only(
    warm_channels: dict[Mode, Channel], payment: wire.TreePaymentBody, mode: Mode
) -> None:
    only_spec_refusals(warm_channels[mode], payment)


@settings(max_examples=200, deadline=None)
@given(
    k=st.one_of(_SMALL_INDEX, _INDEX),
    token=_B64_TEXT,
    amount=st.one_of(_SMALL_INDEX, _INDEX),
    signature=_B64_TEXT,
)
def test_hostile_payword_and_signature_payments_get_spec_errors_only(
    warm_channels: dict[Mode, Channel], k: int, token: str, amount: int, signature: str
) -> None:
    only_spec_refusals(warm_channels[Mode.payword], wire.PaywordPaymentBody(k=k, token_b64=token))
    channel = warm_channels[Mode.signature]
    payment = wire.SignaturePaymentBody(
        channel_id=channel.terms.channel_id, cumulative_owed_amount=amount, signature_b64=signature
    )
    only_spec_refusals(channel, payment)


@settings(max_examples=200, deadline=None)
@given(body=hostile_tree_payments(), signature=_B64_TEXT, mode=st.sampled_from(sorted(TREE_MODES)))
def test_hostile_settlements_get_spec_errors_only(
    warm_channels: dict[Mode, Channel], body: wire.TreePaymentBody, signature: str, mode: Mode
) -> None:
    channel = warm_channels[mode]
    settlement = wire.TreeSettlementBody(
        vendor_public_key_der_b64=channel.terms.vendor_public_key_der_b64,
        i=body.i,
        secret_b64=body.secret_b64,
        leaf_b64=body.leaf_b64 or body.secret_b64,
        siblings_b64=body.siblings_b64,
        vendor_signature_b64=signature,
    )
    with pytest.raises(NanoMoniError) as caught:
        channel.check(settlement)
    assert 400 <= caught.value.status < 500
