/*
 * s3_rec.c — the S3 backend's records, event log and listing, and its ops table.
 *
 * A record is one object; its version is its ETag. A conditional put is a PUT with
 * If-Match: <ETag> (RGW wants it unquoted, and answers 412 for a missing object, as
 * expected here) or If-None-Match: * (create only if absent); a 412 is CMK_E_BUSY. A PUT
 * retried after a lost answer (or a 500, which RGW 16 answers to one of two racing
 * conditional PUTs) may meet its own first attempt's write (412): every put carries a
 * random writer nonce (x-amz-meta-cmk-writer), read back to tell. Comparing the bytes would
 * not do: another writer may have written the same bytes from the same version (two
 * increments of a counter), and taking its write for ours loses an update. ETags are
 * content hashes, so a version reappears only with the same bytes, which is what the
 * writer read.
 *
 * Deletes: S3 has no conditional DELETE that RGW honours (comparing the ETag just before an
 * unconditional DELETE loses a write landing in between), so a delete with an expected
 * version is a conditional write of an empty object, a tombstone: PUT "" with If-Match.
 * Records are never empty (the backend contract), so an empty object reads as absent, is
 * skipped by listings, and a create (If-None-Match: *) that meets one writes over it with
 * If-Match on the tombstone's ETag: still one compare-and-swap. A delete of whatever is
 * there (no version) is a plain DELETE, so records of one-off names (upload sessions) leave
 * nothing behind; a tombstone stays until its name is written again (0 bytes each).
 *
 * The event log: one object per line, events/<UTC time, ns>-<8 hex>, created only if
 * absent, so concurrent writers never overwrite each other and a listing sorts by time.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend/s3_internal.h"
#include "core/backend/s3_xml.h"

void cmk_s3_note_written(cmk_s3_bk *s, const char *key)
{
    if (!s->staged)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->nwritten < S3_STAGED_MAX)
        snprintf(s->written[s->nwritten++], sizeof(s->written[0]), "%s", key);
    pthread_mutex_unlock(&s->mu);
}

static cmk_err s3_rec_get(cmk_backend *b, const char *name, size_t max, void **data, size_t *len,
                          cmk_rec_ver *ver, cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    cmk_s3_req r = {.method = data ? "GET" : "HEAD", .key = name, .max = max + 1};
    cmk_err rc;

    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (ver)
        ver->tag[0] = '\0';
    if (s->staged && strcmp(name, "store.json") == 0 && s->held_cfg) {
        if (data) {
            *data = malloc(s->held_len + 1);
            if (!*data)
                return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
            memcpy(*data, s->held_cfg, s->held_len);
            ((char *)*data)[s->held_len] = '\0';
        }
        if (len)
            *len = s->held_len;
        if (ver)
            snprintf(ver->tag, sizeof(ver->tag), "staged");
        return CMK_OK;
    }
    rc = cmk_s3_http_do(s->http, &r, eb);
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "%s/%s does not exist", s->name, name);
    else if (rc == CMK_E_CORRUPT)
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s/%s holds more than %zu bytes", s->name, name,
                            max);
    if (rc == CMK_OK && r.resp_len > max)
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s/%s holds more than %zu bytes", s->name, name,
                            max);
    if (rc == CMK_OK && !r.etag[0])
        rc = cmk_errbuf_set(eb, CMK_E_IO, "%s/%s: the object store sent no ETag", s->name, name);
    if (rc == CMK_OK && (data ? r.resp_len : r.total) == 0)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "%s/%s does not exist (deleted)", s->name, name);
    if (rc == CMK_OK) {
        if (ver)
            snprintf(ver->tag, sizeof(ver->tag), "%s", r.etag);
        if (len)
            *len = data ? r.resp_len : (size_t)r.total;
        if (data) {
            if (!r.resp) {
                r.resp = malloc(1);
                if (!r.resp)
                    rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
                else
                    r.resp[0] = '\0';
            }
            if (rc == CMK_OK) {
                *data = r.resp;
                r.resp = NULL;
            }
        }
    }
    cmk_s3_req_done(&r);
    return rc;
}

cmk_err cmk_s3_nonce(char out[33], cmk_errbuf *eb)
{
    unsigned char rnd[16];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "no random bytes for a write nonce");
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", rnd[i]);
    return CMK_OK;
}

/* Whether object key was last written with writer nonce `nonce` (then etag receives its
 * ETag). */
static int written_by(cmk_s3_bk *s, const char *key, const char *nonce, char *etag, size_t cap)
{
    cmk_s3_req r = {.method = "HEAD", .key = key};
    cmk_errbuf eb = {0};
    int mine = cmk_s3_http_do(s->http, &r, &eb) == CMK_OK && strcmp(r.writer_got, nonce) == 0;

    if (mine)
        snprintf(etag, cap, "%s", r.etag);
    cmk_s3_req_done(&r);
    return mine;
}

