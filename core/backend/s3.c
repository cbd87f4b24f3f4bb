/*
 * s3.c — the S3 backend's open and create (s3.h): the configuration from the environment,
 * the probe of conditional writes, and the staged creation of a new store.
 */
#define _GNU_SOURCE
#include "core/backend/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/s3_internal.h"
#include "core/backend/s3_xml.h"

/* Default grace of the orphan sweep: far longer than any put (see orphan_grace). */
#define S3_ORPHAN_GRACE_DEFAULT 86400

static cmk_err s3_new(const char *name, cmk_s3_bk **out, cmk_errbuf *eb)
{
    cmk_s3_conf c;
    cmk_s3_bk *s;
    cmk_err rc;

    *out = NULL;
    rc = cmk_s3_conf_load(name, &c, eb);
    if (rc != CMK_OK)
        return rc;
    s = calloc(1, sizeof(*s));
    if (!s) {
        cmk_s3_conf_wipe(&c);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (S3 backend)");
    }
    s->base.ops = &cmk_s3_ops;
    pthread_mutex_init(&s->mu, NULL);
    cmk_s3_conf_name(&c, s->name, sizeof(s->name));
    rc = cmk_s3_http_new(&c, &s->http, eb);
    cmk_s3_conf_wipe(&c);
    if (rc != CMK_OK) {
        cmk_bk_close(&s->base);
        return rc;
    }
    *out = s;
    return CMK_OK;
}

/* Checks that the endpoint refuses a conditional write that must fail: a create-if-absent
 * of an object that exists and a replace-if-version of a version that is not there. An
 * endpoint that accepts both (npm's s3rver, for one) would let two writers overwrite each
 * other's keyring or settings, so the store is refused there. Three requests. */
static cmk_err probe(cmk_s3_bk *s, cmk_errbuf *eb)
{
    static const char body[] = "cmkstore conditional-write probe\n";
    cmk_s3_req r1 = {.method = "PUT", .key = "probe", .body = body, .body_len = sizeof(body) - 1};
    cmk_s3_req r2 = {.method = "PUT",
                     .key = "probe",
                     .body = body,
                     .body_len = sizeof(body) - 1,
                     .if_none_match = 1};
    cmk_s3_req r3 = {.method = "PUT",
                     .key = "probe",
                     .body = body,
                     .body_len = sizeof(body) - 1,
                     .if_match = "00000000000000000000000000000000"};
    cmk_errbuf ignore = {0};
    cmk_err rc = cmk_s3_http_do(s->http, &r1, eb), rc2 = CMK_OK, rc3 = CMK_OK;

    if (rc == CMK_OK) {
        rc2 = cmk_s3_http_do(s->http, &r2, &ignore);
        rc3 = cmk_s3_http_do(s->http, &r3, &ignore);
        if (rc2 == CMK_E_IO || rc3 == CMK_E_IO)
            rc = cmk_errbuf_set(eb, CMK_E_IO, "%s", ignore.msg);
        else if (rc2 != CMK_E_BUSY || rc3 != CMK_E_BUSY)
            rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                                "the object store at %s does not honour conditional writes "
                                "(%s accepted): several writers would overwrite each other's "
                                "records, so %s is not used there",
                                cmk_s3_http_conf(s->http)->endpoint,
                                rc2 != CMK_E_BUSY ? "If-None-Match: *" : "If-Match", s->name);
    }
    cmk_s3_req_done(&r1);
    cmk_s3_req_done(&r2);
    cmk_s3_req_done(&r3);
    return rc;
}

/* The grace of the orphan sweep, in seconds: CMKSTORE_S3_ORPHAN_GRACE if set (decimal), else
 * 24 h. A put in progress never gets near it: each request of a put gives up after a 10 s
 * connect timeout or 30 s without a byte moving, times CMK_S3_TRIES (5) attempts with at most
 * 1.1 s of backoff in all, and a put's parts follow each other as fast as it seals. */
static cmk_err orphan_grace(int64_t *out, cmk_errbuf *eb)
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

struct sweep_ctx {
    cmk_s3_bk *s;
    const char *prefix; /* the store's, and its length */
    size_t plen;
    int64_t cutoff;
    int aborted;
};

