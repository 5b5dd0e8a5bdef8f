/* BLAKE3 (hash mode, 32-byte output) for inputs of one chunk: at most
 * 1024 bytes, i.e. up to 16 compressions chained inside a single chunk that
 * is also the root. Longer inputs need the tree mode, which is not built. */
#ifndef NANOMONI_BLAKE3_H
#define NANOMONI_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define NM_BLAKE3_MAX_INPUT 1024

/* BLAKE3 of len <= NM_BLAKE3_MAX_INPUT bytes; returns 0, or -1 if too long. */
int nm_blake3(const uint8_t *data, size_t len, uint8_t out[32]);

/* BLAKE3 of exactly 32 bytes (a PayWord step): one compression. */
void nm_blake3_32(const uint8_t in[32], uint8_t out[32]);

/* BLAKE3 of left || right, 32 bytes each (a Merkle node): one compression. */
void nm_blake3_pair(const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/* in hashed n times into out; in and out may alias. */
void nm_blake3_iterate(const uint8_t in[32], uint64_t n, uint8_t out[32]);

#endif
