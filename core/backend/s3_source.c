/*
 * s3_source.c — the S3 blob space's source (blob.h): a published container read with
 * ranged GETs.
 *
 * The first S3_HEAD_CACHE bytes are fetched at open (one GET, or two through a
 * link) and serve the header; other reads are ranged GETs of exactly the bytes asked. Queued
 * reads (the get pipeline's read-ahead) are run by the blob space's worker threads, several
 * in flight at once, and polled by the source.
 *
 * A long read front to back (the get pipeline advises its range) is streamed instead: one GET
 * from the first queued read to the range's end, on a thread of the source's own, whose body
 * is written straight into the buffers of the reads as they are queued; TCP holds the gateway
 * back while no read is queued. A stream that breaks (or a read out of its order) is not an
 * error: the reads it had not filled, and all later ones, are ranged GETs on the workers,
 * with their retries. A stream thread is not a worker: a slow reader cannot hold up other
 * blobs' uploads.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "core/backend/s3_blob.h"

cmk_err cmk_s3_source_open(cmk_bk_blobs *b, const char *key, cmk_io *io, cmk_bk_source **out,
                           uint64_t *size, int64_t *mtime, cmk_errbuf *eb)
{
    s3_blobs *bs = bs_of(b);
    s3_source *s = calloc(1, sizeof(*s));
    char bkey[CMK_BK_KEY_MAX + 8], data[CMK_BK_KEY_MAX + 48];
    uint64_t lsize = 0, osize = 0;
    int is_link = 0;
    size_t fl = 0;
    cmk_err rc;

    (void)io;
    *out = NULL;
    if (!s || !(s->cache = malloc(S3_HEAD_CACHE))) {
        free(s);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob source)");
    }
    s->base.bs = b;
    s->bs = bs;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    snprintf(bkey, sizeof(bkey), "blobs/%s", key);
    rc = cmk_s3_read_link(bs->bk, bkey, data, sizeof(data), &lsize, &is_link, &osize, mtime,
                          s->cache, S3_HEAD_CACHE, &fl, eb);
    if (rc == CMK_OK && is_link) {
        int64_t dm;
        int inner = 0;
        uint64_t dummy;
        char d2[8];
        rc = cmk_s3_read_link(bs->bk, data, d2, sizeof(d2), &dummy, &inner, &osize, &dm, s->cache,
                              S3_HEAD_CACHE, &fl, eb);
        if (rc == CMK_E_NOT_FOUND)
            rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "blob %s: its data object %s is missing", key,
                                data);
        if (rc == CMK_OK && osize != lsize)
            rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                                "blob %s: its data object holds %" PRIu64 " bytes, not %" PRIu64,
                                key, osize, lsize);
        snprintf(s->key, sizeof(s->key), "%s", data);
    } else {
        snprintf(s->key, sizeof(s->key), "%s", bkey);
    }
    if (rc != CMK_OK) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s->cache);
        free(s);
        return rc;
    }
    s->size = osize;
    s->cache_len = fl;
    *size = osize;
    *out = &s->base;
    return CMK_OK;
}

static cmk_err ranged_get(s3_source *s, void *buf, size_t len, uint64_t off, cmk_errbuf *eb)
{
    cmk_s3_req r = {.method = "GET",
                    .key = s->key,
                    .range_off = off,
                    .range_len = len,
                    .dst = buf,
                    .dst_cap = len};
    cmk_err rc;

    if (len == 0)
        return CMK_OK;
    rc = cmk_s3_http_do(s->bs->bk->http, &r, eb);
    if (rc == CMK_OK && r.resp_len != len)
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "short read of %s/%s", s->bs->bk->name, s->key);
    cmk_s3_req_done(&r);
    return rc;
}

cmk_err cmk_s3_source_read(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                           const char *what, unsigned flags, cmk_errbuf *eb)
{
    s3_source *s = (s3_source *)src;

    (void)flags;
    if (off > s->size || len > s->size - off)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is truncated", what);
    if (off + len <= s->cache_len) {
        memcpy(buf, s->cache + off, len);
        return CMK_OK;
    }
    return ranged_get(s, buf, len, off, eb);
}

/* Takes from the queue (bs->mu held) the reads of j's source that continue j's range, up to
 * S3_GET_MAX bytes in all: they become one ranged GET (fewer requests, each costing the
 * object store a lookup and an authentication). Returns how many jobs are in js. */
