/*
 * s3_blob.c — the S3 backend's blob space (blob.h): containers streamed into objects,
 * published only if absent, read with ranged GETs.
 *
 * Sink: the container is a byte stream cut into parts. The first part holds the header's
 * head_len bytes and the next S3_P1 (5 MiB) bytes, and stays in memory until finish, when
 * the header is known; later parts (S3_PART, 8 MiB) are uploaded as they fill by the blob
 * space's worker threads, four at a time while the put goes on sealing, so the first part
 * goes last (with the last one): S3 takes parts in any order. The multipart upload (to
 * data/<16 hex>) is started by a worker once the second part is half full, so that its POST
 * overlaps the sealing. Memory: the first part, the one filling and four uploading (5 + 5 x 8
 * = 45 MiB). A container that ends before the upload is started (the first part and half of
 * the second: header + 9 MiB) is one object, PUT at publish.
 *
 * Publish: a one-part container is PUT as blobs/<key> with If-None-Match: *. A multipart one
 * is completed into its data object, then a link object, "CMKSLINK\n<data key>\n<size>\n",
 * is created as blobs/<key> with If-None-Match: * (RGW ignores conditions on
 * CompleteMultipartUpload, so the exclusive step is the link's). The loser of a race, or a
 * put whose copy the engine keeps, deletes its own data object. A crash leaves at most an
 * incomplete upload or an unlinked data object, never anything under blobs/.
 *
 * Source: the first S3_HEAD_CACHE bytes are fetched at open (one GET, or two through a
 * link) and serve the header; other reads are ranged GETs of exactly the bytes asked. Queued
 * reads (the get pipeline's read-ahead) are run by the blob space's worker threads, several
 * in flight at once, and polled by the source.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "core/backend/s3_internal.h"
#include "core/backend/s3_link.h"
#include "core/backend/s3_xml.h"

/* S3_P1: the first part's bytes after the header, S3's minimum part size (every part but
 * the last must hold 5 MiB). The first part is sent only at finish, after the last byte is
 * sealed: the smaller it is, the sooner the parts after it start and the less is left to
 * send at the end. S3_PART: the parts after it. */
#define S3_P1         (5u << 20)
#define S3_PART       (8u << 20)
#define S3_HEAD_CACHE (64u << 10)
#define S3_READERS    4
#define S3_SRC_QMAX   16
/* Adjacent queued reads are merged into one ranged GET of at most this many bytes. */
#define S3_GET_MAX (4u << 20)
/* Parts of one sink uploading at once (each holds an S3_PART buffer). One part PUT to RGW
 * runs well below what the gateway takes (each waits on the gateway's own writes): with four
 * in flight a put of random data went from 60% of a raw PUT's rate to 77% (README). At most
 * S3_READERS (the workers run them). */
#define S3_UP_MAX 4
#define LINK_MAX  CMK_S3_LINK_MAX

typedef struct s3_blobs s3_blobs;
typedef struct s3_source s3_source;
struct s3_sink;

struct job {
    s3_source *src; /* a read, or NULL: an upload of part `part` of sink */
    struct s3_sink *sink;
    int part;
    void *buf;
    size_t len;
    uint64_t off, tag;
    struct job *next;
};

struct s3_blobs {
    cmk_bk_blobs base;
    cmk_s3_bk *bk;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    int stop;
    int nthreads;
    pthread_t th[S3_READERS];
};

typedef struct s3_sink {
    cmk_bk_sink base;
    /* Parts past the first are uploaded by the space's worker threads, S3_UP_MAX at a time,
     * while the put goes on sealing; mu guards what they change (uploading, spare, etags,
     * failed, eb). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int uploading; /* jobs queued or running: part uploads and the start of the upload */
    int started;   /* the start of the multipart upload was queued (upload_id set once done) */
    uint8_t *spare[S3_UP_MAX];
    int nspare;
    s3_blobs *bs;
    uint32_t head_len;
    uint8_t *p1; /* the first part: header room and the first S3_P1 bytes */
    size_t p1_len;
    uint8_t *cur; /* the part filling */
    size_t cur_len;
    uint64_t total;
    int nparts; /* parts uploaded (2..) */
    char (*etags)[72];
    int etag_cap;
    char data_key[CMK_BK_KEY_MAX + 40];
    char upload_id[512]; /* "" until the multipart upload is started */
    int finished, completed;
    cmk_err failed;
    cmk_errbuf eb;
} s3_sink;

