/* s3_conf.c — S3 store names, endpoints and object URLs (s3_conf.h). */
#define _GNU_SOURCE
#include "core/backend/s3_conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/secmem.h"

int cmk_s3_is_name(const char *name)
{
    return name && strncmp(name, CMK_S3_SCHEME, strlen(CMK_S3_SCHEME)) == 0;
}

static int bucket_ok(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return 0;
        if ((i == 0 || i == n - 1) && !alnum)
            return 0;
        if (c == '.' && i + 1 < n && b[i + 1] == '.')
            return 0;
    }
    return 1;
}

static int seg_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

cmk_err cmk_s3_parse_name(const char *name, char *bucket, size_t bcap, char *prefix, size_t pcap,
                          cmk_errbuf *eb)
{
    const char *p, *slash;
    size_t bn, n = 0;

    if (!cmk_s3_is_name(name))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "'%.300s' is not an S3 store name (s3://BUCKET[/PREFIX])",
                              name ? name : "(null)");
    p = name + strlen(CMK_S3_SCHEME);
    slash = strchr(p, '/');
    bn = slash ? (size_t)(slash - p) : strlen(p);
    if (!bucket_ok(p, bn) || bn >= bcap)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad bucket name in '%.300s' (3 to 63 lowercase letters, digits, "
                              "'.' and '-', starting and ending with a letter or digit)",
                              name);
    memcpy(bucket, p, bn);
    bucket[bn] = '\0';
    if (pcap == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no room for the prefix");
    prefix[0] = '\0';
    p = slash ? slash + 1 : p + bn;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t sl = e ? (size_t)(e - p) : strlen(p);

        if (sl > 0) {
            int ok = !(sl == 1 && p[0] == '.') && !(sl == 2 && p[0] == '.' && p[1] == '.');
            for (size_t i = 0; ok && i < sl; i++)
                ok = seg_char_ok(p[i]);
            if (!ok)
                return cmk_errbuf_set(eb, CMK_E_INVAL,
                                      "bad prefix in '%.300s' (segments of letters, digits, '.', "
                                      "'_' and '-', no '.' or '..')",
                                      name);
            if (n + sl + 2 > pcap || n + sl + 1 > 512)
                return cmk_errbuf_set(eb, CMK_E_INVAL, "the prefix of '%.300s' is too long", name);
            memcpy(prefix + n, p, sl);
            n += sl;
            prefix[n++] = '/';
            prefix[n] = '\0';
        }
        p += sl;
        if (*p == '/')
            p++;
    }
    return CMK_OK;
}

cmk_err cmk_s3_parse_endpoint(const char *url, cmk_s3_conf *c, cmk_errbuf *eb)
{
    const char *h;
    size_t n;

    if (strncmp(url, "https://", 8) == 0) {
        c->https = 1;
        h = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        c->https = 0;
        h = url + 7;
    } else {
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad S3 endpoint '%.300s' (want http://HOST[:PORT] or "
                              "https://HOST[:PORT])",
                              url);
    }
    n = strcspn(h, "/?#@");
    if (n == 0 || (h[n] != '\0' && !(h[n] == '/' && h[n + 1] == '\0')) || n >= sizeof(c->host))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad S3 endpoint '%.300s' (a scheme and HOST[:PORT] only: no path, "
                              "query or credentials)",
                              url);
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        if (!(seg_char_ok(ch) || ch == ':' || ch == '[' || ch == ']'))
            return cmk_errbuf_set(eb, CMK_E_INVAL, "bad host in S3 endpoint '%.300s'", url);
    }
    memcpy(c->host, h, n);
    c->host[n] = '\0';
    snprintf(c->endpoint, sizeof(c->endpoint), "%s://%s", c->https ? "https" : "http", c->host);
    return CMK_OK;
}

