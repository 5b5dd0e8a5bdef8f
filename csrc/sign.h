/* Signing: PKCS#8 private keys of the three kinds, key generation, signing one
 * message or a threaded batch. */
#ifndef NANOMONI_SIGN_H
#define NANOMONI_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "sigkeys.h"

/* Room for any PKCS#8 DER nm_generate_private_key produces. */
#define NM_PKCS8_MAX 256

typedef struct nm_signer nm_signer;

/* Parses a DER PKCS#8 PrivateKeyInfo (nothing may follow it). On failure returns
 * NULL and points *error at a static message. */
nm_signer *nm_signer_new(const uint8_t *pkcs8, size_t len, const char **error);
void nm_signer_free(nm_signer *signer);

int nm_signer_kind(const nm_signer *signer);
/* DER SubjectPublicKeyInfo, and the PKCS#8 bytes the signer was made from. */
const uint8_t *nm_signer_public_der(const nm_signer *signer, size_t *len);
const uint8_t *nm_signer_private_der(const nm_signer *signer, size_t *len);

/* Signs msg into out (DER ECDSA-Sig-Value with low S, or 64-byte Ed25519).
 * Returns 1 on success, 0 on failure. */
int nm_sign(const nm_signer *signer, const uint8_t *msg, size_t msg_len,
            uint8_t out[NM_SIG_MAX], size_t *out_len);

/* Signs msgs[i] into out + i * NM_SIG_MAX with length out_lens[i] (0 if that
 * signature failed); `threads` as in nm_parallel_threads. Returns how many failed. */
size_t nm_sign_many(const nm_signer *signer, const uint8_t *const *msgs, const size_t *msg_lens,
                    size_t n, int threads, uint8_t *out, size_t *out_lens);

/* A fresh key of `kind` as PKCS#8 DER into out (NM_PKCS8_MAX bytes); returns
 * its length, or 0 for an unknown kind or failure. */
size_t nm_generate_private_key(int kind, uint8_t out[NM_PKCS8_MAX]);

#endif
