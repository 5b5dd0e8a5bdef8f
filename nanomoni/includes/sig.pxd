# C declarations of csrc/sigkeys.h, csrc/sigverify.h and csrc/sign.h.
from libc.stdint cimport uint8_t

from nanomoni.includes.status cimport nm_status


cdef extern from "sigkeys.h" nogil:
    ctypedef enum nm_key_kind:
        NM_KEY_NONE
        NM_KEY_P256
        NM_KEY_SECP256K1
        NM_KEY_ED25519
        NM_KEY_KIND_COUNT

    enum:
        NM_SIG_MAX

    nm_status nm_sig_init()


cdef extern from "sigverify.h" nogil:
    enum:
        NM_KEY_CACHE_SLOTS

    ctypedef struct nm_sig_item:
        const uint8_t *key
        size_t key_len
        const uint8_t *msg
        size_t msg_len
        const uint8_t *sig
        size_t sig_len

    nm_key_kind nm_public_key_kind(const uint8_t *der, size_t len)
    int nm_verify_one(const nm_sig_item *item)
    void nm_verify_batch(const nm_sig_item *items, size_t n, int threads, uint8_t *out)


cdef extern from "sign.h" nogil:
    enum:
        NM_PKCS8_MAX

    ctypedef struct nm_signer:
        pass

    nm_status nm_signer_new(const uint8_t *pkcs8, size_t len, nm_signer **out)
    void nm_signer_free(nm_signer *signer)
    nm_key_kind nm_signer_kind(const nm_signer *signer)
    const uint8_t *nm_signer_public_der(const nm_signer *signer, size_t *len)
    const uint8_t *nm_signer_private_der(const nm_signer *signer, size_t *len)
    nm_status nm_sign(const nm_signer *signer, const uint8_t *msg, size_t msg_len,
                      uint8_t *out, size_t *out_len)
    nm_status nm_sign_many(const nm_signer *signer, const uint8_t *const *msgs,
                           const size_t *msg_lens, size_t n, int threads,
                           uint8_t *out, size_t *out_lens)
    nm_status nm_generate_private_key(int kind, uint8_t *out, size_t *out_len)
