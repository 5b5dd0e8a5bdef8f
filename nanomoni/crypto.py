"""The public verification API (SPEC §10): a typed façade over the native core.

Hash suites are named by strings here ("sha256", "blake3") and by small ints in
the core. Everything that loops over hashes or signatures runs in C with the
GIL released; the pure-Python helpers at the end only do index arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from nanomoni import _core

HashAlg = Literal["sha256", "blake3"]
HASH_ALGS: tuple[str, ...] = ("sha256", "blake3")
KeyKind = Literal["p256", "secp256k1", "ed25519"]
KEY_KINDS: tuple[str, ...] = ("p256", "secp256k1", "ed25519")


def _alg(alg: str) -> int:
    try:
        return HASH_ALGS.index(alg)
    except ValueError:
        raise ValueError(f"unknown hash alg {alg!r}; expected one of {HASH_ALGS}") from None


# --- hashing and PayWord -----------------------------------------------------


def digest(data: bytes, alg: str = "sha256") -> bytes:
    """H(data), 32 bytes."""
    return _core.digest(data, _alg(alg))


def hash_n(data: bytes, n: int, alg: str = "sha256") -> bytes:
    """H applied n times (n = 0 returns data unchanged)."""
    return _core.hash_n(data, n, _alg(alg))


def verify_payword(token: bytes, k: int, anchor: bytes, alg: str = "sha256") -> bool:
    """H^k(token) == anchor."""
    return _core.verify_payword(token, k, anchor, _alg(alg))


def verify_payword_batch(
    items: Sequence[tuple[bytes, int, bytes]], alg: str = "sha256"
) -> list[bool]:
    """Many (token, k, anchor) triples in one native call."""
    return _core.verify_payword_batch(items, _alg(alg))


class PaywordChain:
    """Client side: w_0 = seed, w_j = H(w_{j-1}), root = w_max_k, token(k) = w_{max_k-k}.

    Generation is O(max_k) once. At most `checkpoints` evenly spaced words are
    kept (memory O(checkpoints)), so token(k) costs fewer than
    ceil((max_k + 1) / checkpoints) hashes: the default keeps 32 KiB and, for
    max_k = 2**20, pays at most 1024 hashes (~50 µs) per token.
    """

    def __init__(
        self, seed: bytes, max_k: int, alg: str = "sha256", checkpoints: int = 1024
    ) -> None:
        self._chain = _core.PaywordChain(seed, max_k, _alg(alg), checkpoints)
        self.max_k = max_k
        self.alg = alg

    @property
    def root(self) -> bytes:
        return self._chain.root

    def token(self, k: int) -> bytes:
        return self._chain.token(k)


# --- Merkle (PayTree) ---------------------------------------------------------


class MerkleTree:
    """All levels of a PayTree (SPEC §5.3), padded by repeating the last leaf."""

    def __init__(self, tree: _core.MerkleTree, alg: str) -> None:
        self._tree = tree
        self.alg = alg

    @classmethod
    def from_leaves(cls, leaves: Sequence[bytes], alg: str = "sha256") -> MerkleTree:
        return cls(_core.MerkleTree(leaves, _alg(alg), False), alg)

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes], alg: str = "sha256") -> MerkleTree:
        """Leaf j = H(secret_j)."""
        return cls(_core.MerkleTree(secrets, _alg(alg), True), alg)

    @property
    def root(self) -> bytes:
        return self._tree.root

    @property
    def depth(self) -> int:
        return self._tree.depth

    @property
    def leaf_count(self) -> int:
        """Leaves before padding."""
        return self._tree.leaf_count

    def node(self, level: int, pos: int) -> bytes:
        return self._tree.node(level, pos)

    def leaf(self, i: int) -> bytes:
        return self._tree.node(0, i)

    def proof(self, i: int) -> list[bytes]:
        """Siblings of leaf i from level 0 up to depth-1."""
        return self._tree.proof(i)


def merkle_root(leaves: Sequence[bytes], alg: str = "sha256") -> bytes:
    return MerkleTree.from_leaves(leaves, alg).root


def merkle_proof(leaves: Sequence[bytes], i: int, alg: str = "sha256") -> list[bytes]:
    return MerkleTree.from_leaves(leaves, alg).proof(i)


def verify_merkle(
    leaf: bytes, i: int, siblings: Sequence[bytes], root: bytes, depth: int, alg: str = "sha256"
) -> bool:
    """Valid iff exactly `depth` siblings fold leaf i up to root."""
    return _core.verify_merkle(leaf, i, siblings, root, depth, _alg(alg))


def merkle_fold(leaf: bytes, i: int, siblings: Sequence[bytes], alg: str = "sha256") -> bytes:
    """Fold leaf i through len(siblings) levels: node(t, i >> t) for t = len(siblings)."""
    return _core.merkle_fold(leaf, i, siblings, _alg(alg))


def tree_depth(max_i: int) -> int:
    """depth = bit_length(max_i) (SPEC §5.3)."""
    return max_i.bit_length()


def node_key(level: int, pos: int, depth: int) -> int:
    """A node's heap index: the root is 1, children of n are 2n and 2n+1."""
    return (1 << (depth - level)) + pos


