/* P-256 signs through OpenSSL's EC_KEY directly (no per-call provider dispatch);
 * secp256k1 and Ed25519 sign with libsecp256k1 and libsodium on raw keys. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "sign.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sodium.h>

#include "parallel.h"

struct nm_signer {
    nm_key_kind kind;
    EC_KEY *p256;
    BIGNUM *p256_half_order; /* signatures with S above this are flipped to n - S */
    /* secp256k1: the 32-byte secret scalar; Ed25519: libsodium's 64-byte secret key. */
    uint8_t secret[crypto_sign_SECRETKEYBYTES];
    uint8_t *public_der;
    size_t public_len;
    uint8_t *private_der;
    size_t private_len;
};

void nm_signer_free(nm_signer *signer) {
    if (signer == NULL) return;
    EC_KEY_free(signer->p256);
    BN_free(signer->p256_half_order);
    sodium_memzero(signer->secret, sizeof signer->secret);
    free(signer->public_der);
    if (signer->private_der != NULL) sodium_memzero(signer->private_der, signer->private_len);
    free(signer->private_der);
    free(signer);
}

static uint8_t *copy_bytes(const uint8_t *data, size_t len) {
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy != NULL && len > 0) memcpy(copy, data, len);
    return copy;
}

/* The key's public half is the one its private half gives: a PKCS#8 key may
 * carry a public key of its own, which OpenSSL takes as it is, and that is the
 * key we would hand out for our signatures. */
static int key_pair_matches(EVP_PKEY *pkey) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = ctx != NULL && EVP_PKEY_pairwise_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/* Pulls what each kind's signing library needs out of the parsed key. */
static nm_status load_secret(nm_signer *signer, EVP_PKEY *pkey) {
    if (signer->kind != NM_KEY_NONE && !key_pair_matches(pkey)) return NM_ERR_KEY_INVALID;
    switch (signer->kind) {
    case NM_KEY_P256: {
        signer->p256 = EVP_PKEY_get1_EC_KEY(pkey);
        if (signer->p256 == NULL) return NM_ERR_KEY_INVALID;
        const BIGNUM *order = EC_GROUP_get0_order(EC_KEY_get0_group(signer->p256));
        signer->p256_half_order = BN_new();
        if (signer->p256_half_order == NULL) return NM_ERR_NO_MEMORY;
        if (order == NULL || !BN_rshift1(signer->p256_half_order, order)) return NM_ERR_KEY_INVALID;
        return NM_OK;
    }
    case NM_KEY_SECP256K1: {
        BIGNUM *scalar = NULL;
        int ok = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &scalar) &&
                 BN_bn2binpad(scalar, signer->secret, 32) == 32 &&
                 secp256k1_ec_seckey_verify(nm_secp256k1(), signer->secret);
        BN_clear_free(scalar);
        return ok ? NM_OK : NM_ERR_KEY_INVALID;
    }
    case NM_KEY_ED25519: {
        uint8_t seed[crypto_sign_SEEDBYTES], public_key[crypto_sign_PUBLICKEYBYTES];
        size_t seed_len = sizeof seed;
        int ok = EVP_PKEY_get_raw_private_key(pkey, seed, &seed_len) && seed_len == sizeof seed &&
                 crypto_sign_seed_keypair(public_key, signer->secret, seed) == 0;
        sodium_memzero(seed, sizeof seed);
        return ok ? NM_OK : NM_ERR_KEY_INVALID;
    }
    default:
        return NM_ERR_KEY_TYPE;
    }
}

nm_status nm_signer_new(const uint8_t *pkcs8, size_t len, nm_signer **out) {
    *out = NULL;
    if (nm_sig_init() != NM_OK) return NM_ERR_INIT;
    if (pkcs8 == NULL || len == 0 || len > LONG_MAX) return NM_ERR_KEY_FORMAT;

    const unsigned char *p = pkcs8;
    PKCS8_PRIV_KEY_INFO *info = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    EVP_PKEY *pkey = NULL;
    unsigned char *public_der = NULL;
    nm_signer *signer = NULL;
    nm_status status = NM_ERR_KEY_FORMAT;
    if (info == NULL || p != pkcs8 + len) goto done;
    pkey = EVP_PKCS82PKEY(info);
    if (pkey == NULL) goto done;

    status = NM_ERR_NO_MEMORY;
    signer = calloc(1, sizeof *signer);
    if (signer == NULL) goto done;
    signer->kind = nm_evp_key_kind(pkey);
    status = load_secret(signer, pkey);
    if (status != NM_OK) goto done;
    status = NM_ERR_KEY_INVALID; /* no public key can be derived from it */
    int public_len = i2d_PUBKEY(pkey, &public_der);
    if (public_len <= 0) goto done;
    status = NM_ERR_NO_MEMORY;
    signer->public_len = (size_t)public_len;
    signer->public_der = copy_bytes(public_der, signer->public_len);
    signer->private_len = len;
    signer->private_der = copy_bytes(pkcs8, len);
    if (signer->public_der == NULL || signer->private_der == NULL) goto done;
    status = NM_OK;
    *out = signer;
    signer = NULL;
done:
    nm_signer_free(signer);
    OPENSSL_free(public_der);
    EVP_PKEY_free(pkey);
    PKCS8_PRIV_KEY_INFO_free(info);
    ERR_clear_error();
    return status;
}

nm_key_kind nm_signer_kind(const nm_signer *signer) { return signer->kind; }

const uint8_t *nm_signer_public_der(const nm_signer *signer, size_t *len) {
    *len = signer->public_len;
    return signer->public_der;
}

const uint8_t *nm_signer_private_der(const nm_signer *signer, size_t *len) {
    *len = signer->private_len;
    return signer->private_der;
}

