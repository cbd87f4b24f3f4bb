/*
 * http.h — internal: the akv provider's HTTPS transport (libcurl), with a bounded retry
 * budget. TLS is verified against the system CAs plus the extra CA certificates of a file
 * (--ca-file / CMKSTORE_CA_FILE, for private endpoints and `cmkstore vault serve`). Redirects
 * are not followed. Reply bodies are kept in memory that is wiped when freed (they carry
 * tokens and unwrapped keys).
 *
 * Retries: a reply of 408, 429 or 5xx, or a transient transport fault (connection refused or
 * dropped, TLS handshake cut, timeout; not a certificate that fails to verify), is tried
 * again up to max_attempts in all, after the reply's Retry-After (seconds or an HTTP date,
 * capped at retry_after_cap_s) or else a backoff starting at backoff_ms and doubling, while
 * the sleeps stay within sleep_budget_ms in all. Then the last reply is returned (the caller
 * maps it) or, for a transport fault, CMK_E_KEY_UNREACHABLE.
 *
 * Thread-safety: a cmk_akv_http may be used by several threads at once (one curl handle per
 * request).
 */
#ifndef CMK_AKV_HTTP_H
#define CMK_AKV_HTTP_H

#include <stddef.h>

#include "core/base/error.h"

typedef struct cmk_akv_http_cfg {
    const char *ca_file;        /* PEM file of extra CA certificates; NULL or "": none */
    unsigned max_attempts;      /* tries in all for a retryable fault (1: no retry) */
    unsigned retry_after_cap_s; /* a longer Retry-After is cut to this */
    unsigned backoff_ms;        /* first wait without Retry-After (doubles each time) */
    unsigned sleep_budget_ms;   /* all waits of one request together at most */
    long connect_timeout_s;
    long timeout_s; /* whole request */
} cmk_akv_http_cfg;

/* The defaults: 4 attempts, Retry-After up to 10 s, backoff 250 ms, 20 s of waits, 10 s to
 * connect, 30 s per request; CMKSTORE_AKV_MAX_ATTEMPTS (1..10) overrides the attempts,
 * CMKSTORE_CA_FILE names the CA file. */
void cmk_akv_http_cfg_default(cmk_akv_http_cfg *cfg);

typedef struct cmk_akv_http cmk_akv_http;

/* Loads the CA file (CMK_E_INVAL naming it if unreadable or holding no certificate). */
CMK_MUST_CHECK cmk_err cmk_akv_http_new(const cmk_akv_http_cfg *cfg, cmk_akv_http **out,
                                        cmk_errbuf *eb);
void cmk_akv_http_free(cmk_akv_http *h);

typedef struct cmk_akv_req {
    const char *method;         /* "GET" or "POST" */
    const char *url;            /* never logged with its query: may carry nothing secret */
    const char *const *headers; /* "Name: value" lines, NULL-terminated; may be NULL */
    const char *body;           /* POST body, may be NULL */
    size_t bodylen;
    int allow_http; /* 1: plain http:// allowed and no proxy (the managed-identity endpoint) */
} cmk_akv_req;

typedef struct cmk_akv_resp {
    long status; /* last reply's HTTP status */
    char *body;  /* NUL-terminated, wiped by cmk_akv_resp_free */
    size_t len;
    char www_auth[1024]; /* last reply's WWW-Authenticate ("" if none) */
    unsigned attempts;   /* requests sent */
} cmk_akv_resp;

/* Sends req, retrying as above. CMK_OK when a reply came (any status: the caller maps it);
 * CMK_E_KEY_UNREACHABLE when none did, with a message naming `what` (the vault host or token
 * endpoint) and the transport's reason. */
CMK_MUST_CHECK cmk_err cmk_akv_http_do(cmk_akv_http *h, const cmk_akv_req *req, const char *what,
                                       cmk_akv_resp *resp, cmk_errbuf *eb);
void cmk_akv_resp_free(cmk_akv_resp *r);

/* Seconds to wait for a Retry-After value (delta-seconds or HTTP date) at now; -1 if absent
 * or malformed. Pure. */
long cmk_akv_retry_after_parse(const char *value, long now);

#endif
