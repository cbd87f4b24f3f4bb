/*
 * test_backend_s3.c — the S3 backend against a real object store (Ceph RGW, started by
 * tests/s3/ceph.sh, which exports the AWS_* variables): the contract every backend passes
 * (tests/unit/backend_contract.c: versioned records, conditional writes and deletes, names,
 * listing, races between handles, the event log, no lock), then what is S3's own: new-store
 * staging and publish under a prefix, a version-only read (HEAD), the log as one object per
 * line, and blobs (one-part and multipart containers published only if absent with the keep
 * verdict, ranged reads and queued reads, delete and list; nothing visible under blobs/
 * before publish, nothing left by an abort).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/backend/backend.h"
#include "core/backend/s3.h"
#include "core/backend/s3_http.h"
#include "core/backend/s3_internal.h"
#include "core/backend/select.h"
#include "core/base/pool.h"
#include "tests/check.h"
#include "tests/unit/backend_contract.h"

static char bucket[64], store[128];
static cmk_errbuf eb;

/* One request of the test's own, outside the backend; *resp (may be NULL) gets the body. */
static cmk_err raw(const char *method, const char *key, const char *query, char **resp)
{
    cmk_s3_conf c;
    cmk_s3_http *h = NULL;
    cmk_s3_req r = {.method = method, .key = key, .query = query};
    cmk_err rc = cmk_s3_conf_load(store, &c, &eb);

    if (rc == CMK_OK)
        rc = cmk_s3_http_new(&c, &h, &eb);
    cmk_s3_conf_wipe(&c);
    if (rc == CMK_OK)
        rc = cmk_s3_http_do(h, &r, &eb);
    if (resp) {
        *resp = r.resp;
        r.resp = NULL;
    }
    cmk_s3_req_done(&r);
    cmk_s3_http_free(h);
    return rc;
}

static void make_bucket(void)
{
    char save[128];

    snprintf(bucket, sizeof(bucket), "cmk-test-%d-%ld", (int)getpid(), (long)time(NULL) % 100000);
    snprintf(save, sizeof(save), "s3://%s", bucket);
    snprintf(store, sizeof(store), "%s", save);
    REQUIRE(raw("PUT", NULL, NULL, NULL) == CMK_OK);
}

/* A staged, published store at s3://bucket/<sub> with store.json "{}". */
static cmk_backend *new_store(const char *sub, char *name, size_t cap)
{
    cmk_backend *b = NULL;
    char canon[700];

    snprintf(name, cap, "s3://%s/%s", bucket, sub);
    CHECK_OK(cmk_backend_target(name, canon, sizeof(canon), &eb));
    CHECK_MSG(strncmp(canon, name, strlen(canon)) == 0, "%s", canon);
    REQUIRE(cmk_backend_create(canon, &b, &eb) == CMK_OK);
    CHECK_OK(cmk_bk_rec_put(b, "store.json", "{}", 2, NULL, NULL, &eb));
    REQUIRE(cmk_backend_publish(b, &eb) == CMK_OK);
    return b;
}

