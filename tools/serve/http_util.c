/* http_util.c — see http_util.h. */
#include "tools/serve/http_util.h"

#include <stdarg.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads decimal digits at *p (at least one, no overflow); advances *p. */
static int read_u64(const char **p, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;

    if (!is_digit(*s))
        return -1;
    while (is_digit(*s)) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

enum http_range http_parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
    const char *p;
    uint64_t a, b;

    if (!h)
        return HTTP_RANGE_NONE;
    p = skip_ws(h);
    if (strncmp(p, "bytes=", 6) != 0)
        return HTTP_RANGE_BAD;
    p = skip_ws(p + 6);
    if (strchr(p, ',')) {
        /* Several ranges are valid HTTP, but we do not send multipart bodies; RFC 9110 lets
         * a server answer with the whole representation instead. */
        return HTTP_RANGE_IGNORE;
    }
    if (*p == '-') { /* suffix: the last n bytes */
        p++;
        if (read_u64(&p, &b) != 0 || *skip_ws(p) != '\0' || b == 0 || size == 0)
            return HTTP_RANGE_BAD;
        if (b > size)
            b = size;
        *off = size - b;
        *len = b;
        return HTTP_RANGE_OK;
    }
    if (read_u64(&p, &a) != 0 || *p != '-')
        return HTTP_RANGE_BAD;
    p++;
    if (*skip_ws(p) == '\0') {
        b = UINT64_MAX;
    } else {
        if (read_u64(&p, &b) != 0 || *skip_ws(p) != '\0' || b < a)
            return HTTP_RANGE_BAD;
    }
    if (a >= size)
        return HTTP_RANGE_BAD;
    if (b >= size)
        b = size - 1;
    *off = a;
    *len = b - a + 1;
    return HTTP_RANGE_OK;
}

int http_parse_content_range(const char *h, uint64_t *start, uint64_t *end)
{
    const char *p;
    uint64_t a, b;

    if (!h)
        return -1;
    p = skip_ws(h);
    if (strncmp(p, "bytes", 5) == 0) {
        p += 5;
        if (*p == '=' || *p == ' ')
            p++;
        p = skip_ws(p);
    }
    if (read_u64(&p, &a) != 0 || *p != '-')
        return -1;
    p++;
    if (read_u64(&p, &b) != 0 || b < a)
        return -1;
    if (*p == '/') {
        p++;
        if (*p == '*') {
            p++;
        } else {
            uint64_t total;
            if (read_u64(&p, &total) != 0 || total <= b)
                return -1;
        }
    }
    if (*skip_ws(p) != '\0')
        return -1;
    *start = a;
    *end = b;
    return 0;
}

int http_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v;

    if (!s || read_u64(&s, &v) != 0 || *s != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

void http_log_safe(char *dst, size_t cap, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (cap == 0)
        return;
    for (; src && *src; src++) {
        unsigned char c = (unsigned char)*src;
        size_t need = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? 4 : 1;
        if (o + need + 4 > cap) { /* room for "..." and the terminator */
            if (o + 4 <= cap) {
                memcpy(dst + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (need == 4) {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
}

int http_addr_is_loopback(const struct sockaddr *sa)
{
    const struct in6_addr *a6;

    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr) >> 24) ==
               127;
    if (sa->sa_family != AF_INET6)
        return 0;
    a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

int http_client_key(const struct sockaddr *sa, char *out, size_t cap)
{
    struct in6_addr a6;
    char buf[INET6_ADDRSTRLEN];

    snprintf(out, cap, "-");
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        if (!inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                       sizeof(buf)))
            return -1;
        snprintf(out, cap, "%s", buf);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    a6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        if (!inet_ntop(AF_INET, &a6.s6_addr[12], buf, sizeof(buf)))
            return -1;
        snprintf(out, cap, "%s", buf);
        return 0;
    }
    memset(&a6.s6_addr[8], 0, 8);
    if (!inet_ntop(AF_INET6, &a6, buf, sizeof(buf)))
        return -1;
    snprintf(out, cap, "%s/64", buf);
    return 0;
}

double http_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void http_time_iso(char buf[32])
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (!gmtime_r(&ts.tv_sec, &tm)) {
        snprintf(buf, 32, "?");
        return;
    }
    snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

cmk_err http_fail(char *err, size_t cap, cmk_err rc, const char *fmt, ...)
{
    va_list ap;

    if (err && cap) {
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return rc;
}
