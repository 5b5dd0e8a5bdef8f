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
* paytree_second_opt: secret ‖ the siblings the body carried; the known-node set
  lives in the store's node map, keyed by `crypto.node_key` heap indices.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from nanomoni import crypto
from nanomoni.encoding import b64encode
from nanomoni.errors import Code, NanoMoniError
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
    return payment.secret + b"".join(payment.siblings)


def _leaf(terms: ChannelTerms, payment: TreePayment) -> bytes:
    """H(secret): the leaf the payment reveals; a leaf sent beside it must match."""
    leaf = crypto.digest(payment.secret, terms.hash_alg)
    if payment.leaf is not None and payment.leaf != leaf:
        raise invalid_proof("invalid proof: leaf_b64 is not the hash of secret_b64")
    return leaf


def _consistent(terms: ChannelTerms, payment: TreePayment) -> bool:
    return payment.leaf is None or payment.leaf == crypto.digest(payment.secret, terms.hash_alg)


class TreeRules(ModeRules[TreePayment, TreeSettlement]):
    """`paytree`: the full authentication path with every payment (§5.3)."""

    mode = Mode.paytree
    payment_type = TreePayment
    settlement_type = TreeSettlement
    index_name = "i"
    response_index = "i"

    def __init__(self) -> None:
        prefix = self.mode.value
        self.members = CommitmentMembers(
            f"{prefix}_root_b64", f"{prefix}_unit_value", f"{prefix}_max_i"
        )

    def index(self, payment: TreePayment) -> int:
        return payment.i

    def is_replay(self, terms: ChannelTerms, stored: PaymentState, payment: TreePayment) -> bool:
        return _sent(payment) == stored.proof and _consistent(terms, payment)

    def _siblings(self, payment: TreePayment) -> list[bytes]:
        if len(payment.siblings) > MAX_SIBLINGS:
            raise invalid_proof(
                f"invalid proof: {len(payment.siblings)} siblings, at most {MAX_SIBLINGS} allowed"
            )
        return payment.siblings

    def verify(self, terms: ChannelTerms, view: VendorView, payment: TreePayment) -> Verified:
        assert terms.root is not None
        siblings = self._siblings(payment)
        depth = depth_of(terms)
        if len(siblings) != depth:
            raise _wrong_count(len(siblings), depth)
        leaf = _leaf(terms, payment)
        if not crypto.verify_merkle(leaf, payment.i, siblings, terms.root, depth, terms.hash_alg):
            raise _bad_path()
        return Verified(proof=_sent(payment), nodes={})

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

    def is_replay(self, terms: ChannelTerms, stored: PaymentState, payment: TreePayment) -> bool:
        count = stored.proof[0]
        return (
            len(payment.siblings) == count
            and _sent(payment) == stored.proof[1 : 1 + HASH_LEN * (count + 1)]
            and _consistent(terms, payment)
        )

    def verify(self, terms: ChannelTerms, view: VendorView, payment: TreePayment) -> Verified:
        assert terms.root is not None
        sent = self._siblings(payment)
        depth = depth_of(terms)
        stored = view.state
        last = stored.index if stored is not None else None
        t = crypto.first_opt_levels(payment.i, last, depth)
        if len(sent) != t:
            raise _wrong_count(len(sent), t)
        if stored is None or t == depth:
            anchor = terms.root
            above = b""
        else:
            # node(t, i >> t) == node(t, last >> t): fold the accepted leaf t levels.
            path = stored.proof
            last_leaf = crypto.digest(path[1:33], terms.hash_alg)
            last_siblings = [path[33 + 32 * j : 65 + 32 * j] for j in range(t)]
            anchor = crypto.merkle_fold(last_leaf, stored.index, last_siblings, terms.hash_alg)
            above = path[33 + 32 * t :]
        if crypto.merkle_fold(_leaf(terms, payment), payment.i, sent, terms.hash_alg) != anchor:
            raise _bad_path()
        return Verified(proof=bytes([t]) + _sent(payment) + above, nodes={})

    def full_path(
        self, terms: ChannelTerms, state: PaymentState, nodes: Sequence[bytes | None]
    ) -> tuple[bytes, list[bytes]]:
        secret, *siblings = _split(state.proof[1:])
        return secret, siblings

    @property
    def payer_type(self) -> type[PaytreePayer]:
        return FirstOptPayer


def second_opt_path_keys(i: int, depth: int) -> list[int]:
    """For each level below the root: the path node's key, then its sibling's.

    Keys are `crypto.node_key` heap indices, so a parent is `key >> 1` and a
    sibling `key ^ 1`: plain integer steps on the hot path.
    """
    leaf_key = crypto.node_key(0, i, depth)
    return [(leaf_key >> level) ^ side for level in range(depth) for side in (0, 1)]


