/*
 * registry.c — OCI Distribution Spec v1.1 routes and handlers over the encrypted store.
 *
 * Request life cycle (libmicrohttpd, one thread per connection):
 *   first call      route, authenticate, validate; requests without a body are answered
 *                   here; requests with one get a body sink (a cmk_put, or a bounded buffer
 *                   for manifests) and errors found here are answered at once.
 *   body calls      each chunk goes to cmk_put_write as it arrives (or to the manifest
 *                   buffer); a failure is remembered and the rest of the body discarded.
 *   final call      commit, link, answer.
 *   completed       aborts whatever was not committed, releases the upload session, logs.
 *
 * Blob lifetime: a blob is visible in a repository once pushed or mounted into it (a link in
 * the repository record). DELETE of a blob removes the link; the stored blob itself is
 * deleted only when no repository links it, holds it as a manifest, or has a manifest
 * referring to it. Links and that check are ordered by the store's collection lock
 * (RMETA_GC_LOCK, a flock, so it holds across processes: another server is refused, but
 * `cmkstore blob rm` may run beside this one): operations that add links take it shared,
 * deletes take it exclusive, so a delete never removes a blob that a concurrent push or
 * mount has just linked.
 */
#include "tools/registry.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>

#include "tools/http_util.h"
#include "tools/registry_meta.h"

#define MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"

#define DEFAULT_MAX_MANIFEST   (4u << 20)
#define DEFAULT_MAX_UPLOADS    256
#define DEFAULT_UPLOAD_TIMEOUT 3600
#define DEFAULT_UPLOAD_MEMORY  (1ull << 30)
#define TRIM_EVERY_TICKS       60
#define STREAM_BLOCK           (256u << 10)
#define PAGE_MAX               100000
#define REF_MAX                256 /* tags are <= 128, digests <= 135, upload ids 32 */
#define LOG_PATH_MAX           300

struct upload {
    struct upload *next;
    char id[33];
    char repo[REG_NAME_MAX + 1];
    cmk_put *put;
    uint64_t offset; /* bytes received so far */
    uint64_t gen;    /* the store's access generation when it began */
    double last;     /* monotonic time of the last request */
    int busy;        /* a request is using it */
    int revoked;     /* dropped on a key-access loss: kept (no put) to answer 503 */
};

struct registry {
    cmk_store *s;
    http_auth *auth;
    http_metrics *metrics;
    http_conn *conns;
    uint64_t max_manifest;
    uint64_t max_blob; /* 0: no limit */
    unsigned max_uploads, upload_timeout;
    uint64_t mem_budget; /* bytes of chunk buffers upload requests may hold at once */
    uint64_t mem_used;   /* reserved by requests in flight; guarded by up_mu */
    int idle_ticks;      /* ticks in a row with no request in flight */
    unsigned ticks;
    int log;
    atomic_int draining;
    atomic_uint inflight;
    atomic_uint_fast64_t rid_next;
    pthread_mutex_t up_mu;
    struct upload *uploads;
    struct upload *revoked; /* sessions dropped on a key-access loss (see upload_expire) */
    unsigned nuploads;
};

enum route {
    RT_PING,
    RT_METRICS,
    RT_CATALOG,
    RT_TAGS,
    RT_MANIFEST,
    RT_BLOB,
    RT_UPLOAD_NEW,
    RT_UPLOAD,
    RT_REFERRERS,
};

enum body { BODY_NONE, BODY_PUT, BODY_MANIFEST };

struct req {
    registry *r;
    struct MHD_Connection *c;
    double t0;
    char method[8];
    char path[LOG_PATH_MAX];
    char client[INET6_ADDRSTRLEN];
    char ckey[HTTP_CLIENT_KEY_MAX]; /* what the client is counted under (http_client_key) */
    char rid[17];                   /* request id: error bodies repeat it, the log has it */
    unsigned status;
    uint64_t in, out;
    int started; /* first_call has run */
    int responded;
    char note[200]; /* why a response stream broke off, for the log */

    enum route rt;
    char name[REG_NAME_MAX + 1];
    char ref[REF_MAX];

    enum body body;
    cmk_put *put;      /* owned (POST ?digest=) or the upload session's (PATCH, PUT) */
    struct upload *up; /* held upload session */
    int up_destroy;    /* drop the session when the request ends */
    uint64_t mem;      /* bytes reserved from the upload memory budget */
    uint64_t received; /* body bytes of this request */
    int has_crange;
    uint64_t cr_start, cr_end;
    char digest[CMK_DIGEST_MAX];
    int body_failed;
    cmk_err body_rc;
    char body_msg[512];
    char *buf; /* manifest body */
    size_t blen, bcap;
    int too_big;
};

struct stream {
    cmk_get *g;
    struct req *q;
    uint64_t remaining;
};

static void upload_release(registry *r, struct upload *u, int destroy);

/* ---- responses ---- */

struct reply {
    struct MHD_Response *resp;
    int failed;
};

static void hdr(struct reply *rp, const char *k, const char *v)
{
    if (rp->resp && MHD_add_response_header(rp->resp, k, v) != MHD_YES)
        rp->failed = 1;
}

static struct reply reply_empty(void)
{
    struct reply rp = {MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT), 0};

    return rp;
}

/* Serialises j (released) into a response with the given content type. */
static struct reply reply_json(struct req *q, json_t *j, const char *ctype)
{
    struct reply rp = {NULL, 0};
    size_t n;
    char *buf;

    if (!j)
        return rp;
    n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    buf = n ? malloc(n + 1) : NULL;
    if (buf && json_dumpb(j, buf, n, JSON_COMPACT) == n) {
        buf[n++] = '\n';
        rp.resp = MHD_create_response_from_buffer(n, buf, MHD_RESPMEM_MUST_FREE);
        if (rp.resp) {
            buf = NULL;
            if (strcmp(q->method, "HEAD") != 0)
                q->out += n;
        }
    }
    free(buf);
    json_decref(j);
    hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return rp;
}

static enum MHD_Result send_reply(struct req *q, unsigned status, struct reply *rp)
{
    enum MHD_Result ret;

    if (!rp->resp)
        return MHD_NO;
    hdr(rp, "Docker-Distribution-API-Version", "registry/2.0");
    if (rp->failed) {
        MHD_destroy_response(rp->resp);
        return MHD_NO;
    }
    q->status = status;
    q->responded = 1;
    /* The upload session is given back before the response leaves: a client sends its next
     * request on that session (often on another connection) as soon as it reads this one, and
     * must not find it still busy. */
    if (q->up) {
        if (q->put == q->up->put)
            q->put = NULL;
        upload_release(q->r, q->up, q->up_destroy);
        q->up = NULL;
    }
    ret = MHD_queue_response(q->c, status, rp->resp);
    MHD_destroy_response(rp->resp);
    return ret;
}

static json_t *error_entry(const char *code, const char *msg, json_t *detail)
{
    return json_pack("{s:s, s:s, s:o}", "code", code, "message", msg, "detail",
                     detail ? detail : json_object());
}

/* detail (stolen; NULL: a new object) with the request id, which the server log repeats. */
static json_t *with_rid(struct req *q, json_t *detail)
{
    if (!detail)
        detail = json_object();
    if (json_is_object(detail))
        json_object_set_new(detail, "request_id", json_string(q->rid));
    return detail;
}

/* The spec's error body: {"errors": [{"code", "message", "detail"}]}. detail is stolen; it
 * gets the request id. */
static struct reply error_reply(struct req *q, const char *code, const char *msg, json_t *detail)
{
    return reply_json(q,
                      json_pack("{s:[o]}", "errors", error_entry(code, msg, with_rid(q, detail))),
                      "application/json");
}

static enum MHD_Result send_error(struct req *q, unsigned status, const char *code, const char *msg,
                                  json_t *detail)
{
    struct reply rp = error_reply(q, code, msg, detail);

    return send_reply(q, status, &rp);
}

static json_t *digest_detail(const char *d)
{
    return json_pack("{s:s}", "digest", d);
}

/* Maps a store failure (rc, with the thread's cmk_errmsg) to a response. The store's message
 * names files, the home, the identity's principal id, the vault and key: it goes to the server
 * log only (always, --quiet or not), under the request id, and the body says what failed in
 * general terms (the error's name and text) with that id. Key access lost is 503: a registry
 * client retries 503s, and service resumes by itself once access is restored. A full file
 * system is 507 Insufficient Storage: the operator's problem, and nothing was stored. */
static enum MHD_Result store_error(struct req *q, cmk_err rc, const char *msg_in, const char *what)
{
    char msg[512], logged[1100], t[32];
    const char *detail = msg_in ? msg_in : cmk_errmsg();
    struct reply rp;
    unsigned status;
    const char *code;

    if (cmk_err_is_key_access(rc)) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        code = "UNAVAILABLE";
    } else if (rc == CMK_E_NOT_FOUND) {
        status = MHD_HTTP_NOT_FOUND;
        code = "BLOB_UNKNOWN";
    } else if (rc == CMK_E_BUSY) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        code = "UNAVAILABLE";
    } else if (rc == CMK_E_NOSPACE) {
        status = MHD_HTTP_INSUFFICIENT_STORAGE;
        code = "UNKNOWN";
    } else {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        code = "UNKNOWN";
    }
    snprintf(msg, sizeof(msg), "%s: %s%s (request id %s; details in the server log)", what,
             cmk_err_is_key_access(rc) ? "the store cannot use its key-encryption key: " : "",
             cmk_strerror(rc), q->rid);
    http_log_safe(logged, sizeof(logged), detail && *detail ? detail : cmk_strerror(rc));
    http_time_iso(t);
    fprintf(stderr, "%s %s %s %s rid=%s error %u %s: %s: %s\n", t, q->client, q->method, q->path,
            q->rid, status, cmk_errname(rc), what, logged);
    rp = error_reply(q, code, msg, json_pack("{s:s}", "error", cmk_errname(rc)));
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    return send_reply(q, status, &rp);
}