static void test_create_open(void)
{
    cmk_backend *b = NULL, *b2 = NULL;
    char name[200], canon[700];
    void *data = NULL;
    size_t len = 0;

    /* Nothing there: open says so, naming the store. */
    snprintf(name, sizeof(name), "s3://%s/none", bucket);
    CHECK_RC(cmk_backend_open(name, 0, canon, sizeof(canon), &b, &eb), CMK_E_NOT_FOUND);
    CHECK(strstr(eb.msg, "store.json") != NULL);

    /* An unpublished store leaves nothing behind. */
    snprintf(name, sizeof(name), "s3://%s/gone", bucket);
    REQUIRE(cmk_backend_create(name, &b, &eb) == CMK_OK);
    CHECK_OK(cmk_bk_rec_put(b, "keyring.json", "{}", 2, NULL, NULL, &eb));
    CHECK_OK(cmk_bk_log_append(b, "events.log", "{}\n", 3, &eb));
    cmk_bk_close(b);
    CHECK_OK(cmk_backend_target(name, canon, sizeof(canon), &eb));

    b = new_store("a/b/", name, sizeof(name));
    CHECK(strcmp(name, "s3://") > 0);
    /* A published store: open finds it; a second create is refused. */
    CHECK_RC(cmk_backend_target(name, canon, sizeof(canon), &eb), CMK_E_REFUSED);
    snprintf(name, sizeof(name), "s3://%s//a//b", bucket);
    REQUIRE(cmk_backend_open(name, 0, canon, sizeof(canon), &b2, &eb) == CMK_OK);
    snprintf(name, sizeof(name), "s3://%s/a/b", bucket);
    CHECK_MSG(strcmp(canon, name) == 0, "canon %s", canon);
    CHECK_OK(cmk_bk_rec_get(b2, "store.json", 100, &data, &len, NULL, &eb));
    CHECK(len == 2 && memcmp(data, "{}", 2) == 0);
    free(data);
    cmk_bk_close(b2);
    b2 = NULL;
    /* A prefix holding other objects cannot take a new store. */
    snprintf(name, sizeof(name), "s3://%s/a", bucket);
    CHECK_RC(cmk_backend_target(name, canon, sizeof(canon), &eb), CMK_E_EXISTS);
    /* Bad names. */
    CHECK_RC(cmk_backend_open("s3://A_b/x", 0, canon, sizeof(canon), &b2, &eb), CMK_E_INVAL);
    CHECK_RC(cmk_backend_open("s3://bucket/../x", 0, canon, sizeof(canon), &b2, &eb), CMK_E_INVAL);
    cmk_bk_close(b2);
    cmk_bk_close(b);
}

/* A version-only read is a HEAD: it gives the length too. */
static void test_head(void)
{
    char name[200];
    cmk_backend *b = new_store("rec", name, sizeof(name));
    cmk_rec_ver v1, v2;
    size_t len = 0;

    CHECK_OK(cmk_bk_rec_put(b, "keyring.json", "three", 5, NULL, &v1, &eb));
    CHECK_OK(cmk_bk_rec_get(b, "keyring.json", 100, NULL, &len, &v2, &eb));
    CHECK(cmk_rec_ver_eq(&v1, &v2) && len == 5);
    cmk_bk_close(b);
}

/* A delete at a version is a tombstone (an empty object written with If-Match): it reads as
 * absent, a create writes over it, a delete at a stale version fails and leaves the newer
 * record; a delete of whatever is there removes the object. */
static void test_tombstone(void)
{
    char name[200], key[300];
    cmk_backend *b = new_store("tomb", name, sizeof(name));
    cmk_rec_ver v1, v2;
    void *data = NULL;
    char *body = NULL;
    size_t len = 0;

    snprintf(key, sizeof(key), "tomb/meta/t1");
    CHECK_OK(cmk_bk_rec_put(b, "meta/t1", "abc", 3, NULL, &v1, &eb));
    CHECK_OK(cmk_bk_rec_delete(b, "meta/t1", &v1, &eb));
    CHECK_OK(raw("GET", key, NULL, &body));
    CHECK_MSG(!body || !*body, "the tombstone is empty: %s", body ? body : "");
    free(body);
    body = NULL;
    CHECK_RC(cmk_bk_rec_get(b, "meta/t1", 10, &data, &len, NULL, &eb), CMK_E_NOT_FOUND);
    CHECK_RC(cmk_bk_rec_delete(b, "meta/t1", &v1, &eb), CMK_E_NOT_FOUND);
    CHECK_OK(cmk_bk_rec_put(b, "meta/t1", "abcd", 4, NULL, &v2, &eb));
    CHECK_OK(raw("GET", key, NULL, &body));
    CHECK(body && strcmp(body, "abcd") == 0);
    free(body);
    body = NULL;
    /* Stale: written over since v2 was read; the delete must not take the newer record. */
    CHECK_OK(cmk_bk_rec_put(b, "meta/t1", "efgh", 4, &v2, &v1, &eb));
    CHECK_RC(cmk_bk_rec_delete(b, "meta/t1", &v2, &eb), CMK_E_BUSY);
    CHECK_OK(cmk_bk_rec_get(b, "meta/t1", 10, &data, &len, NULL, &eb));
    CHECK(data && len == 4 && memcmp(data, "efgh", 4) == 0);
    free(data);
    /* Whatever it is: gone, no tombstone. */
    CHECK_OK(cmk_bk_rec_delete(b, "meta/t1", NULL, &eb));
    CHECK_RC(raw("GET", key, NULL, NULL), CMK_E_NOT_FOUND);
    cmk_bk_close(b);
}