struct s3_source {
    cmk_bk_source base;
    s3_blobs *bs;
    char key[CMK_BK_KEY_MAX + 48]; /* the object holding the bytes */
    uint64_t size;
    uint8_t *cache;
    size_t cache_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    cmk_io_cqe done[S3_SRC_QMAX];
    int ndone;
};

static s3_blobs *bs_of(cmk_bk_blobs *b)
{
    return (s3_blobs *)b;
}

/* ---- sink ---- */

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

static cmk_err s3_sink_create(cmk_bk_blobs *b, cmk_io *io, uint32_t head_len, uint32_t chunk_size,
                              cmk_bk_sink **out, cmk_errbuf *eb)
{
    s3_sink *k = calloc(1, sizeof(*k));

    (void)io;
    (void)chunk_size;
    *out = NULL;
    if (!k || !(k->p1 = malloc((size_t)head_len + S3_P1))) {
        free(k);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    }
    k->base.bs = b;
    k->bs = bs_of(b);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->head_len = head_len;
    k->p1_len = head_len;
    k->total = head_len;
    *out = &k->base;
    return CMK_OK;
}

/* Starts the multipart upload into a new data object, data/<16 hex>. */
static cmk_err start_upload(s3_sink *k, cmk_errbuf *eb)
{
    unsigned char rnd[8];
    cmk_s3_req r = {.method = "POST", .query = "uploads="};
    cmk_err rc;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "no random bytes for an upload name");
    snprintf(k->data_key, sizeof(k->data_key), "data/%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    r.key = k->data_key;
    rc = cmk_s3_http_do(k->bs->bk->http, &r, eb);
    if (rc == CMK_OK)
        rc = cmk_s3_xml_upload_id(r.resp ? r.resp : "", r.resp_len, k->upload_id,
                                  sizeof(k->upload_id), eb);
    cmk_s3_req_done(&r);
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

static void push_job(s3_blobs *bs, struct job *j);

/* Waits until at most `most` parts are uploading (k->mu held). */
static void wait_uploads(s3_sink *k, int most)
{
    while (k->uploading > most)
        pthread_cond_wait(&k->cv, &k->mu);
}

/* A worker's upload of a part (the result into the sink, the buffer back to its spares), or
 * (part 0) the start of the multipart upload. */
static void part_job(struct job *j)
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
    push_job(k->bs, j);
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
    push_job(k->bs, j);
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
        if (!k->cur && !(k->cur = malloc(S3_PART)))
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
        n = len < S3_PART - k->cur_len ? len : S3_PART - k->cur_len;
        memcpy(k->cur + k->cur_len, p, n);
        k->cur_len += n;
        p += n;
        len -= n;
        /* Half the second part: the container will be uploaded in parts. (Smaller ones, up
         * to the first part and one more, are sent as one object at publish.) */
        if (!k->started && k->cur_len >= S3_PART / 2) {
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

static cmk_err s3_sink_append(cmk_bk_sink *ks, const void *rec, size_t len, uint64_t tag,
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

static cmk_err s3_sink_poll(cmk_bk_sink *ks, uint64_t *tags, int max, int wait, int *n,
                            cmk_errbuf *eb)
{
    s3_sink *k = (s3_sink *)ks;

    (void)tags;
    (void)max;
    (void)wait;
    *n = 0;
    return sticky(k, eb);
}

static void s3_sink_pending(const cmk_bk_sink *ks, unsigned *held, unsigned *busy)
{
    (void)ks;
    *held = 0;
    *busy = 0;
}

static cmk_err s3_sink_quiesce(cmk_bk_sink *ks, cmk_errbuf *eb)
{
    return s3_sink_poll(ks, NULL, 0, 0, &(int){0}, eb);
}

static void s3_sink_set_io(cmk_bk_sink *ks, cmk_io *io)
{
    (void)ks;
    (void)io;
}

static cmk_err s3_sink_finish(cmk_bk_sink *ks, const void *tail, size_t tail_len, const void *head,
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
            uint8_t *np = realloc(k->p1, k->p1_len + k->cur_len);
            if (!np) {
                rc = cmk_errbuf_set(&e, CMK_E_NOMEM, "out of memory (blob upload)");
            } else {
                k->p1 = np;
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
    free(k->cur);
    k->cur = NULL;
    if (k->upload_id[0]) {
        free(k->p1);
        k->p1 = NULL;
    }
    return CMK_OK;
}

static cmk_err complete_upload(s3_sink *k, cmk_errbuf *eb)
{
    int nparts = k->nparts + 1;
    size_t cap = 64 + (size_t)nparts * 140;
    char *xml = malloc(cap), eid[1600], query[1700];
    size_t n = 0;
    cmk_s3_req r = {.method = "POST", .key = k->data_key};
    cmk_err rc;

    if (!xml)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    n += (size_t)snprintf(xml + n, cap - n, "<CompleteMultipartUpload>");
    for (int i = 1; i <= nparts; i++)
        n += (size_t)snprintf(xml + n, cap - n,
                              "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag></Part>", i,
                              k->etags[i - 1]);
    n += (size_t)snprintf(xml + n, cap - n, "</CompleteMultipartUpload>");
    if (cmk_s3_query_escape(k->upload_id, eid, sizeof(eid)) < 0) {
        free(xml);
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "upload id too long");
    }
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    r.query = query;
    r.body = xml;
    r.body_len = n;
    rc = cmk_s3_http_do(k->bs->bk->http, &r, eb);
    /* S3 may answer 200 with an error document in the body. */
    if (rc == CMK_OK && r.resp && strstr(r.resp, "<Error>")) {
        char code[64], msg[256];
        cmk_s3_xml_error(r.resp, r.resp_len, code, sizeof(code), msg, sizeof(msg));
        rc = cmk_errbuf_set(eb, CMK_E_IO, "S3 complete upload %s/%s: %s %s", k->bs->bk->name,
                            k->data_key, code, msg);
    }
    if (rc == CMK_E_NOT_FOUND && r.tries > 1)
        rc = CMK_OK; /* the first attempt completed it (the upload id is gone) */
    if (rc == CMK_OK)
        k->completed = 1;
    cmk_s3_req_done(&r);
    free(xml);
    return rc;
}

static void delete_key(cmk_s3_bk *bk, const char *key)
{
    cmk_s3_req r = {.method = "DELETE", .key = key};
    cmk_errbuf eb = {0};

    /* Best effort: an object left behind is unreachable garbage, not a visible blob. */
    if (cmk_s3_http_do(bk->http, &r, &eb) != CMK_OK) {
    }
    cmk_s3_req_done(&r);
}

/* The object under blobs/<key>: whether it is a link, and the data key it names. */
static cmk_err read_link(cmk_s3_bk *bk, const char *bkey, char *data, size_t cap, uint64_t *size,
                         int *is_link, uint64_t *obj_size, int64_t *mtime, uint8_t *first,
                         size_t first_cap, size_t *first_len, cmk_errbuf *eb)
{
    cmk_s3_req r = {
        .method = "GET", .key = bkey, .range_len = first_cap, .dst = first, .dst_cap = first_cap};
    cmk_err rc = cmk_s3_http_do(bk->http, &r, eb);

    *is_link = 0;
    if (rc == CMK_E_RANGE) {
        /* An empty object: no range of it exists. */
        *obj_size = 0;
        *first_len = 0;
        *mtime = 0;
        cmk_s3_req_done(&r);
        return CMK_OK;
    }
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "blob %s not found in %s", bkey + 6, bk->name);
    if (rc != CMK_OK) {
        cmk_s3_req_done(&r);
        return rc;
    }
    *obj_size = r.total ? r.total : r.resp_len;
    *mtime = r.mtime;
    *first_len = r.resp_len;
    cmk_s3_req_done(&r);
    if (*obj_size == *first_len) {
        int lk = cmk_s3_link_parse(first, *first_len, data, cap, size);
        if (lk < 0)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s/%s: malformed link object", bk->name,
                                  bkey);
        *is_link = lk;
    }
    return CMK_OK;
}

/* Publishes one finished sink under key: CMK_OK, or the error for results[i]. */
static cmk_err publish_one(s3_blobs *bs, s3_sink *k, const char *key, size_t i, cmk_bk_keep_fn keep,
                           void *arg, cmk_errbuf *eb)
{
    char bkey[CMK_BK_KEY_MAX + 8], link[LINK_MAX];
    const void *body;
    size_t len;
    cmk_err rc;
    int replace = 0;

    if (!k->finished)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "blob %s: the container was not finished", key);
    snprintf(bkey, sizeof(bkey), "blobs/%s", key);
    if (k->upload_id[0]) {
        if (!k->completed && (rc = complete_upload(k, eb)) != CMK_OK)
            return rc;
        int ll = cmk_s3_link_format(link, sizeof(link), k->data_key, k->total);
        if (ll < 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL, "blob %s: link too long", key);
        len = (size_t)ll;
        body = link;
    } else {
        body = k->p1;
        len = k->p1_len;
    }
    for (;;) {
        cmk_s3_req r = {
            .method = "PUT", .key = bkey, .body = body, .body_len = len, .if_none_match = !replace};
        char old[CMK_BK_KEY_MAX + 48] = "";

        if (replace) {
            /* The copy there is damaged: remember its data object to delete after. */
            uint8_t first[LINK_MAX];
            uint64_t sz, osz;
            int64_t mt;
            size_t fl;
            int is_link = 0;
            cmk_errbuf ign = {0};
            if (read_link(bs->bk, bkey, old, sizeof(old), &sz, &is_link, &osz, &mt, first,
                          sizeof(first), &fl, &ign) != CMK_OK ||
                !is_link)
                old[0] = '\0';
        }
        rc = cmk_s3_http_do(bs->bk->http, &r, eb);
        cmk_s3_req_done(&r);
        if (rc == CMK_E_BUSY && r.tries > 1 && k->upload_id[0]) {
            /* A retried create may meet its own first attempt: is the link ours? */
            uint8_t first[LINK_MAX];
            char cur[CMK_BK_KEY_MAX + 48];
            uint64_t sz, osz;
            int64_t mt;
            size_t fl;
            int is_link = 0;
            cmk_errbuf ign = {0};
            if (read_link(bs->bk, bkey, cur, sizeof(cur), &sz, &is_link, &osz, &mt, first,
                          sizeof(first), &fl, &ign) == CMK_OK &&
                is_link && strcmp(cur, k->data_key) == 0)
                rc = CMK_OK;
        }
        if (rc != CMK_E_BUSY) {
            if (rc == CMK_OK && old[0] && strcmp(old, k->data_key) != 0)
                delete_key(bs->bk, old);
            if (rc == CMK_OK)
                k->completed = 2; /* linked: the data object is the blob's now */
            return rc;
        }
        /* Taken: the engine decides whether the copy there stays. */
        rc = keep(arg, i, eb);
        if (rc == CMK_OK)
            return CMK_OK; /* dropped: close deletes our data object */
        if (replace || !(rc == CMK_E_INTEGRITY || rc == CMK_E_CORRUPT || rc == CMK_E_UNSUPPORTED ||
                         rc == CMK_E_NOT_FOUND))
            return rc;
        replace = 1;
    }
}

