/* fuzz.h — shared by the fuzz targets. */
#ifndef CMK_FUZZ_H
#define CMK_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Copies the fuzzer's bytes into out as a C string, cut to cap - 1 bytes (parsers of text
 * take NUL-terminated input; an embedded NUL ends it early, as it would in a real caller). */
static inline void fuzz_cstr(char *out, size_t cap, const uint8_t *data, size_t size)
{
    size_t n = size < cap - 1 ? size : cap - 1;

    memcpy(out, data, n);
    out[n] = '\0';
}

#endif
