/* test_local_blob.c — the local backend's blob sink on both I/O engines: records in order
 * with the header placed last, held records reported by poll, scratch bytes cut at finish,
 * publish-if-absent with the keep verdict (kept, replaced, refused), abort leaving nothing,
 * delete and list. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/backend/local_blob.h"
#include "core/digest.h"
#include "tests/check.h"

#define HEAD 192
#define NREC 40
#define RLEN 70000

static char hexa[65], hexb[65];
static int verdict_calls;
static cmk_err verdict;

static cmk_err keep_fn(void *arg, size_t i, cmk_errbuf *eb)
{
    (void)arg;
    (void)i;
    verdict_calls++;
    if (verdict != CMK_OK && verdict != CMK_E_INTEGRITY)
        return cmk_errbuf_set(eb, verdict, "no verdict");
    return verdict;
}

static int count_cb(const char *key, void *arg)
{
    (void)key;
    (*(int *)arg)++;
    return 0;
}

/* Writes one container: NREC records of RLEN bytes (byte value = record number), a tail and
 * a header; parks once in the middle with scratch bytes. Returns the sink, finished. */
static cmk_bk_sink *write_one(cmk_bk_blobs *bs, cmk_io *io, uint8_t *recs, int one)
{
    cmk_bk_sink *k = NULL;
    uint8_t head[HEAD], tail[100], scratch[5000], back[5000];
    int held_any = 0, n = 0, nrec = one ? 1 : NREC;
    unsigned held, busy;
    uint64_t tags[64];

    memset(head, 0xAB, sizeof(head));
    memset(tail, 0xCD, sizeof(tail));
    REQUIRE(cmk_bk_sink_create(bs, io, HEAD, 65536, &k, NULL) == CMK_OK);
    for (int i = 0; i < nrec; i++) {
        int held1 = 0;
        memset(recs + (size_t)i * RLEN, i + 1, RLEN);
        CHECK_OK(cmk_bk_sink_append(k, recs + (size_t)i * RLEN, RLEN, (uint64_t)i,
                                    one ? CMK_BK_APPEND_NOW : 0, &held1, NULL));
        held_any |= held1;
        if (i == nrec / 2 && !one) {
            /* Park: everything written, scratch kept past the end and read back. */
            CHECK_OK(cmk_bk_sink_quiesce(k, NULL));
            cmk_bk_sink_pending(k, &held, &busy);
            while (held > 0) {
                CHECK_OK(cmk_bk_sink_poll(k, tags, 64, 1, &n, NULL));
                cmk_bk_sink_pending(k, &held, &busy);
            }
            CHECK(busy == 0);
            test_fill_random(scratch, sizeof(scratch), 3);
            CHECK_OK(cmk_bk_sink_scratch_put(k, scratch, sizeof(scratch), NULL));
            cmk_bk_sink_set_io(k, NULL);
            cmk_bk_sink_set_io(k, io);
            CHECK_OK(cmk_bk_sink_scratch_get(k, back, sizeof(back), NULL));
            CHECK(memcmp(back, scratch, sizeof(back)) == 0);
        }
    }
    CHECK(one ? !held_any : 1);
    /* Every held record is reported once. */
    for (;;) {
        cmk_bk_sink_pending(k, &held, &busy);
        if (busy == 0)
            break;
        CHECK_OK(cmk_bk_sink_poll(k, tags, 64, 1, &n, NULL));
    }
    CHECK(held == 0);
    CHECK_OK(cmk_bk_sink_finish(k, tail, sizeof(tail), head, NULL));
    return k;
}

/* The file holds header, records in order, tail, and nothing after. */
static void check_file(const char *dir, const char *hex, int nrec)
{
    char path[4200];
    size_t len = 0;
    unsigned char *f;

    snprintf(path, sizeof(path), "%s/blobs/sha256/%.2s/%s", dir, hex, hex);
    f = test_read_file(path, &len);
    REQUIRE(f);
    CHECK_MSG(len == HEAD + (size_t)nrec * RLEN + 100, "length %zu", len);
    CHECK(f[0] == 0xAB && f[HEAD - 1] == 0xAB);
    for (int i = 0; i < nrec; i++)
        CHECK(f[HEAD + (size_t)i * RLEN] == i + 1 && f[HEAD + (size_t)(i + 1) * RLEN - 1] == i + 1);
    CHECK(f[len - 1] == 0xCD);
    free(f);
}

