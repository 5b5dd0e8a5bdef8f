/* Strict, canonical base64 (SPEC §1: one byte string, one text), in two forms.
 * Standard: the alphabet A-Z a-z 0-9 + /, a length that is a multiple of 4,
 * "=" only as the last one or two characters, and zero padding bits (the
 * character before "=" / "==" carries no bits beyond the data).
 * URL-safe without padding (SPEC §11 header values): the alphabet A-Z a-z 0-9 - _,
 * no "=", a length that is not 1 more than a multiple of 4, and zero padding bits
 * in the last character. Anything else is refused, so every byte string has
 * exactly one accepted text in each form. */
#ifndef NANOMONI_BASE64_H
#define NANOMONI_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes a text of len characters can decode to. */
#define NM_BASE64_MAX_DECODED(len) ((len) / 4 * 3)

/* Predicate: text[0..len) is canonical base64. If so, its bytes are written
 * to out (room for NM_BASE64_MAX_DECODED(len)) and their count to *out_len;
 * if not, out and *out_len hold nothing meaningful. */
int nm_base64_decode(const char *text, size_t len, uint8_t *out, size_t *out_len);

/* The bytes a URL-safe text of len characters decodes to (len % 4 != 1). */
#define NM_BASE64URL_DECODED(len) ((len) / 4 * 3 + ((len) % 4 ? (len) % 4 - 1 : 0))
/* The characters of the URL-safe text of len bytes. */
#define NM_BASE64URL_ENCODED(len) ((len) / 3 * 4 + ((len) % 3 ? (len) % 3 + 1 : 0))

/* Predicate: text[0..len) is canonical URL-safe base64 without padding. If so,
 * its NM_BASE64URL_DECODED(len) bytes are written to out; if not, out holds
 * nothing meaningful. */
int nm_base64url_decode(const char *text, size_t len, uint8_t *out);

/* The canonical URL-safe text of data[0..len), without padding: writes
 * NM_BASE64URL_ENCODED(len) characters to out. */
void nm_base64url_encode(const uint8_t *data, size_t len, char *out);

#endif
