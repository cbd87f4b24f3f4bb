/* fuzz_keyring.c — the keyring parser on arbitrary bytes. */
#include <string.h>

#include "core/keyring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cmk_keyring kr;

    if (cmk_keyring_parse((const char *)data, size, &kr, NULL) == CMK_OK) {
        /* Accepted keyrings hold what the store relies on. */
        int found = 0;
        for (size_t i = 0; i < kr.ndeks; i++) {
            if (kr.deks[i].wrapped_len > CMK_WRAPPED_MAX || kr.deks[i].id == 0)
                __builtin_trap();
            found |= kr.deks[i].id == kr.current_dek;
        }
        if (!found || kr.ndeks == 0)
            __builtin_trap();
        cmk_keyring_free(&kr);
    }
    return 0;
}
