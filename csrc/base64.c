#include "base64.h"

/* Alphabet index of each byte; 64 marks a byte outside the alphabet ("=" included). */
static const uint8_t INDEX[256] = {
#define X64 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64
    X64, X64,
    /* 0x20 */ 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 62, 64, 64, 64, 63,
    /* 0x30 */ 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 64, 64, 64, 64, 64,
    /* 0x40 */ 64, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    /* 0x50 */ 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 64, 64, 64, 64, 64,
    /* 0x60 */ 64, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    /* 0x70 */ 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 64, 64, 64, 64, 64,
    X64, X64, X64, X64, X64, X64, X64, X64,
#undef X64
};

/* The same for the URL-safe alphabet: "-" and "_" instead of "+" and "/". */
static const uint8_t URL_INDEX[256] = {
#define X64 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64
    X64, X64,
    /* 0x20 */ 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 62, 64, 64,
    /* 0x30 */ 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 64, 64, 64, 64, 64, 64,
    /* 0x40 */ 64, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    /* 0x50 */ 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 64, 64, 64, 64, 63,
    /* 0x60 */ 64, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    /* 0x70 */ 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 64, 64, 64, 64, 64,
    X64, X64, X64, X64, X64, X64, X64, X64,
#undef X64
};

static const char URL_ALPHABET[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decodes the full groups of 4 characters in[0..full) with table; 0 on a byte
 * outside the alphabet. */
static int decode_groups(const uint8_t *in, size_t full, const uint8_t *table, uint8_t *o) {
    for (size_t j = 0; j < full; j += 4) {
        uint32_t a = table[in[j]], b = table[in[j + 1]], c = table[in[j + 2]], d = table[in[j + 3]];
        if ((a | b | c | d) & 64)
            return 0;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        o[0] = (uint8_t)(v >> 16);
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        o += 3;
    }
    return 1;
}

/* Decodes a last group of 2 or 3 characters (1 or 2 bytes) with table; 0 on a
 * byte outside the alphabet or a non-zero padding bit. */
static int decode_tail(const uint8_t *in, size_t count, const uint8_t *table, uint8_t *o) {
    uint32_t a = table[in[0]], b = table[in[1]];
    if ((a | b) & 64)
        return 0;
    if (count == 2) {
        if (b & 15) /* bits beyond the one byte */
            return 0;
        o[0] = (uint8_t)(a << 2 | b >> 4);
        return 1;
    }
    uint32_t c = table[in[2]];
    if ((c & 64) || (c & 3)) /* "=" is not in the alphabet: "A=B=" ends here */
        return 0;
    o[0] = (uint8_t)(a << 2 | b >> 4);
    o[1] = (uint8_t)(b << 4 | c >> 2);
    return 1;
}

int nm_base64_decode(const char *text, size_t len, uint8_t *out, size_t *out_len) {
    const uint8_t *in = (const uint8_t *)text;
    if (len % 4 != 0)
        return 0;
    size_t pad = 0;
    if (len > 0 && in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    size_t full = len - (pad ? 4 : 0); /* characters in groups without padding */
    if (!decode_groups(in, full, INDEX, out))
        return 0;
    if (pad && !decode_tail(in + full, 4 - pad, INDEX, out + full / 4 * 3))
        return 0;
    *out_len = full / 4 * 3 + (pad ? 3 - pad : 0);
    return 1;
}

int nm_base64url_decode(const char *text, size_t len, uint8_t *out) {
    const uint8_t *in = (const uint8_t *)text;
    size_t rest = len % 4, full = len - rest;
    if (rest == 1)
        return 0;
    if (!decode_groups(in, full, URL_INDEX, out))
        return 0;
    return rest == 0 || decode_tail(in + full, rest, URL_INDEX, out + full / 4 * 3);
}

void nm_base64url_encode(const uint8_t *data, size_t len, char *out) {
    size_t full = len - len % 3;
    for (size_t j = 0; j < full; j += 3) {
        uint32_t v = (uint32_t)data[j] << 16 | (uint32_t)data[j + 1] << 8 | data[j + 2];
        out[0] = URL_ALPHABET[v >> 18];
        out[1] = URL_ALPHABET[(v >> 12) & 63];
        out[2] = URL_ALPHABET[(v >> 6) & 63];
        out[3] = URL_ALPHABET[v & 63];
        out += 4;
    }
    if (len - full == 1) {
        uint32_t v = data[full];
        out[0] = URL_ALPHABET[v >> 2];
        out[1] = URL_ALPHABET[(v << 4) & 63];
    } else if (len - full == 2) {
        uint32_t v = (uint32_t)data[full] << 8 | data[full + 1];
        out[0] = URL_ALPHABET[v >> 10];
        out[1] = URL_ALPHABET[(v >> 4) & 63];
        out[2] = URL_ALPHABET[(v << 2) & 63];
    }
}
