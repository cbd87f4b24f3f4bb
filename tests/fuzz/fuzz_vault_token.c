/*
 * fuzz_vault_token.c — libFuzzer target for the token check of `cmkstore vault serve`
 * (tools/serve/vault_token.c) and the base64url decoder under it (http_util.c). Input: any
 * bytes, taken as an Authorization bearer value.
 *
 * Properties checked on every input:
 *  - verification under a fixed secret never accepts a token it did not issue: a token is
 *    accepted only if re-issuing its claims gives the same text;
 *  - refused tokens leave the claims empty; claims are terminated within their arrays;
 *  - base64url decoding stays within its output buffer and re-encodes to the input (less
 *    '=' padding) whenever it succeeds.
 * Seeds: tests/fuzz/corpus/fuzz_vault_token/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/b64url.h"
#include "tests/fuzz/fuzz.h"
#include "tools/serve/http_util.h"
#include "tools/serve/vault_token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned char secret[32] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                             7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
    char buf[2048], again[VAULT_TOKEN_MAX], enc[4096];
    unsigned char dec[1536];
    vault_token_claims cl;
    vault_tokens *t = vault_tokens_from_secret(secret);
    enum vault_token_result r;
    long n;
    size_t len;

    if (!t)
        return 0;
    fuzz_cstr(buf, sizeof(buf), data, size);
    r = vault_token_verify(t, buf, 1000, &cl);
    if (memchr(cl.principal, '\0', sizeof(cl.principal)) == NULL ||
        memchr(cl.client_id, '\0', sizeof(cl.client_id)) == NULL ||
        memchr(cl.resource, '\0', sizeof(cl.resource)) == NULL)
        abort();
    if (r == VAULT_TOKEN_BAD && (cl.principal[0] || cl.client_id[0] || cl.exp))
        abort();
    if (r != VAULT_TOKEN_BAD && (vault_token_issue(t, cl.principal, cl.client_id, cl.exp,
                                                   cl.resource, again, sizeof(again)) != 0 ||
                                 strcmp(again, buf) != 0))
        abort();
    len = strlen(buf);
    n = cmk_b64url_decode(buf, len, dec, sizeof(dec));
    if (n > (long)sizeof(dec))
        abort();
    if (n >= 0) {
        while (len > 0 && buf[len - 1] == '=')
            len--;
        if (cmk_b64url_encode(dec, (size_t)n, enc, sizeof(enc)) != (long)len ||
            memcmp(enc, buf, len) != 0)
            abort();
    }
    vault_tokens_free(t);
    return 0;
}
