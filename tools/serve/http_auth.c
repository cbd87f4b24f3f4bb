/* http_auth.c — see http_auth.h. */
#include "tools/serve/http_auth.h"

#include "tools/serve/http_util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define USER_MAX    255
#define PASS_MAX    1024
#define SALT_MAX    64
#define HASH_MIN    16
#define HASH_MAX    64
#define TOKEN_MIN   16
#define TOKEN_MAX   4096
#define FILE_MAX    (1u << 20)
#define CACHE_SLOTS 64
#define FAIL_SLOTS  1024 /* failure records (addresses and user names) */
#define FAIL_FORGET 600  /* failures further apart than this (seconds) do not add up */
#define SCHEME      "$pbkdf2-sha256$"

struct user_entry {
    char name[USER_MAX + 1];
    unsigned iterations;
    unsigned char salt[SALT_MAX];
    size_t saltlen;
    unsigned char hash[HASH_MAX];
    size_t hashlen;
};

/* Failed password checks of one client address or one user name. */
struct fail_entry {
    unsigned char id[32]; /* HMAC of 'a' + address or 'u' + user name */
    unsigned fails;       /* in a row */
    double last;          /* monotonic time of the last failure */
    int used;
};

struct http_auth {
    struct user_entry *users;
    size_t nusers;
    unsigned char (*tokens)[32]; /* SHA-256 of each token: compared in constant time */
    size_t ntokens;
    int basic, bearer;
    unsigned char cache_key[32];
    unsigned char cache[CACHE_SLOTS][32];
    int cache_used[CACHE_SLOTS];
    unsigned cache_next;
    struct fail_entry fails[FAIL_SLOTS];
    unsigned max_checks, failure_limit, backoff_s;
    unsigned running; /* PBKDF2 computations now */
    http_metrics *metrics;
    pthread_mutex_t mu; /* guards the cache, fails and running */
    pthread_cond_t slot_free;
};

#define fail http_fail /* tools/serve/http_util.h */

