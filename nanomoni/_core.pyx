# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: auto_pickle=False, autotestdict=False
"""Thin binding over csrc/: argument checks, GIL release around C calls, nothing else.

The core's enums, status codes and thresholds are exported below as plain ints;
nanomoni.crypto wraps them once in IntEnums. _core.pyi must match this module
(tests/unit/test_core_stubs.py runs stubtest on the built extension).

The classes do their work in __cinit__, which Cython runs even when __init__
is bypassed (cls.__new__(cls)), so no object is ever half made; their
__init__ does nothing but give the constructor a signature stubtest can read.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from nanomoni.includes.base64 cimport (
    NM_BASE64_MAX_DECODED, NM_BASE64URL_DECODED, NM_BASE64URL_ENCODED, nm_base64_decode,
    nm_base64url_decode, nm_base64url_encode,
)
from nanomoni.includes.chain cimport (
    nm_chain, nm_chain_free, nm_chain_init, nm_chain_token, nm_payword_verify,
    nm_payword_verify_batch,
)
from nanomoni.includes.hash cimport NM_ALG_COUNT, NM_BLAKE3, NM_SHA256, nm_alg, nm_hash, nm_hash_n
from nanomoni.includes.merkle cimport (
    NM_MERKLE_MAX_DEPTH, nm_merkle, nm_merkle_alloc, nm_merkle_build, nm_merkle_fold,
    nm_merkle_free, nm_merkle_has_node, nm_merkle_level0, nm_merkle_node, nm_merkle_proof,
    nm_merkle_verify,
)
from nanomoni.includes.resp cimport (
    nm_resp_array, nm_resp_bulk, nm_resp_bulk_int, nm_resp_bulk_size, nm_resp_header_size,
    nm_resp_int_digits,
)
from nanomoni.includes.sig cimport (
    NM_KEY_CACHE_SLOTS, NM_KEY_ED25519, NM_KEY_KIND_COUNT, NM_KEY_NONE, NM_KEY_P256,
    NM_KEY_SECP256K1, NM_PKCS8_MAX, NM_SIG_MAX, nm_generate_private_key, nm_public_key_kind,
    nm_sig_init, nm_sig_item, nm_sign, nm_sign_many, nm_signer, nm_signer_free, nm_signer_kind,
    nm_signer_new, nm_signer_private_der, nm_signer_public_der, nm_verify_batch, nm_verify_one,
)
from nanomoni.includes.status cimport (
    NM_ERR_ALG, NM_ERR_CRYPTO, NM_ERR_INIT, NM_ERR_KEY_FORMAT, NM_ERR_KEY_INVALID,
    NM_ERR_KEY_TYPE, NM_ERR_KIND, NM_ERR_NO_MEMORY, NM_ERR_RANGE, NM_OK, NM_STATUS_COUNT,
    nm_status, nm_status_message,
)
from nanomoni.includes.thresholds cimport (
    NM_INLINE_HASHES, NM_NOGIL_BYTES, NM_NOGIL_HASHES, NM_PARALLEL_MIN_HASHES,
    NM_PARALLEL_MIN_ITEMS,
)

# === constants of the core (csrc/*.h) ===

# Hash suites (hash.h).
HASH_SHA256 = NM_SHA256
HASH_BLAKE3 = NM_BLAKE3
HASH_ALG_COUNT = NM_ALG_COUNT

# Signature key kinds (sigkeys.h); KEY_NONE marks an unsupported or malformed key.
KEY_NONE = NM_KEY_NONE
KEY_P256 = NM_KEY_P256
KEY_SECP256K1 = NM_KEY_SECP256K1
KEY_ED25519 = NM_KEY_ED25519
KEY_KIND_COUNT = NM_KEY_KIND_COUNT

# Status codes of fallible operations (status.h).
STATUS_OK = NM_OK
STATUS_ERR_ALG = NM_ERR_ALG
STATUS_ERR_RANGE = NM_ERR_RANGE
STATUS_ERR_NO_MEMORY = NM_ERR_NO_MEMORY
STATUS_ERR_INIT = NM_ERR_INIT
STATUS_ERR_KEY_FORMAT = NM_ERR_KEY_FORMAT
STATUS_ERR_KEY_TYPE = NM_ERR_KEY_TYPE
STATUS_ERR_KEY_INVALID = NM_ERR_KEY_INVALID
STATUS_ERR_KIND = NM_ERR_KIND
STATUS_ERR_CRYPTO = NM_ERR_CRYPTO
STATUS_COUNT = NM_STATUS_COUNT

# When work moves off the calling thread (thresholds.h).
NOGIL_HASHES = NM_NOGIL_HASHES
NOGIL_BYTES = NM_NOGIL_BYTES
PARALLEL_MIN_HASHES = NM_PARALLEL_MIN_HASHES
PARALLEL_MIN_ITEMS = NM_PARALLEL_MIN_ITEMS
INLINE_HASHES = NM_INLINE_HASHES

# Sizes and limits.
MERKLE_MAX_DEPTH = NM_MERKLE_MAX_DEPTH
SIG_MAX = NM_SIG_MAX
KEY_CACHE_SLOTS = NM_KEY_CACHE_SLOTS  # distinct public keys kept parsed at once


def status_message(int status):
    """The core's description of a status code."""
    return nm_status_message(status).decode()