static int sweep_one(const cmk_s3_upload *u, void *arg)
{
    struct sweep_ctx *c = arg;
    char query[3 * CMK_S3_UPLOAD_ID_MAX + 16], eid[3 * CMK_S3_UPLOAD_ID_MAX];
    cmk_errbuf ignore = {0};
    cmk_s3_req r = {.method = "DELETE", .key = u->key + c->plen, .query = query};

    /* Only the store's own data uploads, and only those older than the grace. */
    if (strncmp(u->key, c->prefix, c->plen) != 0 || strncmp(u->key + c->plen, "data/", 5) != 0 ||
        u->initiated > c->cutoff || cmk_s3_query_escape(u->id, eid, sizeof(eid)) < 0)
        return 0;
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    /* A failure (another front-end aborted it first: 404) leaves it to the next sweep. */
    if (cmk_s3_http_do(c->s->http, &r, &ignore) == CMK_OK)
        c->aborted++;
    cmk_s3_req_done(&r);
    return 0;
}

/* Aborts the multipart uploads under data/ started more than the grace ago: those of puts
 * whose writer died (kill -9, a crash, a lost host) before completing or aborting them.
 * Safe beside other front-ends since no put in progress is that old. One list request when
 * there are none; best effort, like the directory store's sweep of tmp/: a failed listing
 * (an endpoint or a policy without ListMultipartUploads) leaves the uploads to a later open
 * and does not stop this one. */
static void sweep_orphans(cmk_s3_bk *s, int64_t grace)
{
    const cmk_s3_conf *cf = cmk_s3_http_conf(s->http);
    struct sweep_ctx c = {s, cf->prefix, strlen(cf->prefix), (int64_t)time(NULL) - grace, 0};
    char full[CMK_S3_KEY_MAX_ENC], epfx[3 * CMK_S3_KEY_MAX_ENC], kmark[CMK_S3_KEY_MAX],
        imark[CMK_S3_UPLOAD_ID_MAX], ek[3 * CMK_S3_KEY_MAX], ei[3 * CMK_S3_UPLOAD_ID_MAX],
        query[3 * CMK_S3_KEY_MAX_ENC + 3 * CMK_S3_KEY_MAX + 3 * CMK_S3_UPLOAD_ID_MAX + 64];
    int truncated = 1, stopped = 0;

    kmark[0] = imark[0] = '\0';
    if ((size_t)snprintf(full, sizeof(full), "%sdata/", cf->prefix) >= sizeof(full) ||
        cmk_s3_query_escape(full, epfx, sizeof(epfx)) < 0)
        return;
    while (truncated && !stopped) {
        cmk_s3_req r = {.method = "GET", .key = NULL, .query = query, .max = 16u << 20};
        char pk[CMK_S3_KEY_MAX], pi[CMK_S3_UPLOAD_ID_MAX];
        cmk_errbuf ignore = {0};
        cmk_err rc;

        /* Query parameters in the order SigV4 signs them. */
        if (kmark[0]) {
            if (cmk_s3_query_escape(kmark, ek, sizeof(ek)) < 0 ||
                cmk_s3_query_escape(imark, ei, sizeof(ei)) < 0)
                return;
            snprintf(query, sizeof(query), "key-marker=%s&prefix=%s%s%s&uploads=", ek, epfx,
                     imark[0] ? "&upload-id-marker=" : "", imark[0] ? ei : "");
        } else {
            snprintf(query, sizeof(query), "prefix=%s&uploads=", epfx);
        }
        snprintf(pk, sizeof(pk), "%s", kmark);
        snprintf(pi, sizeof(pi), "%s", imark);
        rc = cmk_s3_http_do(s->http, &r, &ignore);
        if (rc == CMK_OK)
            rc = cmk_s3_xml_uploads(r.resp ? r.resp : "", r.resp_len, sweep_one, &c, &truncated,
                                    kmark, sizeof(kmark), imark, sizeof(imark), &stopped, &ignore);
        cmk_s3_req_done(&r);
        /* A page that does not move on would be asked for forever. */
        if (rc != CMK_OK || (strcmp(pk, kmark) == 0 && strcmp(pi, imark) == 0))
            return;
    }
}

