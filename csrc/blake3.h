/* BLAKE3 in its plain hash mode (no key, no key derivation), 32-byte output,
 * inputs of any length; the fixed-size entry points are single compressions. */
#ifndef NANOMONI_BLAKE3_H
#define NANOMONI_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

/* BLAKE3 of any input. */
void nm_blake3(const uint8_t *data, size_t len, uint8_t out[32]);

/* BLAKE3 of exactly 32 bytes (a PayWord step): one compression. */
void nm_blake3_32(const uint8_t in[32], uint8_t out[32]);

/* BLAKE3 of left || right, 32 bytes each (a Merkle node): one compression. */
void nm_blake3_pair(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/* in hashed n times into out; in and out may alias. */
void nm_blake3_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]);

#endif
