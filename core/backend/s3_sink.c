/*
 * s3_sink.c — the S3 blob space's sink (blob.h): a container streamed into a multipart
 * upload while it is sealed.
 *
 * The container is a byte stream cut into parts. The first part holds the header's
 * head_len bytes and the next S3_P1 (5 MiB) bytes, and stays in memory until finish, when
 * the header is known; later parts (S3_PART, 16 MiB) are uploaded as they fill by the blob
 * space's worker threads, four at a time while the put goes on sealing, so the first part
 * goes last (with the last one): S3 takes parts in any order. The multipart upload (to
 * data/<16 hex>) is started by a worker once the second part holds 4 MiB, so that its POST
 * overlaps the sealing. Memory: the first part, the one filling and four uploading, each a
 * 16 MiB buffer of the store's pool (96 MiB; given back to the pool, which keeps one put's
 * worth). A container that ends before the upload is started (header + 9 MiB) is one object,
 * PUT at publish.
 */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_blob.h"
#include "core/backend/s3_xml.h"

static cmk_err sink_fail(s3_sink *k, cmk_err rc, const cmk_errbuf *eb)
{
    return cmk_errbuf_first(&k->failed, &k->eb, rc, eb);
}

/* The sink's sticky error (a worker's upload may have set it), copied to eb (may be NULL). */
static cmk_err sticky(s3_sink *k, cmk_errbuf *eb)
{
    cmk_err rc;

    pthread_mutex_lock(&k->mu);
    rc = k->failed;
    if (rc != CMK_OK && eb)
        *eb = k->eb;
    pthread_mutex_unlock(&k->mu);
    return rc;
}

void *cmk_s3_part_buf(s3_blobs *bs)
{
    return cmk_pool_buf_get(bs->pool, S3_PART);
}

void cmk_s3_part_buf_put(s3_blobs *bs, void *buf)
{
    cmk_pool_buf_put(bs->pool, buf, S3_PART); /* ciphertext only: nothing to wipe */
}

/* Gives back the first part's buffer (the pool's, or malloc'd). */
static void p1_free(s3_sink *k)
{
    if (k->p1_pooled)
        cmk_s3_part_buf_put(k->bs, k->p1);
    else
        free(k->p1);
    k->p1 = NULL;
    k->p1_pooled = 0;
}

cmk_err cmk_s3_sink_create(cmk_bk_blobs *b, cmk_io *io, uint32_t head_len, uint32_t chunk_size,
                           cmk_bk_sink **out, cmk_errbuf *eb)
{
    s3_sink *k = calloc(1, sizeof(*k));

    (void)io;
    (void)chunk_size;
    *out = NULL;
    if (!k)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    k->base.bs = b;
    k->bs = bs_of(b);
    k->p1_pooled = (size_t)head_len + S3_P1 <= S3_PART;
    k->p1 = k->p1_pooled ? cmk_s3_part_buf(k->bs) : malloc((size_t)head_len + S3_P1);
    if (!k->p1) {
        free(k);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    }
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->head_len = head_len;
    k->p1_len = head_len;
    k->total = head_len;
    *out = &k->base;
    return CMK_OK;
}

/* Starts the multipart upload into a new data object, data/<16 hex> (on a worker: k->mu not
 * held). */
static cmk_err start_upload(s3_sink *k, cmk_errbuf *eb)
{
    unsigned char rnd[8];
    char id[sizeof(k->upload_id)];
    cmk_s3_req r = {.method = "POST", .query = "uploads="};
    cmk_err rc;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "no random bytes for an upload name");
    snprintf(k->data_key, sizeof(k->data_key), "data/%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    r.key = k->data_key;
    rc = cmk_s3_http_do(k->bs->bk->http, &r, eb);
    if (rc == CMK_OK)
        rc = cmk_s3_xml_upload_id(r.resp ? r.resp : "", r.resp_len, id, sizeof(id), eb);
    cmk_s3_req_done(&r);
    /* Published whole under the lock: the sealing thread waits for upload_id (wait_started)
     * and must never see it half written. */
    if (rc == CMK_OK) {
        pthread_mutex_lock(&k->mu);
        memcpy(k->upload_id, id, sizeof(id));
        pthread_mutex_unlock(&k->mu);
    }
    return rc;
}

