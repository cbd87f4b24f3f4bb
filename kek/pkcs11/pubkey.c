/* pubkey.c — public keys of key versions and their cache (see pubkey.h). */
#include "kek/pkcs11/pubkey.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kek/pkcs11/objects.h"

static cmk_err pub_from_parts(const unsigned char *n, size_t nlen, const unsigned char *e,
                              size_t elen, EVP_PKEY **out, cmk_errbuf *eb)
{
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL);
    BIGNUM *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        ERR_clear_error();
        EVP_PKEY_free(*out);
        *out = NULL;
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "cannot build an RSA public key from the token's modulus and "
                            "exponent");
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return rc;
}

/* Reads CKA_MODULUS and CKA_PUBLIC_EXPONENT (public attributes; nothing else is asked). */
static cmk_err read_pub(cmk_p11 *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, const char *kd,
                        EVP_PKEY **out, CK_RV *rv, cmk_errbuf *eb)
{
    CK_ATTRIBUTE at[] = {
        {CKA_MODULUS, NULL, 0},
        {CKA_PUBLIC_EXPONENT, NULL, 0},
    };
    unsigned char *buf = NULL;
    cmk_err rc = CMK_OK;

    *rv = h->f->C_GetAttributeValue(s, obj, at, 2);
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        goto out;
    }
    if (at[0].ulValueLen == 0 || at[0].ulValueLen > CMK_P11_MOD_MAX || at[1].ulValueLen == 0 ||
        at[1].ulValueLen > 16) {
        rc =
            cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                           "%s in PKCS#11 token \"%s\" has no usable RSA public key", kd, h->token);
        goto out;
    }
    buf = malloc(at[0].ulValueLen + at[1].ulValueLen);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory reading a public key");
        goto out;
    }
    at[0].pValue = buf;
    at[1].pValue = buf + at[0].ulValueLen;
    *rv = h->f->C_GetAttributeValue(s, obj, at, 2);
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        goto out;
    }
    rc = pub_from_parts(at[0].pValue, at[0].ulValueLen, at[1].pValue, at[1].ulValueLen, out, eb);
out:
    free(buf);
    return rc;
}

static cmk_err op_public(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    cmk_p11_ver *c = vctx;
    CK_OBJECT_HANDLE priv, pub;
    char kd[CMK_P11_KD_MAX];
    EVP_PKEY *key = NULL;
    cmk_err rc;

    cmk_p11_keydesc(kd, sizeof(kd), c->label, c->id);
    /* The version exists while its private key does. */
    rc = cmk_p11_find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &priv, NULL, rv, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_p11_find_version(h, s, c->label, c->id, CKO_PUBLIC_KEY, &pub, NULL, rv, eb);
    if (rc == CMK_E_KEY_NOT_FOUND) {
        /* No public-key object: the private key's modulus and exponent are public too. */
        cmk_errbuf_clear(eb);
        pub = priv;
    } else if (rc != CMK_OK) {
        return rc;
    }
    rc = read_pub(h, s, pub, kd, &key, rv, eb);
    c->out = key;
    return rc;
}

/* The cache entry of (label, id), or NULL; called with h->mu held. */
static struct cmk_p11_keyent *cache_find(cmk_p11 *h, const char *label, const unsigned char *id)
{
    for (struct cmk_p11_keyent *k = h->keys; k; k = k->next) {
        if (memcmp(k->id, id, CMK_P11_ID_LEN) == 0 && strcmp(k->label, label) == 0)
            return k;
    }
    return NULL;
}

cmk_err cmk_p11_cached_key(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY **pub,
                           unsigned *algs, cmk_errbuf *eb)
{
    cmk_p11_ver c = {label, id, 0, NULL};
    struct cmk_p11_keyent *k, *nk = NULL;
    cmk_err rc;

    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (k) {
        *pub = k->pub;
        *algs = k->algs;
        EVP_PKEY_up_ref(k->pub);
    }
    pthread_mutex_unlock(&h->mu);
    if (k)
        return CMK_OK;
    rc = cmk_p11_run(h, op_public, &c, eb);
    if (rc != CMK_OK)
        return rc;
    nk = calloc(1, sizeof(*nk));
    if (!nk) {
        EVP_PKEY_free(c.out);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory caching a public key");
    }
    snprintf(nk->label, sizeof(nk->label), "%s", label);
    memcpy(nk->id, id, CMK_P11_ID_LEN);
    nk->pub = c.out;
    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (!k) {
        nk->next = h->keys;
        h->keys = nk;
        k = nk;
        nk = NULL;
    }
    *pub = k->pub;
    *algs = k->algs;
    EVP_PKEY_up_ref(k->pub);
    pthread_mutex_unlock(&h->mu);
    if (nk) {
        /* Another thread cached it first. */
        EVP_PKEY_free(nk->pub);
        free(nk);
    }
    return CMK_OK;
}

void cmk_p11_cache_set_algs(cmk_p11 *h, const char *label, const unsigned char *id, unsigned algs)
{
    struct cmk_p11_keyent *k;

    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (k)
        k->algs = algs;
    pthread_mutex_unlock(&h->mu);
}

void cmk_p11_cache_drop(cmk_p11 *h, const char *label, const unsigned char *id)
{
    struct cmk_p11_keyent **pp, *dead = NULL;

    pthread_mutex_lock(&h->mu);
    for (pp = &h->keys; *pp;) {
        struct cmk_p11_keyent *k = *pp;
        if (!label ||
            (strcmp(k->label, label) == 0 && (!id || memcmp(k->id, id, CMK_P11_ID_LEN) == 0))) {
            *pp = k->next;
            k->next = dead;
            dead = k;
        } else {
            pp = &k->next;
        }
    }
    pthread_mutex_unlock(&h->mu);
    while (dead) {
        struct cmk_p11_keyent *next = dead->next;
        EVP_PKEY_free(dead->pub);
        free(dead);
        dead = next;
    }
}

cmk_err cmk_p11_key_public(cmk_p11 *h, const char *label, const char *version, EVP_PKEY **out,
                           cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    unsigned algs;
    cmk_err rc;

    *out = NULL;
    rc = cmk_p11_check_label(label, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_resolve_id(h, label, version, id, eb);
    if (rc == CMK_OK) /* the cache may outlive the key: check it still exists */
        rc = cmk_p11_key_exists(h, label, id, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_cached_key(h, label, id, out, &algs, eb);
    return rc;
}
