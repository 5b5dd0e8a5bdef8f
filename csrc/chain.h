/* PayWord hash chains (SPEC §5.2): w_0 = seed, w_j = H(w_{j-1}),
 * root = w_max_k, token(k) = w_{max_k - k}, so H^k(token(k)) = root.
 * Results: see status.h. */
#ifndef NANOMONI_CHAIN_H
#define NANOMONI_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

/* Predicate: H^k(token) == anchor. alg must be valid. */
int nm_payword_verify(nm_alg alg, const uint8_t token[32], uint64_t k, const uint8_t anchor[32]);

/* count independent checks: tokens and anchors are count * 32 bytes packed,
 * results[j] = nm_payword_verify of item j. Batches of at least
 * NM_PARALLEL_MIN_HASHES hash steps run on all cores. alg must be valid. */
void nm_payword_verify_batch(nm_alg alg, size_t count, const uint8_t *tokens, const uint64_t *ks,
                             const uint8_t *anchors, uint8_t *results);

/* A chain that keeps evenly spaced words ("checkpoints") instead of all of
 * them: w_j is kept for every j that is a multiple of interval. */
typedef struct {
    nm_alg alg;
    uint64_t max_k;
    uint64_t interval;  /* distance between kept words, >= 1 */
    uint64_t kept;      /* number of kept words: w_0, w_interval, ... */
    uint8_t *words;     /* kept * 32 bytes */
    uint8_t root[32];   /* w_max_k */
} nm_chain;

/* Hashes the whole chain once (max_k hashes) keeping at most `checkpoints`
 * words (checkpoints >= 1), so that any token later costs fewer than
 * ceil((max_k + 1) / checkpoints) hashes. NM_OK, NM_ERR_RANGE (checkpoints = 0
 * or max_k = UINT64_MAX) or NM_ERR_NO_MEMORY; after NM_OK nm_chain_free must
 * be called. alg must be valid. */
nm_status nm_chain_init(nm_chain *chain, nm_alg alg, const uint8_t seed[32], uint64_t max_k,
                  uint64_t checkpoints);

/* token(k) = w_{max_k - k} for 0 <= k <= max_k (checked by the caller). */
void nm_chain_token(const nm_chain *chain, uint64_t k, uint8_t out[32]);

void nm_chain_free(nm_chain *chain);

#endif