cdef int _raise_status(nm_status status) except -1:
    if status == NM_ERR_NO_MEMORY:
        raise MemoryError()
    raise ValueError(nm_status_message(status).decode())


# === strict base64 (csrc/base64) ===

cdef extern from "Python.h":
    # For an ASCII str this is its own buffer: no copy, no allocation.
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL


cdef object _base64(object text, Py_ssize_t length):
    # The bytes of canonical base64 `text` (of exactly `length` bytes unless length < 0),
    # or None: not a str, not canonical base64, or another length.
    cdef Py_ssize_t size, pad = 0
    cdef size_t decoded
    cdef const char *chars
    if not PyUnicode_Check(text):
        return None
    try:
        chars = PyUnicode_AsUTF8AndSize(text, &size)
    except UnicodeError:  # a lone surrogate: no base64 either
        return None
    if size >= 4 and chars[size - 1] == b'=':
        pad = 2 if chars[size - 2] == b'=' else 1
    # What a valid text decodes to; nm_base64_decode writes exactly that many bytes.
    cdef Py_ssize_t count = <Py_ssize_t>NM_BASE64_MAX_DECODED(<size_t>size) - pad
    if length >= 0 and count != length:
        return None
    cdef bytes out = PyBytes_FromStringAndSize(NULL, count)
    if not nm_base64_decode(chars, <size_t>size, <uint8_t *>PyBytes_AS_STRING(out), &decoded):
        return None
    return out


def base64_decode(text, Py_ssize_t length=-1):
    """The bytes of canonical standard base64 `text` (SPEC §1), or None when it is not
    that (or, with length >= 0, does not decode to exactly `length` bytes)."""
    return _base64(text, length)


def base64_decode_joined(list texts not None, Py_ssize_t length):
    """`b"".join(base64_decode_list(texts, length))` without the intermediate list, or
    None if any text is not canonical base64 of exactly `length` (>= 0) bytes."""
    cdef Py_ssize_t j, size, pad, count = len(texts)
    cdef size_t decoded
    cdef const char *chars
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, count * length)
    cdef uint8_t *at = <uint8_t *>PyBytes_AS_STRING(out)
    for j in range(count):
        text = texts[j]
        if not PyUnicode_Check(text):
            return None
        try:
            chars = PyUnicode_AsUTF8AndSize(text, &size)
        except UnicodeError:
            return None
        pad = 0
        if size >= 4 and chars[size - 1] == b'=':
            pad = 2 if chars[size - 2] == b'=' else 1
        if <Py_ssize_t>NM_BASE64_MAX_DECODED(<size_t>size) - pad != length:
            return None
        if not nm_base64_decode(chars, <size_t>size, at + j * length, &decoded):
            return None
    return out


