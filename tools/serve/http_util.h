/*
 * http_util.h — small, bounds-checked parsers and helpers for the HTTP server: byte ranges
 * (Range and the registry's Content-Range for chunked uploads), decimal numbers from query
 * strings, log-safe copies of client-supplied text, clocks.
 */
#ifndef CMK_HTTP_UTIL_H
#define CMK_HTTP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore_err.h"

enum http_range {
    HTTP_RANGE_NONE,   /* no Range header: the whole representation */
    HTTP_RANGE_OK,     /* one satisfiable range: *off, *len */
    HTTP_RANGE_BAD,    /* malformed or unsatisfiable: 416 */
    HTTP_RANGE_IGNORE, /* several ranges (multipart is not served): answer with the whole */
};

/* Parses a Range header value ("bytes=a-b", "bytes=a-", "bytes=-n") against a representation
 * of size bytes. h may be NULL. */
enum http_range http_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len);

/* Parses the Content-Range of a chunked upload: "a-b", also "bytes a-b", "bytes=a-b" and a
 * trailing "/total" or "/" + "*" (ignored). Returns 0 and *start, *end (inclusive, a <= b), or -1.
 */
int http_parse_content_range(const char *h, uint64_t *start, uint64_t *end);

/* Strict decimal: digits only, no sign or space, value <= max. Returns 0 or -1. */
int http_parse_u64(const char *s, uint64_t max, uint64_t *out);

/* Copies src into dst (always terminated), replacing bytes outside printable ASCII, '"' and
 * '\\' by \xNN escapes and cutting at cap ("..." marks a cut), so client-controlled text
 * cannot forge log lines. */
void http_log_safe(char *dst, size_t cap, const char *src);

struct sockaddr;

/* The key a client is counted under by the server's limits: an IPv4 address as is ("a.b.c.d"),
 * an IPv4-mapped IPv6 address as that IPv4 address, any other IPv6 address by its /64 prefix
 * ("2001:db8:1:2::/64": one host commonly holds a whole /64). cap: at least
 * HTTP_CLIENT_KEY_MAX. Returns 0, or -1 for other families (out is then "-"). */
#define HTTP_CLIENT_KEY_MAX 64
int http_client_key(const struct sockaddr *sa, char *out, size_t cap);
/* 1 if sa is a loopback address (127.0.0.0/8, ::1, or 127/8 mapped into IPv6), else 0. */
int http_addr_is_loopback(const struct sockaddr *sa);

/* Formats a message into err (cap bytes; nothing when err is NULL or cap 0) and returns rc:
 * the error path of the server's parsers and loaders that report into a caller's buffer. */
cmk_err http_fail(char *err, size_t cap, cmk_err rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Monotonic seconds. */
double http_mono(void);
/* UTC wall time "2024-05-01T12:00:00.123Z". */
void http_time_iso(char buf[32]);

#endif
