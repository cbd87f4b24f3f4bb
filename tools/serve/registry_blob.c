/*
 * registry_blob.c — blob endpoints: GET/HEAD/DELETE /v2/<name>/blobs/<digest>, and uploads:
 * POST /v2/<name>/blobs/uploads/ (a session, a monolithic upload with ?digest=, or a
 * cross-repository mount with ?mount=), then GET/PATCH/PUT/DELETE on the session.
 *
 * Request bodies stream into cmk_put_write chunk by chunk (registry.c hands them over); a
 * request that streams reserves what its put may hold from the upload memory budget for its
 * whole life. Linking, mounting and collection are the storage policy's
 * (registry_policy.h); sessions are registry_upload.h's.
 */
#include <stdio.h>
#include <string.h>

#include "tools/serve/registry_internal.h"
#include "tools/serve/registry_policy.h"

/* 503 with Retry-After when the budget is spent: the client retries the same request. */
static enum MHD_Result send_mem_spent(struct req *q)
{
    char msg[160];
    struct reply rp;

    snprintf(msg, sizeof(msg),
             "the server's memory for uploads in progress is in use (limit %llu MiB): retry",
             (unsigned long long)(reg_sessions_budget(q->r->sessions) >> 20));
    rp = reg_error_reply(q, "TOOMANYREQUESTS", msg, NULL);
    reg_hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "2");
    return reg_send_reply(q, MHD_HTTP_SERVICE_UNAVAILABLE, &rp);
}

/* Body length of the request from Content-Length; UINT64_MAX if unknown (chunked). */
static uint64_t body_length(struct req *q)
{
    const char *clen = reg_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n;

    return clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 ? n : UINT64_MAX;
}

/* Reserves what the request's put may hold from the upload memory budget, for the request's
 * life (released when it completes). */
static int reserve_memory(struct req *q)
{
    return reg_sessions_reserve(q->r->sessions, cmk_put_memory(q->r->s, body_length(q)), &q->mem);
}

/* Location, Range and session headers of an upload response. */
static void upload_headers(struct req *q, struct reply *rp, const char *id, uint64_t offset)
{
    char loc[REG_NAME_MAX + 80], range[48];

    snprintf(loc, sizeof(loc), "/v2/%s/blobs/uploads/%s", q->route.name, id);
    /* Inclusive end; an empty upload reports 0-0, as registries do. */
    snprintf(range, sizeof(range), "0-%llu", (unsigned long long)(offset > 0 ? offset - 1 : 0));
    reg_hdr(rp, MHD_HTTP_HEADER_LOCATION, loc);
    reg_hdr(rp, MHD_HTTP_HEADER_RANGE, range);
    reg_hdr(rp, "Docker-Upload-UUID", id);
    reg_hdr(rp, "Blob-Upload-Session-ID", id);
}

enum MHD_Result reg_blob_get(struct req *q)
{
    registry *r = q->r;
    json_t *rec = NULL;
    uint64_t size = 0, off = 0, len = 0;
    char crange[64];
    enum MHD_Result ret;
    cmk_err rc;

    if (!registry_digest_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    rc = rmeta_load(r->s, q->route.name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND)
        return reg_store_error(q, rc, NULL, "cannot read the repository");
    if (!rec || !rmeta_blob(rec, q->route.ref, &size)) {
        json_decref(rec);
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry",
                              reg_digest_detail(q->route.ref));
    }
    json_decref(rec);
    switch (http_parse_range(reg_header(q, MHD_HTTP_HEADER_RANGE), size, &off, &len)) {
    case HTTP_RANGE_OK:
        return reg_send_blob(q, q->route.ref, size, off, len, MHD_HTTP_PARTIAL_CONTENT,
                             "application/octet-stream");
    case HTTP_RANGE_BAD: {
        struct reply rp = reg_error_reply(
            q, "BLOB_UNKNOWN", "requested range not satisfiable",
            json_pack("{s:s, s:I}", "digest", q->route.ref, "size", (json_int_t)size));
        snprintf(crange, sizeof(crange), "bytes */%llu", (unsigned long long)size);
        reg_hdr(&rp, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
        ret = reg_send_reply(q, MHD_HTTP_RANGE_NOT_SATISFIABLE, &rp);
        return ret;
    }
    default:
        return reg_send_blob(q, q->route.ref, size, 0, size, MHD_HTTP_OK,
                             "application/octet-stream");
    }
}

/* Unlinks digest from the repository; the stored blob goes at the next collection. */
enum MHD_Result reg_blob_delete(struct req *q)
{
    cmk_errbuf eb = {0};
    struct reply rp;
    cmk_err rc;

