/* http.c — the akv provider's HTTPS transport (see http.h). */
#include "kek/akv/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/base/secmem.h"
#include "kek/akv/errmap.h"
#include "kek/akv/json.h"

struct cmk_akv_http {
    cmk_akv_http_cfg cfg;
    char ca_file[4096];
    STACK_OF(X509) * cas; /* extra CAs, added to every TLS context's store */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void cmk_akv_http_cfg_default(cmk_akv_http_cfg *cfg)
{
    const char *env = getenv("CMKSTORE_AKV_MAX_ATTEMPTS");

    memset(cfg, 0, sizeof(*cfg));
    cfg->ca_file = getenv("CMKSTORE_CA_FILE");
    cfg->max_attempts = 4;
    if (env && env[0] >= '1' && env[0] <= '9' &&
        (!env[1] || (env[0] == '1' && env[1] == '0' && !env[2])))
        cfg->max_attempts = (unsigned)atoi(env);
    cfg->retry_after_cap_s = 10;
    cfg->backoff_ms = 250;
    cfg->sleep_budget_ms = 20000;
    cfg->connect_timeout_s = 10;
    cfg->timeout_s = 30;
}

static cmk_err load_cas(cmk_akv_http *h, cmk_errbuf *eb)
{
    FILE *f = fopen(h->ca_file, "r");
    X509 *x;

    if (!f)
        return cmk_errbuf_sys(eb, CMK_E_INVAL, errno, "cannot read the CA file %s", h->ca_file);
    h->cas = sk_X509_new_null();
    while (h->cas && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(h->cas, x)) {
            X509_free(x);
            break;
        }
    fclose(f);
    if (!h->cas || sk_X509_num(h->cas) == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "CA file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                              h->ca_file);
    return CMK_OK;
}

cmk_err cmk_akv_http_new(const cmk_akv_http_cfg *cfg, cmk_akv_http **out, cmk_errbuf *eb)
{
    cmk_akv_http *h;
    cmk_err rc = CMK_OK;

    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "libcurl failed to initialise: %s",
                              curl_easy_strerror(curl_init_rc));
    h = calloc(1, sizeof(*h));
    if (!h)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory setting up HTTPS");
    h->cfg = *cfg;
    if (h->cfg.max_attempts == 0)
        h->cfg.max_attempts = 1;
    if (cfg->ca_file && *cfg->ca_file) {
        if (strlen(cfg->ca_file) >= sizeof(h->ca_file))
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "CA file path too long");
        else {
            memcpy(h->ca_file, cfg->ca_file, strlen(cfg->ca_file) + 1);
            rc = load_cas(h, eb);
        }
    }
    h->cfg.ca_file = h->ca_file[0] ? h->ca_file : NULL;
    if (rc != CMK_OK) {
        cmk_akv_http_free(h);
        return rc;
    }
    *out = h;
    return CMK_OK;
}

void cmk_akv_http_free(cmk_akv_http *h)
{
    if (!h)
        return;
    if (h->cas)
        sk_X509_pop_free(h->cas, X509_free);
    free(h);
}

void cmk_akv_resp_free(cmk_akv_resp *r)
{
    if (!r)
        return;
    cmk_secfree(r->body);
    memset(r, 0, sizeof(*r));
}

long cmk_akv_retry_after_parse(const char *v, long now)
{
    long n = 0;
    const char *p;
    time_t t;

    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (!*v)
        return -1;
    for (p = v; *p >= '0' && *p <= '9'; p++) {
        if (n > 100000000L)
            return -1;
        n = n * 10 + (*p - '0');
    }
    if (p != v) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        return *p ? -1 : n;
    }
    t = curl_getdate(v, NULL);
    if (t == (time_t)-1)
        return -1;
    return (long)t > now ? (long)t - now : 0;
}

/* ---- one exchange ---------------------------------------------------------------------- */

typedef struct sink {
    char *buf; /* cmk_secalloc'd */
    size_t len, cap;
    int too_big;
    char www_auth[1024];
    char retry_after[128];
} sink;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    sink *s = arg;
    size_t n = size * nmemb;

    if (s->len + n > CMK_AKV_BODY_MAX) {
        s->too_big = 1;
        return 0;
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        char *nb;
        while (cap < s->len + n + 1)
            cap *= 2;
        nb = cmk_secalloc(cap);
        if (!nb)
            return 0;
        if (s->len)
            memcpy(nb, s->buf, s->len);
        cmk_secfree(s->buf);
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

/* Keeps the headers of the last response only (a new status line starts afresh). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    sink *s = arg;
    size_t n = size * nmemb, vl;
    const char *v;
    char *dst = NULL;
    size_t cap = 0;

    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        s->www_auth[0] = '\0';
        s->retry_after[0] = '\0';
        return n;
    }
    if (n > 17 && strncasecmp(data, "WWW-Authenticate:", 17) == 0) {
        v = data + 17;
        dst = s->www_auth;
        cap = sizeof(s->www_auth);
    } else if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
        v = data + 12;
        dst = s->retry_after;
        cap = sizeof(s->retry_after);
    }
    if (!dst)
        return n;
    vl = n - (size_t)(v - data);
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (vl < cap && !dst[0]) {
        memcpy(dst, v, vl);
        dst[vl] = '\0';
    }
    return n;
}

static CURLcode on_ssl_ctx(CURL *curl, void *ctx, void *arg)
{
    const cmk_akv_http *h = arg;
    X509_STORE *st = SSL_CTX_get_cert_store((SSL_CTX *)ctx);

    (void)curl;
    for (int i = 0; h->cas && i < sk_X509_num(h->cas); i++)
        X509_STORE_add_cert(st, sk_X509_value(h->cas, i)); /* a duplicate is no fault */
    ERR_clear_error(); /* ... and leaves nothing in this thread's OpenSSL error queue */
    return CURLE_OK;
}

