#include "hash.h"

#include "blake3.h"
#include "sha256.h"

int nm_alg_valid(int alg) { return alg >= 0 && alg < NM_ALG_COUNT; }

nm_status nm_hash(int alg, const uint8_t *data, size_t len, uint8_t out[32]) {
    switch (alg) {
    case NM_SHA256:
        nm_sha256(data, len, out);
        return NM_OK;
    case NM_BLAKE3:
        nm_blake3(data, len, out);
        return NM_OK;
    default:
        return NM_ERR_ALG;
    }
}

void nm_hash32(nm_alg alg, const uint8_t in[32], uint8_t out[32]) {
    if (alg == NM_BLAKE3)
        nm_blake3_32(in, out);
    else
        nm_sha256_32(in, out);
}

void nm_hash_pair(nm_alg alg, const uint8_t left[32], const uint8_t right[32], uint8_t out[32]) {
    if (alg == NM_BLAKE3)
        nm_blake3_pair(left, right, out);
    else
        nm_sha256_pair(left, right, out);
}

void nm_hash_iterate(nm_alg alg, const uint8_t in[32], uint64_t n, uint8_t out[32]) {
    if (alg == NM_BLAKE3)
        nm_blake3_iterate(in, n, out);
    else
        nm_sha256_iterate(in, n, out);
}

nm_status nm_hash_n(int alg, const uint8_t *data, size_t len, uint64_t n, uint8_t out[32]) {
    if (!nm_alg_valid(alg)) return NM_ERR_ALG;
    if (n == 0) return NM_ERR_RANGE;
    nm_status status = nm_hash(alg, data, len, out);
    if (status != NM_OK) return status;
    nm_hash_iterate((nm_alg)alg, out, n - 1, out);
    return NM_OK;
}
