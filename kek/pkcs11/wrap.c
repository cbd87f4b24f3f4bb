/* wrap.c — wrapping in software with a version's public key, unwrapping in the token, and
 * the negotiation of the OAEP hashes a token can undo (see pkcs11.h, "Wrap algorithms"). */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <string.h>

#include "core/base/secmem.h"
#include "kek/pkcs11/objects.h"
#include "kek/pkcs11/pubkey.h"
#include "kek/pkcs11/rv.h"

#define P11_PROBE_LEN 32 /* bytes round-tripped to negotiate the wrap algorithm */

static const EVP_MD *alg_md(cmk_wrap_alg alg)
{
    return alg == CMK_WRAP_RSA_OAEP_256 ? EVP_sha256() : EVP_sha1();
}

/* The checks wrap and unwrap share: label, algorithm, version (decoded into id). */
static cmk_err check_args(const char *label, const char *version, cmk_wrap_alg alg,
                          unsigned char id[CMK_P11_ID_LEN], cmk_errbuf *eb)
{
    cmk_err rc = cmk_p11_check_label(label, eb);

    if (rc == CMK_OK && alg != CMK_WRAP_RSA_OAEP_256 && alg != CMK_WRAP_RSA_OAEP)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "wrap algorithm %d is not supported: use RSA-OAEP-256 or RSA-OAEP",
                            (int)alg);
    if (rc == CMK_OK)
        rc = cmk_p11_version_parse(version, id, NULL, eb);
    return rc;
}

/* RSA-OAEP encryption with the public key, in software. */
static cmk_err sw_encrypt(EVP_PKEY *pub, cmk_wrap_alg alg, const unsigned char *in, size_t inlen,
                          unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    const EVP_MD *md = alg_md(alg);
    size_t need = 0;
    cmk_err rc = CMK_OK;

    if (!ctx || EVP_PKEY_encrypt_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) <= 0 ||
        EVP_PKEY_encrypt(ctx, NULL, &need, in, inlen) <= 0) {
        rc =
            cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot set up %s encryption", cmk_wrap_alg_name(alg));
        goto out;
    }
    if (need > *outlen) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "wrapped key needs %zu bytes, the buffer holds %zu",
                            need, *outlen);
        goto out;
    }
    need = *outlen;
    if (EVP_PKEY_encrypt(ctx, out, &need, in, inlen) <= 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "%s encryption of a %zu-byte key failed (too long for the RSA "
                            "key?)",
                            cmk_wrap_alg_name(alg), inlen);
        goto out;
    }
    *outlen = need;
out:
    if (rc != CMK_OK)
        ERR_clear_error();
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

struct dec_ctx {
    const char *label;
    const unsigned char *id;
    cmk_wrap_alg alg;
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t cap;
    size_t outlen;
};

