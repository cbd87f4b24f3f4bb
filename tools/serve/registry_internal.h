/*
 * registry_internal.h — what the registry's HTTP modules share: the registry object, one
 * request's state, and the response helpers (registry_reply.c) the handlers answer with.
 *
 *   registry.c           request life cycle (libmicrohttpd callbacks), dispatch, the object
 *   registry_reply.c     responses: JSON, the spec's error bodies, store failures
 *   registry_blob.c      blobs and blob uploads (GET/HEAD/DELETE, POST, PATCH, PUT)
 *   registry_manifest.c  manifests, with the OCI checks
 *   registry_list.c      catalog, tags, referrers, metrics
 *   registry_route.c     the URL map (pure)
 *   registry_upload.c    upload sessions and the upload memory budget (no HTTP)
 *   registry_upload_save.c  sessions saved in the store and restored (crash and restart)
 *   registry_policy.c    links, mounts and unlinks (no HTTP)
 *   registry_gc.c        garbage collection (no HTTP)
 *   registry_maint.c     read-only mode, quotas, the periodic collection, their metrics
 *
 * Threading: a struct req belongs to its connection's thread; struct registry is shared and
 * changed only through atomics or the session table's lock.
 */
#ifndef CMK_REGISTRY_INTERNAL_H
#define CMK_REGISTRY_INTERNAL_H

#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cmkstore_kek.h"
#include "tools/serve/blob_cache.h"
#include "tools/serve/http_token.h"
#include "tools/serve/http_util.h"
#include "tools/serve/registry_access.h"
#include "tools/serve/registry.h"
#include "tools/serve/registry_route.h"
#include "tools/serve/registry_upload.h"

#define MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"

#define LOG_PATH_MAX 300

struct registry {
    cmk_store *s;
    http_auth *auth;
    http_token *token;  /* token authentication (then auth is NULL) */
    reg_access *access; /* per-repository access of Basic users (with auth) */
    http_metrics *metrics;
    http_conn *conns;
    reg_sessions *sessions;
    blob_cache *cache; /* NULL: no cache */
    int cache_send;    /* REG_CACHE_SEND_* (registry.h) */
    uint64_t max_manifest;
    uint64_t max_blob; /* 0: no limit */
    unsigned max_uploads, upload_timeout;
    int upload_save_after; /* seconds; < 0: no saves while serving */
    int idle_ticks;        /* ticks in a row with no request in flight */
    unsigned ticks;
    int log;
    atomic_int draining;
    atomic_uint inflight;
    atomic_uint_fast64_t rid_next;
    /* maintenance (registry_maint.c) */
    int read_only;
    uint64_t quota_repo, quota_total; /* bytes; 0: none */
    unsigned gc_interval;             /* seconds; 0: no periodic collection */
    int64_t gc_grace;
    pthread_t gc_th;
    pthread_mutex_t gc_mu;
    pthread_cond_t gc_cv;
    int gc_inited, gc_started, gc_stop;
    atomic_uint_fast64_t gc_runs, gc_failures, gc_freed_blobs, gc_freed_bytes, gc_last;
    atomic_uint_fast64_t quota_refusals;
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
    int loopback;                   /* the client is on this machine (127/8, ::1) */
    char rid[17];                   /* request id: error bodies repeat it, the log has it */
    unsigned status;
    uint64_t in, out;
    int started; /* first_call has run */
    int responded;
    char note[200]; /* why a response stream broke off, for the log */

    reg_route route;                   /* endpoint, repository name, reference */
    char user[HTTP_AUTH_USER_MAX + 1]; /* the Basic user ("": none), for the access file */
    int mount_from_ok;                 /* may pull ?from= (a mount's source repository) */

