/* seal.c — HKDF-SHA256 key derivation with commitment, AES-256-GCM. */
#include "core/seal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <pthread.h>
#include <string.h>

#include "core/base/bytes.h"
#include "core/base/secmem.h"

static EVP_KDF *kdf_hkdf;
static EVP_CIPHER *cipher_gcm;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

/* Explicit fetches, once: implicit fetching on every init is measurable for small blobs. */
static void fetch_algs(void)
{
    kdf_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    cipher_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

/* version (u16) || aead || kdf || comp || digest || chunk size (u32) || DEK id (u32), LE. */
static void context_bytes(const cmk_kdf_context *c, uint8_t out[14])
{
    const uint8_t ids[4] = {c->aead, c->kdf, c->comp, c->digest_alg};

    cmk_st16(out, c->version);
    memcpy(out + 2, ids, sizeof(ids));
    cmk_st32(out + 6, c->chunk_size);
    cmk_st32(out + 10, c->dek_id);
}

static cmk_err hkdf_expand(const uint8_t *prk, const char *label, const uint8_t ctx[14],
                           uint8_t *out, size_t outlen, cmk_errbuf *eb)
{
    uint8_t info[64];
    size_t ll = strlen(label);
    EVP_KDF_CTX *kc = NULL;
    OSSL_PARAM params[5];
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    cmk_err rc = CMK_OK;

    memcpy(info, label, ll);
    memcpy(info + ll, ctx, 14);
    kc = EVP_KDF_CTX_new(kdf_hkdf);
    if (!kc)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF unavailable");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)prk, 32);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, ll + 14);
    params[4] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kc, out, outlen, params) != 1)
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF-Expand failed");
    EVP_KDF_CTX_free(kc);
    return rc;
}

cmk_err cmk_derive_blobkey(const uint8_t dek[CMK_DEK_LEN], const uint8_t salt[CMK_SALT_LEN],
                           const cmk_kdf_context *ctx, cmk_blobkey *out, cmk_errbuf *eb)
{
    uint8_t prk[32], cb[14];
    EVP_KDF_CTX *kc = NULL;
    OSSL_PARAM params[5];
    int mode = EVP_KDF_HKDF_MODE_EXTRACT_ONLY;
    cmk_err rc;

    pthread_once(&fetch_once, fetch_algs);
    if (!kdf_hkdf)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF unavailable in this OpenSSL");
    kc = EVP_KDF_CTX_new(kdf_hkdf);
    if (!kc)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (HKDF)");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)dek, CMK_DEK_LEN);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, CMK_SALT_LEN);
    params[4] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kc, prk, sizeof(prk), params) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF-Extract failed");
        goto out;
    }
    context_bytes(ctx, cb);
    rc = hkdf_expand(prk, "cmkstore v1 blob key", cb, out->key, CMK_KEY_LEN, eb);
    if (rc == CMK_OK)
        rc = hkdf_expand(prk, "cmkstore v1 commitment", cb, out->commit, CMK_COMMIT_LEN, eb);
out:
    EVP_KDF_CTX_free(kc);
    cmk_cleanse(prk, sizeof(prk));
    return rc;
}

cmk_err cmk_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
                 const char *label, const uint8_t *ctx, size_t ctxlen, uint8_t *out, size_t outlen,
                 cmk_errbuf *eb)
{
    uint8_t info[256];
    size_t ll = strlen(label);
    EVP_KDF_CTX *kc;
    OSSL_PARAM params[5];
    cmk_err rc = CMK_OK;

    pthread_once(&fetch_once, fetch_algs);
    if (!kdf_hkdf)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF unavailable in this OpenSSL");
    if (ll + ctxlen > sizeof(info))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "HKDF info too long");
    memcpy(info, label, ll);
    if (ctxlen)
        memcpy(info + ll, ctx, ctxlen);
    kc = EVP_KDF_CTX_new(kdf_hkdf);
    if (!kc)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (HKDF)");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikmlen);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, ll + ctxlen);
    params[4] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kc, out, outlen, params) != 1)
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "HKDF failed");
    EVP_KDF_CTX_free(kc);
    return rc;
}

