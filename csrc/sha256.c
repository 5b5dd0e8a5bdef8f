#include "sha256.h"

#include <string.h>

#include <openssl/sha.h>

static const uint32_t SHA256_IV[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* The padding block after a 64-byte message: 0x80, zeros, bit length 512. */
static const uint8_t PAD_AFTER_64[64] = {
    0x80, [62] = 0x02, [63] = 0x00,
};

static inline void start(SHA256_CTX *ctx) {
    memcpy(ctx->h, SHA256_IV, sizeof SHA256_IV);
}

static inline void store_state(const SHA256_CTX *ctx, uint8_t out[32]) {
    for (int i = 0; i < 8; i++) {
        uint32_t w = ctx->h[i];
        out[4 * i + 0] = (uint8_t)(w >> 24);
        out[4 * i + 1] = (uint8_t)(w >> 16);
        out[4 * i + 2] = (uint8_t)(w >> 8);
        out[4 * i + 3] = (uint8_t)w;
    }
}

/* A block holding a 32-byte message in its first half and its padding
 * (0x80, zeros, bit length 256) in the second. */
static inline void init_block_32(uint8_t block[64]) {
    memset(block + 32, 0, 32);
    block[32] = 0x80;
    block[62] = 0x01; /* 256 = 0x0100 */
}

void nm_sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, data, len);
    SHA256_Final(out, &ctx);
}

void nm_sha256_32(const uint8_t in[32], uint8_t out[32]) {
    uint8_t block[64];
    SHA256_CTX ctx;
    memcpy(block, in, 32);
    init_block_32(block);
    start(&ctx);
    SHA256_Transform(&ctx, block);
    store_state(&ctx, out);
}

void nm_sha256_pair(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]) {
    uint8_t block[64];
    SHA256_CTX ctx;
    memcpy(block, left, 32);
    memcpy(block + 32, right, 32);
    start(&ctx);
    SHA256_Transform(&ctx, block);
    SHA256_Transform(&ctx, PAD_AFTER_64);
    store_state(&ctx, out);
}

void nm_sha256_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]) {
    uint8_t block[64];
    SHA256_CTX ctx;
    memcpy(block, in, 32);
    init_block_32(block);
    /* Each step's digest becomes the next step's message; the padding half
     * of the block never changes. */
    for (uint64_t step = 0; step < n; step++) {
        start(&ctx);
        SHA256_Transform(&ctx, block);
        store_state(&ctx, block);
    }
    memcpy(out, block, 32);
}