    enum body body;
    cmk_put *put;      /* owned (POST ?digest=) or the upload session's (PATCH, PUT) */
    reg_session *up;   /* held upload session */
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

/* ---- responses (registry_reply.c) ----
 * A reply under construction: a header that cannot be added marks it failed, and a failed
 * reply is not sent (the connection is closed instead). */
struct reply {
    struct MHD_Response *resp;
    int failed;
};

void reg_hdr(struct reply *rp, const char *k, const char *v);
struct reply reg_reply_empty(void);
/* Serialises j (released, NULL allowed) into a response of the given content type. */
struct reply reg_reply_json(struct req *q, json_t *j, const char *ctype);
/* Queues rp (consumed) with status; gives the request's upload session back first. MHD_NO if
 * rp could not be built. */
enum MHD_Result reg_send_reply(struct req *q, unsigned status, struct reply *rp);
/* One entry of the spec's error list; detail is stolen (NULL: an empty object). */
json_t *reg_error_entry(const char *code, const char *msg, json_t *detail);
/* detail (stolen; NULL: a new object) with the request id, which the server log repeats. */
json_t *reg_with_rid(struct req *q, json_t *detail);
/* The spec's error body {"errors": [{"code", "message", "detail"}]}; detail is stolen. */
struct reply reg_error_reply(struct req *q, const char *code, const char *msg, json_t *detail);
enum MHD_Result reg_send_error(struct req *q, unsigned status, const char *code, const char *msg,
                               json_t *detail);
/* {"digest": d} */
json_t *reg_digest_detail(const char *d);
/* Answers a store failure rc: the store's message (msg, or cmk_errmsg() if NULL) goes to the server
 * log only, under the request id; the body names the error in general terms. Key access lost and
 * CMK_E_BUSY are 503 with Retry-After, CMK_E_NOT_FOUND 404, a full file system 507, the rest 500.
 * what: "cannot ..." */
enum MHD_Result reg_store_error(struct req *q, cmk_err rc, const char *msg, const char *what);
/* The message an errbuf holds, or NULL (then reg_store_error takes cmk_errmsg()). */
static inline const char *reg_ebmsg(const cmk_errbuf *eb)
{
    return eb->msg[0] ? eb->msg : NULL;
}
/* Query argument and request header; NULL if absent. */
const char *reg_arg(struct req *q, const char *key);
const char *reg_header(struct req *q, const char *key);
/* Answers with bytes [off, off+len) of stored blob digest of the given size (status 200 or
 * 206), streamed from the store. */
enum MHD_Result reg_send_blob(struct req *q, const char *digest, uint64_t size, uint64_t off,
                              uint64_t len, unsigned status, const char *ctype);

/* ---- handlers: each answers, or (a request with a body) readies its body sink and returns
 * MHD_YES to receive it ---- */
enum MHD_Result reg_blob_get(struct req *q);
enum MHD_Result reg_blob_delete(struct req *q);
enum MHD_Result reg_upload_start(struct req *q);
enum MHD_Result reg_upload_status(struct req *q);
enum MHD_Result reg_upload_cancel(struct req *q);
/* PATCH (final 0) or PUT (final 1) on an upload session. */
enum MHD_Result reg_upload_continue(struct req *q, int final);
/* The end of a blob body (POST ?digest=, PATCH, PUT): commit or park, and answer. */
enum MHD_Result reg_blob_finish(struct req *q);
/* 1 if a blob upload of `have` bytes so far plus `more` would pass --max-blob-size. */
int reg_blob_too_big(const registry *r, uint64_t have, uint64_t more);

enum MHD_Result reg_manifest_get(struct req *q);
enum MHD_Result reg_manifest_delete(struct req *q);
enum MHD_Result reg_manifest_put_start(struct req *q);
enum MHD_Result reg_manifest_put_finish(struct req *q);

enum MHD_Result reg_catalog(struct req *q);
enum MHD_Result reg_tags_list(struct req *q);
enum MHD_Result reg_referrers(struct req *q);
enum MHD_Result reg_metrics(struct req *q);

/* ---- maintenance (registry_maint.c) ---- */

/* In read-only mode, answers a request that would change something (405 UNSUPPORTED) and
 * returns 1. */
int reg_read_only_refuse(struct req *q, enum MHD_Result *ret);
/* With quotas set: answers 403 DENIED naming the quota, and returns 1, if adding `more`
 * bytes (of blob digest, NULL if unknown yet) to the request's repository would pass
 * --quota-repo or to the store --quota-total. What is held already adds nothing. */
int reg_quota_check(struct req *q, const char *digest, uint64_t more, enum MHD_Result *ret);
/* Starts (with gc_interval) and stops the periodic collection thread. */
cmk_err reg_maint_start(registry *r);
void reg_maint_stop(registry *r);
/* Prometheus lines of usage, quotas, read-only and collection (malloc'd; NULL: no memory). */
char *reg_maint_metrics(registry *r);

#endif