/* Reads a secret file whole, refusing anything but a regular file private to its owner. */
static cmk_err read_secret_file(const char *path, char **out, size_t *len, char *err, size_t cap)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    cmk_err rc = CMK_OK;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fail(err, cap, errno == ENOENT ? CMK_E_NOT_FOUND : CMK_E_IO, "cannot open %s: %s",
                    path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = fail(err, cap, CMK_E_IO, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fail(err, cap, CMK_E_INVAL, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = fail(err, cap, CMK_E_REFUSED,
                  "%s is accessible to group or others (mode %04o); it holds secrets: run "
                  "`chmod 600 %s`",
                  path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if ((uint64_t)st.st_size > FILE_MAX) {
        rc = fail(err, cap, CMK_E_INVAL, "%s is larger than %u bytes", path, FILE_MAX);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = fail(err, cap, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fail(err, cap, CMK_E_IO, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    if (buf) {
        OPENSSL_cleanse(buf, (size_t)st.st_size);
        free(buf);
    }
    close(fd);
    return rc;
}

/* Standard base64, padding optional. Returns 0 and the decoded length, or -1. */
static int b64_decode(const char *in, size_t inlen, unsigned char *out, size_t cap, size_t *outlen)
{
    char tmp[4 * ((HASH_MAX + SALT_MAX + PASS_MAX + USER_MAX) / 3 + 4)];
    unsigned char dec[sizeof(tmp)];
    size_t pad = 0, n = inlen;
    int r;

    if (n == 0 || n + 3 > sizeof(tmp))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || (c == '=' && i >= n - 2)))
            return -1;
    }
    memcpy(tmp, in, n);
    while (n % 4)
        tmp[n++] = '=';
    if (n >= 1 && tmp[n - 1] == '=')
        pad++;
    if (n >= 2 && tmp[n - 2] == '=')
        pad++;
    r = EVP_DecodeBlock(dec, (const unsigned char *)tmp, (int)n);
    if (r < 0 || (size_t)r < pad || (size_t)r - pad > cap)
        return -1;
    memcpy(out, dec, (size_t)r - pad);
    *outlen = (size_t)r - pad;
    OPENSSL_cleanse(dec, sizeof(dec));
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return 0;
}

static int user_ok(const char *u, size_t n)
{
    if (n == 0 || n > USER_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f || u[i] == ':')
            return 0;
    return 1;
}

/* user:$pbkdf2-sha256$iter$salt$hash */
static int parse_user_line(const char *line, size_t len, struct user_entry *e)
{
    const char *colon = memchr(line, ':', len), *p, *end = line + len, *d1, *d2;
    char num[16];
    uint64_t iter = 0;

    if (!colon || !user_ok(line, (size_t)(colon - line)))
        return -1;
    memcpy(e->name, line, (size_t)(colon - line));
    e->name[colon - line] = '\0';
    p = colon + 1;
    if ((size_t)(end - p) < strlen(SCHEME) || memcmp(p, SCHEME, strlen(SCHEME)) != 0)
        return -1;
    p += strlen(SCHEME);
    d1 = memchr(p, '$', (size_t)(end - p));
    if (!d1 || d1 == p || (size_t)(d1 - p) >= sizeof(num))
        return -1;
    memcpy(num, p, (size_t)(d1 - p));
    num[d1 - p] = '\0';
    for (const char *q = num; *q; q++) {
        if (*q < '0' || *q > '9')
            return -1;
        iter = iter * 10 + (uint64_t)(*q - '0');
    }
    if (iter < 1000 || iter > HTTP_AUTH_MAX_ITERATIONS)
        return -1;
    e->iterations = (unsigned)iter;
    p = d1 + 1;
    d2 = memchr(p, '$', (size_t)(end - p));
    if (!d2)
        return -1;
    if (b64_decode(p, (size_t)(d2 - p), e->salt, SALT_MAX, &e->saltlen) != 0 || e->saltlen < 8)
        return -1;
    p = d2 + 1;
    if (b64_decode(p, (size_t)(end - p), e->hash, HASH_MAX, &e->hashlen) != 0 ||
        e->hashlen < HASH_MIN)
        return -1;
    return 0;
}

static const char *trim(const char *s, size_t *len)
{
    size_t n = *len;

    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    *len = n;
    return s;
}

/* Steps *p to the next line of [*p, end): the line, trimmed, in *line / *n. 0 at the end. */
static int next_line(const char **p, const char *end, const char **line, size_t *n)
{
    const char *nl;
    size_t len;

    if (*p >= end)
        return 0;
    nl = memchr(*p, '\n', (size_t)(end - *p));
    len = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    *line = trim(*p, &len);
    *n = len;
    *p = nl ? nl + 1 : end;
    return 1;
}

/* Takes one non-empty line (n bytes, not terminated) of file path, its lineno-th. */
typedef cmk_err (*line_fn)(http_auth *a, const char *line, size_t n, size_t lineno,
                           const char *path, char *err, size_t cap);

/* Reads the secret file path and hands each non-empty line to add, stopping at its first
 * failure; the file's bytes are wiped before they are freed. */
static cmk_err load_lines(http_auth *a, const char *path, line_fn add, char *err, size_t cap)
{
    char *buf = NULL;
    size_t len = 0, lineno = 0, n;
    const char *p, *line;
    cmk_err rc;

    rc = read_secret_file(path, &buf, &len, err, cap);
    if (rc != CMK_OK)
        return rc;
    p = buf;
    while (rc == CMK_OK && next_line(&p, buf + len, &line, &n)) {
        lineno++;
        if (n > 0)
            rc = add(a, line, n, lineno, path, err, cap);
    }
    OPENSSL_cleanse(buf, len);
    free(buf);
    return rc;
}

static cmk_err add_user(http_auth *a, const char *line, size_t n, size_t lineno, const char *path,
                        char *err, size_t cap)
{
    struct user_entry *nu;

    if (line[0] == '#')
        return CMK_OK;
    nu = realloc(a->users, (a->nusers + 1) * sizeof(*nu));
    if (!nu)
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    a->users = nu;
    memset(&nu[a->nusers], 0, sizeof(*nu));
    if (parse_user_line(line, n, &nu[a->nusers]) != 0)
        return fail(err, cap, CMK_E_INVAL,
                    "%s line %zu: expected user:$pbkdf2-sha256$<iterations>$<salt>$<hash> "
                    "(make one with `cmkstore serve-passwd USER`)",
                    path, lineno);
    a->nusers++;
    return CMK_OK;
}

static cmk_err add_token(http_auth *a, const char *line, size_t n, size_t lineno, const char *path,
                         char *err, size_t cap)
{
    unsigned char(*nt)[32];
    int ok = 1;

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] <= 0x20 || (unsigned char)line[i] >= 0x7f)
            ok = 0;
    if (!ok || n < TOKEN_MIN || n > TOKEN_MAX)
        return fail(err, cap, CMK_E_INVAL,
                    "%s line %zu: a token is %d to %d printable characters without spaces", path,
                    lineno, TOKEN_MIN, TOKEN_MAX);
    nt = realloc(a->tokens, (a->ntokens + 1) * sizeof(*nt));
    if (!nt)
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    a->tokens = nt;
    if (!EVP_Digest(line, n, nt[a->ntokens], NULL, EVP_sha256(), NULL))
        return fail(err, cap, CMK_E_CRYPTO, "SHA-256 failed");
    a->ntokens++;
    return CMK_OK;
}

static cmk_err load_htpasswd(http_auth *a, const char *path, char *err, size_t cap)
{
    cmk_err rc = load_lines(a, path, add_user, err, cap);

    if (rc == CMK_OK && a->nusers == 0)
        rc = fail(err, cap, CMK_E_INVAL, "%s holds no user", path);
    return rc;
}

static cmk_err load_tokens(http_auth *a, const char *path, char *err, size_t cap)
{
    cmk_err rc = load_lines(a, path, add_token, err, cap);

    if (rc == CMK_OK && a->ntokens == 0)
        rc = fail(err, cap, CMK_E_INVAL, "%s holds no token", path);
    return rc;
}

void http_auth_free(http_auth *a)
{
    if (!a)
        return;
    if (a->users)
        OPENSSL_cleanse(a->users, a->nusers * sizeof(*a->users));
    free(a->users);
    free(a->tokens);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->slot_free);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

cmk_err http_auth_load(const char *htpasswd, const char *token_file, http_auth **out, char *err,
                       size_t errcap)
{
    http_auth *a;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (!htpasswd && !token_file)
        return CMK_OK;
    a = calloc(1, sizeof(*a));
    if (!a)
        return fail(err, errcap, CMK_E_NOMEM, "out of memory");
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->slot_free, NULL);
    a->max_checks = HTTP_AUTH_DEFAULT_MAX_CHECKS;
    a->failure_limit = HTTP_AUTH_DEFAULT_FAILURES;
    a->backoff_s = HTTP_AUTH_DEFAULT_BACKOFF;
    if (RAND_bytes(a->cache_key, sizeof(a->cache_key)) != 1) {
        rc = fail(err, errcap, CMK_E_CRYPTO, "no randomness");
        goto out;
    }
    if (htpasswd) {
        rc = load_htpasswd(a, htpasswd, err, errcap);
        if (rc != CMK_OK)
            goto out;
        a->basic = 1;
    }
    if (token_file) {
        rc = load_tokens(a, token_file, err, errcap);
        if (rc != CMK_OK)
            goto out;
        a->bearer = 1;
    }
    *out = a;
    a = NULL;
out:
    http_auth_free(a);
    return rc;
}