    if (!registry_digest_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID", "invalid digest", NULL);
    rc = rpolicy_unlink_blob(q->r->s, q->route.name, q->route.ref, &eb);
    if (rc == CMK_E_NOT_FOUND)
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry",
                              reg_digest_detail(q->route.ref));
    if (rc != CMK_OK)
        return reg_store_error(q, rc, reg_ebmsg(&eb), "cannot delete the blob");
    rp = reg_reply_empty();
    reg_hdr(&rp, "Docker-Content-Digest", q->route.ref);
    return reg_send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

/* Answers 201 for blob digest, now linked into the repository. */
static enum MHD_Result send_created(struct req *q, const char *digest)
{
    char loc[REG_NAME_MAX + CMK_DIGEST_MAX + 16];
    struct reply rp = reg_reply_empty();

    snprintf(loc, sizeof(loc), "/v2/%s/blobs/%s", q->route.name, digest);
    reg_hdr(&rp, MHD_HTTP_HEADER_LOCATION, loc);
    reg_hdr(&rp, "Docker-Content-Digest", digest);
    return reg_send_reply(q, MHD_HTTP_CREATED, &rp);
}

/* Commits put (consumed) against expected and links the blob into the repository. */
static enum MHD_Result commit_and_link(struct req *q, cmk_put *put, const char *expected)
{
    char digest[CMK_DIGEST_MAX];
    cmk_errbuf eb = {0};
    enum MHD_Result ret;
    cmk_err rc;

    /* A body sent without a length is checked against the quotas here, before it is
     * published (it was only sealed into the store's temporary area). */
    if (reg_quota_check(q, expected, cmk_put_size(put), &ret)) {
        cmk_put_abort(put);
        return ret;
    }
    rc = rpolicy_commit_blob(q->r->s, q->route.name, put, expected, digest, &eb);
    if (rc == CMK_E_DIGEST)
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              "provided digest did not match uploaded content; nothing was stored",
                              reg_digest_detail(expected));
    if (rc != CMK_OK)
        return reg_store_error(q, rc, reg_ebmsg(&eb), "cannot store the blob");
    return send_created(q, digest);
}

/* 1 if a blob upload of `have` bytes so far plus `more` would pass --max-blob-size. */
int reg_blob_too_big(const registry *r, uint64_t have, uint64_t more)
{
    return r->max_blob && (more > r->max_blob || have > r->max_blob - more);
}

static enum MHD_Result send_blob_too_big(struct req *q)
{
    char msg[96];

    snprintf(msg, sizeof(msg), "blob larger than the limit of %llu bytes; nothing was stored",
             (unsigned long long)q->r->max_blob);
    q->up_destroy = 1;
    return reg_send_error(q, MHD_HTTP_CONTENT_TOO_LARGE, "SIZE_INVALID", msg, NULL);
}

/* POST ?mount=&from=: links a blob of another repository. Returns 1 if it answered. */
static int try_mount(struct req *q, enum MHD_Result *ret)
{
    const char *mount = reg_arg(q, "mount"), *from = reg_arg(q, "from");
    cmk_errbuf eb = {0};
    cmk_err rc;

    /* Anything not mountable falls back to a plain upload session, as the spec says. */
    if (!mount || !registry_digest_valid(mount) || (from && !registry_name_valid(from)))
        return 0;
    /* Under access control a mount needs pull on its source (and a source named): else the
     * blob is uploaded like any other, and whether the source has it is not revealed. */
    if (!q->mount_from_ok) {
        snprintf(q->note, sizeof(q->note), "mount not allowed: no pull on the source");
        return 0;
    }
    if (q->r->quota_repo) {
        cmk_blob_info bi;
        if (cmk_stat(q->r->s, mount, &bi) == CMK_OK && reg_quota_check(q, mount, bi.size, ret))
            return 1;
    }
    rc = rpolicy_mount(q->r->s, q->route.name, mount, from, &eb);
    if (rc == CMK_E_NOT_FOUND)
        return 0;
    if (rc != CMK_OK)
        *ret = reg_store_error(q, rc, reg_ebmsg(&eb), "cannot mount the blob");
    else
        *ret = send_created(q, mount);
    return 1;
}

enum MHD_Result reg_upload_start(struct req *q)
{
    registry *r = q->r;
    const char *digest = reg_arg(q, "digest");
    reg_session *u = NULL;
    enum MHD_Result ret;
    struct reply rp;
    cmk_err rc;

