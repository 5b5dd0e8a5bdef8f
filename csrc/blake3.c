/* Written from the BLAKE3 specification: the compression function is seven
 * rounds of the ChaCha-style G mixing over a 16-word state, with the message
 * words permuted between rounds. */
#include "blake3.h"

#include <string.h>

enum {
    CHUNK_START = 1u << 0,
    CHUNK_END = 1u << 1,
    ROOT = 1u << 3,
};

#define BLOCK_LEN 64

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

/* Compresses one block into cv (chunk counter 0); only the first 8 output
 * words are kept, which is all a chaining value or a 32-byte digest needs. */
static inline void compress(uint32_t cv[8], const uint32_t m[16], uint32_t block_len, uint32_t flags) {
    uint32_t v[16] = {
        cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
        IV[0], IV[1], IV[2], IV[3], 0, 0, block_len, flags,
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

int nm_blake3(const uint8_t *data, size_t len, uint8_t out[32]) {
    if (len > NM_BLAKE3_MAX_INPUT) return -1;
    uint32_t cv[8], m[16];
    memcpy(cv, IV, sizeof IV);
    /* At least one block, even for empty input; the last may be partial. */
    size_t blocks = len == 0 ? 1 : (len + BLOCK_LEN - 1) / BLOCK_LEN;
    for (size_t b = 0; b < blocks; b++) {
        size_t offset = b * BLOCK_LEN;
        size_t block_len = len - offset < BLOCK_LEN ? len - offset : BLOCK_LEN;
        uint32_t flags = 0;
        if (b == 0) flags |= CHUNK_START;
        if (b == blocks - 1) flags |= CHUNK_END | ROOT;
        load_block(m, data == NULL ? (const uint8_t *)"" : data + offset, block_len);
        compress(cv, m, (uint32_t)block_len, flags);
    }
    store_cv(cv, out);
    return 0;
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
    compress(cv, m, 64, CHUNK_START | CHUNK_END | ROOT);
    store_cv(cv, out);
}

void nm_blake3_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]) {
    /* The digest words feed the next message directly: no byte round trip. */
    uint32_t cv[8], m[16] = {0};
    for (int i = 0; i < 8; i++) m[i] = load_le(in + 4 * i);
    for (uint64_t step = 0; step < n; step++) {
        memcpy(cv, IV, sizeof IV);
        compress(cv, m, 32, CHUNK_START | CHUNK_END | ROOT);
        memcpy(m, cv, sizeof cv);
    }
    store_cv(m, out);
}
