/* http_jwt.c — see http_jwt.h. */
#include "tools/serve/http_jwt.h"
#include "core/base/b64url.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/http_util.h"

#define PART_MAX 8192 /* decoded header or payload */

#define fail http_fail /* tools/serve/http_util.h */

/* base64url without padding (RFC 7515 section 2): a '=' is refused. Returns 0 and *outlen,
 * or -1 on a bad character, an impossible length or more than cap bytes. */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    long r;

    if (memchr(in, '=', n))
        return -1;
    r = cmk_b64url_decode(in, n, out, cap);
    if (r < 0)
        return -1;
    *outlen = (size_t)r;
    return 0;
}

/* Copies a JSON string of at most JWT_STR_MAX - 1 bytes without NUL; -1 otherwise. */
static int copy_str(const json_t *v, char *dst, size_t cap)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (!s || n == 0 || n >= cap || memchr(s, '\0', n))
        return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* A NumericDate: an integer, or a number (the fraction is dropped). */
static int get_time(const json_t *v, int64_t *out)
{
    double d;

    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v))
        return -1;
    d = json_real_value(v);
    if (!(d > -9.2e18 && d < 9.2e18))
        return -1;
    *out = (int64_t)d;
    return 0;
}

static json_t *decode_part(const char *p, size_t n)
{
    unsigned char buf[PART_MAX];
    size_t len = 0;

    if (b64url_decode(p, n, buf, sizeof(buf), &len) != 0 || len == 0)
        return NULL;
    return json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
}

static int parse_actions(const json_t *arr, unsigned *out)
{
    size_t i;
    json_t *v;

    *out = 0;
    if (!json_is_array(arr))
        return -1;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        if (!s)
            return -1;
        if (strcmp(s, "pull") == 0)
            *out |= JWT_ACT_PULL;
        else if (strcmp(s, "push") == 0)
            *out |= JWT_ACT_PUSH;
        else if (strcmp(s, "delete") == 0)
            *out |= JWT_ACT_DELETE;
        else if (strcmp(s, "*") == 0)
            *out |= JWT_ACT_ALL;
        /* other actions (e.g. "metadata-read") grant nothing here */
    }
    return 0;
}

static cmk_err parse_claims(const json_t *c, jwt_token *t, char *err, size_t cap)
{
    const json_t *v, *acc;
    size_t i;

    if (!json_is_object(c))
        return fail(err, cap, CMK_E_INVAL, "the token's claims are not a JSON object");
    v = json_object_get(c, "iss");
    if (v && copy_str(v, t->iss, sizeof(t->iss)) != 0)
        return fail(err, cap, CMK_E_INVAL, "the token's iss is not a short string");
    v = json_object_get(c, "sub");
    if (v && json_string_length(v) > 0 && copy_str(v, t->sub, sizeof(t->sub)) != 0)
        return fail(err, cap, CMK_E_INVAL, "the token's sub is not a short string");
    v = json_object_get(c, "aud");
    if (json_is_string(v)) {
        if (copy_str(v, t->aud[0], sizeof(t->aud[0])) != 0)
            return fail(err, cap, CMK_E_INVAL, "the token's aud is not a short string");
        t->naud = 1;
    } else if (json_is_array(v)) {
        json_t *a;
        if (json_array_size(v) > JWT_MAX_AUD)
            return fail(err, cap, CMK_E_INVAL, "the token names more than %d audiences",
                        JWT_MAX_AUD);
        json_array_foreach(v, i, a)
        {
            if (copy_str(a, t->aud[t->naud], sizeof(t->aud[0])) != 0)
                return fail(err, cap, CMK_E_INVAL, "the token's aud holds a bad entry");
            t->naud++;
        }
    } else if (v) {
        return fail(err, cap, CMK_E_INVAL, "the token's aud is neither a string nor a list");
    }
    v = json_object_get(c, "exp");
    if (v) {
        if (get_time(v, &t->exp) != 0)
            return fail(err, cap, CMK_E_INVAL, "the token's exp is not a number");
        t->has_exp = 1;
    }
    v = json_object_get(c, "nbf");
    if (v) {
        if (get_time(v, &t->nbf) != 0)
            return fail(err, cap, CMK_E_INVAL, "the token's nbf is not a number");
        t->has_nbf = 1;
    }
    acc = json_object_get(c, "access");
    if (!acc || json_is_null(acc))
        return CMK_OK; /* a token for /v2/ alone */
    if (!json_is_array(acc) || json_array_size(acc) > JWT_MAX_ACCESS)
        return fail(err, cap, CMK_E_INVAL, "the token's access is not a list of at most %d entries",
                    JWT_MAX_ACCESS);
    json_array_foreach(acc, i, v)
    {
        jwt_access *e = &t->access[t->naccess];
        if (!json_is_object(v) || copy_str(json_object_get(v, "type"), e->type, sizeof(e->type)) ||
            copy_str(json_object_get(v, "name"), e->name, sizeof(e->name)) ||
            parse_actions(json_object_get(v, "actions"), &e->actions) != 0)
            return fail(err, cap, CMK_E_INVAL,
                        "the token's access entry %zu is not {type, name, actions}", i + 1);
        t->naccess++;
    }
    return CMK_OK;
}

