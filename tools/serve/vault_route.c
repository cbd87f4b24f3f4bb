/*
 * vault_route.c — the URL map of `cmkstore vault serve` (see vault_route.h).
 */
#include "tools/serve/vault_route.h"

#include <string.h>
#include <strings.h>

#define KEYS_PREFIX    "/keys/"
#define DELETED_PREFIX "/deletedkeys/"
#define TOKEN_PATH     "/metadata/identity/oauth2/token"
#define THROTTLE_PATH  "/cmkstore/test/throttle"
#define EXPIRE_PATH    "/cmkstore/test/expire-tokens"

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Copies the segment [s, s+n) as a key name; 0 if it is one. */
static int take_name(const char *s, size_t n, vault_route *out)
{
    if (n == 0 || n > VAULT_NAME_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]))
            return -1;
    memcpy(out->name, s, n);
    out->name[n] = '\0';
    return 0;
}

/* Copies the segment as a version (lowercased); 0 if it is one. */
static int take_version(const char *s, size_t n, vault_route *out)
{
    if (n != VAULT_VERSION_LEN)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        out->version[i] = c;
    }
    out->version[n] = '\0';
    return 0;
}

static int seg_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static enum vault_route_status method_check(const char *method, vault_route *out, enum vault_rt rt,
                                            const char *allow)
{
    out->rt = rt;
    out->allow = allow;
    return strcmp(method, allow) == 0 ? VROUTE_OK : VROUTE_BAD_METHOD;
}

/* /keys/<rest>: up to three segments after the name. */
static enum vault_route_status route_keys(const char *method, const char *rest, vault_route *out)
{
    const char *seg[4];
    size_t len[4], n = 0;
    const char *p = rest;

    for (;;) {
        const char *slash = strchr(p, '/');
        if (n == 4)
            return VROUTE_UNKNOWN;
        seg[n] = p;
        len[n] = slash ? (size_t)(slash - p) : strlen(p);
        n++;
        if (!slash)
            break;
        p = slash + 1;
    }
    /* A trailing slash leaves an empty last segment: "/keys/k/" is "/keys/k". Only after a
     * name or version: "/keys/k//" is not a path of the API. */
    if (n > 1 && len[n - 1] == 0 && len[n - 2] != 0 && !(n == 3 && len[1] == 0))
        n--;
    if (take_name(seg[0], len[0], out) != 0)
        return n == 1 && len[0] == 0 ? VROUTE_UNKNOWN : VROUTE_BAD_NAME;
    if (n == 1)
        return method_check(method, out, VRT_KEY, "GET");
    if (n == 2 && seg_is(seg[1], len[1], "versions"))
        return method_check(method, out, VRT_VERSIONS, "GET");
    if (n == 2) {
        if (take_version(seg[1], len[1], out) != 0)
            return VROUTE_BAD_NAME;
        return method_check(method, out, VRT_KEY, "GET");
    }
    if (n == 3 && (seg_is(seg[2], len[2], "wrapkey") || seg_is(seg[2], len[2], "unwrapkey"))) {
        if (len[1] != 0 && take_version(seg[1], len[1], out) != 0)
            return VROUTE_BAD_NAME;
        return method_check(method, out, seg_is(seg[2], len[2], "wrapkey") ? VRT_WRAP : VRT_UNWRAP,
                            "POST");
    }
    return VROUTE_UNKNOWN;
}

enum vault_route_status vault_route_match(const char *method, const char *path, vault_route *out)
{
    memset(out, 0, sizeof(*out));
    if (!method || !path)
        return VROUTE_UNKNOWN;
    /* MSAL asks for the token path with a trailing slash. */
    if (strcmp(path, TOKEN_PATH) == 0 || strcmp(path, TOKEN_PATH "/") == 0)
        return method_check(method, out, VRT_TOKEN, "GET");
    if (strcmp(path, THROTTLE_PATH) == 0)
        return method_check(method, out, VRT_THROTTLE, "POST");
    if (strcmp(path, EXPIRE_PATH) == 0)
        return method_check(method, out, VRT_EXPIRE, "POST");
    if (strncmp(path, KEYS_PREFIX, sizeof(KEYS_PREFIX) - 1) == 0)
        return route_keys(method, path + sizeof(KEYS_PREFIX) - 1, out);
    if (strncmp(path, DELETED_PREFIX, sizeof(DELETED_PREFIX) - 1) == 0) {
        const char *name = path + sizeof(DELETED_PREFIX) - 1;
        size_t n = strlen(name);
        if (n > 0 && name[n - 1] == '/')
            n--;
        if (take_name(name, n, out) != 0)
            return n == 0 ? VROUTE_UNKNOWN : VROUTE_BAD_NAME;
        return method_check(method, out, VRT_DELETED, "GET");
    }
    return VROUTE_UNKNOWN;
}

int vault_api_version_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 32 || s[0] < '0' || s[0] > '9')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]) && s[i] != '.')
            return 0;
    return 1;
}
