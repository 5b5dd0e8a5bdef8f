/* PayTree Merkle trees (SPEC §5.3). Leaves are padded to the next power of
 * two by repeating the last leaf, node(l+1, p) = H(node(l, 2p) || node(l, 2p+1)),
 * depth = bit_length(leaf_count - 1).
 *
 * Storage: all levels lie in one allocation, level 0 first. A level keeps only
 * the nodes that cover at least one real leaf; every node to their right
 * covers padding only, so they all equal one value per level (pad[l]). This
 * stores about 2 * leaf_count nodes instead of 2 * next_power_of_two.
 * Results: see status.h. */
#ifndef NANOMONI_MERKLE_H
#define NANOMONI_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h"

#define NM_MERKLE_MAX_DEPTH 64

typedef struct {
    nm_alg alg;
    unsigned depth;
    uint64_t leaf_count;
    uint64_t stored[NM_MERKLE_MAX_DEPTH + 1];  /* nodes kept at each level */
    uint64_t offset[NM_MERKLE_MAX_DEPTH + 1];  /* index of each level's first node */
    uint8_t pad[NM_MERKLE_MAX_DEPTH + 1][32];  /* the all-padding node of each level */
    uint8_t *nodes;                            /* 32 bytes per node */
} nm_merkle;

/* Sizes the tree for leaf_count >= 1 leaves and allocates its nodes; the
 * caller then writes the leaves (or secrets) into nm_merkle_level0 and calls
 * nm_merkle_build. NM_OK, NM_ERR_RANGE or NM_ERR_NO_MEMORY; after NM_OK
 * nm_merkle_free must be called. alg must be valid. */
nm_status nm_merkle_alloc(nm_merkle *tree, nm_alg alg, uint64_t leaf_count);

/* Where the leaf_count * 32 bytes of leaves go before nm_merkle_build. */
uint8_t *nm_merkle_level0(nm_merkle *tree);

/* Hashes the upper levels; with from_secrets, first replaces each level-0
 * entry (a secret) by its hash (the leaf). Levels of at least
 * NM_PARALLEL_MIN_HASHES nodes are hashed on all cores. */
void nm_merkle_build(nm_merkle *tree, int from_secrets);

/* node(level, pos); the caller checks that it exists with nm_merkle_has_node. */
const uint8_t *nm_merkle_node(const nm_merkle *tree, unsigned level, uint64_t pos);

/* Predicate: level <= depth and pos < 2^(depth - level). */
int nm_merkle_has_node(const nm_merkle *tree, unsigned level, uint64_t pos);

/* The depth siblings of leaf i < leaf_count, level 0 first, into out
 * (depth * 32 bytes). */
void nm_merkle_proof(const nm_merkle *tree, uint64_t i, uint8_t *out);

void nm_merkle_free(nm_merkle *tree);

/* Folds leaf i up through count <= 64 siblings (count * 32 bytes packed):
 * at level l, cur = H(cur || sib) if bit l of i is 0, else H(sib || cur).
 * out receives node(count, i >> count). alg must be valid. */
void nm_merkle_fold(nm_alg alg, const uint8_t leaf[32], uint64_t i, const uint8_t *siblings,
                    unsigned count, uint8_t out[32]);

/* Predicate: folding leaf i through the depth siblings gives root. */
int nm_merkle_verify(nm_alg alg, const uint8_t leaf[32], uint64_t i, const uint8_t *siblings,
                     unsigned depth, const uint8_t root[32]);

#endif