/* One request: *status 0 and curl's reason in err on a transport fault. */
static CURLcode exchange(cmk_akv_http *h, const cmk_akv_req *rq, sink *s, long *status,
                         char err[CURL_ERROR_SIZE])
{
    struct curl_slist *hl = NULL, *t;
    CURL *c = curl_easy_init();
    CURLcode cc = CURLE_OUT_OF_MEMORY;

    *status = 0;
    err[0] = '\0';
    if (!c)
        return cc;
    for (const char *const *p = rq->headers; p && *p; p++) {
        t = curl_slist_append(hl, *p);
        if (!t)
            goto out;
        hl = t;
    }
    /* No "Expect: 100-continue" round trip for small bodies. */
    t = curl_slist_append(hl, "Expect:");
    if (!t)
        goto out;
    hl = t;
    if ((cc = curl_easy_setopt(c, CURLOPT_URL, rq->url)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR,
                               rq->allow_http ? "http,https" : "https")) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, h->cfg.connect_timeout_s)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_TIMEOUT, h->cfg.timeout_s)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_WRITEDATA, s)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_HEADERDATA, s)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_USERAGENT, "cmkstore-akv/1")) != CURLE_OK)
        goto out;
    /* The managed-identity endpoint is link-local or on the host: never through a proxy. */
    if (rq->allow_http && (cc = curl_easy_setopt(c, CURLOPT_NOPROXY, "*")) != CURLE_OK)
        goto out;
    if (h->cas && ((cc = curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx)) != CURLE_OK ||
                   (cc = curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, h)) != CURLE_OK))
        goto out;
    if (strcmp(rq->method, "POST") == 0) {
        if ((cc = curl_easy_setopt(c, CURLOPT_POST, 1L)) != CURLE_OK ||
            (cc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)rq->bodylen)) != CURLE_OK ||
            (cc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "")) != CURLE_OK)
            goto out;
    }
    cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        cc = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
out:
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return cc;
}

/* Transport faults that may pass: a refused or dropped connection, a timeout. A certificate
 * that does not verify, a bad URL or a refused protocol will not, and is not retried. */
static int transient(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

cmk_err cmk_akv_http_do(cmk_akv_http *h, const cmk_akv_req *rq, const char *what,
                        cmk_akv_resp *resp, cmk_errbuf *eb)
{
    unsigned backoff = h->cfg.backoff_ms, slept = 0;
    char err[CURL_ERROR_SIZE];
    CURLcode cc = CURLE_OK;
    sink s;

    memset(resp, 0, sizeof(*resp));
    for (;;) {
        unsigned wait;
        long status, ra;

        memset(&s, 0, sizeof(s));
        cc = exchange(h, rq, &s, &status, err);
        resp->attempts++;
        resp->status = status;
        if (cc == CURLE_OK && !cmk_akv_status_retryable(status))
            break;
        ra = cc == CURLE_OK ? cmk_akv_retry_after_parse(s.retry_after, (long)time(NULL)) : -1;
        if (resp->attempts >= h->cfg.max_attempts || (cc != CURLE_OK && !transient(cc)))
            break;
        if (ra >= 0)
            wait = (unsigned)(ra > (long)h->cfg.retry_after_cap_s ? h->cfg.retry_after_cap_s : ra) *
                   1000u;
        else {
            wait = backoff;
            backoff = backoff > 8000 ? 16000 : backoff * 2;
        }
        if (slept + wait > h->cfg.sleep_budget_ms)
            break;
        slept += wait;
        cmk_secfree(s.buf);
        if (wait)
            sleep_ms(wait);
    }
    if (cc != CURLE_OK) {
        cmk_secfree(s.buf);
        if (s.too_big)
            return cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE, "%s sent a reply larger than %u bytes",
                                  what, CMK_AKV_BODY_MAX);
        return cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE, "%s did not answer after %u attempt%s: %s",
                              what, resp->attempts, resp->attempts == 1 ? "" : "s",
                              err[0] ? err : curl_easy_strerror(cc));
    }
    resp->body = s.buf;
    resp->len = s.len;
    snprintf(resp->www_auth, sizeof(resp->www_auth), "%s", s.www_auth);
    return CMK_OK;
}
