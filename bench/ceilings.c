/* ceilings.c — machine ceilings measured through the store's own libraries (ceilings.h). */
#define _GNU_SOURCE
#include "bench/ceilings.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "bench/bench.h"
#include "core/compress.h"
#include "bench/datagen.h"

/* Same as core/compress.c: the store's probe compresses 8 KiB from the middle of a chunk of
 * at least 64 KiB, and keeps a chunk compressed only if it saves 1/16. */
#define PROBE_LEN (8u << 10)
#define PROBE_MIN (64u << 10)

static int worth_it(size_t in, size_t out)
{
    return out <= in - in / 16;
}

static ZSTD_CCtx *make_cctx(void)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();

    /* The store's settings (core/compress.c): level 1, no frame checksum, content size. */
    if (c && (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 0)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1)))) {
        ZSTD_freeCCtx(c);
        return NULL;
    }
    return c;
}

static int gcm_run(EVP_CIPHER_CTX *c, int enc, const uint8_t *key, uint64_t ctr, const uint8_t *in,
                   size_t len, uint8_t *out, uint8_t tag[16])
{
    uint8_t iv[12] = {0}, fin[16];
    int n = 0;

    memcpy(iv + 4, &ctr, 8);
    /* A fresh key schedule and nonce per chunk, as core/seal.c does per call. */
    if (enc) {
        return EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), key, iv, NULL) == 1 &&
                       EVP_EncryptUpdate(c, out, &n, in, (int)len) == 1 &&
                       EVP_EncryptFinal_ex(c, fin, &n) == 1 &&
                       EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1
                   ? 0
                   : -1;
    }
    return EVP_DecryptInit_ex2(c, EVP_aes_256_gcm(), key, iv, NULL) == 1 &&
                   EVP_DecryptUpdate(c, out, &n, in, (int)len) == 1 &&
                   EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
                   EVP_DecryptFinal_ex(c, fin, &n) == 1
               ? 0
               : -1;
}

int ceil_measure_cpu(const uint8_t *data, size_t n, size_t sample, size_t chunk, ceil_cpu *out)
{
    size_t m = n < sample ? n : sample;
    size_t nch = (m + chunk - 1) / chunk, bound = ZSTD_compressBound(chunk);
    uint8_t *work = NULL, *plain = NULL, key[32], md[32], tag[16];
    size_t *zlen = NULL;
    unsigned mdlen = 0;
    EVP_MD_CTX *mdc = EVP_MD_CTX_new();
    EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
    ZSTD_CCtx *zc = make_cctx();
    ZSTD_DCtx *zd = ZSTD_createDCtx();
    double t0, t1;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    memset(key, 0x42, sizeof(key));
    if (!mdc || !cc || !zc || !zd || m == 0)
        goto out;
    /* One buffer holds every compressed chunk, then every sealed chunk. Touched before any
     * timing: first-touch page faults are expensive on some VMs and are not the library's
     * cost. */
    work = bench_alloc(nch * bound);
    plain = bench_alloc(chunk);
    zlen = calloc(nch, sizeof(*zlen));
    if (!zlen)
        goto out;
    memset(work, 0, nch * bound);
    memset(plain, 0, chunk);
    out->bytes = m;
    out->chunk = chunk;

    /* SHA-256, fed in chunk-size updates as a put of 1 MiB writes feeds it. */
    t0 = bench_now();
    if (EVP_DigestInit_ex(mdc, EVP_sha256(), NULL) != 1)
        goto out;
    for (size_t off = 0; off < m; off += chunk)
        if (EVP_DigestUpdate(mdc, data + off, m - off < chunk ? m - off : chunk) != 1)
            goto out;
    if (EVP_DigestFinal_ex(mdc, md, &mdlen) != 1)
        goto out;
    t1 = bench_now();
    out->sha256 = (double)m / (t1 - t0);

    /* zstd level 1, one chunk per call; the stored size keeps raw what would not pay. */
    t0 = bench_now();
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        size_t r = ZSTD_compress2(zc, work + i * bound, bound, data + i * chunk, len);
        if (ZSTD_isError(r))
            goto out;
        zlen[i] = r;
    }
    t1 = bench_now();
    out->zstd_c = (double)m / (t1 - t0);
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        out->zbytes += worth_it(len, zlen[i]) ? zlen[i] : len;
    }
    out->ratio = (double)m / (double)out->zbytes;

    t0 = bench_now();
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        size_t r = ZSTD_decompressDCtx(zd, plain, chunk, work + i * bound, zlen[i]);
        if (ZSTD_isError(r) || r != len)
            goto out;
    }
    t1 = bench_now();
    out->zstd_d = (double)m / (t1 - t0);

    /* The probe alone: what an incompressible chunk costs the store's compressor. */
    t0 = bench_now();
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        if (len < PROBE_MIN)
            continue;
        size_t r =
            ZSTD_compress2(zc, plain, chunk, data + i * chunk + (len - PROBE_LEN) / 2, PROBE_LEN);
        if (ZSTD_isError(r))
            goto out;
    }
    t1 = bench_now();
    out->zstd_probe = (double)m / (t1 - t0);

    /* AES-256-GCM over whole chunks, sealed into the work buffer and opened from it. */
    t0 = bench_now();
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        if (gcm_run(cc, 1, key, i, data + i * chunk, len, work + i * bound, tag) != 0)
            goto out;
        memcpy(work + i * bound + len, tag, 16);
    }
    t1 = bench_now();
    out->gcm_seal = (double)m / (t1 - t0);
    t0 = bench_now();
    for (size_t i = 0; i < nch; i++) {
        size_t len = m - i * chunk < chunk ? m - i * chunk : chunk;
        if (gcm_run(cc, 0, key, i, work + i * bound, len, plain, work + i * bound + len) != 0)
            goto out;
    }
    t1 = bench_now();
    out->gcm_open = (double)m / (t1 - t0);
    rc = 0;
