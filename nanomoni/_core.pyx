# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin binding over csrc/: argument checks, GIL release around C calls, nothing else."""

# === hashing, PayWord, Merkle (csrc/sha256, blake3, hash, chain, merkle) ===

# === signatures (csrc/sigverify, sign) ===
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t

from includes.sig cimport (
    NM_KEY_CACHE_SLOTS, NM_KEY_ED25519, NM_KEY_P256, NM_PKCS8_MAX, NM_SIG_MAX,
    nm_generate_private_key, nm_public_key_kind, nm_sig_init, nm_sig_item, nm_sign,
    nm_sign_many, nm_signer, nm_signer_free, nm_signer_kind, nm_signer_new,
    nm_signer_private_der, nm_signer_public_der, nm_verify_batch,
)

if nm_sig_init() != 0:
    raise ImportError("cannot initialise libsodium / libsecp256k1")

# How many distinct public keys stay parsed at once.
KEY_CACHE_SLOTS = NM_KEY_CACHE_SLOTS


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


def public_key_kind(der):
    """0 = P-256, 1 = secp256k1, 2 = Ed25519, -1 = unsupported or malformed SPKI."""
    cdef object data = _sig_bytes(der)
    if data is None:
        return -1
    cdef const uint8_t *ptr = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
    cdef int kind
    with nogil:
        kind = nm_public_key_kind(ptr, length)
    return kind


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
            c_items[i].key = <const uint8_t *>PyBytes_AS_STRING(key)
            c_items[i].key_len = <size_t>PyBytes_GET_SIZE(key)
            c_items[i].msg = <const uint8_t *>PyBytes_AS_STRING(msg)
            c_items[i].msg_len = <size_t>PyBytes_GET_SIZE(msg)
            c_items[i].sig = <const uint8_t *>PyBytes_AS_STRING(sig)
            c_items[i].sig_len = <size_t>PyBytes_GET_SIZE(sig)
        with nogil:
            nm_verify_batch(c_items, <size_t>n, threads, out)
        return [out[i] != 0 for i in range(n)]
    finally:
        PyMem_Free(c_items)
        PyMem_Free(out)


def generate_private_key(int kind):
    """A fresh private key of `kind` (0, 1, 2) as PKCS#8 DER, from OpenSSL's CSPRNG."""
    if kind < NM_KEY_P256 or kind > NM_KEY_ED25519:
        raise ValueError(f"unknown key kind {kind}; expected 0 (P-256), 1 (secp256k1) or 2 (Ed25519)")
    cdef uint8_t buf[NM_PKCS8_MAX]
    cdef size_t length
    with nogil:
        length = nm_generate_private_key(kind, buf)
    if length == 0:
        raise RuntimeError(f"key generation failed for kind {kind}")
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
        cdef const char *error = NULL
        with nogil:
            self._signer = nm_signer_new(ptr, length, &error)
        if self._signer == NULL:
            raise ValueError(f"invalid private key: {error.decode()}")

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
        cdef int ok
        with nogil:
            ok = nm_sign(self._signer, ptr, length, sig, &sig_len)
        if not ok:
            raise RuntimeError("signing failed")
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
        cdef size_t failed
        try:
            if ptrs == NULL or lens == NULL or sigs == NULL or sig_lens == NULL:
                raise MemoryError()
            for i in range(n):
                ptrs[i] = <const uint8_t *>PyBytes_AS_STRING(msgs[i])
                lens[i] = <size_t>PyBytes_GET_SIZE(msgs[i])
            with nogil:
                failed = nm_sign_many(self._signer, ptrs, lens, <size_t>n, threads, sigs, sig_lens)
            if failed:
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