static int count_prefix(const char *key, uint64_t size, void *arg)
{
    (void)key;
    (void)size;
    (*(int *)arg)++;
    return 0;
}

static int count_objects(cmk_backend *b, const char *pfx)
{
    int n = 0;
    CHECK_OK(cmk_s3_list(cmk_s3_of(b), pfx, NULL, count_prefix, &n, &eb));
    return n;
}

static int log_collect(const char *line, size_t len, void *arg)
{
    char *all = arg;
    strncat(all, line, len);
    strcat(all, ";");
    return 0;
}

/* The log is one object per line under events/, the cursor the last one's key; only
 * events.log exists. */
static void test_log(void)
{
    char name[200], cur[CMK_BK_CURSOR_MAX] = "", got[512] = "";
    cmk_backend *b = new_store("log", name, sizeof(name));

    for (int i = 0; i < 5; i++)
        CHECK_OK(cmk_bk_log_append(b, "events.log", "{\"e\":1}\n", 8, &eb));
    CHECK(count_objects(b, "events/") == 5);
    CHECK_OK(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb));
    CHECK_MSG(strcmp(got, "{\"e\":1};{\"e\":1};{\"e\":1};{\"e\":1};{\"e\":1};") == 0, "%s", got);
    CHECK(strncmp(cur, "events/", 7) == 0);
    CHECK_RC(cmk_bk_log_append(b, "other.log", "x\n", 2, &eb), CMK_E_INVAL);
    cmk_bk_close(b);
}

/* ---- blobs ---- */

static int verdict_calls;
static cmk_err verdict;

static cmk_err keep_fn(void *arg, size_t i, cmk_errbuf *e)
{
    (void)arg;
    (void)i;
    verdict_calls++;
    if (verdict != CMK_OK && verdict != CMK_E_INTEGRITY)
        return cmk_errbuf_set(e, verdict, "no verdict");
    return verdict;
}

/* A container of n bytes: head (64 bytes of 'H'), then pseudo-random records. */
static uint8_t *make_bytes(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
    return p;
}

/* Streams data (n bytes, the first 64 as the head) into a sink in records of rec bytes. */
static cmk_bk_sink *stream(cmk_bk_blobs *bs, const uint8_t *data, size_t n, size_t rec)
{
    cmk_bk_sink *k = NULL;
    size_t off = 64, tail = n > 64 + 100 ? 100 : 0;
    int held;

    REQUIRE(cmk_bk_sink_create(bs, NULL, 64, 1u << 20, &k, &eb) == CMK_OK);
    while (off < n - tail) {
        size_t l = n - tail - off < rec ? n - tail - off : rec;
        CHECK_OK(cmk_bk_sink_append(k, data + off, l, off, 0, &held, &eb));
        CHECK(held == 0);
        off += l;
    }
    CHECK_OK(cmk_bk_sink_finish(k, data + n - tail, tail, data, &eb));
    return k;
}

/* Reads [from, n) of src into got by queued reads of `step` bytes, front to back, at most
 * `depth` in flight (as the get pipeline does); with `advise`, the range is advised first
 * (a long one is then streamed: s3_source.c). Stops queueing at `stop` (0: never) and
 * returns without waiting for what is in flight: the close must cope. */