def base64_decode_list(list texts not None, Py_ssize_t length):
    """`base64_decode(text, length)` of every text, or None if any of them is None."""
    cdef Py_ssize_t j, count = len(texts)
    cdef list out = PyList_New(count)
    for j in range(count):
        item = _base64(texts[j], length)
        if item is None:
            return None
        Py_INCREF(item)
        PyList_SET_ITEM(out, j, item)
    return out


def base64url_decode(text):
    """The bytes of canonical URL-safe base64 without padding `text` (a str or bytes;
    SPEC §11 header values), or None when it is not that."""
    cdef Py_ssize_t size
    cdef const char *chars
    if PyBytes_Check(text):
        chars = PyBytes_AS_STRING(text)
        size = PyBytes_GET_SIZE(text)
    elif PyUnicode_Check(text):
        try:
            chars = PyUnicode_AsUTF8AndSize(text, &size)
        except UnicodeError:  # a lone surrogate: no base64 either
            return None
    else:
        return None
    if size % 4 == 1:
        return None
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>NM_BASE64URL_DECODED(<size_t>size))
    if not nm_base64url_decode(chars, <size_t>size, <uint8_t *>PyBytes_AS_STRING(out)):
        return None
    return out


def base64url_encode(bytes data not None):
    """The canonical URL-safe base64 text of `data`, without padding, as ASCII bytes."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>NM_BASE64URL_ENCODED(<size_t>size))
    nm_base64url_encode(<const uint8_t *>PyBytes_AS_STRING(data), <size_t>size, PyBytes_AS_STRING(out))
    return out


# === Redis commands (csrc/resp) ===

def resp_command(*args):
    """One Redis command in RESP: `args` (bytes, str as UTF-8, or int in int64) as an
    array of bulk strings. TypeError for another type, OverflowError for a larger int."""
    cdef Py_ssize_t j, count = len(args), size
    cdef size_t total = nm_resp_header_size(<size_t>count)
    cdef const char *chars
    for j in range(count):  # the size first: one allocation
        arg = args[j]
        if PyBytes_Check(arg):
            total += nm_resp_bulk_size(<size_t>PyBytes_GET_SIZE(arg))
        elif PyUnicode_Check(arg):
            PyUnicode_AsUTF8AndSize(arg, &size)
            total += nm_resp_bulk_size(<size_t>size)
        elif PyLong_Check(arg):
            total += nm_resp_bulk_size(nm_resp_int_digits(<int64_t>arg))
        else:
            raise TypeError(f"a Redis argument is bytes, str or int, not {type(arg).__name__}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
    cdef char *at = nm_resp_array(PyBytes_AS_STRING(out), <size_t>count)
    for j in range(count):
        arg = args[j]
        if PyBytes_Check(arg):
            at = nm_resp_bulk(at, PyBytes_AS_STRING(arg), <size_t>PyBytes_GET_SIZE(arg))
        elif PyUnicode_Check(arg):
            chars = PyUnicode_AsUTF8AndSize(arg, &size)
            at = nm_resp_bulk(at, chars, <size_t>size)
        else:
            at = nm_resp_bulk_int(at, <int64_t>arg)
    return out


# === hashing, PayWord, Merkle (csrc/sha256, blake3, hash, chain, merkle) ===

cdef inline int _suite(object alg) except -1:
    # Checked on the Python object, so no int is too large to get a clear error.
    if PyLong_CheckExact(alg) and 0 <= alg < NM_ALG_COUNT:
        return <int>alg
    raise ValueError(f"unknown hash alg {alg!r}; expected an int in [0, {NM_ALG_COUNT - 1}]")


cdef inline int _small_int(object value, str what, int limit) except -1:
    if not PyLong_Check(value):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= limit:
        raise ValueError(f"{what} must be in [0, {limit}], got {value}")
    return <int>value


cdef inline int _to_u64(object value, str what, uint64_t *out, Py_ssize_t index=-1) except -1:
    # `index` >= 0 names an item of a batch; the message is only built on error.
    if not PyLong_Check(value):
        label = what if index < 0 else f"items[{index}] {what}"
        raise TypeError(f"{label} must be an int, got {type(value).__name__}")
    try:
        out[0] = value
    except OverflowError:
        label = what if index < 0 else f"items[{index}] {what}"
        raise ValueError(f"{label} must be an integer in [0, 2**64), got {value}") from None
    return 0


cdef inline const uint8_t *_hash32(bytes value, str what) except NULL:
    if PyBytes_GET_SIZE(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {PyBytes_GET_SIZE(value)}")
    return <const uint8_t *>PyBytes_AS_STRING(value)


cdef inline const uint8_t *_item32(
    object value, str what, Py_ssize_t index, str field
) except NULL:
    if not PyBytes_Check(value):
        raise TypeError(f"{what}[{index}]{field} must be bytes, got {type(value).__name__}")
    if PyBytes_GET_SIZE(value) != 32:
        raise ValueError(f"{what}[{index}]{field} must be 32 bytes, got {PyBytes_GET_SIZE(value)}")
    return <const uint8_t *>PyBytes_AS_STRING(value)


cdef inline bytes _new_hash():
    return PyBytes_FromStringAndSize(NULL, 32)


cdef unsigned _siblings_into(object siblings, Py_ssize_t count, uint8_t *out) except? 0:
    cdef Py_ssize_t j
    for j in range(count):
        memcpy(out + 32 * j, _item32(siblings[j], "siblings", j, ""), 32)
    return <unsigned>count


def digest(bytes data not None, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef bytes out = _new_hash()
    cdef const uint8_t *src = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef nm_status status
    if length >= NM_NOGIL_BYTES:
        with nogil:
            status = nm_hash(suite, src, length, dst)
    else:
        status = nm_hash(suite, src, length, dst)
    if status != NM_OK:
        _raise_status(status)
    return out


def hash_n(bytes data not None, n, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef uint64_t steps
    _to_u64(n, "n", &steps)
    if steps == 0:
        return data
    cdef bytes out = _new_hash()
    cdef const uint8_t *src = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef nm_status status
    if steps >= NM_NOGIL_HASHES or length >= NM_NOGIL_BYTES:
        with nogil:
            status = nm_hash_n(suite, src, length, steps, dst)
    else:
        status = nm_hash_n(suite, src, length, steps, dst)
    if status != NM_OK:
        _raise_status(status)
    return out


def verify_payword(bytes token not None, k, bytes anchor not None, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef const uint8_t *tok = _hash32(token, "token")
    cdef const uint8_t *anc = _hash32(anchor, "anchor")
    cdef uint64_t steps
    _to_u64(k, "k", &steps)
    cdef int ok
    if steps >= NM_NOGIL_HASHES:
        with nogil:
            ok = nm_payword_verify(suite, tok, steps, anc)
    else:
        ok = nm_payword_verify(suite, tok, steps, anc)
    return ok != 0


def verify_payword_batch(items, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef Py_ssize_t count = len(items), j
    # One buffer: tokens, anchors, ks, results. The inputs are copied so the
    # hashing can run without the GIL while callers mutate their objects.
    cdef uint8_t *buffer = <uint8_t *>PyMem_Malloc(<size_t>count * (32 + 32 + 8 + 1) + 1)
    if buffer == NULL:
        raise MemoryError()
    cdef uint8_t *tokens = buffer
    cdef uint8_t *anchors = buffer + 32 * count
    cdef uint64_t *ks = <uint64_t *>(buffer + 64 * count)
    cdef uint8_t *results = buffer + 72 * count
    cdef uint64_t hashes = 0  # counted up to the GIL threshold only
    cdef list out
    try:
        for j in range(count):
            try:
                token, k, anchor = items[j]
            except (TypeError, ValueError):
                raise ValueError(f"items[{j}] must be a (token, k, anchor) triple") from None
            memcpy(tokens + 32 * j, _item32(token, "items", j, " token"), 32)
            memcpy(anchors + 32 * j, _item32(anchor, "items", j, " anchor"), 32)
            _to_u64(k, "k", &ks[j], j)
            if hashes < NM_NOGIL_HASHES:
                hashes += ks[j] if ks[j] < NM_NOGIL_HASHES else NM_NOGIL_HASHES
        if hashes >= NM_NOGIL_HASHES:
            with nogil:
                nm_payword_verify_batch(suite, <size_t>count, tokens, ks, anchors, results)
        else:
            nm_payword_verify_batch(suite, <size_t>count, tokens, ks, anchors, results)
        out = PyList_New(count)
        for j in range(count):
            verdict = True if results[j] else False
            Py_INCREF(verdict)
            PyList_SET_ITEM(out, j, verdict)
        return out
    finally:
        PyMem_Free(buffer)


cdef class PaywordChain:
    """w_0 = seed, w_j = H(w_{j-1}), root = w_max_k, token(k) = w_{max_k - k}.

    Keeps at most `checkpoints` evenly spaced words, so a token costs fewer
    than ceil((max_k + 1) / checkpoints) hashes.
    """

    cdef nm_chain _chain
    cdef bint _ready

    def __cinit__(self, bytes seed not None, max_k, alg, checkpoints):
        cdef nm_alg suite = <nm_alg>_suite(alg)
        cdef const uint8_t *seed_bytes = _hash32(seed, "seed")
        cdef uint64_t top, kept
        _to_u64(max_k, "max_k", &top)
        _to_u64(checkpoints, "checkpoints", &kept)
        if top >= (<uint64_t>1) << 63:
            raise ValueError(f"max_k must be below 2**63, got {max_k}")
        if kept == 0:
            raise ValueError("checkpoints must be at least 1")
        cdef nm_status status
        with nogil:
            status = nm_chain_init(&self._chain, suite, seed_bytes, top, kept)
        if status != NM_OK:
            _raise_status(status)
        self._ready = True

    def __init__(self, bytes seed not None, max_k, alg, checkpoints):
        pass

    def __dealloc__(self):
        if self._ready:
            nm_chain_free(&self._chain)

    @property
    def root(self):
        return PyBytes_FromStringAndSize(<const char *>self._chain.root, 32)

    def token(self, k):
        cdef uint64_t index
        _to_u64(k, "k", &index)
        if index > self._chain.max_k:
            raise ValueError(f"k must be in [0, {self._chain.max_k}], got {k}")
        cdef bytes out = _new_hash()
        cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
        if self._chain.interval > NM_NOGIL_HASHES:
            with nogil:
                nm_chain_token(&self._chain, index, dst)
        else:
            nm_chain_token(&self._chain, index, dst)
        return out


cdef class MerkleTree:
    """All levels of a PayTree (SPEC §5.3) in C memory; see csrc/merkle.h."""

    cdef nm_merkle _tree
    cdef bint _ready

    def __cinit__(self, items, alg, bint from_secrets):
        cdef nm_alg suite = <nm_alg>_suite(alg)
        cdef Py_ssize_t count = len(items), j
        if count == 0:
            raise ValueError("a Merkle tree needs at least one leaf")
        cdef nm_status status = nm_merkle_alloc(&self._tree, suite, <uint64_t>count)
        if status != NM_OK:
            _raise_status(status)
        self._ready = True
        cdef uint8_t *level0 = nm_merkle_level0(&self._tree)
        what = "secrets" if from_secrets else "leaves"
        for j in range(count):
            memcpy(level0 + 32 * j, _item32(items[j], what, j, ""), 32)
        if 2 * count >= NM_NOGIL_HASHES:  # about 2 hashes per leaf
            with nogil:
                nm_merkle_build(&self._tree, from_secrets)
        else:
            nm_merkle_build(&self._tree, from_secrets)

    def __init__(self, items, alg, bint from_secrets):
        pass

    def __dealloc__(self):
        if self._ready:
            nm_merkle_free(&self._tree)

    @property
    def root(self):
        return PyBytes_FromStringAndSize(
            <const char *>nm_merkle_node(&self._tree, self._tree.depth, 0), 32
        )

    @property
    def depth(self):
        return self._tree.depth

    @property
    def leaf_count(self):
        return self._tree.leaf_count

    def node(self, level, pos):
        cdef uint64_t height, index
        _to_u64(level, "level", &height)
        _to_u64(pos, "pos", &index)
        if height > self._tree.depth or not nm_merkle_has_node(&self._tree, <unsigned>height, index):
            raise ValueError(
                f"no node ({level}, {pos}) in a tree of depth {self._tree.depth}: "
                f"level must be in [0, {self._tree.depth}] and pos below 2**(depth - level)"
            )
        return PyBytes_FromStringAndSize(
            <const char *>nm_merkle_node(&self._tree, <unsigned>height, index), 32
        )

    def proof(self, i):
        cdef uint64_t index
        _to_u64(i, "i", &index)
        if index >= self._tree.leaf_count:
            raise ValueError(f"i must be in [0, {self._tree.leaf_count - 1}], got {i}")
        cdef uint8_t path[NM_MERKLE_MAX_DEPTH * 32]
        nm_merkle_proof(&self._tree, index, path)
        return [
            PyBytes_FromStringAndSize(<const char *>path + 32 * level, 32)
            for level in range(self._tree.depth)
        ]


def verify_merkle(bytes leaf not None, i, siblings, bytes root not None, depth, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef const uint8_t *leaf_bytes = _hash32(leaf, "leaf")
    cdef const uint8_t *root_bytes = _hash32(root, "root")
    cdef int levels = _small_int(depth, "depth", NM_MERKLE_MAX_DEPTH)
    cdef uint64_t index
    _to_u64(i, "i", &index)
    if levels < 64 and (index >> levels) != 0:
        raise ValueError(f"i must be below 2**depth = {2 ** depth}, got {i}")
    if len(siblings) != levels:
        return False
    cdef uint8_t path[NM_MERKLE_MAX_DEPTH * 32]
    _siblings_into(siblings, levels, path)
    return nm_merkle_verify(suite, leaf_bytes, index, path, <unsigned>levels, root_bytes) != 0


def merkle_fold(bytes leaf not None, i, siblings, alg):
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef const uint8_t *leaf_bytes = _hash32(leaf, "leaf")
    cdef uint64_t index
    _to_u64(i, "i", &index)
    cdef Py_ssize_t count = len(siblings)
    if count > NM_MERKLE_MAX_DEPTH:
        raise ValueError(f"at most {NM_MERKLE_MAX_DEPTH} siblings, got {count}")
    cdef uint8_t path[NM_MERKLE_MAX_DEPTH * 32]
    _siblings_into(siblings, count, path)
    cdef bytes out = _new_hash()
    nm_merkle_fold(suite, leaf_bytes, index, path, <unsigned>count,
                   <uint8_t *>PyBytes_AS_STRING(out))
    return out


def merkle_path_node(bytes path not None, i, levels, alg):
    """node(levels, i >> levels) from a stored `secret || siblings` blob: H(secret)
    folded through its first `levels` siblings, without splitting the blob."""
    cdef nm_alg suite = <nm_alg>_suite(alg)
    cdef int count = _small_int(levels, "levels", NM_MERKLE_MAX_DEPTH)
    cdef uint64_t index
    _to_u64(i, "i", &index)
    if PyBytes_GET_SIZE(path) < 32 * (count + 1):
        raise ValueError(f"path must hold a secret and {count} siblings, "
                         f"got {PyBytes_GET_SIZE(path)} bytes")
    cdef const uint8_t *src = <const uint8_t *>PyBytes_AS_STRING(path)
    cdef uint8_t leaf[32]
    cdef nm_status status = nm_hash(suite, src, 32, leaf)
    if status != NM_OK:
        _raise_status(status)
    cdef bytes out = _new_hash()
    nm_merkle_fold(suite, leaf, index, src + 32, <unsigned>count,
                   <uint8_t *>PyBytes_AS_STRING(out))
    return out


# === signatures (csrc/sigkeys, sigverify, sign) ===

if nm_sig_init() != NM_OK:
    raise ImportError(nm_status_message(NM_ERR_INIT).decode())


cdef object _sig_bytes(object value):
    """value as immutable bytes (copying bytes-likes), or None if it is no bytes at all."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value)
        except (TypeError, ValueError):  # e.g. a released memoryview
            return None
    return None


