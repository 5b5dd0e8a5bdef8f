from libc.stdint cimport int64_t


cdef extern from "resp.h" nogil:
    size_t nm_resp_header_size(size_t count)
    size_t nm_resp_bulk_size(size_t len)
    size_t nm_resp_int_digits(int64_t v)
    char *nm_resp_array(char *out, size_t count)
    char *nm_resp_bulk(char *out, const char *data, size_t len)
    char *nm_resp_bulk_int(char *out, int64_t v)
