/* The three signature key kinds, shared by verification and signing:
 * one-time library set-up, recognising a parsed key's kind, the ECDSA digest.
 * Results: see status.h. */
#ifndef NANOMONI_SIGKEYS_H
#define NANOMONI_SIGKEYS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <secp256k1.h>

#include "status.h"

typedef enum {
    NM_KEY_NONE = -1, /* unsupported or malformed */
    NM_KEY_P256 = 0,
    NM_KEY_SECP256K1 = 1,
    NM_KEY_ED25519 = 2,
    NM_KEY_KIND_COUNT /* not a kind: how many there are */
} nm_key_kind;

/* Longest DER ECDSA-Sig-Value for a 256-bit curve; Ed25519 signatures are 64. */
#define NM_SIG_MAX 72

/* Initialises libsodium and the shared libsecp256k1 context; safe to call from
 * any thread, any number of times. NM_OK or NM_ERR_INIT. */
nm_status nm_sig_init(void);

/* The libsecp256k1 context (randomised once, read-only afterwards, so shared by
 * all threads for verifying and signing). Valid after nm_sig_init(). */
const secp256k1_context *nm_secp256k1(void);

/* The kind of a parsed OpenSSL key, NM_KEY_NONE for any other key type or curve. */
nm_key_kind nm_evp_key_kind(const EVP_PKEY *pkey);

/* SHA-256(msg) into out. NM_OK or NM_ERR_CRYPTO. */
nm_status nm_ecdsa_digest(const uint8_t *msg, size_t len, uint8_t out[32]);

#endif
