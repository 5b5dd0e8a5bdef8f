#include "merkle.h"

#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "thresholds.h"

static unsigned bit_length(uint64_t x) {
    return x == 0 ? 0 : 64u - (unsigned)__builtin_clzll(x);
}

nm_status nm_merkle_alloc(nm_merkle *tree, nm_alg alg, uint64_t leaf_count) {
    if (leaf_count == 0 || leaf_count > SIZE_MAX / 64) return NM_ERR_RANGE;
    memset(tree, 0, sizeof *tree);
    tree->alg = alg;
    tree->leaf_count = leaf_count;
    tree->depth = bit_length(leaf_count - 1);
    uint64_t total = 0;
    uint64_t count = leaf_count;
    for (unsigned level = 0; level <= tree->depth; level++) {
        tree->offset[level] = total;
        tree->stored[level] = count;
        total += count;
        count = count / 2 + count % 2; /* ceil(leaf_count / 2^(level+1)) */
    }
    /* total < 2 * leaf_count + depth, so the size cannot overflow. */
    tree->nodes = malloc((size_t)total * 32);
    return tree->nodes == NULL ? NM_ERR_NO_MEMORY : NM_OK;
}

uint8_t *nm_merkle_level0(nm_merkle *tree) { return tree->nodes; }

static inline uint8_t *stored_node(const nm_merkle *tree, unsigned level, uint64_t pos) {
    return tree->nodes + 32 * (tree->offset[level] + pos);
}

int nm_merkle_has_node(const nm_merkle *tree, unsigned level, uint64_t pos) {
    if (level > tree->depth) return 0;
    unsigned width_bits = tree->depth - level;
    return width_bits >= 64 || pos < ((uint64_t)1 << width_bits);
}

const uint8_t *nm_merkle_node(const nm_merkle *tree, unsigned level, uint64_t pos) {
    return pos < tree->stored[level] ? stored_node(tree, level, pos) : tree->pad[level];
}

/* One build step: turning secrets into leaves, or hashing the parents of the
 * nodes at `level`. Its items touch disjoint nodes, so any split of [0, count)
 * across threads is safe. */
typedef struct {
    nm_merkle *tree;
    int secrets;
    unsigned level;
} build_step_ctx;

static void build_range(void *ctx, size_t begin, size_t end) {
    const build_step_ctx *step = ctx;
    nm_merkle *tree = step->tree;
    for (size_t p = begin; p < end; p++) {
        if (step->secrets) {
            uint8_t *leaf = stored_node(tree, 0, p);
            nm_hash32(tree->alg, leaf, leaf);
        } else {
            nm_hash_pair(tree->alg, nm_merkle_node(tree, step->level, 2 * (uint64_t)p),
                         nm_merkle_node(tree, step->level, 2 * (uint64_t)p + 1),
                         stored_node(tree, step->level + 1, p));
        }
    }
}

static void build_step(nm_merkle *tree, int secrets, unsigned level, uint64_t count) {
    build_step_ctx step = {tree, secrets, level};
    int threads = count < NM_PARALLEL_MIN_HASHES ? 1 : nm_parallel_threads((size_t)count, 0);
    nm_parallel_for((size_t)count, threads, build_range, &step);
}

void nm_merkle_build(nm_merkle *tree, int from_secrets) {
    if (from_secrets) build_step(tree, 1, 0, tree->leaf_count);
    memcpy(tree->pad[0], stored_node(tree, 0, tree->leaf_count - 1), 32);
    for (unsigned level = 0; level < tree->depth; level++) {
        nm_hash_pair(tree->alg, tree->pad[level], tree->pad[level], tree->pad[level + 1]);
        build_step(tree, 0, level, tree->stored[level + 1]);
    }
}

void nm_merkle_proof(const nm_merkle *tree, uint64_t i, uint8_t *out) {
    for (unsigned level = 0; level < tree->depth; level++)
        memcpy(out + 32 * level, nm_merkle_node(tree, level, (i >> level) ^ 1), 32);
}

void nm_merkle_free(nm_merkle *tree) {
    free(tree->nodes);
    tree->nodes = NULL;
}

void nm_merkle_fold(nm_alg alg, const uint8_t leaf[32], uint64_t i, const uint8_t *siblings,
                    unsigned count, uint8_t out[32]) {
    uint8_t cur[32];
    memcpy(cur, leaf, 32);
    for (unsigned level = 0; level < count; level++) {
        const uint8_t *sib = siblings + 32 * level;
        if ((i >> level) & 1)
            nm_hash_pair(alg, sib, cur, cur);
        else
            nm_hash_pair(alg, cur, sib, cur);
    }
    memcpy(out, cur, 32);
}

int nm_merkle_verify(nm_alg alg, const uint8_t leaf[32], uint64_t i, const uint8_t *siblings,
                     unsigned depth, const uint8_t root[32]) {
    uint8_t top[32];
    nm_merkle_fold(alg, leaf, i, siblings, depth, top);
    return memcmp(top, root, 32) == 0;
}
