"""Type stubs for the native core (nanomoni/_core.pyx).

Checked against the built extension by tests/unit/test_core_stubs.py (stubtest).
"""

from collections.abc import Sequence

from typing_extensions import disjoint_base

# === constants of the core (csrc/*.h); nanomoni.crypto wraps them in IntEnums ===

HASH_SHA256: int
HASH_BLAKE3: int
HASH_ALG_COUNT: int

KEY_NONE: int
KEY_P256: int
KEY_SECP256K1: int
KEY_ED25519: int
KEY_KIND_COUNT: int

STATUS_OK: int
STATUS_ERR_ALG: int
STATUS_ERR_RANGE: int
STATUS_ERR_NO_MEMORY: int
STATUS_ERR_INIT: int
STATUS_ERR_KEY_FORMAT: int
STATUS_ERR_KEY_TYPE: int
STATUS_ERR_KEY_INVALID: int
STATUS_ERR_KIND: int
STATUS_ERR_CRYPTO: int
STATUS_COUNT: int

NOGIL_HASHES: int
NOGIL_BYTES: int
PARALLEL_MIN_HASHES: int
PARALLEL_MIN_ITEMS: int
INLINE_HASHES: int

MERKLE_MAX_DEPTH: int
SIG_MAX: int
KEY_CACHE_SLOTS: int

def status_message(status: int) -> str: ...

# === strict base64 (SPEC §1) ===
# None: not a str, not canonical standard base64, or (length >= 0) another length.

def base64_decode(text: object, length: int = -1) -> bytes | None: ...
def base64_decode_list(texts: list[str], length: int) -> list[bytes] | None: ...
def base64_decode_joined(texts: list[str], length: int) -> bytes | None: ...

# URL-safe without padding (SPEC §11 header values); None: not canonical.

def base64url_decode(text: object) -> bytes | None: ...
def base64url_encode(data: bytes) -> bytes: ...

# === Redis commands ===

def resp_command(*args: bytes | str | int) -> bytes: ...

# === hashing, PayWord, Merkle ===
# alg: HASH_SHA256 or HASH_BLAKE3. Hashes, tokens, anchors, seeds, leaves and
# siblings are 32 bytes; wrong lengths, negative counts and unknown algs raise
# ValueError.

def digest(data: bytes, alg: int) -> bytes: ...
def hash_n(data: bytes, n: int, alg: int) -> bytes: ...
def verify_payword(token: bytes, k: int, anchor: bytes, alg: int) -> bool: ...
def verify_payword_batch(items: Sequence[tuple[bytes, int, bytes]], alg: int) -> list[bool]: ...

@disjoint_base
class PaywordChain:
    def __init__(self, seed: bytes, max_k: int, alg: int, checkpoints: int) -> None: ...
    @property
    def root(self) -> bytes: ...
    def token(self, k: int) -> bytes: ...

@disjoint_base
class MerkleTree:
    def __init__(self, items: Sequence[bytes], alg: int, from_secrets: bool) -> None: ...
    @property
    def root(self) -> bytes: ...
    @property
    def depth(self) -> int: ...
    @property
    def leaf_count(self) -> int: ...
    def node(self, level: int, pos: int) -> bytes: ...
    def proof(self, i: int) -> list[bytes]: ...

def verify_merkle(
    leaf: bytes, i: int, siblings: Sequence[bytes], root: bytes, depth: int, alg: int
) -> bool: ...
def merkle_fold(leaf: bytes, i: int, siblings: Sequence[bytes], alg: int) -> bytes: ...
def merkle_path_node(path: bytes, i: int, levels: int, alg: int) -> bytes: ...

# === signatures ===
# Keys are DER SubjectPublicKeyInfo; kinds are KEY_P256, KEY_SECP256K1, KEY_ED25519.

def public_key_kind(der: bytes) -> int: ...
def verify_signature(key: bytes, message: bytes, signature: bytes) -> bool: ...
def verify_signatures(
    items: Sequence[tuple[bytes, bytes, bytes]], threads: int = 0
) -> list[bool]: ...
def generate_private_key(kind: int) -> bytes: ...

@disjoint_base
class SigningKey:
    def __init__(self, pkcs8_der: bytes) -> None: ...
    @property
    def kind(self) -> int: ...
    @property
    def public_key_der(self) -> bytes: ...
    @property
    def private_key_der(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...
    def sign_many(self, messages: Sequence[bytes], threads: int = 0) -> list[bytes]: ...