static cmk_err op_decrypt(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct dec_ctx *c = vctx;
    CK_RSA_PKCS_OAEP_PARAMS p;
    CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &p, sizeof(p)};
    CK_OBJECT_HANDLE obj;
    char kd[CMK_P11_KD_MAX];
    unsigned char *buf = NULL;
    unsigned bits = 0;
    char rvs[CMK_P11_RV_NAME_MAX];
    CK_ULONG n;
    cmk_err rc;

    cmk_p11_keydesc(kd, sizeof(kd), c->label, c->id);
    rc = cmk_p11_find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, &bits, rv, eb);
    if (rc != CMK_OK)
        goto out;
    memset(&p, 0, sizeof(p));
    p.hashAlg = c->alg == CMK_WRAP_RSA_OAEP_256 ? CKM_SHA256 : CKM_SHA_1;
    p.mgf = c->alg == CMK_WRAP_RSA_OAEP_256 ? CKG_MGF1_SHA256 : CKG_MGF1_SHA1;
    p.source = CKZ_DATA_SPECIFIED; /* empty OAEP label, as OpenSSL uses */
    p.pSourceData = NULL;
    p.ulSourceDataLen = 0;
    if (c->inlen != bits / 8) {
        /* RSA ciphertext is exactly the modulus length; tokens answer anything else with
         * assorted codes, some of them CKR_GENERAL_ERROR. */
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "%s in PKCS#11 token \"%s\" (module %s) cannot unwrap a %zu-byte "
                            "wrapped key: RSA-%u gives %u bytes; it was altered or wrapped by "
                            "another key",
                            kd, h->token, h->module, c->inlen, bits, bits / 8);
        goto out;
    }
    /* The plaintext is shorter than the modulus; decrypt into secret memory of that size so
     * the token never sees a short buffer (which would leave the operation active). */
    buf = cmk_secalloc(bits / 8);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory unwrapping a key");
        goto out;
    }
    *rv = h->f->C_DecryptInit(s, &mech, obj);
    if (*rv == CKR_MECHANISM_PARAM_INVALID || *rv == CKR_ARGUMENTS_BAD ||
        *rv == CKR_MECHANISM_INVALID) {
        cmk_p11_rv_name(*rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap %s with %s (%s): "
                            "wrap with an algorithm the token supports",
                            h->token, h->module, cmk_wrap_alg_name(c->alg), kd, rvs);
        goto out;
    }
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_DecryptInit", eb);
        goto out;
    }
    n = bits / 8;
    *rv = h->f->C_Decrypt(s, (CK_BYTE_PTR)c->in, (CK_ULONG)c->inlen, buf, &n);
    /* Bad OAEP padding is reported as ENCRYPTED_DATA_INVALID by the book, but also as
     * DATA_INVALID, or (SoftHSM2) GENERAL_ERROR / FUNCTION_FAILED. The key and the session
     * just worked for C_DecryptInit; if the session still answers, the token is fine and
     * the ciphertext is what it rejected. */
    if (*rv == CKR_ENCRYPTED_DATA_INVALID || *rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
        *rv == CKR_DATA_INVALID || *rv == CKR_DATA_LEN_RANGE ||
        ((*rv == CKR_GENERAL_ERROR || *rv == CKR_FUNCTION_FAILED) && cmk_p11_sess_alive(h, s))) {
        cmk_p11_rv_name(*rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "%s in PKCS#11 token \"%s\" (module %s) could not unwrap the key "
                            "with %s (%s): it was altered, or wrapped by another key or "
                            "algorithm",
                            kd, h->token, h->module, cmk_wrap_alg_name(c->alg), rvs);
        goto out;
    }
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_Decrypt", eb);
        goto out;
    }
    if (n > c->cap) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "unwrapped key is %lu bytes, the buffer holds %zu",
                            (unsigned long)n, c->cap);
        goto out;
    }
    memcpy(c->out, buf, n);
    c->outlen = n;
out:
    cmk_secfree(buf);
    return rc;
}

static cmk_err unwrap_id(cmk_p11 *h, const char *label, const unsigned char *id, cmk_wrap_alg alg,
                         const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                         size_t *keylen, cmk_errbuf *eb)
{
    struct dec_ctx c = {label, id, alg, wrapped, wrappedlen, dek, *keylen, 0};
    cmk_err rc;

    if (wrappedlen == 0 || wrappedlen > CMK_WRAPPED_MAX)
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY, "wrapped key has a bad length (%zu bytes)",
                              wrappedlen);
    rc = cmk_p11_run(h, op_decrypt, &c, eb);
    if (rc == CMK_OK)
        *keylen = c.outlen;
    return rc;
}

