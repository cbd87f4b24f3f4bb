/*
 * registry.c — the registry's request life cycle over libmicrohttpd, dispatch to the
 * handlers, and the registry object (see registry_internal.h for the modules).
 *
 * Request life cycle (one thread per connection):
 *   first call      route, authenticate, validate; requests without a body are answered
 *                   here; requests with one get a body sink (a cmk_put, or a bounded buffer
 *                   for manifests) and errors found here are answered at once.
 *   body calls      each chunk goes to cmk_put_write as it arrives (or to the manifest
 *                   buffer); a failure is remembered and the rest of the body discarded.
 *   final call      commit, link, answer.
 *   completed       aborts whatever was not committed, releases the upload session, logs.
 */
#include "tools/serve/registry.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_internal.h"

#define DEFAULT_MAX_MANIFEST   (4u << 20)
#define DEFAULT_MAX_UPLOADS    256
#define DEFAULT_UPLOAD_TIMEOUT 3600
#define DEFAULT_UPLOAD_MEMORY  (1ull << 30)
#define TRIM_EVERY_TICKS       60
#define SAVE_BUDGET_S          0.5 /* upload saves per housekeeping tick, at most */

static int is(const struct req *q, const char *m)
{
    return strcmp(q->method, m) == 0;
}

static enum MHD_Result unauthorized(struct req *q)
{
    struct reply rp = reg_error_reply(q, "UNAUTHORIZED", "authentication required", NULL);

    if (http_auth_has_basic(q->r->auth))
        reg_hdr(&rp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"cmkstore\"");
    if (http_auth_has_bearer(q->r->auth))
        reg_hdr(&rp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"cmkstore\"");
    return reg_send_reply(q, MHD_HTTP_UNAUTHORIZED, &rp);
}

/* 429 TOOMANYREQUESTS with Retry-After; close: the connection is closed after it. */
static enum MHD_Result too_many(struct req *q, const char *msg, unsigned retry_after, int close)
{
    struct reply rp = reg_error_reply(q, "TOOMANYREQUESTS", msg, NULL);
    char ra[16];

    snprintf(ra, sizeof(ra), "%u", retry_after);
    reg_hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    if (close)
        reg_hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
    return reg_send_reply(q, MHD_HTTP_TOO_MANY_REQUESTS, &rp);
}

/* Token authentication: 401 with the challenge that sends the client to the issuer for the
 * scope this request needs (error: NULL for no token, "invalid_token", "insufficient_scope").
 * The body lists what was needed, as distribution does. */
static enum MHD_Result token_challenge(struct req *q, unsigned needs, const char *error)
{
    char hv[2048], acts[32];
    const char *ch = http_token_challenge(q->r->token, q->route.name, needs, error, hv, sizeof(hv));
    json_t *detail = NULL;
    struct reply rp;

    if (needs) {
        reg_access_actions_str(needs, acts, sizeof(acts));
        detail = json_pack("[{s:s, s:s, s:s}]", "Type",
                           needs & REG_NEED_CATALOG ? "registry" : "repository", "Name",
                           needs & REG_NEED_CATALOG ? "catalog" : q->route.name, "Action", acts);
    }
    rp = reg_error_reply(q, "UNAUTHORIZED",
                         error && strcmp(error, "insufficient_scope") == 0
                             ? "the token does not grant the access this request needs"
                             : "authentication required",
                         detail);
    if (ch)
        reg_hdr(&rp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, ch);
    return reg_send_reply(q, MHD_HTTP_UNAUTHORIZED, &rp);
}

/* 403 DENIED: an authenticated Basic user whom the access file does not allow this. */
static enum MHD_Result access_denied(struct req *q, unsigned needs)
{
    char msg[REG_NAME_MAX + 128], acts[32];

    reg_access_actions_str(needs, acts, sizeof(acts));
    if (needs & REG_NEED_CATALOG)
        snprintf(msg, sizeof(msg), "requested access to the catalog is denied");
    else
        snprintf(msg, sizeof(msg), "requested access to the resource is denied (%s on %s)", acts,
                 q->route.name);
    snprintf(q->note, sizeof(q->note), "denied=%s", acts);
    return reg_send_error(q, MHD_HTTP_FORBIDDEN, "DENIED", msg, NULL);
}