def first_opt_levels(i: int, last: int | None, depth: int) -> int:
    """How many siblings a first-opt payment for i carries (SPEC §5.4)."""
    return depth if last is None else (i ^ last).bit_length()


def second_opt_levels(
    i: int, depth: int, known: Callable[[int, int], bool]
) -> tuple[list[int], int]:
    """Which sibling levels a second-opt payment for i must carry (SPEC §5.5).

    `known(level, pos)` says whether a node is in the known set K (the root
    always is). Returns (levels whose sibling is unknown, lowest first; the
    level of the lowest known ancestor where folding stops).
    """
    missing: list[int] = []
    for level in range(depth):
        pos = i >> level
        if known(level, pos):
            return missing, level
        if not known(level, pos ^ 1):
            missing.append(level)
    return missing, depth


# --- signatures -----------------------------------------------------------------


def public_key_kind(public_key_der: bytes) -> KeyKind | None:
    """The key type read from a DER SubjectPublicKeyInfo, or None if unsupported."""
    kind = _core.public_key_kind(public_key_der)
    return None if kind < 0 else KEY_KINDS[kind]  # type: ignore[return-value]


def verify_signature(public_key_der: bytes, message: bytes, signature: bytes) -> bool:
    return _core.verify_signatures([(public_key_der, message, signature)], 1)[0]


def verify_signatures(
    items: Sequence[tuple[bytes, bytes, bytes]], threads: int = 0
) -> list[bool]:
    """(public key DER, message, signature) triples verified as one native batch.

    threads = 0 lets the core choose (all cores for large batches).
    Malformed keys, messages or signatures verify False; nothing raises.
    """
    return _core.verify_signatures(items, threads)


class SigningKey:
    """A private key of one of the three supported kinds (PKCS#8)."""

    def __init__(self, pkcs8_der: bytes) -> None:
        self._key = _core.SigningKey(pkcs8_der)
        self.kind: KeyKind = KEY_KINDS[self._key.kind]  # type: ignore[assignment]

    @classmethod
    def generate(cls, kind: str = "p256") -> SigningKey:
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown key kind {kind!r}; expected one of {KEY_KINDS}")
        return cls(_core.generate_private_key(KEY_KINDS.index(kind)))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        return cls(_pem_to_der(pem))

    def to_pem(self) -> bytes:
        return _der_to_pem(self._key.private_key_der)

    @property
    def public_key_der(self) -> bytes:
        return self._key.public_key_der

    @property
    def private_key_der(self) -> bytes:
        """The PKCS#8 DER this key was made from."""
        return self._key.private_key_der

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def sign_many(self, messages: Sequence[bytes], threads: int = 0) -> list[bytes]:
        """Pre-sign many messages in one native call (client side)."""
        return self._key.sign_many(messages, threads)


_PEM_HEAD = b"-----BEGIN PRIVATE KEY-----"
_PEM_TAIL = b"-----END PRIVATE KEY-----"


def _pem_to_der(pem: bytes) -> bytes:
    import base64

    body = pem.strip()
    if not (body.startswith(_PEM_HEAD) and body.endswith(_PEM_TAIL)):
        raise ValueError("expected a PKCS#8 PEM private key (BEGIN PRIVATE KEY)")
    return base64.b64decode(b"".join(body[len(_PEM_HEAD) : -len(_PEM_TAIL)].split()))


def _der_to_pem(der: bytes) -> bytes:
    import base64

    text = base64.b64encode(der)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"\n".join([_PEM_HEAD, *lines, _PEM_TAIL]) + b"\n"
