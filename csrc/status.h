/* How every function in csrc/ reports its result: one convention, stated here
 * once and referred to by the other headers.
 *
 *   Predicates answer yes or no and cannot fail: they return int 1 (yes) or
 *   0 (no), e.g. nm_payword_verify, nm_verify_one, nm_alg_valid.
 *
 *   Operations that can fail return an nm_status: NM_OK (0) on success, else
 *   the reason; their results go to out-parameters, which are left untouched
 *   or zeroed on failure as each function says. nm_status_message names a
 *   reason for people.
 *
 *   Functions that cannot fail return void, or the value they are named for
 *   (a key kind, a thread count).
 *
 *   File-local helpers that make a new object return it, or NULL on failure. */
#ifndef NANOMONI_STATUS_H
#define NANOMONI_STATUS_H

typedef enum {
    NM_OK = 0,
    NM_ERR_ALG,         /* unknown hash suite */
    NM_ERR_RANGE,       /* a count or index outside what the function accepts */
    NM_ERR_NO_MEMORY,
    NM_ERR_INIT,        /* libsodium or libsecp256k1 could not be set up */
    NM_ERR_KEY_FORMAT,  /* not one DER PKCS#8 PrivateKeyInfo */
    NM_ERR_KEY_TYPE,    /* a key type or curve the core does not support */
    NM_ERR_KEY_INVALID, /* a supported type, but unusable key material */
    NM_ERR_KIND,        /* unknown key kind number */
    NM_ERR_CRYPTO,      /* the crypto library failed to sign or generate */
    NM_STATUS_COUNT     /* not a status: how many there are */
} nm_status;

/* A short static description of status (any int; unknown values get a generic text). */
const char *nm_status_message(int status);

#endif