out:
    if (rc != 0)
        bench_log("CPU ceiling measurement failed");
    free(zlen);
    bench_free(work, nch * bound);
    bench_free(plain, chunk);
    EVP_MD_CTX_free(mdc);
    EVP_CIPHER_CTX_free(cc);
    ZSTD_freeCCtx(zc);
    ZSTD_freeDCtx(zd);
    return rc;
}

/* Data that zstd shrinks by at least 1/16 is compressed by the store; below that it goes
 * raw after the probe. */
static int compressible(const ceil_cpu *c)
{
    return c->ratio >= 16.0 / 15.0;
}

double ceil_put_cpu_seconds(const ceil_cpu *c, uint64_t n)
{
    double stored = (double)n / c->ratio;
    double t = (double)n / c->sha256 + stored / c->gcm_seal;

    return t + (compressible(c) ? (double)n / c->zstd_c : (double)n / c->zstd_probe);
}

double ceil_get_cpu_seconds(const ceil_cpu *c, uint64_t n)
{
    double stored = (double)n / c->ratio;
    double t = stored / c->gcm_open;

    return t + (compressible(c) ? (double)n / c->zstd_d : 0);
}

/* ---- the store's CPU work run on several threads at once ---- */

/* What each thread of a parallel measurement does to its chunks. */
enum par_op {
    PAR_PUT,  /* sha256 + zstd-1 (kept only if it pays) + seal */
    PAR_GET,  /* open + unzstd of what PAR_PUT made */
    PAR_SEAL, /* the sealers of one stream: probe, zstd-1 if the probe pays, seal */
    PAR_SHA,  /* the parts alone: sha256, */
    PAR_ZSTD, /* zstd-1, */
    PAR_GCM   /* seal */
};

typedef struct par_job {
    const uint8_t *data;
    size_t m, chunk, nch;
    unsigned t, nthreads;
    enum par_op op;
    uint8_t **z;  /* per chunk: compressed (or raw) sealed bytes, made by the put pass */
    size_t *zlen; /* per chunk: stored length; 0: raw */
    int failed;
} par_job;

/* One part alone (PAR_SHA, PAR_ZSTD, PAR_GCM) on chunk i, the len bytes at src; 0 or -1. */
static int par_part(par_job *j, size_t i, const uint8_t *src, size_t len, EVP_MD_CTX *mdc,
                    ZSTD_CCtx *zc, EVP_CIPHER_CTX *cc, const uint8_t *key)
{
    uint8_t tag[16];

    switch (j->op) {
    case PAR_SHA:
        return EVP_DigestUpdate(mdc, src, len) == 1 ? 0 : -1;
    case PAR_ZSTD:
        return ZSTD_isError(ZSTD_compress2(zc, j->z[i], ZSTD_compressBound(j->chunk), src, len))
                   ? -1
                   : 0;
    case PAR_GCM:
        return gcm_run(cc, 1, key, i, src, len, j->z[i], tag);
    default:
        return -1;
    }
}

