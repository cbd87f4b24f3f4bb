/*
 * fuzz_vault_kid.c — libFuzzer target: the local key-identifier parser (kek/vault/kid.c),
 * "local://<vault>/keys/<name>[/<version>]", which reads what users pass on the command line
 * and what a store's keyring names.
 *
 * Properties checked on every input:
 *  - a failure carries CMK_E_INVAL and a message;
 *  - a success gives a non-empty vault and key name and a version that is empty or 32
 *    lowercase hex digits, all terminated within their fields;
 *  - the canonical form (cmk_vault_kid_format) parses back to the same fields.
 * Seeds: tests/fuzz/corpus/fuzz_vault_kid/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "kek/vault/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[400], canon[512];
    size_t n;
    cmk_errbuf eb;
    cmk_vault_kid k, k2;

    fuzz_cstr(in, sizeof(in), data, size);
    memset(&eb, 0, sizeof(eb));
    if (cmk_vault_kid_parse(in, &k, &eb) != CMK_OK) {
        if (eb.code != CMK_E_INVAL || eb.msg[0] == '\0')
            abort();
        return 0;
    }
    if (!k.vault[0] || !k.key[0] || strnlen(k.vault, sizeof(k.vault)) == sizeof(k.vault) ||
        strnlen(k.key, sizeof(k.key)) == sizeof(k.key))
        abort();
    n = strnlen(k.version, sizeof(k.version));
    if (n != 0 && n != 32)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!((k.version[i] >= '0' && k.version[i] <= '9') ||
              (k.version[i] >= 'a' && k.version[i] <= 'f')))
            abort();
    if (cmk_vault_kid_format(canon, sizeof(canon), k.vault, k.key, k.version, &eb) != CMK_OK)
        abort();
    if (cmk_vault_kid_parse(canon, &k2, &eb) != CMK_OK || strcmp(k.vault, k2.vault) != 0 ||
        strcmp(k.key, k2.key) != 0 || strcmp(k.version, k2.version) != 0)
        abort();
    return 0;
}