class SecondOptRules(TreeRules):
    """`paytree_second_opt`: only the siblings the vendor does not know yet (§5.5)."""

    mode = Mode.paytree_second_opt

    def payment_node_keys(self, terms: ChannelTerms, payment: TreePayment) -> list[int]:
        assert terms.max_index is not None
        if not 1 <= payment.i <= terms.max_index:
            return []  # refused before any node is needed; keys would not even be in the tree
        return second_opt_path_keys(payment.i, depth_of(terms))

    def verify(self, terms: ChannelTerms, view: VendorView, payment: TreePayment) -> Verified:
        assert terms.root is not None
        sent = self._siblings(payment)
        depth = depth_of(terms)
        i = payment.i
        # view.nodes follows second_opt_path_keys: [2·level] = path node, [2·level + 1] = sibling.
        nodes = view.nodes
        if len(nodes) != 2 * depth:
            raise ValueError(
                f"view.nodes has {len(nodes)} entries; payment_node_keys asked for {2 * depth}"
            )

        def is_known(level: int, pos: int) -> bool:
            return nodes[2 * level + ((pos ^ (i >> level)) & 1)] is not None

        missing, stop = crypto.second_opt_levels(i, depth, is_known)
        if len(sent) != len(missing):
            raise _wrong_count(len(sent), len(missing))
        supplied = dict(zip(missing, sent, strict=True))
        new_nodes: dict[int, bytes] = {}
        current = _leaf(terms, payment)
        key = crypto.node_key(0, i, depth)  # the path node's heap index at each level
        for level in range(stop):
            new_nodes[key] = current
            if level in supplied:
                sibling = supplied[level]
                new_nodes[key ^ 1] = sibling
            else:
                known_sibling = nodes[2 * level + 1]
                assert known_sibling is not None  # second_opt_levels only skips known siblings
                sibling = known_sibling
            pair = current + sibling if key & 1 == 0 else sibling + current
            current = crypto.digest(pair, terms.hash_alg)
            key >>= 1
        if stop == depth:
            anchor = terms.root
        else:
            known_ancestor = nodes[2 * stop]
            assert known_ancestor is not None  # second_opt_levels stops at a known path node
            anchor = known_ancestor
        if current != anchor:
            raise _bad_path()
        return Verified(proof=_sent(payment), nodes=new_nodes)

    def settlement_node_keys(self, terms: ChannelTerms, state: PaymentState) -> list[int]:
        """The keys of the accepted index's siblings, level 0 upward."""
        depth = depth_of(terms)
        return [crypto.node_key(level, (state.index >> level) ^ 1, depth) for level in range(depth)]

    def full_path(
        self, terms: ChannelTerms, state: PaymentState, nodes: Sequence[bytes | None]
    ) -> tuple[bytes, list[bytes]]:
        secret = state.proof[:HASH_LEN]
        missing = [level for level, node in enumerate(nodes) if node is None]
        if missing or len(nodes) != depth_of(terms):
            raise NanoMoniError(
                Code.internal_error,
                f"the vendor store lacks path nodes at levels {missing} of channel "
                f"{terms.channel_id}",
            )
        return secret, [node for node in nodes if node is not None]

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
            siblings=self.siblings(index),
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
    """Only the siblings the vendor does not know yet (§5.5).

    `known` mirrors the vendor's set K as heap indices (crypto.node_key); the
    root is known from the start.
    """

    def __init__(self, seed: bytes, tree: crypto.MerkleTree, channel_id: str = "") -> None:
        super().__init__(seed, tree, channel_id)
        self.known: set[int] = {crypto.node_key(self.depth, 0, self.depth)}

    def _known(self, level: int, pos: int) -> bool:
        return crypto.node_key(level, pos, self.depth) in self.known

    def siblings(self, index: int) -> list[bytes]:
        levels, _stop = crypto.second_opt_levels(index, self.depth, self._known)
        return [self.tree.node(level, (index >> level) ^ 1) for level in levels]

    def accepted(self, index: int) -> None:
        super().accepted(index)
        # Walk up from the leaf adding each path node and its sibling (heap
        # indices: parent = key >> 1, sibling = key ^ 1). A known path node means
        # everything above it is known already (it came with an earlier path).
        key = crypto.node_key(0, index, self.depth)
        while key > 1 and key not in self.known:
            self.known.add(key)
            self.known.add(key ^ 1)
            key >>= 1