int cmk_s3_source_take(s3_blobs *bs, struct job *j, struct job **js)
{
    s3_source *s = j->src;
    uint64_t end = j->off + j->len;
    size_t total = j->len;
    int n = 1;

    js[0] = j;
    if (j->off + j->len <= s->cache_len || j->off > s->size || j->len > s->size - j->off)
        return 1;
    for (int again = 1; again && n < S3_SRC_QMAX;) {
        struct job **pp = &bs->head, *prev = NULL;
        again = 0;
        for (; *pp; prev = *pp, pp = &(*pp)->next) {
            struct job *c = *pp;
            if (c->src != s || c->off != end || c->len > S3_GET_MAX - total ||
                c->len > s->size - c->off || c->len == 0)
                continue;
            *pp = c->next;
            if (bs->tail == c)
                bs->tail = prev;
            c->next = NULL;
            js[n++] = c;
            end += c->len;
            total += c->len;
            again = 1;
            break;
        }
    }
    return n;
}

/* A read's result to the source (s->mu held). */
static void report(s3_source *s, struct job *j, int64_t res)
{
    s->done[s->ndone].tag = j->tag;
    s->done[s->ndone].res = res;
    s->ndone++;
    s->inflight--;
}

/* One ranged GET into the buffers of n adjacent reads. */
static cmk_err ranged_getv(s3_source *s, struct job **js, int n, cmk_errbuf *eb)
{
    struct iovec iov[S3_SRC_QMAX];
    size_t total = 0;
    cmk_s3_req r = {.method = "GET", .key = s->key, .range_off = js[0]->off};
    cmk_err rc;

    for (int i = 0; i < n; i++) {
        iov[i].iov_base = js[i]->buf;
        iov[i].iov_len = js[i]->len;
        total += js[i]->len;
    }
    r.range_len = total;
    r.dstv = iov;
    r.dstn = n;
    rc = cmk_s3_http_do(s->bs->bk->http, &r, eb);
    if (rc == CMK_OK && r.resp_len != total)
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "short read of %s/%s", s->bs->bk->name, s->key);
    cmk_s3_req_done(&r);
    return rc;
}

/* Runs n adjacent reads taken together (cmk_s3_source_take) on a worker: one ranged GET (a
 * plain read if n is 1), each read's result reported to its source, the jobs freed. */
void cmk_s3_source_run(struct job **js, int n)
{
    struct job *j = js[0];
    s3_source *s = j->src;
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (n == 1)
        rc = cmk_s3_source_read(&s->base, j->buf, j->len, j->off, "blob chunk", 0, &eb);
    else
        rc = ranged_getv(s, js, n, &eb);
    pthread_mutex_lock(&s->mu);
    if (rc != CMK_OK && s->eb.code == CMK_OK)
        s->eb = eb;
    for (int i = 0; i < n; i++)
        report(s, js[i], rc == CMK_OK ? (int64_t)js[i]->len : rc == CMK_E_CORRUPT ? 0 : -5);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++)
        free(js[i]);
}

/* ---- the stream ---- */

/* The GET's body, piece by piece, into the queued reads in order. */
static int stream_sink(void *arg, const void *p, size_t n)
{
    s3_source *s = arg;
    const uint8_t *b = p;

    /* More than the range asked for: an object store not to be trusted with the rest. */
    if (n > s->st_left)
        return 1;
    s->st_left -= n;
    while (n > 0) {
        struct job *j;
        size_t k;

        pthread_mutex_lock(&s->mu);
        while (!s->sq_head && !s->closing)
            pthread_cond_wait(&s->cv, &s->mu);
        j = s->sq_head;
        pthread_mutex_unlock(&s->mu);
        if (!j)
            return 1; /* closing: the reader is gone */
        /* Only this thread takes from sq, so j stays its own until it is reported. */
        k = j->len - s->sq_fill < n ? j->len - s->sq_fill : n;
        memcpy((uint8_t *)j->buf + s->sq_fill, b, k);
        s->sq_fill += k;
        b += k;
        n -= k;
        if (s->sq_fill == j->len) {
            pthread_mutex_lock(&s->mu);
            s->sq_head = j->next;
            if (!s->sq_head)
                s->sq_tail = NULL;
            report(s, j, (int64_t)j->len);
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            free(j);
            s->sq_fill = 0;
        }
    }
    return 0;
}

