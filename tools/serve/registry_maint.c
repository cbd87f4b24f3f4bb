/*
 * registry_maint.c — the registry's maintenance side: read-only mode, quotas, the periodic
 * garbage collection thread (--gc-interval) and their metrics.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_internal.h"
#include "tools/serve/registry_meta.h"

/* ---- read-only ---- */

int reg_read_only_refuse(struct req *q, enum MHD_Result *ret)
{
    const char *m = q->method;

    if (!q->r->read_only || strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ||
        strcmp(m, "OPTIONS") == 0)
        return 0;
    /* As distribution's read-only maintenance mode: 405 UNSUPPORTED. */
    *ret = reg_send_error(q, MHD_HTTP_METHOD_NOT_ALLOWED, "UNSUPPORTED",
                          "the registry is in read-only mode (maintenance): pushes and deletes "
                          "are refused",
                          NULL);
    return 1;
}

/* ---- quotas ---- */

int reg_quota_check(struct req *q, const char *digest, uint64_t more, enum MHD_Result *ret)
{
    registry *r = q->r;
    uint64_t repo_bytes = 0, total = 0, blobs = 0, have = 0;
    json_t *rec = NULL;
    char msg[400];
    cmk_blob_info bi;
    int in_repo = 0, in_store = 0;
    cmk_err rc;

    if (!r->quota_repo && !r->quota_total)
        return 0;
    rc = rmeta_load(r->s, q->route.name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND) {
        *ret = reg_store_error(q, rc, NULL, "cannot read the repository to check its quota");
        return 1;
    }
    if (rec) {
        repo_bytes = rmeta_repo_bytes(rec);
        in_repo = digest && (rmeta_blob(rec, digest, &have) || rmeta_manifest(rec, digest));
    }
    json_decref(rec);
    /* Counted on unique bytes: what the repository (or the store) holds already adds
     * nothing. */
    if (r->quota_repo && !in_repo && (more > r->quota_repo || repo_bytes > r->quota_repo - more)) {
        snprintf(msg, sizeof(msg),
                 "repository quota exceeded: %s holds %" PRIu64 " bytes, this adds %" PRIu64
                 ", the quota (--quota-repo) is %" PRIu64 " bytes; nothing was stored",
                 q->route.name, repo_bytes, more, r->quota_repo);
        goto refuse;
    }
    if (r->quota_total) {
        in_store = digest && cmk_stat(r->s, digest, &bi) == CMK_OK;
        rc = rgc_usage_get(r->s, &total, &blobs);
        if (rc != CMK_OK) {
            *ret = reg_store_error(q, rc, NULL, "cannot read the usage to check the quota");
            return 1;
        }
        if (!in_store && (more > r->quota_total || total > r->quota_total - more)) {
            snprintf(msg, sizeof(msg),
                     "store quota exceeded: the registry holds %" PRIu64
                     " bytes, this adds %" PRIu64 ", the quota (--quota-total) is %" PRIu64
                     " bytes; nothing was stored",
                     total, more, r->quota_total);
            goto refuse;
        }
    }
    return 0;
refuse:
    atomic_fetch_add(&r->quota_refusals, 1);
    q->up_destroy = 1;
    *ret = reg_send_error(q, MHD_HTTP_FORBIDDEN, "DENIED", msg, NULL);
    return 1;
}

/* ---- periodic collection ---- */

static void *gc_thread(void *arg)
{
    registry *r = arg;
    rgc_opts o = {.grace_s = r->gc_grace};

    pthread_mutex_lock(&r->gc_mu);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += r->gc_interval;
        while (!r->gc_stop) {
            if (pthread_cond_timedwait(&r->gc_cv, &r->gc_mu, &until) != 0)
                break; /* the interval is over */
        }
        if (r->gc_stop)
            break;
        pthread_mutex_unlock(&r->gc_mu);
        {
            cmk_errbuf eb = {0};
            json_t *rep = NULL;
            cmk_err rc = rgc_run(r->s, &o, &rep, &eb);
            if (rc == CMK_OK) {
                json_int_t n = json_integer_value(json_object_get(rep, "blobs_freed"));
                json_int_t b = json_integer_value(json_object_get(rep, "bytes_freed"));
                atomic_fetch_add(&r->gc_runs, 1);
                atomic_fetch_add(&r->gc_freed_blobs, (uint64_t)n);
                atomic_fetch_add(&r->gc_freed_bytes, (uint64_t)b);
                atomic_store(&r->gc_last, (uint64_t)time(NULL));
                if (r->log)
                    fprintf(stderr,
                            "cmkstore serve: gc: freed %lld blob(s), %lld bytes; swept %lld "
                            "orphaned object(s), %lld bytes\n",
                            (long long)n, (long long)b,
                            (long long)json_integer_value(json_object_get(rep, "orphans_deleted")),
                            (long long)json_integer_value(
                                json_object_get(rep, "orphan_bytes_deleted")));
            } else if (rc == CMK_E_BUSY) {
                if (r->log)
                    fprintf(stderr, "cmkstore serve: gc: skipped: %s\n", eb.msg);
            } else {
                atomic_fetch_add(&r->gc_failures, 1);
                fprintf(stderr, "cmkstore serve: gc failed: %s\n",
                        eb.msg[0] ? eb.msg : cmk_strerror(rc));
            }
            json_decref(rep);
        }
        pthread_mutex_lock(&r->gc_mu);
    }
    pthread_mutex_unlock(&r->gc_mu);
    return NULL;
}