    if (reg_arg(q, "mount") && try_mount(q, &ret))
        return ret;
    if (digest) {
        /* Monolithic: the body is the blob; answered when it has all arrived. */
        if (!registry_digest_valid(digest))
            return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                                  "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
        if (body_length(q) != UINT64_MAX && reg_blob_too_big(r, 0, body_length(q)))
            return send_blob_too_big(q);
        if (reg_quota_check(q, digest, body_length(q) != UINT64_MAX ? body_length(q) : 0, &ret))
            return ret;
        if (!reserve_memory(q))
            return send_mem_spent(q);
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
        rc = cmk_put_begin(r->s, strncmp(digest, "sha512:", 7) == 0 ? "sha512" : "sha256", &q->put);
        if (rc != CMK_OK)
            return reg_store_error(q, rc, NULL, "cannot start the upload");
        q->body = BODY_PUT;
        return MHD_YES;
    }
    rc = reg_session_create(r->sessions, q->route.name, &u);
    if (rc == CMK_E_BUSY) {
        char msg[96];
        snprintf(msg, sizeof(msg), "too many upload sessions in progress (limit %u)",
                 r->max_uploads);
        rp = reg_error_reply(q, "TOOMANYREQUESTS", msg, NULL);
        reg_hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "10");
        return reg_send_reply(q, MHD_HTTP_TOO_MANY_REQUESTS, &rp);
    }
    if (rc != CMK_OK)
        return reg_store_error(q, rc, NULL, "cannot start the upload");
    rp = reg_reply_empty();
    upload_headers(q, &rp, u->id, 0);
    reg_session_release(r->sessions, u, 0);
    return reg_send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

enum MHD_Result reg_upload_status(struct req *q)
{
    uint64_t off = 0;
    struct reply rp;

    if (!reg_session_offset(q->r->sessions, q->route.ref, q->route.name, &off))
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                              "blob upload unknown to registry", NULL);
    rp = reg_reply_empty();
    upload_headers(q, &rp, q->route.ref, off);
    return reg_send_reply(q, MHD_HTTP_NO_CONTENT, &rp);
}

enum MHD_Result reg_upload_cancel(struct req *q)
{
    reg_session *u = NULL;
    cmk_err rc = reg_session_acquire(q->r->sessions, q->route.ref, q->route.name, &u);
    struct reply rp;

    if (rc == CMK_E_BUSY)
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "BLOB_UPLOAD_INVALID",
                              "the upload is in use by another request", NULL);
    if (rc != CMK_OK)
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                              "blob upload unknown to registry", NULL);
    reg_session_release(q->r->sessions, u, 1);
    rp = reg_reply_empty();
    return reg_send_reply(q, MHD_HTTP_NO_CONTENT, &rp);
}

/* 416 with the session's current state, as the spec asks for a refused chunk. */
static enum MHD_Result chunk_refused(struct req *q, const char *msg)
{
    struct reply rp = reg_error_reply(q, "BLOB_UPLOAD_INVALID", msg, NULL);

    upload_headers(q, &rp, q->up->id, q->up->offset);
    return reg_send_reply(q, MHD_HTTP_RANGE_NOT_SATISFIABLE, &rp);
}

/* PATCH and PUT on a session: checks, then the body streams into the session's put. */
enum MHD_Result reg_upload_continue(struct req *q, int final)
{
    registry *r = q->r;
    const char *crange = reg_header(q, MHD_HTTP_HEADER_CONTENT_RANGE);
    const char *clen = reg_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *digest = final ? reg_arg(q, "digest") : NULL;
    uint64_t n;
    cmk_err rc;