static void s3_publish_many(cmk_bk_blobs *b, cmk_bk_sink *const *sinks, const char *const *keys,
                            size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                            cmk_errbuf *ebs)
{
    for (size_t i = 0; i < n; i++) {
        if (!sinks[i])
            continue;
        results[i] = publish_one(bs_of(b), (s3_sink *)sinks[i], keys[i], i, keep, arg, &ebs[i]);
    }
}

static void s3_sink_close(cmk_bk_sink *ks)
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
        delete_key(bk, k->data_key); /* completed but not linked: a lost race or a failure */
    }
    free(k->p1);
    free(k->cur);
    for (int i = 0; i < k->nspare; i++)
        free(k->spare[i]);
    free(k->etags);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}

/* ---- source ---- */

static cmk_err s3_source_open(cmk_bk_blobs *b, const char *key, cmk_io *io, cmk_bk_source **out,
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
    rc = read_link(bs->bk, bkey, data, sizeof(data), &lsize, &is_link, &osize, mtime, s->cache,
                   S3_HEAD_CACHE, &fl, eb);
    if (rc == CMK_OK && is_link) {
        int64_t dm;
        int inner = 0;
        uint64_t dummy;
        char d2[8];
        rc = read_link(bs->bk, data, d2, sizeof(d2), &dummy, &inner, &osize, &dm, s->cache,
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

static cmk_err s3_source_read(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
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

static void push_job(s3_blobs *bs, struct job *j)
{
    pthread_mutex_lock(&bs->mu);
    if (bs->tail)
        bs->tail->next = j;
    else
        bs->head = j;
    bs->tail = j;
    pthread_cond_signal(&bs->cv);
    pthread_mutex_unlock(&bs->mu);
}

/* Takes from the queue (bs->mu held) the reads of j's source that continue j's range, up to
 * S3_GET_MAX bytes in all: they become one ranged GET (fewer requests, each costing the
 * object store a lookup and an authentication). Returns how many jobs are in js. */
static int take_adjacent(s3_blobs *bs, struct job *j, struct job **js)
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

static void *reader_main(void *arg)
{
    s3_blobs *bs = arg;

    pthread_mutex_lock(&bs->mu);
    for (;;) {
        struct job *j, *js[S3_SRC_QMAX];
        cmk_errbuf eb = {0};
        cmk_err rc;
        s3_source *s;
        int n;

        while (!bs->head && !bs->stop)
            pthread_cond_wait(&bs->cv, &bs->mu);
        if (!bs->head)
            break;
        j = bs->head;
        bs->head = j->next;
        if (!bs->head)
            bs->tail = NULL;
        j->next = NULL;
        s = j->src;
        n = s ? take_adjacent(bs, j, js) : 0;
        pthread_mutex_unlock(&bs->mu);
        if (!s) {
            part_job(j);
            pthread_mutex_lock(&bs->mu);
            continue;
        }
        if (n == 1)
            rc = s3_source_read(&s->base, j->buf, j->len, j->off, "blob chunk", 0, &eb);
        else
            rc = ranged_getv(s, js, n, &eb);
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n; i++) {
            s->done[s->ndone].tag = js[i]->tag;
            s->done[s->ndone].res = rc == CMK_OK          ? (int64_t)js[i]->len
                                    : rc == CMK_E_CORRUPT ? 0
                                                          : -5;
            s->ndone++;
            s->inflight--;
        }
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n; i++)
            free(js[i]);
        pthread_mutex_lock(&bs->mu);
    }
    pthread_mutex_unlock(&bs->mu);
    return NULL;
}

static cmk_err s3_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                               uint64_t tag, unsigned flags, cmk_errbuf *eb)
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
    push_job(bs, j);
    return CMK_OK;
}

