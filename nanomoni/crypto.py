"""The public verification API (SPEC §10): a typed façade over the native core.

Hash suites and key kinds are named by strings on the wire ("sha256",
"p256", ...) and by small ints in the core; HashAlg and KeyKind map one to
the other, with the ints taken from the core itself. Everything that loops
over hashes or signatures runs in C with the GIL released; the pure-Python
helpers at the end only do index arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Literal, Self, cast

from nanomoni import _core


class _WireEnum(IntEnum):
    """Values from the core, named on the wire by their lowercase member names."""

    @property
    def label(self) -> str:
        """The member's name on the wire and the command line: "sha256", "p256", ..."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Self) -> Self:
        """The member `value` names (or `value` itself); ValueError for anything else."""
        if isinstance(value, cls):
            return value
        for member in cls:
            if member.label == value:
                return member
        labels = tuple(member.label for member in cls)
        raise ValueError(f"unknown {cls._noun()} {value!r}; expected one of {labels}")

    @classmethod
    def _noun(cls) -> str:
        raise NotImplementedError


class HashAlg(_WireEnum):
    """A channel's hash suite (csrc/hash.h)."""

    SHA256 = _core.HASH_SHA256
    BLAKE3 = _core.HASH_BLAKE3

    @classmethod
    def _noun(cls) -> str:
        return "hash alg"


class KeyKind(_WireEnum):
    """A signature key type (csrc/sigkeys.h)."""

    P256 = _core.KEY_P256
    SECP256K1 = _core.KEY_SECP256K1
    ED25519 = _core.KEY_ED25519

    @classmethod
    def _noun(cls) -> str:
        return "key kind"


class Status(IntEnum):
    """Why a native operation failed (csrc/status.h); the binding turns these into exceptions."""

    OK = _core.STATUS_OK
    ERR_ALG = _core.STATUS_ERR_ALG
    ERR_RANGE = _core.STATUS_ERR_RANGE
    ERR_NO_MEMORY = _core.STATUS_ERR_NO_MEMORY
    ERR_INIT = _core.STATUS_ERR_INIT
    ERR_KEY_FORMAT = _core.STATUS_ERR_KEY_FORMAT
    ERR_KEY_TYPE = _core.STATUS_ERR_KEY_TYPE
    ERR_KEY_INVALID = _core.STATUS_ERR_KEY_INVALID
    ERR_KIND = _core.STATUS_ERR_KIND
    ERR_CRYPTO = _core.STATUS_ERR_CRYPTO

    @property
    def message(self) -> str:
        return _core.status_message(self.value)


# The wire names, in the core's order, for callers that list or validate them.
HASH_ALGS: tuple[str, ...] = tuple(alg.label for alg in HashAlg)
KEY_KINDS: tuple[str, ...] = tuple(kind.label for kind in KeyKind)
HashAlgName = Literal["sha256", "blake3"]
KeyKindName = Literal["p256", "secp256k1", "ed25519"]

_HASH_ALG_VALUE: dict[object, int] = {alg.label: alg.value for alg in HashAlg}
_KEY_KIND_LABEL = {kind.value: cast(KeyKindName, kind.label) for kind in KeyKind}

# Above this many hash steps (about 1 ms) a service verifies a PayWord payment
# off its event loop (csrc/thresholds.h).
INLINE_HASHES: int = _core.INLINE_HASHES


def _alg(alg: str | HashAlg) -> int:
    try:  # a wire name: what every hot path passes
        return _HASH_ALG_VALUE[alg]
    except (KeyError, TypeError):
        return HashAlg.parse(alg).value


# --- hashing and PayWord -----------------------------------------------------


def digest(data: bytes, alg: str | HashAlg = "sha256") -> bytes:
    """H(data), 32 bytes."""
    return _core.digest(data, _alg(alg))


def hash_n(data: bytes, n: int, alg: str | HashAlg = "sha256") -> bytes:
    """H applied n times (n = 0 returns data unchanged)."""
    return _core.hash_n(data, n, _alg(alg))