/* Uploads part `num` (1-based) from buf. */
static cmk_err upload_part(s3_sink *k, int num, const void *buf, size_t len, cmk_errbuf *eb)
{
    char eid[1600], query[1700];
    cmk_s3_req r = {.method = "PUT", .key = k->data_key, .body = buf, .body_len = len};
    cmk_err rc;

    if (cmk_s3_query_escape(k->upload_id, eid, sizeof(eid)) < 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "upload id too long");
    snprintf(query, sizeof(query), "partNumber=%d&uploadId=%s", num, eid);
    r.query = query;
    rc = cmk_s3_http_do(k->bs->bk->http, &r, eb);
    if (rc == CMK_OK && !r.etag[0])
        rc = cmk_errbuf_set(eb, CMK_E_IO, "%s/%s: part %d: the object store sent no ETag",
                            k->bs->bk->name, k->data_key, num);
    if (rc == CMK_OK) {
        pthread_mutex_lock(&k->mu);
        snprintf(k->etags[num - 1], sizeof(k->etags[0]), "%s", r.etag);
        pthread_mutex_unlock(&k->mu);
    }
    cmk_s3_req_done(&r);
    return rc;
}

/* Room for the ETag of part num (k->mu held: workers write the table). */
static cmk_err etag_room(s3_sink *k, int num, cmk_errbuf *eb)
{
    int nc = k->etag_cap ? 2 * k->etag_cap : 64;
    char(*ne)[72];

    if (num <= k->etag_cap)
        return CMK_OK;
    while (nc < num)
        nc *= 2;
    ne = realloc(k->etags, (size_t)nc * sizeof(*ne));
    if (!ne)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    k->etags = ne;
    k->etag_cap = nc;
    return CMK_OK;
}

/* Waits until at most `most` parts are uploading (k->mu held). */
static void wait_uploads(s3_sink *k, int most)
{
    while (k->uploading > most)
        pthread_cond_wait(&k->cv, &k->mu);
}

/* A worker's upload of a part (the result into the sink, the buffer back to its spares), or
 * (part 0) the start of the multipart upload. */
void cmk_s3_part_job(struct job *j)
{
    s3_sink *k = j->sink;
    cmk_errbuf eb = {0};
    cmk_err rc = j->part == 0 ? start_upload(k, &eb) : upload_part(k, j->part, j->buf, j->len, &eb);

    pthread_mutex_lock(&k->mu);
    if (rc != CMK_OK)
        sink_fail(k, rc, &eb);
    if (j->buf)
        k->spare[k->nspare++] = j->buf;
    k->uploading--;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    free(j);
}

/* Queues the start of the multipart upload, once the container is known to need one: a
 * worker's POST overlaps the sealing of the second part instead of delaying its upload. */
static cmk_err queue_start(s3_sink *k, cmk_errbuf *eb)
{
    struct job *j = calloc(1, sizeof(*j));

    if (!j)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    *j = (struct job){.sink = k, .part = 0};
    pthread_mutex_lock(&k->mu);
    k->uploading++;
    k->started = 1;
    pthread_mutex_unlock(&k->mu);
    cmk_s3_pool_push(k->bs, j);
    return CMK_OK;
}

/* Waits for the multipart upload to be started (k->mu held): CMK_OK once upload_id is set. */
static cmk_err wait_started(s3_sink *k, cmk_errbuf *eb)
{
    while (!k->upload_id[0] && k->failed == CMK_OK)
        pthread_cond_wait(&k->cv, &k->mu);
    if (k->failed != CMK_OK) {
        *eb = k->eb;
        return k->failed;
    }
    return CMK_OK;
}

/* Hands the filling part to the workers once the upload is started, waiting while S3_UP_MAX
 * are uploading; the next part fills a spare buffer. sync: upload it from this thread
 * instead (the last part, at finish). */
