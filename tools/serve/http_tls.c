/*
 * http_tls.c — the certificate and key of an HTTPS server (see http_tls.h): loaded from the
 * operator's files or a self-signed pair generated into the home, checked with OpenSSL, and
 * the leaf's SHA-256 fingerprint.
 */
#include "tools/serve/http_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"

#define PEM_MAX   (256u << 10) /* a chain of a few certificates fits many times over */
#define CERT_DAYS 3650

static __attribute__((format(printf, 4, 5))) cmk_err fail(char *err, size_t cap, cmk_err rc,
                                                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (err && cap)
        vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return rc;
}

/* Reads a whole PEM file (terminated). secret: refused if group or others may read it. */
static cmk_err read_pem(const char *path, int secret, char **out, char *err, size_t cap)
{
    cmk_errbuf eb = {0};
    struct stat st;
    size_t len = 0;
    cmk_err rc = CMK_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    *out = NULL;
    if (fd < 0)
        return fail(err, cap, errno == ENOENT ? CMK_E_NOT_FOUND : CMK_E_IO, "cannot open %s: %s",
                    path, strerror(errno));
    /* The mode is checked on the open file, before a byte of the key is read; a file that is
     * not regular is left to cmk_read_fd, which refuses it. */
    if (secret) {
        if (fstat(fd, &st) != 0)
            rc = fail(err, cap, CMK_E_IO, "cannot stat %s: %s", path, strerror(errno));
        else if (S_ISREG(st.st_mode) && (st.st_mode & 077))
            rc = fail(err, cap, CMK_E_REFUSED,
                      "%s is accessible to group or others (mode %04o); it holds a private key: "
                      "make it 0600",
                      path, (unsigned)(st.st_mode & 07777));
        if (rc != CMK_OK) {
            close(fd);
            return rc;
        }
    }
    /* Closes fd. Not a regular file, too large or cut short: a bad option value (exit 2). */
    rc = cmk_read_fd(fd, path, PEM_MAX, out, &len, NULL, &eb);
    if (rc != CMK_OK)
        return fail(err, cap, rc == CMK_E_CORRUPT ? CMK_E_INVAL : rc, "%s", eb.msg);
    if (len == 0) {
        free(*out);
        *out = NULL;
        return fail(err, cap, CMK_E_INVAL, "%s is empty", path);
    }
    return CMK_OK;
}

/* Writes data to path (mode), replacing it atomically and durably (temporary beside it,
 * fsync, rename, fsync of the directory: core/base/fsutil). */
static cmk_err write_file(const char *path, const char *data, size_t len, mode_t mode, char *err,
                          size_t cap)
{
    cmk_errbuf eb = {0};
    cmk_err rc = cmk_write_file_atomic(path, data, len, mode, &eb);

    return rc == CMK_OK ? CMK_OK : fail(err, cap, rc, "%s", eb.msg);
}

/* The PEM text of what bio holds, malloc'd and terminated; NULL when out of memory. */
static char *bio_text(BIO *b)
{
    char *data = NULL, *out;
    long n = BIO_get_mem_data(b, &data);

    if (n <= 0 || !(out = malloc((size_t)n + 1)))
        return NULL;
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    return out;
}

/* Adds one subjectAltName entry: an IP address if it parses as one, else a DNS name. */
static int san_add(GENERAL_NAMES *gens, const char *name)
{
    unsigned char ip[16];
    GENERAL_NAME *g = GENERAL_NAME_new();
    int iplen = inet_pton(AF_INET, name, ip) == 1 ? 4 : inet_pton(AF_INET6, name, ip) == 1 ? 16 : 0;
    int ok;

    if (!g)
        return -1;
    if (iplen) {
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        ok = os && ASN1_OCTET_STRING_set(os, ip, iplen) == 1;
        if (ok)
            GENERAL_NAME_set0_value(g, GEN_IPADD, os);
        else
            ASN1_OCTET_STRING_free(os);
    } else {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = s && ASN1_STRING_set(s, name, -1) == 1;
        if (ok)
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
        else
            ASN1_IA5STRING_free(s);
    }
    if (!ok || sk_GENERAL_NAME_push(gens, g) <= 0) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A self-signed certificate for pkey naming the loopback names, this host and sans. */
static X509 *make_cert(EVP_PKEY *pkey, const char *const *sans, size_t nsans)
{
    static const char *const fixed[] = {"localhost", "127.0.0.1", "::1"};
    X509 *x = X509_new();
    X509_NAME *nm;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    char host[256];
    int ok = x && gens;

    for (size_t i = 0; ok && i < sizeof(fixed) / sizeof(fixed[0]); i++)
        ok = san_add(gens, fixed[i]) == 0;
    if (ok && gethostname(host, sizeof(host)) == 0 && host[0] && strcmp(host, "localhost") != 0) {
        host[sizeof(host) - 1] = '\0';
        ok = san_add(gens, host) == 0;
    }
    for (size_t i = 0; ok && i < nsans; i++)
        ok = sans[i] && *sans[i] && san_add(gens, sans[i]) == 0;
    ok = ok && RAND_bytes(serial, sizeof(serial)) == 1;
    if (ok) {
        serial[0] &= 0x7f; /* a positive serial number */
        ok = (bn = BN_bin2bn(serial, sizeof(serial), NULL)) != NULL &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    }
    ok =
        ok && X509_set_version(x, 2) == 1 && X509_gmtime_adj(X509_getm_notBefore(x), -300) &&
        X509_gmtime_adj(X509_getm_notAfter(x), (long)CERT_DAYS * 86400) &&
        X509_set_pubkey(x, pkey) == 1 && (nm = X509_get_subject_name(x)) != NULL &&
        X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"cmkstore", -1, -1,
                                   0) == 1 &&
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
                                   (const unsigned char *)"cmkstore self-signed", -1, -1, 0) == 1 &&
        X509_set_issuer_name(x, nm) == 1 &&
        add_ext(x, NID_basic_constraints, "critical,CA:TRUE") == 0 &&
        add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign") == 0 &&
        add_ext(x, NID_ext_key_usage, "serverAuth") == 0 &&
        add_ext(x, NID_subject_key_identifier, "hash") == 0 &&
        X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) == 1 &&
        X509_sign(x, pkey, EVP_sha256()) > 0;
    BN_free(bn);
    GENERAL_NAMES_free(gens);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Generates the home's pair: key first (0600), then the certificate, so that a crash between
 * them leaves a key without certificate, which the next start replaces. */