static const char *arg(struct req *q, const char *key)
{
    return MHD_lookup_connection_value(q->c, MHD_GET_ARGUMENT_KIND, key);
}

static const char *header(struct req *q, const char *key)
{
    return MHD_lookup_connection_value(q->c, MHD_HEADER_KIND, key);
}

static void blob_location(char *out, size_t cap, const char *name, const char *digest)
{
    snprintf(out, cap, "/v2/%s/blobs/%s", name, digest);
}

/* ---- upload sessions ---- */

static uint64_t access_gen(registry *r)
{
    cmk_store_resources res;

    cmk_store_resources_get(r->s, &res);
    return res.access_generation;
}

/* The upload memory budget: a request that streams into a put reserves what its put may
 * hold (cmk_put_memory) for its whole life. One request always gets through, however large,
 * so that a budget below one stream cannot stop all uploads. 0 if the budget is spent. */
static int mem_reserve(struct req *q, uint64_t body_len)
{
    registry *r = q->r;
    uint64_t n = cmk_put_memory(r->s, body_len);
    int ok;

    pthread_mutex_lock(&r->up_mu);
    ok = r->mem_used == 0 || r->mem_used + n <= r->mem_budget;
    if (ok) {
        r->mem_used += n;
        q->mem += n;
    }
    pthread_mutex_unlock(&r->up_mu);
    return ok;
}

static void mem_release(struct req *q)
{
    pthread_mutex_lock(&q->r->up_mu);
    q->r->mem_used -= q->mem;
    pthread_mutex_unlock(&q->r->up_mu);
    q->mem = 0;
}

/* 503 with Retry-After when the budget is spent: the client retries the same request. */
static enum MHD_Result send_mem_spent(struct req *q)
{
    char msg[160];
    struct reply rp;

    snprintf(msg, sizeof(msg),
             "the server's memory for uploads in progress is in use (limit %llu MiB): retry",
             (unsigned long long)(q->r->mem_budget >> 20));
    rp = error_reply(q, "TOOMANYREQUESTS", msg, NULL);
    hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "2");
    return send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
}

/* Body length of the request from Content-Length; UINT64_MAX if unknown (chunked). */
static uint64_t body_length(struct req *q)
{
    const char *clen = header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n;

    return clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 ? n : UINT64_MAX;
}

static cmk_err upload_create(registry *r, const char *repo, struct upload **out)
{
    struct upload *u;
    unsigned char rnd[16];
    cmk_err rc;

    *out = NULL;
    pthread_mutex_lock(&r->up_mu);
    if (r->nuploads >= r->max_uploads) {
        pthread_mutex_unlock(&r->up_mu);
        return CMK_E_BUSY;
    }
    r->nuploads++; /* reserved; the put is started outside the lock */
    pthread_mutex_unlock(&r->up_mu);
    u = calloc(1, sizeof(*u));
    if (!u) {
        rc = CMK_E_NOMEM;
        goto fail;
    }
    /* Session ids are capabilities (no per-repository authorisation): unguessable. */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        rc = CMK_E_CRYPTO;
        goto fail;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(u->id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(u->repo, sizeof(u->repo), "%s", repo);
    u->gen = access_gen(r);
    rc = cmk_put_begin(r->s, "sha256", &u->put);
    /* An idle session holds no engine or buffers (see upload memory in SERVE.md). */
    if (rc == CMK_OK)
        rc = cmk_put_park(u->put);
    if (rc != CMK_OK) {
        cmk_put_abort(u->put);
        goto fail;
    }
    u->last = http_mono();
    u->busy = 1;
    pthread_mutex_lock(&r->up_mu);
    u->next = r->uploads;
    r->uploads = u;
    pthread_mutex_unlock(&r->up_mu);
    *out = u;
    return CMK_OK;
fail:
    free(u);
    pthread_mutex_lock(&r->up_mu);
    r->nuploads--;
    pthread_mutex_unlock(&r->up_mu);
    return rc;
}

/* Takes session id of repo for one request. CMK_E_NOT_FOUND, CMK_E_BUSY if another
 * request is using it, or CMK_E_KEY_UNREACHABLE if it was dropped on a key-access loss. */
static cmk_err upload_acquire(registry *r, const char *id, const char *repo, struct upload **out)
{
    cmk_err rc = CMK_E_NOT_FOUND;

    *out = NULL;
    pthread_mutex_lock(&r->up_mu);
    for (struct upload *u = r->uploads; u; u = u->next) {
        if (strcmp(u->id, id) != 0 || strcmp(u->repo, repo) != 0)
            continue;
        if (u->busy) {
            rc = CMK_E_BUSY;
        } else {
            u->busy = 1;
            *out = u;
            rc = CMK_OK;
        }
        break;
    }
    for (struct upload **pp = &r->revoked; rc == CMK_E_NOT_FOUND && *pp; pp = &(*pp)->next) {
        struct upload *u = *pp;
        if (strcmp(u->id, id) == 0 && strcmp(u->repo, repo) == 0) {
            *pp = u->next; /* told once */
            free(u);
            rc = CMK_E_KEY_UNREACHABLE;
            break;
        }
    }
    pthread_mutex_unlock(&r->up_mu);
    return rc;
}

static void upload_unlink_locked(registry *r, struct upload *u)
{
    for (struct upload **pp = &r->uploads; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            r->nuploads--;
            return;
        }
    }
}

static void upload_release(registry *r, struct upload *u, int destroy)
{
    pthread_mutex_lock(&r->up_mu);
    if (destroy) {
        upload_unlink_locked(r, u);
    } else {
        u->busy = 0;
        u->last = http_mono();
    }
    pthread_mutex_unlock(&r->up_mu);
    if (destroy) {
        cmk_put_abort(u->put); /* nothing of an unfinished upload is ever published */
        free(u);
    }
}

/* Drops idle sessions (all of them with max_idle < 0), and those begun before the store's
 * access generation `gen`: their puts have failed and their keys are wiped. */
static void upload_expire(registry *r, double max_idle, uint64_t gen)
{
    struct upload *dead = NULL, *u, *next;
    double now = http_mono();

    pthread_mutex_lock(&r->up_mu);
    for (u = r->uploads; u; u = next) {
        next = u->next;
        if (!u->busy && (max_idle < 0 || now - u->last > max_idle || u->gen != gen)) {
            upload_unlink_locked(r, u);
            u->revoked = max_idle >= 0 && now - u->last <= max_idle;
            u->next = dead;
            dead = u;
        }
    }
    for (struct upload **pp = &r->revoked; *pp;) {
        u = *pp;
        if (max_idle < 0 || now - u->last > max_idle) {
            *pp = u->next;
            u->next = dead;
            dead = u;
        } else {
            pp = &u->next;
        }
    }
    pthread_mutex_unlock(&r->up_mu);
    for (u = dead; u; u = next) {
        next = u->next;
        cmk_put_abort(u->put); /* its blob key is wiped with it */
        u->put = NULL;
        /* Kept without its put until the timeout, so that its next request is told why
         * (503) rather than that it never existed (404). */
        if (u->revoked) {
            pthread_mutex_lock(&r->up_mu);
            u->last = now;
            u->next = r->revoked;
            r->revoked = u;
            pthread_mutex_unlock(&r->up_mu);
        } else {
            free(u);
        }
    }
}

static int upload_offset(registry *r, const char *id, const char *repo, uint64_t *off)
{
    int found = 0;

    pthread_mutex_lock(&r->up_mu);
    for (struct upload *u = r->uploads; u; u = u->next) {
        if (strcmp(u->id, id) == 0 && strcmp(u->repo, repo) == 0) {
            *off = u->offset;
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&r->up_mu);
    return found;
}

/* Location, Range and session headers of an upload response. */
static void upload_headers(struct req *q, struct reply *rp, const char *id, uint64_t offset)
{
    char loc[REG_NAME_MAX + 80], range[48];

    snprintf(loc, sizeof(loc), "/v2/%s/blobs/uploads/%s", q->name, id);
    /* Inclusive end; an empty upload reports 0-0, as registries do. */
    snprintf(range, sizeof(range), "0-%llu", (unsigned long long)(offset > 0 ? offset - 1 : 0));
    hdr(rp, MHD_HTTP_HEADER_LOCATION, loc);
    hdr(rp, MHD_HTTP_HEADER_RANGE, range);
    hdr(rp, "Docker-Upload-UUID", id);
    hdr(rp, "Blob-Upload-Session-ID", id);
}

/* ---- streaming a blob out ---- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    size_t n = 0;
    cmk_err rc;

    (void)pos;
    if (st->remaining == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (max > st->remaining)
        max = (size_t)st->remaining;
    rc = cmk_get_read(st->g, buf, max, &n);
    if (rc != CMK_OK || n == 0) {
        /* Headers are gone already: breaking the connection is the only honest signal, and
         * no unauthenticated byte is ever sent. */
        snprintf(st->q->note, sizeof(st->q->note), "stream aborted: %s: %s", cmk_errname(rc),
                 cmk_errmsg());
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    st->remaining -= n;
    st->q->out += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;

    cmk_get_close(st->g);
    free(st);
}

