#include "chain.h"

#include <stdlib.h>
#include <string.h>

int nm_payword_verify(nm_alg alg, const uint8_t token[32], uint64_t k, const uint8_t anchor[32]) {
    uint8_t word[32];
    nm_hash_iterate(alg, token, k, word);
    return memcmp(word, anchor, 32) == 0;
}

void nm_payword_verify_batch(nm_alg alg, size_t count, const uint8_t *tokens, const uint64_t *ks,
                             const uint8_t *anchors, uint8_t *results) {
    for (size_t j = 0; j < count; j++)
        results[j] = (uint8_t)nm_payword_verify(alg, tokens + 32 * j, ks[j], anchors + 32 * j);
}

int nm_chain_init(nm_chain *chain, nm_alg alg, const uint8_t seed[32], uint64_t max_k,
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