static int stream_cancel(void *arg)
{
    s3_source *s = arg;
    int c;

    pthread_mutex_lock(&s->mu);
    c = s->closing;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void *stream_main(void *arg)
{
    s3_source *s = arg;
    cmk_errbuf eb = {0};
    struct job *left;
    uint64_t start;
    cmk_err rc;
    cmk_s3_req r = {.method = "GET",
                    .key = s->key,
                    .sink = stream_sink,
                    .cancel = stream_cancel,
                    .sink_arg = s};

    pthread_mutex_lock(&s->mu);
    start = s->sq_head->off;
    pthread_mutex_unlock(&s->mu);
    r.range_off = start;
    r.range_len = s->st_end - start;
    s->st_left = r.range_len;
    /* Its error needs no report: the reads left over are retried as ranged GETs below. */
    rc = cmk_s3_http_do(s->bs->bk->http, &r, &eb);
    (void)rc;
    cmk_s3_req_done(&r);
    atomic_fetch_sub(&s->bs->streams, 1);
    /* Whatever the outcome, the stream is over: the reads it did not fill go to the workers
     * (or, if the source is closing, end), and so do later ones. */
    pthread_mutex_lock(&s->mu);
    s->st = 2;
    left = s->sq_head;
    s->sq_head = s->sq_tail = NULL;
    if (s->closing) {
        for (struct job *j = left, *nx; j; j = nx) {
            nx = j->next;
            report(s, j, -125); /* ECANCELED: nobody reads it */
            free(j);
        }
        left = NULL;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    for (struct job *j = left, *nx; j; j = nx) {
        nx = j->next;
        j->next = NULL;
        cmk_s3_pool_push(s->bs, j);
    }
    return NULL;
}

/* Takes j into the stream if it continues the advised range (s->mu held): 1 if taken. */
static int stream_take(s3_source *s, struct job *j)
{
    if (s->st == 2 || s->closing || !s->st_end || j->off != s->st_next ||
        j->len > s->st_end - j->off)
        return 0;
    s->st_next = j->off + j->len;
    if (j->off + j->len <= s->cache_len)
        return 0; /* in the cached head: a copy, on a worker */
    if (s->sq_tail)
        s->sq_tail->next = j;
    else
        s->sq_head = j;
    s->sq_tail = j;
    if (s->st == 0) {
        if (atomic_fetch_add(&s->bs->streams, 1) >= S3_STREAMS_MAX ||
            pthread_create(&s->st_th, NULL, stream_main, s) != 0) {
            atomic_fetch_sub(&s->bs->streams, 1);
            s->sq_head = s->sq_tail = NULL;
            s->st = 2;
            return 0;
        }
        s->st = 1;
        s->st_joinable = 1;
    }
    pthread_cond_broadcast(&s->cv);
    return 1;
}

cmk_err cmk_s3_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off, uint64_t tag,
                            unsigned flags, cmk_errbuf *eb)
{
    s3_source *s = (s3_source *)src;
    s3_blobs *bs = s->bs;
    struct job *j;
    int taken;

    (void)flags;
    if (!(j = calloc(1, sizeof(*j))))
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (read queue)");
    *j = (struct job){.src = s, .buf = buf, .len = len, .off = off, .tag = tag};
    pthread_mutex_lock(&s->mu);
    if (s->inflight + s->ndone >= S3_SRC_QMAX) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        return cmk_errbuf_set(eb, CMK_E_BUSY, "too many reads in flight");
    }
    s->inflight++;
    taken = stream_take(s, j);
    pthread_mutex_unlock(&s->mu);
    if (!taken)
        cmk_s3_pool_push(bs, j);
    return CMK_OK;
}

int cmk_s3_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb)
{
    s3_source *s = (s3_source *)src;
    int n;

    pthread_mutex_lock(&s->mu);
    while (wait && s->ndone == 0 && s->inflight > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    /* A failed read fails the poll with its reason (the object store's error, which an
     * errno in its completion would lose); the reads that completed stay queued. */
    if (s->eb.code != CMK_OK) {
        *eb = s->eb;
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    n = s->ndone < max ? s->ndone : max;
    memcpy(out, s->done, (size_t)n * sizeof(*out));
    memmove(s->done, s->done + n, (size_t)(s->ndone - n) * sizeof(*out));
    s->ndone -= n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int cmk_s3_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end)
{
    s3_source *s = (s3_source *)src;

    pthread_mutex_lock(&s->mu);
    if (s->st == 0 && end <= s->size && end > start && end - start >= S3_STREAM_MIN) {
        s->st_next = start;
        s->st_end = end;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void cmk_s3_source_close(cmk_bk_source *src)
{
    s3_source *s = (s3_source *)src;

    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->st_joinable)
        pthread_join(s->st_th, NULL);
    pthread_mutex_lock(&s->mu);
    while (s->inflight > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->cache);
    free(s);
}