/* Answers with bytes [off, off+len) of blob digest (status 200 or 206). */
static enum MHD_Result send_blob(struct req *q, const char *digest, uint64_t size, uint64_t off,
                                 uint64_t len, unsigned status, const char *ctype)
{
    struct stream *st = NULL;
    struct reply rp = {NULL, 0};
    cmk_get *g = NULL;
    char crange[96], etag[CMK_DIGEST_MAX + 2];
    cmk_err rc;

    rc = cmk_get_open(q->r->s, digest, off, len, &g);
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot read the blob");
    if (cmk_get_info(g)->size != size) {
        cmk_get_close(g);
        return send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN",
                          "stored blob size differs from the repository's record",
                          digest_detail(digest));
    }
    if (len == 0) {
        cmk_get_close(g);
        rp = reply_empty();
    } else {
        st = calloc(1, sizeof(*st));
        if (!st) {
            cmk_get_close(g);
            return MHD_NO;
        }
        st->g = g;
        st->q = q;
        st->remaining = len;
        rp.resp =
            MHD_create_response_from_callback(len, STREAM_BLOCK, stream_read, st, stream_free);
        if (!rp.resp) {
            stream_free(st);
            return MHD_NO;
        }
    }
    hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    hdr(&rp, "Docker-Content-Digest", digest);
    hdr(&rp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    snprintf(etag, sizeof(etag), "\"%s\"", digest);
    hdr(&rp, MHD_HTTP_HEADER_ETAG, etag);
    if (status == MHD_HTTP_PARTIAL_CONTENT) {
        snprintf(crange, sizeof(crange), "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)size);
        hdr(&rp, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
    }
    return send_reply(q, status, &rp);
}

/* ---- blobs ---- */

static enum MHD_Result blob_get(struct req *q)
{
    registry *r = q->r;
    json_t *rec = NULL;
    uint64_t size = 0, off = 0, len = 0;
    char crange[64];
    enum MHD_Result ret;
    cmk_err rc;

    if (!registry_digest_valid(q->ref))
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                          "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    rc = rmeta_load(r->s, q->name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND)
        return store_error(q, rc, NULL, "cannot read the repository");
    if (!rec || !rmeta_blob(rec, q->ref, &size)) {
        json_decref(rec);
        return send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry",
                          digest_detail(q->ref));
    }
    json_decref(rec);
    switch (http_parse_range(header(q, MHD_HTTP_HEADER_RANGE), size, &off, &len)) {
    case HTTP_RANGE_OK:
        return send_blob(q, q->ref, size, off, len, MHD_HTTP_PARTIAL_CONTENT,
                         "application/octet-stream");
    case HTTP_RANGE_BAD: {
        struct reply rp =
            error_reply(q, "BLOB_UNKNOWN", "requested range not satisfiable",
                        json_pack("{s:s, s:I}", "digest", q->ref, "size", (json_int_t)size));
        snprintf(crange, sizeof(crange), "bytes */%llu", (unsigned long long)size);
        hdr(&rp, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
        ret = send_reply(q, MHD_HTTP_RANGE_NOT_SATISFIABLE, &rp);
        return ret;
    }
    default:
        return send_blob(q, q->ref, size, 0, size, MHD_HTTP_OK, "application/octet-stream");
    }
}

/* Deletes digest from the store if nothing refers to it any more. The collection lock is
 * held exclusively. */
static cmk_err collect_if_unreferenced(registry *r, const char *digest)
{
    int used = 0;
    cmk_err rc = rmeta_is_referenced(r->s, digest, &used);

    if (rc != CMK_OK || used)
        return rc;
    rc = cmk_delete(r->s, digest);
    return rc == CMK_E_NOT_FOUND ? CMK_OK : rc;
}

static enum MHD_Result blob_delete(struct req *q)
{
    registry *r = q->r;
    cmk_errbuf eb = {0};
    json_t *rec = NULL;
    uint64_t size = 0;
    char why[512] = "";
    struct reply rp;
    int lk;
    cmk_err rc;

    if (!registry_digest_valid(q->ref))
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID", "invalid digest", NULL);
    rc = rmeta_lock(r->s, RMETA_GC_LOCK, LOCK_EX, &lk, &eb);
    if (rc != CMK_OK)
        return store_error(q, rc, eb.msg, "cannot delete the blob");
    rc = rmeta_load(r->s, q->name, &rec);
    if (rc == CMK_OK && !rmeta_blob(rec, q->ref, &size))
        rc = CMK_E_NOT_FOUND;
    if (rc == CMK_OK)
        rc = rmeta_unlink_blob(r->s, q->name, q->ref);
    if (rc == CMK_OK) {
        rc = collect_if_unreferenced(r, q->ref);
        /* All or nothing: a delete that fails leaves the link, so the blob stays visible
         * and is collected by the delete the client retries (none is left unreferenced
         * and never collected). */
        if (rc != CMK_OK) {
            snprintf(why, sizeof(why), "%s", cmk_errmsg());
            if (rmeta_link_blob(r->s, q->name, q->ref, size) != CMK_OK)
                fprintf(stderr,
                        "cmkstore serve: cannot restore the link of %s in %s after a "
                        "failed delete: %s\n",
                        q->ref, q->name, cmk_errmsg());
        }
    }
    rmeta_unlock(lk);
    json_decref(rec);
    if (rc == CMK_E_NOT_FOUND)
        return send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry",
                          digest_detail(q->ref));
    if (rc != CMK_OK)
        return store_error(q, rc, why[0] ? why : NULL, "cannot delete the blob");
    rp = reply_empty();
    hdr(&rp, "Docker-Content-Digest", q->ref);
    return send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

/* Commits put (consumed) against expected and links the blob into the repository. */
static enum MHD_Result commit_and_link(struct req *q, cmk_put *put, const char *expected)
{
    registry *r = q->r;
    char digest[CMK_DIGEST_MAX], loc[REG_NAME_MAX + CMK_DIGEST_MAX + 16];
    uint64_t size = cmk_put_size(put);
    cmk_errbuf eb = {0};
    struct reply rp;
    int lk;
    cmk_err rc;

    rc = rmeta_lock(r->s, RMETA_GC_LOCK, LOCK_SH, &lk, &eb);
    if (rc != CMK_OK) {
        cmk_put_abort(put);
        return store_error(q, rc, eb.msg, "cannot store the blob");
    }
    rc = cmk_put_commit(put, expected, digest);
    if (rc == CMK_OK)
        rc = rmeta_link_blob(r->s, q->name, digest, size);
    rmeta_unlock(lk);
    if (rc == CMK_E_DIGEST)
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                          "provided digest did not match uploaded content; nothing was stored",
                          digest_detail(expected));
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot store the blob");
    rp = reply_empty();
    blob_location(loc, sizeof(loc), q->name, digest);
    hdr(&rp, MHD_HTTP_HEADER_LOCATION, loc);
    hdr(&rp, "Docker-Content-Digest", digest);
    return send_reply(q, MHD_HTTP_CREATED, &rp);
}

/* 1 if a blob upload of `have` bytes so far plus `more` would pass --max-blob-size. */
static int blob_too_big(const registry *r, uint64_t have, uint64_t more)
{
    return r->max_blob && (more > r->max_blob || have > r->max_blob - more);
}

static enum MHD_Result send_blob_too_big(struct req *q)
{
    char msg[96];

    snprintf(msg, sizeof(msg), "blob larger than the limit of %llu bytes; nothing was stored",
             (unsigned long long)q->r->max_blob);
    q->up_destroy = 1;
    return send_error(q, MHD_HTTP_CONTENT_TOO_LARGE, "SIZE_INVALID", msg, NULL);
}

/* POST ?mount=&from=: links a blob of another repository. Returns 1 if it answered. */
static int try_mount(struct req *q, enum MHD_Result *ret)
{
    registry *r = q->r;
    const char *mount = arg(q, "mount"), *from = arg(q, "from");
    char loc[REG_NAME_MAX + CMK_DIGEST_MAX + 16];
    json_t *rec = NULL;
    cmk_blob_info bi;
    cmk_errbuf eb = {0};
    uint64_t size = 0;
    struct reply rp;
    int lk;
    cmk_err rc;

    /* Anything not mountable falls back to a plain upload session, as the spec says. */
    if (!mount || !registry_digest_valid(mount) || (from && !registry_name_valid(from)))
        return 0;
    rc = rmeta_lock(r->s, RMETA_GC_LOCK, LOCK_SH, &lk, &eb);
    if (rc != CMK_OK) {
        *ret = store_error(q, rc, eb.msg, "cannot mount the blob");
        return 1;
    }
    if (from) {
        rc = rmeta_load(r->s, from, &rec);
        if (rc == CMK_OK && !rmeta_blob(rec, mount, &size))
            rc = CMK_E_NOT_FOUND;
        if (rc == CMK_OK)
            rc = cmk_stat(r->s, mount, &bi);
        if (rc == CMK_OK && bi.size != size)
            rc = CMK_E_NOT_FOUND;
    } else {
        /* No "from": the spec lets a registry find the blob itself. Only a blob that some
         * repository still links or refers to is mounted (never one awaiting collection).
         * Every client is authorised for every repository here, so this reveals nothing
         * a client could not read anyway. */
        int used = 0;
        rc = cmk_stat(r->s, mount, &bi);
        if (rc == CMK_OK)
            rc = rmeta_is_referenced(r->s, mount, &used);
        if (rc == CMK_OK && !used)
            rc = CMK_E_NOT_FOUND;
        size = bi.size;
    }
    if (rc == CMK_OK)
        rc = rmeta_link_blob(r->s, q->name, mount, size);
    rmeta_unlock(lk);
    json_decref(rec);
    if (rc == CMK_E_NOT_FOUND)
        return 0;
    if (rc != CMK_OK) {
        *ret = store_error(q, rc, NULL, "cannot mount the blob");
        return 1;
    }
    rp = reply_empty();
    blob_location(loc, sizeof(loc), q->name, mount);
    hdr(&rp, MHD_HTTP_HEADER_LOCATION, loc);
    hdr(&rp, "Docker-Content-Digest", mount);
    *ret = send_reply(q, MHD_HTTP_CREATED, &rp);
    return 1;
}

static enum MHD_Result upload_start(struct req *q)
{
    registry *r = q->r;
    const char *digest = arg(q, "digest");
    struct upload *u = NULL;
    enum MHD_Result ret;
    struct reply rp;
    cmk_err rc;

    if (arg(q, "mount") && try_mount(q, &ret))
        return ret;
    if (digest) {
        /* Monolithic: the body is the blob; answered when it has all arrived. */
        if (!registry_digest_valid(digest))
            return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
        if (body_length(q) != UINT64_MAX && blob_too_big(r, 0, body_length(q)))
            return send_blob_too_big(q);
        if (!mem_reserve(q, body_length(q)))
            return send_mem_spent(q);
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
        rc = cmk_put_begin(r->s, strncmp(digest, "sha512:", 7) == 0 ? "sha512" : "sha256", &q->put);
        if (rc != CMK_OK)
            return store_error(q, rc, NULL, "cannot start the upload");
        q->body = BODY_PUT;
        return MHD_YES;
    }
    rc = upload_create(r, q->name, &u);
    if (rc == CMK_E_BUSY) {
        char msg[96];
        snprintf(msg, sizeof(msg), "too many upload sessions in progress (limit %u)",
                 r->max_uploads);
        rp = error_reply(q, "TOOMANYREQUESTS", msg, NULL);
        hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "10");
        return send_reply(q, MHD_HTTP_TOO_MANY_REQUESTS, &rp);
    }
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot start the upload");
    rp = reply_empty();
    upload_headers(q, &rp, u->id, 0);
    upload_release(r, u, 0);
    return send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

static enum MHD_Result upload_status(struct req *q)
{
    uint64_t off = 0;
    struct reply rp;

    if (!upload_offset(q->r, q->ref, q->name, &off))
        return send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                          "blob upload unknown to registry", NULL);
    rp = reply_empty();
    upload_headers(q, &rp, q->ref, off);
    return send_reply(q, MHD_HTTP_NO_CONTENT, &rp);
}