/* --- signing ------------------------------------------------------------------ */

static nm_status sign_p256(const nm_signer *signer, const uint8_t digest[32], uint8_t *out,
                           size_t *out_len) {
    ECDSA_SIG *sig = ECDSA_do_sign(digest, 32, signer->p256);
    int ok = 0;
    if (sig == NULL) goto done;
    /* Low S, like libsecp256k1, so both ECDSA kinds produce the same form. */
    const BIGNUM *r = ECDSA_SIG_get0_r(sig), *s = ECDSA_SIG_get0_s(sig);
    if (BN_cmp(s, signer->p256_half_order) > 0) {
        const BIGNUM *order = EC_GROUP_get0_order(EC_KEY_get0_group(signer->p256));
        BIGNUM *new_r = BN_dup(r), *new_s = BN_new();
        if (new_r == NULL || new_s == NULL || !BN_sub(new_s, order, s) ||
            !ECDSA_SIG_set0(sig, new_r, new_s)) {
            BN_free(new_r);
            BN_free(new_s);
            goto done;
        }
    }
    int len = i2d_ECDSA_SIG(sig, NULL);
    if (len <= 0 || len > NM_SIG_MAX) goto done;
    unsigned char *p = out;
    ok = i2d_ECDSA_SIG(sig, &p) == len;
    *out_len = (size_t)len;
done:
    ECDSA_SIG_free(sig);
    if (!ok) ERR_clear_error();
    return ok ? NM_OK : NM_ERR_CRYPTO;
}

static nm_status sign_secp256k1(const nm_signer *signer, const uint8_t digest[32], uint8_t *out,
                                size_t *out_len) {
    const secp256k1_context *ctx = nm_secp256k1();
    secp256k1_ecdsa_signature sig; /* RFC 6979 nonce, always low S */
    *out_len = NM_SIG_MAX;
    int ok = secp256k1_ecdsa_sign(ctx, &sig, digest, signer->secret, NULL, NULL) &&
             secp256k1_ecdsa_signature_serialize_der(ctx, out, out_len, &sig);
    return ok ? NM_OK : NM_ERR_CRYPTO;
}

nm_status nm_sign(const nm_signer *signer, const uint8_t *msg, size_t msg_len,
                  uint8_t out[NM_SIG_MAX], size_t *out_len) {
    static const uint8_t empty = 0;
    uint8_t digest[32];
    nm_status status = NM_ERR_CRYPTO;
    *out_len = 0;
    if (msg == NULL && msg_len != 0) return NM_ERR_CRYPTO;
    if (msg == NULL) msg = &empty;
    switch (signer->kind) {
    case NM_KEY_P256:
        status = nm_ecdsa_digest(msg, msg_len, digest);
        if (status == NM_OK) status = sign_p256(signer, digest, out, out_len);
        break;
    case NM_KEY_SECP256K1:
        status = nm_ecdsa_digest(msg, msg_len, digest);
        if (status == NM_OK) status = sign_secp256k1(signer, digest, out, out_len);
        break;
    case NM_KEY_ED25519: {
        unsigned long long sig_len = 0;
        if (crypto_sign_detached(out, &sig_len, msg, msg_len, signer->secret) == 0) {
            *out_len = (size_t)sig_len;
            status = NM_OK;
        }
        break;
    }
    default:
        break;
    }
    if (status != NM_OK) *out_len = 0;
    return status;
}

typedef struct {
    const nm_signer *signer;
    const uint8_t *const *msgs;
    const size_t *msg_lens;
    uint8_t *out;
    size_t *out_lens;
} sign_batch_ctx;

static void sign_chunk(void *arg, size_t begin, size_t end) {
    const sign_batch_ctx *batch = arg;
    for (size_t i = begin; i < end; i++) /* a failure leaves out_lens[i] = 0 */
        nm_sign(batch->signer, batch->msgs[i], batch->msg_lens[i], batch->out + i * NM_SIG_MAX,
                &batch->out_lens[i]);
}

nm_status nm_sign_many(const nm_signer *signer, const uint8_t *const *msgs,
                       const size_t *msg_lens, size_t n, int threads, uint8_t *out,
                       size_t *out_lens) {
    sign_batch_ctx batch = {signer, msgs, msg_lens, out, out_lens};
    nm_parallel_for(n, nm_parallel_threads(n, threads), sign_chunk, &batch);
    for (size_t i = 0; i < n; i++)
        if (out_lens[i] == 0) return NM_ERR_CRYPTO;
    return NM_OK;
}

/* --- key generation ------------------------------------------------------------ */

nm_status nm_generate_private_key(int kind, uint8_t out[NM_PKCS8_MAX], size_t *out_len) {
    *out_len = 0;
    if (kind < 0 || kind >= NM_KEY_KIND_COUNT) return NM_ERR_KIND;
    if (nm_sig_init() != NM_OK) return NM_ERR_INIT;
    EVP_PKEY *pkey = NULL;
    switch ((nm_key_kind)kind) {
    case NM_KEY_P256: pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); break;
    case NM_KEY_SECP256K1: pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"); break;
    default: pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"); break;
    }
    PKCS8_PRIV_KEY_INFO *info = pkey != NULL ? EVP_PKEY2PKCS8(pkey) : NULL;
    int len = info != NULL ? i2d_PKCS8_PRIV_KEY_INFO(info, NULL) : 0;
    if (len > 0 && len <= NM_PKCS8_MAX) {
        unsigned char *p = out;
        if (i2d_PKCS8_PRIV_KEY_INFO(info, &p) == len) *out_len = (size_t)len;
    }
    PKCS8_PRIV_KEY_INFO_free(info);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return *out_len > 0 ? NM_OK : NM_ERR_CRYPTO;
}
