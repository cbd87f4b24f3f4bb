/*
 * vault_token.c — issuing and verifying the tokens of `cmkstore vault serve` (see
 * vault_token.h).
 */
#include "tools/serve/vault_token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/b64url.h"
#include "tools/serve/http_util.h"

#define PREFIX      "cmkv1."
#define SECRET_LEN  32
#define MAC_LEN     32
#define PAYLOAD_MAX (37 + 37 + 21 + VAULT_RESOURCE_MAX + 4)

struct vault_tokens {
    unsigned char secret[SECRET_LEN];
};

static __attribute__((format(printf, 4, 5))) cmk_err fail(char *err, size_t cap, cmk_err rc,
                                                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (err && cap)
        vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return rc;
}

vault_tokens *vault_tokens_from_secret(const unsigned char secret[32])
{
    vault_tokens *t = calloc(1, sizeof(*t));

    if (t)
        memcpy(t->secret, secret, SECRET_LEN);
    return t;
}

/* Reads exactly SECRET_LEN bytes from an existing 0600 file into t. */
static cmk_err read_secret(const char *path, vault_tokens *t, char *err, size_t cap)
{
    struct stat st;
    ssize_t n;
    cmk_err rc = CMK_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return fail(err, cap, errno == ENOENT ? CMK_E_NOT_FOUND : CMK_E_IO, "cannot open %s: %s",
                    path, strerror(errno));
    if (fstat(fd, &st) != 0)
        rc = fail(err, cap, CMK_E_IO, "cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode) || (st.st_mode & 077))
        rc = fail(err, cap, CMK_E_REFUSED,
                  "%s must be a regular file of mode 0600 (it holds the token secret)", path);
    else if (st.st_size != SECRET_LEN || (n = read(fd, t->secret, SECRET_LEN)) != SECRET_LEN)
        rc = fail(err, cap, CMK_E_CORRUPT,
                  "%s is not a token secret (%d bytes): remove it to make a new one (tokens "
                  "issued so far stop working)",
                  path, SECRET_LEN);
    close(fd);
    return rc;
}

/* Makes the secret file (O_EXCL: of two servers starting at once, one makes it). */
static cmk_err make_secret(const char *path, char *err, size_t cap)
{
    unsigned char s[SECRET_LEN];
    int fd;
    ssize_t n;

    if (RAND_bytes(s, sizeof(s)) != 1)
        return fail(err, cap, CMK_E_CRYPTO, "no random bytes for the token secret");
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        OPENSSL_cleanse(s, sizeof(s));
        return errno == EEXIST
                   ? CMK_OK
                   : fail(err, cap, CMK_E_IO, "cannot create %s: %s", path, strerror(errno));
    }
    n = write(fd, s, sizeof(s));
    OPENSSL_cleanse(s, sizeof(s));
    if (n != SECRET_LEN || fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return fail(err, cap, CMK_E_IO, "cannot write %s", path);
    }
    close(fd);
    return CMK_OK;
}