static enum MHD_Result upload_cancel(struct req *q)
{
    struct upload *u = NULL;
    cmk_err rc = upload_acquire(q->r, q->ref, q->name, &u);
    struct reply rp;

    if (rc == CMK_E_BUSY)
        return send_error(q, MHD_HTTP_BAD_REQUEST, "BLOB_UPLOAD_INVALID",
                          "the upload is in use by another request", NULL);
    if (rc != CMK_OK)
        return send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                          "blob upload unknown to registry", NULL);
    upload_release(q->r, u, 1);
    rp = reply_empty();
    return send_reply(q, MHD_HTTP_NO_CONTENT, &rp);
}

/* 416 with the session's current state, as the spec asks for a refused chunk. */
static enum MHD_Result chunk_refused(struct req *q, const char *msg)
{
    struct reply rp = error_reply(q, "BLOB_UPLOAD_INVALID", msg, NULL);

    upload_headers(q, &rp, q->up->id, q->up->offset);
    return send_reply(q, MHD_HTTP_RANGE_NOT_SATISFIABLE, &rp);
}

/* PATCH and PUT on a session: checks, then the body streams into the session's put. */
static enum MHD_Result upload_continue(struct req *q, int final)
{
    registry *r = q->r;
    const char *crange = header(q, MHD_HTTP_HEADER_CONTENT_RANGE);
    const char *clen = header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *digest = final ? arg(q, "digest") : NULL;
    uint64_t n;
    cmk_err rc;

    if (final && (!digest || !registry_digest_valid(digest)))
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                          digest ? "invalid digest (sha256:<64 hex> or sha512:<128 hex>)"
                                 : "the digest parameter is required to complete an upload",
                          NULL);
    if (!mem_reserve(q, body_length(q)))
        return send_mem_spent(q);
    rc = upload_acquire(r, q->ref, q->name, &q->up);
    if (rc == CMK_E_BUSY)
        return send_error(q, MHD_HTTP_BAD_REQUEST, "BLOB_UPLOAD_INVALID",
                          "the upload is in use by another request", NULL);
    if (rc == CMK_E_KEY_UNREACHABLE) {
        cmk_encryption_info ei;
        if (cmk_store_encryption(r->s, &ei) == CMK_OK && !ei.key_accessible &&
            cmk_err_is_key_access(ei.key_error))
            rc = ei.key_error;
        return store_error(q, rc, "the session was dropped when the store lost key access",
                           "the upload cannot go on");
    }
    if (rc != CMK_OK)
        return send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                          "blob upload unknown to registry", NULL);
    if (crange) {
        if (http_parse_content_range(crange, &q->cr_start, &q->cr_end) != 0)
            return chunk_refused(q, "invalid Content-Range (expected <start>-<end>)");
        if (q->cr_start != q->up->offset)
            return chunk_refused(q, "chunk out of order: it must start where the upload ends");
        if (clen && (http_parse_u64(clen, UINT64_MAX, &n) != 0 || n != q->cr_end - q->cr_start + 1))
            return send_error(q, MHD_HTTP_BAD_REQUEST, "SIZE_INVALID",
                              "Content-Length does not match Content-Range", NULL);
        q->has_crange = 1;
    }
    if (clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 && blob_too_big(r, q->up->offset, n))
        return send_blob_too_big(q);
    /* A session begun before the store lost key access is over: its put has failed and its
     * key is wiped. Answered before any of the body is read. */
    rc = cmk_put_write(q->up->put, "", 0);
    if (rc != CMK_OK) {
        q->up_destroy = 1;
        return store_error(q, rc, NULL, "the upload cannot go on");
    }
    if (final)
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
    q->put = q->up->put;
    q->body = BODY_PUT;
    return MHD_YES;
}

/* ---- manifests ---- */

