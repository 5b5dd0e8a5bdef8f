#include "chain.h"

#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "thresholds.h"

int nm_payword_verify(nm_alg alg, const uint8_t token[32], uint64_t k, const uint8_t anchor[32]) {
    uint8_t word[32];
    nm_hash_iterate(alg, token, k, word);
    return memcmp(word, anchor, 32) == 0;
}

typedef struct {
    nm_alg alg;
    const uint8_t *tokens;
    const uint64_t *ks;
    const uint8_t *anchors;
    uint8_t *results;
} batch_ctx;

static void verify_range(void *ctx, size_t begin, size_t end) {
    const batch_ctx *batch = ctx;
    for (size_t j = begin; j < end; j++)
        batch->results[j] = (uint8_t)nm_payword_verify(batch->alg, batch->tokens + 32 * j,
                                                       batch->ks[j], batch->anchors + 32 * j);
}

void nm_payword_verify_batch(nm_alg alg, size_t count, const uint8_t *tokens, const uint64_t *ks,
                             const uint8_t *anchors, uint8_t *results) {
    /* Spread over the cores only when the batch holds enough hashing; the
     * count stops at the threshold, so it cannot overflow. */
    uint64_t hashes = 0;
    for (size_t j = 0; j < count && hashes < NM_PARALLEL_MIN_HASHES; j++)
        hashes += ks[j] < NM_PARALLEL_MIN_HASHES ? ks[j] : NM_PARALLEL_MIN_HASHES;
    int threads = hashes < NM_PARALLEL_MIN_HASHES ? 1 : nm_parallel_threads(count, 0);
    batch_ctx batch = {alg, tokens, ks, anchors, results};
    nm_parallel_for(count, threads, verify_range, &batch);
}

nm_status nm_chain_init(nm_chain *chain, nm_alg alg, const uint8_t seed[32], uint64_t max_k,
                        uint64_t checkpoints) {
    /* The max_k + 1 words w_0 .. w_max_k spread over the checkpoints:
     * interval = ceil((max_k + 1) / checkpoints), written without overflow. */
    if (checkpoints == 0 || max_k == UINT64_MAX) return NM_ERR_RANGE;
    uint64_t interval = max_k / checkpoints + 1;
    uint64_t kept = max_k / interval + 1;
    if (kept > SIZE_MAX / 32) return NM_ERR_NO_MEMORY;
    uint8_t *words = malloc((size_t)kept * 32);
    if (words == NULL) return NM_ERR_NO_MEMORY;

    memcpy(words, seed, 32);
    for (uint64_t c = 1; c < kept; c++)
        nm_hash_iterate(alg, words + 32 * (c - 1), interval, words + 32 * c);
    /* The root lies at or after the last kept word. */
    nm_hash_iterate(alg, words + 32 * (kept - 1), max_k - (kept - 1) * interval, chain->root);

    chain->alg = alg;
    chain->max_k = max_k;
    chain->interval = interval;
    chain->kept = kept;
    chain->words = words;
    return NM_OK;
}

void nm_chain_token(const nm_chain *chain, uint64_t k, uint8_t out[32]) {
    uint64_t j = chain->max_k - k;
    uint64_t c = j / chain->interval;
    nm_hash_iterate(chain->alg, chain->words + 32 * c, j - c * chain->interval, out);
}

void nm_chain_free(nm_chain *chain) {
    free(chain->words);
    chain->words = NULL;
}
