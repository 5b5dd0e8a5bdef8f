"""Client proof builders against the crypto core: every mode, both hash suites."""

from __future__ import annotations

import msgspec
import pytest

from nanomoni import crypto, wire
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import b64decode, b64encode, canonical_json
from nanomoni.protocol.messages import PaywordPayment, SignaturePayment, TreePayment
from nanomoni.protocol.model import Mode
from nanomoni.protocol.modes import RULES, Payer, amount_message
from nanomoni.protocol.modes.paytree import (
    FirstOptPayer,
    PaytreePayer,
    SecondOptPayer,
)
from nanomoni.protocol.modes.payword import PaywordPayer

SUITES = ("sha256", "blake3")
KEY = crypto.SigningKey.generate("p256")


def create_payer(mode: Mode, max_index: int, alg: str) -> Payer:
    return RULES[mode].create_payer(KEY, max_index=max_index, hash_alg=alg)


def decode_path(body: object, alg: str = "sha256") -> tuple[bytes, list[bytes]]:
    """(the leaf the payment reveals, its siblings)."""
    assert isinstance(body, TreePayment) and body.leaf is None  # the secret reveals it
    return crypto.digest(body.secret, alg), body.siblings


class VendorMirror:
    """The vendor's side of §5.4/§5.5, rebuilt from what the client SENT only."""

    def __init__(self, root: bytes, depth: int, alg: str) -> None:
        self.depth = depth
        self.alg = alg
        self.known: dict[tuple[int, int], bytes] = {(depth, 0): root}
        self.last: int | None = None

    def _learn(self, i: int, leaf: bytes, siblings: list[bytes]) -> None:
        cur = leaf
        for level, sibling in enumerate(siblings):
            pos = i >> level
            self.known[(level, pos)] = cur
            self.known[(level, pos ^ 1)] = sibling
            cur = crypto.merkle_fold(cur, pos, [sibling], self.alg)
        self.known[(len(siblings), i >> len(siblings))] = cur

    def accept_first_opt(self, i: int, body: object) -> bool:
        leaf, sent = decode_path(body, self.alg)
        t = crypto.first_opt_levels(i, self.last, self.depth)
        if len(sent) != t:
            return False
        if crypto.merkle_fold(leaf, i, sent, self.alg) != self.known[(t, i >> t)]:
            return False
        # Complete the path from stored nodes so later payments can prune further.
        full = sent + [self.known[(level, (i >> level) ^ 1)] for level in range(t, self.depth)]
        self._learn(i, leaf, full)
        self.last = i
        return True

    def accept_second_opt(self, i: int, body: object) -> bool:
        leaf, sent = decode_path(body, self.alg)
        missing, stop = crypto.second_opt_levels(
            i, self.depth, lambda level, pos: (level, pos) in self.known
        )
        if len(sent) != len(missing):
            return False
        by_level = dict(zip(missing, sent, strict=True))
        path = [
            by_level.get(level) or self.known[(level, (i >> level) ^ 1)] for level in range(stop)
        ]
        if crypto.merkle_fold(leaf, i, path, self.alg) != self.known[(stop, i >> stop)]:
            return False
        full = path + [self.known[(level, (i >> level) ^ 1)] for level in range(stop, self.depth)]
        self._learn(i, leaf, full)
        return True


@pytest.mark.parametrize("alg", SUITES)
def test_paytree_full_paths_verify(alg: str) -> None:
    payer = create_payer(Mode.paytree, 100, alg)
    assert isinstance(payer, PaytreePayer)
    assert payer.depth == 7
    for i in (1, 2, 63, 64, 99, 100):
        leaf, siblings = decode_path(payer.payment(i), alg)
        assert len(siblings) == 7
        assert crypto.verify_merkle(leaf, i, siblings, payer.root, 7, alg)
        payer.accepted(i)


@pytest.mark.parametrize("alg", SUITES)
def test_first_opt_sibling_counts_and_verification(alg: str) -> None:
    payer = create_payer(Mode.paytree_first_opt, 127, alg)
    assert isinstance(payer, FirstOptPayer)
    assert payer.tree.leaf_count == 128 and payer.depth == 7
    vendor = VendorMirror(payer.root, payer.depth, alg)
    counts = []
    for i in (10, 25, 70):
        body = payer.payment(i)
        counts.append(len(decode_path(body)[1]))
        assert vendor.accept_first_opt(i, body)
        payer.accepted(i)
    # t = depth first, then bit_length(25 ^ 10) = bit_length(19) = 5,
    # then bit_length(70 ^ 25) = bit_length(95) = 7.
    assert counts == [7, 5, 7]


@pytest.mark.parametrize("alg", SUITES)
def test_second_opt_sibling_counts_and_verification(alg: str) -> None:
    payer = create_payer(Mode.paytree_second_opt, 127, alg)
    assert isinstance(payer, SecondOptPayer)
    vendor = VendorMirror(payer.root, payer.depth, alg)
    counts = []
    for i in (10, 25, 70, 71, 72, 126):
        body = payer.payment(i)
        counts.append(len(decode_path(body)[1]))
        assert vendor.accept_second_opt(i, body)
        payer.accepted(i)
    # 10: nothing known but the root (7). 25: node(4, 1) is 10's sibling at
    # level 4, so levels 0-3 (4). 70: node(6, 1) is known, levels 0-5 (6).
    # 71: its leaf is 70's sibling, known: nothing to send (0). 72: node(3, 9)
    # is 70's level-3 sibling, levels 0-2 (3). 126: node(5, 3) is 70's level-5
    # sibling, levels 0-4 (5).
    assert counts == [7, 4, 6, 0, 3, 5]
    # The payer keeps only the accepted index: K is the union of the accepted paths.
    assert set(vendor.known) == {(7, 0)} | {
        (level, (i >> level) ^ side)
        for i in (10, 25, 70, 71, 72, 126)
        for level in range(7)
        for side in (0, 1)
    }


