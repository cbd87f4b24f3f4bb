/* keygen.c — software keys: generation, version records, private key files (see keygen.h). */
#include "kek/vault/keygen.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <strings.h>

#include "core/base/b64url.h"
#include "core/base/fsutil.h"
#include "core/base/secmem.h"
#include "kek/vault/common.h"

#define PEM_MAX (64u * 1024u)

/* RFC 7515 base64url without padding (JWK "n", "e", "x", "y"). malloc'd; NULL on ENOMEM. */
static char *b64url(const unsigned char *in, size_t n)
{
    size_t cap = (n + 2) / 3 * 4 + 1;
    char *out = malloc(cap);

    if (out && cmk_b64url_encode(in, n, out, cap) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

cmk_err cmk_vkey_parse_type(const char *kty, unsigned size, cmk_vkty *t, unsigned *bits,
                            cmk_errbuf *eb)
{
    if (!kty || !*kty || strcasecmp(kty, "RSA") == 0)
        *t = CMK_VKTY_RSA;
    else if (strcasecmp(kty, "RSA-HSM") == 0)
        *t = CMK_VKTY_RSA_HSM;
    else if (strcasecmp(kty, "EC") == 0)
        *t = CMK_VKTY_EC;
    else if (strcasecmp(kty, "EC-HSM") == 0 || strcasecmp(kty, "oct") == 0 ||
             strcasecmp(kty, "oct-HSM") == 0)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                              "key type %s is not supported by the local vault: use RSA (stores "
                              "accept only RSA and RSA-HSM keys)",
                              kty);
    else
        return cmk_errbuf_set(eb, CMK_E_INVAL, "unknown key type '%.40s': use RSA, RSA-HSM or EC",
                              kty);
    if (*t == CMK_VKTY_EC) {
        *bits = size ? size : 256;
        if (*bits != 256 && *bits != 384 && *bits != 521)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "EC key size must be 256, 384 or 521 (curve P-256, P-384, "
                                  "P-521), not %u",
                                  size);
    } else {
        *bits = size ? size : 2048;
        if (*bits != 2048 && *bits != 3072 && *bits != 4096)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "RSA key size must be 2048, 3072 or 4096, not %u", size);
    }
    return CMK_OK;
}

static const char *ec_curve(unsigned bits)
{
    return bits == 256 ? "P-256" : bits == 384 ? "P-384" : "P-521";
}

/* A big-number parameter of pkey as base64url of exactly `pad` bytes (0: minimal). */
static cmk_err bn_param_b64(const EVP_PKEY *pkey, const char *param, int pad, json_t *ver,
                            const char *field, cmk_errbuf *eb)
{
    BIGNUM *bn = NULL;
    unsigned char *buf = NULL;
    char *s = NULL;
    int n;
    cmk_err rc = CMK_OK;

    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot read the public key (%s)", field);
        goto out;
    }
    n = pad ? pad : BN_num_bytes(bn);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || BN_bn2binpad(bn, buf, n) != n) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot encode the public key (%s)", field);
        goto out;
    }
    s = b64url(buf, (size_t)n);
    if (!s || cmk_vault_jset(ver, field, json_string(s)) != 0)
        rc = cmk_vault_nomem(eb);
out:
    free(s);
    free(buf);
    BN_free(bn);
    ERR_clear_error();
    return rc;
}

cmk_err cmk_vkey_generate(cmk_vkty t, unsigned bits, EVP_PKEY **out, cmk_errbuf *eb)
{
    if (t == CMK_VKTY_EC)
        *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", ec_curve(bits));
    else
        *out = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    ERR_clear_error();
    if (!*out)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "key generation (%s %u) failed in OpenSSL",
                              t == CMK_VKTY_EC ? "EC" : "RSA", bits);
    return CMK_OK;
}

cmk_err cmk_vkey_version_record(EVP_PKEY *pkey, cmk_vkty t, unsigned bits, const char *version,
                                json_t **out, cmk_errbuf *eb)
{
    char now[32];
    json_t *v;
    cmk_err rc;

    cmk_vault_now_iso(now);
    *out = NULL;
    v = json_pack("{s:s, s:s, s:i, s:s, s:s, s:b}", "version", version, "kty",
                  t == CMK_VKTY_EC        ? "EC"
                  : t == CMK_VKTY_RSA_HSM ? "RSA-HSM"
                                          : "RSA",
                  "bits", (int)bits, "created", now, "updated", now, "enabled", 1);
    if (!v)
        return cmk_vault_nomem(eb);
    if (t == CMK_VKTY_EC) {
        int fb = (int)((bits + 7) / 8);
        rc = cmk_vault_jset(v, "crv", json_string(ec_curve(bits))) ? cmk_vault_nomem(eb) : CMK_OK;
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, fb, v, "x", eb);
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, fb, v, "y", eb);
    } else {
        rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0, v, "n", eb);
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0, v, "e", eb);
    }
    if (rc != CMK_OK) {
        json_decref(v);
        return rc;
    }
    *out = v;
    return CMK_OK;
}

/* Writes the private key as PKCS#8 PEM (0600). The PEM text lives only in a secure-heap BIO,
 * cleansed before it is freed. */
cmk_err cmk_vkey_write_private(EVP_PKEY *pkey, const char *path, cmk_errbuf *eb)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *data = NULL;
    long n;
    cmk_err rc;

    if (!b || PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(b, &data)) <= 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot encode a private key");
        goto out;
    }
    rc = cmk_write_file_atomic(path, data, (size_t)n, 0600, eb);
    cmk_cleanse(data, (size_t)n);
out:
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* vault keys are never encrypted: do not prompt */
}

cmk_err cmk_vkey_read_private(const char *path, const char *vkid, int want_rsa, EVP_PKEY **out,
                              cmk_errbuf *eb)
{
    char *text = NULL;
    size_t len = 0;
    BIO *b = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_read_file(path, PEM_MAX, &text, &len, eb);
    if (rc == CMK_E_NOT_FOUND) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                            "the private key of " CMK_VAULT_KID_SHOW " is gone (purged?)", vkid);
        goto out;
    }
    if (rc != CMK_OK)
        goto out;
    b = BIO_new_mem_buf(text, (int)len);
    if (b)
        *out = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    if (!*out || (want_rsa && !EVP_PKEY_is_a(*out, "RSA"))) {
        EVP_PKEY_free(*out);
        *out = NULL;
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "the private key file of " CMK_VAULT_KID_SHOW
                            " cannot be read (damaged): "
                            "restore it from a backup",
                            vkid);
    }
out:
    BIO_free(b);
    if (text) {
        cmk_cleanse(text, len);
        free(text);
    }
    ERR_clear_error();
    return rc;
}
