/* test_put_batch.c — the write path's performance features through the public API, on both
 * I/O engines: batched commits (cmk_put_commit_many) with per-put results, blobs that grow
 * out of their small first buffers, writeback during long puts, already-compressed content
 * stored raw on its magic, and direct (O_DIRECT) writes of multi-chunk blobs with their
 * fallback where the file system refuses them (at fcntl on a ramfs, and at the write through
 * an injected EINVAL). Uses a real local vault, key and identity. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "tests/check.h"
#include "core/compress.h"
#include "core/digest.h"
#include "core/format.h"
#include "kek/identity/identity.h"
#include "core/base/pool.h"
#include "core/store_internal.h"
#include "kek/vault/vault.h"

static char home[4096];

/* Fault injection for a refusal that no file system of this kernel makes (tmpfs takes
 * O_DIRECT since Linux 6.6): while refuse_direct is set, a pwrite on a descriptor that has
 * O_DIRECT fails with EINVAL, as on a file system that takes the flag at fcntl and refuses
 * the write itself. The store's direct-write probe is a plain pwrite(2), and this definition
 * in the test binary is the one its calls resolve to; everything else passes through to the
 * next definition (libc's, or a sanitizer's interceptor). real_pwrite is set in main before
 * any thread starts. */
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static int refuse_direct;       /* __atomic */
static unsigned refused_writes; /* __atomic */

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (__atomic_load_n(&refuse_direct, __ATOMIC_SEQ_CST)) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && (fl & O_DIRECT)) {
            __atomic_add_fetch(&refused_writes, 1, __ATOMIC_SEQ_CST);
            errno = EINVAL;
            return -1;
        }
    }
    return real_pwrite(fd, buf, n, off);
}

/* Counting the store's blocking reads: while count_reads is set, a pread of more than
 * 64 KiB (a chunk record, not a header or an index) is counted. The sync engine and the
 * cold reads of either engine are plain pread(2)s; io_uring reads through the ring are not. */
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static int count_reads;     /* __atomic */
static unsigned big_preads; /* __atomic */

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    if (n > (64u << 10) && __atomic_load_n(&count_reads, __ATOMIC_SEQ_CST))
        __atomic_add_fetch(&big_preads, 1, __ATOMIC_SEQ_CST);
    return real_pread(fd, buf, n, off);
}

/* depth 0: the store's default queue depth. */
static cmk_store *open_store_depth(const char *dir, const char *engine, const char *write_mode,
                                   unsigned depth)
{
    cmk_store_opts so;
    cmk_store *s = NULL;

    cmk_store_opts_init(&so);
    so.home = home;
    so.io_engine = engine;
    so.write_mode = write_mode;
    so.queue_depth = depth;
    CHECK_MSG(cmk_store_open(dir, &so, &s) == CMK_OK, "open (%s): %s", engine, cmk_errmsg());
    return s;
}

static cmk_store *open_store_mode(const char *dir, const char *engine, const char *write_mode)
{
    return open_store_depth(dir, engine, write_mode, 0);
}

static cmk_store *open_store(const char *dir, const char *engine)
{
    return open_store_mode(dir, engine, NULL);
}