int http_auth_has_basic(const http_auth *a)
{
    return a && a->basic;
}

int http_auth_has_bearer(const http_auth *a)
{
    return a && a->bearer;
}

void http_auth_set_limits(http_auth *a, const http_auth_limits *l, http_metrics *m)
{
    if (!a)
        return;
    a->max_checks = l && l->max_checks ? l->max_checks : HTTP_AUTH_DEFAULT_MAX_CHECKS;
    a->failure_limit = l && l->failure_limit ? l->failure_limit : HTTP_AUTH_DEFAULT_FAILURES;
    a->backoff_s = l && l->backoff_s ? l->backoff_s : HTTP_AUTH_DEFAULT_BACKOFF;
    a->metrics = m;
}

/* HMAC-SHA256 under the per-process key of kind ('c' credentials, 'a' address, 'u' user)
 * followed by p1, a 0 byte and p2 (either may be empty). */
static int keyed_tag(http_auth *a, char kind, const void *p1, size_t n1, const void *p2, size_t n2,
                     unsigned char tag[32])
{
    unsigned char buf[2 + USER_MAX + PASS_MAX];
    size_t outlen = 0;
    int ok;

    if (n1 > USER_MAX || n2 > PASS_MAX)
        return -1;
    buf[0] = (unsigned char)kind;
    if (n1)
        memcpy(buf + 1, p1, n1);
    buf[1 + n1] = 0;
    if (n2)
        memcpy(buf + 2 + n1, p2, n2);
    ok = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, a->cache_key, sizeof(a->cache_key), buf,
                   2 + n1 + n2, tag, 32, &outlen) != NULL;
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok ? 0 : -1;
}

