/* Strict, canonical standard base64 (SPEC §1: one byte string, one text).
 * Accepted: the alphabet A-Z a-z 0-9 + /, a length that is a multiple of 4,
 * "=" only as the last one or two characters, and zero padding bits (the
 * character before "=" / "==" carries no bits beyond the data). Anything else
 * is refused, so every byte string has exactly one accepted text.
 * Results: see status.h. */
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

#endif
