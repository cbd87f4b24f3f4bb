/* token.c — access tokens from workload identity, a client secret or IMDS, cached per
 * identity (see token.h). */
#include "kek/akv/token.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/base/secmem.h"
#include "kek/provider.h"

/* ---- cache ------------------------------------------------------------------------------ */

typedef struct tentry {
    struct tentry *next;
    char *key;
    char *value; /* secure memory */
    int64_t expires_on, renew_at;
} tentry;

struct cmk_akv_tcache {
    pthread_mutex_t mu;
    tentry *head;
    size_t n;
};

cmk_err cmk_akv_tcache_new(cmk_akv_tcache **out, cmk_errbuf *eb)
{
    *out = calloc(1, sizeof(**out));
    if (!*out)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory making the token cache");
    pthread_mutex_init(&(*out)->mu, NULL);
    return CMK_OK;
}

static void entry_free(tentry *e)
{
    if (!e)
        return;
    free(e->key);
    cmk_secfree(e->value);
    free(e);
}

void cmk_akv_tcache_free(cmk_akv_tcache *c)
{
    if (!c)
        return;
    while (c->head) {
        tentry *e = c->head;
        c->head = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Unlinks key's entry (caller holds the lock) and returns it. */
static tentry *unlink_entry(cmk_akv_tcache *c, const char *key)
{
    for (tentry **pp = &c->head; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            tentry *e = *pp;
            *pp = e->next;
            c->n--;
            return e;
        }
    }
    return NULL;
}

char *cmk_akv_tcache_get(cmk_akv_tcache *c, const char *key, int64_t now)
{
    char *copy = NULL;

    pthread_mutex_lock(&c->mu);
    for (tentry *e = c->head; e; e = e->next) {
        if (strcmp(e->key, key) != 0)
            continue;
        if (now < e->renew_at) {
            size_t n = strlen(e->value);
            copy = cmk_secalloc(n + 1);
            if (copy)
                memcpy(copy, e->value, n + 1);
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return copy;
}

cmk_err cmk_akv_tcache_put(cmk_akv_tcache *c, const char *key, cmk_akv_token *t, int64_t got_at,
                           cmk_errbuf *eb)
{
    tentry *e = calloc(1, sizeof(*e));
    int64_t life = t->expires_on - got_at, margin = 300;

    if (!e || !(e->key = strdup(key))) {
        free(e);
        cmk_akv_token_clear(t);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory caching a token");
    }
    /* Renewed ahead of expiry, so a request never goes out with a token about to lapse;
     * a short-lived token is renewed at half its life. */
    if (life / 2 < margin)
        margin = life > 0 ? life / 2 : 0;
    e->value = t->value;
    e->expires_on = t->expires_on;
    e->renew_at = t->expires_on - margin;
    t->value = NULL;
    t->len = 0;
    pthread_mutex_lock(&c->mu);
    entry_free(unlink_entry(c, key));
    e->next = c->head;
    c->head = e;
    c->n++;
    pthread_mutex_unlock(&c->mu);
    return CMK_OK;
}

void cmk_akv_tcache_drop(cmk_akv_tcache *c, const char *key)
{
    pthread_mutex_lock(&c->mu);
    entry_free(unlink_entry(c, key));
    pthread_mutex_unlock(&c->mu);
}

size_t cmk_akv_tcache_size(cmk_akv_tcache *c)
{
    size_t n;

    pthread_mutex_lock(&c->mu);
    n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- sources ---------------------------------------------------------------------------- */

typedef enum { SRC_WORKLOAD, SRC_SECRET, SRC_MANAGED } src_kind;

struct cmk_akv_auth {
    cmk_akv_http *http; /* borrowed */
    cmk_akv_tcache *cache;
    src_kind kind;
    char client_id[128]; /* workload / secret: AZURE_CLIENT_ID */
    char tenant[128];    /* AZURE_TENANT_ID ("" : the challenge's) */
    char authority[512]; /* https://login.microsoftonline.com */
    char assertion_file[4096];
    char secret_file[4096]; /* "" : AZURE_CLIENT_SECRET */
    char imds[1024];        /* token endpoint URL, without query */
    char imds_header[256];  /* "X-IDENTITY-HEADER: ..." or "" */
    pthread_mutex_t mu;
    unsigned long fetches;
};

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static cmk_err copy_env(char *dst, size_t cap, const char *name, cmk_errbuf *eb)
{
    const char *v = env(name);

    if (!v)
        return CMK_OK;
    if (strlen(v) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s is too long", name);
    memcpy(dst, v, strlen(v) + 1);
    return CMK_OK;
}

static void trim_slash(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

cmk_err cmk_akv_auth_new(cmk_akv_http *http, cmk_akv_auth **out, cmk_errbuf *eb)
{
    const char *want = env("CMKSTORE_AZURE_CREDENTIAL");
    int has_wl, has_secret;
    cmk_akv_auth *a;
    cmk_err rc;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory setting up Azure credentials");
    a->http = http;
    pthread_mutex_init(&a->mu, NULL);
    rc = cmk_akv_tcache_new(&a->cache, eb);
    if (rc == CMK_OK)
        rc = copy_env(a->client_id, sizeof(a->client_id), "AZURE_CLIENT_ID", eb);
    if (rc == CMK_OK)
        rc = copy_env(a->tenant, sizeof(a->tenant), "AZURE_TENANT_ID", eb);
    if (rc == CMK_OK)
        rc = copy_env(a->assertion_file, sizeof(a->assertion_file), "AZURE_FEDERATED_TOKEN_FILE",
                      eb);
    if (rc == CMK_OK)
        rc = copy_env(a->secret_file, sizeof(a->secret_file), "CMKSTORE_AZURE_CLIENT_SECRET_FILE",
                      eb);
    if (rc == CMK_OK)
        rc = copy_env(a->authority, sizeof(a->authority), "AZURE_AUTHORITY_HOST", eb);
    if (rc != CMK_OK)
        goto out;
    if (!a->authority[0])
        snprintf(a->authority, sizeof(a->authority), "https://login.microsoftonline.com");
    trim_slash(a->authority);
    if (env("IDENTITY_ENDPOINT")) {
        rc = copy_env(a->imds, sizeof(a->imds), "IDENTITY_ENDPOINT", eb);
        if (rc == CMK_OK && env("IDENTITY_HEADER") &&
            (size_t)snprintf(a->imds_header, sizeof(a->imds_header), "X-IDENTITY-HEADER: %s",
                             env("IDENTITY_HEADER")) >= sizeof(a->imds_header))
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "IDENTITY_HEADER is too long");
    } else {
        char host[900] = "http://169.254.169.254";
        rc = copy_env(host, sizeof(host), "AZURE_POD_IDENTITY_AUTHORITY_HOST", eb);
        trim_slash(host);
        snprintf(a->imds, sizeof(a->imds), "%s/metadata/identity/oauth2/token", host);
    }
    if (rc != CMK_OK)
        goto out;
    has_wl = a->assertion_file[0] && a->client_id[0] && a->tenant[0];
    has_secret = a->client_id[0] && (env("AZURE_CLIENT_SECRET") || a->secret_file[0]);
    if (!want)
        a->kind = has_wl ? SRC_WORKLOAD : has_secret ? SRC_SECRET : SRC_MANAGED;
    else if (strcasecmp(want, "workload") == 0 && has_wl)
        a->kind = SRC_WORKLOAD;
    else if (strcasecmp(want, "secret") == 0 && has_secret)
        a->kind = SRC_SECRET;
    else if (strcasecmp(want, "managed") == 0)
        a->kind = SRC_MANAGED;
    else
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "CMKSTORE_AZURE_CREDENTIAL=%.32s: expected workload (needs "
                            "AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID), secret "
                            "(needs AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or a client secret "
                            "file) or managed",
                            want);
out:
    if (rc != CMK_OK) {
        cmk_akv_auth_free(a);
        return rc;
    }
    *out = a;
    return CMK_OK;
}

void cmk_akv_auth_free(cmk_akv_auth *a)
{
    if (!a)
        return;
    cmk_akv_tcache_free(a->cache);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

const char *cmk_akv_auth_kind(const cmk_akv_auth *a)
{
    return a->kind == SRC_WORKLOAD ? "workload identity"
           : a->kind == SRC_SECRET ? "client secret"
                                   : "managed identity (IMDS)";
}

const char *cmk_akv_auth_env_client(const cmk_akv_auth *a)
{
    return a->kind == SRC_MANAGED ? a->client_id : "";
}

unsigned long cmk_akv_auth_fetches(const cmk_akv_auth *a)
{
    unsigned long n;

    pthread_mutex_lock((pthread_mutex_t *)&a->mu);
    n = a->fetches;
    pthread_mutex_unlock((pthread_mutex_t *)&a->mu);
    return n;
}

/* A growing text in secure memory (form bodies carry secrets). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int fail;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->fail)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        np = cmk_secalloc(cap);
        if (!np) {
            b->fail = 1;
            return;
        }
        if (b->len)
            memcpy(np, b->p, b->len);
        cmk_secfree(b->p);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Percent-encodes s (all but the unreserved characters) for a query or form value. */
static void sb_pct(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            sb_add(b, (const char *)&c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sb_add(b, e, 3);
        }
    }
}

/* Reads a secret file (assertion or client secret) into secure memory, without its
 * trailing newline. */
static cmk_err read_secret(const char *path, const char *what, sbuf *out, cmk_errbuf *eb)
{
    char buf[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ssize_t n;

    if (fd < 0)
        return cmk_errbuf_sys(eb, CMK_E_KEY_DENIED, errno, "cannot read the %s file %s", what,
                              path);
    while ((n = read(fd, buf, sizeof(buf))) > 0 && out->len < 65536)
        sb_add(out, buf, (size_t)n);
    cmk_cleanse(buf, sizeof(buf));
    close(fd);
    while (out->len > 0 && (out->p[out->len - 1] == '\n' || out->p[out->len - 1] == '\r' ||
                            out->p[out->len - 1] == ' '))
        out->p[--out->len] = '\0';
    if (n < 0 || out->fail || out->len == 0)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED, "the %s file %s is empty or unreadable", what,
                              path);
    return CMK_OK;
}

/* Builds the token request for the source. url/body in secure buffers; ep: the endpoint as
 * messages show it (no query). */
static cmk_err build_request(cmk_akv_auth *a, const char *client_id, const cmk_akv_challenge *ch,
                             sbuf *url, sbuf *body, char *ep, size_t epcap, cmk_errbuf *eb)
{
    const char *tenant = a->tenant[0] ? a->tenant : ch->tenant;
    sbuf secret = {0};
    cmk_err rc = CMK_OK;

    if (a->kind == SRC_MANAGED) {
        snprintf(ep, epcap, "%s", a->imds);
        sb_str(url, a->imds);
        sb_str(url, strchr(a->imds, '?') ? "&" : "?");
        sb_str(url, "api-version=2018-02-01&resource=");
        sb_pct(url, ch->resource, strlen(ch->resource));
        if (client_id && *client_id) {
            sb_str(url, "&client_id=");
            sb_pct(url, client_id, strlen(client_id));
        }
        return url->fail ? cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory") : CMK_OK;
    }
    if (!tenant || !*tenant)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "no tenant for the %s of client %s: set AZURE_TENANT_ID (the "
                              "vault's challenge named none)",
                              cmk_akv_auth_kind(a), a->client_id);
    snprintf(ep, epcap, "%s/%s/oauth2/v2.0/token", a->authority, tenant);
    sb_str(url, a->authority);
    sb_str(url, "/");
    sb_pct(url, tenant, strlen(tenant));
    sb_str(url, "/oauth2/v2.0/token");
    sb_str(body, "grant_type=client_credentials&client_id=");
    sb_pct(body, a->client_id, strlen(a->client_id));
    sb_str(body, "&scope=");
    sb_pct(body, ch->scope, strlen(ch->scope));
    if (a->kind == SRC_WORKLOAD) {
        rc = read_secret(a->assertion_file, "federated token", &secret, eb);
        sb_str(body, "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-"
                     "type%3Ajwt-bearer&client_assertion=");
    } else if (a->secret_file[0]) {
        rc = read_secret(a->secret_file, "client secret", &secret, eb);
        sb_str(body, "&client_secret=");
    } else {
        const char *s = getenv("AZURE_CLIENT_SECRET");
        sb_str(&secret, s ? s : "");
        sb_str(body, "&client_secret=");
    }
    if (rc == CMK_OK)
        sb_pct(body, secret.p ? secret.p : "", secret.len);
    cmk_secfree(secret.p);
    if (rc == CMK_OK && (url->fail || body->fail || secret.fail))
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    return rc;
}

static cmk_err fetch(cmk_akv_auth *a, const char *client_id, const cmk_akv_challenge *ch,
                     cmk_akv_token *tok, int64_t *got_at, cmk_errbuf *eb)
{
    const char *who =
        a->kind == SRC_MANAGED ? (client_id && *client_id ? client_id : "[system]") : a->client_id;
    const char *hdrs[4] = {NULL};
    char ep[1200], what[1400];
    sbuf url = {0}, body = {0};
    cmk_akv_resp r;
    cmk_err rc;

    memset(&r, 0, sizeof(r));
    rc = build_request(a, client_id, ch, &url, &body, ep, sizeof(ep), eb);
    if (rc != CMK_OK)
        goto out;
    if (a->kind == SRC_MANAGED) {
        hdrs[0] = "Metadata: true";
        hdrs[1] = a->imds_header[0] ? a->imds_header : NULL;
    } else {
        hdrs[0] = "Content-Type: application/x-www-form-urlencoded";
    }
    snprintf(what, sizeof(what), "the %s endpoint %s (identity %.64s)", cmk_akv_auth_kind(a), ep,
             who);
    {
        cmk_akv_req rq = {.method = a->kind == SRC_MANAGED ? "GET" : "POST",
                          .url = url.p,
                          .headers = hdrs,
                          .body = body.p,
                          .bodylen = body.len,
                          .allow_http = a->kind == SRC_MANAGED};
        rc = cmk_akv_http_do(a->http, &rq, what, &r, eb);
    }
    pthread_mutex_lock(&a->mu);
    a->fetches++;
    pthread_mutex_unlock(&a->mu);
    if (rc != CMK_OK)
        goto out;
    *got_at = (int64_t)time(NULL);
    if (r.status == 200) {
        rc = cmk_akv_token_parse(r.body, r.len, *got_at, tok, eb);
        if (rc != CMK_OK)
            rc = cmk_eb_prefix(eb, CMK_E_KEY_UNREACHABLE, "%s", what);
    } else {
        cmk_akv_error e;
        cmk_akv_error_parse(r.body, r.len, &e);
        rc = cmk_errbuf_set(
            eb,
            r.status == 400 || r.status == 401 || r.status == 403 ? CMK_E_KEY_DENIED
                                                                  : CMK_E_KEY_UNREACHABLE,
            "%s refused a token for resource %s: HTTP %ld%s%s%s%s", what, ch->resource, r.status,
            e.code[0] ? " " : "", e.code, e.message[0] ? ": " : "", e.message);
    }
out:
    cmk_akv_resp_free(&r);
    cmk_secfree(url.p);
    cmk_secfree(body.p);
    return rc;
}

cmk_err cmk_akv_auth_token(cmk_akv_auth *a, const char *client_id, const cmk_akv_challenge *ch,
                           int fresh, char **token, cmk_errbuf *eb)
{
    char key[1024];
    cmk_akv_token t;
    int64_t got_at = 0;
    cmk_err rc;

    *token = NULL;
    snprintf(key, sizeof(key), "%d|%s|%s|%s", (int)a->kind,
             a->kind == SRC_MANAGED ? (client_id ? client_id : "") : a->client_id,
             a->tenant[0] ? a->tenant : ch->tenant, ch->resource);
    if (!fresh) {
        *token = cmk_akv_tcache_get(a->cache, key, (int64_t)time(NULL));
        if (*token)
            return CMK_OK;
    }
    rc = fetch(a, client_id, ch, &t, &got_at, eb);
    if (rc != CMK_OK)
        return rc;
    *token = cmk_secalloc(t.len + 1);
    if (!*token) {
        cmk_akv_token_clear(&t);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    }
    memcpy(*token, t.value, t.len + 1);
    rc = cmk_akv_tcache_put(a->cache, key, &t, got_at, eb);
    if (rc != CMK_OK) {
        cmk_secfree(*token);
        *token = NULL;
    }
    return rc;
}
