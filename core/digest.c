/* digest.c — streaming OCI digests over OpenSSL EVP. */
#include "core/digest.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/base/secmem.h"

/* Fetch the EVP_MD implementations once: an implicit fetch on every init costs more than
 * hashing a small manifest. */
static EVP_MD *md_sha256, *md_sha512;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_fetch(void)
{
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
}

int cmk_digest_alg_from_name(const char *name)
{
    if (!name || strcmp(name, "sha256") == 0)
        return CMK_DIGEST_SHA256;
    if (strcmp(name, "sha512") == 0)
        return CMK_DIGEST_SHA512;
    return 0;
}

const char *cmk_digest_alg_name(int alg)
{
    return alg == CMK_DIGEST_SHA512 ? "sha512" : alg == CMK_DIGEST_SHA256 ? "sha256" : "?";
}

size_t cmk_digest_len(int alg)
{
    return alg == CMK_DIGEST_SHA256 ? 32 : alg == CMK_DIGEST_SHA512 ? 64 : 0;
}

cmk_err cmk_digest_init(cmk_digest *d, int alg, cmk_errbuf *eb)
{
    const EVP_MD *md;

    pthread_once(&md_once, md_fetch);
    d->md = NULL;
    d->alg = alg;
    md = alg == CMK_DIGEST_SHA256 ? md_sha256 : alg == CMK_DIGEST_SHA512 ? md_sha512 : NULL;
    if (!md)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "digest algorithm %d is not available", alg);
    d->md = EVP_MD_CTX_new();
    if (!d->md)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (digest)");
    if (EVP_DigestInit_ex2(d->md, md, NULL) != 1) {
        cmk_digest_free(d);
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "digest init failed");
    }
    return CMK_OK;
}

cmk_err cmk_digest_update(cmk_digest *d, const void *buf, size_t n, cmk_errbuf *eb)
{
    if (n && EVP_DigestUpdate(d->md, buf, n) != 1)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "digest update failed");
    return CMK_OK;
}

cmk_err cmk_digest_final(cmk_digest *d, uint8_t raw[CMK_DIGEST_RAW_MAX], cmk_errbuf *eb)
{
    unsigned int n = 0;

    if (EVP_DigestFinal_ex(d->md, raw, &n) != 1 || n != cmk_digest_len(d->alg))
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "digest final failed");
    return CMK_OK;
}

void cmk_digest_free(cmk_digest *d)
{
    if (d && d->md) {
        EVP_MD_CTX_free(d->md);
        d->md = NULL;
    }
}

cmk_err cmk_digest_parse(const char *s, int *alg, uint8_t raw[CMK_DIGEST_RAW_MAX], cmk_errbuf *eb)
{
    const char *colon;
    size_t hexlen;
    char name[16];
    int a;

    if (!s || !*s)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "empty digest");
    colon = strchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(name))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "invalid digest '%.80s': expected sha256:<64 hex digits>", s);
    memcpy(name, s, (size_t)(colon - s));
    name[colon - s] = '\0';
    a = cmk_digest_alg_from_name(name);
    if (a == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "unsupported digest algorithm '%s' (sha256 and sha512 are)", name);
    hexlen = strlen(colon + 1);
    if (hexlen != 2 * cmk_digest_len(a))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "invalid %s digest: %zu hex digits, expected %zu",
                              name, hexlen, 2 * cmk_digest_len(a));
    for (const char *p = colon + 1; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "invalid %s digest: only lowercase hex digits are allowed", name);
    }
    if (cmk_unhex(raw, cmk_digest_len(a), colon + 1) != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "invalid digest hex");
    *alg = a;
    return CMK_OK;
}

void cmk_digest_format(int alg, const uint8_t *raw, char out[CMK_DIGEST_MAX])
{
    char hex[2 * CMK_DIGEST_RAW_MAX + 1];
    cmk_hex(hex, raw, cmk_digest_len(alg));
    snprintf(out, CMK_DIGEST_MAX, "%s:%s", cmk_digest_alg_name(alg), hex);
}