static cmk_err generate(const char *crt_path, const char *key_path, const char *const *sans,
                        size_t nsans, char *err, size_t cap)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = pkey ? make_cert(pkey, sans, nsans) : NULL;
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    char *kt = NULL, *ct = NULL;
    cmk_err rc = CMK_OK;

    if (!pkey || !x)
        rc = fail(err, cap, CMK_E_CRYPTO, "cannot generate a self-signed certificate (OpenSSL)");
    else if (!kb || !cb || PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
             PEM_write_bio_X509(cb, x) != 1 || !(kt = bio_text(kb)) || !(ct = bio_text(cb)))
        rc = fail(err, cap, CMK_E_NOMEM, "out of memory encoding the self-signed certificate");
    if (rc == CMK_OK)
        rc = write_file(key_path, kt, strlen(kt), 0600, err, cap);
    if (rc == CMK_OK)
        rc = write_file(crt_path, ct, strlen(ct), 0644, err, cap);
    if (kt)
        OPENSSL_cleanse(kt, strlen(kt));
    free(kt);
    free(ct);
    BIO_free(kb); /* a memory BIO: its buffer is cleared on free (BIO_FLAGS_MEM_RDONLY unset) */
    BIO_free(cb);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* Checks the texts: the chain's first certificate and the key parse and belong together;
 * the leaf's fingerprint into t. */
static cmk_err check_pair(http_tls *t, const char *cert_file, const char *key_file, char *err,
                          size_t cap)
{
    BIO *cb = BIO_new_mem_buf(t->cert_pem, -1), *kb = BIO_new_mem_buf(t->key_pem, -1);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    cmk_err rc = CMK_OK;

    if (!x)
        rc = fail(err, cap, CMK_E_INVAL, "%s holds no PEM certificate", cert_file);
    else if (!k)
        rc = fail(err, cap, CMK_E_INVAL,
                  "%s holds no PEM private key (an unencrypted PKCS#8 or traditional key is "
                  "needed)",
                  key_file);
    else if (X509_check_private_key(x, k) != 1)
        rc = fail(err, cap, CMK_E_INVAL, "the key in %s is not the key of the certificate in %s",
                  key_file, cert_file);
    else if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32)
        rc = fail(err, cap, CMK_E_CRYPTO, "cannot compute the fingerprint of %s", cert_file);
    for (unsigned i = 0; rc == CMK_OK && i < mdlen; i++) /* "AB:CD:...": 3 chars a byte */
        snprintf(t->fingerprint + 3 * i, sizeof(t->fingerprint) - 3 * i, "%02X%s", md[i],
                 i + 1 < mdlen ? ":" : "");
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return rc;
}

static int valid_name(const char *s)
{
    size_t n = 0;

    for (; s && s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= '0' && s[n] <= '9') || s[n] == '-'))
            return 0;
    return n > 0 && n <= 64;
}

cmk_err http_tls_load(http_tls *t, const char *cert_file, const char *key_file, const char *home,
                      const char *name, const char *const *sans, size_t nsans, char *err,
                      size_t cap)
{
    char dir[4096], crt[4200], key[4200];
    struct stat st;
    cmk_err rc;

    memset(t, 0, sizeof(*t));
    if (!cert_file != !key_file)
        return fail(err, cap, CMK_E_INVAL,
                    "a TLS certificate needs its key and the key its certificate: give both "
                    "or neither");
    if (!cert_file) {
        if (!home || !*home || !valid_name(name))
            return fail(err, cap, CMK_E_INVAL, "no home or a bad name for the TLS pair");
        if ((size_t)snprintf(dir, sizeof(dir), "%s/tls", home) >= sizeof(dir))
            return fail(err, cap, CMK_E_INVAL, "home path too long: %s", home);
        snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
        snprintf(key, sizeof(key), "%s/%s.key", dir, name);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return fail(err, cap, CMK_E_IO, "cannot create %s: %s", dir, strerror(errno));
        if (stat(crt, &st) != 0 && errno == ENOENT) {
            rc = generate(crt, key, sans, nsans, err, cap);
            if (rc != CMK_OK)
                return rc;
            t->generated = 1;
        }
        cert_file = crt;
        key_file = key;
    }
    snprintf(t->cert_path, sizeof(t->cert_path), "%s", cert_file);
    rc = read_pem(cert_file, 0, &t->cert_pem, err, cap);
    if (rc == CMK_OK)
        rc = read_pem(key_file, 1, &t->key_pem, err, cap);
    if (rc == CMK_OK)
        rc = check_pair(t, cert_file, key_file, err, cap);
    if (rc != CMK_OK)
        http_tls_free(t);
    return rc;
}

void http_tls_free(http_tls *t)
{
    if (!t)
        return;
    if (t->key_pem) {
        OPENSSL_cleanse(t->key_pem, strlen(t->key_pem));
        free(t->key_pem);
    }
    free(t->cert_pem);
    memset(t, 0, sizeof(*t));
}