void cmk_s3_conf_name(const cmk_s3_conf *c, char *out, size_t cap)
{
    size_t pl = strlen(c->prefix);

    if (pl)
        snprintf(out, cap, "%s%s/%.*s", CMK_S3_SCHEME, c->bucket, (int)(pl - 1), c->prefix);
    else
        snprintf(out, cap, "%s%s", CMK_S3_SCHEME, c->bucket);
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* An endpoint host that cannot carry a bucket as a subdomain. */
static int host_is_literal(const char *host)
{
    size_t n = strcspn(host, ":");

    if (host[0] == '[')
        return 1;
    if (n == 9 && strncmp(host, "localhost", 9) == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.'))
            return 0;
    return 1;
}

static cmk_err copy(char *dst, size_t cap, const char *v, const char *what, cmk_errbuf *eb)
{
    if (strlen(v) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s is too long", what);
    memcpy(dst, v, strlen(v) + 1);
    return CMK_OK;
}

cmk_err cmk_s3_conf_load(const char *name, cmk_s3_conf *c, cmk_errbuf *eb)
{
    const char *ep = env("AWS_ENDPOINT_URL_S3"), *region, *v;
    char def[200];
    cmk_err rc;

    memset(c, 0, sizeof(*c));
    rc = cmk_s3_parse_name(name, c->bucket, sizeof(c->bucket), c->prefix, sizeof(c->prefix), eb);
    if (rc != CMK_OK)
        return rc;
    region = env("AWS_REGION");
    if (!region)
        region = env("AWS_DEFAULT_REGION");
    rc = copy(c->region, sizeof(c->region), region ? region : "us-east-1", "AWS_REGION", eb);
    for (size_t i = 0; rc == CMK_OK && c->region[i]; i++)
        if (!seg_char_ok(c->region[i]))
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad AWS_REGION '%.64s'", c->region);
    if (rc != CMK_OK)
        return rc;
    if (!ep)
        ep = env("AWS_ENDPOINT_URL");
    if (!ep) {
        snprintf(def, sizeof(def), "https://s3.%s.amazonaws.com", c->region);
        ep = def;
    }
    rc = cmk_s3_parse_endpoint(ep, c, eb);
    if (rc != CMK_OK)
        return rc;
    v = env("CMKSTORE_S3_ADDRESSING");
    if (v && strcmp(v, "path") == 0)
        c->path_style = 1;
    else if (v && strcmp(v, "virtual") == 0)
        c->path_style = 0;
    else if (v)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad CMKSTORE_S3_ADDRESSING '%.32s' (path or virtual)", v);
    else
        c->path_style = host_is_literal(c->host) || strchr(c->bucket, '.') != NULL;
    v = env("AWS_CA_BUNDLE");
    if (v && (rc = copy(c->cafile, sizeof(c->cafile), v, "AWS_CA_BUNDLE", eb)) != CMK_OK)
        return rc;
    {
        const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
        const char *tok = env("AWS_SESSION_TOKEN");

        if (!ak || !sk)
            return cmk_errbuf_set(eb, CMK_E_REFUSED,
                                  "no credentials for %s%s: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
                                  "ones)",
                                  CMK_S3_SCHEME, c->bucket);
        if (strchr(ak, ':'))
            return cmk_errbuf_set(eb, CMK_E_INVAL, "AWS_ACCESS_KEY_ID holds a ':'");
        if ((rc = copy(c->access_key, sizeof(c->access_key), ak, "AWS_ACCESS_KEY_ID", eb)) ||
            (rc = copy(c->secret_key, sizeof(c->secret_key), sk, "AWS_SECRET_ACCESS_KEY", eb)) ||
            (tok && (rc = copy(c->token, sizeof(c->token), tok, "AWS_SESSION_TOKEN", eb)))) {
            cmk_s3_conf_wipe(c);
            return rc;
        }
    }
    return CMK_OK;
}

void cmk_s3_conf_wipe(cmk_s3_conf *c)
{
    cmk_cleanse(c->access_key, sizeof(c->access_key));
    cmk_cleanse(c->secret_key, sizeof(c->secret_key));
    cmk_cleanse(c->token, sizeof(c->token));
}

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int escape(const char *s, int keep_slash, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p) || (keep_slash && *p == '/')) {
            if (n + 1 >= cap)
                return -1;
            out[n++] = (char)*p;
        } else {
            if (n + 3 >= cap)
                return -1;
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    if (cap == 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}

int cmk_s3_query_escape(const char *s, char *out, size_t cap)
{
    return escape(s, 0, out, cap);
}

cmk_err cmk_s3_url(const cmk_s3_conf *c, const char *key, const char *query, char *out, size_t cap,
                   cmk_errbuf *eb)
{
    char enc[3 * CMK_S3_KEY_MAX_ENC];
    int n;

    if (escape(key, 1, enc, sizeof(enc)) < 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "object key too long");
    if (c->path_style)
        n = snprintf(out, cap, "%s/%s/%s%s%s", c->endpoint, c->bucket, enc,
                     query && *query ? "?" : "", query ? query : "");
    else
        n = snprintf(out, cap, "%s://%s.%s/%s%s%s", c->https ? "https" : "http", c->bucket, c->host,
                     enc, query && *query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "object URL too long");
    return CMK_OK;
}