cmk_err cmk_s3_put(cmk_s3_bk *s, cmk_s3_req *r, cmk_errbuf *eb)
{
    cmk_err rc = cmk_s3_http_do(s->http, r, eb);

    if (rc == CMK_E_BUSY && r->tries > 1 &&
        written_by(s, r->key, r->writer, r->etag, sizeof(r->etag)))
        rc = CMK_OK;
    return rc;
}

static cmk_err busy(const cmk_s3_bk *s, const char *name, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_BUSY, "%s/%s was changed by another process; retry", s->name,
                          name);
}

/* 1 if key is a tombstone (an empty object), its ETag in etag. */
static int tombstone_etag(cmk_s3_bk *s, const char *key, char *etag, size_t cap)
{
    cmk_s3_req r = {.method = "HEAD", .key = key};
    cmk_errbuf eb = {0};
    int tomb = cmk_s3_http_do(s->http, &r, &eb) == CMK_OK && r.total == 0 && r.etag[0];

    if (tomb)
        snprintf(etag, cap, "%s", r.etag);
    cmk_s3_req_done(&r);
    return tomb;
}

static cmk_err s3_rec_put(cmk_backend *b, const char *name, const void *data, size_t len,
                          const cmk_rec_ver *expect, cmk_rec_ver *newver, cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    char nonce[33];
    cmk_s3_req r = {.method = "PUT", .key = name, .body = data, .body_len = len, .writer = nonce};
    int any = expect && strcmp(expect->tag, CMK_REC_ANY) == 0;
    cmk_rec_ver want;
    char tomb[128];
    cmk_err rc = cmk_s3_nonce(nonce, eb);

    /* expect and newver may be one and the same (store.c writes its config over the version
     * it holds and keeps the new one there): the version to match is copied before newver
     * is cleared. */
    if (expect) {
        want = *expect;
        expect = &want;
    }
    if (newver)
        newver->tag[0] = '\0';
    if (s->staged && strcmp(name, "store.json") == 0) {
        /* The new store exists once store.json does: it is written at publish. */
        void *copy = malloc(len ? len : 1);
        if (!copy)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        memcpy(copy, data, len);
        free(s->held_cfg);
        s->held_cfg = copy;
        s->held_len = len;
        if (newver)
            snprintf(newver->tag, sizeof(newver->tag), "staged");
        return CMK_OK;
    }
    if (rc != CMK_OK)
        return rc;
    if (!expect || s->staged)
        r.if_none_match = 1;
    else if (!any)
        r.if_match = expect->tag;
    rc = cmk_s3_put(s, &r, eb);
    /* Created only if absent, and something is there: a tombstone is absent, written over on
     * its own ETag (a 412 then means another writer got there first). */
    if (rc == CMK_E_BUSY && r.if_none_match && !s->staged &&
        tombstone_etag(s, name, tomb, sizeof(tomb))) {
        cmk_s3_req_done(&r);
        r.if_none_match = 0;
        r.if_match = tomb;
        rc = cmk_s3_put(s, &r, eb);
    }
    if (rc == CMK_E_BUSY)
        rc = busy(s, name, eb);
    if (rc == CMK_OK) {
        cmk_s3_note_written(s, name);
        if (newver)
            snprintf(newver->tag, sizeof(newver->tag), "%s", r.etag);
    }
    cmk_s3_req_done(&r);
    return rc;
}

static cmk_err s3_rec_delete(cmk_backend *b, const char *name, const cmk_rec_ver *expect,
                             cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    cmk_rec_ver cur;
    cmk_s3_req r = {.method = "DELETE", .key = name};
    char nonce[33];
    cmk_err rc;

    if (!expect || strcmp(expect->tag, CMK_REC_ANY) == 0) {
        rc = s3_rec_get(b, name, 0, NULL, NULL, &cur, eb);
        if (rc == CMK_OK)
            rc = cmk_s3_http_do(s->http, &r, eb);
        cmk_s3_req_done(&r);
        return rc;
    }
    /* Only if it is still that version: a tombstone written over it with If-Match (see the
     * top), the condition checked by the object store itself. */
    if ((rc = cmk_s3_nonce(nonce, eb)) != CMK_OK)
        return rc;
    r = (cmk_s3_req){.method = "PUT",
                     .key = name,
                     .body = "",
                     .body_len = 0,
                     .writer = nonce,
                     .if_match = expect->tag};
    rc = cmk_s3_put(s, &r, eb);
    cmk_s3_req_done(&r);
    if (rc != CMK_E_BUSY)
        return rc;
    /* 412: another version is there, or none (RGW answers If-Match on a missing key so). */
    cmk_errbuf_clear(eb);
    rc = s3_rec_get(b, name, 0, NULL, NULL, &cur, eb);
    return rc != CMK_OK ? rc : busy(s, name, eb);
}