/* What the store's sealers do to one chunk: the store's own cmk_compress_chunk (its probe,
 * zstd-1 where that pays), then the seal. 0 or -1. */
static int par_seal(par_job *j, size_t i, const uint8_t *src, size_t len, EVP_CIPHER_CTX *cc,
                    const uint8_t *key)
{
    cmk_errbuf eb = {0};
    size_t sl = 0;
    int compressed = 0;

    if (cmk_compress_chunk(src, len, j->z[i], ZSTD_compressBound(j->chunk), &sl, &compressed,
                           &eb) != CMK_OK)
        return -1;
    if (!compressed) {
        memcpy(j->z[i], src, len);
        sl = len;
    }
    return gcm_run(cc, 1, key, i, j->z[i], sl, j->z[i], j->z[i] + sl);
}

static void *par_run(void *arg)
{
    par_job *j = arg;
    EVP_MD_CTX *mdc = EVP_MD_CTX_new();
    EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
    ZSTD_CCtx *zc = make_cctx();
    ZSTD_DCtx *zd = ZSTD_createDCtx();
    uint8_t *plain = bench_alloc(j->chunk), key[32], tag[16], md[32];
    unsigned mdlen;

    memset(key, 0x42, sizeof(key));
    memset(plain, 0, j->chunk);
    if (!mdc || !cc || !zc || !zd || EVP_DigestInit_ex(mdc, EVP_sha256(), NULL) != 1) {
        j->failed = 1;
        goto out;
    }
    for (size_t i = j->t; i < j->nch && !j->failed; i += j->nthreads) {
        size_t len = j->m - i * j->chunk < j->chunk ? j->m - i * j->chunk : j->chunk;
        const uint8_t *src = j->data + i * j->chunk;
        if (j->op == PAR_SEAL) {
            if (par_seal(j, i, src, len, cc, key) != 0) {
                j->failed = 1;
                break;
            }
        } else if (j->op >= PAR_SHA) {
            if (par_part(j, i, src, len, mdc, zc, cc, key) != 0) {
                j->failed = 1;
                break;
            }
        } else if (j->op == PAR_PUT) {
            size_t bound = ZSTD_compressBound(j->chunk);
            size_t r = ZSTD_compress2(zc, j->z[i], bound, src, len);
            if (EVP_DigestUpdate(mdc, src, len) != 1 || ZSTD_isError(r)) {
                j->failed = 1;
                break;
            }
            j->zlen[i] = worth_it(len, r) ? r : 0;
            if (!j->zlen[i])
                memcpy(j->z[i], src, len);
            size_t sl = j->zlen[i] ? j->zlen[i] : len;
            if (gcm_run(cc, 1, key, i, j->z[i], sl, j->z[i], tag) != 0) {
                j->failed = 1;
                break;
            }
            memcpy(j->z[i] + sl, tag, 16);
        } else {
            size_t sl = j->zlen[i] ? j->zlen[i] : len;
            if (gcm_run(cc, 0, key, i, j->z[i], sl, j->z[i], j->z[i] + sl) != 0 ||
                (j->zlen[i] &&
                 ZSTD_isError(ZSTD_decompressDCtx(zd, plain, j->chunk, j->z[i], j->zlen[i])))) {
                j->failed = 1;
                break;
            }
        }
    }
    if (j->op == PAR_PUT || j->op == PAR_SHA)
        (void)EVP_DigestFinal_ex(mdc, md, &mdlen);
out:
    bench_free(plain, j->chunk);
    EVP_MD_CTX_free(mdc);
    EVP_CIPHER_CTX_free(cc);
    ZSTD_freeCCtx(zc);
    ZSTD_freeDCtx(zd);
    return NULL;
}

/* Runs `op` on `threads` threads at once over the m bytes, each thread on every threads-th
 * chunk, timed as a whole: bytes/s, or 0 on failure. With `digest`, one more thread runs
 * SHA-256 over all m bytes in order beside them, as one put stream's digest thread does. */
