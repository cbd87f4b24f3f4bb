/*
 * fuzz_akv_parse.c — libFuzzer target: the akv provider's parsers of network input
 * (kek/akv/): the WWW-Authenticate challenge, a key bundle (JSON Web Key), a wrapkey/unwrapkey
 * result, a token response, an error body, plus key identifiers and Retry-After. The first
 * byte picks the parser, the rest is its input.
 *
 * Properties checked on every input:
 *  - a failure carries CMK_E_INVAL and a message;
 *  - a parsed challenge has a resource, a scope ending in "/.default", NUL-terminated fields;
 *  - a parsed key has a version made of letters and digits, RSA keys a modulus size;
 *  - a parsed token is non-empty, its length matches, and it expires after "now";
 *  - a decoded result fits the buffer;
 *  - a parsed key identifier formats back to an identifier that parses to the same fields.
 * Seeds: tests/fuzz/corpus/fuzz_akv_parse/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/secmem.h"
#include "kek/akv/challenge.h"
#include "kek/akv/http.h"
#include "kek/akv/json.h"
#include "kek/akv/kid.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_fail(cmk_err rc, const cmk_errbuf *eb)
{
    if (rc != CMK_E_INVAL || eb->msg[0] == '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char in[70000];
    unsigned char out[1100];
    cmk_errbuf eb;
    cmk_err rc;
    size_t n;

    if (size == 0)
        return 0;
    fuzz_cstr(in, sizeof(in), data + 1, size - 1);
    n = strlen(in);
    memset(&eb, 0, sizeof(eb));
    switch (data[0] % 7) {
    case 0: {
        cmk_akv_challenge c;
        rc = cmk_akv_challenge_parse(in, &c, &eb);
        if (rc != CMK_OK) {
            check_fail(rc, &eb);
            break;
        }
        n = strlen(c.scope);
        if (!c.resource[0] || n < 9 || strcmp(c.scope + n - 9, "/.default") != 0 ||
            strnlen(c.tenant, sizeof(c.tenant)) == sizeof(c.tenant))
            abort();
        (void)cmk_akv_challenge_domain_ok(&c, "myvault.vault.azure.net");
        break;
    }
    case 1: {
        cmk_akv_key k;
        rc = cmk_akv_key_parse(in, n, &k, &eb);
        if (rc != CMK_OK) {
            check_fail(rc, &eb);
            break;
        }
        if (!k.version[0])
            abort();
        for (const char *c = k.version; *c; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
                abort();
        if ((k.kty == CMK_KTY_RSA || k.kty == CMK_KTY_RSA_HSM) && (k.bits == 0 || k.bits > 8800))
            abort();
        break;
    }
    case 2: {
        size_t outlen = 0;
        rc = cmk_akv_result_parse(in, n, out, sizeof(out), &outlen, &eb);
        if (rc != CMK_OK) {
            check_fail(rc, &eb);
            if (outlen)
                abort();
        } else if (outlen == 0 || outlen > sizeof(out)) {
            abort();
        }
        break;
    }
    case 3: {
        cmk_akv_token t;
        rc = cmk_akv_token_parse(in, n, 1700000000, &t, &eb);
        if (rc != CMK_OK) {
            check_fail(rc, &eb);
            if (t.value)
                abort();
            break;
        }
        if (!t.value || strlen(t.value) != t.len || t.len == 0 || t.expires_on <= 1700000000)
            abort();
        cmk_akv_token_clear(&t);
        break;
    }
    case 4: {
        cmk_akv_error e;
        cmk_akv_error_parse(in, n, &e);
        if (strnlen(e.message, sizeof(e.message)) == sizeof(e.message))
            abort();
        for (const char *c = e.message; *c; c++)
            if ((unsigned char)*c < 0x20)
                abort();
        break;
    }
    case 5: {
        cmk_akv_kid k, k2;
        char canon[CMK_ID_MAX];
        rc = cmk_akv_kid_parse(in, &k, &eb);
        if (rc != CMK_OK) {
            check_fail(rc, &eb);
            break;
        }
        if (!k.host[0] || !k.name[0] ||
            cmk_akv_kid_format(&k, k.version, canon, sizeof(canon), &eb) != CMK_OK ||
            cmk_akv_kid_parse(canon, &k2, &eb) != CMK_OK || strcmp(k.base, k2.base) != 0 ||
            strcmp(k.name, k2.name) != 0 || strcmp(k.version, k2.version) != 0)
            abort();
        break;
    }
    default: {
        long s = cmk_akv_retry_after_parse(in, 1700000000);
        if (s < -1)
            abort();
        break;
    }
    }
    return 0;
}