/* Whether a mount's source (?from=) may be read by this client: without it the mount is not
 * made (the client gets a plain upload session, as for a blob not found). Without from, the
 * store would be searched for the blob in any repository: allowed only without access
 * control. */
static int mount_source_ok(struct req *q, const jwt_token *t)
{
    const char *from = reg_arg(q, "from");

    if (!q->r->token && !q->r->access)
        return 1;
    if (!from || !registry_name_valid(from))
        return 0;
    if (t)
        return (jwt_granted(t, "repository", from) & JWT_ACT_PULL) != 0;
    return (reg_access_granted(q->r->access, q->user, from) & JWT_ACT_PULL) != 0;
}

/* Token authentication and authorisation of a routed (or unroutable: ok = 0) request.
 * Returns -1 to go on, else the answer sent. */
static int token_gate(struct req *q, int ok, unsigned needs, enum MHD_Result *ret)
{
    jwt_token *t = malloc(sizeof(*t));
    char why[256];
    unsigned got;
    int rv = 1;

    if (!t) {
        *ret =
            reg_send_error(q, MHD_HTTP_SERVICE_UNAVAILABLE, "UNAVAILABLE", "out of memory", NULL);
        return 1;
    }
    switch (http_token_check(q->r->token, reg_header(q, MHD_HTTP_HEADER_AUTHORIZATION),
                             (int64_t)time(NULL), t, why, sizeof(why))) {
    case HTTP_TOKEN_OK:
        break;
    case HTTP_TOKEN_MISSING:
        *ret = token_challenge(q, ok ? needs : 0, NULL);
        goto out;
    default:
        snprintf(q->note, sizeof(q->note), "token refused: %s", why);
        *ret = token_challenge(q, ok ? needs : 0, "invalid_token");
        goto out;
    }
    http_conn_trust(q->r->conns, q->c);
    if (!ok) {
        rv = -1;
        goto out;
    }
    if (needs & REG_NEED_CATALOG)
        got = (jwt_granted(t, "registry", "catalog") & JWT_ACT_ALL) ? REG_NEED_CATALOG : 0;
    else
        got = needs ? jwt_granted(t, "repository", q->route.name) : 0;
    if ((got & needs) != needs) {
        snprintf(q->note, sizeof(q->note), "insufficient scope");
        *ret = token_challenge(q, needs, "insufficient_scope");
        goto out;
    }
    if (q->route.rt == REG_RT_UPLOAD_NEW && reg_arg(q, "mount"))
        q->mount_from_ok = mount_source_ok(q, t);
    rv = -1;
out:
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
    return rv;
}

/* Basic or static-token authentication, then the access file. Returns -1 to go on, else the
 * answer sent. */
static int basic_gate(struct req *q, int ok, unsigned needs, enum MHD_Result *ret)
{
    registry *r = q->r;
    unsigned retry = 1, got;

    switch (http_auth_check(r->auth, reg_header(q, MHD_HTTP_HEADER_AUTHORIZATION), q->ckey, &retry,
                            q->user, sizeof(q->user))) {
    case HTTP_AUTH_OK:
        break;
    case HTTP_AUTH_BACKOFF:
        *ret = too_many(q, "too many failed authentication attempts", retry, 0);
        return 1;
    default:
        *ret = unauthorized(q);
        return 1;
    }
    http_conn_trust(r->conns, q->c);
    if (!ok || !r->access)
        return -1;
    if (needs & REG_NEED_CATALOG)
        got = reg_access_catalog(r->access, q->user) ? REG_NEED_CATALOG : 0;
    else
        got = needs ? reg_access_granted(r->access, q->user, q->route.name) : 0;
    if ((got & needs) != needs) {
        *ret = access_denied(q, needs);
        return 1;
    }
    if (q->route.rt == REG_RT_UPLOAD_NEW && reg_arg(q, "mount"))
        q->mount_from_ok = mount_source_ok(q, NULL);
    return -1;
}

static enum MHD_Result first_call(struct req *q, const char *url)
{
    registry *r = q->r;
    struct reply rp;
    enum reg_route_status st;
    enum MHD_Result ret = MHD_NO;
    unsigned needs;