static void sha256_hex(const void *buf, size_t n, char out[CMK_DIGEST_MAX])
{
    unsigned char md[32];
    unsigned len = 0;

    REQUIRE(EVP_Digest(buf, n, md, &len, EVP_sha256(), NULL) == 1 && len == 32);
    strcpy(out, "sha256:");
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static cmk_put *begin_with(cmk_store *s, const void *buf, size_t n, size_t piece)
{
    cmk_put *p = NULL;

    CHECK_OK(cmk_put_begin(s, NULL, &p));
    for (size_t off = 0; p && off < n; off += piece)
        CHECK_OK(cmk_put_write(p, (const char *)buf + off, n - off < piece ? n - off : piece));
    return p;
}

/* Reads the whole blob back and compares. */
static void check_blob(cmk_store *s, const char *digest, const void *want, size_t n)
{
    unsigned char *got = malloc(n + 1);
    cmk_get *g = NULL;
    size_t total = 0, k;

    REQUIRE(got);
    CHECK_MSG(cmk_get_open(s, digest, 0, CMK_TO_END, &g) == CMK_OK, "get %s: %s", digest,
              cmk_errmsg());
    while (g && cmk_get_read(g, got + total, n + 1 - total, &k) == CMK_OK && k > 0)
        total += k;
    cmk_get_close(g);
    CHECK_MSG(total == n && memcmp(got, want, n) == 0, "content of %s differs (%zu of %zu bytes)",
              digest, total, n);
    free(got);
}

static uint64_t stored_size(cmk_store *s, const char *digest)
{
    cmk_blob_info bi;

    if (cmk_stat(s, digest, &bi) != CMK_OK)
        return 0;
    return bi.stored_size;
}

/* A batch of small and multi-chunk blobs, an empty one and a duplicate: every put
 * succeeds, digests are the content's, everything reads back. */
static void t_batch(const char *dir, const char *engine)
{
    enum { N = 40 };
    static unsigned char data[N][200000];
    size_t len[N];
    cmk_put *p[N];
    cmk_err res[N];
    char dg[N][CMK_DIGEST_MAX], want[CMK_DIGEST_MAX];
    cmk_store *s = open_store(dir, engine);

    REQUIRE(s);
    for (int i = 0; i < N; i++) {
        len[i] = i == 0 ? 0 : i % 5 == 0 ? 150000 + (size_t)i : 4096 + (size_t)i * 37;
        test_fill_text(data[i], len[i], 100 + (uint64_t)i);
    }
    memcpy(data[N - 1], data[1], len[1]); /* a duplicate inside the batch */
    len[N - 1] = len[1];
    for (int i = 0; i < N; i++)
        p[i] = begin_with(s, data[i], len[i], 1000);
    memset(res, 0x7f, sizeof(res));
    CHECK_MSG(cmk_put_commit_many(p, NULL, N, res, dg) == CMK_OK, "%s: batch: %s", engine,
              cmk_errmsg());
    for (int i = 0; i < N; i++) {
        CHECK(p[i] == NULL);
        CHECK_MSG(res[i] == CMK_OK, "%s: put %d: %s", engine, i, cmk_errname(res[i]));
        sha256_hex(data[i], len[i], want);
        CHECK_MSG(strcmp(dg[i], want) == 0, "%s: put %d digest %s, content %s", engine, i, dg[i],
                  want);
        check_blob(s, dg[i], data[i], len[i]);
    }
    cmk_store_close(s);
    /* Durable names: a fresh open finds every blob. */
    s = open_store(dir, engine);
    for (int i = 0; i < N; i++)
        CHECK(stored_size(s, dg[i]) > 0);
    cmk_store_close(s);
}

/* One bad put does not sink the batch: a digest mismatch and a NULL entry fail alone, the
 * first failure (in batch order) is returned with its message, and the failed content is
 * not stored. */
static void t_batch_failures(const char *dir, const char *engine)
{
    enum { N = 5 };
    unsigned char data[N][5000];
    const char *expect[N] = {NULL, NULL, NULL, NULL, NULL};
    char dg[N][CMK_DIGEST_MAX], right[N][CMK_DIGEST_MAX];
    cmk_put *p[N];
    cmk_err res[N];
    cmk_store *s = open_store(dir, engine);

    REQUIRE(s);
    for (int i = 0; i < N; i++) {
        test_fill_random(data[i], sizeof(data[i]), 900 + (uint64_t)i + (engine[0] == 's' ? 50 : 0));
        sha256_hex(data[i], sizeof(data[i]), right[i]);
        p[i] = begin_with(s, data[i], sizeof(data[i]), sizeof(data[i]));
    }
    expect[1] = right[0]; /* wrong for put 1 */
    expect[3] = right[3]; /* right */
    cmk_put_abort(p[2]);
    p[2] = NULL;
    /* The first failure in batch order is the batch's. */
    CHECK_RC(cmk_put_commit_many(p, expect, N, res, dg), CMK_E_DIGEST);
    CHECK(strstr(cmk_errmsg(), "does not match") != NULL);
    CHECK(res[0] == CMK_OK && res[1] == CMK_E_DIGEST && res[2] == CMK_E_INVAL && res[3] == CMK_OK &&
          res[4] == CMK_OK);
    CHECK(stored_size(s, right[0]) > 0 && stored_size(s, right[3]) > 0 &&
          stored_size(s, right[4]) > 0);
    CHECK_MSG(stored_size(s, right[1]) == 0, "%s: the mismatched put was stored", engine);
    CHECK(strcmp(dg[1], right[1]) == 0); /* the digest is still reported */

    /* Only the mismatch: its error is the batch's. */
    p[0] = begin_with(s, data[1], sizeof(data[1]), 999);
    const char *bad[1] = {right[4]};
    CHECK_RC(cmk_put_commit_many(p, bad, 1, res, NULL), CMK_E_DIGEST);
    CHECK(strstr(cmk_errmsg(), "does not match") != NULL);
    CHECK(stored_size(s, right[1]) == 0);
    /* An empty batch, and an all-NULL one. */
    CHECK_OK(cmk_put_commit_many(p, NULL, 0, res, NULL));
    p[0] = NULL;
    CHECK_RC(cmk_put_commit_many(p, NULL, 1, res, NULL), CMK_E_INVAL);
    cmk_store_close(s);
}

/* Puts from two stores cannot share a batch; every handle is still freed (ASan/LSan check
 * that) and nothing is stored. */
static void t_batch_two_stores(const char *dir, const char *dir2, const char *engine)
{
    unsigned char a[3000], b[3000];
    char da[CMK_DIGEST_MAX], db[CMK_DIGEST_MAX];
    cmk_store *s = open_store(dir, engine), *s2 = open_store(dir2, engine);
    cmk_put *p[2];
    cmk_err res[2];

    REQUIRE(s && s2);
    test_fill_random(a, sizeof(a), 31);
    test_fill_random(b, sizeof(b), 32);
    sha256_hex(a, sizeof(a), da);
    sha256_hex(b, sizeof(b), db);
    p[0] = begin_with(s, a, sizeof(a), sizeof(a));
    p[1] = begin_with(s2, b, sizeof(b), sizeof(b));
    CHECK_RC(cmk_put_commit_many(p, NULL, 2, res, NULL), CMK_E_INVAL);
    CHECK(strstr(cmk_errmsg(), "different stores") != NULL);
    CHECK(p[0] == NULL && p[1] == NULL && res[0] == CMK_E_INVAL && res[1] == CMK_E_INVAL);
    CHECK(stored_size(s, da) == 0 && stored_size(s2, db) == 0);
    cmk_store_close(s);
    cmk_store_close(s2);
}

/* Sizes around the small first buffer (CMK_SMALL_BUF) with 1 MiB chunks, written in odd
 * pieces, and a long blob that crosses many writeback windows (and, on io_uring, starts a
 * background fdatasync) with 64 KiB chunks. */
static void t_sizes(const char *dir_1m, const char *dir_64k, const char *engine)
{
    static const size_t sizes[] = {1,
                                   CMK_SMALL_BUF - 1,
                                   CMK_SMALL_BUF,
                                   CMK_SMALL_BUF + 1,
                                   3 * CMK_SMALL_BUF + 5,
                                   (1u << 20) - 1,
                                   (1u << 20),
                                   (1u << 20) + 1,
                                   (5u << 20) + 77};
    size_t big = 72u << 20; /* past WB_SYNC_EVERY (64 MiB): a background fdatasync */
    unsigned char *data = malloc(big);
    char dg[CMK_DIGEST_MAX], want[CMK_DIGEST_MAX];
    cmk_store *s = open_store(dir_1m, engine);

    REQUIRE(data && s);
    test_fill_text(data, big, 77);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        cmk_put *p = begin_with(s, data, sizes[k], 4099);
        sha256_hex(data, sizes[k], want);
        CHECK_MSG(cmk_put_commit(p, NULL, dg) == CMK_OK, "%s: %zu bytes: %s", engine, sizes[k],
                  cmk_errmsg());
        CHECK(strcmp(dg, want) == 0);
        check_blob(s, dg, data, sizes[k]);
        /* A range in the middle. */
        if (sizes[k] > 10) {
            cmk_get *g = NULL;
            unsigned char buf[7];
            size_t n = 0;
            CHECK_OK(cmk_get_open(s, dg, sizes[k] / 2, 7, &g));
            CHECK_OK(cmk_get_read(g, buf, sizeof(buf), &n));
            CHECK(n == 7 && memcmp(buf, data + sizes[k] / 2, 7) == 0);
            cmk_get_close(g);
        }
    }
    cmk_store_close(s);

    s = open_store(dir_64k, engine);
    REQUIRE(s);
    cmk_put *p = begin_with(s, data, big, 1u << 20);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    sha256_hex(data, big, want);
    CHECK(strcmp(dg, want) == 0);
    check_blob(s, dg, data, big);
    cmk_store_close(s);
    free(data);
}

