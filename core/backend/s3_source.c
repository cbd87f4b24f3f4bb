/*
 * s3_source.c — the S3 blob space's source (blob.h): a published container read with
 * ranged GETs.
 *
 * The first S3_HEAD_CACHE bytes are fetched at open (one GET, or two through a
 * link) and serve the header; other reads are ranged GETs of exactly the bytes asked. Queued
 * reads (the get pipeline's read-ahead) are run by the blob space's worker threads, several
 * in flight at once, and polled by the source.
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
    for (int i = 0; i < n; i++) {
        s->done[s->ndone].tag = js[i]->tag;
        s->done[s->ndone].res = rc == CMK_OK ? (int64_t)js[i]->len : rc == CMK_E_CORRUPT ? 0 : -5;
        s->ndone++;
        s->inflight--;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++)
        free(js[i]);
}

cmk_err cmk_s3_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off, uint64_t tag,
                            unsigned flags, cmk_errbuf *eb)
{
    s3_source *s = (s3_source *)src;
    s3_blobs *bs = s->bs;
    struct job *j;

    (void)flags;
    pthread_mutex_lock(&s->mu);
    if (s->inflight + s->ndone >= S3_SRC_QMAX) {
        pthread_mutex_unlock(&s->mu);
        return cmk_errbuf_set(eb, CMK_E_BUSY, "too many reads in flight");
    }
    s->inflight++;
    pthread_mutex_unlock(&s->mu);
    j = calloc(1, sizeof(*j));
    if (!j) {
        pthread_mutex_lock(&s->mu);
        s->inflight--;
        pthread_mutex_unlock(&s->mu);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (read queue)");
    }
    *j = (struct job){.src = s, .buf = buf, .len = len, .off = off, .tag = tag};
    cmk_s3_pool_push(bs, j);
    return CMK_OK;
}

int cmk_s3_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb)
{
    s3_source *s = (s3_source *)src;
    int n;

    (void)eb;
    pthread_mutex_lock(&s->mu);
    while (wait && s->ndone == 0 && s->inflight > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    n = s->ndone < max ? s->ndone : max;
    memcpy(out, s->done, (size_t)n * sizeof(*out));
    memmove(s->done, s->done + n, (size_t)(s->ndone - n) * sizeof(*out));
    s->ndone -= n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int cmk_s3_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end)
{
    (void)src;
    (void)start;
    (void)end;
    return 0;
}

void cmk_s3_source_close(cmk_bk_source *src)
{
    s3_source *s = (s3_source *)src;

    pthread_mutex_lock(&s->mu);
    while (s->inflight > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->cache);
    free(s);
}