    if (atomic_load(&r->draining)) {
        rp = reg_error_reply(q, "UNAVAILABLE", "the server is shutting down", NULL);
        reg_hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
        return reg_send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
    }
    /* Past --max-connections (the daemon accepts as many again to say so): the server's
     * condition, not this client's, so 503 as for shutdown. */
    if (http_conn_excess(q->c)) {
        rp = reg_error_reply(q, "UNAVAILABLE", "too many connections to the server: retry", NULL);
        reg_hdr(&rp, MHD_HTTP_HEADER_CONNECTION, "close");
        reg_hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "2");
        return reg_send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
    }
    if (http_conn_over_limit(q->c))
        return too_many(q, "too many connections from this address", 1, 1);
    /* Routed before authentication, since what a request needs depends on its endpoint and
     * repository; routing errors are answered only to authenticated clients. */
    st = registry_route(q->method, url, &q->route);
    needs = st == REG_ROUTE_OK ? reg_access_needs(q->route.rt, q->method) : 0;
    q->mount_from_ok = 1;
    if ((r->token ? token_gate(q, st == REG_ROUTE_OK, needs, &ret)
                  : basic_gate(q, st == REG_ROUTE_OK, needs, &ret)) >= 0)
        return ret;
    switch (st) {
    case REG_ROUTE_OK:
        break;
    case REG_ROUTE_UNKNOWN:
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "UNSUPPORTED", "no such endpoint", NULL);
    case REG_ROUTE_BAD_NAME:
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "NAME_INVALID", "invalid repository name",
                              NULL);
    case REG_ROUTE_BAD_REF:
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST,
                              q->route.rt == REG_RT_MANIFEST ? "MANIFEST_INVALID"
                                                             : "DIGEST_INVALID",
                              "invalid reference", NULL);
    case REG_ROUTE_BAD_METHOD:
        rp = reg_error_reply(q, "UNSUPPORTED", "the operation is unsupported", NULL);
        reg_hdr(&rp, MHD_HTTP_HEADER_ALLOW, q->route.allow);
        return reg_send_reply(q, MHD_HTTP_METHOD_NOT_ALLOWED, &rp);
    }
    {
        enum MHD_Result ro;
        if (reg_read_only_refuse(q, &ro))
            return ro;
    }
    switch (q->route.rt) {
    case REG_RT_PING:
        rp = reg_reply_json(q, json_object(), "application/json");
        return reg_send_reply(q, MHD_HTTP_OK, &rp);
    case REG_RT_METRICS:
        return reg_metrics(q);
    case REG_RT_CATALOG:
        return reg_catalog(q);
    case REG_RT_TAGS:
        return reg_tags_list(q);
    case REG_RT_REFERRERS:
        return reg_referrers(q);
    case REG_RT_BLOB:
        return is(q, "DELETE") ? reg_blob_delete(q) : reg_blob_get(q);
    case REG_RT_MANIFEST:
        if (is(q, "PUT"))
            return reg_manifest_put_start(q);
        return is(q, "DELETE") ? reg_manifest_delete(q) : reg_manifest_get(q);
    case REG_RT_UPLOAD_NEW:
        return reg_upload_start(q);
    case REG_RT_UPLOAD:
        if (is(q, "GET"))
            return reg_upload_status(q);
        if (is(q, "DELETE"))
            return reg_upload_cancel(q);
        return reg_upload_continue(q, is(q, "PUT"));
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
        if (reg_blob_too_big(r, q->up ? q->up->offset : 0, q->received)) {
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

static enum MHD_Result final_call(struct req *q)
{
    if (q->body == BODY_MANIFEST) {
        if (q->body_failed && !q->too_big)
            return reg_store_error(q, q->body_rc, q->body_msg, "cannot read the manifest");
        return reg_manifest_put_finish(q);
    }
    if (q->body != BODY_PUT)
        return reg_send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN", "internal error", NULL);
    return reg_blob_finish(q);
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
    q->loopback = http_addr_is_loopback(sa);
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
    const char *cl = reg_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n;

    if (reg_header(q, MHD_HTTP_HEADER_TRANSFER_ENCODING))
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
        reg_session_release(r->sessions, q->up,
                            q->up_destroy || (!q->responded && q->received > 0));
    else
        cmk_put_abort(q->put);
    reg_sessions_unreserve(r->sessions, &q->mem);
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
    r->token = o->token;
    r->access = o->access;
    r->metrics = o->metrics;
    r->conns = o->conns;
    r->max_manifest = o->max_manifest ? o->max_manifest : DEFAULT_MAX_MANIFEST;
    r->max_blob = o->max_blob;
    r->max_uploads = o->max_uploads ? o->max_uploads : DEFAULT_MAX_UPLOADS;
    r->upload_timeout = o->upload_timeout_s ? o->upload_timeout_s : DEFAULT_UPLOAD_TIMEOUT;
    r->upload_save_after = o->upload_save_after_s;
    r->log = o->log_requests;
    atomic_init(&r->draining, 0);
    atomic_init(&r->inflight, 0);
    atomic_init(&r->rid_next, 1);
    r->read_only = o->read_only;
    r->quota_repo = o->quota_repo;
    r->quota_total = o->quota_total;
    r->gc_interval = o->gc_interval_s;
    r->gc_grace = o->gc_grace_s;
    if (reg_sessions_new(r->s, r->max_uploads,
                         o->upload_memory ? o->upload_memory : DEFAULT_UPLOAD_MEMORY,
                         &r->sessions) != CMK_OK) {
        free(r);
        return CMK_E_NOMEM;
    }
    r->cache_send = o->cache_send;
    if (o->cache_bytes && !(r->cache = blob_cache_new(o->cache_bytes))) {
        reg_sessions_free(r->sessions);
        free(r);
        return CMK_E_NOMEM;
    }
    if (reg_maint_start(r) != CMK_OK) {
        reg_maint_stop(r);
        blob_cache_free(r->cache);
        reg_sessions_free(r->sessions);
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
    reg_maint_stop(r);
    if (rgc_usage_flush(r->s) != CMK_OK)
        fprintf(stderr, "cmkstore serve: cannot update the usage record: %s\n", cmk_errmsg());
    reg_sessions_free(r->sessions);
    blob_cache_free(r->cache);
    free(r);
}

cmk_err registry_suspend_uploads(registry *r, unsigned *saved)
{
    return reg_sessions_suspend(r->sessions, saved);
}

cmk_err registry_restore_uploads(registry *r, const char *instance, unsigned *restored,
                                 unsigned *expired, unsigned *others)
{
    return reg_sessions_restore(r->sessions, instance, (double)r->upload_timeout, restored, expired,
                                others);
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
    return reg_sessions_count(r->sessions);
}

/* A session saved: counted at once, so that a client seeing the metric move after its
 * request knows the save includes that request's bytes (test_serve_crash, frontends). */
static void count_save(void *metrics)
{
    http_metrics_inc(metrics, HTTP_C_UPLOADS_SAVED);
}

void registry_tick(registry *r)
{
    cmk_encryption_info ei;
    unsigned saved = 0, lost = 0;

    reg_sessions_expire(r->sessions, (double)r->upload_timeout,
                        reg_sessions_access_gen(r->sessions));
    /* Crash safety: parked sessions are saved as at shutdown. Bounded per tick (each save is
     * a blob commit with its fsync): the rest wait for the next tick. */
    reg_sessions_save_idle(r->sessions, (double)r->upload_save_after, (double)r->upload_timeout,
                           SAVE_BUDGET_S, count_save, r->metrics, &saved, &lost);
    if (saved || lost)
        r->idle_ticks = 0; /* the commits took engines and buffers: given back two ticks on */
    if (lost)
        fprintf(stderr,
                "cmkstore serve: %u upload session(s) dropped: what they received since "
                "their last save could not be saved (%s)\n",
                lost, cmk_errmsg());
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
    /* What pushes added to the usage counters goes to the record once a second. */
    if (rgc_usage_flush(r->s) != CMK_OK && r->log)
        fprintf(stderr, "cmkstore serve: cannot update the usage record: %s\n", cmk_errmsg());
}
