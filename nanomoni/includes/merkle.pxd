from libc.stdint cimport uint8_t, uint64_t

from nanomoni.includes.hash cimport nm_alg
from nanomoni.includes.status cimport nm_status


cdef extern from "merkle.h" nogil:
    enum:
        NM_MERKLE_MAX_DEPTH

    ctypedef struct nm_merkle:
        nm_alg alg
        unsigned depth
        uint64_t leaf_count

    nm_status nm_merkle_alloc(nm_merkle *tree, nm_alg alg, uint64_t leaf_count)
    uint8_t *nm_merkle_level0(nm_merkle *tree)
    void nm_merkle_build(nm_merkle *tree, int from_secrets)
    const uint8_t *nm_merkle_node(const nm_merkle *tree, unsigned level, uint64_t pos)
    int nm_merkle_has_node(const nm_merkle *tree, unsigned level, uint64_t pos)
    void nm_merkle_proof(const nm_merkle *tree, uint64_t i, uint8_t *out)
    void nm_merkle_free(nm_merkle *tree)
    void nm_merkle_fold(nm_alg alg, const uint8_t *leaf, uint64_t i, const uint8_t *siblings,
                        unsigned count, uint8_t *out)
    int nm_merkle_verify(nm_alg alg, const uint8_t *leaf, uint64_t i, const uint8_t *siblings,
                         unsigned depth, const uint8_t *root)