static int s3_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb)
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

static int s3_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end)
{
    (void)src;
    (void)start;
    (void)end;
    return 0;
}

static void s3_source_close(cmk_bk_source *src)
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

/* ---- delete, list, space ---- */

static cmk_err s3_blob_delete(cmk_bk_blobs *b, const char *key, cmk_errbuf *eb)
{
    s3_blobs *bs = bs_of(b);
    char bkey[CMK_BK_KEY_MAX + 8], data[CMK_BK_KEY_MAX + 48];
    uint8_t first[LINK_MAX];
    uint64_t lsize, osize;
    int64_t mt;
    size_t fl;
    int is_link = 0;
    cmk_s3_req r = {.method = "DELETE"};
    cmk_err rc;

    snprintf(bkey, sizeof(bkey), "blobs/%s", key);
    rc = read_link(bs->bk, bkey, data, sizeof(data), &lsize, &is_link, &osize, &mt, first,
                   sizeof(first), &fl, eb);
    if (rc != CMK_OK)
        return rc;
    r.key = bkey;
    rc = cmk_s3_http_do(bs->bk->http, &r, eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_OK && is_link)
        delete_key(bs->bk, data);
    return rc;
}

struct blob_list_ctx {
    int (*cb)(const char *key, void *arg);
    void *arg;
};