static double par_time(enum par_op op, const uint8_t *data, size_t m, size_t chunk, size_t nch,
                       unsigned threads, int digest, uint8_t **z, size_t *zlen)
{
    pthread_t th[65];
    par_job job[65];
    unsigned started = 0, all = threads + (digest ? 1u : 0u);
    int ok = 1;
    double t0 = bench_now(), secs;

    for (unsigned t = 0; t < all; t++) {
        if (t < threads)
            job[t] = (par_job){data, m, chunk, nch, t, threads, op, z, zlen, 0};
        else
            job[t] = (par_job){data, m, chunk, nch, 0, 1, PAR_SHA, z, zlen, 0};
        if (pthread_create(&th[t], NULL, par_run, &job[t]) != 0)
            break;
        started++;
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    secs = bench_now() - t0;
    for (unsigned t = 0; t < started; t++)
        ok = ok && !job[t].failed;
    return ok && started == all ? (double)m / secs : 0;
}

int ceil_measure_cpu_parallel(const uint8_t *data, size_t n, size_t sample, size_t chunk,
                              unsigned threads, int parts, ceil_par *out)
{
    size_t m = n < sample ? n : sample, nch = (m + chunk - 1) / chunk;
    size_t slot = ZSTD_compressBound(chunk) + 16;
    uint8_t *work = NULL, **z = calloc(nch, sizeof(*z));
    size_t *zlen = calloc(nch, sizeof(*zlen));
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (threads == 0 || threads > 64 || !z || !zlen || m == 0)
        goto out;
    work = bench_alloc(nch * slot);
    memset(work, 0, nch * slot);
    for (size_t i = 0; i < nch; i++)
        z[i] = work + i * slot;
    /* The get pass opens what the put pass sealed. */
    out->put = par_time(PAR_PUT, data, m, chunk, nch, threads, 0, z, zlen);
    out->get = out->put > 0 ? par_time(PAR_GET, data, m, chunk, nch, threads, 0, z, zlen) : 0;
    /* After the get pass, which opens z[] as the put pass left it. */
    out->stream = out->get > 0 ? par_time(PAR_SEAL, data, m, chunk, nch, threads, 1, z, zlen) : 0;
    if (out->put <= 0 || out->get <= 0 || out->stream <= 0)
        goto out;
    if (parts) {
        out->sha256 = par_time(PAR_SHA, data, m, chunk, nch, threads, 0, z, zlen);
        out->zstd_c = par_time(PAR_ZSTD, data, m, chunk, nch, threads, 0, z, zlen);
        out->gcm_seal = par_time(PAR_GCM, data, m, chunk, nch, threads, 0, z, zlen);
        if (out->sha256 <= 0 || out->zstd_c <= 0 || out->gcm_seal <= 0)
            goto out;
    }
    rc = 0;
out:
    bench_free(work, nch * slot);
    free(z);
    free(zlen);
    return rc;
}

int ceil_measure_mem(size_t n, ceil_mem *out)
{
    uint8_t *a, *b;
    size_t pages = 16384, ps = (size_t)sysconf(_SC_PAGESIZE);
    double t0, t1;
    uint8_t *f;

    memset(out, 0, sizeof(*out));
    a = bench_alloc(n);
    b = bench_alloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    t0 = bench_now();
    memcpy(b, a, n);
    memcpy(a, b, n);
    t1 = bench_now();
    out->memcpy_bps = 2.0 * (double)n / (t1 - t0);
    bench_free(a, n);
    bench_free(b, n);

    /* First touch of fresh small pages: what every newly mapped buffer (a malloc above the
     * mmap threshold, a grown heap) costs before it holds a byte. */
    f = mmap(NULL, pages * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED)
        return -1;
    (void)madvise(f, pages * ps, MADV_NOHUGEPAGE);
    t0 = bench_now();
    for (size_t i = 0; i < pages; i++)
        f[i * ps] = 1;
    t1 = bench_now();
    munmap(f, pages * ps);
    out->fault_us = (t1 - t0) / (double)pages * 1e6;
    return 0;
}

int bench_drop_caches(void)
{
    int fd, ok;

    sync();
    fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ok = write(fd, "3\n", 2) == 2;
    close(fd);
    return ok ? 0 : -1;
}

/* Reads the whole file in 1 MiB blocks; bytes/s, or 0 on failure. */
static double read_file_rate(const char *path, uint8_t *buf, size_t bs)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint64_t total = 0;
    double t0, t1;
    ssize_t r;

    if (fd < 0)
        return 0;
    t0 = bench_now();
    while ((r = read(fd, buf, bs)) > 0)
        total += (uint64_t)r;
    t1 = bench_now();
    close(fd);
    return r < 0 ? 0 : (double)total / (t1 - t0);
}