    if (final && (!digest || !registry_digest_valid(digest)))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              digest ? "invalid digest (sha256:<64 hex> or sha512:<128 hex>)"
                                     : "the digest parameter is required to complete an upload",
                              NULL);
    if (!reserve_memory(q))
        return send_mem_spent(q);
    rc = reg_session_acquire(r->sessions, q->route.ref, q->route.name, &q->up);
    if (rc == CMK_E_BUSY)
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "BLOB_UPLOAD_INVALID",
                              "the upload is in use by another request", NULL);
    if (rc == CMK_E_KEY_UNREACHABLE) {
        cmk_encryption_info ei;
        if (cmk_store_encryption(r->s, &ei) == CMK_OK && !ei.key_accessible &&
            cmk_err_is_key_access(ei.key_error))
            rc = ei.key_error;
        return reg_store_error(q, rc, "the session was dropped when the store lost key access",
                               "the upload cannot go on");
    }
    if (rc != CMK_OK)
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "BLOB_UPLOAD_UNKNOWN",
                              "blob upload unknown to registry", NULL);
    /* A saved session (at the last shutdown, or while idle) gets a put for what follows; a
     * PUT one with the whole upload, its saved parts read back into it. */
    {
        int lost = 0;
        rc = reg_session_resume(r->sessions, q->up, final, &lost);
        if (rc != CMK_OK) {
            q->up_destroy = lost;
            return reg_store_error(q, rc, NULL, "cannot resume the upload");
        }
    }
    if (crange) {
        if (http_parse_content_range(crange, &q->cr_start, &q->cr_end) != 0)
            return chunk_refused(q, "invalid Content-Range (expected <start>-<end>)");
        if (q->cr_start != q->up->offset)
            return chunk_refused(q, "chunk out of order: it must start where the upload ends");
        if (clen && (http_parse_u64(clen, UINT64_MAX, &n) != 0 || n != q->cr_end - q->cr_start + 1))
            return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "SIZE_INVALID",
                                  "Content-Length does not match Content-Range", NULL);
        q->has_crange = 1;
    }
    if (clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 && reg_blob_too_big(r, q->up->offset, n))
        return send_blob_too_big(q);
    /* Quotas before the body is read: the bytes of the session so far plus this request's. */
    if (clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 && n <= UINT64_MAX - q->up->offset) {
        enum MHD_Result qret;
        if (reg_quota_check(q, final ? digest : NULL, q->up->offset + n, &qret))
            return qret;
    }
    /* A session begun before the store lost key access is over: its put has failed and its
     * key is wiped. Answered before any of the body is read. */
    rc = cmk_put_write(q->up->put, "", 0);
    if (rc != CMK_OK) {
        q->up_destroy = 1;
        return reg_store_error(q, rc, NULL, "the upload cannot go on");
    }
    if (final)
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
    q->put = q->up->put;
    q->body = BODY_PUT;
    return MHD_YES;
}

enum MHD_Result reg_blob_finish(struct req *q)
{
    cmk_put *put;
    struct reply rp;
    cmk_err rc;

    if (q->body_failed && q->too_big)
        return send_blob_too_big(q);
    if (q->body_failed) {
        q->up_destroy = 1; /* the put has failed: the session cannot go on */
        return reg_store_error(q, q->body_rc, q->body_msg, "cannot store the upload");
    }
    if (q->has_crange && q->received != q->cr_end - q->cr_start + 1) {
        q->up_destroy = 1;
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "SIZE_INVALID",
                              "the body length does not match Content-Range", NULL);
    }
    if (!q->up) { /* POST ?digest= */
        put = q->put;
        q->put = NULL;
        return commit_and_link(q, put, q->digest);
    }
    reg_session_advance(q->r->sessions, q->up, q->received);
    if (strcmp(q->method, "PUT") == 0) {
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
        return reg_store_error(q, rc, NULL, "cannot store the upload");
    }
    rp = reg_reply_empty();
    upload_headers(q, &rp, q->up->id, q->up->offset);
    return reg_send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}