/* gzip / zstd layers are stored raw on their magic, even where zstd would shrink the rest;
 * the same bytes without the magic are compressed. */
static void t_magic(const char *dir, const char *engine)
{
    static const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00};
    static const unsigned char zs[] = {0x28, 0xb5, 0x2f, 0xfd};
    size_t n = 3u << 20;
    unsigned char *data = malloc(n);
    char dg[CMK_DIGEST_MAX];
    cmk_compress_stats a, b;
    cmk_store *s = open_store(dir, engine);

    REQUIRE(data && s);
    test_fill_text(data, n, 5);
    cmk_put *p = begin_with(s, data, n, 1u << 20);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    CHECK_MSG(stored_size(s, dg) < n / 2, "%s: text stored at %llu of %zu bytes", engine,
              (unsigned long long)stored_size(s, dg), n);
    for (int k = 0; k < 2; k++) {
        memcpy(data, k ? zs : gz, 4);
        cmk_compress_stats_get(&a);
        p = begin_with(s, data, n, 1000);
        CHECK_OK(cmk_put_commit(p, NULL, dg));
        cmk_compress_stats_get(&b);
        CHECK_MSG(stored_size(s, dg) > n, "%s: %s layer stored at %llu of %zu bytes", engine,
                  k ? "zstd" : "gzip", (unsigned long long)stored_size(s, dg), n);
        CHECK(b.magic_raw == a.magic_raw + 1 && b.compressed == a.compressed);
        check_blob(s, dg, data, n);
    }
    CHECK(cmk_compress_skip(gz, 3) == 1 && cmk_compress_skip(gz, 2) == 0);
    CHECK(cmk_compress_skip("{\"schemaVersion\"", 16) == 0);
    CHECK(cmk_compress_skip("", 0) == 0);
    cmk_store_close(s);
    free(data);
}

/* Home with a local vault, an RSA key and an identity allowed get/wrapKey/unwrapKey. */
/* The path of a blob's file in the store, through the store's own path rule. */
static void blob_file_path(cmk_store *s, const char *digest, char path[4096])
{
    char parent[4096];
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    cmk_errbuf eb = {0};
    int alg = 0;

    REQUIRE(cmk_digest_parse(digest, &alg, raw, &eb) == CMK_OK);
    REQUIRE(cmk_store_blob_path(s, alg, raw, path, 4096, parent, sizeof(parent), &eb) == CMK_OK);
}

/* The blob file's length and allocation. */
static void blob_file_stat(cmk_store *s, const char *digest, struct stat *st)
{
    char path[4096];

    memset(st, 0, sizeof(*st));
    blob_file_path(s, digest, path);
    CHECK_MSG(stat(path, st) == 0, "stat %s", path);
}

