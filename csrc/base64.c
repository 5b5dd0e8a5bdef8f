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

int nm_base64_decode(const char *text, size_t len, uint8_t *out, size_t *out_len) {
    const uint8_t *in = (const uint8_t *)text;
    if (len % 4 != 0)
        return 0;
    size_t pad = 0;
    if (len > 0 && in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    size_t full = len - (pad ? 4 : 0); /* characters in groups without padding */
    uint8_t *o = out;
    for (size_t j = 0; j < full; j += 4) {
        uint32_t a = INDEX[in[j]], b = INDEX[in[j + 1]], c = INDEX[in[j + 2]], d = INDEX[in[j + 3]];
        if ((a | b | c | d) & 64)
            return 0;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        o[0] = (uint8_t)(v >> 16);
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        o += 3;
    }
    if (pad) {
        uint32_t a = INDEX[in[full]], b = INDEX[in[full + 1]];
        if ((a | b) & 64)
            return 0;
        if (pad == 2) {
            if (b & 15) /* bits beyond the one byte */
                return 0;
            *o++ = (uint8_t)(a << 2 | b >> 4);
        } else {
            uint32_t c = INDEX[in[full + 2]];
            if ((c & 64) || (c & 3)) /* "=" is not in the alphabet: "A=B=" ends here */
                return 0;
            *o++ = (uint8_t)(a << 2 | b >> 4);
            *o++ = (uint8_t)(b << 4 | c >> 2);
        }
    }
    *out_len = (size_t)(o - out);
    return 1;
}
