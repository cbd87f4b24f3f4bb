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
 * other's keyring or settings, so the store is refused there. The create-if-absent is tried
 * first: the probe object is there from earlier opens, so it must fail at once; only if it
 * succeeds (the object was missing, or the condition is ignored) is it tried again, and must
 * fail then. Two requests at most opens (no object written), three at the first. */
static cmk_err probe(cmk_s3_bk *s, cmk_errbuf *eb)
{
    static const char body[] = "cmkstore conditional-write probe\n";
    cmk_s3_req r1 = {.method = "PUT",
                     .key = "probe",
                     .body = body,
                     .body_len = sizeof(body) - 1,
                     .if_none_match = 1};
    cmk_s3_req r2 = r1;
    cmk_s3_req r3 = {.method = "PUT",
                     .key = "probe",
                     .body = body,
                     .body_len = sizeof(body) - 1,
                     .if_match = "00000000000000000000000000000000"};
    cmk_errbuf ignore = {0};
    cmk_err rc = CMK_OK, rc2 = cmk_s3_http_do(s->http, &r1, &ignore), rc3 = CMK_OK;

    if (rc2 == CMK_OK)
        rc2 = cmk_s3_http_do(s->http, &r2, &ignore); /* created now: it must exist for this one */
    if (rc2 != CMK_OK && rc2 != CMK_E_BUSY) {
        *eb = ignore; /* unreachable, or not allowed: its message says which */
        rc = rc2;
    } else
        rc3 = cmk_s3_http_do(s->http, &r3, &ignore);
    if (rc == CMK_OK && rc3 == CMK_E_IO)
        rc = cmk_errbuf_set(eb, CMK_E_IO, "%s", ignore.msg);
    else if (rc == CMK_OK && (rc2 != CMK_E_BUSY || rc3 != CMK_E_BUSY))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "the object store at %s does not honour conditional writes "
                            "(%s accepted): several writers would overwrite each other's "
                            "records, so %s is not used there",
                            cmk_s3_http_conf(s->http)->endpoint,
                            rc2 != CMK_E_BUSY ? "If-None-Match: *" : "If-Match", s->name);
    cmk_s3_req_done(&r1);
    cmk_s3_req_done(&r2);
    cmk_s3_req_done(&r3);
    return rc;
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
        rc = cmk_s3_orphan_grace(&grace, eb);
    if (rc == CMK_OK && probe_writes)
        rc = probe(s, eb);
    if (rc != CMK_OK) {
        cmk_bk_close(&s->base);
        return rc;
    }
    if (probe_writes)
        (void)cmk_s3_sweep_uploads(s, (int64_t)time(NULL) - grace, 0);
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
        rc = cmk_s3_put(s, &r, eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_E_BUSY)
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