cmk_err cmk_check_commitment(const cmk_blobkey *k, const uint8_t stored[CMK_COMMIT_LEN],
                             cmk_errbuf *eb)
{
    if (CRYPTO_memcmp(k->commit, stored, CMK_COMMIT_LEN) != 0)
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                              "key commitment mismatch: the blob header does not belong to "
                              "this store's data key (tampered, or copied from another store)");
    return CMK_OK;
}

void cmk_nonce(uint8_t out[CMK_NONCE_LEN], uint32_t domain, uint64_t counter)
{
    out[0] = (uint8_t)(domain >> 24);
    out[1] = (uint8_t)(domain >> 16);
    out[2] = (uint8_t)(domain >> 8);
    out[3] = (uint8_t)domain;
    cmk_st64be(out + 4, counter);
}

/* GCM in OpenSSL takes int lengths; chunks are at most 16 MiB and indexes far smaller, but
 * check anyway. */
static int len_ok(size_t n)
{
    return n <= (size_t)INT32_MAX;
}

/* The checks and the context both directions start with. */
static cmk_err gcm_ctx_new(size_t len, size_t aadlen, EVP_CIPHER_CTX **out, cmk_errbuf *eb)
{
    pthread_once(&fetch_once, fetch_algs);
    if (!cipher_gcm)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "AES-256-GCM unavailable in this OpenSSL");
    if (!len_ok(len) || !len_ok(aadlen))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "GCM input too large");
    *out = EVP_CIPHER_CTX_new();
    if (!*out)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (cipher)");
    return CMK_OK;
}

/* One AES-256-GCM pass: encrypt (tag out) or decrypt (tag in, verified at the end). */
static cmk_err gcm_run(int enc, const uint8_t key[CMK_KEY_LEN], const uint8_t nonce[CMK_NONCE_LEN],
                       const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                       uint8_t *out, uint8_t tag[CMK_TAG_LEN], cmk_errbuf *eb)
{
    EVP_CIPHER_CTX *c;
    uint8_t fin[16];
    int n = 0;
    cmk_err rc = gcm_ctx_new(len, aadlen, &c, eb);

    if (rc != CMK_OK)
        return rc;
    /* GCM's final step emits no bytes; fin keeps the pointer valid for an empty input. The
     * expected tag is set before the final step, which verifies it. */
    if (EVP_CipherInit_ex2(c, cipher_gcm, key, nonce, enc, NULL) != 1 ||
        (aadlen && EVP_CipherUpdate(c, NULL, &n, aad, (int)aadlen) != 1) ||
        (len && EVP_CipherUpdate(c, out, &n, in, (int)len) != 1) ||
        (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CMK_TAG_LEN, tag) != 1)) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, enc ? "AES-GCM seal failed" : "AES-GCM open failed");
        goto out;
    }
    if (EVP_CipherFinal_ex(c, fin, &n) != 1)
        rc = enc ? cmk_errbuf_set(eb, CMK_E_CRYPTO, "AES-GCM seal failed")
                 : cmk_errbuf_set(eb, CMK_E_INTEGRITY, "authentication tag mismatch");
    else if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CMK_TAG_LEN, tag) != 1)
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "AES-GCM seal failed");
out:
    EVP_CIPHER_CTX_free(c);
    return rc;
}

cmk_err cmk_gcm_seal(const uint8_t key[CMK_KEY_LEN], const uint8_t nonce[CMK_NONCE_LEN],
                     const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len, uint8_t *out,
                     uint8_t tag[CMK_TAG_LEN], cmk_errbuf *eb)
{
    return gcm_run(1, key, nonce, aad, aadlen, in, len, out, tag, eb);
}

cmk_err cmk_gcm_open(const uint8_t key[CMK_KEY_LEN], const uint8_t nonce[CMK_NONCE_LEN],
                     const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                     const uint8_t tag[CMK_TAG_LEN], uint8_t *out, cmk_errbuf *eb)
{
    /* The tag is only read when decrypting. */
    return gcm_run(0, key, nonce, aad, aadlen, in, len, out, (uint8_t *)tag, eb);
}
