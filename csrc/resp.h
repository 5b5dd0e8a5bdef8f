/* RESP, the Redis wire protocol, for the commands a store sends: an array of
 * bulk strings ("*<count>\r\n", then "$<length>\r\n<bytes>\r\n" per argument).
 * Sizes first (to allocate once), then writers that return the end of what
 * they wrote. Integers go out as their decimal text, as Redis reads them.
 * Results: see status.h (none of these can fail). */
#ifndef NANOMONI_RESP_H
#define NANOMONI_RESP_H

#include <stddef.h>
#include <stdint.h>

/* Characters of "*<count>\r\n" (or "$<count>\r\n"). */
size_t nm_resp_header_size(size_t count);
/* Characters of a bulk string of len bytes. */
size_t nm_resp_bulk_size(size_t len);
/* Characters of the decimal text of v. */
size_t nm_resp_int_digits(int64_t v);

char *nm_resp_array(char *out, size_t count);
char *nm_resp_bulk(char *out, const char *data, size_t len);
/* The bulk string of v's decimal text. */
char *nm_resp_bulk_int(char *out, int64_t v);

#endif