static int queued_read(cmk_bk_source *src, uint8_t *got, size_t from, size_t n, size_t step,
                       int depth, int advise, size_t stop)
{
    size_t next = from, done = from;
    int inflight = 0, ok = 1;

    if (advise)
        (void)cmk_bk_source_advise(src, from, n);
    while (ok && done < n) {
        while (ok && next < n && inflight < depth) {
            size_t l = next + step > n ? n - next : step;
            if (stop && next >= stop)
                return ok;
            ok = cmk_bk_source_queue(src, got + next, l, next, next, 0, &eb) == CMK_OK;
            next += l;
            inflight++;
        }
        cmk_io_cqe c[8];
        int m = ok ? cmk_bk_source_poll(src, c, 8, 1, &eb) : 0;
        ok = ok && m > 0;
        for (int i = 0; ok && i < m; i++) {
            size_t off = (size_t)c[i].tag, l = off + step > n ? n - off : step;
            ok = c[i].res == (int64_t)l;
            done += l;
            inflight--;
        }
    }
    return ok;
}

static int read_back(cmk_bk_blobs *bs, const char *key, const uint8_t *want, size_t n)
{
    cmk_bk_source *src = NULL;
    uint64_t size = 0;
    int64_t mtime = 0;
    uint8_t *got = malloc(n + 1);
    int ok;

    if (cmk_bk_source_open(bs, key, NULL, &src, &size, &mtime, &eb) != CMK_OK) {
        free(got);
        return 0;
    }
    ok = size == n && mtime > 0;
    /* The header from the cache, a middle range, and the tail by queued reads. */
    if (n >= 64)
        ok = ok && cmk_bk_source_read(src, got, 64, 0, "head", 0, &eb) == CMK_OK &&
             memcmp(got, want, 64) == 0;
    if (n > 200000)
        ok = ok && cmk_bk_source_read(src, got, 100000, n / 2, "mid", 0, &eb) == CMK_OK &&
             memcmp(got, want + n / 2, 100000) == 0;
    {
        size_t step = n / 8 + 1, q = 0, done = 0;
        for (size_t off = 0; off < n; off += step, q++)
            ok = ok && cmk_bk_source_queue(src, got + off, off + step > n ? n - off : step, off, q,
                                           0, &eb) == CMK_OK;
        while (ok && done < q) {
            cmk_io_cqe c[8];
            int m = cmk_bk_source_poll(src, c, 8, 1, &eb);
            ok = m > 0;
            for (int i = 0; ok && i < m; i++) {
                size_t off = c[i].tag * step, l = off + step > n ? n - off : step;
                ok = c[i].res == (int64_t)l;
            }
            done += (size_t)(m > 0 ? m : 0);
        }
        ok = ok && memcmp(got, want, n) == 0;
    }
    /* Front to back, advised: streamed if long (one GET into the queued buffers). */
    memset(got, 0, n);
    ok = ok && queued_read(src, got, 0, n, (1u << 20) + 7, 8, 1, 0) && memcmp(got, want, n) == 0;
    CHECK_RC(cmk_bk_source_read(src, got, 2, n - 1, "past the end", 0, &eb), CMK_E_CORRUPT);
    cmk_bk_source_close(src);
    free(got);
    return ok;
}

/* The streamed read (s3_source.c) beside reads that are not its: a range from the middle, a
 * read out of its order (a ranged GET on a worker), and a close while the stream is waiting
 * for reads that never come (it must stop and join, nothing written after). */
