from libc.stdint cimport uint8_t


cdef extern from "base64.h" nogil:
    size_t NM_BASE64_MAX_DECODED(size_t len)
    int nm_base64_decode(const char *text, size_t len, uint8_t *out, size_t *out_len)
