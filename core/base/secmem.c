/* secmem.c — locked, dump-excluded, zeroized memory for keys; randomness. */
#include "core/base/secmem.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Every allocation is whole pages, with a header page-aligned in front that records the
 * mapping length. Secrets are small and few (a DEK per keyring entry, a blob key per open
 * stream), so the page granularity costs little and keeps them off the malloc heap, out of
 * core dumps and out of swap. */
struct sec_hdr {
    size_t maplen;
    size_t n;
};

#define SEC_HDR_SIZE 64 /* keeps the payload 64-byte aligned */

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

void *cmk_secalloc(size_t n)
{
    size_t ps = page_size();
    size_t need = n + SEC_HDR_SIZE;
    size_t maplen;
    void *base;
    struct sec_hdr *h;

    if (n == 0 || need < n)
        return NULL;
    maplen = (need + ps - 1) / ps * ps;
    base = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    /* Best effort: RLIMIT_MEMLOCK may be small in containers; the key is still zeroized and
     * kept out of dumps. */
    (void)mlock(base, maplen);
#ifdef MADV_DONTDUMP
    (void)madvise(base, maplen, MADV_DONTDUMP);
#endif
    h = base;
    h->maplen = maplen;
    h->n = n;
    return (unsigned char *)base + SEC_HDR_SIZE;
}

void cmk_secfree(void *p)
{
    struct sec_hdr *h;
    size_t maplen;

    if (!p)
        return;
    h = (struct sec_hdr *)((unsigned char *)p - SEC_HDR_SIZE);
    maplen = h->maplen;
    OPENSSL_cleanse(h, maplen);
    (void)munlock(h, maplen);
    (void)munmap(h, maplen);
}

void cmk_cleanse(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

cmk_err cmk_random(void *buf, size_t n, cmk_errbuf *eb)
{
    if (n > (size_t)INT32_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "random request too large");
    if (RAND_bytes(buf, (int)n) != 1)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "the system random generator failed");
    return CMK_OK;
}

void cmk_hex(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cmk_unhex(uint8_t *out, size_t n, const char *in)
{
    if (strlen(in) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

cmk_err cmk_random_hex(char *out, size_t nbytes, cmk_errbuf *eb)
{
    uint8_t buf[64];
    cmk_err rc;

    if (nbytes > sizeof(buf))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "random hex request too large");
    rc = cmk_random(buf, nbytes, eb);
    if (rc == CMK_OK)
        cmk_hex(out, buf, nbytes);
    return rc;
}

cmk_err cmk_uuid4(char out[37], cmk_errbuf *eb)
{
    uint8_t b[16];
    char h[33];
    cmk_err rc = cmk_random(b, sizeof(b), eb);

    if (rc != CMK_OK)
        return rc;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    cmk_hex(h, b, 16);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    return CMK_OK;
}