/* Direct writes: blobs of more than one chunk go through aligned windows with O_DIRECT.
 * Sizes: two chunks that compress to a file smaller than one block (the header goes into
 * the only window), records that cross window boundaries, and more windows than the ring
 * holds (it wraps), in odd write pieces. Each blob reads back byte for byte, its file has
 * exactly its stored length (the padding of the last block and the space allocated ahead
 * are cut off), and a store in "buffered" mode reads the same content the same way. */
static void t_direct(const char *dir, const char *engine)
{
    static const size_t sizes[] = {(64u << 10) + 1, (2u << 20) - 100, (2u << 20) + 1,
                                   (5u << 20) + 77, (41u << 20) + 4095};
    size_t big = 41u << 20;
    unsigned char *rnd = malloc(big + 4096), *zeros = calloc(1, 2u << 20);
    char dg[CMK_DIGEST_MAX], want[CMK_DIGEST_MAX];
    cmk_store *s = open_store(dir, engine);
    struct stat st;

    REQUIRE(rnd && zeros && s);
    test_fill_random(rnd, big + 4096, 4242);
    /* Mode auto: a blob below the switch size stays in the page cache (nothing tried). */
    cmk_put *p = begin_with(s, rnd, (5u << 20) + 77, 4099);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    check_blob(s, dg, rnd, (5u << 20) + 77);
    CHECK_MSG(atomic_load(&s->direct_state) == 0, "%s: auto went direct below %llu bytes", engine,
              (unsigned long long)CMK_DIRECT_AFTER);
    cmk_store_close(s);
    s = open_store_mode(dir, engine, "direct");
    REQUIRE(s);
    /* Two chunks of zeros: a few hundred bytes in all. */
    p = begin_with(s, zeros, 2u << 20, 65536);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    check_blob(s, dg, zeros, 2u << 20);
    blob_file_stat(s, dg, &st);
    CHECK_MSG((uint64_t)st.st_size == stored_size(s, dg) && st.st_size < 4096,
              "%s: file of two compressed chunks is %lld bytes (stored %llu)", engine,
              (long long)st.st_size, (unsigned long long)stored_size(s, dg));
    /* Tried on io_uring only: the sync engine writes buffered (one write in flight). */
    CHECK_MSG((atomic_load(&s->direct_state) != 0) == (strcmp(engine, "uring") == 0),
              "%s: direct-write state %d", engine, atomic_load(&s->direct_state));
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        p = begin_with(s, rnd, sizes[k], 12345);
        sha256_hex(rnd, sizes[k], want);
        CHECK_MSG(cmk_put_commit(p, NULL, dg) == CMK_OK, "%s: %zu bytes: %s", engine, sizes[k],
                  cmk_errmsg());
        CHECK(strcmp(dg, want) == 0);
        check_blob(s, dg, rnd, sizes[k]);
        blob_file_stat(s, dg, &st);
        CHECK_MSG((uint64_t)st.st_size == stored_size(s, dg),
                  "%s: %zu bytes: file is %lld bytes, stored size %llu", engine, sizes[k],
                  (long long)st.st_size, (unsigned long long)stored_size(s, dg));
        CHECK_MSG((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size + (1u << 20),
                  "%s: %zu bytes: %lld bytes allocated for a %lld-byte file", engine, sizes[k],
                  (long long)st.st_blocks * 512, (long long)st.st_size);
    }
    /* Switching in the middle of a put, as mode auto does past its size: the first window
     * starts at the block holding the next record, that block's bytes and the file's first
     * block read back from what was written through the page cache. Odd switch points,
     * including one inside the file's first block (three chunks of zeros). */
    static const struct {
        uint64_t after;
        size_t n;
        int zero;
    } sw[] = {{CMK_FMT_HEADER_SIZE + 1, 3u << 16, 1},
              {(1u << 20) + 7, (5u << 20) + 77, 0},
              {(3u << 20) + 4093, (41u << 20) + 4095, 0},
              {(40u << 20), (41u << 20) + 1, 0}};
    for (size_t k = 0; k < sizeof(sw) / sizeof(sw[0]); k++) {
        const unsigned char *src = sw[k].zero ? zeros : rnd + k % 2;
        s->direct_after = sw[k].after;
        p = begin_with(s, src, sw[k].n, 65536 - 3);
        sha256_hex(src, sw[k].n, want);
        CHECK_MSG(cmk_put_commit(p, NULL, dg) == CMK_OK, "%s: switch at %llu: %s", engine,
                  (unsigned long long)sw[k].after, cmk_errmsg());
        CHECK(strcmp(dg, want) == 0);
        check_blob(s, dg, src, sw[k].n);
        blob_file_stat(s, dg, &st);
        CHECK_MSG((uint64_t)st.st_size == stored_size(s, dg),
                  "%s: switch at %llu: file is %lld bytes, stored size %llu", engine,
                  (unsigned long long)sw[k].after, (long long)st.st_size,
                  (unsigned long long)stored_size(s, dg));
    }
    cmk_store_close(s);

    /* The same content through the page cache reads back the same. */
    cmk_store_opts so;
    cmk_store_opts_init(&so);
    so.home = home;
    so.io_engine = engine;
    so.write_mode = "buffered";
    s = NULL;
    CHECK_MSG(cmk_store_open(dir, &so, &s) == CMK_OK, "open buffered: %s", cmk_errmsg());
    REQUIRE(s);
    p = begin_with(s, rnd + 1, (5u << 20) + 77, 4099);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    check_blob(s, dg, rnd + 1, (5u << 20) + 77);
    CHECK(atomic_load(&s->direct_state) == 0); /* never tried */
    cmk_store_close(s);
    so.write_mode = "sideways";
    CHECK(cmk_store_open(dir, &so, &s) == CMK_E_INVAL && s == NULL);
    CHECK(strstr(cmk_errmsg(), "sideways") != NULL);
    free(rnd);
    free(zeros);
}

