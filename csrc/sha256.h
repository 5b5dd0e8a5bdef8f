/* SHA-256 through OpenSSL's low-level block function (SHA-NI when present).
 * The fixed-size entry points feed pre-padded blocks straight to
 * SHA256_Transform, skipping the buffering of SHA256_Update. */
#ifndef NANOMONI_SHA256_H
#define NANOMONI_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256 of any input. */
void nm_sha256(const uint8_t *data, size_t len, uint8_t out[32]);

/* SHA-256 of exactly 32 bytes (a PayWord step): one block. */
void nm_sha256_32(const uint8_t in[32], uint8_t out[32]);

/* SHA-256 of left || right, 32 bytes each (a Merkle node): two blocks,
 * the second a constant padding block. */
void nm_sha256_pair(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/* in hashed n times (n >= 1) into out; in and out may alias. */
void nm_sha256_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]);

#endif
