/*
 * fuzz_jwt.c — libFuzzer target for the token parser (tools/serve/http_jwt.c). Input: a
 * compact JWT as a client would send it after "Bearer ".
 *
 * Properties checked on every input:
 *  - a parsed token's strings are terminated within their arrays, its counts are within
 *    their bounds, signed_len points at the second '.' of the input and an ES256 signature
 *    is 64 bytes;
 *  - the claims check and the access lookup run on whatever parsed, and a lookup grants
 *    only action bits that exist;
 *  - signature verification with no trusted key never succeeds.
 * Seeds: tests/fuzz/corpus/fuzz_jwt/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/http_jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jwt_token t; /* large: not on the fuzzer's stack */
    const char *tok = (const char *)data;
    char err[256];
    size_t dots = 0;

    if (jwt_parse(tok, size, &t, err, sizeof(err)) != CMK_OK) {
        if (!memchr(err, '\0', sizeof(err)))
            abort();
        return 0;
    }
    if (!memchr(t.iss, '\0', sizeof(t.iss)) || !memchr(t.sub, '\0', sizeof(t.sub)) ||
        t.naud > JWT_MAX_AUD || t.naccess > JWT_MAX_ACCESS || t.siglen > sizeof(t.sig) ||
        (t.alg == JWT_ALG_ES256 && t.siglen != 64) || t.signed_len >= size ||
        tok[t.signed_len] != '.')
        abort();
    for (size_t i = 0; i < t.signed_len; i++)
        dots += tok[i] == '.';
    if (dots != 1)
        abort();
    for (size_t i = 0; i < t.naud; i++)
        if (!memchr(t.aud[i], '\0', sizeof(t.aud[i])))
            abort();
    for (size_t i = 0; i < t.naccess; i++) {
        const jwt_access *e = &t.access[i];
        if (!memchr(e->type, '\0', sizeof(e->type)) || !memchr(e->name, '\0', sizeof(e->name)))
            abort();
        if (jwt_granted(&t, e->type, e->name) &
            ~(JWT_ACT_PULL | JWT_ACT_PUSH | JWT_ACT_DELETE | JWT_ACT_ALL))
            abort();
    }
    (void)jwt_check_claims(&t, "issuer", "service", 1700000000, JWT_DEFAULT_SKEW, err, sizeof(err));
    if (jwt_verify(&t, tok, NULL, 0))
        abort();
    return 0;
}