static int known_manifest_type(const char *mt)
{
    return strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_OCI_INDEX) == 0 ||
           strcmp(mt, MT_DOCKER_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

static int is_index_type(const char *mt)
{
    return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

/* Resolves a manifest reference (tag or digest) in rec; NULL if unknown. */
static const char *resolve(const json_t *rec, const char *ref)
{
    const char *d = registry_looks_like_digest(ref) ? ref : rmeta_tag(rec, ref);

    return d && rmeta_manifest(rec, d) ? d : NULL;
}

static enum MHD_Result manifest_get(struct req *q)
{
    json_t *rec = NULL, *m;
    const char *d, *mt;
    char digest[CMK_DIGEST_MAX], ctype[256];
    json_int_t size;
    cmk_err rc;

    if (registry_looks_like_digest(q->ref) && !registry_digest_valid(q->ref))
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                          "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    /* A string that is no valid tag cannot name a manifest: unknown, as the conformance
     * suite and other registries answer (a 400 is kept for pushes to such a tag). */
    if (!registry_looks_like_digest(q->ref) && !registry_tag_valid(q->ref))
        return send_error(q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN",
                          "manifest unknown to registry (not a valid tag)",
                          json_pack("{s:s}", "tag", "(invalid)"));
    rc = rmeta_load(q->r->s, q->name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND)
        return store_error(q, rc, NULL, "cannot read the repository");
    d = rec ? resolve(rec, q->ref) : NULL;
    if (!d) {
        json_decref(rec);
        return send_error(
            q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown to registry",
            json_pack("{s:s}", registry_looks_like_digest(q->ref) ? "digest" : "tag", q->ref));
    }
    m = rmeta_manifest(rec, d);
    mt = json_string_value(json_object_get(m, "mediaType"));
    size = json_integer_value(json_object_get(m, "size"));
    snprintf(digest, sizeof(digest), "%s", d);
    snprintf(ctype, sizeof(ctype), "%s", mt ? mt : MT_OCI_MANIFEST);
    json_decref(rec);
    if (size < 0)
        return send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN", "bad manifest record",
                          NULL);
    return send_blob(q, digest, (uint64_t)size, 0, (uint64_t)size, MHD_HTTP_OK, ctype);
}

static enum MHD_Result manifest_delete(struct req *q)
{
    registry *r = q->r;
    int by_digest = registry_looks_like_digest(q->ref), lk;
    cmk_errbuf eb = {0};
    cmk_err rc;
    struct reply rp;

    if (by_digest ? !registry_digest_valid(q->ref) : !registry_tag_valid(q->ref))
        return send_error(q, MHD_HTTP_BAD_REQUEST,
                          by_digest ? "DIGEST_INVALID" : "MANIFEST_INVALID",
                          "invalid manifest reference (a tag or a digest)", NULL);
    rc = rmeta_lock(r->s, RMETA_GC_LOCK, LOCK_EX, &lk, &eb);
    if (rc != CMK_OK)
        return store_error(q, rc, eb.msg, "cannot delete the manifest");
    if (by_digest) {
        rc = rmeta_delete_manifest(r->s, q->name, q->ref);
        if (rc == CMK_OK)
            rc = collect_if_unreferenced(r, q->ref);
    } else {
        rc = rmeta_delete_tag(r->s, q->name, q->ref);
    }
    rmeta_unlock(lk);
    if (rc == CMK_E_NOT_FOUND)
        return send_error(q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown to registry",
                          NULL);
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot delete the manifest");
    rp = reply_empty();
    return send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

/* Checks a descriptor's shape; returns its digest or NULL. */
static const char *descriptor(const json_t *d, json_int_t *size)
{
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *sz = json_object_get(d, "size");

    if (!json_is_object(d) || !json_is_string(json_object_get(d, "mediaType")) ||
        !registry_digest_valid(dg) || !json_is_integer(sz) || json_integer_value(sz) < 0)
        return NULL;
    *size = json_integer_value(sz);
    return dg;
}

/* Validates a parsed manifest against the repository; fills entry (mediaType, size,
 * artifactType, subject, annotations, refs). Answers and returns 1 if invalid. */
static int manifest_check(struct req *q, json_t *j, const json_t *rec, const char *mt,
                          json_t *entry, enum MHD_Result *ret)
{
    json_t *refs = json_object_get(entry, "refs"), *missing = json_array(), *v, *subject;
    const char *msg = NULL, *at;
    json_int_t size;
    uint64_t have;
    size_t i;

    if (!missing) {
        *ret = MHD_NO;
        return 1;
    }
    if (is_index_type(mt)) {
        json_t *mans = json_object_get(j, "manifests");
        if (!json_is_array(mans)) {
            msg = "an index needs a \"manifests\" array";
            goto bad;
        }
        json_array_foreach(mans, i, v)
        {
            const char *d = descriptor(v, &size);
            json_t *m;
            if (!d) {
                msg = "invalid descriptor in \"manifests\"";
                goto bad;
            }
            m = rec ? rmeta_manifest(rec, d) : NULL;
            if (!m || json_integer_value(json_object_get(m, "size")) != size)
                json_array_append_new(missing, json_string(d));
            json_array_append_new(refs, json_string(d));
        }
    } else {
        json_t *cfg = json_object_get(j, "config"), *layers = json_object_get(j, "layers");
        const char *d = descriptor(cfg, &size);
        if (!d) {
            msg = "an image manifest needs a valid \"config\" descriptor";
            goto bad;
        }
        if (!rec || !rmeta_blob(rec, d, &have) || have != (uint64_t)size)
            json_array_append_new(missing, json_string(d));
        json_array_append_new(refs, json_string(d));
        if (!json_is_array(layers)) {
            msg = "an image manifest needs a \"layers\" array";
            goto bad;
        }
        json_array_foreach(layers, i, v)
        {
            d = descriptor(v, &size);
            if (!d) {
                msg = "invalid descriptor in \"layers\"";
                goto bad;
            }
            /* Foreign layers (with urls) live elsewhere by design. */
            if (!json_object_get(v, "urls") &&
                (!rec || !rmeta_blob(rec, d, &have) || have != (uint64_t)size))
                json_array_append_new(missing, json_string(d));
            json_array_append_new(refs, json_string(d));
        }
        at = json_string_value(json_object_get(cfg, "mediaType"));
        if (at && !json_object_get(j, "artifactType"))
            json_object_set_new(entry, "artifactType", json_string(at));
    }
    at = json_string_value(json_object_get(j, "artifactType"));
    if (json_object_get(j, "artifactType") && !at) {
        msg = "\"artifactType\" must be a string";
        goto bad;
    }
    if (at)
        json_object_set_new(entry, "artifactType", json_string(at));
    subject = json_object_get(j, "subject");
    if (subject) {
        const char *d = descriptor(subject, &size);
        json_t *ann = json_object_get(j, "annotations");
        if (!d) {
            msg = "invalid \"subject\" descriptor";
            goto bad;
        }
        json_object_set_new(entry, "subject", json_string(d));
        /* Referrers listings carry the annotations; keep them for those manifests only. */
        if (json_is_object(ann))
            json_object_set(entry, "annotations", ann);
    }
    if (json_array_size(missing) > 0) {
        json_t *errs = json_array();
        json_array_foreach(missing, i, v)
        {
            json_array_append_new(errs,
                                  error_entry("MANIFEST_BLOB_UNKNOWN",
                                              "manifest references a blob or manifest "
                                              "unknown to the repository",
                                              with_rid(q, digest_detail(json_string_value(v)))));
        }
        json_decref(missing);
        struct reply rp = reply_json(q, json_pack("{s:o}", "errors", errs), "application/json");
        *ret = send_reply(q, MHD_HTTP_BAD_REQUEST, &rp);
        return 1;
    }
    json_decref(missing);
    return 0;
bad:
    json_decref(missing);
    *ret = send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", msg, NULL);
    return 1;
}

static enum MHD_Result manifest_put_finish(struct req *q)
{
    registry *r = q->r;
    int by_digest = registry_looks_like_digest(q->ref), lk = -1;
    const char *ctype_h = header(q, MHD_HTTP_HEADER_CONTENT_TYPE), *mt_body;
    char ctype[256], mt[256], digest[CMK_DIGEST_MAX], loc[REG_NAME_MAX + CMK_DIGEST_MAX + 24];
    json_t *j = NULL, *rec = NULL, *entry = NULL;
    cmk_errbuf eb = {0};
    json_error_t jerr;
    enum MHD_Result ret;
    cmk_put *p = NULL;
    struct reply rp;
    cmk_err rc;

    if (q->too_big) {
        char msg[96];
        snprintf(msg, sizeof(msg), "manifest larger than the limit of %llu bytes",
                 (unsigned long long)r->max_manifest);
        return send_error(q, MHD_HTTP_CONTENT_TOO_LARGE, "MANIFEST_INVALID", msg, NULL);
    }
    if (q->blen == 0)
        return send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", "empty manifest", NULL);
    j = json_loadb(q->buf, q->blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "manifest is not a JSON object%s%s", j ? "" : ": ",
                 j ? "" : jerr.text);
        json_decref(j);
        return send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", msg, NULL);
    }
    if (json_integer_value(json_object_get(j, "schemaVersion")) != 2) {
        json_decref(j);
        return send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                          "only schemaVersion 2 manifests are supported", NULL);
    }
    /* Content-Type without parameters. */
    ctype[0] = '\0';
    if (ctype_h) {
        size_t n = strcspn(ctype_h, "; \t");
        if (n >= sizeof(ctype))
            n = sizeof(ctype) - 1;
        memcpy(ctype, ctype_h, n);
        ctype[n] = '\0';
    }
    mt_body = json_string_value(json_object_get(j, "mediaType"));
    if (mt_body && ctype[0] && strcmp(mt_body, ctype) != 0) {
        json_decref(j);
        return send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                          "Content-Type does not match the manifest's mediaType", NULL);
    }
    if (mt_body)
        snprintf(mt, sizeof(mt), "%s", mt_body);
    else if (ctype[0])
        snprintf(mt, sizeof(mt), "%s", ctype);
    else
        snprintf(mt, sizeof(mt), "%s",
                 json_object_get(j, "manifests") ? MT_OCI_INDEX : MT_OCI_MANIFEST);
    if (!known_manifest_type(mt)) {
        json_decref(j);
        return send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                          "unsupported manifest media type (OCI image manifest or index, "
                          "Docker manifest v2 schema 2 or manifest list)",
                          NULL);
    }
    entry = json_pack("{s:s, s:I, s:[]}", "mediaType", mt, "size", (json_int_t)q->blen, "refs");
    if (!entry) {
        json_decref(j);
        return MHD_NO;
    }
    /* Shared collection lock from the check of the referenced blobs to the record update,
     * so no delete slips in between. */
    rc = rmeta_lock(r->s, RMETA_GC_LOCK, LOCK_SH, &lk, &eb);
    if (rc != CMK_OK) {
        ret = store_error(q, rc, eb.msg, "cannot store the manifest");
        goto out;
    }
    rc = rmeta_load(r->s, q->name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND) {
        ret = store_error(q, rc, NULL, "cannot read the repository");
        goto out;
    }
    if (manifest_check(q, j, rec, mt, entry, &ret))
        goto out;
    rc = cmk_put_begin(r->s, by_digest && strncmp(q->ref, "sha512:", 7) == 0 ? "sha512" : "sha256",
                       &p);
    if (rc == CMK_OK)
        rc = cmk_put_write(p, q->buf, q->blen);
    if (rc != CMK_OK) {
        ret = store_error(q, rc, NULL, "cannot store the manifest");
        goto out;
    }
    rc = cmk_put_commit(p, by_digest ? q->ref : NULL, digest);
    p = NULL;
    if (rc == CMK_E_DIGEST) {
        ret = send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                         "manifest digest does not match the reference; nothing was stored",
                         digest_detail(q->ref));
        goto out;
    }
    if (rc == CMK_OK)
        rc = rmeta_put_manifest(r->s, q->name, digest, entry, by_digest ? NULL : q->ref);
    if (rc != CMK_OK) {
        ret = store_error(q, rc, NULL, "cannot store the manifest");
        goto out;
    }
    rp = reply_empty();
    snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", q->name, digest);
    hdr(&rp, MHD_HTTP_HEADER_LOCATION, loc);
    hdr(&rp, "Docker-Content-Digest", digest);
    if (json_object_get(entry, "subject"))
        hdr(&rp, "OCI-Subject", json_string_value(json_object_get(entry, "subject")));
    ret = send_reply(q, MHD_HTTP_CREATED, &rp);
