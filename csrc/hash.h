/* The hash suite of a channel, chosen by a small int (nm_alg). Everything above
 * this file names the suite only through nm_alg. Results: see status.h. */
#ifndef NANOMONI_HASH_H
#define NANOMONI_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum {
    NM_SHA256 = 0,
    NM_BLAKE3 = 1,
    NM_ALG_COUNT /* not a suite: how many there are */
} nm_alg;

/* Predicate: alg names a suite. */
int nm_alg_valid(int alg);

/* H(data) into out. NM_OK or NM_ERR_ALG. */
nm_status nm_hash(int alg, const uint8_t *data, size_t len, uint8_t out[32]);

/* H(in) for a 32-byte input; out may alias in. alg must be valid (checked by the caller). */
void nm_hash32(nm_alg alg, const uint8_t in[32], uint8_t out[32]);

/* H(left || right); out may alias either input. alg must be valid. */
void nm_hash_pair(nm_alg alg, const uint8_t left[32], const uint8_t right[32], uint8_t out[32]);

/* H applied n times to a 32-byte input; in and out may alias. alg must be valid. */
void nm_hash_iterate(nm_alg alg, const uint8_t in[32], uint64_t n, uint8_t out[32]);

/* H applied n >= 1 times to an input of any length, into out. n = 0 is
 * NM_ERR_RANGE: the result would be the input itself, which need not be 32
 * bytes. NM_OK, NM_ERR_ALG or NM_ERR_RANGE. */
nm_status nm_hash_n(int alg, const uint8_t *data, size_t len, uint64_t n, uint8_t out[32]);

#endif