static cmk_err flush_cur(s3_sink *k, int sync, cmk_errbuf *eb)
{
    struct job *j;
    cmk_err rc = CMK_OK;
    int num;

    if (!k->started)
        rc = queue_start(k, eb);
    if (rc != CMK_OK)
        return rc;
    pthread_mutex_lock(&k->mu);
    num = k->nparts + 2;
    rc = wait_started(k, eb);
    if (rc == CMK_OK)
        rc = etag_room(k, num, eb);
    if (rc == CMK_OK && !sync)
        wait_uploads(k, S3_UP_MAX - 1);
    pthread_mutex_unlock(&k->mu);
    if (rc != CMK_OK)
        return rc;
    if (sync) {
        rc = upload_part(k, num, k->cur, k->cur_len, eb);
        if (rc == CMK_OK) {
            k->nparts++;
            k->cur_len = 0;
        }
        return rc;
    }
    j = calloc(1, sizeof(*j));
    if (!j)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    *j = (struct job){.sink = k, .part = num, .buf = k->cur, .len = k->cur_len};
    pthread_mutex_lock(&k->mu);
    k->uploading++;
    k->cur = k->nspare > 0 ? k->spare[--k->nspare] : NULL;
    pthread_mutex_unlock(&k->mu);
    k->nparts++;
    k->cur_len = 0;
    cmk_s3_pool_push(k->bs, j);
    return CMK_OK;
}

static cmk_err add_bytes(s3_sink *k, const uint8_t *p, size_t len, cmk_errbuf *eb)
{
    size_t p1_cap = (size_t)k->head_len + S3_P1;

    k->total += len;
    if (k->p1_len < p1_cap) {
        size_t n = len < p1_cap - k->p1_len ? len : p1_cap - k->p1_len;
        memcpy(k->p1 + k->p1_len, p, n);
        k->p1_len += n;
        p += n;
        len -= n;
    }
    while (len > 0) {
        size_t n;
        if (!k->cur && !(k->cur = cmk_s3_part_buf(k->bs)))
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
        n = len < S3_PART - k->cur_len ? len : S3_PART - k->cur_len;
        memcpy(k->cur + k->cur_len, p, n);
        k->cur_len += n;
        p += n;
        len -= n;
        /* S3_START into the second part: the container will be uploaded in parts. (Smaller
         * ones are sent as one object at publish.) */
        if (!k->started && k->cur_len >= S3_START) {
            cmk_err rc = queue_start(k, eb);
            if (rc != CMK_OK)
                return rc;
        }
        if (k->cur_len == S3_PART) {
            cmk_err rc = flush_cur(k, 0, eb);
            if (rc != CMK_OK)
                return rc;
        }
    }
    return CMK_OK;
}

cmk_err cmk_s3_sink_append(cmk_bk_sink *ks, const void *rec, size_t len, uint64_t tag,
                           unsigned flags, int *held, cmk_errbuf *eb)
{
    s3_sink *k = (s3_sink *)ks;
    cmk_errbuf e = {0};

    (void)tag;
    (void)flags;
    *held = 0; /* copied: the record's buffer is free at once */
    if (sticky(k, eb) != CMK_OK)
        return k->failed;
    if (add_bytes(k, rec, len, &e) != CMK_OK) {
        pthread_mutex_lock(&k->mu);
        sink_fail(k, e.code, &e);
        pthread_mutex_unlock(&k->mu);
        return sticky(k, eb);
    }
    return CMK_OK;
}

cmk_err cmk_s3_sink_poll(cmk_bk_sink *ks, uint64_t *tags, int max, int wait, int *n, cmk_errbuf *eb)
{
    s3_sink *k = (s3_sink *)ks;

    (void)tags;
    (void)max;
    (void)wait;
    *n = 0;
    return sticky(k, eb);
}

void cmk_s3_sink_pending(const cmk_bk_sink *ks, unsigned *held, unsigned *busy)
{
    (void)ks;
    *held = 0;
    *busy = 0;
}