struct list_ctx {
    cmk_s3_bk *s;
    int (*cb)(const char *key, uint64_t size, void *arg);
    int (*cbm)(const char *key, uint64_t size, int64_t mtime, void *arg); /* or this */
    void *arg;
    size_t plen;
};

static int list_one(const cmk_s3_obj *o, void *arg)
{
    struct list_ctx *c = arg;

    if (strncmp(o->key, c->s->http ? cmk_s3_http_conf(c->s->http)->prefix : "", c->plen) != 0)
        return 0;
    if (c->cbm)
        return c->cbm(o->key + c->plen, o->size, o->mtime, c->arg);
    return c->cb(o->key + c->plen, o->size, c->arg);
}

static cmk_err list_impl(cmk_s3_bk *s, const char *pfx, const char *after, struct list_ctx *c,
                         cmk_errbuf *eb);

cmk_err cmk_s3_list(cmk_s3_bk *s, const char *pfx, const char *after,
                    int (*cb)(const char *key, uint64_t size, void *arg), void *arg, cmk_errbuf *eb)
{
    struct list_ctx c = {s, cb, NULL, arg, strlen(cmk_s3_http_conf(s->http)->prefix)};

    return list_impl(s, pfx, after, &c, eb);
}

cmk_err cmk_s3_list_mtime(cmk_s3_bk *s, const char *pfx,
                          int (*cb)(const char *key, uint64_t size, int64_t mtime, void *arg),
                          void *arg, cmk_errbuf *eb)
{
    struct list_ctx c = {s, NULL, cb, arg, strlen(cmk_s3_http_conf(s->http)->prefix)};

    return list_impl(s, pfx, NULL, &c, eb);
}

static cmk_err list_impl(cmk_s3_bk *s, const char *pfx, const char *after, struct list_ctx *c,
                         cmk_errbuf *eb)
{
    const cmk_s3_conf *cf = cmk_s3_http_conf(s->http);
    char full[CMK_S3_KEY_MAX_ENC], epfx[3 * CMK_S3_KEY_MAX_ENC], tok[2048], etok[6200],
        query[12400], start_q[3400] = "";
    int truncated = 1, stopped = 0;
    cmk_err rc = CMK_OK;

    tok[0] = '\0';
    snprintf(full, sizeof(full), "%s%s", cf->prefix, pfx);
    if (cmk_s3_query_escape(full, epfx, sizeof(epfx)) < 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "listing prefix too long");
    if (after && *after) {
        char full_after[CMK_S3_KEY_MAX_ENC], eafter[3 * CMK_S3_KEY_MAX_ENC];
        if ((size_t)snprintf(full_after, sizeof(full_after), "%s%s", cf->prefix, after) >=
                sizeof(full_after) ||
            cmk_s3_query_escape(full_after, eafter, sizeof(eafter)) < 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL, "listing start too long");
        /* start-after goes with the first page only: the token carries on from there. */
        snprintf(start_q, sizeof(start_q), "&start-after=%s", eafter);
    }
    while (rc == CMK_OK && truncated && !stopped) {
        cmk_s3_req r = {.method = "GET", .key = NULL, .max = 16u << 20};

        if (tok[0]) {
            if (cmk_s3_query_escape(tok, etok, sizeof(etok)) < 0) {
                rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "listing token too long");
                break;
            }
            snprintf(query, sizeof(query), "continuation-token=%s&list-type=2&prefix=%s", etok,
                     epfx);
        } else {
            snprintf(query, sizeof(query), "list-type=2&prefix=%s%s", epfx, start_q);
        }
        r.query = query;
        rc = cmk_s3_http_do(s->http, &r, eb);
        if (rc == CMK_OK)
            rc = cmk_s3_xml_list(r.resp ? r.resp : "", r.resp_len, list_one, c, &truncated, tok,
                                 sizeof(tok), &stopped, eb);
        cmk_s3_req_done(&r);
    }
    return rc;
}

struct rec_list_ctx {
    int (*cb)(const char *name, void *arg);
    void *arg;
};

static int rec_list_one(const char *key, uint64_t size, void *arg)
{
    struct rec_list_ctx *c = arg;
    cmk_errbuf eb = {0};

    /* Only names the engine could have written (anything else in the bucket is not ours),
     * and no tombstones (deleted records). */
    if (size == 0 || cmk_bk_rec_name_check(key, &eb) != CMK_OK)
        return 0;
    return c->cb(key, c->arg);
}

static cmk_err s3_rec_list(cmk_backend *b, const char *prefix,
                           int (*cb)(const char *name, void *arg), void *arg, cmk_errbuf *eb)
{
    struct rec_list_ctx c = {cb, arg};

    return cmk_s3_list(cmk_s3_of(b), prefix, NULL, rec_list_one, &c, eb);
}

