/*
 * fuzz_s3_link.c — libFuzzer target: the S3 backend's link-object parser
 * (core/backend/s3_link.c), which reads small objects under blobs/ of a bucket (anyone with
 * write access to the bucket chooses their bytes).
 *
 * Properties checked on every input (read as a whole object, not NUL-terminated):
 *  - nothing is read outside the input (ASan);
 *  - a link's data key starts with "data/", has a name after it and is NUL-terminated
 *    within its buffer; a non-link or a malformed one leaves the key empty;
 *  - a link formatted back (cmk_s3_link_format) is the input, byte for byte;
 *  - a tiny key buffer never overflows (the same input parsed with cap 8).
 * Seeds: tests/fuzz/corpus/fuzz_s3_link/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_link.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = malloc(size ? size : 1);
    char key[CMK_S3_LINK_MAX], small[8], again[CMK_S3_LINK_MAX + 32];
    uint64_t n = 0;
    int r, back;

    if (!body)
        return 0;
    memcpy(body, data, size);
    r = cmk_s3_link_parse(body, size, key, sizeof(key), &n);
    if (r != 1 && (r != 0 && r != -1))
        abort();
    if (r != 1 && key[0] != '\0')
        abort();
    if (r == 1) {
        size_t kl = strnlen(key, sizeof(key));
        if (kl <= 5 || kl >= sizeof(key) || memcmp(key, "data/", 5) != 0)
            abort();
        back = cmk_s3_link_format(again, sizeof(again), key, n);
        if (back < 0 || (size_t)back != size || memcmp(again, body, size) != 0)
            abort();
    }
    r = cmk_s3_link_parse(body, size, small, sizeof(small), &n);
    if (strnlen(small, sizeof(small)) >= sizeof(small) || (r == 1 && strlen(small) <= 5))
        abort();
    free(body);
    return 0;
}