cdef int _sig_threads(int threads) except -1:
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = choose), got {threads}")
    return threads


cdef void _set_item(nm_sig_item *item, bytes key, bytes msg, bytes sig) noexcept:
    """Points item at the three buffers, which the caller keeps alive."""
    item.key = <const uint8_t *>PyBytes_AS_STRING(key)
    item.key_len = <size_t>PyBytes_GET_SIZE(key)
    item.msg = <const uint8_t *>PyBytes_AS_STRING(msg)
    item.msg_len = <size_t>PyBytes_GET_SIZE(msg)
    item.sig = <const uint8_t *>PyBytes_AS_STRING(sig)
    item.sig_len = <size_t>PyBytes_GET_SIZE(sig)


def public_key_kind(der):
    """KEY_P256, KEY_SECP256K1, KEY_ED25519, or KEY_NONE for an unsupported or malformed SPKI."""
    cdef object data = _sig_bytes(der)
    if data is None:
        return NM_KEY_NONE
    cdef const uint8_t *ptr = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
    cdef int kind
    with nogil:
        kind = nm_public_key_kind(ptr, length)
    return kind


def verify_signature(key, message, signature):
    """One (SPKI DER, message, signature) check; anything malformed verifies False."""
    cdef object k = _sig_bytes(key), m = _sig_bytes(message), s = _sig_bytes(signature)
    if k is None or m is None or s is None:
        return False
    cdef nm_sig_item item
    _set_item(&item, k, m, s)  # k, m and s stay referenced while the GIL is released
    cdef int ok
    with nogil:
        ok = nm_verify_one(&item)
    return ok != 0