out:
    rmeta_unlock(lk);
    cmk_put_abort(p);
    json_decref(rec);
    json_decref(entry);
    json_decref(j);
    return ret;
}

static enum MHD_Result manifest_put_start(struct req *q)
{
    const char *clen = header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n = 0;

    if (registry_looks_like_digest(q->ref) ? !registry_digest_valid(q->ref)
                                           : !registry_tag_valid(q->ref))
        return send_error(q, MHD_HTTP_BAD_REQUEST,
                          registry_looks_like_digest(q->ref) ? "DIGEST_INVALID"
                                                             : "MANIFEST_INVALID",
                          "invalid manifest reference: a tag matches "
                          "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}, a digest is sha256:<64 hex>",
                          NULL);
    if (clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 && n > q->r->max_manifest) {
        q->too_big = 1;
        return manifest_put_finish(q);
    }
    q->body = BODY_MANIFEST;
    return MHD_YES;
}

/* ---- listings ---- */

/* Reads ?n= and ?last=; answers and returns 1 on a bad n. *n = SIZE_MAX: no limit. */
static int page_args(struct req *q, size_t *n, const char **last, enum MHD_Result *ret)
{
    const char *ns = arg(q, "n");
    uint64_t v;

    *n = SIZE_MAX;
    *last = arg(q, "last");
    if (ns) {
        if (http_parse_u64(ns, PAGE_MAX, &v) != 0) {
            *ret = send_error(q, MHD_HTTP_BAD_REQUEST, "PAGINATION_NUMBER_INVALID",
                              "n must be a number from 0 to 100000", NULL);
            return 1;
        }
        *n = (size_t)v;
    }
    return 0;
}

/* Copies the names of sorted (a sorted array of strings) after `last`, at most n, into
 * page; *more = 1 if some remain. */
static void paginate(const json_t *sorted, size_t n, const char *last, json_t *page, int *more)
{
    size_t i;
    json_t *v;

    *more = 0;
    /* n=0 asks for no names: there is no next page to point to (a Link to the same query
     * would send a client round in circles). */
    if (n == 0)
        return;
    json_array_foreach(sorted, i, v)
    {
        if (last && strcmp(json_string_value(v), last) <= 0)
            continue;
        if (json_array_size(page) >= n) {
            *more = 1;
            break;
        }
        json_array_append(page, v);
    }
}

static void link_header(struct reply *rp, const char *base, size_t n, const json_t *page)
{
    char link[REG_NAME_MAX * 2 + 160];
    const char *lastv = json_string_value(json_array_get(page, json_array_size(page) - 1));

    /* Names and tags are URL-safe by their grammars. */
    snprintf(link, sizeof(link), "<%s?n=%zu&last=%s>; rel=\"next\"", base, n, lastv ? lastv : "");
    hdr(rp, MHD_HTTP_HEADER_LINK, link);
}

static int cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* The keys of obj as a sorted JSON array (the spec wants lexical order; jansson keeps
 * insertion order). NULL when out of memory. */
static json_t *sorted_keys(const json_t *obj)
{
    size_t cnt = json_object_size(obj), i = 0;
    json_t **items = malloc((cnt ? cnt : 1) * sizeof(*items)), *out = json_array(), *v;
    const char *k;

    if (!items || !out)
        goto fail;
    json_object_foreach((json_t *)obj, k, v)
    {
        items[i] = json_string(k);
        if (!items[i])
            goto fail;
        i++;
    }
    qsort(items, i, sizeof(*items), cmp_json_str);
    for (size_t j = 0; j < i; j++) {
        if (json_array_append_new(out, items[j]) != 0) {
            items[j] = NULL;
            while (++j < i)
                json_decref(items[j]);
            i = 0;
            goto fail;
        }
    }
    free(items);
    return out;
fail:
    for (size_t j = 0; items && j < i; j++)
        json_decref(items[j]);
    free(items);
    json_decref(out);
    return NULL;
}

static enum MHD_Result tags_list(struct req *q)
{
    json_t *rec = NULL, *all = NULL, *page = NULL;
    const char *last;
    enum MHD_Result ret;
    char base[REG_NAME_MAX + 32];
    struct reply rp;
    size_t n;
    int more;
    cmk_err rc;

    if (page_args(q, &n, &last, &ret))
        return ret;
    rc = rmeta_load(q->r->s, q->name, &rec);
    if (rc == CMK_E_NOT_FOUND)
        return send_error(q, MHD_HTTP_NOT_FOUND, "NAME_UNKNOWN",
                          "repository name not known to registry",
                          json_pack("{s:s}", "name", q->name));
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot read the repository");
    all = sorted_keys(json_object_get(rec, "tags"));
    page = json_array();
    if (!all || !page) {
        ret = MHD_NO;
        goto out;
    }
    paginate(all, n, last, page, &more);
    rp = reply_json(q, json_pack("{s:s, s:O}", "name", q->name, "tags", page), "application/json");
    if (more) {
        snprintf(base, sizeof(base), "/v2/%s/tags/list", q->name);
        link_header(&rp, base, n, page);
    }
    ret = send_reply(q, MHD_HTTP_OK, &rp);
out:
    json_decref(page);
    json_decref(all);
    json_decref(rec);
    return ret;
}

static enum MHD_Result catalog(struct req *q)
{
    json_t *all = NULL, *page = NULL;
    const char *last;
    enum MHD_Result ret;
    struct reply rp;
    size_t n;
    int more;
    cmk_err rc;

    if (page_args(q, &n, &last, &ret))
        return ret;
    rc = rmeta_list_repos(q->r->s, &all);
    if (rc != CMK_OK)
        return store_error(q, rc, NULL, "cannot list the repositories");
    page = json_array();
    if (!page) {
        json_decref(all);
        return MHD_NO;
    }
    paginate(all, n, last, page, &more);
    rp = reply_json(q, json_pack("{s:O}", "repositories", page), "application/json");
    if (more)
        link_header(&rp, "/v2/_catalog", n, page);
    ret = send_reply(q, MHD_HTTP_OK, &rp);
    json_decref(page);
    json_decref(all);
    return ret;
}

static enum MHD_Result referrers(struct req *q)
{
    const char *filter = arg(q, "artifactType");
    json_t *rec = NULL, *keys = NULL, *mans = json_array(), *k;
    struct reply rp;
    size_t i;
    cmk_err rc;

    if (!mans)
        return MHD_NO;
    if (filter && !*filter)
        filter = NULL;
    if (!registry_digest_valid(q->ref)) {
        json_decref(mans);
        return send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                          "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    }
    rc = rmeta_load(q->r->s, q->name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND) {
        json_decref(mans);
        return store_error(q, rc, NULL, "cannot read the repository");
    }
    /* An unknown subject (or repository) has no referrers: an empty index, not a 404. */
    if (rec)
        keys = sorted_keys(json_object_get(rec, "manifests"));
    json_array_foreach(keys, i, k)
    {
        const char *d = json_string_value(k);
        json_t *m = rmeta_manifest(rec, d), *desc;
        const char *subj = json_string_value(json_object_get(m, "subject"));
        const char *at = json_string_value(json_object_get(m, "artifactType"));

        if (!subj || strcmp(subj, q->ref) != 0)
            continue;
        if (filter && (!at || strcmp(at, filter) != 0))
            continue;
        desc = json_pack("{s:O, s:s, s:O}", "mediaType", json_object_get(m, "mediaType"), "digest",
                         d, "size", json_object_get(m, "size"));
        if (desc && at)
            json_object_set_new(desc, "artifactType", json_string(at));
        if (desc && json_object_get(m, "annotations"))
            json_object_set(desc, "annotations", json_object_get(m, "annotations"));
        if (!desc || json_array_append_new(mans, desc) != 0)
            break;
    }
    json_decref(keys);
    json_decref(rec);
    rp = reply_json(q,
                    json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
                              "manifests", mans),
                    MT_OCI_INDEX);
    if (filter)
        hdr(&rp, "OCI-Filters-Applied", "artifactType");
    return send_reply(q, MHD_HTTP_OK, &rp);
}

static enum MHD_Result metrics(struct req *q)
{
    registry *r = q->r;
    struct reply rp = {NULL, 0};
    char *text = NULL;
    size_t len = 0;

    if (!r->metrics || http_metrics_render(r->metrics, r->s, registry_uploads(r),
                                           registry_inflight(r), &text, &len) != 0)
        return send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN", "metrics are not available",
                          NULL);
    rp.resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!rp.resp) {
        free(text);
        return MHD_NO;
    }
    q->out += len;
    hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    return send_reply(q, MHD_HTTP_OK, &rp);
}

