/* registry_reply.c — the registry's responses: JSON bodies, the spec's error bodies, store
 * failures mapped to status codes, blobs streamed out of the store (registry_internal.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/registry_internal.h"

#define STREAM_BLOCK (256u << 10)

struct stream {
    cmk_get *g;
    struct req *q;
    uint64_t remaining;
};

void reg_hdr(struct reply *rp, const char *k, const char *v)
{
    if (rp->resp && MHD_add_response_header(rp->resp, k, v) != MHD_YES)
        rp->failed = 1;
}

struct reply reg_reply_empty(void)
{
    struct reply rp = {MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT), 0};

    return rp;
}

/* Serialises j (released) into a response with the given content type. */
struct reply reg_reply_json(struct req *q, json_t *j, const char *ctype)
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
    reg_hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return rp;
}

enum MHD_Result reg_send_reply(struct req *q, unsigned status, struct reply *rp)
{
    enum MHD_Result ret;

    if (!rp->resp)
        return MHD_NO;
    reg_hdr(rp, "Docker-Distribution-API-Version", "registry/2.0");
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
        reg_session_release(q->r->sessions, q->up, q->up_destroy);
        q->up = NULL;
    }
    ret = MHD_queue_response(q->c, status, rp->resp);
    MHD_destroy_response(rp->resp);
    return ret;
}

json_t *reg_error_entry(const char *code, const char *msg, json_t *detail)
{
    return json_pack("{s:s, s:s, s:o}", "code", code, "message", msg, "detail",
                     detail ? detail : json_object());
}

/* detail (stolen; NULL: a new object) with the request id, which the server log repeats. */
json_t *reg_with_rid(struct req *q, json_t *detail)
{
    if (!detail)
        detail = json_object();
    if (json_is_object(detail))
        json_object_set_new(detail, "request_id", json_string(q->rid));
    return detail;
}

/* The spec's error body: {"errors": [{"code", "message", "detail"}]}. detail is stolen; it
 * gets the request id. */
struct reply reg_error_reply(struct req *q, const char *code, const char *msg, json_t *detail)
{
    return reg_reply_json(
        q, json_pack("{s:[o]}", "errors", reg_error_entry(code, msg, reg_with_rid(q, detail))),
        "application/json");
}

enum MHD_Result reg_send_error(struct req *q, unsigned status, const char *code, const char *msg,
                               json_t *detail)
{
    struct reply rp = reg_error_reply(q, code, msg, detail);

    return reg_send_reply(q, status, &rp);
}

json_t *reg_digest_detail(const char *d)
{
    return json_pack("{s:s}", "digest", d);
}

/* Maps a store failure (rc, with the thread's cmk_errmsg) to a response. The store's message
 * names files, the home, the identity's principal id, the vault and key: it goes to the server
 * log only (always, --quiet or not), under the request id, and the body says what failed in
 * general terms (the error's name and text) with that id. Key access lost is 503: a registry
 * client retries 503s, and service resumes by itself once access is restored. A full file
 * system is 507 Insufficient Storage: the operator's problem, and nothing was stored. */
enum MHD_Result reg_store_error(struct req *q, cmk_err rc, const char *msg_in, const char *what)
{
    char msg[512], logged[1100], t[32];
    const char *detail = msg_in ? msg_in : cmk_errmsg();
    struct reply rp;
    unsigned status;
    const char *code;