def test_pruned_body_is_stable_until_accepted() -> None:
    for mode in (Mode.paytree_first_opt, Mode.paytree_second_opt):
        payer = create_payer(mode, 64, "sha256")
        assert isinstance(payer, PaytreePayer)
        payer.accepted(5)
        first = wire.encode_payment(payer.payment(9))
        assert wire.encode_payment(payer.payment(9)) == first  # a retry is byte-identical
        payer.accepted(9)
        # Once accepted, the vendor knows the whole path: nothing left to send.
        assert decode_path(payer.payment(9))[1] == []


@pytest.mark.parametrize("alg", SUITES)
def test_payword_tokens_chain_to_root_and_to_each_other(alg: str) -> None:
    payer = create_payer(Mode.payword, 3000, alg)
    assert isinstance(payer, PaywordPayer)
    previous_token, previous_k = payer.root, 0
    for k in (1, 2, 1025, 2048, 3000):
        body = payer.payment(k)
        assert isinstance(body, PaywordPayment)
        token = body.token
        assert crypto.verify_payword(token, k, payer.root, alg)
        assert crypto.verify_payword(token, k - previous_k, previous_token, alg)
        payer.accepted(k)
        previous_token, previous_k = token, k


@pytest.mark.parametrize("kind", crypto.KEY_KINDS)
def test_signature_payments_verify(kind: str) -> None:
    wallet = Wallet.generate(kind)
    payer = RULES[Mode.signature].create_payer(wallet.key, max_index=100, hash_alg="sha256")
    payer.channel_id = "a" * 43
    single = payer.payment(7)
    batch = payer.payments([7, 8, 9])
    assert payer.last == 9  # a run stands as if accepted
    for body in [single, *batch]:
        assert isinstance(body, SignaturePayment)
        message = amount_message(body.channel_id, body.amount)
        assert message == canonical_json(
            {"channel_id": "a" * 43, "cumulative_owed_amount": body.amount}
        )
        assert crypto.verify_signature(wallet.key.public_key_der, message, body.signature)


@pytest.mark.parametrize("alg", SUITES)
def test_open_request_is_signed_over_canonical_json(alg: str) -> None:
    wallet = Wallet.generate("ed25519")
    vendor = Wallet.generate("p256")
    payer = create_payer(Mode.paytree_second_opt, 10, alg)
    assert payer.root is not None
    common = {
        "client_public_key_der_b64": wallet.public_key_b64,
        "vendor_public_key_der_b64": vendor.public_key_b64,
        "amount": 50,
        "hash_alg": None if alg == "sha256" else alg,
    }
    body = wire.open_body(
        RULES[Mode.paytree_second_opt], common, (payer.root, 5, 10), wallet.key.sign
    )
    members = msgspec.json.decode(body)
    assert members["paytree_second_opt_max_i"] == 10
    assert members["paytree_second_opt_unit_value"] == 5
    assert members["paytree_second_opt_root_b64"] == b64encode(payer.root)
    assert ("hash_alg" in members) == (alg == "blake3")
    signature = b64decode(members.pop("open_signature_b64"))
    assert crypto.verify_signature(wallet.key.public_key_der, canonical_json(members), signature)
    with pytest.raises(ValueError, match="commitment"):
        wire.open_body(RULES[Mode.payword], common, None, wallet.key.sign)


class CountingTree:
    """A MerkleTree that counts the node values a payer asks it for."""

    def __init__(self, tree: crypto.MerkleTree) -> None:
        self.tree = tree
        self.depth = tree.depth
        self.leaf_count = tree.leaf_count
        self.root = tree.root
        self.nodes_read = 0

    def leaf(self, i: int) -> bytes:
        self.nodes_read += 1
        return self.tree.leaf(i)

    def node(self, level: int, pos: int) -> bytes:
        self.nodes_read += 1
        return self.tree.node(level, pos)

    def proof(self, i: int) -> list[bytes]:
        self.nodes_read += self.depth
        return self.tree.proof(i)


@pytest.mark.parametrize("payer_type", [FirstOptPayer, SecondOptPayer])
def test_pruned_proof_generation_reads_at_most_a_path_per_payment(
    payer_type: type[PaytreePayer],
) -> None:
    """Per payment the payer does O(depth) work, never work linear in the channel: it
    reads at most one path of nodes."""
    plain = create_payer(Mode.paytree, 2**12, "sha256")
    assert isinstance(plain, PaytreePayer)
    tree = CountingTree(plain.tree)
    payer = payer_type(plain.seed, tree)  # type: ignore[arg-type]
    for i in range(1, 2**12 + 1):
        before = tree.nodes_read
        payer.payment(i)
        payer.accepted(i)
        assert tree.nodes_read - before <= 1 + tree.depth
