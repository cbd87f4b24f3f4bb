/*
 * s3_sweep.c — the S3 backend's sweeps of what writers leave behind when they die or lose a
 * race. A blob larger than one part is a multipart upload to data/<16 hex>, completed, then
 * published by the exclusive create of a link object blobs/<alg>/<hex> naming it
 * (s3_link.h). Nothing under blobs/ is ever half-written, but bytes no name reaches can be
 * left under data/:
 *   - an incomplete multipart upload: a put killed mid-upload (aborted at every writable open,
 *     and by the store's sweep);
 *   - a completed data object that no link names: a put killed between completing its upload
 *     and creating its link, the loser of a publish race that died before deleting its own
 *     upload, or a blob deletion whose data delete failed after its link was deleted (only
 *     the store's sweep, the backend's sweep op, deletes them: it reads every link object,
 *     O(blobs) requests, so a collection runs it, not an open).
 *
 * Both go only after the grace (cmk_s3_orphan_grace, 24 h by default), measured from the
 * upload's initiation or the data object's LastModified (its completion on RGW, its
 * upload's initiation on AWS). That is safe beside other front-ends: a put in progress
 * starts its upload, completes it and creates its link within far less than the grace (see
 * cmk_s3_orphan_grace); between Complete and the link's create lie milliseconds.
 *
 * The order makes a link created during the sweep harmless: data objects are listed first,
 * then every link is read, then the old unnamed ones are deleted. A link made after the
 * links were read names a data object completed less than the grace before (the put that
 * makes it completed its upload just before), which is not a candidate. A link that cannot
 * be read (a failed GET, a malformed link) fails the sweep before anything is deleted: a data
 * object is never deleted on a guess.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/s3_internal.h"
#include "core/backend/s3_link.h"
#include "core/backend/s3_xml.h"

/* Default grace of the sweeps: far longer than any put (see cmk_s3_orphan_grace). */
#define S3_ORPHAN_GRACE_DEFAULT 86400
/* "data/" and the 16 hex digits of the names sinks give their data objects (s3_sink.c). */
#define DATA_KEY_LEN 21

/* The grace of the sweeps, in seconds. A put in progress never gets near it: each request of
 * a put gives up after a 10 s connect timeout or 30 s without a byte moving, times
 * CMK_S3_TRIES (5) attempts with at most 1.1 s of backoff in all, and a put's parts follow
 * each other as fast as it seals. */
cmk_err cmk_s3_orphan_grace(int64_t *out, cmk_errbuf *eb)
{
    const char *v = getenv("CMKSTORE_S3_ORPHAN_GRACE");
    char *e = NULL;
    unsigned long long n;

    *out = S3_ORPHAN_GRACE_DEFAULT;
    if (!v)
        return CMK_OK;
    errno = 0;
    n = strtoull(v, &e, 10);
    if (v[0] < '0' || v[0] > '9' || *e != '\0' || errno != 0 || n > (1ull << 40))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "CMKSTORE_S3_ORPHAN_GRACE must be a number of seconds, not '%s'", v);
    *out = (int64_t)n;
    return CMK_OK;
}

/* ---- incomplete multipart uploads ---- */

struct up_ctx {
    cmk_s3_bk *s;
    const char *prefix; /* the store's, and its length */
    size_t plen;
    int64_t cutoff;
    int dry;
    uint64_t aborted;
};

static int sweep_upload(const cmk_s3_upload *u, void *arg)
{
    struct up_ctx *c = arg;
    char query[3 * CMK_S3_UPLOAD_ID_MAX + 16], eid[3 * CMK_S3_UPLOAD_ID_MAX];
    cmk_errbuf ignore = {0};
    cmk_s3_req r = {.method = "DELETE", .key = u->key + c->plen, .query = query};

    /* Only the store's own data uploads, and only those older than the grace. */
    if (strncmp(u->key, c->prefix, c->plen) != 0 || strncmp(u->key + c->plen, "data/", 5) != 0 ||
        u->initiated > c->cutoff || cmk_s3_query_escape(u->id, eid, sizeof(eid)) < 0)
        return 0;
    if (c->dry) {
        c->aborted++;
        return 0;
    }
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    /* A failure (another front-end aborted it first: 404) leaves it to the next sweep. */
    if (cmk_s3_http_do(c->s->http, &r, &ignore) == CMK_OK)
        c->aborted++;
    cmk_s3_req_done(&r);
    return 0;
}