static void test_stream(cmk_bk_blobs *bs, const char *key, const uint8_t *want, size_t n)
{
    cmk_bk_source *src = NULL;
    uint64_t size = 0;
    int64_t mtime = 0;
    uint8_t *got = calloc(1, n);
    size_t mid = n / 3 + 5, stray = n - (2u << 20);

    REQUIRE(got != NULL);
    REQUIRE(cmk_bk_source_open(bs, key, NULL, &src, &size, &mtime, &eb) == CMK_OK);
    CHECK(queued_read(src, got, mid, n, 1u << 20, 8, 1, 0));
    CHECK(memcmp(got + mid, want + mid, n - mid) == 0);
    cmk_bk_source_close(src);

    /* Out of order first: that read is a ranged GET, the others are streamed. */
    memset(got, 0, n);
    REQUIRE(cmk_bk_source_open(bs, key, NULL, &src, &size, &mtime, &eb) == CMK_OK);
    (void)cmk_bk_source_advise(src, 0, n);
    CHECK_OK(cmk_bk_source_queue(src, got + stray, 4096, stray, 1u << 30, 0, &eb));
    {
        cmk_io_cqe c[8];
        int m = 0;
        while (m == 0)
            m = cmk_bk_source_poll(src, c, 8, 1, &eb);
        CHECK(m == 1 && c[0].tag == 1u << 30 && c[0].res == 4096);
    }
    CHECK(memcmp(got + stray, want + stray, 4096) == 0);
    CHECK(queued_read(src, got, 0, n, 1u << 20, 8, 0, 0));
    CHECK(memcmp(got, want, n) == 0);
    cmk_bk_source_close(src);

    /* Abandoned: 3 MiB queued, none polled, then closed mid-stream. */
    REQUIRE(cmk_bk_source_open(bs, key, NULL, &src, &size, &mtime, &eb) == CMK_OK);
    CHECK(queued_read(src, got, 0, n, 1u << 20, 8, 1, 3u << 20));
    cmk_bk_source_close(src);
    /* And the object reads whole afterwards. */
    memset(got, 0, n);
    REQUIRE(cmk_bk_source_open(bs, key, NULL, &src, &size, &mtime, &eb) == CMK_OK);
    CHECK(queued_read(src, got, 0, n, 1u << 20, 8, 1, 0));
    CHECK(memcmp(got, want, n) == 0);
    cmk_bk_source_close(src);
    free(got);
}

static int count_key(const char *key, void *arg)
{
    (void)key;
    (*(int *)arg)++;
    return 0;
}