    if (cmk_err_is_key_access(rc)) {
        /* Fail closed: no decrypted byte outlives the key's withdrawal in the cache. */
        blob_cache_flush(q->r->cache);
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
    rp = reg_error_reply(q, code, msg, json_pack("{s:s}", "error", cmk_errname(rc)));
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        reg_hdr(&rp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    return reg_send_reply(q, status, &rp);
}

const char *reg_arg(struct req *q, const char *key)
{
    return MHD_lookup_connection_value(q->c, MHD_GET_ARGUMENT_KIND, key);
}

const char *reg_header(struct req *q, const char *key)
{
    return MHD_lookup_connection_value(q->c, MHD_HEADER_KIND, key);
}

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

/* A cache hit sent through the server's buffer (REG_CACHE_SEND_COPY). */
struct cached {
    int fd;
    uint64_t off;
};

static ssize_t cached_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct cached *c = cls;
    ssize_t n;

    do
        n = pread(c->fd, buf, max, (off_t)(c->off + pos));
    while (n < 0 && errno == EINTR);
    return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void cached_free(void *cls)
{
    struct cached *c = cls;

    close(c->fd);
    free(c);
}

/* A response of len bytes of the cache's memory file cfd from off (its descriptor is the
 * response's, closed with it), sent as r->cache_send says for this client. NULL on ENOMEM
 * (cfd closed). */
static struct MHD_Response *cached_response(struct req *q, int cfd, uint64_t off, uint64_t len)
{
    int mode = q->r->cache_send;
    struct MHD_Response *resp = NULL;
    struct cached *c;

    if (mode == REG_CACHE_SEND_AUTO)
        mode = q->loopback ? REG_CACHE_SEND_COPY : REG_CACHE_SEND_SENDFILE;
    if (mode == REG_CACHE_SEND_SENDFILE) {
        resp = MHD_create_response_from_fd_at_offset64(len, cfd, off);
        if (!resp)
            close(cfd);
        return resp;
    }
    if (!(c = malloc(sizeof(*c)))) {
        close(cfd);
        return NULL;
    }
    *c = (struct cached){cfd, off};
    resp = MHD_create_response_from_callback(len, STREAM_BLOCK, cached_read, c, cached_free);
    if (!resp)
        cached_free(c);
    return resp;
}

#define FILL_BLOCK (1u << 20)

/* A whole read of a blob the cache may hold: it is decrypted into the cache before the
 * response starts, at the store's speed and not at this client's, while other requests for
 * it wait for the entry (blob_cache_get_wait) instead of each decrypting it again. Returns
 * the entry's descriptor; or -1 with *rc set (a read error: nothing was sent yet, so the
 * client gets a proper error); or -1 with *rc CMK_OK when the blob is not cached after all
 * (no room, no memory, evicted at once), with *gp reopened to stream it from the store. */
static int fill_ahead(struct req *q, cmk_get **gp, const char *digest, uint64_t size, cmk_err *rc)
{
    blob_cache_fill *f = blob_cache_fill_begin(q->r->cache, digest, size);
    uint64_t left = size;
    char *buf = NULL;
    int ok = 0, fd = -1;

    *rc = CMK_OK;
    if (!f) /* another request began filling it since ours missed: wait for that one */
        return blob_cache_get_wait(q->r->cache, digest, size);
    if (!(buf = malloc(FILL_BLOCK)))
        goto out;
    while (left > 0) {
        size_t n = 0;
        *rc = cmk_get_read(*gp, buf, left < FILL_BLOCK ? (size_t)left : FILL_BLOCK, &n);
        if (*rc == CMK_OK && n == 0)
            *rc = CMK_E_CORRUPT; /* shorter than its header says */
        if (*rc != CMK_OK)
            goto out;
        if (blob_cache_fill_add(f, buf, n) != 0)
            break; /* the memory file is full: stream instead */
        left -= n;
    }
    ok = left == 0;
out:
    free(buf);
    blob_cache_fill_end(f, ok);
    if (*rc != CMK_OK)
        return -1;
    if (ok)
        fd = blob_cache_get(q->r->cache, digest, size);
    if (fd < 0) {
        /* Consumed: begin again for the stream (the key gate is asked again, too). */
        cmk_get_close(*gp);
        *gp = NULL;
        *rc = cmk_get_open(q->r->s, digest, 0, size, gp);
    }
    return fd;
}

/* Answers with bytes [off, off+len) of blob digest (status 200 or 206). */
enum MHD_Result reg_send_blob(struct req *q, const char *digest, uint64_t size, uint64_t off,
                              uint64_t len, unsigned status, const char *ctype)
{
    struct stream *st = NULL;
    struct reply rp = {NULL, 0};
    int cfd = -1; /* a cache hit: its memory file (blob_cache.h) */
    cmk_get *g = NULL;
    char crange[96], etag[CMK_DIGEST_MAX + 2];
    cmk_err rc;

    /* The store is asked first even when the cache holds the blob: the key gate, the blob's
     * presence and its size decide, exactly as for a read from disk (blob_cache.h). */
    if (len > 0)
        cfd = blob_cache_get_wait(q->r->cache, digest, size);
    rc = cmk_get_open(q->r->s, digest, cfd >= 0 ? 0 : off, cfd >= 0 ? 0 : len, &g);
    if (rc != CMK_OK) {
        if (cfd >= 0)
            close(cfd);
        return reg_store_error(q, rc, NULL, "cannot read the blob");
    }
    if (cmk_get_info(g)->size != size) {
        if (cfd >= 0)
            close(cfd);
        cmk_get_close(g);
        return reg_send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN",
                              "stored blob size differs from the repository's record",
                              reg_digest_detail(digest));
    }
    if (cfd < 0 && len > 0 && off == 0 && len == size) {
        cfd = fill_ahead(q, &g, digest, size, &rc);
        if (rc != CMK_OK) {
            cmk_get_close(g);
            return reg_store_error(q, rc, NULL, "cannot read the blob");
        }
    }
    if (cfd >= 0) {
        /* Sent from the cached memory file (cached_response); MHD closes the descriptor. */
        cmk_get_close(g);
        rp.resp = cached_response(q, cfd, off, len);
        if (!rp.resp)
            return MHD_NO;
        q->out += len;
    } else if (len == 0) {
        cmk_get_close(g);
        rp = reg_reply_empty();
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
    reg_hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    reg_hdr(&rp, "Docker-Content-Digest", digest);
    reg_hdr(&rp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    snprintf(etag, sizeof(etag), "\"%s\"", digest);
    reg_hdr(&rp, MHD_HTTP_HEADER_ETAG, etag);
    if (status == MHD_HTTP_PARTIAL_CONTENT) {
        snprintf(crange, sizeof(crange), "bytes %llu-%llu/%llu", (unsigned long long)off,
                 (unsigned long long)(off + len - 1), (unsigned long long)size);
        reg_hdr(&rp, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
    }
    return reg_send_reply(q, status, &rp);
}