def verify_signatures(items, int threads=0):
    """(SPKI DER, message, signature) triples -> list of bools, one native batch."""
    _sig_threads(threads)
    cdef list triples = list(items)
    cdef Py_ssize_t n = len(triples), i
    # Holds every buffer the C side reads, so none is freed while the GIL is released.
    cdef list alive = []
    cdef nm_sig_item *c_items = <nm_sig_item *>PyMem_Malloc(max(n, 1) * sizeof(nm_sig_item))
    cdef uint8_t *out = <uint8_t *>PyMem_Malloc(max(n, 1))
    if c_items == NULL or out == NULL:
        PyMem_Free(c_items)
        PyMem_Free(out)
        raise MemoryError()
    cdef object key, msg, sig
    try:
        for i in range(n):
            key = msg = sig = None
            triple = triples[i]
            if isinstance(triple, (tuple, list)) and len(triple) == 3:
                key = _sig_bytes(triple[0])
                msg = _sig_bytes(triple[1])
                sig = _sig_bytes(triple[2])
            if key is None or msg is None or sig is None:
                # A wrong-typed item verifies False; NULL tells the C side so.
                c_items[i].key = NULL
                c_items[i].key_len = 0
                c_items[i].msg = NULL
                c_items[i].msg_len = 0
                c_items[i].sig = NULL
                c_items[i].sig_len = 0
                continue
            alive.append((key, msg, sig))
            _set_item(&c_items[i], key, msg, sig)
        with nogil:
            nm_verify_batch(c_items, <size_t>n, threads, out)
        return [out[i] != 0 for i in range(n)]
    finally:
        PyMem_Free(c_items)
        PyMem_Free(out)


