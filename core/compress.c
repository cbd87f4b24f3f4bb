/* compress.c — zstd per chunk, with a cheap incompressibility probe. */
#include "core/compress.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Chunks at least this big get the sample probe first. */
#define PROBE_MIN (64u << 10)
/* The probe compresses this many bytes from the middle of the chunk. */
#define PROBE_LEN (8u << 10)

struct zctx {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
};

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;
static atomic_ullong st_probe_raw, st_full_raw, st_compressed, st_magic_raw;

static void zctx_free(void *p)
{
    struct zctx *z = p;
    if (!z)
        return;
    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    free(z);
}

static void zkey_init(void)
{
    (void)pthread_key_create(&zkey, zctx_free);
}

/* The calling thread's contexts, created on first use and freed at thread exit. */
static struct zctx *zctx_get(void)
{
    struct zctx *z;

    pthread_once(&zonce, zkey_init);
    z = pthread_getspecific(zkey);
    if (z)
        return z;
    z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    z->c = ZSTD_createCCtx();
    z->d = ZSTD_createDCtx();
    if (!z->c || !z->d || pthread_setspecific(zkey, z) != 0) {
        zctx_free(z);
        return NULL;
    }
    (void)ZSTD_CCtx_setParameter(z->c, ZSTD_c_compressionLevel, CMK_ZSTD_LEVEL);
    /* The chunk header records the plain length; the frame needs no checksum of its own
     * because GCM authenticates the compressed bytes. */
    (void)ZSTD_CCtx_setParameter(z->c, ZSTD_c_checksumFlag, 0);
    (void)ZSTD_CCtx_setParameter(z->c, ZSTD_c_contentSizeFlag, 1);
    return z;
}

size_t cmk_compress_bound(size_t n)
{
    return ZSTD_compressBound(n);
}

static int worth_it(size_t in, size_t out)
{
    return out <= in - in / 16;
}

cmk_err cmk_compress_chunk(const void *src, size_t n, void *dst, size_t cap, size_t *outlen,
                           int *compressed, cmk_errbuf *eb)
{
    struct zctx *z = zctx_get();
    size_t r;

    *compressed = 0;
    *outlen = 0;
    if (!z)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (zstd context)");
    if (n == 0)
        return CMK_OK;
    if (n >= PROBE_MIN) {
        const unsigned char *mid = (const unsigned char *)src + (n - PROBE_LEN) / 2;
        r = ZSTD_compress2(z->c, dst, cap, mid, PROBE_LEN);
        if (ZSTD_isError(r) || !worth_it(PROBE_LEN, r)) {
            atomic_fetch_add_explicit(&st_probe_raw, 1, memory_order_relaxed);
            return CMK_OK;
        }
    }
    r = ZSTD_compress2(z->c, dst, cap, src, n);
    if (ZSTD_isError(r))
        return cmk_errbuf_set(eb, CMK_E_IO, "zstd compression failed: %s", ZSTD_getErrorName(r));
    if (!worth_it(n, r)) {
        atomic_fetch_add_explicit(&st_full_raw, 1, memory_order_relaxed);
        return CMK_OK;
    }
    atomic_fetch_add_explicit(&st_compressed, 1, memory_order_relaxed);
    *outlen = r;
    *compressed = 1;
    return CMK_OK;
}

int cmk_compress_skip(const void *head, size_t n)
{
    static const struct {
        unsigned char len, magic[6];
    } fmt[] = {
        {3, {0x1f, 0x8b, 0x08}},               /* gzip, deflate */
        {4, {0x28, 0xb5, 0x2f, 0xfd}},         /* zstd frame */
        {6, {0xfd, '7', 'z', 'X', 'Z', 0x00}}, /* xz */
        {4, {0x04, 0x22, 0x4d, 0x18}},         /* lz4 frame */
    };
    const unsigned char *p = head;

    /* Magic only, no sampling: a false positive costs compression ratio, never
     * correctness, and a false negative falls back to the per-chunk probe. */
    for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++)
        if (n >= fmt[i].len && memcmp(p, fmt[i].magic, fmt[i].len) == 0) {
            atomic_fetch_add_explicit(&st_magic_raw, 1, memory_order_relaxed);
            return 1;
        }
    return 0;
}

cmk_err cmk_decompress_chunk(const void *src, size_t n, void *dst, size_t expect, cmk_errbuf *eb)
{
    struct zctx *z = zctx_get();
    unsigned long long fsz;
    size_t r;

    if (!z)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (zstd context)");
    fsz = ZSTD_getFrameContentSize(src, n);
    if (fsz != (unsigned long long)expect)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "compressed chunk declares a different size than its header");
    r = ZSTD_decompressDCtx(z->d, dst, expect, src, n);
    if (ZSTD_isError(r) || r != expect)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "compressed chunk does not decompress: %s",
                              ZSTD_isError(r) ? ZSTD_getErrorName(r) : "size mismatch");
    return CMK_OK;
}

void cmk_compress_stats_get(cmk_compress_stats *out)
{
    out->probe_raw = atomic_load(&st_probe_raw);
    out->full_raw = atomic_load(&st_full_raw);
    out->compressed = atomic_load(&st_compressed);
    out->magic_raw = atomic_load(&st_magic_raw);
}
