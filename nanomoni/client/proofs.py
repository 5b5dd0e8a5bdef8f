"""Client-side commitments and payment builders, one per mode (no I/O).

A payer builds the body for a payment against the state the vendor has
ACCEPTED so far, and advances that state only through `accepted(index)`, after
the vendor said yes. Building the same index twice without an acceptance in
between therefore yields the identical body, which is what makes retries
exact replays. Every builder is O(depth) (or O(checkpoint interval)) per call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from nanomoni import crypto, wire
from nanomoni.client.wallet import Wallet
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.protocol.model import Mode
from nanomoni.protocol.payments import signature_message

PAYTREE_MODES = (Mode.paytree, Mode.paytree_first_opt, Mode.paytree_second_opt)
SECRET_BYTES = 32
MAX_CHECKPOINTS = 1 << 16


def index_field(mode: Mode) -> str:
    """The open-request member naming the channel's maximum index."""
    return f"{mode.value}_max_k" if mode is Mode.payword else f"{mode.value}_max_i"


class Payer(Protocol):
    mode: Mode
    last: int  # the vendor's accepted index (0 = nothing accepted yet)

    def body(self, index: int) -> wire.Payment: ...

    def accepted(self, index: int) -> None: ...


class SignaturePayer:
    """Index = cumulative owed amount; each payment is a signature over it."""

    mode = Mode.signature

    def __init__(self, wallet: Wallet, channel_id: str) -> None:
        self.wallet = wallet
        self.channel_id = channel_id
        self.last = 0

    def body(self, index: int) -> wire.SignaturePayment:
        signature = self.wallet.sign_b64(signature_message(self.channel_id, index))
        return wire.SignaturePayment(
            channel_id=self.channel_id, cumulative_owed_amount=index, signature_b64=signature
        )

    def bodies(self, indices: Sequence[int]) -> list[wire.SignaturePayment]:
        """Many payments signed in one native batch (used to pre-compute load)."""
        messages = [signature_message(self.channel_id, index) for index in indices]
        signatures = self.wallet.key.sign_many(messages)
        return [
            wire.SignaturePayment(
                channel_id=self.channel_id,
                cumulative_owed_amount=index,
                signature_b64=b64encode(signature),
            )
            for index, signature in zip(indices, signatures, strict=True)
        ]

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)


class PaywordPayer:
    """Token k = w_(max_k − k) of a hash chain kept as checkpoints."""

    mode = Mode.payword

    def __init__(self, chain: crypto.PaywordChain, channel_id: str = "") -> None:
        self.chain = chain
        self.channel_id = channel_id
        self.last = 0

    @classmethod
    def create(cls, max_k: int, alg: str = "sha256") -> PaywordPayer:
        # Up to 2^16 kept words (2 MiB): a token then costs at most 256 hashes
        # even for a 2^24 chain, instead of 16k with the core's default.
        checkpoints = min(MAX_CHECKPOINTS, max_k + 1)
        return cls(crypto.PaywordChain(os.urandom(SECRET_BYTES), max_k, alg, checkpoints))

    @property
    def root(self) -> bytes:
        return self.chain.root

    def body(self, index: int) -> wire.PaywordPayment:
        return wire.PaywordPayment(
            k=index, token_b64=b64encode(self.chain.token(index)), channel_id=self.channel_id
        )

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)


class PaytreePayer:
    """Standard PayTree: leaf i with its full authentication path."""

    mode = Mode.paytree

    def __init__(self, tree: crypto.MerkleTree, channel_id: str = "") -> None:
        self.tree = tree
        self.depth = tree.depth
        self.channel_id = channel_id
        self.last = 0

    @classmethod
    def create(cls, max_i: int, alg: str = "sha256") -> PaytreePayer:
        # Leaves 0..max_i, each the hash of its own random secret.
        pool = os.urandom(SECRET_BYTES * (max_i + 1))
        secrets = [pool[j : j + SECRET_BYTES] for j in range(0, len(pool), SECRET_BYTES)]
        return cls(crypto.MerkleTree.from_secrets(secrets, alg))

    @property
    def root(self) -> bytes:
        return self.tree.root

    def siblings(self, index: int) -> list[bytes]:
        return self.tree.proof(index)

    def body(self, index: int) -> wire.PaytreePayment:
        return wire.PaytreePayment(
            i=index,
            leaf_b64=b64encode(self.tree.leaf(index)),
            siblings_b64=[b64encode(sibling) for sibling in self.siblings(index)],
            channel_id=self.channel_id,
        )

    def accepted(self, index: int) -> None:
        self.last = max(self.last, index)


class FirstOptPayer(PaytreePayer):
    """Path pruned at the lowest common ancestor with the last accepted index (§5.4)."""

    mode = Mode.paytree_first_opt

    def siblings(self, index: int) -> list[bytes]:
        count = crypto.first_opt_levels(index, self.last or None, self.depth)
        return self.tree.proof(index)[:count]


class SecondOptPayer(PaytreePayer):
    """Only the siblings the vendor does not know yet (§5.5).

    `known` mirrors the vendor's set K as heap indices (crypto.node_key); the
    root is known from the start.
    """

    mode = Mode.paytree_second_opt

    def __init__(self, tree: crypto.MerkleTree, channel_id: str = "") -> None:
        super().__init__(tree, channel_id)
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


def create_commitment_payer(mode: Mode, max_index: int, alg: str) -> PaywordPayer | PaytreePayer:
    """Fresh secrets and the payer holding them, for a PayWord/PayTree mode."""
    if mode is Mode.payword:
        return PaywordPayer.create(max_index, alg)
    tree_payer: type[PaytreePayer] = {
        Mode.paytree: PaytreePayer,
        Mode.paytree_first_opt: FirstOptPayer,
        Mode.paytree_second_opt: SecondOptPayer,
    }[mode]
    return tree_payer.create(max_index, alg)


def build_open_request(
    wallet: Wallet,
    vendor_public_key_b64: str,
    mode: Mode,
    amount: int,
    *,
    hash_alg: str = "sha256",
    unit_value: int | None = None,
    max_index: int | None = None,
    root: bytes | None = None,
) -> wire.OpenChannelRequest:
    """The signed open body (§4.3). PayWord/PayTree modes need unit, max and root."""
    members: dict[str, Any] = {
        "client_public_key_der_b64": wallet.public_key_b64,
        "vendor_public_key_der_b64": vendor_public_key_b64,
        "amount": amount,
    }
    # sha256 is the default; leaving it out keeps bodies identical to older clients'.
    if hash_alg != "sha256":
        members["hash_alg"] = hash_alg
    if mode is not Mode.signature:
        if unit_value is None or max_index is None or root is None:
            raise ValueError(f"mode {mode.value} needs unit_value, max_index and root")
        members[f"{mode.value}_root_b64"] = b64encode(root)
        members[f"{mode.value}_unit_value"] = unit_value
        members[index_field(mode)] = max_index
    members["open_signature_b64"] = wallet.sign_b64(canonical_json(members))
    return wire.OpenChannelRequest(**members)
