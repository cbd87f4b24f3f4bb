/*
 * fuzz_pkcs11_uri.c — libFuzzer target: the RFC 7512 key-identifier parser (kek/pkcs11/uri.c).
 *
 * Properties checked on every input:
 *  - a failure carries a code and a message;
 *  - a success satisfies the parser's contract (token and object present, NUL-free and within
 *    their limits, id length consistent);
 *  - the canonical form (versioned and versionless) parses back to the same fields.
 * Seeds: tests/fuzz/corpus/fuzz_pkcs11_uri/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "kek/pkcs11/pkcs11.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_fields(const cmk_p11_uri *a, const cmk_p11_uri *b, int versioned)
{
    if (strcmp(a->token, b->token) != 0 || strcmp(a->object, b->object) != 0 ||
        strcmp(a->module_path, b->module_path) != 0 || strcmp(a->pin_file, b->pin_file) != 0 ||
        strcmp(a->query, b->query) != 0)
        abort();
    if (versioned && a->has_id) {
        if (!b->has_id || a->id_len != b->id_len || memcmp(a->id, b->id, a->id_len) != 0)
            abort();
    } else if (b->has_id) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[CMK_ID_MAX + 64];
    char out[CMK_ID_MAX];
    cmk_errbuf eb;
    cmk_p11_uri u, u2;

    fuzz_cstr(in, sizeof(in), data, size);
    memset(&eb, 0, sizeof(eb));
    if (cmk_p11_uri_parse(in, &u, &eb) != CMK_OK) {
        if (eb.code == CMK_OK || eb.msg[0] == '\0')
            abort();
        return 0;
    }
    if (!u.token[0] || strlen(u.token) > CMK_P11_TOKEN_MAX || !u.object[0] ||
        strlen(u.object) > CMK_P11_LABEL_MAX || u.id_len > CMK_P11_URI_ID_MAX ||
        (u.has_id != 0) != (u.id_len != 0))
        abort();
    for (int versioned = 0; versioned < 2; versioned++) {
        memset(&eb, 0, sizeof(eb));
        /* Canonical encoding may outgrow CMK_ID_MAX (a raw id expands 3x): a clean refusal. */
        if (cmk_p11_uri_format(&u, versioned, out, sizeof(out), &eb) != CMK_OK) {
            if (eb.code != CMK_E_INVAL)
                abort();
            continue;
        }
        if (cmk_p11_uri_parse(out, &u2, &eb) != CMK_OK)
            abort();
        same_fields(&u, &u2, versioned);
    }
    return 0;
}
