/* fuzz_digest.c — OCI digest parsing: accepted strings are canonical and round-trip. */
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1), back[CMK_DIGEST_MAX];
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    int alg;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (cmk_digest_parse(s, &alg, raw, NULL) == CMK_OK) {
        cmk_digest_format(alg, raw, back);
        if (strcmp(back, s) != 0 || strchr(s, '/'))
            __builtin_trap();
    }
    free(s);
    return 0;
}
