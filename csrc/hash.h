/* The hash suite of a channel, chosen by a small int: 0 = SHA-256, 1 = BLAKE3.
 * Everything above this file names the suite only through nm_alg. */
#ifndef NANOMONI_HASH_H
#define NANOMONI_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef enum { NM_SHA256 = 0, NM_BLAKE3 = 1 } nm_alg;

/* Status codes shared by the core's hashing, PayWord and Merkle parts. */
enum {
    NM_OK = 0,
    NM_ERR_ALG = -1,        /* unknown alg */
    NM_ERR_NO_MEMORY = -2,
    NM_ERR_RANGE = -3,      /* a count or index outside what the function accepts */
};

/* Work below this many hashes stays on the calling thread: starting threads
 * costs about as much as a few hundred hashes. */
#define NM_PARALLEL_MIN_HASHES 16384

/* 1 if alg names a suite, else 0. */
int nm_alg_valid(int alg);

/* H(data); returns NM_OK or NM_ERR_ALG. */
int nm_hash(int alg, const uint8_t *data, size_t len, uint8_t out[32]);

/* H(in) for a 32-byte input; out may alias in. alg must be valid (checked by the caller). */
void nm_hash32(nm_alg alg, const uint8_t in[32], uint8_t out[32]);

/* H(left || right); out may alias either input. alg must be valid. */
void nm_hash_pair(nm_alg alg, const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/* H applied n times to a 32-byte input; in and out may alias. alg must be valid. */
void nm_hash_iterate(nm_alg alg, const uint8_t in[32], uint64_t n, uint8_t out[32]);

/* H applied n times to an input of any length (n = 0 is not handled here: the
 * result is then the input itself, which need not be 32 bytes).
 * Returns NM_OK or NM_ERR_ALG. */
int nm_hash_n(int alg, const uint8_t *data, size_t len, uint64_t n, uint8_t out[32]);

#endif