double ceil_write_fsync(const char *dir, const uint8_t *data, size_t n)
{
    const size_t bs = 1 << 20;
    char path[4096];
    double t0, rate = 0;
    int fd, ok = 1;

    snprintf(path, sizeof(path), "%s/ceiling-side.dat", dir);
    t0 = bench_now();
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    for (size_t off = 0; off < n && ok; off += bs) {
        size_t len = n - off < bs ? n - off : bs;
        ok = write(fd, data + off, len) == (ssize_t)len;
        /* Writeback started as the data arrives, as the store does: the best this disk does
         * with a file that must be durable at the end (a single fsync of a whole dirty file
         * is slower here, which would flatter the store). */
        if (ok && (off + len) % (8u << 20) == 0)
            (void)sync_file_range(fd, (off_t)(off + len - (8u << 20)), 8u << 20,
                                  SYNC_FILE_RANGE_WRITE);
    }
    ok = ok && fsync(fd) == 0;
    close(fd);
    if (ok)
        rate = (double)n / (bench_now() - t0);
    unlink(path);
    return rate;
}

typedef struct direct_job {
    int fd;
    const uint8_t *data;
    size_t n;
    unsigned t, nthreads;
    int failed;
} direct_job;

static void *direct_run(void *arg)
{
    direct_job *j = arg;
    const size_t bs = 1 << 20;

    for (size_t off = (size_t)j->t * bs; off < j->n && !j->failed; off += bs * j->nthreads) {
        size_t len = j->n - off < bs ? j->n - off : bs;
        if (pwrite(j->fd, j->data + off, len, (off_t)off) != (ssize_t)len)
            j->failed = 1;
    }
    return NULL;
}

double ceil_write_direct(const char *dir, const uint8_t *data, size_t n, unsigned threads)
{
    char path[4096];
    pthread_t th[16];
    direct_job job[16];
    unsigned started = 0;
    double t0, rate = 0;
    int fd, ok = 1;

    if (threads == 0 || threads > 16 || n % 4096 != 0 || ((uintptr_t)data & 4095) != 0)
        return 0;
    snprintf(path, sizeof(path), "%s/ceiling-direct.dat", dir);
    t0 = bench_now();
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    for (unsigned t = 0; t < threads; t++) {
        job[t] = (direct_job){fd, data, n, t, threads, 0};
        if (pthread_create(&th[t], NULL, direct_run, &job[t]) != 0)
            break;
        started++;
    }
    for (unsigned t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
        ok &= !job[t].failed;
    }
    ok = ok && started == threads && fsync(fd) == 0;
    close(fd);
    if (ok)
        rate = (double)n / (bench_now() - t0);
    unlink(path);
    return rate;
}

int ceil_measure_disk(const char *dir, const uint8_t *data, size_t n, unsigned reps, ceil_disk *out)
{
    const size_t bs = 1 << 20;
    char path[4096];
    double w[16];
    uint8_t *buf = bench_alloc(bs);
    int rc = -1;

    memset(out, 0, sizeof(*out));
    memset(buf, 0, bs);
    if (reps == 0)
        reps = 1;
    if (reps > 16)
        reps = 16;
    snprintf(path, sizeof(path), "%s/ceiling-seq.dat", dir);
    out->bytes = n;
    for (unsigned r = 0; r < reps; r++) {
        double t0 = bench_now(), t1;
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) {
            bench_log("cannot create %s: %s", path, strerror(errno));
            goto out;
        }
        for (size_t off = 0; off < n; off += bs) {
            size_t len = n - off < bs ? n - off : bs;
            if (write(fd, data + off, len) != (ssize_t)len) {
                bench_log("write %s: %s", path, strerror(errno));
                close(fd);
                goto out;
            }
        }
        if (fsync(fd) != 0) {
            bench_log("fsync %s: %s", path, strerror(errno));
            close(fd);
            goto out;
        }
        close(fd);
        t1 = bench_now();
        w[r] = (double)n / (t1 - t0);
        bench_log("  write+fsync %zu MiB: %.0f MB/s", n >> 20, w[r] / MB);
        /* The next write starts from a clean slate: no dirty or cached pages of this one. */
        if (r + 1 < reps && unlink(path) != 0)
            goto out;
    }
    out->write_fsync_min = bench_min(w, reps);
    out->write_fsync_max = bench_max(w, reps);
    out->write_fsync = bench_median(w, reps);
    out->read_warm = read_file_rate(path, buf, bs);
    if (bench_drop_caches() == 0)
        out->read_cold = read_file_rate(path, buf, bs);
    rc = 0;
