/* Signing: PKCS#8 private keys of the three kinds, key generation, signing one
 * message or a threaded batch. Results: see status.h. */
#ifndef NANOMONI_SIGN_H
#define NANOMONI_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "sigkeys.h"

/* Room for any PKCS#8 DER nm_generate_private_key produces. */
#define NM_PKCS8_MAX 256

typedef struct nm_signer nm_signer;

/* Parses a DER PKCS#8 PrivateKeyInfo (nothing may follow it) into *out, which
 * nm_signer_free releases; *out is NULL on failure. NM_OK, NM_ERR_INIT,
 * NM_ERR_KEY_FORMAT, NM_ERR_KEY_TYPE, NM_ERR_KEY_INVALID or NM_ERR_NO_MEMORY. */
nm_status nm_signer_new(const uint8_t *pkcs8, size_t len, nm_signer **out);
void nm_signer_free(nm_signer *signer);

nm_key_kind nm_signer_kind(const nm_signer *signer);
/* DER SubjectPublicKeyInfo, and the PKCS#8 bytes the signer was made from. */
const uint8_t *nm_signer_public_der(const nm_signer *signer, size_t *len);
const uint8_t *nm_signer_private_der(const nm_signer *signer, size_t *len);

/* Signs msg into out (DER ECDSA-Sig-Value with low S, or 64-byte Ed25519) and
 * its length into *out_len (0 on failure). NM_OK or NM_ERR_CRYPTO. */
nm_status nm_sign(const nm_signer *signer, const uint8_t *msg, size_t msg_len,
            uint8_t out[NM_SIG_MAX], size_t *out_len);

/* Signs msgs[i] into out + i * NM_SIG_MAX with length out_lens[i] (0 if that
 * signature failed); `threads` as in nm_parallel_threads. NM_OK if every
 * message was signed, else NM_ERR_CRYPTO. */
nm_status nm_sign_many(const nm_signer *signer, const uint8_t *const *msgs,
                       const size_t *msg_lens, size_t n, int threads, uint8_t *out,
                       size_t *out_lens);

/* A fresh key of `kind` as PKCS#8 DER into out (NM_PKCS8_MAX bytes), its length
 * into *out_len (0 on failure). NM_OK, NM_ERR_KIND, NM_ERR_INIT or NM_ERR_CRYPTO. */
nm_status nm_generate_private_key(int kind, uint8_t out[NM_PKCS8_MAX], size_t *out_len);

#endif