cmk_err jwt_parse(const char *tok, size_t len, jwt_token *t, char *err, size_t cap)
{
    const char *d1, *d2;
    json_t *h = NULL, *c = NULL;
    const char *alg;
    cmk_err rc = CMK_E_INVAL;

    memset(t, 0, sizeof(*t));
    if (len == 0 || len > JWT_MAX_LEN)
        return fail(err, cap, CMK_E_INVAL, "the token is empty or longer than %d bytes",
                    JWT_MAX_LEN);
    d1 = memchr(tok, '.', len);
    d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return fail(err, cap, CMK_E_INVAL, "the token is not header.payload.signature");
    h = decode_part(tok, (size_t)(d1 - tok));
    if (!json_is_object(h)) {
        rc = fail(err, cap, CMK_E_INVAL, "the token's header is not base64url JSON");
        goto out;
    }
    alg = json_string_value(json_object_get(h, "alg"));
    if (alg && strcmp(alg, "RS256") == 0) {
        t->alg = JWT_ALG_RS256;
    } else if (alg && strcmp(alg, "ES256") == 0) {
        t->alg = JWT_ALG_ES256;
    } else {
        /* "none", HMAC and the rest are refused: only the configured public keys sign. */
        rc = fail(err, cap, CMK_E_INVAL, "the token's alg is not RS256 or ES256");
        goto out;
    }
    if (json_object_get(h, "crit")) {
        rc = fail(err, cap, CMK_E_INVAL, "the token has critical header parameters");
        goto out;
    }
    c = decode_part(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!c) {
        rc = fail(err, cap, CMK_E_INVAL, "the token's payload is not base64url JSON");
        goto out;
    }
    rc = parse_claims(c, t, err, cap);
    if (rc != CMK_OK)
        goto out;
    if (b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), t->sig, sizeof(t->sig), &t->siglen) !=
            0 ||
        t->siglen == 0 || (t->alg == JWT_ALG_ES256 && t->siglen != 64)) {
        rc = fail(err, cap, CMK_E_INVAL, "the token's signature is malformed");
        goto out;
    }
    t->signed_len = (size_t)(d2 - tok);
    rc = CMK_OK;
out:
    json_decref(h);
    json_decref(c);
    return rc;
}

cmk_err jwt_check_claims(const jwt_token *t, const char *issuer, const char *audience, int64_t now,
                         unsigned skew, char *err, size_t cap)
{
    int aud_ok = 0;

    if (strcmp(t->iss, issuer) != 0)
        return fail(err, cap, CMK_E_INVAL, "the token's issuer is not the configured one");
    for (size_t i = 0; i < t->naud; i++)
        aud_ok |= strcmp(t->aud[i], audience) == 0;
    if (!aud_ok)
        return fail(err, cap, CMK_E_INVAL, "the token is not for this service (aud)");
    if (!t->has_exp)
        return fail(err, cap, CMK_E_INVAL, "the token has no expiry (exp)");
    /* now is a real clock reading and skew small: neither subtraction nor addition wraps. */
    if (now - (int64_t)skew >= t->exp)
        return fail(err, cap, CMK_E_REFUSED, "the token has expired");
    if (t->has_nbf && now + (int64_t)skew < t->nbf)
        return fail(err, cap, CMK_E_REFUSED, "the token is not valid yet (nbf)");
    return CMK_OK;
}

unsigned jwt_granted(const jwt_token *t, const char *type, const char *name)
{
    unsigned got = 0;

    for (size_t i = 0; i < t->naccess; i++)
        if (strcmp(t->access[i].type, type) == 0 && strcmp(t->access[i].name, name) == 0)
            got |= t->access[i].actions;
    if (got & JWT_ACT_ALL)
        got |= JWT_ACT_PULL | JWT_ACT_PUSH | JWT_ACT_DELETE;
    return got;
}

/* JWS ES256 signatures are r || s (32 bytes each); OpenSSL verifies DER. */
static int es256_der(const unsigned char sig[64], unsigned char *der, size_t cap, size_t *len)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
    unsigned char *p = der;
    int n = -1;

    if (s && r && ss && ECDSA_SIG_set0(s, r, ss) == 1) {
        r = ss = NULL; /* owned by s */
        n = i2d_ECDSA_SIG(s, NULL);
        if (n > 0 && (size_t)n <= cap)
            n = i2d_ECDSA_SIG(s, &p);
        else
            n = -1;
    }
    BN_free(r);
    BN_free(ss);
    ECDSA_SIG_free(s);
    if (n <= 0)
        return -1;
    *len = (size_t)n;
    return 0;
}

static int key_fits(const jwt_token *t, EVP_PKEY *k)
{
    char group[64];
    size_t glen = 0;

    if (t->alg == JWT_ALG_RS256)
        return EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) >= 2048;
    return EVP_PKEY_is_a(k, "EC") &&
           EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                          &glen) == 1 &&
           strcmp(group, "prime256v1") == 0;
}

int jwt_verify(const jwt_token *t, const char *tok, EVP_PKEY *const *keys, size_t nkeys)
{
    unsigned char der[80];
    const unsigned char *sig = t->sig;
    size_t siglen = t->siglen;
    int ok = 0;

    if (t->alg == JWT_ALG_ES256) {
        if (t->siglen != 64 || es256_der(t->sig, der, sizeof(der), &siglen) != 0)
            return 0;
        sig = der;
    }
    for (size_t i = 0; i < nkeys && !ok; i++) {
        EVP_MD_CTX *ctx;
        if (!key_fits(t, keys[i]))
            continue;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
            return 0;
        ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, keys[i]) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)tok, t->signed_len) == 1;
        EVP_MD_CTX_free(ctx);
    }
    return ok;
}
