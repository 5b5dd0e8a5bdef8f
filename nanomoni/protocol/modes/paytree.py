"""The three PayTree modes (SPEC §5.3–§5.5): leaf i of a Merkle tree of hashed
secrets, with its full path (`paytree`), the path pruned at the lowest common
ancestor with the accepted index (`paytree_first_opt`), or only the siblings the
vendor does not know yet (`paytree_second_opt`). All settle with the full path.

Every payment reveals the secret of its leaf (leaf = H(secret), SPEC §5.3
[v1.1]): a proof shows its neighbouring leaves as siblings, so a leaf alone
proves nothing. `PaymentState.proof` per mode:
* paytree: secret ‖ the full path (depth siblings);
* paytree_first_opt: count ‖ secret ‖ the full path, where count (one byte) is how
  many siblings the accepted body carried, so only that exact body is a replay;
* paytree_second_opt: the same as first-opt's (SecondOptRules says why that is all
  the known-node set K amounts to).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from nanomoni import crypto
from nanomoni.encoding import b64encode
from nanomoni.errors import NanoMoniError
from nanomoni.protocol.messages import TreePayment, TreeSettlement
from nanomoni.protocol.model import ChannelTerms, Mode, PaymentState, VendorView
from nanomoni.protocol.modes.base import (
    HASH_LEN,
    MAX_SIBLINGS,
    CommitmentMembers,
    ModeRules,
    SettledProof,
    Signer,
    Verified,
    b64_list,
    check_signature,
    check_vendor_key,
    depth_of,
    invalid_proof,
    settlement_message,
)


def _message(
    channel_id: str,
    i: int,
    secret: bytes,
    leaf: bytes,
    siblings: Sequence[bytes],
    final: bool | None,
) -> bytes:
    members = {
        "i": i,
        "secret_b64": b64encode(secret),
        "leaf_b64": b64encode(leaf),
        "siblings_b64": b64_list(siblings),
    }
    return settlement_message(channel_id, members, final)


def _split(blob: bytes) -> list[bytes]:
    return [blob[j : j + HASH_LEN] for j in range(0, len(blob), HASH_LEN)]


def _wrong_count(sent: int, expected: int) -> NanoMoniError:
    return invalid_proof(f"invalid proof: {sent} siblings sent, exactly {expected} expected")


def _bad_path() -> NanoMoniError:
    return invalid_proof("invalid proof: the Merkle path does not match the commitment")


def _sent(payment: TreePayment) -> bytes:
    """secret ‖ siblings as sent (fixed-size parts: equal blobs mean equal bodies)."""
    return payment.secret + payment.path


def _leaf(terms: ChannelTerms, payment: TreePayment) -> bytes:
    """H(secret): the leaf the payment reveals; a leaf sent beside it must match."""
    leaf = crypto.digest(payment.secret, terms.hash_alg)
    if payment.leaf is not None and payment.leaf != leaf:
        raise invalid_proof("invalid proof: leaf_b64 is not the hash of secret_b64")
    return leaf


def _root(terms: ChannelTerms) -> bytes:
    assert terms.root is not None
    return terms.root


def _consistent(terms: ChannelTerms, payment: TreePayment) -> bool:
    return payment.leaf is None or payment.leaf == crypto.digest(payment.secret, terms.hash_alg)


class TreeRules(ModeRules[TreePayment, TreeSettlement]):
    """`paytree`: the full authentication path with every payment (§5.3)."""

    mode = Mode.paytree
    payment_type = TreePayment
    settlement_type = TreeSettlement
    index_name = "i"
    response_index = "i"
    payment_cost = 4  # depth hashes, and the whole path on the wire

    def __init__(self) -> None:
        prefix = self.mode.value
        self.members = CommitmentMembers(
            f"{prefix}_root_b64", f"{prefix}_unit_value", f"{prefix}_max_i"
        )

    def index(self, payment: TreePayment) -> int:
        return payment.i

    def is_replay(self, terms: ChannelTerms, stored: PaymentState, payment: TreePayment) -> bool:
        return _sent(payment) == stored.proof and _consistent(terms, payment)

    def _sibling_count(self, payment: TreePayment) -> int:
        count = len(payment.path) // HASH_LEN
        if count > MAX_SIBLINGS:
            raise invalid_proof(
                f"invalid proof: {count} siblings, at most {MAX_SIBLINGS} allowed"
            )
        return count

    def verify(self, terms: ChannelTerms, view: VendorView, payment: TreePayment) -> Verified:
        assert terms.root is not None
        sent = self._sibling_count(payment)
        depth = depth_of(terms)
        if sent != depth:
            raise _wrong_count(sent, depth)
        return Verified(proof=self._fold(terms, payment, depth, terms.root), nodes={})

    def _fold(self, terms: ChannelTerms, payment: TreePayment, count: int, anchor: bytes) -> bytes:
        """secret ‖ siblings as sent, once its leaf H(secret) folds through the `count`
        siblings to `anchor` (one native call on the blob the state keeps anyway)."""
        if payment.leaf is not None:
            _leaf(terms, payment)  # a leaf sent beside the secret must be its hash
        if len(payment.secret) != HASH_LEN:
            raise _bad_path()  # no such leaf: the wire decodes 32-byte secrets only
        body = _sent(payment)
        if crypto.merkle_path_node(body, payment.i, count, terms.hash_alg) != anchor:
            raise _bad_path()
        return body

    # --- settlement -------------------------------------------------------------------

    def full_path(
        self, terms: ChannelTerms, state: PaymentState, nodes: Sequence[bytes | None]
    ) -> tuple[bytes, list[bytes]]:
        """(secret, all depth siblings) of the accepted index."""
        secret, *siblings = _split(state.proof)
        return secret, siblings

    def build_settlement(
        self,
        terms: ChannelTerms,
        state: PaymentState,
        nodes: Sequence[bytes | None],
        vendor_key: Signer,
        *,
        final: bool | None = None,
    ) -> TreeSettlement:
        secret, siblings = self.full_path(terms, state, nodes)
        leaf = crypto.digest(secret, terms.hash_alg)
        message = _message(terms.channel_id, state.index, secret, leaf, siblings, final)
        return TreeSettlement(
            vendor_key=terms.vendor_public_key_der_b64,
            i=state.index,
            secret=secret,
            leaf=leaf,
            siblings=siblings,
            vendor_signature=vendor_key.sign(message),
            final=final,
        )

    def check_settlement(self, terms: ChannelTerms, body: TreeSettlement) -> SettledProof:
        check_vendor_key(terms, body.vendor_key)
        assert terms.root is not None
        self.check_index(terms, body.i)
        depth = depth_of(terms)
        if len(body.siblings) != depth:
            raise invalid_proof(
                f"invalid proof: {len(body.siblings)} siblings, exactly {depth} expected"
            )
        check_signature(
            terms.vendor_public_key_der_b64,
            _message(terms.channel_id, body.i, body.secret, body.leaf, body.siblings, body.final),
            body.vendor_signature,
            "vendor_signature_b64",
        )
        if crypto.digest(body.secret, terms.hash_alg) != body.leaf:
            raise invalid_proof("invalid proof: leaf_b64 is not the hash of secret_b64")
        if not crypto.verify_merkle(
            body.leaf, body.i, body.siblings, terms.root, depth, terms.hash_alg
        ):
            raise _bad_path()
        return SettledProof(index=body.i, proof=body.secret + b"".join(body.siblings))

    # --- the client ---------------------------------------------------------------------

    def create_payer(
        self, key: Signer, *, max_index: int, hash_alg: str, seed: bytes | None = None
    ) -> PaytreePayer:
        seed = os.urandom(HASH_LEN) if seed is None else seed
        return self.payer_type.create(seed, max_index, hash_alg)

    @property
    def payer_type(self) -> type[PaytreePayer]:
        return PaytreePayer


class FirstOptRules(TreeRules):
    """`paytree_first_opt`: the path pruned at the LCA with the accepted index (§5.4)."""

    mode = Mode.paytree_first_opt
    payment_cost = 3

    def is_replay(self, terms: ChannelTerms, stored: PaymentState, payment: TreePayment) -> bool:
        count = stored.proof[0]
        return (
            len(payment.path) == HASH_LEN * count
            and _sent(payment) == stored.proof[1 : 1 + HASH_LEN * (count + 1)]
            and _consistent(terms, payment)
        )

    def _pruned(
        self, terms: ChannelTerms, last: int, path: bytes, i: int, depth: int
    ) -> tuple[int, bytes, bytes]:
        """For payment i after the accepted index `last` (whose secret ‖ full path is
        `path`): how many siblings it carries, the node they must fold its leaf to, and
        its full path above them. Here: node(t, i >> t) = node(t, last >> t)."""
        t = crypto.first_opt_levels(i, last, depth)
        if t == depth:
            return depth, _root(terms), b""
        anchor = crypto.merkle_path_node(path, last, t, terms.hash_alg)
        return t, anchor, path[HASH_LEN * (t + 1) :]

    def verify(self, terms: ChannelTerms, view: VendorView, payment: TreePayment) -> Verified:
        sent = self._sibling_count(payment)
        depth = depth_of(terms)
        stored = view.state
        if stored is None:
            count, anchor, above = depth, _root(terms), b""
        else:
            count, anchor, above = self._pruned(
                terms, stored.index, stored.proof[1:], payment.i, depth
            )
        if sent != count:
            raise _wrong_count(sent, count)
        body = self._fold(terms, payment, count, anchor)
        # count ‖ secret ‖ the full path: what a replay must match, and what settles.
        return Verified(proof=b"".join((bytes((count,)), body, above)), nodes={})

    def full_path(
        self, terms: ChannelTerms, state: PaymentState, nodes: Sequence[bytes | None]
    ) -> tuple[bytes, list[bytes]]:
        secret, *siblings = _split(state.proof[1:])
        return secret, siblings

    @property
    def payer_type(self) -> type[PaytreePayer]:
        return FirstOptPayer


class SecondOptRules(FirstOptRules):
    """`paytree_second_opt`: only the siblings the vendor does not know yet (§5.5).

    The known set K is the union of the accepted payments' paths, and accepted
    indices only grow, so for a payment i above the accepted index `last` K holds
    exactly what `last`'s full path holds: a node of i's path (or its sibling) at
    level l is known iff i and `last` agree above l, i.e. from level t − 1 on, where
    t = bit_length(i XOR last). So i carries the siblings of levels 0 .. t − 2 and
    its leaf must fold to node(t − 1, i >> (t − 1)) — the sibling of `last`'s path
    there. The state keeps, like first-opt's, count ‖ secret ‖ the full path: no
    node map, one small write per payment.
    """

    mode = Mode.paytree_second_opt
    payment_cost = 3

    def _pruned(
        self, terms: ChannelTerms, last: int, path: bytes, i: int, depth: int
    ) -> tuple[int, bytes, bytes]:
        t = (i ^ last).bit_length()  # i > last: t >= 1
        anchor = path[HASH_LEN * t : HASH_LEN * (t + 1)]  # last's sibling at level t - 1
        # i's sibling at level t - 1 is last's path node there: fold last's leaf up to it.
        sibling = crypto.merkle_path_node(path, last, t - 1, terms.hash_alg)
        return t - 1, anchor, sibling + path[HASH_LEN * (t + 1) :]

    @property
    def payer_type(self) -> type[PaytreePayer]:
        return SecondOptPayer


# --- the client's payers ------------------------------------------------------------------


def leaf_secret(seed: bytes, j: int) -> bytes:
    """The client's secret of leaf j: SHA-256(seed ‖ j), so only the seed is kept."""
    return hashlib.sha256(seed + j.to_bytes(8, "big")).digest()


