from libc.stdint cimport uint8_t, uint64_t

from nanomoni.includes.status cimport nm_status


cdef extern from "hash.h" nogil:
    ctypedef enum nm_alg:
        NM_SHA256
        NM_BLAKE3
        NM_ALG_COUNT

    int nm_alg_valid(int alg)
    nm_status nm_hash(int alg, const uint8_t *data, size_t len, uint8_t *out)
    void nm_hash32(nm_alg alg, const uint8_t *inp, uint8_t *out)
    void nm_hash_pair(nm_alg alg, const uint8_t *left, const uint8_t *right, uint8_t *out)
    void nm_hash_iterate(nm_alg alg, const uint8_t *inp, uint64_t n, uint8_t *out)
    nm_status nm_hash_n(int alg, const uint8_t *data, size_t len, uint64_t n, uint8_t *out)