/* Whether the page holding off is in the page cache (-1: cannot tell). mincore, not a
 * RWF_NOWAIT read: that one starts readahead of the page it misses. */
static int page_cached(int fd, off_t off, size_t file_len)
{
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char v = 0;
    void *m = mmap(NULL, file_len, PROT_READ, MAP_SHARED, fd, 0);
    int r;

    if (m == MAP_FAILED)
        return -1;
    r = mincore((char *)m + (off / pg) * pg, 1, &v) == 0 ? (v & 1) : -1;
    munmap(m, file_len);
    return r;
}

/* Gets a blob read back byte for byte, counting the chunk reads made with pread(2). */
static unsigned counted_get(cmk_store *s, const char *digest, const void *want, size_t n)
{
    unsigned got;

    __atomic_store_n(&big_preads, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&count_reads, 1, __ATOMIC_SEQ_CST);
    check_blob(s, digest, want, n);
    __atomic_store_n(&count_reads, 0, __ATOMIC_SEQ_CST);
    got = __atomic_load_n(&big_preads, __ATOMIC_SEQ_CST);
    return got;
}

/* A get of a blob whose file is not in the page cache reads byte for byte, and reads its
 * chunks with blocking reads on either engine (cmk_io_queue_read_cold): 24 chunk reads made
 * with pread. Read again, now cached, io_uring reads the chunks through the ring (no chunk
 * pread) and the sync engine with pread as always. */