/* One negotiation round trip: 1 if the token undid alg, 0 if it cannot, else an error. */
static cmk_err probe(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY *pub,
                     cmk_wrap_alg alg, int *ok, cmk_errbuf *eb)
{
    unsigned char *sec = cmk_secalloc(2 * P11_PROBE_LEN);
    unsigned char ct[CMK_WRAPPED_MAX];
    size_t ctlen = sizeof(ct), outlen = P11_PROBE_LEN;
    cmk_err rc;

    *ok = 0;
    if (!sec)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory");
    rc = cmk_random(sec, P11_PROBE_LEN, eb);
    if (rc != CMK_OK)
        goto out;
    rc = sw_encrypt(pub, alg, sec, P11_PROBE_LEN, ct, &ctlen, eb);
    if (rc != CMK_OK)
        goto out;
    rc = unwrap_id(h, label, id, alg, ct, ctlen, sec + P11_PROBE_LEN, &outlen, eb);
    if (rc == CMK_E_UNSUPPORTED || rc == CMK_E_INTEGRITY) {
        /* Rejected parameters, or a token that silently used another hash. */
        cmk_errbuf_clear(eb);
        rc = CMK_OK;
        goto out;
    }
    if (rc != CMK_OK)
        goto out;
    *ok = outlen == P11_PROBE_LEN && CRYPTO_memcmp(sec, sec + P11_PROBE_LEN, P11_PROBE_LEN) == 0;
out:
    cmk_secfree(sec);
    return rc;
}

static cmk_err negotiated(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY **pub,
                          unsigned *algs, cmk_errbuf *eb)
{
    static const cmk_wrap_alg order[] = {CMK_WRAP_RSA_OAEP_256, CMK_WRAP_RSA_OAEP};
    char kd[CMK_P11_KD_MAX];
    unsigned got = 0;
    cmk_err rc;

    *pub = NULL;
    rc = cmk_p11_cached_key(h, label, id, pub, algs, eb);
    if (rc != CMK_OK || *algs != 0)
        goto out;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int ok = 0;

        rc = probe(h, label, id, *pub, order[i], &ok, eb);
        if (rc != CMK_OK)
            goto out;
        if (ok)
            got |= 1u << order[i];
    }
    if (got == 0) {
        cmk_p11_keydesc(kd, sizeof(kd), label, id);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap with %s under "
                            "RSA-OAEP-256 or RSA-OAEP (do its public and private halves "
                            "match?)",
                            h->token, h->module, kd);
        goto out;
    }
    cmk_p11_cache_set_algs(h, label, id, got);
    *algs = got;
out:
    if (rc != CMK_OK) {
        EVP_PKEY_free(*pub);
        *pub = NULL;
    }
    return rc;
}

cmk_err cmk_p11_wrap_algs(cmk_p11 *h, const char *label, const char *version, unsigned *algs,
                          cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    EVP_PKEY *pub = NULL;
    cmk_err rc;

    *algs = 0;
    rc = cmk_p11_check_label(label, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc == CMK_OK)
        rc = negotiated(h, label, id, &pub, algs, eb);
    EVP_PKEY_free(pub);
    return rc;
}

cmk_err cmk_p11_wrap(cmk_p11 *h, const char *label, const char *version, cmk_wrap_alg alg,
                     const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                     cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    char kd[CMK_P11_KD_MAX];
    EVP_PKEY *pub = NULL;
    unsigned algs = 0;
    cmk_err rc;

    rc = check_args(label, version, alg, id, eb);
    /* The public key is cached; the private key must still exist (revocation = destroy). */
    if (rc == CMK_OK)
        rc = cmk_p11_key_exists(h, label, id, NULL, eb);
    if (rc == CMK_OK)
        rc = negotiated(h, label, id, &pub, &algs, eb);
    if (rc != CMK_OK)
        goto out;
    if (!(algs & (1u << alg))) {
        cmk_p11_keydesc(kd, sizeof(kd), label, id);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap %s with %s, so "
                            "nothing is wrapped with it: use %s",
                            h->token, h->module, cmk_wrap_alg_name(alg), kd,
                            (algs & (1u << CMK_WRAP_RSA_OAEP_256)) ? "RSA-OAEP-256" : "RSA-OAEP");
        goto out;
    }
    rc = sw_encrypt(pub, alg, dek, keylen, out, outlen, eb);
out:
    EVP_PKEY_free(pub);
    return rc;
}

cmk_err cmk_p11_unwrap(cmk_p11 *h, const char *label, const char *version, cmk_wrap_alg alg,
                       const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                       size_t *keylen, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    cmk_err rc;

    rc = check_args(label, version, alg, id, eb);
    if (rc == CMK_OK)
        rc = unwrap_id(h, label, id, alg, wrapped, wrappedlen, dek, keylen, eb);
    return rc;
}