/* ---- routing ---- */

enum { ROUTE_OK, ROUTE_UNKNOWN, ROUTE_BAD_NAME, ROUTE_BAD_REF };

/* Splits url ("/v2/<name>/<kind>/<ref>") into q->rt, q->name and q->ref. Names hold '/', so
 * the endpoint is read from the end. */
static int route(struct req *q, const char *url)
{
    char buf[REG_NAME_MAX + REF_MAX + 32];
    char *last, *prev, *name_end;
    const char *seg, *pseg;
    size_t len;

    if (strcmp(url, "/metrics") == 0) {
        q->rt = RT_METRICS;
        return ROUTE_OK;
    }
    if (strcmp(url, "/v2/") == 0 || strcmp(url, "/v2") == 0) {
        q->rt = RT_PING;
        return ROUTE_OK;
    }
    if (strncmp(url, "/v2/", 4) != 0)
        return ROUTE_UNKNOWN;
    url += 4;
    if (strcmp(url, "_catalog") == 0) {
        q->rt = RT_CATALOG;
        return ROUTE_OK;
    }
    len = strlen(url);
    if (len >= sizeof(buf))
        return ROUTE_BAD_NAME;
    memcpy(buf, url, len + 1);
    if (len > 10 && strcmp(buf + len - 10, "/tags/list") == 0) {
        buf[len - 10] = '\0';
        q->rt = RT_TAGS;
        name_end = buf + len - 10;
        goto name;
    }
    last = strrchr(buf, '/');
    if (!last || last == buf)
        return ROUTE_UNKNOWN;
    *last = '\0';
    seg = last + 1;
    prev = strrchr(buf, '/');
    if (!prev)
        return ROUTE_UNKNOWN;
    pseg = prev + 1;
    name_end = prev;
    if (strcmp(pseg, "manifests") == 0) {
        q->rt = RT_MANIFEST;
    } else if (strcmp(pseg, "referrers") == 0) {
        q->rt = RT_REFERRERS;
    } else if (strcmp(pseg, "blobs") == 0) {
        /* ".../blobs/uploads" without the trailing slash starts an upload too. */
        q->rt = strcmp(seg, "uploads") == 0 ? RT_UPLOAD_NEW : RT_BLOB;
    } else if (strcmp(pseg, "uploads") == 0) {
        *prev = '\0';
        char *pp = strrchr(buf, '/');
        if (!pp || strcmp(pp + 1, "blobs") != 0)
            return ROUTE_UNKNOWN;
        name_end = pp;
        q->rt = *seg ? RT_UPLOAD : RT_UPLOAD_NEW;
    } else {
        return ROUTE_UNKNOWN;
    }
    if (q->rt != RT_UPLOAD_NEW) {
        if (!*seg || strlen(seg) >= sizeof(q->ref))
            return ROUTE_BAD_REF;
        snprintf(q->ref, sizeof(q->ref), "%s", seg);
    }
name:
    *name_end = '\0';
    if (!registry_name_valid(buf))
        return ROUTE_BAD_NAME;
    snprintf(q->name, sizeof(q->name), "%s", buf);
    return ROUTE_OK;
}

static int method_allowed(const struct req *q, const char **allow)
{
    static const char *const allowed[] = {
        [RT_PING] = "GET, HEAD",
        [RT_METRICS] = "GET",
        [RT_CATALOG] = "GET",
        [RT_TAGS] = "GET",
        [RT_MANIFEST] = "GET, HEAD, PUT, DELETE",
        [RT_BLOB] = "GET, HEAD, DELETE",
        [RT_UPLOAD_NEW] = "POST",
        [RT_UPLOAD] = "GET, PATCH, PUT, DELETE",
        [RT_REFERRERS] = "GET",
    };
    const char *list = allowed[q->rt], *p = list;
    size_t ml = strlen(q->method);

    *allow = list;
    while ((p = strstr(p, q->method)) != NULL) {
        if ((p == list || p[-1] == ' ') && (p[ml] == '\0' || p[ml] == ','))
            return 1;
        p += ml;
    }
    return 0;
}

static int is(const struct req *q, const char *m)
{
    return strcmp(q->method, m) == 0;
}

static enum MHD_Result unauthorized(struct req *q)
{
    struct reply rp = error_reply(q, "UNAUTHORIZED", "authentication required", NULL);

    if (http_auth_has_basic(q->r->auth))
        hdr(&rp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"cmkstore\"");
    if (http_auth_has_bearer(q->r->auth))
        hdr(&rp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"cmkstore\"");
    return send_reply(q, MHD_HTTP_UNAUTHORIZED, &rp);
}

/* 429 TOOMANYREQUESTS with Retry-After; close: the connection is closed after it. */
static enum MHD_Result too_many(struct req *q, const char *msg, unsigned retry_after, int close)
{
    struct reply rp = error_reply(q, "TOOMANYREQUESTS", msg, NULL);
    char ra[16];

    snprintf(ra, sizeof(ra), "%u", retry_after);
    hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    if (close)
        hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
    return send_reply(q, MHD_HTTP_TOO_MANY_REQUESTS, &rp);
}

static enum MHD_Result first_call(struct req *q, const char *url)
{
    registry *r = q->r;
    const char *allow;
    struct reply rp;
    unsigned retry = 1;
    int rt;

    if (atomic_load(&r->draining)) {
        rp = error_reply(q, "UNAVAILABLE", "the server is shutting down", NULL);
        hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
        return send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
    }
    /* Past --max-connections (the daemon accepts as many again to say so): the server's
     * condition, not this client's, so 503 as for shutdown. */
    if (http_conn_excess(q->c)) {
        rp = error_reply(q, "UNAVAILABLE", "too many connections to the server: retry", NULL);
        hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
        hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "2");
        return send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
    }
    if (http_conn_over_limit(q->c))
        return too_many(q, "too many connections from this address", 1, 1);
    switch (http_auth_check(r->auth, header(q, MHD_HTTP_HEADER_AUTHORIZATION), q->ckey, &retry)) {
    case HTTP_AUTH_OK:
        break;
    case HTTP_AUTH_BACKOFF:
        return too_many(q, "too many failed authentication attempts", retry, 0);
    default:
        return unauthorized(q);
    }
    http_conn_trust(r->conns, q->c);
    rt = route(q, url);
    if (rt == ROUTE_UNKNOWN)
        return send_error(q, MHD_HTTP_NOT_FOUND, "UNSUPPORTED", "no such endpoint", NULL);
    if (rt == ROUTE_BAD_NAME)
        return send_error(q, MHD_HTTP_BAD_REQUEST, "NAME_INVALID", "invalid repository name", NULL);
    if (rt == ROUTE_BAD_REF)
        return send_error(q, MHD_HTTP_BAD_REQUEST,
                          q->rt == RT_MANIFEST ? "MANIFEST_INVALID" : "DIGEST_INVALID",
                          "invalid reference", NULL);
    if (!method_allowed(q, &allow)) {
        rp = error_reply(q, "UNSUPPORTED", "the operation is unsupported", NULL);
        hdr(&rp, MHD_HTTP_HEADER_ALLOW, allow);
        return send_reply(q, MHD_HTTP_METHOD_NOT_ALLOWED, &rp);
    }
    switch (q->rt) {
    case RT_PING:
        rp = reply_json(q, json_object(), "application/json");
        return send_reply(q, MHD_HTTP_OK, &rp);
    case RT_METRICS:
        return metrics(q);
    case RT_CATALOG:
        return catalog(q);
    case RT_TAGS:
        return tags_list(q);
    case RT_REFERRERS:
        return referrers(q);
    case RT_BLOB:
        return is(q, "DELETE") ? blob_delete(q) : blob_get(q);
    case RT_MANIFEST:
        if (is(q, "PUT"))
            return manifest_put_start(q);
        return is(q, "DELETE") ? manifest_delete(q) : manifest_get(q);
    case RT_UPLOAD_NEW:
        return upload_start(q);
    case RT_UPLOAD:
        if (is(q, "GET"))
            return upload_status(q);
        if (is(q, "DELETE"))
            return upload_cancel(q);
        return upload_continue(q, is(q, "PUT"));
    }
    return MHD_NO;
}

static void body_chunk(struct req *q, const char *data, size_t n)
{
    registry *r = q->r;
    cmk_err rc;

    q->in += n;
    q->received += n;
    if (q->body_failed)
        return; /* the rest of a failed body is read and dropped */
    if (q->body == BODY_PUT) {
        /* Bodies without a Content-Length (chunked transfer) are checked as they arrive. */
        if (blob_too_big(r, q->up ? q->up->offset : 0, q->received)) {
            q->too_big = 1;
            q->body_failed = 1;
            return;
        }
        rc = cmk_put_write(q->put, data, n);
        if (rc != CMK_OK) {
            q->body_failed = 1;
            q->body_rc = rc;
            snprintf(q->body_msg, sizeof(q->body_msg), "%s", cmk_errmsg());
            /* Its buffers (and key) go now, not when the rest of the body has arrived. */
            if (q->up)
                q->up->put = NULL;
            cmk_put_abort(q->put);
            q->put = NULL;
        }
    } else if (q->body == BODY_MANIFEST) {
        if (q->blen + n > r->max_manifest) {
            q->too_big = 1;
            q->body_failed = 1;
            return;
        }
        if (q->blen + n > q->bcap) {
            size_t ncap = q->bcap ? q->bcap : 16384;
            while (ncap < q->blen + n)
                ncap *= 2;
            if (ncap > r->max_manifest)
                ncap = (size_t)r->max_manifest;
            char *nb = realloc(q->buf, ncap);
            if (!nb) {
                q->body_failed = 1;
                q->body_rc = CMK_E_NOMEM;
                snprintf(q->body_msg, sizeof(q->body_msg), "out of memory");
                return;
            }
            q->buf = nb;
            q->bcap = ncap;
        }
        memcpy(q->buf + q->blen, data, n);
        q->blen += n;
    }
}