static void t_cold_get(const char *dir, const char *engine)
{
    const size_t n = 24u << 20;
    unsigned char *data = malloc(n);
    char digest[CMK_DIGEST_MAX], path[4096];
    cmk_store *s = open_store(dir, engine);
    int fd, uring = strcmp(engine, "uring") == 0;
    unsigned cold, warm;
    struct stat st;

    REQUIRE(data && s);
    test_fill_random(data, n, 2424);
    cmk_put *p = begin_with(s, data, n, 1u << 20);
    CHECK_OK(cmk_put_commit(p, NULL, digest));
    blob_file_path(s, digest, path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    /* The file is durable, so its pages are clean and the kernel drops them on request. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (fstat(fd, &st) != 0 || page_cached(fd, 5u << 20, (size_t)st.st_size) != 0 ||
        page_cached(fd, (off_t)n - (5u << 20), (size_t)st.st_size) != 0) {
        printf("SKIP cold get (%s): the blob's pages stay in the page cache here\n", engine);
        cold = 0;
    } else {
        cold = counted_get(s, digest, data, n);
        CHECK_MSG(cold >= 24, "%s: cold get made %u chunk reads with pread, expected 24", engine,
                  cold);
    }
    warm = counted_get(s, digest, data, n);
    CHECK_MSG(uring ? warm == 0 : warm >= 24,
              "%s: warm get made %u chunk reads with pread, expected %s", engine, warm,
              uring ? "none (the ring reads them)" : "24");
    close(fd);
    cmk_store_close(s);
    free(data);
}

/* A fixed mmap threshold: every chunk-sized buffer is its own mapping and free() unmaps it, so
 * a buffer the pool did not keep is faulted in again (malloc's own caching would hide it here,
 * not in a long-lived server's fragmented heap). A sanitizer's allocator ignores mallopt; its
 * quarantine keeps freed memory from being reused soon anyway. */
static void fixed_mmap_threshold(void)
{
    if (mallopt(M_MMAP_THRESHOLD, 128 << 10) != 1)
        printf("note: mallopt(M_MMAP_THRESHOLD) not taken by this allocator\n");
}

/* The pages a round of buffer reuse faulted in: (almost) none when the pool kept them. */
static void check_reused(const char *engine, long faults, const char *what)
{
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer maps its shadow memory lazily, which shows up as faults here. */
    printf("SKIP buffer reuse check under ThreadSanitizer (%s: %ld faults)\n", engine, faults);
    faults = 0;
#endif
    CHECK_MSG(faults >= 0 && faults < 128, "%s: %s faulted %ld pages in (buffers not reused)",
              engine, what, faults);
}

/* Back-to-back puts on an open store reuse its buffers: the second of two equal puts faults
 * (almost) no memory in. Its slots and its direct-write windows are 32 MiB (8192 pages) at
 * depth 8 and a chunk of 1 MiB; a first touch costs ~16-19 us per page on the development VM.
 * A pool that keeps a fixed 32 MiB gave back one 2 MiB window per put (513 faults). At depth
 * 40 a put stream holds 91 buffers (41 slots of two, eight windows, the header block): more
 * than a pool with a fixed 64 slots kept, which faulted 4.6k-8.7k pages in again every put. */
static void t_reuse(const char *dir, const char *engine, unsigned depth)
{
    size_t n = 48u << 20;
    unsigned char *rnd = malloc(n);
    char dg[CMK_DIGEST_MAX], what[80];
    cmk_store *s = open_store_depth(dir, engine, "direct", depth);
    struct rusage r0, r1;
    long faults = -1;

    REQUIRE(rnd && s);
    test_fill_random(rnd, n, 77);
    fixed_mmap_threshold();
    for (int i = 0; i < 2; i++) {
        cmk_put *p;
        getrusage(RUSAGE_SELF, &r0);
        p = begin_with(s, rnd, n, 1u << 20);
        CHECK_OK(cmk_put_commit(p, NULL, dg));
        getrusage(RUSAGE_SELF, &r1);
        faults = r1.ru_minflt - r0.ru_minflt;
        CHECK_OK(cmk_delete(s, dg));
    }
    snprintf(what, sizeof(what), "the second of two 48 MiB puts at depth %u", depth);
    check_reused(engine, faults, what);
    cmk_store_close(s);
    free(rnd);
}

/* A put and a get at once, as a registry receives one layer while it serves another: the
 * pool keeps one stream of each, so the second round faults (almost) nothing in. A pool that
 * keeps one put stream only takes the get's buffers back first and then has no room for
 * all of the put's: the next put faults 16 MiB in (~4100 pages). */
static void t_reuse_put_and_get(const char *dir, const char *engine)
{
    size_t n = 24u << 20, off = 0, k;
    unsigned char *a = malloc(n), *b = malloc(n);
    static unsigned char got[64 << 10];
    char dga[CMK_DIGEST_MAX], dgb[CMK_DIGEST_MAX];
    cmk_store *s = open_store_mode(dir, engine, "direct");
    struct rusage r0, r1;
    long faults = -1;
    int same = 1;

    REQUIRE(a && b && s);
    test_fill_random(a, n, 78);
    test_fill_random(b, n, 79);
    memset(got, 0, sizeof(got)); /* its pages faulted in before anything is counted */
    fixed_mmap_threshold();
    cmk_put *pa = begin_with(s, a, n, 1u << 20);
    CHECK_OK(cmk_put_commit(pa, NULL, dga));
    for (int i = 0; i < 2; i++) {
        cmk_get *g = NULL;
        cmk_put *pb;

        getrusage(RUSAGE_SELF, &r0);
        pb = begin_with(s, b, n, 1u << 20); /* in flight, holding its buffers */
        CHECK_OK(cmk_get_open(s, dga, 0, CMK_TO_END, &g));
        for (off = 0; g && cmk_get_read(g, got, sizeof(got), &k) == CMK_OK && k > 0; off += k)
            same = same && off + k <= n && memcmp(got, a + off, k) == 0;
        cmk_get_close(g);
        CHECK_OK(cmk_put_commit(pb, NULL, dgb));
        getrusage(RUSAGE_SELF, &r1);
        faults = r1.ru_minflt - r0.ru_minflt;
        CHECK_MSG(same && off == n, "%s: blob read during a put differs (%zu of %zu bytes)", engine,
                  off, n);
        CHECK_OK(cmk_delete(s, dgb));
    }
    check_reused(engine, faults, "the second round of a 24 MiB put beside a 24 MiB get");
    CHECK_OK(cmk_delete(s, dga));
    cmk_store_close(s);
    free(a);
    free(b);
}

/* A store on a file system that may refuse O_DIRECT; the store notices once and writes
 * buffered, and every blob reads back either way. `must_refuse`: it is known to (ramfs: the
 * fcntl that sets O_DIRECT fails with EINVAL), so io_uring must have gone buffered;
 * otherwise (tmpfs, which refuses O_DIRECT before Linux 6.6 only) either answer is right. */
static void t_direct_refused(const char *dir, const char *engine, int must_refuse)
{
    size_t n = (3u << 20) + 5;
    unsigned char *data = malloc(n);
    char dg[CMK_DIGEST_MAX];
    cmk_store *s = open_store_mode(dir, engine, "direct");

    REQUIRE(data && s);
    test_fill_random(data, n, 99);
    for (int round = 0; round < 2; round++) {
        /* First a switch in the middle of the put (mode auto past its size), then from the
         * first record: the store decides at the first attempt and keeps the answer. */
        s->direct_after = round == 0 ? (1u << 20) + 3 : 0;
        cmk_put *p = begin_with(s, data, n, 1u << 20);
        CHECK_MSG(cmk_put_commit(p, NULL, dg) == CMK_OK, "%s: put in %s: %s", engine, dir,
                  cmk_errmsg());
        check_blob(s, dg, data, n);
        /* Decided once, either way: refused (-1) or taken (1). */
        CHECK_MSG((atomic_load(&s->direct_state) != 0) == (strcmp(engine, "uring") == 0),
                  "%s: direct-write state %d in %s", engine, atomic_load(&s->direct_state), dir);
        if (must_refuse && strcmp(engine, "uring") == 0)
            CHECK_MSG(atomic_load(&s->direct_state) == -1, "%s: O_DIRECT not refused in %s", engine,
                      dir);
        /* Nothing left behind in tmp/ by the fallback. */
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
        CHECK_MSG(test_dir_entries(tmp) == 0, "%s: files left in %s", engine, tmp);
    }
    cmk_store_close(s);
    free(data);
}

/* A store whose file system is full (a 2 MiB tmpfs): a 4 MiB put fails with CMK_E_NOSPACE
 * (not a bare I/O error, so a registry can answer 507), says why, publishes nothing and leaves
 * nothing in tmp/; a small put then still fits. Both engines; io_uring also writing direct. */
static void t_no_space(const char *dir, const char *engine, const char *write_mode)
{
    size_t n = 4u << 20, off;
    unsigned char *data = malloc(n);
    char dg[CMK_DIGEST_MAX], want[CMK_DIGEST_MAX], tmp[4200];
    cmk_store *s = open_store_mode(dir, engine, write_mode);
    cmk_put *p = NULL;
    cmk_err rc = CMK_OK;
    struct statfs before, now;

    REQUIRE(data && s);
    test_fill_random(data, n, 77);
    sha256_hex(data, n, want);
    REQUIRE(statfs(dir, &before) == 0);
    CHECK_OK(cmk_put_begin(s, NULL, &p));
    for (off = 0; p && rc == CMK_OK && off < n; off += 1u << 20)
        rc = cmk_put_write(p, data + off, 1u << 20);
    if (rc == CMK_OK)
        rc = cmk_put_commit(p, NULL, dg);
    else
        cmk_put_abort(p);
    CHECK_MSG(rc == CMK_E_NOSPACE, "%s/%s: 4 MiB put on a 2 MiB file system: %s (%s)", engine,
              write_mode, cmk_errname(rc), cmk_errmsg());
    CHECK_MSG(strstr(cmk_errmsg(), "No space left on device") != NULL, "%s: message: %s", engine,
              cmk_errmsg());
    CHECK(strstr(cmk_strerror(CMK_E_NOSPACE), "space") != NULL);
    CHECK_RC(cmk_stat(s, want, NULL), CMK_E_NOT_FOUND);
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    CHECK_MSG(test_dir_entries(tmp) == 0, "%s: files left in %s", engine, tmp);
    /* The space is given back. The kernel may release the unlinked file a moment after the
     * put returns (io_uring's workers drop their file references late), so this waits for
     * the condition (up to 10 s), not for a time. Then a small blob fits. */
    for (int i = 0; i < 1000 && statfs(dir, &now) == 0 && now.f_bfree < before.f_bfree; i++)
        usleep(10000);
    CHECK_MSG(statfs(dir, &now) == 0 && now.f_bfree >= before.f_bfree,
              "%s: free blocks %llu, %llu before the put", engine, (unsigned long long)now.f_bfree,
              (unsigned long long)before.f_bfree);
    p = begin_with(s, data, 4096, 4096);
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    check_blob(s, dg, data, 4096);
    CHECK_OK(cmk_delete(s, dg));
    cmk_store_close(s);
    free(data);
}

/* The other refusal: O_DIRECT taken at fcntl, the aligned write refused with EINVAL (see
 * pwrite above), on a file system that takes O_DIRECT otherwise. io_uring only (the sync
 * engine never writes direct). t_direct_refused's two puts must go buffered, and the store
 * must have probed exactly once between them: it remembers the answer. */
static void t_direct_write_refused(const char *dir)
{
    char probe[4200];
    int fd;

    snprintf(probe, sizeof(probe), "%s/odirect-probe", dir);
    fd = open(probe, O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) {
        printf("SKIP write-time O_DIRECT refusal: %s takes no O_DIRECT at all\n", dir);
        return;
    }
    close(fd);
    unlink(probe);
    __atomic_store_n(&refused_writes, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&refuse_direct, 1, __ATOMIC_SEQ_CST);
    t_direct_refused(dir, "uring", 1);
    __atomic_store_n(&refuse_direct, 0, __ATOMIC_SEQ_CST);
    CHECK_MSG(__atomic_load_n(&refused_writes, __ATOMIC_SEQ_CST) == 1,
              "%u direct writes refused, expected the one probe", refused_writes);
}

static void make_env(char vkid[CMK_ID_MAX])
{
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 7};
    cmk_errbuf eb = {0};
    cmk_identity id;
    json_t *j = NULL;

    REQUIRE(cmk_identity_create(home, "storeid", &id, &eb) == CMK_OK);
    REQUIRE(cmk_vault_create(home, "batchvault", &vo, NULL, &eb) == CMK_OK);
    REQUIRE(cmk_vault_set_policy(home, "batchvault", id.principal_id, perms, 3, NULL, &eb) ==
            CMK_OK);
    REQUIRE(cmk_vault_key_create(home, "batchvault", "k", "RSA", 2048, &j, &eb) == CMK_OK);
    snprintf(vkid, CMK_ID_MAX, "%s",
             json_string_value(json_object_get(json_object_get(j, "key"), "kid")));
    json_decref(j);
}

static void make_store(const char *dir, uint32_t chunk, const char *kid)
{
    cmk_create_opts co;

    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "storeid";
    co.key_id = kid;
    co.chunk_size = chunk;
    CHECK_MSG(cmk_store_create(dir, &co) == CMK_OK, "create %s: %s", dir, cmk_errmsg());
}

int main(void)
{
    const char *base = test_tmpdir("putbatch");
    char first[4096], vkid[CMK_ID_MAX];
    static const char *engines[] = {"sync", "uring"};

    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_pread = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread");
    REQUIRE(real_pwrite != NULL && real_pread != NULL);
    snprintf(home, sizeof(home), "%s/home", base);
    snprintf(first, sizeof(first), "%s/first", base);
    make_env(vkid);
    make_store(first, 1u << 20, vkid);
    /* A tmpfs for the fallback from direct writes, where there is one we may use. */
    char shm[4096] = "";
    struct statfs sf;
    if (statfs("/dev/shm", &sf) == 0 && sf.f_type == 0x01021994 /* TMPFS_MAGIC */) {
        snprintf(shm, sizeof(shm), "/dev/shm/cmk-putbatch-%d", (int)getpid());
        if (mkdir(shm, 0700) != 0)
            shm[0] = 0;
    }
    if (!shm[0])
        printf("SKIP direct-write fallback: no tmpfs at /dev/shm\n");
    /* ramfs refuses O_DIRECT on every kernel: the refusal path runs for certain there. It
     * takes root (and a runtime that allows mount). */
    char rfs[4096];
    int have_rfs = 0;
    snprintf(rfs, sizeof(rfs), "%s/ramfs", base);
    if (geteuid() == 0 && mkdir(rfs, 0700) == 0 &&
        mount("cmk-test", rfs, "ramfs", 0, "mode=0700") == 0)
        have_rfs = 1;
    else
        printf("SKIP O_DIRECT refusal on ramfs: not root, or mount refused\n");
    for (int e = 0; e < 2; e++) {
        char d1[4096], d2[4096], d3[4096];
        cmk_store *probe = NULL;
        cmk_store_opts so;

        cmk_store_opts_init(&so);
        so.home = home;
        so.io_engine = engines[e];
        if (cmk_store_open(first, &so, &probe) != CMK_OK) {
            printf("SKIP %s engine: %s\n", engines[e], cmk_errmsg());
            continue;
        }
        cmk_store_close(probe);
        snprintf(d1, sizeof(d1), "%s/%s-1m", base, engines[e]);
        snprintf(d2, sizeof(d2), "%s/%s-64k", base, engines[e]);
        snprintf(d3, sizeof(d3), "%s/%s-other", base, engines[e]);
        make_store(d1, 1u << 20, vkid);
        make_store(d2, 64u << 10, vkid);
        make_store(d3, 1u << 20, vkid);
        t_batch(d2, engines[e]);
        t_batch_failures(d1, engines[e]);
        t_batch_two_stores(d1, d3, engines[e]);
        t_sizes(d1, d2, engines[e]);
        t_magic(d1, engines[e]);
        t_direct(d2, engines[e]);
        t_reuse(d1, engines[e], 0);
        t_reuse(d1, engines[e], 40);
        t_reuse_put_and_get(d1, engines[e]);
        t_cold_get(d1, engines[e]);
        if (shm[0]) {
            char d4[4096];
            snprintf(d4, sizeof(d4), "%s/%s", shm, engines[e]);
            make_store(d4, 1u << 20, vkid);
            t_direct_refused(d4, engines[e], 0);
        }
        if (have_rfs) {
            char d5[4200];
            snprintf(d5, sizeof(d5), "%s/%s", rfs, engines[e]);
            make_store(d5, 1u << 20, vkid);
            t_direct_refused(d5, engines[e], 1);
        }
        if (strcmp(engines[e], "uring") == 0) {
            char d6[4200];
            snprintf(d6, sizeof(d6), "%s/%s-refusing", base, engines[e]);
            make_store(d6, 1u << 20, vkid);
            t_direct_write_refused(d6);
        }
        printf("engine %s: done\n", engines[e]);
    }
    if (have_rfs)
        CHECK_MSG(umount2(rfs, MNT_DETACH) == 0, "umount %s", rfs);
    /* A full file system: a 2 MiB tmpfs (root only, like the ramfs above). */
    char full[4096];
    snprintf(full, sizeof(full), "%s/full", base);
    if (geteuid() == 0 && mkdir(full, 0700) == 0 &&
        mount("cmk-test", full, "tmpfs", 0, "size=2m,mode=0700") == 0) {
        for (int e = 0; e < 2; e++) {
            char d7[4200];
            snprintf(d7, sizeof(d7), "%s/%s", full, engines[e]);
            make_store(d7, 1u << 20, vkid);
            t_no_space(d7, engines[e], "auto");
            if (strcmp(engines[e], "uring") == 0)
                t_no_space(d7, engines[e], "direct");
        }
        CHECK_MSG(umount2(full, MNT_DETACH) == 0, "umount %s", full);
    } else {
        printf("SKIP full file system: not root, or mount refused\n");
    }
    CHECK(cmk_err_from_errno(ENOSPC) == CMK_E_NOSPACE &&
          cmk_err_from_errno(EDQUOT) == CMK_E_NOSPACE);
    CHECK(strcmp(cmk_errname(CMK_E_NOSPACE), "CMK_E_NOSPACE") == 0);
    if (shm[0]) {
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", shm);
        CHECK(system(cmd) == 0);
    }
    return check_summary();
}
