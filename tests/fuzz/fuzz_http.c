/*
 * fuzz_http.c — libFuzzer target: the registry server's parsers of client-supplied header and
 * query values (tools/serve/http_util.c): Range, the Content-Range of chunked uploads, decimal
 * query values, and the log-safe copy of client text.
 *
 * The first 8 bytes of the input are the representation size the Range is parsed against;
 * the rest is the header value. Properties checked on every input:
 *  - a satisfiable range lies inside the representation (off < size, len >= 1,
 *    off + len <= size), and only when there is a Range header;
 *  - a Content-Range that parses has start <= end;
 *  - a decimal that parses is at most the limit asked for;
 *  - the log-safe copy is terminated within its buffer and holds only printable ASCII
 *    other than '"' and '\\' (except as the lead of an \xNN escape).
 * Seeds: tests/fuzz/corpus/fuzz_http/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/http_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_log_safe(const char *in, size_t cap)
{
    char out[64];
    size_t len;

    memset(out, 'Z', sizeof(out));
    http_log_safe(out, cap, in);
    len = strnlen(out, sizeof(out));
    if (len >= cap)
        abort();
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c > 0x7e || c == '"')
            abort();
        if (c == '\\' && (i + 1 >= len || out[i + 1] != 'x'))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[512];
    uint64_t rep = 0, off = 0, len = 0, a = 0, b = 0, v = 0;

    if (size < 8)
        return 0;
    memcpy(&rep, data, 8);
    data += 8;
    size -= 8;
    fuzz_cstr(in, sizeof(in), data, size);

    switch (http_parse_range(in, rep, &off, &len)) {
    case HTTP_RANGE_OK:
        if (len == 0 || off >= rep || len > rep - off)
            abort();
        break;
    case HTTP_RANGE_NONE:
    case HTTP_RANGE_BAD:
    case HTTP_RANGE_IGNORE:
        break;
    default:
        abort();
    }
    if (http_parse_range(NULL, rep, &off, &len) != HTTP_RANGE_NONE)
        abort();
    if (http_parse_content_range(in, &a, &b) == 0 && a > b)
        abort();
    if (http_parse_u64(in, rep, &v) == 0 && v > rep)
        abort();
    check_log_safe(in, 1 + (size_t)(rep % 63));
    return 0;
}