static void upload_advance(registry *r, struct upload *u, uint64_t n)
{
    pthread_mutex_lock(&r->up_mu);
    u->offset += n;
    pthread_mutex_unlock(&r->up_mu);
}

static enum MHD_Result final_call(struct req *q)
{
    registry *r = q->r;
    cmk_put *put;
    struct reply rp;
    cmk_err rc;

    if (q->body == BODY_MANIFEST) {
        if (q->body_failed && !q->too_big)
            return store_error(q, q->body_rc, q->body_msg, "cannot read the manifest");
        return manifest_put_finish(q);
    }
    if (q->body != BODY_PUT)
        return send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN", "internal error", NULL);
    if (q->body_failed && q->too_big)
        return send_blob_too_big(q);
    if (q->body_failed) {
        q->up_destroy = 1; /* the put has failed: the session cannot go on */
        return store_error(q, q->body_rc, q->body_msg, "cannot store the upload");
    }
    if (q->has_crange && q->received != q->cr_end - q->cr_start + 1) {
        q->up_destroy = 1;
        return send_error(q, MHD_HTTP_BAD_REQUEST, "SIZE_INVALID",
                          "the body length does not match Content-Range", NULL);
    }
    if (!q->up) { /* POST ?digest= */
        put = q->put;
        q->put = NULL;
        return commit_and_link(q, put, q->digest);
    }
    upload_advance(r, q->up, q->received);
    if (is(q, "PUT")) {
        put = q->up->put;
        q->up->put = NULL;
        q->put = NULL;
        q->up_destroy = 1;
        return commit_and_link(q, put, q->digest);
    }
    /* Between requests the session holds no pipeline memory (see upload memory in
     * SERVE.md). */
    rc = cmk_put_park(q->up->put);
    if (rc != CMK_OK) {
        q->up_destroy = 1;
        return store_error(q, rc, NULL, "cannot store the upload");
    }
    rp = reply_empty();
    upload_headers(q, &rp, q->up->id, q->up->offset);
    return send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

/* The client's address for the log (out) and its key for the limits (q->ckey). */
static void client_addr(struct req *q, struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    http_client_key(sa, q->ckey, sizeof(q->ckey));
    snprintf(out, cap, "-");
    if (!sa)
        return;
    if (sa->sa_family == AF_INET) {
        if (!inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                       (socklen_t)cap))
            snprintf(out, cap, "-");
    } else if (sa->sa_family == AF_INET6) {
        if (!inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                       (socklen_t)cap))
            snprintf(out, cap, "-");
    }
}

/* 16 hex digits, random (a counter if randomness fails): unique enough to find a request's
 * log lines, and says nothing about the server. */
static void request_id(registry *r, char out[17])
{
    unsigned char b[8];

    if (RAND_bytes(b, sizeof(b)) != 1) {
        uint64_t n = atomic_fetch_add(&r->rid_next, 1);
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(n >> (8 * i));
    }
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* 1 if the request carries a body (its sink must be ready before the first chunk). */
static int has_body(struct req *q)
{
    const char *cl = header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n;

    if (header(q, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return 1;
    return cl && (http_parse_u64(cl, UINT64_MAX, &n) != 0 || n > 0);
}

enum MHD_Result registry_access(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    registry *r = cls;
    struct req *q = *con_cls;
    enum MHD_Result ret;

    (void)version;
    if (!q) {
        q = calloc(1, sizeof(*q));
        if (!q)
            return MHD_NO;
        q->r = r;
        q->c = c;
        q->t0 = http_mono();
        snprintf(q->method, sizeof(q->method), "%s", strlen(method) < 8 ? method : "OTHER");
        http_log_safe(q->path, sizeof(q->path), url);
        client_addr(q, c, q->client, sizeof(q->client));
        request_id(r, q->rid);
        *con_cls = q;
        atomic_fetch_add(&r->inflight, 1);
        /* A response queued now makes libmicrohttpd close the connection, so requests
         * without a body are answered in the final call (keeping the connection alive);
         * those with one are checked now, before any of the body is read. */
        if (!has_body(q))
            return MHD_YES;
        q->started = 1;
        return first_call(q, url);
    }
    if (*upload_data_size) {
        if (!q->responded)
            body_chunk(q, upload_data, *upload_data_size);
        else
            q->in += *upload_data_size;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (q->responded)
        return MHD_YES;
    if (!q->started) {
        q->started = 1;
        ret = first_call(q, url);
        if (ret != MHD_YES || q->responded)
            return ret;
    }
    return final_call(q);
}

static const char *termination(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return NULL;
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return "read-error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
        return "client-abort";
    default:
        return "error";
    }
}

void registry_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    registry *r = cls;
    struct req *q = *con_cls;
    const char *why = termination(toe);

    (void)c;
    if (!q)
        return;
    /* An upload whose body was cut off cannot be resumed from a known offset: drop it. */
    if (q->up)
        upload_release(r, q->up, q->up_destroy || (!q->responded && q->received > 0));
    else
        cmk_put_abort(q->put);
    mem_release(q);
    if (r->log) {
        char t[32];
        http_time_iso(t);
        fprintf(stderr, "%s %s %s %s %u in=%llu out=%llu %.1fms rid=%s%s%s%s%s\n", t, q->client,
                q->method, q->path, q->status, (unsigned long long)q->in,
                (unsigned long long)q->out, (http_mono() - q->t0) * 1000.0, q->rid,
                why ? " aborted=" : "", why ? why : "", q->note[0] ? " " : "", q->note);
    }
    http_metrics_request(r->metrics, q->method, q->status, q->in, q->out);
    free(q->buf);
    free(q);
    *con_cls = NULL;
    atomic_fetch_sub(&r->inflight, 1);
}

/* ---- the registry object ---- */

cmk_err registry_new(const registry_opts *o, registry **out)
{
    registry *r;

    *out = NULL;
    if (!o || !o->store)
        return CMK_E_INVAL;
    r = calloc(1, sizeof(*r));
    if (!r)
        return CMK_E_NOMEM;
    r->s = o->store;
    r->auth = o->auth;
    r->metrics = o->metrics;
    r->conns = o->conns;
    r->max_manifest = o->max_manifest ? o->max_manifest : DEFAULT_MAX_MANIFEST;
    r->max_blob = o->max_blob;
    r->max_uploads = o->max_uploads ? o->max_uploads : DEFAULT_MAX_UPLOADS;
    r->upload_timeout = o->upload_timeout_s ? o->upload_timeout_s : DEFAULT_UPLOAD_TIMEOUT;
    r->mem_budget = o->upload_memory ? o->upload_memory : DEFAULT_UPLOAD_MEMORY;
    r->log = o->log_requests;
    atomic_init(&r->draining, 0);
    atomic_init(&r->inflight, 0);
    atomic_init(&r->rid_next, 1);
    if (pthread_mutex_init(&r->up_mu, NULL) != 0) {
        free(r);
        return CMK_E_NOMEM;
    }
    *out = r;
    return CMK_OK;
}

void registry_free(registry *r)
{
    if (!r)
        return;
    upload_expire(r, -1, 0);
    pthread_mutex_destroy(&r->up_mu);
    free(r);
}

void registry_drain(registry *r)
{
    atomic_store(&r->draining, 1);
}

unsigned registry_inflight(registry *r)
{
    return atomic_load(&r->inflight);
}

unsigned registry_uploads(registry *r)
{
    unsigned n;

    pthread_mutex_lock(&r->up_mu);
    n = r->nuploads;
    pthread_mutex_unlock(&r->up_mu);
    return n;
}

void registry_tick(registry *r)
{
    cmk_encryption_info ei;

    upload_expire(r, (double)r->upload_timeout, access_gen(r));
    /* Idle for two ticks in a row: give back what the store keeps for speed. Under load,
     * the heap's free memory goes back once a minute: glibc keeps freed chunk buffers in its
     * arenas (its mmap threshold rises as large buffers are freed), and RSS would ratchet up
     * with every peak of concurrency (issue 20: 94 -> 258 MB over a 10-minute soak with
     * 54 MB live). A fixed mmap threshold instead cost 10-20% more server CPU per request
     * in page faults (bench/registry_bench.sh, soak row). */
    r->ticks++;
    if (registry_inflight(r) == 0) {
        if (++r->idle_ticks == 2)
            cmk_store_trim(r->s);
    } else {
        r->idle_ticks = 0;
        if (r->ticks % TRIM_EVERY_TICKS == 0)
            malloc_trim(0);
    }
    if (r->metrics && cmk_store_encryption(r->s, &ei) == CMK_OK)
        http_metrics_observe_key(r->metrics, &ei);
}