static cmk_err s3_log_append(cmk_backend *b, const char *log, const char *line, size_t len,
                             cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    char key[128], base[64];
    unsigned char rnd[4];
    struct timespec ts;
    struct tm tm;
    cmk_err rc = CMK_OK;

    if (strcmp(log, "events.log") != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "unknown log '%s'", log);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof(base), "%Y%m%dT%H%M%S", &tm);
    for (int attempt = 0; attempt < 4; attempt++) {
        cmk_s3_req r = {
            .method = "PUT", .key = key, .body = line, .body_len = len, .if_none_match = 1};

        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return cmk_errbuf_set(eb, CMK_E_CRYPTO, "no random bytes for an event name");
        snprintf(key, sizeof(key), "events/%s.%09ldZ-%02x%02x%02x%02x", base, (long)ts.tv_nsec,
                 rnd[0], rnd[1], rnd[2], rnd[3]);
        rc = cmk_s3_http_do(s->http, &r, eb);
        cmk_s3_req_done(&r);
        if (rc == CMK_E_BUSY && r.tries > 1)
            rc = CMK_OK; /* our own first attempt landed */
        if (rc != CMK_E_BUSY)
            break;
    }
    if (rc == CMK_OK)
        cmk_s3_note_written(s, key);
    return rc;
}

struct log_read_ctx {
    cmk_s3_bk *s;
    char *cursor;
    size_t cap;
    int (*cb)(const char *line, size_t len, void *arg);
    void *arg;
    cmk_err rc;
    cmk_errbuf *eb;
};

/* One event object: its line(s) to cb, then the cursor moves past it. */
static int log_read_one(const char *key, uint64_t size, void *arg)
{
    struct log_read_ctx *c = arg;
    cmk_s3_req r = {.method = "GET", .key = key, .max = 1u << 20};
    size_t start = 0;
    int stop = 0;

    (void)size;
    c->rc = cmk_s3_http_do(c->s->http, &r, c->eb);
    if (c->rc == CMK_E_NOT_FOUND) {
        c->rc = CMK_OK; /* deleted since the listing */
        cmk_s3_req_done(&r);
        return 0;
    }
    if (c->rc != CMK_OK) {
        cmk_s3_req_done(&r);
        return 1;
    }
    for (size_t i = 0; r.resp && i <= r.resp_len && !stop; i++) {
        if (i < r.resp_len && r.resp[i] != '\n')
            continue;
        if (i > start)
            stop = c->cb(r.resp + start, i - start, c->arg);
        start = i + 1;
    }
    cmk_s3_req_done(&r);
    snprintf(c->cursor, c->cap, "%s", key);
    return stop;
}

/* Events in name order (time order, as far as the writers' clocks agree) after the cursor,
 * the key of the last one delivered. */
static cmk_err s3_log_read(cmk_backend *b, const char *log, char *cursor, size_t cap,
                           int (*cb)(const char *line, size_t len, void *arg), void *arg,
                           cmk_errbuf *eb)
{
    cmk_s3_bk *s = cmk_s3_of(b);
    struct log_read_ctx c = {s, cursor, cap, cb, arg, CMK_OK, eb};
    cmk_err rc;

    if (strcmp(log, "events.log") != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "unknown log '%s'", log);
    if (cursor[0] && strncmp(cursor, "events/", 7) != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad log cursor");
    rc = cmk_s3_list(s, "events/", cursor, log_read_one, &c, eb);
    return rc != CMK_OK ? rc : c.rc;
}

static void s3_close(cmk_backend *b)
{
    cmk_s3_bk *s = cmk_s3_of(b);

    if (s->staged) {
        /* An unpublished new store: remove what it wrote. */
        for (int i = 0; i < s->nwritten; i++) {
            cmk_s3_req r = {.method = "DELETE", .key = s->written[i]};
            cmk_errbuf eb = {0};
            if (cmk_s3_http_do(s->http, &r, &eb) != CMK_OK) {
                /* Left behind: a later create at this name reports the prefix in use. */
            }
            cmk_s3_req_done(&r);
        }
    }
    cmk_s3_http_free(s->http);
    free(s->held_cfg);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const cmk_backend_ops cmk_s3_ops = {
    .size = sizeof(cmk_backend_ops),
    .name = "s3",
    .caps = 0, /* no lock: the records' ETags serve */
    .close = s3_close,
    .blobs_open = cmk_s3_blobs_open_op,
    .rec_get = s3_rec_get,
    .rec_put = s3_rec_put,
    .rec_delete = s3_rec_delete,
    .rec_list = s3_rec_list,
    .log_append = s3_log_append,
    .log_read = s3_log_read,
    .sweep = cmk_s3_sweep_op,
};
