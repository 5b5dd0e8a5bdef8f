/* Signature verification: SPKI public keys parsed once into a bounded,
 * thread-safe cache, then verified one at a time or as a threaded batch.
 * Results: see status.h. */
#ifndef NANOMONI_SIGVERIFY_H
#define NANOMONI_SIGVERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "sigkeys.h"

/* Distinct public keys kept parsed at once. */
#define NM_KEY_CACHE_SLOTS 4096

typedef struct {
    const uint8_t *key; /* DER SubjectPublicKeyInfo; NULL marks an unusable item */
    size_t key_len;
    const uint8_t *msg;
    size_t msg_len;
    const uint8_t *sig; /* NULL marks an unusable item */
    size_t sig_len;
} nm_sig_item;

/* The nm_key_kind of a DER SubjectPublicKeyInfo (NM_KEY_NONE if unsupported or
 * malformed, including trailing bytes and any encoding but canonical DER;
 * compressed and uncompressed EC points are both fine). */
nm_key_kind nm_public_key_kind(const uint8_t *der, size_t len);

/* Predicate: the signature is valid (anything malformed is simply not valid). */
int nm_verify_one(const nm_sig_item *item);

/* out[i] = nm_verify_one(&items[i]); `threads` as in nm_parallel_threads. */
void nm_verify_batch(const nm_sig_item *items, size_t n, int threads, uint8_t *out);

#endif