out:
    unlink(path);
    bench_free(buf, bs);
    return rc;
}

/* ---- durable small files ---- */

typedef struct small_job {
    const char *dir;
    int tmpfd;
    const uint8_t *data;
    size_t size;
    unsigned first, count;
    double *lat;
    int failed;
} small_job;

static int small_one(small_job *j, unsigned i)
{
    char procfd[64], path[4096], sub[4096];
    int fd, dfd, ok;

    fd = openat(j->tmpfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ok = write(fd, j->data, j->size) == (ssize_t)j->size && fsync(fd) == 0;
    snprintf(procfd, sizeof(procfd), "/proc/self/fd/%d", fd);
    snprintf(sub, sizeof(sub), "%s/%02x", j->dir, (unsigned)(dg_mix(i) & 0xff));
    snprintf(path, sizeof(path), "%s/f%08x", sub, i);
    ok = ok && linkat(AT_FDCWD, procfd, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0;
    close(fd);
    if (!ok)
        return -1;
    dfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    ok = fsync(dfd) == 0;
    close(dfd);
    return ok ? 0 : -1;
}

static void *small_thread(void *arg)
{
    small_job *j = arg;

    for (unsigned k = 0; k < j->count; k++) {
        double t0 = bench_now();
        if (small_one(j, j->first + k) != 0) {
            j->failed = errno ? errno : EIO;
            return NULL;
        }
        j->lat[j->first + k] = (bench_now() - t0) * 1e6;
    }
    return NULL;
}

int ceil_small_files(const char *dir, size_t size, unsigned files, unsigned threads,
                     ceil_small *out)
{
    char root[4096], tmp[4096], sub[4096];
    pthread_t th[256];
    small_job jobs[256];
    uint8_t *data = NULL;
    double *lat = NULL, t0, t1;
    int tmpfd = -1, rc = -1;
    unsigned started = 0;

    memset(out, 0, sizeof(*out));
    if (threads == 0 || threads > 256 || files < threads)
        return -1;
    snprintf(root, sizeof(root), "%s/ceiling-small", dir);
    snprintf(tmp, sizeof(tmp), "%s/tmp", root);
    if (mkdir(root, 0700) != 0 || mkdir(tmp, 0700) != 0)
        goto out;
    for (unsigned d = 0; d < 256; d++) {
        snprintf(sub, sizeof(sub), "%s/%02x", root, d);
        if (mkdir(sub, 0700) != 0)
            goto out;
    }
    tmpfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    data = malloc(size);
    lat = calloc(files, sizeof(*lat));
    if (tmpfd < 0 || !data || !lat)
        goto out;
    dg_json(0x5A11, data, size);
    sync();
    t0 = bench_now();
    for (unsigned t = 0; t < threads; t++) {
        jobs[t] =
            (small_job){root, tmpfd, data, size, t * (files / threads), files / threads, lat, 0};
        if (t == threads - 1)
            jobs[t].count = files - jobs[t].first;
        if (pthread_create(&th[t], NULL, small_thread, &jobs[t]) != 0)
            break;
        started++;
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    t1 = bench_now();
    if (started != threads)
        goto out;
    for (unsigned t = 0; t < threads; t++)
        if (jobs[t].failed) {
            bench_log("small-file ceiling: %s", strerror(jobs[t].failed));
            goto out;
        }
    out->threads = threads;
    out->files = files;
    out->size = size;
    out->files_per_s = files / (t1 - t0);
    out->p50_us = bench_percentile(lat, files, 50);
    out->p99_us = bench_percentile(lat, files, 99);
    rc = 0;
out:
    if (tmpfd >= 0)
        close(tmpfd);
    free(data);
    free(lat);
    bench_rmtree(root);
    return rc;
}