cmk_err reg_maint_start(registry *r)
{
    if (pthread_mutex_init(&r->gc_mu, NULL) != 0)
        return CMK_E_NOMEM;
    if (pthread_cond_init(&r->gc_cv, NULL) != 0) {
        pthread_mutex_destroy(&r->gc_mu);
        return CMK_E_NOMEM;
    }
    r->gc_inited = 1;
    if (r->gc_interval && pthread_create(&r->gc_th, NULL, gc_thread, r) != 0)
        return CMK_E_NOMEM;
    r->gc_started = r->gc_interval != 0;
    return CMK_OK;
}

void reg_maint_stop(registry *r)
{
    if (!r->gc_inited)
        return;
    if (r->gc_started) {
        pthread_mutex_lock(&r->gc_mu);
        r->gc_stop = 1;
        pthread_cond_signal(&r->gc_cv);
        pthread_mutex_unlock(&r->gc_mu);
        pthread_join(r->gc_th, NULL);
        r->gc_started = 0;
    }
    pthread_cond_destroy(&r->gc_cv);
    pthread_mutex_destroy(&r->gc_mu);
    r->gc_inited = 0;
}

/* ---- metrics ---- */

char *reg_maint_metrics(registry *r)
{
    uint64_t bytes = 0, blobs = 0;
    int have = rgc_usage_get(r->s, &bytes, &blobs) == CMK_OK;
    char *out = NULL;

    if (asprintf(&out,
                 "# HELP cmkstore_registry_stored_bytes Bytes of the blobs the store holds, as "
                 "pushed (what --quota-total counts).\n"
                 "# TYPE cmkstore_registry_stored_bytes gauge\n"
                 "cmkstore_registry_stored_bytes %" PRIu64 "\n"
                 "# HELP cmkstore_registry_stored_blobs Blobs the store holds.\n"
                 "# TYPE cmkstore_registry_stored_blobs gauge\n"
                 "cmkstore_registry_stored_blobs %" PRIu64 "\n"
                 "# HELP cmkstore_registry_quota_bytes Quotas in bytes (0: none).\n"
                 "# TYPE cmkstore_registry_quota_bytes gauge\n"
                 "cmkstore_registry_quota_bytes{scope=\"repository\"} %" PRIu64 "\n"
                 "cmkstore_registry_quota_bytes{scope=\"total\"} %" PRIu64 "\n"
                 "# HELP cmkstore_registry_quota_refusals_total Uploads and manifests refused "
                 "by a quota.\n"
                 "# TYPE cmkstore_registry_quota_refusals_total counter\n"
                 "cmkstore_registry_quota_refusals_total %" PRIu64 "\n"
                 "# HELP cmkstore_registry_read_only 1 in read-only mode.\n"
                 "# TYPE cmkstore_registry_read_only gauge\n"
                 "cmkstore_registry_read_only %d\n"
                 "# HELP cmkstore_registry_gc_runs_total Garbage collections run by this "
                 "server.\n"
                 "# TYPE cmkstore_registry_gc_runs_total counter\n"
                 "cmkstore_registry_gc_runs_total %" PRIu64 "\n"
                 "# TYPE cmkstore_registry_gc_failures_total counter\n"
                 "cmkstore_registry_gc_failures_total %" PRIu64 "\n"
                 "# TYPE cmkstore_registry_gc_freed_blobs_total counter\n"
                 "cmkstore_registry_gc_freed_blobs_total %" PRIu64 "\n"
                 "# TYPE cmkstore_registry_gc_freed_bytes_total counter\n"
                 "cmkstore_registry_gc_freed_bytes_total %" PRIu64 "\n"
                 "# TYPE cmkstore_registry_gc_last_run_timestamp_seconds gauge\n"
                 "cmkstore_registry_gc_last_run_timestamp_seconds %" PRIu64 "\n",
                 have ? bytes : 0, have ? blobs : 0, r->quota_repo, r->quota_total,
                 (uint64_t)atomic_load(&r->quota_refusals), r->read_only ? 1 : 0,
                 (uint64_t)atomic_load(&r->gc_runs), (uint64_t)atomic_load(&r->gc_failures),
                 (uint64_t)atomic_load(&r->gc_freed_blobs),
                 (uint64_t)atomic_load(&r->gc_freed_bytes), (uint64_t)atomic_load(&r->gc_last)) < 0)
        return NULL;
    return out;
}
