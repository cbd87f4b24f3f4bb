/* s3_http.c — signed requests to the object store through libcurl (s3_http.h). */
#define _GNU_SOURCE
#include "core/backend/s3_http.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/backend/s3_xml.h"
#include "core/base/secmem.h"

/* Idle easy handles kept (each may hold a kept-alive connection). */
#define POOL_MAX 64
/* Bodies up to this size are hashed for the signature; larger ones are sent unsigned
 * (UNSIGNED-PAYLOAD): blob parts, whose every byte the container's AEAD authenticates. */
#define HASH_MAX (256u << 10)
/* Answers read into memory when the caller gives no buffer. */
#define RESP_DEFAULT_MAX (1u << 20)
/* curl's transfer buffers, up and down (curl caps them at 2 MiB and 10 MiB). */
#define XFER_BUF (1L << 20)
/* Error documents read. */
#define ERR_MAX (64u << 10)

struct cmk_s3_http {
    cmk_s3_conf conf;
    char userpwd[520]; /* "access:secret" for curl: secret */
    char sigv4[100];   /* "aws:amz:<region>:s3" */
    pthread_mutex_t mu;
    CURL *idle[POOL_MAX];
    int nidle;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

cmk_err cmk_s3_http_new(const cmk_s3_conf *c, cmk_s3_http **out, cmk_errbuf *eb)
{
    cmk_s3_http *h;

    *out = NULL;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return cmk_errbuf_set(eb, CMK_E_IO, "cannot initialise libcurl: %s",
                              curl_easy_strerror(global_rc));
    h = calloc(1, sizeof(*h));
    if (!h)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (S3 transport)");
    h->conf = *c;
    snprintf(h->userpwd, sizeof(h->userpwd), "%s:%s", c->access_key, c->secret_key);
    snprintf(h->sigv4, sizeof(h->sigv4), "aws:amz:%s:s3", c->region);
    pthread_mutex_init(&h->mu, NULL);
    *out = h;
    return CMK_OK;
}

void cmk_s3_http_free(cmk_s3_http *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nidle; i++)
        curl_easy_cleanup(h->idle[i]);
    pthread_mutex_destroy(&h->mu);
    cmk_s3_conf_wipe(&h->conf);
    cmk_cleanse(h->userpwd, sizeof(h->userpwd));
    free(h);
}

const cmk_s3_conf *cmk_s3_http_conf(const cmk_s3_http *h)
{
    return &h->conf;
}

void cmk_s3_req_done(cmk_s3_req *r)
{
    free(r->resp);
    r->resp = NULL;
}

static CURL *take(cmk_s3_http *h)
{
    CURL *c = NULL;

    pthread_mutex_lock(&h->mu);
    if (h->nidle > 0)
        c = h->idle[--h->nidle];
    pthread_mutex_unlock(&h->mu);
    if (c)
        curl_easy_reset(c); /* keeps the connection cache */
    else
        c = curl_easy_init();
    return c;
}