cmk_err vault_tokens_open(const char *home, vault_tokens **out, char *err, size_t cap)
{
    char dir[4200], path[4300];
    vault_tokens *t;
    cmk_err rc;

    *out = NULL;
    snprintf(dir, sizeof(dir), "%s/vault-serve", home);
    snprintf(path, sizeof(path), "%s/token.key", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail(err, cap, CMK_E_IO, "cannot create %s: %s", dir, strerror(errno));
    if (!(t = calloc(1, sizeof(*t))))
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    rc = read_secret(path, t, err, cap);
    if (rc == CMK_E_NOT_FOUND) {
        rc = make_secret(path, err, cap);
        if (rc == CMK_OK)
            rc = read_secret(path, t, err, cap);
    }
    if (rc != CMK_OK) {
        vault_tokens_free(t);
        return rc;
    }
    *out = t;
    return CMK_OK;
}

void vault_tokens_free(vault_tokens *t)
{
    if (!t)
        return;
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

static int mac(const vault_tokens *t, const char *payload, size_t n, unsigned char out[MAC_LEN])
{
    unsigned len = 0;

    return HMAC(EVP_sha256(), t->secret, SECRET_LEN, (const unsigned char *)payload, n, out,
                &len) != NULL &&
                   len == MAC_LEN
               ? 0
               : -1;
}

int vault_token_issue(const vault_tokens *t, const char *principal, const char *client_id,
                      int64_t exp, const char *resource, char *out, size_t cap)
{
    char payload[PAYLOAD_MAX];
    unsigned char m[MAC_LEN];
    size_t used;
    long n;
    int len;

    if (strchr(principal, '|') || strchr(client_id, '|') || strchr(resource, '|') ||
        strlen(principal) > 36 || strlen(client_id) > 36 || strlen(resource) >= VAULT_RESOURCE_MAX)
        return -1;
    len = snprintf(payload, sizeof(payload), "%s|%s|%" PRId64 "|%s", principal, client_id, exp,
                   resource);
    if (len < 0 || (size_t)len >= sizeof(payload) || mac(t, payload, (size_t)len, m) != 0 ||
        cap < sizeof(PREFIX))
        return -1;
    memcpy(out, PREFIX, sizeof(PREFIX));
    used = sizeof(PREFIX) - 1;
    n = cmk_b64url_encode((const unsigned char *)payload, (size_t)len, out + used, cap - used);
    if (n < 0 || used + (size_t)n + 2 > cap)
        return -1;
    used += (size_t)n;
    out[used++] = '.';
    n = cmk_b64url_encode(m, sizeof(m), out + used, cap - used);
    return n < 0 ? -1 : 0;
}

/* Copies the '|'-separated field at *p (up to end) into dst (cap); advances past it. */
static int field(const char **p, const char *end, char *dst, size_t cap)
{
    const char *bar = memchr(*p, '|', (size_t)(end - *p));
    size_t n = (size_t)((bar ? bar : end) - *p);

    if (n >= cap)
        return -1;
    memcpy(dst, *p, n);
    dst[n] = '\0';
    *p = bar ? bar + 1 : end;
    return bar ? 1 : 0;
}

enum vault_token_result vault_token_verify(const vault_tokens *t, const char *token, int64_t now,
                                           vault_token_claims *out)
{
    char payload[PAYLOAD_MAX + 1], expbuf[24];
    unsigned char m[MAC_LEN], want[MAC_LEN];
    const char *dot, *p, *end;
    size_t len;
    long pn, mn;
    char *e;
    int more;

    memset(out, 0, sizeof(*out));
    if (!token || strncmp(token, PREFIX, sizeof(PREFIX) - 1) != 0)
        return VAULT_TOKEN_BAD;
    token += sizeof(PREFIX) - 1;
    len = strnlen(token, VAULT_TOKEN_MAX);
    if (len >= VAULT_TOKEN_MAX || !(dot = memchr(token, '.', len)))
        return VAULT_TOKEN_BAD;
    pn = cmk_b64url_decode(token, (size_t)(dot - token), (unsigned char *)payload, PAYLOAD_MAX);
    mn = cmk_b64url_decode(dot + 1, len - (size_t)(dot + 1 - token), m, sizeof(m));
    if (pn <= 0 || mn != MAC_LEN || mac(t, payload, (size_t)pn, want) != 0 ||
        CRYPTO_memcmp(m, want, MAC_LEN) != 0)
        return VAULT_TOKEN_BAD;
    payload[pn] = '\0';
    p = payload;
    end = payload + pn;
    /* Genuine from here on: the fields are as this server wrote them; still bounded. */
    if (field(&p, end, out->principal, sizeof(out->principal)) != 1 ||
        field(&p, end, out->client_id, sizeof(out->client_id)) != 1 ||
        field(&p, end, expbuf, sizeof(expbuf)) != 1 ||
        (more = field(&p, end, out->resource, sizeof(out->resource))) != 0) {
        memset(out, 0, sizeof(*out));
        return VAULT_TOKEN_BAD;
    }
    errno = 0;
    out->exp = strtoll(expbuf, &e, 10);
    if (errno || e == expbuf || *e) {
        memset(out, 0, sizeof(*out));
        return VAULT_TOKEN_BAD;
    }
    return now >= out->exp ? VAULT_TOKEN_EXPIRED : VAULT_TOKEN_OK;
}
