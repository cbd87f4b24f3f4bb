/*
 * http_metrics.h — counters of `cmkstore serve`, rendered in the Prometheus text format
 * (GET /metrics): requests by method and status, bytes in and out, uploads in progress, key
 * checks and rotations, key access (revocation) state, stored blob count.
 */
#ifndef CMK_HTTP_METRICS_H
#define CMK_HTTP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore.h"

typedef struct http_metrics http_metrics;

http_metrics *http_metrics_new(void);
void http_metrics_free(http_metrics *m);

/* Counts one finished request. Thread-safe, lock-free. */
void http_metrics_request(http_metrics *m, const char *method, unsigned status, uint64_t in,
                          uint64_t out);
/* Notes the store's key state (called about once a second by the server's housekeeping):
 * counts key checks and rotations seen since start from the timestamps and the versioned
 * key id. */
void http_metrics_observe_key(http_metrics *m, const cmk_encryption_info *ei);

/* Counters of the server's defences against clients that would exhaust it (per-address
 * connection limit, failed password checks and their backoff; see tools/SERVE.md). */
enum http_counter {
    HTTP_C_CONN_OVER_LIMIT, /* connections over the per-address limit, answered 429 */
    HTTP_C_CONN_REFUSED,    /* connections closed at accept (twice the per-address limit) */
    HTTP_C_PASSWORD_CHECKS, /* PBKDF2 computations */
    HTTP_C_PASSWORD_WAITS,  /* password checks that waited for a free slot */
    HTTP_C_AUTH_FAILURES,   /* failed password checks */
    HTTP_C_AUTH_BACKOFF,    /* requests refused by the failure backoff (429) */
    HTTP_C_UPLOADS_SAVED,   /* upload sessions saved while serving (crash safety) */
    HTTP_C__COUNT
};
/* Adds one to c. NULL m: no-op. Thread-safe, lock-free. */
void http_metrics_inc(http_metrics *m, enum http_counter c);
/* Password checks running now: delta +1 when one starts, -1 when it ends; the highest value
 * seen is kept (cmkstore_auth_password_checks_peak). NULL m: no-op. */
void http_metrics_checks_running(http_metrics *m, int delta);

/* Renders every metric. s: the store (key state and blob count); uploads and inflight are
 * gauges owned by the caller. *out: malloc'd text, *len its length. Returns 0 or -1 (out of
 * memory). */
int http_metrics_render(http_metrics *m, cmk_store *s, unsigned uploads, unsigned inflight,
                        char **out, size_t *len);

#endif