static void give(cmk_s3_http *h, CURL *c)
{
    pthread_mutex_lock(&h->mu);
    if (h->nidle < POOL_MAX) {
        h->idle[h->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    if (c)
        curl_easy_cleanup(c);
}

/* One transfer's state for the callbacks. */
struct xfer {
    CURL *c;
    cmk_s3_req *r;
    const char *body;
    size_t body_off;
    size_t cap; /* of resp */
    int overflow;
    int nomem;
};

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t want = size * n, left = x->r->body_len - x->body_off;

    if (want > left)
        want = left;
    memcpy(buf, x->body + x->body_off, want);
    x->body_off += want;
    return want;
}

static size_t on_write(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    cmk_s3_req *r = x->r;
    size_t len = size * n;
    long status = 0;

    curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
    if (r->sink && status / 100 == 2) {
        if (r->sink(r->sink_arg, buf, len) != 0)
            return 0;
        r->resp_len += len;
        return len;
    }
    if (r->dstv && status / 100 == 2) {
        /* Scattered: one ranged GET filling several adjacent reads' buffers. */
        size_t at = r->resp_len, done = 0;
        for (int i = 0; i < r->dstn && done < len; i++) {
            size_t l = r->dstv[i].iov_len, cp;
            if (at >= l) {
                at -= l;
                continue;
            }
            cp = l - at < len - done ? l - at : len - done;
            memcpy((char *)r->dstv[i].iov_base + at, buf + done, cp);
            done += cp;
            at = 0;
        }
        if (done < len) {
            x->overflow = 1;
            return 0;
        }
        r->resp_len += len;
        return len;
    }
    if (r->dst && status / 100 == 2) {
        if (len > r->dst_cap - r->resp_len) {
            x->overflow = 1;
            return 0;
        }
        memcpy((char *)r->dst + r->resp_len, buf, len);
        r->resp_len += len;
        return len;
    }
    {
        /* An error document is read whole up to its own bound, whatever the caller's max. */
        size_t max = status / 100 != 2 ? ERR_MAX : r->max ? r->max : RESP_DEFAULT_MAX;
        if (len > max - r->resp_len) {
            x->overflow = 1;
            return 0;
        }
        if (r->resp_len + len + 1 > x->cap) {
            size_t nc = x->cap ? x->cap : 4096;
            char *nb;
            while (nc < r->resp_len + len + 1)
                nc *= 2;
            nb = realloc(r->resp, nc);
            if (!nb) {
                x->nomem = 1;
                return 0;
            }
            r->resp = nb;
            x->cap = nc;
        }
        memcpy(r->resp + r->resp_len, buf, len);
        r->resp_len += len;
        r->resp[r->resp_len] = '\0';
    }
    return len;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const cmk_s3_req *r = arg;

    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return r->cancel(r->sink_arg) != 0;
}

/* Header value of line if its name is `name` (case-insensitive), trimmed into out. */
static int header_is(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), i, j;

    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return 0;
    for (i = nl + 1; i < n && (line[i] == ' ' || line[i] == '\t'); i++)
        ;
    for (j = n; j > i && (line[j - 1] == '\r' || line[j - 1] == '\n' || line[j - 1] == ' '); j--)
        ;
    if (j - i >= cap)
        j = i + cap - 1;
    memcpy(out, line + i, j - i);
    out[j - i] = '\0';
    return 1;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    cmk_s3_req *r = x->r;
    size_t len = size * n;
    char v[200];

    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue, or a retry): forget the last one's. */
        r->etag[0] = '\0';
        r->total = 0;
        r->mtime = 0;
        r->writer_got[0] = '\0';
    } else if (header_is(buf, len, "x-amz-meta-cmk-writer", v, sizeof(v))) {
        snprintf(r->writer_got, sizeof(r->writer_got), "%s", v);
    } else if (header_is(buf, len, "ETag", v, sizeof(v))) {
        char *s = v;
        size_t l;
        if (*s == '"')
            s++;
        l = strlen(s);
        if (l && s[l - 1] == '"')
            s[--l] = '\0';
        snprintf(r->etag, sizeof(r->etag), "%s", s);
    } else if (header_is(buf, len, "Content-Range", v, sizeof(v))) {
        const char *slash = strrchr(v, '/');
        if (slash && slash[1] >= '0' && slash[1] <= '9')
            r->total = strtoull(slash + 1, NULL, 10);
    } else if (header_is(buf, len, "Content-Length", v, sizeof(v))) {
        if (r->total == 0 && v[0] >= '0' && v[0] <= '9')
            r->total = strtoull(v, NULL, 10);
    } else if (header_is(buf, len, "Last-Modified", v, sizeof(v))) {
        time_t t = curl_getdate(v, NULL);
        if (t != (time_t)-1)
            r->mtime = (int64_t)t;
    }
    return len;
}

