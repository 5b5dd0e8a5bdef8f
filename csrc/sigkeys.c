/* SHA256_Init & co. are deprecated in OpenSSL 3 but take no locks (see below). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "sigkeys.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/sha.h>
#include <sodium.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static nm_status init_status = NM_ERR_INIT;
static secp256k1_context *secp_ctx;

static void init_libraries(void) {
    if (sodium_init() < 0) return;
    secp_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (secp_ctx == NULL) return;
    /* Blinding for signing, against side channels; done before any sharing. */
    unsigned char seed[32];
    randombytes_buf(seed, sizeof seed);
    int ok = secp256k1_context_randomize(secp_ctx, seed);
    sodium_memzero(seed, sizeof seed);
    if (!ok) return;
    init_status = NM_OK;
}

nm_status nm_sig_init(void) {
    pthread_once(&init_once, init_libraries);
    return init_status;
}

const secp256k1_context *nm_secp256k1(void) { return secp_ctx; }

nm_key_kind nm_evp_key_kind(const EVP_PKEY *pkey) {
    if (pkey == NULL) return NM_KEY_NONE;
    int id = EVP_PKEY_get_base_id(pkey);
    if (id == EVP_PKEY_ED25519) return NM_KEY_ED25519;
    if (id != EVP_PKEY_EC) return NM_KEY_NONE;
    /* Only named curves have a group name; explicit parameters are refused. */
    char name[64];
    size_t name_len = 0;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof name,
                                        &name_len))
        return NM_KEY_NONE;
    if (strcmp(name, "prime256v1") == 0) return NM_KEY_P256;
    if (strcmp(name, "secp256k1") == 0) return NM_KEY_SECP256K1;
    return NM_KEY_NONE;
}

nm_status nm_ecdsa_digest(const uint8_t *msg, size_t len, uint8_t out[32]) {
    /* OpenSSL 3's one-shot SHA256() and EVP_Digest fetch the algorithm on every
     * call, which takes a global lock that threads of a batch contend on; the
     * low-level functions run the same assembly without it. */
    SHA256_CTX ctx;
    int ok = SHA256_Init(&ctx) && (len == 0 || SHA256_Update(&ctx, msg, len)) &&
             SHA256_Final(out, &ctx);
    return ok ? NM_OK : NM_ERR_CRYPTO;
}