/* One list request when there are none. Best effort, like the directory store's sweep of
 * tmp/: a failed listing (an endpoint or a policy without ListMultipartUploads) leaves the
 * uploads to a later sweep and does not stop the caller. */
uint64_t cmk_s3_sweep_uploads(cmk_s3_bk *s, int64_t cutoff, int dry)
{
    const cmk_s3_conf *cf = cmk_s3_http_conf(s->http);
    struct up_ctx c = {s, cf->prefix, strlen(cf->prefix), cutoff, dry, 0};
    char full[CMK_S3_KEY_MAX_ENC], epfx[3 * CMK_S3_KEY_MAX_ENC], kmark[CMK_S3_KEY_MAX],
        imark[CMK_S3_UPLOAD_ID_MAX], ek[3 * CMK_S3_KEY_MAX], ei[3 * CMK_S3_UPLOAD_ID_MAX],
        query[3 * CMK_S3_KEY_MAX_ENC + 3 * CMK_S3_KEY_MAX + 3 * CMK_S3_UPLOAD_ID_MAX + 64];
    int truncated = 1, stopped = 0;

    kmark[0] = imark[0] = '\0';
    if ((size_t)snprintf(full, sizeof(full), "%sdata/", cf->prefix) >= sizeof(full) ||
        cmk_s3_query_escape(full, epfx, sizeof(epfx)) < 0)
        return 0;
    while (truncated && !stopped) {
        cmk_s3_req r = {.method = "GET", .key = NULL, .query = query, .max = 16u << 20};
        char pk[CMK_S3_KEY_MAX], pi[CMK_S3_UPLOAD_ID_MAX];
        cmk_errbuf ignore = {0};
        cmk_err rc;

        /* Query parameters in the order SigV4 signs them. */
        if (kmark[0]) {
            if (cmk_s3_query_escape(kmark, ek, sizeof(ek)) < 0 ||
                cmk_s3_query_escape(imark, ei, sizeof(ei)) < 0)
                break;
            snprintf(query, sizeof(query), "key-marker=%s&prefix=%s%s%s&uploads=", ek, epfx,
                     imark[0] ? "&upload-id-marker=" : "", imark[0] ? ei : "");
        } else {
            snprintf(query, sizeof(query), "prefix=%s&uploads=", epfx);
        }
        snprintf(pk, sizeof(pk), "%s", kmark);
        snprintf(pi, sizeof(pi), "%s", imark);
        rc = cmk_s3_http_do(s->http, &r, &ignore);
        if (rc == CMK_OK)
            rc = cmk_s3_xml_uploads(r.resp ? r.resp : "", r.resp_len, sweep_upload, &c, &truncated,
                                    kmark, sizeof(kmark), imark, sizeof(imark), &stopped, &ignore);
        cmk_s3_req_done(&r);
        /* A page that does not move on would be asked for forever. */
        if (rc != CMK_OK || (strcmp(pk, kmark) == 0 && strcmp(pi, imark) == 0))
            break;
    }
    return c.aborted;
}

/* ---- completed data objects no link names ---- */

struct cand {
    char key[DATA_KEY_LEN + 1];
    uint64_t size;
    int named; /* a link names it */
};

struct data_ctx {
    int64_t cutoff;
    struct cand *v;
    size_t n, cap;
    int oom;
};

static int is_data_key(const char *key)
{
    return strlen(key) == DATA_KEY_LEN && strncmp(key, "data/", 5) == 0 &&
           strspn(key + 5, "0123456789abcdef") == DATA_KEY_LEN - 5;
}

/* A candidate: a data object of the name a sink gives, older than the grace (one without a
 * LastModified never is). Anything else under data/ is not this backend's and is kept. */
static int data_one(const char *key, uint64_t size, int64_t mtime, void *arg)
{
    struct data_ctx *c = arg;

    if (!is_data_key(key) || mtime < 0 || mtime > c->cutoff)
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        struct cand *nv = realloc(c->v, cap * sizeof(*nv));
        if (!nv) {
            c->oom = 1;
            return 1;
        }
        c->v = nv;
        c->cap = cap;
    }
    memcpy(c->v[c->n].key, key, DATA_KEY_LEN + 1);
    c->v[c->n].size = size;
    c->v[c->n].named = 0;
    c->n++;
    return 0;
}