class PaytreePayer:
    """Standard PayTree: leaf i's secret with its full authentication path."""

    def __init__(self, seed: bytes, tree: crypto.MerkleTree, channel_id: str = "") -> None:
        self.seed = seed
        self.tree = tree
        self.depth = tree.depth
        self.max_index = tree.leaf_count - 1
        self.channel_id = channel_id
        self.last = 0

    @classmethod
    def create(cls, seed: bytes, max_index: int, alg: str) -> PaytreePayer:
        """Leaves 0..max_index, leaf j = H(secret j)."""
        secrets = [leaf_secret(seed, j) for j in range(max_index + 1)]
        return cls(seed, crypto.MerkleTree.from_secrets(secrets, alg))

    @property
    def root(self) -> bytes:
        return self.tree.root

    def siblings(self, index: int) -> list[bytes]:
        return self.tree.proof(index)

    def payment(self, index: int) -> TreePayment:
        return TreePayment(
            i=index,
            secret=leaf_secret(self.seed, index),
            path=b"".join(self.siblings(index)),
            channel_id=self.channel_id,
        )

    def payments(self, indices: Sequence[int]) -> list[TreePayment]:
        built = []
        for index in indices:
            built.append(self.payment(index))
            self.accepted(index)
        return built

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)


class FirstOptPayer(PaytreePayer):
    """Path pruned at the lowest common ancestor with the last accepted index (§5.4)."""

    def siblings(self, index: int) -> list[bytes]:
        count = crypto.first_opt_levels(index, self.last or None, self.depth)
        return self.tree.proof(index)[:count]


class SecondOptPayer(PaytreePayer):
    """Only the siblings the vendor does not know yet (§5.5): below level t − 1, where
    t = bit_length(i XOR last) (SecondOptRules says why K comes down to that)."""

    def siblings(self, index: int) -> list[bytes]:
        proof = self.tree.proof(index)
        if not self.last or index < self.last:
            return proof  # nothing known but the root (or a refused index: all of it)
        return proof[: max(0, (index ^ self.last).bit_length() - 1)]
