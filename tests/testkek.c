/* testkek.c — the in-process test KEK provider (see testkek.h). */
#include "tests/testkek.h"

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kek/provider.h"

#define MAXV 16

struct test_kek {
    cmk_kek_provider prov;
    pthread_mutex_t mu;
    EVP_PKEY *keys[MAXV];
    int nversions;
    int identity_wrap;
    cmk_err fail;
    unsigned wraps, unwraps;
};

static const char *PREFIX = "test://vault/keys/k";

static int t_handles(void *self, const char *kid)
{
    (void)self;
    return strncmp(kid, "test://", 7) == 0;
}

/* Version number named by kid: 0 = versionless, -1 = bad. */
static int parse_version(const char *kid)
{
    size_t n = strlen(PREFIX);
    if (strncmp(kid, PREFIX, n) != 0)
        return -1;
    if (kid[n] == '\0')
        return 0;
    if (kid[n] != '/' || kid[n + 1] != 'v')
        return -1;
    int v = atoi(kid + n + 2);
    return v > 0 ? v : -1;
}

static cmk_err resolve(test_kek *t, const char *kid, int *v, cmk_errbuf *eb)
{
    if (t->fail)
        return cmk_errbuf_set(eb, t->fail, "test provider: %s for key %s", cmk_errname(t->fail),
                              kid);
    *v = parse_version(kid);
    if (*v < 0 || *v > t->nversions)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND, "test provider: no key %s", kid);
    if (*v == 0)
        *v = t->nversions;
    return CMK_OK;
}

static cmk_err t_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                          cmk_errbuf *eb)
{
    test_kek *t = self;
    int v;
    cmk_err rc;
    (void)principal;

    pthread_mutex_lock(&t->mu);
    rc = resolve(t, kid, &v, eb);
    if (rc == CMK_OK) {
        memset(out, 0, sizeof(*out));
        snprintf(out->kid, sizeof(out->kid), "%s/v%d", PREFIX, v);
        snprintf(out->versionless, sizeof(out->versionless), "%s", PREFIX);
        snprintf(out->version, sizeof(out->version), "v%d", v);
        out->requested_versioned = parse_version(kid) != 0;
        out->kty = CMK_KTY_RSA;
        out->bits = 2048;
        out->enabled = 1;
        out->wrap_algs = (1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP);
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int set_oaep(EVP_PKEY_CTX *c, cmk_wrap_alg alg)
{
    const EVP_MD *md = alg == CMK_WRAP_RSA_OAEP_256 ? EVP_sha256() : EVP_sha1();
    return EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_oaep_md(c, md) == 1 && EVP_PKEY_CTX_set_rsa_mgf1_md(c, md) == 1;
}

void test_kek_identity_wrap(const unsigned char dek[32], unsigned char out[64])
{
    for (int i = 0; i < 64; i++)
        out[i] = (unsigned char)((i < 32 ? dek[i] : 0) ^ 0x5a);
}

static cmk_err t_wrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                      const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                      cmk_errbuf *eb)
{
    test_kek *t = self;
    EVP_PKEY_CTX *c = NULL;
    int v;
    cmk_err rc;
    (void)principal;

    pthread_mutex_lock(&t->mu);
    rc = resolve(t, vkid, &v, eb);
    if (rc != CMK_OK)
        goto out;
    /* The contract: out holds CMK_WRAPPED_MAX bytes; *outlen is only an output. */
    *outlen = CMK_WRAPPED_MAX;
    if (t->identity_wrap) {
        if (keylen != 32) {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "identity wrap takes 32 bytes");
            goto out;
        }
        test_kek_identity_wrap(dek, out);
        *outlen = 64;
        t->wraps++;
        goto out;
    }
    c = EVP_PKEY_CTX_new_from_pkey(NULL, t->keys[v - 1], NULL);
    if (!c || EVP_PKEY_encrypt_init(c) != 1 || !set_oaep(c, alg) ||
        EVP_PKEY_encrypt(c, out, outlen, dek, keylen) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "test provider: wrap failed");
        goto out;
    }
    t->wraps++;
out:
    EVP_PKEY_CTX_free(c);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static cmk_err t_unwrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                        const unsigned char *wrapped, size_t wlen, unsigned char *dek,
                        size_t *keylen, cmk_errbuf *eb)
{
    test_kek *t = self;
    EVP_PKEY_CTX *c = NULL;
    int v;
    cmk_err rc;
    (void)principal;

    pthread_mutex_lock(&t->mu);
    rc = resolve(t, vkid, &v, eb);
    if (rc != CMK_OK)
        goto out;
    if (t->identity_wrap) {
        if (wlen != 64 || *keylen < 32) {
            rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY, "identity unwrap: bad input");
            goto out;
        }
        for (int i = 0; i < 32; i++)
            dek[i] = wrapped[i] ^ 0x5a;
        *keylen = 32;
        t->unwraps++;
        goto out;
    }
    /* OpenSSL wants room for a whole modulus; decrypt into a scratch buffer. */
    unsigned char tmp[CMK_WRAPPED_MAX];
    size_t tlen = sizeof(tmp);
    c = EVP_PKEY_CTX_new_from_pkey(NULL, t->keys[v - 1], NULL);
    if (!c || EVP_PKEY_decrypt_init(c) != 1 || !set_oaep(c, alg) ||
        EVP_PKEY_decrypt(c, tmp, &tlen, wrapped, wlen) != 1 || tlen > *keylen) {
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY, "test provider: unwrap failed");
        goto out;
    }
    memcpy(dek, tmp, tlen);
    *keylen = tlen;
    OPENSSL_cleanse(tmp, sizeof(tmp));
    t->unwraps++;
out:
    EVP_PKEY_CTX_free(c);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* No release: the test owns test_kek and frees it with test_kek_free. */
static const cmk_kek_provider test_ops = {.name = "test",
                                          .handles = t_handles,
                                          .describe = t_describe,
                                          .wrap = t_wrap,
                                          .unwrap = t_unwrap};

test_kek *test_kek_new(int identity_wrap)
{
    test_kek *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->identity_wrap = identity_wrap;
    cmk_kek_provider_fill(&t->prov, &test_ops, t);
    if (test_kek_add_version(t) != 1) {
        test_kek_free(t);
        return NULL;
    }
    return t;
}

int test_kek_add_version(test_kek *t)
{
    EVP_PKEY *k;
    int v;

    if (t->nversions >= MAXV)
        return -1;
    /* RSA keygen is slow under ASan; identity-wrap providers don't need real keys. */
    k = t->identity_wrap ? NULL : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!t->identity_wrap && !k)
        return -1;
    pthread_mutex_lock(&t->mu);
    t->keys[t->nversions++] = k;
    v = t->nversions;
    pthread_mutex_unlock(&t->mu);
    return v;
}

void test_kek_free(test_kek *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nversions; i++)
        EVP_PKEY_free(t->keys[i]);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

const cmk_kek_provider *test_kek_provider(test_kek *t)
{
    return &t->prov;
}

void test_kek_fail(test_kek *t, cmk_err code)
{
    pthread_mutex_lock(&t->mu);
    t->fail = code;
    pthread_mutex_unlock(&t->mu);
}

unsigned test_kek_wraps(const test_kek *t)
{
    return t->wraps;
}

unsigned test_kek_unwraps(const test_kek *t)
{
    return t->unwraps;
}