cmk_err cmk_s3_sink_quiesce(cmk_bk_sink *ks, cmk_errbuf *eb)
{
    return cmk_s3_sink_poll(ks, NULL, 0, 0, &(int){0}, eb);
}

void cmk_s3_sink_set_io(cmk_bk_sink *ks, cmk_io *io)
{
    (void)ks;
    (void)io;
}

cmk_err cmk_s3_sink_finish(cmk_bk_sink *ks, const void *tail, size_t tail_len, const void *head,
                           cmk_errbuf *eb)
{
    s3_sink *k = (s3_sink *)ks;
    cmk_errbuf e = {0};
    cmk_err rc = sticky(k, &e);

    if (rc == CMK_OK)
        rc = add_bytes(k, tail, tail_len, &e);
    if (rc == CMK_OK) {
        memcpy(k->p1, head, k->head_len);
        if (k->started) {
            /* The last part (any size) to the workers, and the first (header + S3_P1, final
             * now) from this thread at the same time: the tail is one part time, not two. */
            if (k->cur_len > 0)
                rc = flush_cur(k, 0, &e);
            if (rc == CMK_OK) {
                pthread_mutex_lock(&k->mu);
                rc = wait_started(k, &e);
                pthread_mutex_unlock(&k->mu);
            }
            if (rc == CMK_OK)
                rc = upload_part(k, 1, k->p1, k->p1_len, &e);
        } else if (k->cur_len > 0) {
            /* No upload started: the first part and the one filling are one object. */
            uint8_t *np = k->p1_pooled && k->p1_len + k->cur_len <= S3_PART
                              ? k->p1
                              : malloc(k->p1_len + k->cur_len);
            if (!np) {
                rc = cmk_errbuf_set(&e, CMK_E_NOMEM, "out of memory (blob upload)");
            } else {
                if (np != k->p1) {
                    memcpy(np, k->p1, k->p1_len);
                    p1_free(k);
                    k->p1 = np;
                }
                memcpy(k->p1 + k->p1_len, k->cur, k->cur_len);
                k->p1_len += k->cur_len;
                k->cur_len = 0;
            }
        }
    }
    pthread_mutex_lock(&k->mu);
    wait_uploads(k, 0);
    if (rc != CMK_OK)
        sink_fail(k, rc, &e);
    pthread_mutex_unlock(&k->mu);
    if (sticky(k, eb) != CMK_OK)
        return k->failed;
    k->finished = 1;
    if (k->cur)
        cmk_s3_part_buf_put(k->bs, k->cur);
    k->cur = NULL;
    for (int i = 0; i < k->nspare; i++)
        cmk_s3_part_buf_put(k->bs, k->spare[i]);
    k->nspare = 0;
    if (k->upload_id[0])
        p1_free(k);
    return CMK_OK;
}

void cmk_s3_sink_close(cmk_bk_sink *ks)
{
    s3_sink *k = (s3_sink *)ks;
    cmk_s3_bk *bk = k->bs->bk;

    pthread_mutex_lock(&k->mu);
    wait_uploads(k, 0);
    pthread_mutex_unlock(&k->mu);
    if (k->upload_id[0] && !k->completed) {
        char eid[1600], query[1700];
        cmk_s3_req r = {.method = "DELETE", .key = k->data_key, .query = query};
        cmk_errbuf eb = {0};
        if (cmk_s3_query_escape(k->upload_id, eid, sizeof(eid)) >= 0) {
            snprintf(query, sizeof(query), "uploadId=%s", eid);
            if (cmk_s3_http_do(bk->http, &r, &eb) != CMK_OK) {
                /* An abandoned upload: invisible, reclaimed by the bucket's lifecycle rule. */
            }
            cmk_s3_req_done(&r);
        }
    } else if (k->completed == 1) {
        cmk_s3_delete_key(bk, k->data_key); /* completed but not linked: a lost race or a failure */
    }
    p1_free(k);
    if (k->cur)
        cmk_s3_part_buf_put(k->bs, k->cur);
    for (int i = 0; i < k->nspare; i++)
        cmk_s3_part_buf_put(k->bs, k->spare[i]);
    free(k->etags);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}