/* Hex SHA-256 of the body, or UNSIGNED-PAYLOAD. */
static void payload_hash(const cmk_s3_req *r, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int ml = 0;

    if (r->body_len > HASH_MAX ||
        EVP_Digest(r->body ? r->body : "", r->body_len, md, &ml, EVP_sha256(), NULL) != 1 ||
        ml != 32) {
        snprintf(out, 65, "UNSIGNED-PAYLOAD");
        return;
    }
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int retryable_status(long s)
{
    return s == 500 || s == 502 || s == 503 || s == 504;
}

static int retryable_curl(CURLcode cc)
{
    return cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
           cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR ||
           cc == CURLE_GOT_NOTHING || cc == CURLE_PARTIAL_FILE;
}

static void backoff(int attempt)
{
    /* 50, 100, 200, 400 ms, each with up to half again of jitter. */
    long ms = 50L << attempt;
    struct timespec ts;

    ms += (long)(((unsigned)rand() ^ (unsigned)(uintptr_t)&ts) % (unsigned long)(ms / 2 + 1));
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The object's name for messages: s3://bucket/<prefix><key>. */
static void shown(const cmk_s3_http *h, const cmk_s3_req *r, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s/%s%s", CMK_S3_SCHEME, h->conf.bucket, r->key ? h->conf.prefix : "",
             r->key ? r->key : "");
}

static cmk_err once(cmk_s3_http *h, CURL *c, cmk_s3_req *r, CURLcode *cc, char *cerr,
                    cmk_errbuf *eb)
{
    char url[4096], fullkey[CMK_S3_KEY_MAX_ENC], hash[65], hdr[4200];
    struct curl_slist *hl = NULL, *t;
    struct xfer x = {.c = c, .r = r, .body = r->body};
    cmk_err rc;

    r->resp_len = 0;
    r->status = 0;
    r->etag[0] = '\0';
    r->code[0] = '\0';
    r->total = 0;
    r->mtime = 0;
    r->writer_got[0] = '\0';
    if (r->key) {
        if (snprintf(fullkey, sizeof(fullkey), "%s%s", h->conf.prefix, r->key) >=
            (int)sizeof(fullkey))
            return cmk_errbuf_set(eb, CMK_E_INVAL, "object key too long");
    } else {
        fullkey[0] = '\0';
    }
    rc = cmk_s3_url(&h->conf, fullkey, r->query, url, sizeof(url), eb);
    if (rc != CMK_OK)
        return rc;
    payload_hash(r, hash);
#define ADD(...)                                                                                   \
    do {                                                                                           \
        snprintf(hdr, sizeof(hdr), __VA_ARGS__);                                                   \
        t = curl_slist_append(hl, hdr);                                                            \
        if (!t) {                                                                                  \
            rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (S3 request)");                    \
            goto out;                                                                              \
        }                                                                                          \
        hl = t;                                                                                    \
    } while (0)
    ADD("x-amz-content-sha256: %s", hash);
    if (h->conf.token[0])
        ADD("x-amz-security-token: %s", h->conf.token);
    if (r->if_match)
        ADD("If-Match: %s", r->if_match);
    if (r->if_none_match)
        ADD("If-None-Match: *");
    if (r->writer)
        ADD("x-amz-meta-cmk-writer: %s", r->writer);
    if (r->range_len)
        ADD("Range: bytes=%" PRIu64 "-%" PRIu64, r->range_off, r->range_off + r->range_len - 1);
#undef ADD
    cerr[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, h->sigv4);
    curl_easy_setopt(c, CURLOPT_USERPWD, h->userpwd);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    /* A transfer that moves nothing for 30 s is dead (a large part may take long). */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    /* The body is sent without waiting on the gateway's "100 Continue": it is in memory and
     * a refused one costs only its own resend, while the wait is a round trip through the
     * gateway on every part. (A header "Expect:" to drop it would be signed by SigV4 and
     * not sent: the signature would not match.) */
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
    /* Blob parts and chunks are MiBs: large buffers move them in few system calls and
     * callbacks (curl's defaults, 64 KiB up and 16 KiB down, cost a poll and a copy each). */
    curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, (long)XFER_BUF);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)XFER_BUF);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->conf.cafile[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, h->conf.cafile);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    if (r->cancel) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
    }
    if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &x);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "DELETE") == 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    *cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (x.nomem)
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (S3 answer)");
    else if (x.overflow) {
        char s[1200];
        shown(h, r, s, sizeof(s));
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "S3 %s %s: the answer is larger than expected",
                            r->method, s);
    }
out:
    curl_slist_free_all(hl);
    return rc;
}

cmk_err cmk_s3_http_do(cmk_s3_http *h, cmk_s3_req *r, cmk_errbuf *eb)
{
    char cerr[CURL_ERROR_SIZE], s[1200], msg[256];
    CURL *c = take(h);
    CURLcode cc = CURLE_OK;
    cmk_err rc = CMK_OK;

    r->tries = 0;
    if (!c)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (curl handle)");
    for (int attempt = 0; attempt < CMK_S3_TRIES; attempt++) {
        if (attempt > 0)
            backoff(attempt - 1);
        r->tries++;
        rc = once(h, c, r, &cc, cerr, eb);
        if (rc != CMK_OK || (r->sink && r->resp_len > 0))
            break;
        if (cc != CURLE_OK) {
            if (retryable_curl(cc))
                continue;
            break;
        }
        if (retryable_status(r->status))
            continue;
        break;
    }
    give(h, c);
    if (rc != CMK_OK)
        return rc;
    shown(h, r, s, sizeof(s));
    if (cc != CURLE_OK)
        return cmk_errbuf_set(eb, CMK_E_IO, "S3 %s %s at %s failed after %d tries: %s", r->method,
                              s, h->conf.endpoint, r->tries,
                              cerr[0] ? cerr : curl_easy_strerror(cc));
    if (r->status / 100 == 2)
        return CMK_OK;
    cmk_s3_xml_error(r->dst || r->dstv ? NULL : r->resp, r->dst || r->dstv ? 0 : r->resp_len,
                     r->code, sizeof(r->code), msg, sizeof(msg));
    rc = r->status == 404   ? CMK_E_NOT_FOUND
         : r->status == 412 ? CMK_E_BUSY
         : r->status == 416 ? CMK_E_RANGE
         : r->status == 403 ? CMK_E_REFUSED
                            : CMK_E_IO;
    /* A HEAD's answer has no error document: say what a bare 403 means. */
    return cmk_errbuf_set(eb, rc, "S3 %s %s: HTTP %ld %s%s%s", r->method, s, r->status,
                          r->code[0]         ? r->code
                          : r->status == 403 ? "access denied (check the credentials and the "
                                               "bucket's permissions)"
                                             : "(no S3 error code)",
                          msg[0] ? ": " : "", msg);
}
