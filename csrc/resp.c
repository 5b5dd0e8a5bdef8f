#include "resp.h"

#include <string.h>

static size_t unsigned_digits(uint64_t v) {
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* The magnitude of v, also for INT64_MIN. */
static uint64_t magnitude(int64_t v) {
    return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

size_t nm_resp_header_size(size_t count) {
    return 1 + unsigned_digits(count) + 2;
}

size_t nm_resp_bulk_size(size_t len) {
    return nm_resp_header_size(len) + len + 2;
}

size_t nm_resp_int_digits(int64_t v) {
    return (v < 0) + unsigned_digits(magnitude(v));
}

/* The decimal text of v, digits written backwards from its end. */
static char *put_unsigned(char *out, uint64_t v) {
    size_t n = unsigned_digits(v);
    char *end = out + n;
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return out + n;
}

static char *put_header(char *out, char type, size_t count) {
    *out++ = type;
    out = put_unsigned(out, count);
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

char *nm_resp_array(char *out, size_t count) {
    return put_header(out, '*', count);
}

char *nm_resp_bulk(char *out, const char *data, size_t len) {
    out = put_header(out, '$', len);
    if (len)
        memcpy(out, data, len);
    out += len;
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

char *nm_resp_bulk_int(char *out, int64_t v) {
    out = put_header(out, '$', nm_resp_int_digits(v));
    if (v < 0)
        *out++ = '-';
    out = put_unsigned(out, magnitude(v));
    *out++ = '\r';
    *out++ = '\n';
    return out;
}