/* Callers hold a->mu. */
static int cache_has(const http_auth *a, const unsigned char tag[32])
{
    int hit = 0;

    for (unsigned i = 0; i < CACHE_SLOTS; i++)
        hit |= a->cache_used[i] && CRYPTO_memcmp(a->cache[i], tag, 32) == 0;
    return hit;
}

/* The failure record of id (callers hold a->mu); with create, a new one takes a free slot or
 * the one whose last failure is oldest. NULL: none. */
static struct fail_entry *fail_find(http_auth *a, const unsigned char id[32], int create)
{
    struct fail_entry *victim = NULL;

    for (unsigned i = 0; i < FAIL_SLOTS; i++) {
        struct fail_entry *e = &a->fails[i];
        if (e->used && memcmp(e->id, id, 32) == 0)
            return e;
        if (!victim || (victim->used && (!e->used || e->last < victim->last)))
            victim = e;
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->id, id, 32);
    victim->used = 1;
    return victim;
}

/* Seconds id must still wait (0: none) once it has limit failures in a row. */
static unsigned backoff_left(http_auth *a, const unsigned char *id, unsigned limit, double now)
{
    const struct fail_entry *e = id ? fail_find(a, id, 0) : NULL;
    double left;

    if (!e || e->fails < limit)
        return 0;
    left = e->last + a->backoff_s - now;
    return left > 0 ? (unsigned)left + 1 : 0;
}

static void note_result(http_auth *a, const unsigned char *id, int ok, double now)
{
    struct fail_entry *e;

    if (!id)
        return;
    e = fail_find(a, id, !ok);
    if (!e)
        return;
    if (ok) {
        e->used = 0;
        return;
    }
    if (now - e->last > FAIL_FORGET)
        e->fails = 0;
    e->fails++;
    e->last = now;
}

/* Waits for a password-check slot. Returns HTTP_AUTH_OK with a slot held (*run = 1), or
 * without one when the credentials were verified meanwhile (*run = 0), or HTTP_AUTH_BACKOFF. */