def generate_private_key(int kind):
    """A fresh private key of `kind` (KEY_P256, ...) as PKCS#8 DER, from OpenSSL's CSPRNG."""
    cdef uint8_t buf[NM_PKCS8_MAX]
    cdef size_t length = 0
    cdef nm_status status
    with nogil:
        status = nm_generate_private_key(kind, buf, &length)
    if status == NM_ERR_KIND:
        raise ValueError(
            f"unknown key kind {kind}; expected 0 (P-256), 1 (secp256k1) or 2 (Ed25519)"
        )
    if status != NM_OK:
        raise RuntimeError(f"key generation failed for kind {kind}: {status_message(status)}")
    return PyBytes_FromStringAndSize(<const char *>buf, <Py_ssize_t>length)


cdef class SigningKey:
    """A parsed PKCS#8 private key; signs with the GIL released."""

    cdef nm_signer *_signer

    def __cinit__(self, pkcs8_der):
        cdef object data = _sig_bytes(pkcs8_der)
        if data is None:
            raise TypeError(f"PKCS#8 key must be bytes, not {type(pkcs8_der).__name__}")
        cdef const uint8_t *ptr = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
        cdef nm_status status
        with nogil:
            status = nm_signer_new(ptr, length, &self._signer)
        if status == NM_ERR_NO_MEMORY:
            raise MemoryError()
        if status != NM_OK:
            raise ValueError(f"invalid private key: {status_message(status)}")

    def __init__(self, pkcs8_der):
        pass

    def __dealloc__(self):
        nm_signer_free(self._signer)

    @property
    def kind(self):
        return nm_signer_kind(self._signer)

    @property
    def public_key_der(self):
        cdef size_t length
        cdef const uint8_t *der = nm_signer_public_der(self._signer, &length)
        return PyBytes_FromStringAndSize(<const char *>der, <Py_ssize_t>length)

    @property
    def private_key_der(self):
        cdef size_t length
        cdef const uint8_t *der = nm_signer_private_der(self._signer, &length)
        return PyBytes_FromStringAndSize(<const char *>der, <Py_ssize_t>length)

    def sign(self, message):
        cdef object data = _sig_bytes(message)
        if data is None:
            raise TypeError(f"message must be bytes, not {type(message).__name__}")
        cdef const uint8_t *ptr = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
        cdef uint8_t sig[NM_SIG_MAX]
        cdef size_t sig_len = 0
        cdef nm_status status
        with nogil:
            status = nm_sign(self._signer, ptr, length, sig, &sig_len)
        if status != NM_OK:
            raise RuntimeError(f"signing failed: {status_message(status)}")
        return PyBytes_FromStringAndSize(<const char *>sig, <Py_ssize_t>sig_len)

    def sign_many(self, messages, int threads=0):
        """One signature per message, signed in one native call."""
        _sig_threads(threads)
        cdef list msgs = []
        for message in messages:
            data = _sig_bytes(message)
            if data is None:
                raise TypeError(f"messages must be bytes, not {type(message).__name__}")
            msgs.append(data)
        cdef Py_ssize_t n = len(msgs), i
        cdef size_t count = <size_t>max(n, 1)
        cdef const uint8_t **ptrs = <const uint8_t **>PyMem_Malloc(count * sizeof(uint8_t *))
        cdef size_t *lens = <size_t *>PyMem_Malloc(count * sizeof(size_t))
        cdef uint8_t *sigs = <uint8_t *>PyMem_Malloc(count * NM_SIG_MAX)
        cdef size_t *sig_lens = <size_t *>PyMem_Malloc(count * sizeof(size_t))
        cdef nm_status status
        try:
            if ptrs == NULL or lens == NULL or sigs == NULL or sig_lens == NULL:
                raise MemoryError()
            for i in range(n):
                ptrs[i] = <const uint8_t *>PyBytes_AS_STRING(msgs[i])
                lens[i] = <size_t>PyBytes_GET_SIZE(msgs[i])
            with nogil:
                status = nm_sign_many(self._signer, ptrs, lens, <size_t>n, threads, sigs, sig_lens)
            if status != NM_OK:
                failed = sum(1 for i in range(n) if sig_lens[i] == 0)
                raise RuntimeError(f"signing failed for {failed} of {n} messages")
            return [
                PyBytes_FromStringAndSize(<const char *>(sigs + i * NM_SIG_MAX),
                                          <Py_ssize_t>sig_lens[i])
                for i in range(n)
            ]
        finally:
            PyMem_Free(ptrs)
            PyMem_Free(lens)
            PyMem_Free(sigs)
            PyMem_Free(sig_lens)