def verify_payword(token: bytes, k: int, anchor: bytes, alg: str | HashAlg = "sha256") -> bool:
    """H^k(token) == anchor."""
    return _core.verify_payword(token, k, anchor, _alg(alg))


def verify_payword_batch(
    items: Sequence[tuple[bytes, int, bytes]], alg: str | HashAlg = "sha256"
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
        self, seed: bytes, max_k: int, alg: str | HashAlg = "sha256", checkpoints: int = 1024
    ) -> None:
        suite = _alg(alg)
        self._chain = _core.PaywordChain(seed, max_k, suite, checkpoints)
        self.max_k = max_k
        self.alg: str = HashAlg(suite).label

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
    def from_leaves(cls, leaves: Sequence[bytes], alg: str | HashAlg = "sha256") -> MerkleTree:
        suite = _alg(alg)
        return cls(_core.MerkleTree(leaves, suite, False), HashAlg(suite).label)

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes], alg: str | HashAlg = "sha256") -> MerkleTree:
        """Leaf j = H(secret_j)."""
        suite = _alg(alg)
        return cls(_core.MerkleTree(secrets, suite, True), HashAlg(suite).label)

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


def merkle_root(leaves: Sequence[bytes], alg: str | HashAlg = "sha256") -> bytes:
    return MerkleTree.from_leaves(leaves, alg).root


def merkle_proof(leaves: Sequence[bytes], i: int, alg: str | HashAlg = "sha256") -> list[bytes]:
    return MerkleTree.from_leaves(leaves, alg).proof(i)


def verify_merkle(
    leaf: bytes,
    i: int,
    siblings: Sequence[bytes],
    root: bytes,
    depth: int,
    alg: str | HashAlg = "sha256",
) -> bool:
    """Valid iff exactly `depth` siblings fold leaf i up to root."""
    return _core.verify_merkle(leaf, i, siblings, root, depth, _alg(alg))


def merkle_fold(
    leaf: bytes, i: int, siblings: Sequence[bytes], alg: str | HashAlg = "sha256"
) -> bytes:
    """Fold leaf i through len(siblings) levels: node(t, i >> t) for t = len(siblings)."""
    return _core.merkle_fold(leaf, i, siblings, _alg(alg))


def merkle_path_node(path: bytes, i: int, levels: int, alg: str | HashAlg = "sha256") -> bytes:
    """`merkle_fold(digest(secret), i, siblings[:levels])` for a stored path blob
    `secret ‖ siblings` (32 bytes each), in one native call."""
    return _core.merkle_path_node(path, i, levels, _alg(alg))


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


def public_key_kind(public_key_der: bytes) -> KeyKindName | None:
    """The key type read from a DER SubjectPublicKeyInfo, or None if unsupported."""
    kind = _core.public_key_kind(public_key_der)
    return None if kind == _core.KEY_NONE else _KEY_KIND_LABEL[kind]


def verify_signature(public_key_der: bytes, message: bytes, signature: bytes) -> bool:
    """One signature; malformed keys, messages or signatures verify False."""
    return _core.verify_signature(public_key_der, message, signature)


def verify_signatures(items: Sequence[tuple[bytes, bytes, bytes]], threads: int = 0) -> list[bool]:
    """(public key DER, message, signature) triples verified as one native batch.

    threads = 0 lets the core choose (all cores for large batches).
    Malformed keys, messages or signatures verify False; nothing raises.
    """
    return _core.verify_signatures(items, threads)


class SigningKey:
    """A private key of one of the three supported kinds (PKCS#8)."""

    def __init__(self, pkcs8_der: bytes) -> None:
        self._key = _core.SigningKey(pkcs8_der)
        self.kind: KeyKindName = _KEY_KIND_LABEL[self._key.kind]

    @classmethod
    def generate(cls, kind: str | KeyKind = "p256") -> SigningKey:
        return cls(_core.generate_private_key(KeyKind.parse(kind).value))

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