static enum http_auth_result check_slot(http_auth *a, const unsigned char tag[32],
                                        const unsigned char *ip, const unsigned char *user,
                                        unsigned *retry_after, int *run)
{
    enum http_auth_result res = HTTP_AUTH_OK;
    int waited = 0;

    *run = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        double now = http_mono();
        unsigned wi = backoff_left(a, ip, a->failure_limit, now);
        unsigned wu = backoff_left(a, user, a->failure_limit * HTTP_AUTH_USER_FACTOR, now);

        if (cache_has(a, tag))
            break;
        if (wi || wu) {
            *retry_after = wi > wu ? wi : wu;
            res = HTTP_AUTH_BACKOFF;
            break;
        }
        if (a->running < a->max_checks) {
            a->running++;
            *run = 1;
            break;
        }
        if (!waited)
            http_metrics_inc(a->metrics, HTTP_C_PASSWORD_WAITS);
        waited = 1;
        pthread_cond_wait(&a->slot_free, &a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    if (res == HTTP_AUTH_BACKOFF)
        http_metrics_inc(a->metrics, HTTP_C_AUTH_BACKOFF);
    return res;
}

static void check_done(http_auth *a, const unsigned char tag[32], const unsigned char *ip,
                       const unsigned char *user, int ok)
{
    double now = http_mono();

    http_metrics_checks_running(a->metrics, -1);
    if (!ok)
        http_metrics_inc(a->metrics, HTTP_C_AUTH_FAILURES);
    pthread_mutex_lock(&a->mu);
    a->running--;
    if (ok) {
        memcpy(a->cache[a->cache_next], tag, 32);
        a->cache_used[a->cache_next] = 1;
        a->cache_next = (a->cache_next + 1) % CACHE_SLOTS;
    }
    note_result(a, ip, ok, now);
    note_result(a, user, ok, now);
    /* A verified credential may release every waiter holding the same one. */
    pthread_cond_broadcast(&a->slot_free);
    pthread_mutex_unlock(&a->mu);
}

static enum http_auth_result check_basic(http_auth *a, const char *b64, const char *client,
                                         unsigned *retry_after, char *user, size_t usercap)
{
    unsigned char dec[USER_MAX + 1 + PASS_MAX + 4], tag[32], calc[HASH_MAX], ipid[32], uid[32];
    const unsigned char *ip = NULL;
    const struct user_entry *e = NULL;
    size_t n = 0, b64len = strlen(b64), ulen, plen;
    const unsigned char *colon;
    enum http_auth_result res = HTTP_AUTH_DENIED;
    int ok = 0, hit, run = 0;

    while (b64len && (b64[b64len - 1] == ' ' || b64[b64len - 1] == '\t'))
        b64len--;
    if (b64_decode(b64, b64len, dec, sizeof(dec), &n) != 0)
        return HTTP_AUTH_DENIED;
    colon = memchr(dec, ':', n);
    if (!colon)
        goto out;
    ulen = (size_t)(colon - dec);
    plen = n - ulen - 1;
    if (!user_ok((const char *)dec, ulen) || plen > PASS_MAX)
        goto out;
    if (keyed_tag(a, 'c', dec, ulen, colon + 1, plen, tag) != 0 ||
        keyed_tag(a, 'u', dec, ulen, NULL, 0, uid) != 0)
        goto out;
    if (client && *client && strlen(client) <= USER_MAX) {
        if (keyed_tag(a, 'a', client, strlen(client), NULL, 0, ipid) != 0)
            goto out;
        ip = ipid;
    }
    pthread_mutex_lock(&a->mu);
    hit = cache_has(a, tag);
    pthread_mutex_unlock(&a->mu);
    if (!hit) {
        res = check_slot(a, tag, ip, uid, retry_after, &run);
        if (res != HTTP_AUTH_OK)
            goto out;
        hit = !run;
    }
    if (hit) {
        res = HTTP_AUTH_OK;
        goto named;
    }
    http_metrics_checks_running(a->metrics, 1);
    http_metrics_inc(a->metrics, HTTP_C_PASSWORD_CHECKS);
    for (size_t i = 0; i < a->nusers; i++)
        if (strlen(a->users[i].name) == ulen && memcmp(a->users[i].name, dec, ulen) == 0)
            e = &a->users[i];
    /* An unknown user costs the same PBKDF2 work, so timing does not reveal user names. */
    if (!e) {
        const struct user_entry *u0 = &a->users[0];
        (void)PKCS5_PBKDF2_HMAC((const char *)colon + 1, (int)plen, u0->salt, (int)u0->saltlen,
                                (int)u0->iterations, EVP_sha256(), (int)u0->hashlen, calc);
    } else if (PKCS5_PBKDF2_HMAC((const char *)colon + 1, (int)plen, e->salt, (int)e->saltlen,
                                 (int)e->iterations, EVP_sha256(), (int)e->hashlen, calc) == 1) {
        ok = CRYPTO_memcmp(calc, e->hash, e->hashlen) == 0;
    }
    check_done(a, tag, ip, uid, ok);
    res = ok ? HTTP_AUTH_OK : HTTP_AUTH_DENIED;
named:
    if (res == HTTP_AUTH_OK && user && usercap > ulen) {
        memcpy(user, dec, ulen);
        user[ulen] = '\0';
    }
out:
    OPENSSL_cleanse(dec, sizeof(dec));
    OPENSSL_cleanse(calc, sizeof(calc));
    return res;
}

static int check_bearer(http_auth *a, const char *tok)
{
    unsigned char h[32];
    size_t n = strlen(tok);
    int ok = 0;

    while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        n--;
    if (n == 0 || n > TOKEN_MAX || !EVP_Digest(tok, n, h, NULL, EVP_sha256(), NULL))
        return 0;
    for (size_t i = 0; i < a->ntokens; i++)
        ok |= CRYPTO_memcmp(h, a->tokens[i], 32) == 0;
    return ok;
}

enum http_auth_result http_auth_check(http_auth *a, const char *authorization, const char *client,
                                      unsigned *retry_after, char *user, size_t usercap)
{
    const char *p = authorization;

    if (user && usercap)
        user[0] = '\0';
    if (!a)
        return HTTP_AUTH_OK;
    if (!p)
        return HTTP_AUTH_DENIED;
    while (*p == ' ')
        p++;
    if (a->basic && strncasecmp(p, "Basic ", 6) == 0)
        return check_basic(a, p + 6 + strspn(p + 6, " "), client, retry_after, user, usercap);
    /* Tokens are long random strings compared as one SHA-256: guessing them costs nothing
     * worth bounding. */
    if (a->bearer && strncasecmp(p, "Bearer ", 7) == 0)
        return check_bearer(a, p + 7 + strspn(p + 7, " ")) ? HTTP_AUTH_OK : HTTP_AUTH_DENIED;
    return HTTP_AUTH_DENIED;
}

cmk_err http_auth_make_line(const char *user, const char *password, size_t passlen,
                            unsigned iterations, char **line, char *err, size_t errcap)
{
    unsigned char salt[16], hash[32];
    char salt64[32], hash64[48];
    size_t cap;
    char *out;

    *line = NULL;
    if (!user_ok(user, strlen(user)))
        return fail(err, errcap, CMK_E_INVAL,
                    "a user name is 1 to %d characters without ':' or control characters",
                    USER_MAX);
    if (passlen == 0 || passlen > PASS_MAX)
        return fail(err, errcap, CMK_E_INVAL, "a password is 1 to %d bytes", PASS_MAX);
    if (iterations < HTTP_AUTH_MIN_ITERATIONS || iterations > HTTP_AUTH_MAX_ITERATIONS)
        return fail(err, errcap, CMK_E_INVAL, "iterations must be between %u and %u",
                    HTTP_AUTH_MIN_ITERATIONS, HTTP_AUTH_MAX_ITERATIONS);
    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        PKCS5_PBKDF2_HMAC(password, (int)passlen, salt, sizeof(salt), (int)iterations, EVP_sha256(),
                          sizeof(hash), hash) != 1)
        return fail(err, errcap, CMK_E_CRYPTO, "PBKDF2 failed");
    EVP_EncodeBlock((unsigned char *)salt64, salt, sizeof(salt));
    EVP_EncodeBlock((unsigned char *)hash64, hash, sizeof(hash));
    OPENSSL_cleanse(hash, sizeof(hash));
    cap = strlen(user) + strlen(SCHEME) + 12 + strlen(salt64) + strlen(hash64) + 4;
    out = malloc(cap);
    if (!out)
        return fail(err, errcap, CMK_E_NOMEM, "out of memory");
    snprintf(out, cap, "%s:%s%u$%s$%s", user, SCHEME, iterations, salt64, hash64);
    *line = out;
    return CMK_OK;
}