static int cand_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cand *)a)->key, ((const struct cand *)b)->key);
}

struct link_ctx {
    cmk_s3_bk *s;
    struct data_ctx *d;
    cmk_err rc;
    cmk_errbuf *eb;
};

/* Reads one object under blobs/ that may be a link (links are small: larger objects are
 * one-part blobs' own containers) and marks the candidate it names. */
static int link_one(const char *key, uint64_t size, int64_t mtime, void *arg)
{
    struct link_ctx *c = arg;
    uint8_t buf[CMK_S3_LINK_MAX];
    char data[CMK_S3_LINK_MAX];
    uint64_t dsize = 0;
    cmk_s3_req r = {
        .method = "GET", .key = key, .range_len = sizeof(buf), .dst = buf, .dst_cap = sizeof(buf)};
    struct cand probe, *hit;
    cmk_err rc;
    int lk;

    (void)mtime;
    if (size >= CMK_S3_LINK_MAX || size < sizeof(CMK_S3_LINK_MAGIC) - 1)
        return 0;
    rc = cmk_s3_http_do(c->s->http, &r, c->eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_E_NOT_FOUND || rc == CMK_E_RANGE)
        return 0; /* deleted since the listing (its data object is garbage now), or empty */
    if (rc != CMK_OK) {
        c->rc = rc;
        return 1;
    }
    if ((r.total ? r.total : r.resp_len) != r.resp_len)
        return 0; /* larger than a link: a blob's own container */
    lk = cmk_s3_link_parse(buf, r.resp_len, data, sizeof(data), &dsize);
    if (lk < 0) {
        c->rc = cmk_errbuf_set(c->eb, CMK_E_CORRUPT,
                               "%s/%s: malformed link object; no data object is deleted while "
                               "a link cannot be read (verify or delete that blob)",
                               c->s->name, key);
        return 1;
    }
    if (lk == 0 || strlen(data) != DATA_KEY_LEN)
        return 0;
    memcpy(probe.key, data, DATA_KEY_LEN + 1);
    hit = bsearch(&probe, c->d->v, c->d->n, sizeof(*c->d->v), cand_cmp);
    if (hit)
        hit->named = 1;
    return 0;
}

cmk_err cmk_s3_sweep_op(cmk_backend *b, unsigned flags, cmk_bk_sweep_stats *out, cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    int dry = (flags & CMK_BK_SWEEP_DRY) != 0;
    struct data_ctx d = {0};
    struct link_ctx lc = {s, &d, CMK_OK, eb};
    int64_t grace = 0;
    cmk_err rc = cmk_s3_orphan_grace(&grace, eb);

    if (rc != CMK_OK)
        return rc;
    d.cutoff = (int64_t)time(NULL) - grace;
    out->uploads += cmk_s3_sweep_uploads(s, d.cutoff, dry);
    /* 1. the candidates: old data objects */
    rc = cmk_s3_list_mtime(s, "data/", data_one, &d, eb);
    if (rc == CMK_OK && d.oom)
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (sweep of %s)", s->name);
    if (rc != CMK_OK || d.n == 0)
        goto out;
    qsort(d.v, d.n, sizeof(*d.v), cand_cmp);
    /* 2. every link: what it names is kept. Fail closed. */
    rc = cmk_s3_list_mtime(s, "blobs/", link_one, &lc, eb);
    if (rc == CMK_OK)
        rc = lc.rc;
    if (rc != CMK_OK)
        goto out;
    /* 3. the rest */
    for (size_t i = 0; i < d.n && rc == CMK_OK; i++) {
        cmk_s3_req r = {.method = "DELETE", .key = d.v[i].key};
        if (d.v[i].named)
            continue;
        if (!dry) {
            rc = cmk_s3_http_do(s->http, &r, eb);
            cmk_s3_req_done(&r);
            if (rc == CMK_E_NOT_FOUND) {
                rc = CMK_OK; /* another front-end's sweep took it */
                continue;
            }
            if (rc != CMK_OK)
                break;
        }
        out->objects++;
        out->bytes += d.v[i].size;
    }
out:
    free(d.v);
    return rc;
}
