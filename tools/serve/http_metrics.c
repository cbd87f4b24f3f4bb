/* http_metrics.c — see http_metrics.h. */
#include "tools/serve/http_metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OTHER"};
#define NMETHODS   (sizeof(methods) / sizeof(methods[0]))
#define STATUS_MIN 100
#define NSTATUS    500 /* 100 .. 599 */

struct http_metrics {
    atomic_uint_fast64_t req[NMETHODS][NSTATUS];
    atomic_uint_fast64_t bytes_in, bytes_out;
    atomic_uint_fast64_t counters[HTTP_C__COUNT];
    atomic_int checks_running, checks_peak;
    pthread_mutex_t mu; /* guards the key observations below */
    uint64_t rotations;
    char vkid_seen[CMK_ID_MAX];
    int observed;
};

http_metrics *http_metrics_new(void)
{
    http_metrics *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    for (size_t i = 0; i < NMETHODS; i++)
        for (size_t j = 0; j < NSTATUS; j++)
            atomic_init(&m->req[i][j], 0);
    atomic_init(&m->bytes_in, 0);
    atomic_init(&m->bytes_out, 0);
    for (size_t i = 0; i < HTTP_C__COUNT; i++)
        atomic_init(&m->counters[i], 0);
    atomic_init(&m->checks_running, 0);
    atomic_init(&m->checks_peak, 0);
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void http_metrics_free(http_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void http_metrics_request(http_metrics *m, const char *method, unsigned status, uint64_t in,
                          uint64_t out)
{
    size_t mi = NMETHODS - 1;

    if (!m)
        return;
    for (size_t i = 0; i + 1 < NMETHODS; i++)
        if (method && strcmp(method, methods[i]) == 0)
            mi = i;
    if (status >= STATUS_MIN && status < STATUS_MIN + NSTATUS)
        atomic_fetch_add_explicit(&m->req[mi][status - STATUS_MIN], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_in, in, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_out, out, memory_order_relaxed);
}

void http_metrics_inc(http_metrics *m, enum http_counter c)
{
    if (m && (unsigned)c < HTTP_C__COUNT)
        atomic_fetch_add_explicit(&m->counters[c], 1, memory_order_relaxed);
}

void http_metrics_checks_running(http_metrics *m, int delta)
{
    int now, peak;

    if (!m)
        return;
    now = atomic_fetch_add(&m->checks_running, delta) + delta;
    peak = atomic_load(&m->checks_peak);
    while (now > peak && !atomic_compare_exchange_weak(&m->checks_peak, &peak, now))
        ;
}

void http_metrics_observe_key(http_metrics *m, const cmk_encryption_info *ei)
{
    if (!m || !ei)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->observed && strcmp(ei->versioned_key_identifier, m->vkid_seen) != 0)
        m->rotations++;
    snprintf(m->vkid_seen, sizeof(m->vkid_seen), "%s", ei->versioned_key_identifier);
    m->observed = 1;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 8192;
        while (ncap < b->len + (size_t)n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* A label value with \, " and newlines escaped, as the text format wants. */
static void label_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;

    for (; *src && o + 3 < cap; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

static const struct {
    const char *name, *help;
} counter_info[HTTP_C__COUNT] = {
    [HTTP_C_CONN_OVER_LIMIT] = {"cmkstore_http_connections_over_address_limit_total",
                                "Connections beyond --max-connections-per-ip from one address, "
                                "answered 429 and closed."},
    [HTTP_C_CONN_REFUSED] = {"cmkstore_http_connections_refused_total",
                             "Connections closed at once, unanswered: twice "
                             "--max-connections-per-ip from one address."},
    [HTTP_C_PASSWORD_CHECKS] = {"cmkstore_auth_password_checks_total",
                                "Password checks that ran PBKDF2."},
    [HTTP_C_PASSWORD_WAITS] = {"cmkstore_auth_password_check_waits_total",
                               "Password checks that waited for a free slot "
                               "(--max-password-checks)."},
    [HTTP_C_AUTH_FAILURES] = {"cmkstore_auth_failures_total", "Failed password checks."},
    [HTTP_C_AUTH_BACKOFF] = {"cmkstore_auth_backoff_refusals_total",
                             "Requests refused with 429 after repeated failed password checks "
                             "from their address or for their user."},
    [HTTP_C_UPLOADS_SAVED] = {"cmkstore_uploads_saved_total",
                              "Upload sessions saved in the store while serving "
                              "(--upload-save-after): a crash loses only what they received "
                              "after."},
};

static void render_counters(http_metrics *m, struct sbuf *b)
{
    for (size_t i = 0; i < HTTP_C__COUNT; i++)
        sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_info[i].name,
                  counter_info[i].help, counter_info[i].name, counter_info[i].name,
                  (unsigned long long)atomic_load(&m->counters[i]));
    sb_printf(b,
              "# HELP cmkstore_auth_password_checks_running Password checks (PBKDF2) running "
              "now.\n# TYPE cmkstore_auth_password_checks_running gauge\n"
              "cmkstore_auth_password_checks_running %d\n"
              "# HELP cmkstore_auth_password_checks_peak Most password checks that ran at once "
              "since the server started (at most --max-password-checks).\n"
              "# TYPE cmkstore_auth_password_checks_peak gauge\n"
              "cmkstore_auth_password_checks_peak %d\n",
              atomic_load(&m->checks_running), atomic_load(&m->checks_peak));
}

static int count_blob(const char *digest, void *arg)
{
    (void)digest;
    (*(uint64_t *)arg)++;
    return 0;
}

int http_metrics_render(http_metrics *m, cmk_store *s, unsigned uploads, unsigned inflight,
                        char **out, size_t *len)
{
    struct sbuf b = {0};
    cmk_encryption_info ei;
    uint64_t rotations, blobs = 0;
    char kid[2 * CMK_ID_MAX], vkid[2 * CMK_ID_MAX];
    int have_ei = s && cmk_store_encryption(s, &ei) == CMK_OK;

    *out = NULL;
    *len = 0;
    sb_printf(&b, "# HELP cmkstore_http_requests_total HTTP requests served, by method and "
                  "status code.\n# TYPE cmkstore_http_requests_total counter\n");
    for (size_t i = 0; i < NMETHODS; i++) {
        for (size_t j = 0; j < NSTATUS; j++) {
            uint64_t v = atomic_load_explicit(&m->req[i][j], memory_order_relaxed);
            if (v)
                sb_printf(&b, "cmkstore_http_requests_total{method=\"%s\",code=\"%zu\"} %llu\n",
                          methods[i], j + STATUS_MIN, (unsigned long long)v);
        }
    }
    sb_printf(&b,
              "# HELP cmkstore_http_request_bytes_total Request body bytes received.\n"
              "# TYPE cmkstore_http_request_bytes_total counter\n"
              "cmkstore_http_request_bytes_total %llu\n"
              "# HELP cmkstore_http_response_bytes_total Response body bytes sent.\n"
              "# TYPE cmkstore_http_response_bytes_total counter\n"
              "cmkstore_http_response_bytes_total %llu\n"
              "# HELP cmkstore_http_requests_in_flight Requests being served.\n"
              "# TYPE cmkstore_http_requests_in_flight gauge\n"
              "cmkstore_http_requests_in_flight %u\n"
              "# HELP cmkstore_uploads_in_progress Blob upload sessions open.\n"
              "# TYPE cmkstore_uploads_in_progress gauge\n"
              "cmkstore_uploads_in_progress %u\n",
              (unsigned long long)atomic_load(&m->bytes_in),
              (unsigned long long)atomic_load(&m->bytes_out), inflight, uploads);
    render_counters(m, &b);
    pthread_mutex_lock(&m->mu);
    rotations = m->rotations;
    pthread_mutex_unlock(&m->mu);
    sb_printf(&b,
              "# HELP cmkstore_key_checks_total Key access checks run since the server "
              "started, whatever their outcome.\n# TYPE cmkstore_key_checks_total counter\n"
              "cmkstore_key_checks_total %llu\n"
              "# HELP cmkstore_key_rotations_total Key version changes seen since the server "
              "started (automatic or manual).\n# TYPE cmkstore_key_rotations_total counter\n"
              "cmkstore_key_rotations_total %llu\n",
              (unsigned long long)(have_ei ? ei.key_checks : 0), (unsigned long long)rotations);
    if (have_ei) {
        /* unreachable: the last check failed for a reason other than a denial and the cached
         * data keys still serve (grace period); reason: that check's own error. */
        const char *state = !ei.key_accessible             ? "lost"
                            : ei.key_check_error != CMK_OK ? "unreachable"
                                                           : "accessible";
        sb_printf(&b,
                  "# HELP cmkstore_key_state The key's state: accessible, unreachable (key "
                  "checks fail, cached data keys serve until the grace period ends) or lost "
                  "(requests touching content fail with 503); reason is the last check's "
                  "error (none: it verified an unwrap).\n# TYPE cmkstore_key_state gauge\n"
                  "cmkstore_key_state{state=\"%s\",reason=\"%s\"} 1\n"
                  "# HELP cmkstore_key_unreachable_seconds Seconds the key checks have been "
                  "failing while cached data keys serve (0: not in a grace period).\n"
                  "# TYPE cmkstore_key_unreachable_seconds gauge\n"
                  "cmkstore_key_unreachable_seconds %d\n",
                  state, ei.key_check_error != CMK_OK ? cmk_errname(ei.key_check_error) : "none",
                  ei.key_unreachable_since);
        label_escape(kid, sizeof(kid), ei.key_identifier);
        label_escape(vkid, sizeof(vkid), ei.versioned_key_identifier);
        sb_printf(&b,
                  "# HELP cmkstore_key_accessible 1 if the store can use its key-encryption "
                  "key.\n# TYPE cmkstore_key_accessible gauge\n"
                  "cmkstore_key_accessible %d\n"
                  "# HELP cmkstore_key_revoked 1 while access to the key-encryption key is "
                  "lost (requests touching content fail with 503).\n"
                  "# TYPE cmkstore_key_revoked gauge\n"
                  "cmkstore_key_revoked %d\n"
                  "# HELP cmkstore_key_last_check_timestamp_seconds Time of the last key "
                  "check.\n# TYPE cmkstore_key_last_check_timestamp_seconds gauge\n"
                  "cmkstore_key_last_check_timestamp_seconds %lld\n"
                  "# HELP cmkstore_key_last_rotation_timestamp_seconds Time of the last key "
                  "rotation (0: never).\n"
                  "# TYPE cmkstore_key_last_rotation_timestamp_seconds gauge\n"
                  "cmkstore_key_last_rotation_timestamp_seconds %lld\n"
                  "# HELP cmkstore_key_info The key in use.\n# TYPE cmkstore_key_info gauge\n"
                  "cmkstore_key_info{customer_managed=\"%s\",key_identifier=\"%s\","
                  "versioned_key_identifier=\"%s\",rotation_enabled=\"%s\"} 1\n",
                  ei.key_accessible ? 1 : 0, ei.key_accessible ? 0 : 1,
                  (long long)ei.last_key_check, (long long)ei.last_key_rotation,
                  ei.cmk_enabled ? "true" : "false", kid, vkid,
                  ei.key_rotation_enabled ? "true" : "false");
    }
    if (s) {
        cmk_store_resources res;
        cmk_store_resources_get(s, &res);
        sb_printf(&b,
                  "# HELP cmkstore_io_engines_open I/O engines (io_uring instances) open, in "
                  "use or cached.\n# TYPE cmkstore_io_engines_open gauge\n"
                  "cmkstore_io_engines_open %u\n"
                  "# HELP cmkstore_io_engines_cached Idle I/O engines kept for reuse.\n"
                  "# TYPE cmkstore_io_engines_cached gauge\ncmkstore_io_engines_cached %u\n"
                  "# HELP cmkstore_buffers_cached_bytes Chunk buffers kept for reuse.\n"
                  "# TYPE cmkstore_buffers_cached_bytes gauge\n"
                  "cmkstore_buffers_cached_bytes %zu\n",
                  res.io_open, res.io_cached, res.buf_cached);
    }
    /* A directory walk, no decryption; cheap next to a scrape interval. */
    if (s && cmk_list(s, count_blob, &blobs) == CMK_OK)
        sb_printf(&b,
                  "# HELP cmkstore_store_blobs Blobs in the store (layers, configs, "
                  "manifests).\n# TYPE cmkstore_store_blobs gauge\ncmkstore_store_blobs %llu\n",
                  (unsigned long long)blobs);
    if (b.failed) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