static void test_blobs(void)
{
    char name[200];
    cmk_backend *b = new_store("blobs", name, sizeof(name));
    cmk_bk_blobs *bs = NULL;
    cmk_pool *pool = NULL;
    atomic_int ds = 0;
    const char *ka = "sha256/aa00000000000000000000000000000000000000000000000000000000000001";
    const char *kb = "sha256/bb00000000000000000000000000000000000000000000000000000000000002";
    size_t small_n = 300000, big_n = (size_t)29 << 20;
    uint8_t *small = make_bytes(small_n, 1), *big = make_bytes(big_n, 2),
            *big2 = make_bytes(big_n, 3);
    cmk_bk_sink *k[2];
    const char *keys[2] = {ka, kb};
    cmk_err res[2];
    cmk_errbuf ebs[2];
    int n = 0;

    REQUIRE(cmk_pool_create(2, 1u << 20, &pool, &eb) == CMK_OK);
    REQUIRE(cmk_bk_blobs_open(b, pool, UINT64_MAX, &ds, &bs, &eb) == CMK_OK);

    /* One part and three parts (the first uploaded last): nothing visible before publish. */
    k[0] = stream(bs, small, small_n, 65536);
    k[1] = stream(bs, big, big_n, (1u << 20) + 33);
    CHECK(count_objects(b, "blobs/") == 0);
    memset(ebs, 0, sizeof(ebs));
    res[0] = res[1] = CMK_E_IO;
    cmk_bk_publish_many(bs, k, keys, 2, keep_fn, NULL, res, ebs);
    CHECK_RC(res[0], CMK_OK);
    CHECK_RC(res[1], CMK_OK);
    cmk_bk_sink_close(k[0]);
    cmk_bk_sink_close(k[1]);
    CHECK(count_objects(b, "blobs/") == 2);
    CHECK(count_objects(b, "data/") == 1);
    CHECK(read_back(bs, ka, small, small_n));
    CHECK(read_back(bs, kb, big, big_n));
    test_stream(bs, kb, big, big_n);

    /* Publishing over a taken key: kept (ours is dropped, its data object deleted). */
    verdict = CMK_OK;
    verdict_calls = 0;
    k[0] = stream(bs, big2, big_n, 1u << 20);
    res[0] = CMK_E_IO;
    cmk_bk_publish_many(bs, k, &keys[1], 1, keep_fn, NULL, res, ebs);
    CHECK_RC(res[0], CMK_OK);
    CHECK(verdict_calls == 1);
    cmk_bk_sink_close(k[0]);
    CHECK(read_back(bs, kb, big, big_n));
    CHECK(count_objects(b, "data/") == 1);
    /* Replaced (the engine found the copy damaged); the old data object goes. */
    verdict = CMK_E_INTEGRITY;
    k[0] = stream(bs, big2, big_n, 1u << 20);
    cmk_bk_publish_many(bs, k, &keys[1], 1, keep_fn, NULL, res, ebs);
    CHECK_RC(res[0], CMK_OK);
    cmk_bk_sink_close(k[0]);
    CHECK(read_back(bs, kb, big2, big_n));
    CHECK(count_objects(b, "data/") == 1);
    /* Refused by the verdict: the item fails with it. */
    verdict = CMK_E_KEY_DENIED;
    k[0] = stream(bs, small, small_n, 4096);
    cmk_bk_publish_many(bs, k, &keys[0], 1, keep_fn, NULL, res, ebs);
    CHECK_RC(res[0], CMK_E_KEY_DENIED);
    cmk_bk_sink_close(k[0]);

    /* An aborted multipart sink leaves no upload and no object. */
    k[0] = stream(bs, big, big_n, 1u << 20);
    cmk_bk_sink_close(k[0]);
    CHECK(count_objects(b, "data/") == 1);
    {
        char *body = NULL;
        CHECK_OK(raw("GET", NULL, "uploads=", &body));
        CHECK_MSG(body && !strstr(body, "<Upload>"), "multipart uploads left: %s",
                  body ? body : "-");
        free(body);
    }

    /* List and delete. */
    CHECK_OK(cmk_bk_blob_list(bs, count_key, &n, &eb));
    CHECK(n == 2);
    CHECK_OK(cmk_bk_blob_delete(bs, kb, &eb));
    CHECK_RC(cmk_bk_blob_delete(bs, kb, &eb), CMK_E_NOT_FOUND);
    CHECK(count_objects(b, "data/") == 0);
    {
        cmk_bk_source *src = NULL;
        uint64_t sz;
        int64_t mt;
        CHECK_RC(cmk_bk_source_open(bs, kb, NULL, &src, &sz, &mt, &eb), CMK_E_NOT_FOUND);
    }
    cmk_bk_blobs_close(bs);
    cmk_pool_free(pool);
    cmk_bk_close(b);
    free(small);
    free(big);
    free(big2);
}

/* The contract's stores: a prefix each in the test's bucket. */
static void s3_where(const char *tag, char *name, size_t cap)
{
    snprintf(name, cap, "s3://%s/contract-%s", bucket, tag);
}

int main(void)
{
    static const bk_contract_factory s3 = {"s3", s3_where};

    if (!getenv("AWS_ENDPOINT_URL") && !getenv("AWS_ENDPOINT_URL_S3")) {
        fprintf(stderr, "test_backend_s3: no object store: run it through tests/s3/ceph.sh "
                        "(AWS_ENDPOINT_URL is not set)\n");
        return 1;
    }
    make_bucket();
    bk_contract_run(&s3);
    test_create_open();
    test_head();
    test_tombstone();
    test_log();
    test_blobs();
    return check_summary();
}
