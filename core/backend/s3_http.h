/*
 * s3_http.h — the S3 backend's requests: one signed HTTP exchange with the object store,
 * through libcurl and its AWS SigV4 signing (CURLOPT_AWS_SIGV4).
 *
 * Connections: easy handles are kept in a pool of the transport, so each thread's next
 * request reuses a kept-alive connection. Retries: a transport fault, a 500, 502, 503
 * (SlowDown) or 504 is tried again up to CMK_S3_TRIES times with exponential backoff and
 * jitter; timeouts bound the connect and a stalled transfer. x-amz-content-sha256 is sent as
 * a header of the request (the body's SHA-256, or UNSIGNED-PAYLOAD for large bodies whose
 * integrity the container's AEAD carries), since curl 7.88 signs it but does not send it and
 * RGW requires it. Messages name the method, bucket, key, HTTP status and S3 error code,
 * never a credential.
 */
#ifndef CMK_BACKEND_S3_HTTP_H
#define CMK_BACKEND_S3_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/backend/s3_conf.h"
#include "core/base/error.h"

#define CMK_S3_TRIES 5

typedef struct cmk_s3_http cmk_s3_http;

typedef struct cmk_s3_req {
    const char *method; /* GET, HEAD, PUT, POST, DELETE */
    const char *key;    /* below the store's prefix; NULL: the bucket itself */
    const char *query;  /* encoded, or NULL */
    const void *body;   /* PUT/POST */
    size_t body_len;
    const char *if_match; /* an ETag (sent without quotes: RGW 412s the quoted form) */
    int if_none_match;    /* If-None-Match: * */
    const char *writer;   /* sent as x-amz-meta-cmk-writer: who wrote the object (a nonce) */
    uint64_t range_off;   /* with range_len: Range: bytes=off-(off+len-1) */
    uint64_t range_len;
    void *dst; /* the body goes here (dst_cap bytes at most; more is CMK_E_CORRUPT) */
    size_t dst_cap;
    const struct iovec *dstv; /* or, with dstn, into these buffers in turn (their sum is the cap) */
    int dstn;
    size_t max; /* else into resp (malloc'd, NUL-terminated), at most max bytes (0: 1 MiB) */
    /* Or streamed: each piece of a 2xx body goes to sink as it arrives (nonzero from it aborts
     * the transfer; it may block, the connection waits). A request that delivered a byte is
     * not retried: the caller resumes from resp_len. cancel, if set, is asked about once a
     * second while the transfer waits, and aborts it when nonzero. */
    int (*sink)(void *arg, const void *p, size_t n);
    int (*cancel)(void *arg);
    void *sink_arg;

    /* the answer */
    char *resp;
    size_t resp_len; /* bytes received (into dst or resp) */
    long status;
    int tries;           /* attempts made */
    char etag[128];      /* without quotes */
    uint64_t total;      /* the object's size (Content-Range's total, else Content-Length) */
    int64_t mtime;       /* Last-Modified, seconds */
    char code[64];       /* the S3 error code of a failure */
    char writer_got[40]; /* the object's x-amz-meta-cmk-writer (GET, HEAD) */
} cmk_s3_req;

/* A transport for c (its conf is copied; the caller may wipe its own). */
CMK_MUST_CHECK cmk_err cmk_s3_http_new(const cmk_s3_conf *c, cmk_s3_http **out, cmk_errbuf *eb);
void cmk_s3_http_free(cmk_s3_http *h); /* NULL: nothing */
const cmk_s3_conf *cmk_s3_http_conf(const cmk_s3_http *h);

/* Makes request r. CMK_OK on 2xx; else CMK_E_NOT_FOUND (404), CMK_E_BUSY (412: a condition
 * failed), CMK_E_RANGE (416), CMK_E_REFUSED (403), CMK_E_IO (anything else, the store
 * unreachable after the retries), with eb naming the request. r->resp is the caller's to
 * free in every case. */
CMK_MUST_CHECK cmk_err cmk_s3_http_do(cmk_s3_http *h, cmk_s3_req *r, cmk_errbuf *eb);

/* Frees r->resp. */
void cmk_s3_req_done(cmk_s3_req *r);

#endif