static void run(cmk_io_kind kind, uint64_t direct_after)
{
    const char *dir = test_tmpdir("local_blob");
    char p[4200], key[CMK_BK_KEY_MAX];
    uint8_t *recs = malloc((size_t)NREC * RLEN);
    cmk_bk_blobs *bs = NULL;
    cmk_bk_sink *k[2];
    const char *keys[2];
    cmk_err res[2];
    cmk_errbuf ebs[2];
    atomic_int dstate = 0;
    cmk_pool *pool = NULL;
    cmk_io *io = NULL;
    int dirfd, tmpfd, count = 0;

    REQUIRE(recs);
    snprintf(p, sizeof(p), "%s/tmp", dir);
    REQUIRE(mkdir(p, 0700) == 0);
    snprintf(p, sizeof(p), "%s/blobs", dir);
    REQUIRE(mkdir(p, 0700) == 0);
    snprintf(p, sizeof(p), "%s/blobs/sha256", dir);
    REQUIRE(mkdir(p, 0700) == 0);
    snprintf(p, sizeof(p), "%s/blobs/sha256/%.2s", dir, hexa);
    REQUIRE(mkdir(p, 0700) == 0);
    snprintf(p, sizeof(p), "%s/blobs/sha256/%.2s", dir, hexb);
    REQUIRE(mkdir(p, 0700) == 0 || strncmp(hexa, hexb, 2) == 0);
    dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    snprintf(p, sizeof(p), "%s/tmp", dir);
    tmpfd = open(p, O_RDONLY | O_DIRECTORY);
    REQUIRE(dirfd >= 0 && tmpfd >= 0);
    REQUIRE(cmk_pool_create(1, 32u << 20, &pool, NULL) == CMK_OK);
    if (cmk_io_create(kind, 16, &io, NULL) != CMK_OK) {
        fprintf(stderr, "# engine %d unavailable: skipped\n", (int)kind);
        goto out;
    }
    REQUIRE(cmk_local_blobs_open(dir, dirfd, tmpfd, pool, direct_after, &dstate, &bs, NULL) ==
            CMK_OK);
    CHECK(cmk_bk_blob_caps(bs) & CMK_BK_SCRATCH);

    /* Two blobs in one batch: both published, both durable. */
    k[0] = write_one(bs, io, recs, 0);
    snprintf(key, sizeof(key), "sha256/%s", hexa);
    keys[0] = strdup(key);
    k[1] = write_one(bs, io, recs, 1);
    snprintf(key, sizeof(key), "sha256/%s", hexb);
    keys[1] = strdup(key);
    verdict_calls = 0;
    cmk_bk_publish_many(bs, k, keys, 2, keep_fn, NULL, res, ebs);
    CHECK_OK(res[0]);
    CHECK_OK(res[1]);
    CHECK(verdict_calls == 0);
    cmk_bk_sink_close(k[0]);
    cmk_bk_sink_close(k[1]);
    check_file(dir, hexa, NREC);
    check_file(dir, hexb, 1);
    CHECK(test_dir_entries(p) == 0); /* tmp/ */

    /* Already there: kept (one verdict), replaced (file rewritten), or refused. */
    verdict = CMK_OK;
    k[0] = write_one(bs, io, recs, 1);
    verdict_calls = 0;
    cmk_bk_publish_many(bs, k, keys, 1, keep_fn, NULL, res, ebs);
    CHECK_OK(res[0]);
    CHECK(verdict_calls == 1);
    cmk_bk_sink_close(k[0]);
    check_file(dir, hexa, NREC);
    verdict = CMK_E_INTEGRITY;
    k[0] = write_one(bs, io, recs, 1);
    cmk_bk_publish_many(bs, k, keys, 1, keep_fn, NULL, res, ebs);
    CHECK_OK(res[0]);
    cmk_bk_sink_close(k[0]);
    check_file(dir, hexa, 1);
    verdict = CMK_E_KEY_UNREACHABLE;
    k[0] = write_one(bs, io, recs, 1);
    cmk_bk_publish_many(bs, k, keys, 1, keep_fn, NULL, res, ebs);
    CHECK_RC(res[0], CMK_E_KEY_UNREACHABLE);
    cmk_bk_sink_close(k[0]);

    /* An aborted sink leaves nothing behind. */
    k[0] = write_one(bs, io, recs, 0);
    cmk_bk_sink_close(k[0]);
    CHECK(test_dir_entries(p) == 0);

    CHECK_OK(cmk_bk_blob_list(bs, count_cb, &count, NULL));
    CHECK(count == 2);
    CHECK_OK(cmk_bk_blob_delete(bs, keys[1], NULL));
    CHECK_RC(cmk_bk_blob_delete(bs, keys[1], NULL), CMK_E_NOT_FOUND);
    CHECK_RC(cmk_bk_blob_delete(bs, "nokey", NULL), CMK_E_INVAL);
    count = 0;
    CHECK_OK(cmk_bk_blob_list(bs, count_cb, &count, NULL));
    CHECK(count == 1);
    free((void *)keys[0]);
    free((void *)keys[1]);
out:
    cmk_bk_blobs_close(bs);
    cmk_io_free(io);
    cmk_pool_free(pool);
    close(dirfd);
    close(tmpfd);
    free(recs);
}

int main(void)
{
    char key[CMK_BK_KEY_MAX], dg[CMK_DIGEST_MAX];

    memset(hexa, 'a', 64);
    memset(hexb, 'b', 64);
    hexa[64] = hexb[64] = '\0';
    snprintf(dg, sizeof(dg), "sha256:%s", hexa);
    CHECK_OK(cmk_bk_blob_key(dg, key, NULL));
    CHECK(strncmp(key, "sha256/", 7) == 0 && strcmp(key + 7, hexa) == 0);
    cmk_bk_blob_digest(key, dg, sizeof(dg));
    CHECK(strncmp(dg, "sha256:", 7) == 0);
    CHECK_RC(cmk_bk_blob_key("sha256:xyz", key, NULL), CMK_E_INVAL);
    run(CMK_IO_SYNC, UINT64_MAX);
    run(CMK_IO_URING, UINT64_MAX);
    run(CMK_IO_URING, 0); /* direct windows where the file system takes them */
    check_cleanup();
    return check_summary();
}
