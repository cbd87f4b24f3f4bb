/* http_token.c — see http_token.h. */
#include "tools/serve/http_token.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/serve/http_util.h"

#include "tools/serve/registry_access.h"

#define STR_MAX     1024
#define CACHE_SLOTS 64

/* A token whose signature verified: clients send the same token with every request until
 * it expires, and a signature check (with OpenSSL 3's per-call setup) costs more than the
 * rest of a small request. Kept: the SHA-256 of the token and its claims, never the token;
 * the claims (exp, nbf, iss, aud) are checked again at every use. */
struct cached {
    unsigned char h[SHA256_DIGEST_LENGTH];
    int used;
    jwt_token t;
};

struct http_token {
    char realm[STR_MAX], service[JWT_STR_MAX], issuer[JWT_STR_MAX];
    EVP_PKEY *keys[HTTP_TOKEN_MAX_KEYS];
    size_t nkeys;
    unsigned skew;
    pthread_mutex_t mu; /* guards cache and next */
    struct cached *cache;
    unsigned next;
};

#define fail http_fail /* tools/serve/http_util.h */

/* A value that may stand between double quotes in a header. */
static int header_safe(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n >= max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

void http_token_free(http_token *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nkeys; i++)
        EVP_PKEY_free(t->keys[i]);
    if (t->cache) {
        OPENSSL_cleanse(t->cache, CACHE_SLOTS * sizeof(*t->cache));
        free(t->cache);
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

size_t http_token_keys(const http_token *t)
{
    return t ? t->nkeys : 0;
}

const char *http_token_realm(const http_token *t)
{
    return t->realm;
}

static cmk_err add_key(http_token *t, EVP_PKEY *k, const char *path, char *err, size_t cap)
{
    if (!k)
        return fail(err, cap, CMK_E_INVAL, "%s: a block cannot be read as a key or certificate",
                    path);
    if (!((EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) >= 2048) || EVP_PKEY_is_a(k, "EC"))) {
        EVP_PKEY_free(k);
        return fail(err, cap, CMK_E_INVAL,
                    "%s: only RSA keys of 2048 bits or more and EC P-256 keys sign tokens", path);
    }
    if (t->nkeys == HTTP_TOKEN_MAX_KEYS) {
        EVP_PKEY_free(k);
        return fail(err, cap, CMK_E_INVAL, "%s: more than %d keys", path, HTTP_TOKEN_MAX_KEYS);
    }
    t->keys[t->nkeys++] = k;
    return CMK_OK;
}

static cmk_err load_keys(http_token *t, const char *path, char *err, size_t cap)
{
    BIO *b = BIO_new_file(path, "r");
    cmk_err rc = CMK_OK;

    if (!b)
        return fail(err, cap, CMK_E_NOT_FOUND, "cannot open %s", path);
    for (;;) {
        char *name = NULL, *hdr = NULL;
        unsigned char *data = NULL;
        const unsigned char *p;
        long len = 0;
        EVP_PKEY *k = NULL;

        if (PEM_read_bio(b, &name, &hdr, &data, &len) != 1)
            break; /* the end (or junk after the last block, reported below if no key) */
        p = data;
        if (strcmp(name, "CERTIFICATE") == 0) {
            X509 *x = d2i_X509(NULL, &p, len);
            k = x ? X509_get_pubkey(x) : NULL;
            X509_free(x);
            rc = add_key(t, k, path, err, cap);
        } else if (strcmp(name, "PUBLIC KEY") == 0) {
            k = d2i_PUBKEY(NULL, &p, len);
            rc = add_key(t, k, path, err, cap);
        } else if (strstr(name, "PRIVATE KEY")) {
            rc = fail(err, cap, CMK_E_INVAL,
                      "%s holds a private key: give the issuer's certificates or public keys only",
                      path);
        }
        OPENSSL_cleanse(data, (size_t)len);
        OPENSSL_free(name);
        OPENSSL_free(hdr);
        OPENSSL_free(data);
        if (rc != CMK_OK)
            break;
    }
    BIO_free(b);
    if (rc == CMK_OK && t->nkeys == 0)
        rc = fail(err, cap, CMK_E_INVAL,
                  "%s holds no PEM certificate or public key (BEGIN CERTIFICATE / BEGIN PUBLIC "
                  "KEY)",
                  path);
    return rc;
}

cmk_err http_token_load(const http_token_opts *o, http_token **out, char *err, size_t cap)
{
    http_token *t;
    cmk_err rc;

    *out = NULL;
    if (!o->realm || !header_safe(o->realm, STR_MAX) ||
        (strncmp(o->realm, "http://", 7) != 0 && strncmp(o->realm, "https://", 8) != 0))
        return fail(err, cap, CMK_E_INVAL,
                    "the token realm is an http:// or https:// URL of at most %d characters, "
                    "without quotes, backslashes or control characters",
                    STR_MAX - 1);
    if (!o->service || !header_safe(o->service, JWT_STR_MAX))
        return fail(err, cap, CMK_E_INVAL,
                    "the token service is 1 to %d characters without quotes, backslashes or "
                    "control characters",
                    JWT_STR_MAX - 1);
    if (!o->issuer || !header_safe(o->issuer, JWT_STR_MAX))
        return fail(err, cap, CMK_E_INVAL,
                    "the token issuer is 1 to %d characters without quotes, backslashes or "
                    "control characters",
                    JWT_STR_MAX - 1);
    if (!o->certs)
        return fail(err, cap, CMK_E_INVAL, "the token issuer's certificates are needed");
    t = calloc(1, sizeof(*t));
    if (!t)
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    t->cache = calloc(CACHE_SLOTS, sizeof(*t->cache));
    if (!t->cache) {
        http_token_free(t);
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    }
    snprintf(t->realm, sizeof(t->realm), "%s", o->realm);
    snprintf(t->service, sizeof(t->service), "%s", o->service);
    snprintf(t->issuer, sizeof(t->issuer), "%s", o->issuer);
    t->skew = o->skew_s ? o->skew_s : JWT_DEFAULT_SKEW;
    rc = load_keys(t, o->certs, err, cap);
    if (rc != CMK_OK) {
        http_token_free(t);
        return rc;
    }
    *out = t;
    return CMK_OK;
}

enum http_token_result http_token_check(http_token *t, const char *authorization, int64_t now,
                                        jwt_token *out, char *why, size_t whycap)
{
    const char *p = authorization;
    unsigned char h[SHA256_DIGEST_LENGTH];
    int hit = 0;
    size_t n;

    if (why && whycap)
        why[0] = '\0';
    if (!p)
        return HTTP_TOKEN_MISSING;
    p += strspn(p, " ");
    if (strncasecmp(p, "Bearer ", 7) != 0)
        return HTTP_TOKEN_MISSING;
    p += 7;
    p += strspn(p, " ");
    n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n > JWT_MAX_LEN) {
        fail(why, whycap, CMK_E_INVAL, "the token is empty or longer than %d bytes", JWT_MAX_LEN);
        return HTTP_TOKEN_INVALID;
    }
    SHA256((const unsigned char *)p, n, h);
    pthread_mutex_lock(&t->mu);
    for (unsigned i = 0; i < CACHE_SLOTS && !hit; i++) {
        if (t->cache[i].used && CRYPTO_memcmp(t->cache[i].h, h, sizeof(h)) == 0) {
            *out = t->cache[i].t;
            hit = 1;
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (!hit) {
        if (jwt_parse(p, n, out, why, whycap) != CMK_OK)
            return HTTP_TOKEN_INVALID;
        if (!jwt_verify(out, p, t->keys, t->nkeys)) {
            fail(why, whycap, CMK_E_INVAL,
                 "the token's signature does not verify with the trusted keys");
            return HTTP_TOKEN_INVALID;
        }
    }
    /* At every use, cached or not: a cached token expires like any other. */
    if (jwt_check_claims(out, t->issuer, t->service, now, t->skew, why, whycap) != CMK_OK)
        return HTTP_TOKEN_INVALID;
    if (!hit) {
        pthread_mutex_lock(&t->mu);
        memcpy(t->cache[t->next].h, h, sizeof(h));
        t->cache[t->next].t = *out;
        t->cache[t->next].used = 1;
        t->next = (t->next + 1) % CACHE_SLOTS;
        pthread_mutex_unlock(&t->mu);
    }
    return HTTP_TOKEN_OK;
}

const char *http_token_challenge(const http_token *t, const char *name, unsigned needs,
                                 const char *error, char *out, size_t cap)
{
    char acts[32], scope[REG_NAME_MAX + 64];
    int n;

    scope[0] = '\0';
    if (needs & REG_NEED_CATALOG) {
        snprintf(scope, sizeof(scope), ",scope=\"registry:catalog:*\"");
    } else if (needs && name && name[0]) {
        reg_access_actions_str(needs, acts, sizeof(acts));
        snprintf(scope, sizeof(scope), ",scope=\"repository:%s:%s\"", name, acts);
    }
    n = snprintf(out, cap, "Bearer realm=\"%s\",service=\"%s\"%s%s%s%s", t->realm, t->service,
                 scope, error ? ",error=\"" : "", error ? error : "", error ? "\"" : "");
    return n > 0 && (size_t)n < cap ? out : NULL;
}
