from libc.stdint cimport uint8_t


cdef extern from "base64.h" nogil:
    size_t NM_BASE64_MAX_DECODED(size_t len)
    int nm_base64_decode(const char *text, size_t len, uint8_t *out, size_t *out_len)
    size_t NM_BASE64URL_DECODED(size_t len)
    size_t NM_BASE64URL_ENCODED(size_t len)
    int nm_base64url_decode(const char *text, size_t len, uint8_t *out)
    void nm_base64url_encode(const uint8_t *data, size_t len, char *out)
