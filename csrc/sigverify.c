/* P-256 goes through OpenSSL's EC_KEY directly: it skips the provider dispatch
 * and its locks that each EVP_PKEY_CTX would cost per verification. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "sigverify.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "parallel.h"

/* A parsed public key, shared by the cache and the verifiers using it. */
typedef struct {
    int refs; /* atomic: one for the cache slot, one per verifier holding it */
    nm_key_kind kind;
    size_t der_len;
    uint8_t *der;
    EC_KEY *p256;
    secp256k1_pubkey secp256k1;
    uint8_t ed25519[crypto_sign_PUBLICKEYBYTES];
} nm_pubkey;

static void pubkey_release(nm_pubkey *key) {
    if (key == NULL || __atomic_sub_fetch(&key->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    EC_KEY_free(key->p256);
    free(key->der);
    free(key);
}

/* Predicate: der is exactly how OpenSSL writes the key it parsed from it.
 * OpenSSL's parser lets some non-DER slip through (e.g. unused bits in the
 * key's BIT STRING); refusing those keeps one encoding per key (and per
 * point form), as for signatures. */
static int is_canonical(EVP_PKEY *pkey, const uint8_t *der, size_t len) {
    unsigned char *encoded = NULL;
    int encoded_len = i2d_PUBKEY(pkey, &encoded);
    int same = encoded_len > 0 && (size_t)encoded_len == len && memcmp(encoded, der, len) == 0;
    OPENSSL_free(encoded);
    return same;
}

/* Parses a SubjectPublicKeyInfo into a fresh key holding one reference. */
static nm_pubkey *pubkey_parse(const uint8_t *der, size_t len) {
    if (der == NULL || len == 0 || len > LONG_MAX) return NULL;
    const unsigned char *p = der;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
    nm_pubkey *key = NULL;
    if (pkey == NULL || p != der + len || !is_canonical(pkey, der, len)) goto done;
    key = calloc(1, sizeof *key);
    if (key == NULL) goto done;
    key->refs = 1;
    key->kind = nm_evp_key_kind(pkey);
    key->der_len = len;
    key->der = malloc(len);
    int ok = key->der != NULL;
    if (ok) memcpy(key->der, der, len);
    uint8_t point[65];
    size_t point_len = 0;
    switch (ok ? key->kind : NM_KEY_NONE) {
    case NM_KEY_P256:
        key->p256 = EVP_PKEY_get1_EC_KEY(pkey);
        ok = key->p256 != NULL;
        break;
    case NM_KEY_SECP256K1:
        ok = EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                             sizeof point, &point_len) &&
             secp256k1_ec_pubkey_parse(nm_secp256k1(), &key->secp256k1, point, point_len);
        break;
    case NM_KEY_ED25519: {
        size_t raw_len = sizeof key->ed25519;
        ok = EVP_PKEY_get_raw_public_key(pkey, key->ed25519, &raw_len) &&
             raw_len == sizeof key->ed25519;
        break;
    }
    default:
        ok = 0;
    }
    if (!ok) {
        pubkey_release(key);
        key = NULL;
    }
done:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return key;
}

/* --- the cache: direct-mapped slots indexed by a keyed hash of the DER bytes -- */

static nm_pubkey *cache_slots[NM_KEY_CACHE_SLOTS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
/* Random so that nobody can pick keys that keep evicting each other. */
static unsigned char cache_hash_key[crypto_shorthash_KEYBYTES];

static void cache_init(void) { randombytes_buf(cache_hash_key, sizeof cache_hash_key); }

static size_t cache_slot(const uint8_t *der, size_t len) {
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, der, len, cache_hash_key);
    return (size_t)(h % NM_KEY_CACHE_SLOTS);
}

static int same_der(const nm_pubkey *key, const uint8_t *der, size_t len) {
    return key->der_len == len && memcmp(key->der, der, len) == 0;
}

/* The parsed key for `der` with one reference for the caller, or NULL. */
static nm_pubkey *pubkey_acquire(const uint8_t *der, size_t len) {
    if (der == NULL || len == 0 || nm_sig_init() != NM_OK) return NULL;
    pthread_once(&cache_once, cache_init);
    size_t slot = cache_slot(der, len);

    pthread_mutex_lock(&cache_lock);
    nm_pubkey *key = cache_slots[slot];
    if (key != NULL && same_der(key, der, len))
        __atomic_add_fetch(&key->refs, 1, __ATOMIC_RELAXED);
    else
        key = NULL;
    pthread_mutex_unlock(&cache_lock);
    if (key != NULL) return key;

    /* Parse outside the lock; malformed keys are not cached. */
    key = pubkey_parse(der, len);
    if (key == NULL) return NULL;
    __atomic_add_fetch(&key->refs, 1, __ATOMIC_RELAXED); /* the cache's reference */
    pthread_mutex_lock(&cache_lock);
    nm_pubkey *evicted = cache_slots[slot];
    cache_slots[slot] = key;
    pthread_mutex_unlock(&cache_lock);
    pubkey_release(evicted);
    return key;
}

nm_key_kind nm_public_key_kind(const uint8_t *der, size_t len) {
    nm_pubkey *key = pubkey_acquire(der, len);
    nm_key_kind kind = key != NULL ? key->kind : NM_KEY_NONE;
    pubkey_release(key);
    return kind;
}

/* --- verification ------------------------------------------------------------ */

static int verify_p256(const nm_pubkey *key, const nm_sig_item *item) {
    uint8_t digest[32];
    if (item->sig_len > NM_SIG_MAX || nm_ecdsa_digest(item->msg, item->msg_len, digest) != NM_OK)
        return 0;
    /* ECDSA_verify insists on canonical DER and accepts both low and high S. */
    int ok = ECDSA_verify(0, digest, sizeof digest, item->sig, (int)item->sig_len, key->p256) == 1;
    if (!ok) ERR_clear_error();
    return ok;
}

static int verify_secp256k1(const nm_pubkey *key, const nm_sig_item *item) {
    const secp256k1_context *ctx = nm_secp256k1();
    secp256k1_ecdsa_signature sig;
    uint8_t digest[32], canonical[NM_SIG_MAX];
    size_t canonical_len = sizeof canonical;
    if (item->sig_len > NM_SIG_MAX ||
        !secp256k1_ecdsa_signature_parse_der(ctx, &sig, item->sig, item->sig_len))
        return 0;
    /* Same strictness as OpenSSL: only the canonical DER encoding is accepted. */
    if (!secp256k1_ecdsa_signature_serialize_der(ctx, canonical, &canonical_len, &sig) ||
        canonical_len != item->sig_len || memcmp(canonical, item->sig, canonical_len) != 0)
        return 0;
    /* libsecp256k1 only verifies low-S; high-S signatures are equally valid here. */
    secp256k1_ecdsa_signature_normalize(ctx, &sig, &sig);
    if (nm_ecdsa_digest(item->msg, item->msg_len, digest) != NM_OK) return 0;
    return secp256k1_ecdsa_verify(ctx, &sig, digest, &key->secp256k1);
}

static int verify_ed25519(const nm_pubkey *key, const nm_sig_item *item) {
    static const uint8_t empty = 0;
    if (item->sig_len != crypto_sign_BYTES) return 0;
    const uint8_t *msg = item->msg != NULL ? item->msg : &empty;
    return crypto_sign_verify_detached(item->sig, msg, item->msg_len, key->ed25519) == 0;
}

static int verify_with(const nm_pubkey *key, const nm_sig_item *item) {
    if (item->sig == NULL || (item->msg == NULL && item->msg_len != 0)) return 0;
    switch (key->kind) {
    case NM_KEY_P256: return verify_p256(key, item);
    case NM_KEY_SECP256K1: return verify_secp256k1(key, item);
    case NM_KEY_ED25519: return verify_ed25519(key, item);
    default: return 0;
    }
}

int nm_verify_one(const nm_sig_item *item) {
    nm_pubkey *key = pubkey_acquire(item->key, item->key_len);
    int ok = key != NULL && verify_with(key, item);
    pubkey_release(key);
    return ok;
}

typedef struct {
    const nm_sig_item *items;
    uint8_t *out;
} verify_batch_ctx;

static void verify_chunk(void *arg, size_t begin, size_t end) {
    const verify_batch_ctx *batch = arg;
    nm_pubkey *key = NULL; /* runs of items by one key skip the cache lookup */
    for (size_t i = begin; i < end; i++) {
        const nm_sig_item *item = &batch->items[i];
        if (item->key == NULL) {
            batch->out[i] = 0;
            continue;
        }
        if (key == NULL || !same_der(key, item->key, item->key_len)) {
            pubkey_release(key);
            key = pubkey_acquire(item->key, item->key_len);
        }
        batch->out[i] = key != NULL && verify_with(key, item);
    }
    pubkey_release(key);
}

void nm_verify_batch(const nm_sig_item *items, size_t n, int threads, uint8_t *out) {
    verify_batch_ctx batch = {items, out};
    nm_parallel_for(n, nm_parallel_threads(n, threads), verify_chunk, &batch);
}