cmk_err cmk_backend_s3_open(const char *name, int probe_writes, char *canon, size_t cap,
                            cmk_backend **out, cmk_errbuf *eb)
{
    cmk_s3_bk *s = NULL;
    cmk_s3_req r = {.method = "HEAD", .key = "store.json"};
    int64_t grace = 0;
    cmk_err rc = s3_new(name, &s, eb);

    *out = NULL;
    if (rc != CMK_OK)
        return rc;
    snprintf(canon, cap, "%s", s->name);
    rc = cmk_s3_http_do(s->http, &r, eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no store at %s (store.json is missing)", s->name);
    if (rc == CMK_OK && probe_writes)
        rc = orphan_grace(&grace, eb);
    if (rc == CMK_OK && probe_writes)
        rc = probe(s, eb);
    if (rc != CMK_OK) {
        cmk_bk_close(&s->base);
        return rc;
    }
    if (probe_writes)
        sweep_orphans(s, grace);
    *out = &s->base;
    return CMK_OK;
}

static int any_object(const char *key, uint64_t size, void *arg)
{
    (void)key;
    (void)size;
    *(int *)arg = 1;
    return 1;
}

/* Whether the store's prefix is free for a new store. */
static cmk_err target_check(cmk_s3_bk *s, cmk_errbuf *eb)
{
    cmk_s3_req r = {.method = "HEAD", .key = "store.json"};
    int found = 0;
    cmk_err rc = cmk_s3_http_do(s->http, &r, eb);

    cmk_s3_req_done(&r);
    if (rc == CMK_OK)
        return cmk_errbuf_set(eb, CMK_E_REFUSED, "a store exists at %s already", s->name);
    if (rc != CMK_E_NOT_FOUND)
        return rc;
    rc = cmk_s3_list(s, "", NULL, any_object, &found, eb);
    if (rc == CMK_OK && found)
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "%s is not empty: a new store needs a bucket or prefix of its own",
                            s->name);
    return rc;
}

cmk_err cmk_backend_s3_target(const char *name, char *canon, size_t cap, cmk_errbuf *eb)
{
    cmk_s3_bk *s = NULL;
    cmk_err rc = s3_new(name, &s, eb);

    if (rc != CMK_OK)
        return rc;
    snprintf(canon, cap, "%s", s->name);
    rc = target_check(s, eb);
    cmk_bk_close(&s->base);
    return rc;
}

cmk_err cmk_backend_s3_create(const char *name, cmk_backend **out, cmk_errbuf *eb)
{
    cmk_s3_bk *s = NULL;
    cmk_err rc = s3_new(name, &s, eb);

    *out = NULL;
    if (rc != CMK_OK)
        return rc;
    rc = target_check(s, eb);
    if (rc == CMK_OK)
        rc = probe(s, eb);
    if (rc != CMK_OK) {
        cmk_bk_close(&s->base);
        return rc;
    }
    s->staged = 1;
    cmk_s3_note_written(s, "probe");
    *out = &s->base;
    return CMK_OK;
}

cmk_err cmk_backend_s3_publish(cmk_backend *b, cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    char nonce[33];
    cmk_s3_req r = {.method = "PUT",
                    .key = "store.json",
                    .body = s->held_cfg,
                    .body_len = s->held_len,
                    .if_none_match = 1,
                    .writer = nonce};
    cmk_err rc;

    if (!s->staged || !s->held_cfg)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s: nothing staged to publish", s->name);
    rc = cmk_s3_nonce(nonce, eb);
    if (rc == CMK_OK)
        rc = cmk_s3_http_do(s->http, &r, eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_E_BUSY && r.tries > 1 &&
        cmk_s3_written_by(s, "store.json", nonce, r.etag, sizeof(r.etag)))
        rc = CMK_OK;
    else if (rc == CMK_E_BUSY)
        return cmk_errbuf_set(eb, CMK_E_EXISTS, "another store was created at %s meanwhile",
                              s->name);
    if (rc == CMK_OK)
        s->staged = 0;
    return rc;
}

int cmk_backend_is_s3(const cmk_backend *b)
{
    return b && b->ops == &cmk_s3_ops;
}
