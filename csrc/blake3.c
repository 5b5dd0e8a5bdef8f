/* Written from the BLAKE3 specification: the compression function is seven
 * rounds of the ChaCha-style G mixing over a 16-word state, with the message
 * words permuted between rounds; inputs are split into 1024-byte chunks of
 * chained 64-byte blocks, and chunks are combined by a binary tree of parent
 * nodes. */
#include "blake3.h"

#include <string.h>

enum {
    CHUNK_START = 1u << 0,
    CHUNK_END = 1u << 1,
    PARENT = 1u << 2,
    ROOT = 1u << 3,
};

#define BLOCK_LEN 64
#define CHUNK_LEN 1024

static const uint32_t IV[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* The message permutation applied 0..6 times: word order of each round. */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load_le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store_le(uint8_t *p, uint32_t w) {
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

#define G(a, b, c, d, x, y)              \
    do {                                 \
        v[a] = v[a] + v[b] + (x);        \
        v[d] = rotr(v[d] ^ v[a], 16);    \
        v[c] = v[c] + v[d];              \
        v[b] = rotr(v[b] ^ v[c], 12);    \
        v[a] = v[a] + v[b] + (y);        \
        v[d] = rotr(v[d] ^ v[a], 8);     \
        v[c] = v[c] + v[d];              \
        v[b] = rotr(v[b] ^ v[c], 7);     \
    } while (0)

/* Compresses one block into cv; only the first 8 output words are kept,
 * which is all a chaining value or a 32-byte digest needs. */
static inline void compress(uint32_t cv[8], const uint32_t m[16], uint64_t counter,
                            uint32_t block_len, uint32_t flags) {
    uint32_t v[16] = {
        cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
        IV[0], IV[1], IV[2], IV[3], (uint32_t)counter, (uint32_t)(counter >> 32), block_len, flags,
    };
    /* Rounds written out with constant schedule rows, so every message word
     * and state word can live in a register. */
#define ROUND(r)                                                     \
    do {                                                             \
        G(0, 4, 8, 12, m[SCHEDULE[r][0]], m[SCHEDULE[r][1]]);        \
        G(1, 5, 9, 13, m[SCHEDULE[r][2]], m[SCHEDULE[r][3]]);        \
        G(2, 6, 10, 14, m[SCHEDULE[r][4]], m[SCHEDULE[r][5]]);       \
        G(3, 7, 11, 15, m[SCHEDULE[r][6]], m[SCHEDULE[r][7]]);       \
        G(0, 5, 10, 15, m[SCHEDULE[r][8]], m[SCHEDULE[r][9]]);       \
        G(1, 6, 11, 12, m[SCHEDULE[r][10]], m[SCHEDULE[r][11]]);     \
        G(2, 7, 8, 13, m[SCHEDULE[r][12]], m[SCHEDULE[r][13]]);      \
        G(3, 4, 9, 14, m[SCHEDULE[r][14]], m[SCHEDULE[r][15]]);      \
    } while (0)
    ROUND(0);
    ROUND(1);
    ROUND(2);
    ROUND(3);
    ROUND(4);
    ROUND(5);
    ROUND(6);
#undef ROUND
    for (int i = 0; i < 8; i++) cv[i] = v[i] ^ v[i + 8];
}

static inline void load_block(uint32_t m[16], const uint8_t *bytes, size_t len) {
    uint8_t block[BLOCK_LEN] = {0};
    memcpy(block, bytes, len);
    for (int i = 0; i < 16; i++) m[i] = load_le(block + 4 * i);
}

static inline void store_cv(const uint32_t cv[8], uint8_t out[32]) {
    for (int i = 0; i < 8; i++) store_le(out + 4 * i, cv[i]);
}

/* The chaining value of chunk number `counter` (len <= CHUNK_LEN bytes; 0
 * only for empty input); last_flags is added to its last block's flags. */
static void chunk_cv(const uint8_t *data, size_t len, uint64_t counter, uint32_t last_flags,
                     uint32_t cv[8]) {
    uint32_t m[16];
    memcpy(cv, IV, sizeof IV);
    size_t blocks = len == 0 ? 1 : (len + BLOCK_LEN - 1) / BLOCK_LEN;
    for (size_t b = 0; b < blocks; b++) {
        size_t offset = b * BLOCK_LEN;
        size_t block_len = len - offset < BLOCK_LEN ? len - offset : BLOCK_LEN;
        uint32_t flags = b == 0 ? CHUNK_START : 0;
        if (b == blocks - 1) flags |= CHUNK_END | last_flags;
        load_block(m, data + offset, block_len);
        compress(cv, m, counter, (uint32_t)block_len, flags);
    }
}

/* right = the parent node of left and right. */
static void parent_cv(const uint32_t left[8], uint32_t right[8], uint32_t flags) {
    uint32_t m[16];
    memcpy(m, left, 32);
    memcpy(m + 8, right, 32);
    memcpy(right, IV, sizeof IV);
    compress(right, m, 0, BLOCK_LEN, PARENT | flags);
}

void nm_blake3(const uint8_t *data, size_t len, uint8_t out[32]) {
    static const uint8_t empty[1] = {0};
    uint32_t cv[8];
    if (len <= CHUNK_LEN) {
        chunk_cv(len == 0 ? empty : data, len, 0, ROOT, cv);
        store_cv(cv, out);
        return;
    }
    /* Several chunks form a binary tree whose left subtrees are complete. The
     * stack holds the roots of finished complete subtrees, largest first: after
     * chunk number c (counting from 1), one merge per trailing zero bit of c. */
    uint32_t stack[64][8];
    unsigned depth = 0;
    uint64_t chunks = (len + CHUNK_LEN - 1) / CHUNK_LEN;
    for (uint64_t c = 0; c + 1 < chunks; c++) {
        chunk_cv(data + c * CHUNK_LEN, CHUNK_LEN, c, 0, cv);
        for (uint64_t done = c + 1; (done & 1) == 0; done >>= 1) parent_cv(stack[--depth], cv, 0);
        memcpy(stack[depth++], cv, 32);
    }
    /* The last chunk, then every pending subtree on its left; the top is the root. */
    chunk_cv(data + (chunks - 1) * CHUNK_LEN, len - (chunks - 1) * CHUNK_LEN, chunks - 1, 0, cv);
    while (depth > 0) {
        depth--;
        parent_cv(stack[depth], cv, depth == 0 ? ROOT : 0);
    }
    store_cv(cv, out);
}

void nm_blake3_32(const uint8_t in[32], uint8_t out[32]) {
    nm_blake3_iterate(in, 1, out);
}

void nm_blake3_pair(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]) {
    uint32_t cv[8], m[16];
    memcpy(cv, IV, sizeof IV);
    for (int i = 0; i < 8; i++) {
        m[i] = load_le(left + 4 * i);
        m[i + 8] = load_le(right + 4 * i);
    }
    compress(cv, m, 0, 64, CHUNK_START | CHUNK_END | ROOT);
    store_cv(cv, out);
}

void nm_blake3_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]) {
    /* The digest words feed the next message directly: no byte round trip. */
    uint32_t cv[8], m[16] = {0};
    for (int i = 0; i < 8; i++) m[i] = load_le(in + 4 * i);
    for (uint64_t step = 0; step < n; step++) {
        memcpy(cv, IV, sizeof IV);
        compress(cv, m, 0, 32, CHUNK_START | CHUNK_END | ROOT);
        memcpy(m, cv, sizeof cv);
    }
    store_cv(m, out);
}