static int blob_list_one(const char *key, uint64_t size, void *arg)
{
    struct blob_list_ctx *c = arg;

    (void)size;
    if (strncmp(key, "blobs/", 6) != 0 || !strchr(key + 6, '/'))
        return 0;
    return c->cb(key + 6, c->arg);
}

static cmk_err s3_blob_list(cmk_bk_blobs *b, int (*cb)(const char *key, void *arg), void *arg,
                            cmk_errbuf *eb)
{
    struct blob_list_ctx c = {cb, arg};

    return cmk_s3_list(bs_of(b)->bk, "blobs/", NULL, blob_list_one, &c, eb);
}

static void s3_blobs_close(cmk_bk_blobs *b)
{
    s3_blobs *bs = bs_of(b);

    pthread_mutex_lock(&bs->mu);
    bs->stop = 1;
    pthread_cond_broadcast(&bs->cv);
    pthread_mutex_unlock(&bs->mu);
    for (int i = 0; i < bs->nthreads; i++)
        pthread_join(bs->th[i], NULL);
    pthread_mutex_destroy(&bs->mu);
    pthread_cond_destroy(&bs->cv);
    free(bs);
}

static const cmk_bk_blob_ops s3_blob_ops = {
    .size = sizeof(cmk_bk_blob_ops),
    .caps = 0,
    .sink_create = s3_sink_create,
    .sink_append = s3_sink_append,
    .sink_poll = s3_sink_poll,
    .sink_pending = s3_sink_pending,
    .sink_quiesce = s3_sink_quiesce,
    .sink_set_io = s3_sink_set_io,
    .sink_finish = s3_sink_finish,
    .publish_many = s3_publish_many,
    .sink_close = s3_sink_close,
    .source_open = s3_source_open,
    .source_read = s3_source_read,
    .source_queue = s3_source_queue,
    .source_poll = s3_source_poll,
    .source_advise = s3_source_advise,
    .source_close = s3_source_close,
    .blob_delete = s3_blob_delete,
    .blob_list = s3_blob_list,
    .close = s3_blobs_close,
};

cmk_err cmk_s3_blobs_open_op(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                             atomic_int *direct_state, cmk_bk_blobs **out, cmk_errbuf *eb)
{
    s3_blobs *bs = calloc(1, sizeof(*bs));

    (void)pool;
    (void)direct_after;
    (void)direct_state;
    *out = NULL;
    if (!bs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob space)");
    bs->base.ops = &s3_blob_ops;
    bs->bk = cmk_s3_of(b);
    pthread_mutex_init(&bs->mu, NULL);
    pthread_cond_init(&bs->cv, NULL);
    for (int i = 0; i < S3_READERS; i++) {
        if (pthread_create(&bs->th[i], NULL, reader_main, bs) != 0) {
            s3_blobs_close(&bs->base);
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot start the blob space's worker threads");
        }
        bs->nthreads++;
    }
    *out = &bs->base;
    return CMK_OK;
}
