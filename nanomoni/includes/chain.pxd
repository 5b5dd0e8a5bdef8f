from libc.stdint cimport uint8_t, uint64_t

from nanomoni.includes.hash cimport nm_alg
from nanomoni.includes.status cimport nm_status


cdef extern from "chain.h" nogil:
    ctypedef struct nm_chain:
        nm_alg alg
        uint64_t max_k
        uint64_t interval
        uint64_t kept
        uint8_t *words
        uint8_t root[32]

    int nm_payword_verify(nm_alg alg, const uint8_t *token, uint64_t k, const uint8_t *anchor)
    void nm_payword_verify_batch(nm_alg alg, size_t count, const uint8_t *tokens,
                                 const uint64_t *ks, const uint8_t *anchors, uint8_t *results)
    nm_status nm_chain_init(nm_chain *chain, nm_alg alg, const uint8_t *seed, uint64_t max_k,
                            uint64_t checkpoints)
    void nm_chain_token(const nm_chain *chain, uint64_t k, uint8_t *out)
    void nm_chain_free(nm_chain *chain)
