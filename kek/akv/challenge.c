/* challenge.c — parsing the Key Vault 401 challenge (see challenge.h). */
#include "kek/akv/challenge.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Copies value (len bytes) into out (cap): refuses control characters and overlong values. */
static int copy_val(char *out, size_t cap, const char *v, size_t len)
{
    if (len >= cap)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* "https://host[:port]/path..." -> the host (lowercase, without port) into out; -1 if the
 * URL is not https:// with a host. */
static int url_host(const char *url, char *out, size_t cap, const char **path)
{
    const char *h, *end;
    size_t n;

    if (strncasecmp(url, "https://", 8) != 0)
        return -1;
    h = url + 8;
    end = h + strcspn(h, "/:?#");
    n = (size_t)(end - h);
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] - 'A' + 'a' : h[i]);
    out[n] = '\0';
    if (path)
        *path = h + strcspn(h, "/?#");
    return 0;
}

static cmk_err set_authority(cmk_akv_challenge *c, const char *url, cmk_errbuf *eb)
{
    char host[200];
    const char *path, *t;
    size_t tl;

    if (url_host(url, host, sizeof(host), &path) != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "the vault's challenge names an authorization URI that is not "
                              "https://: '%.120s'",
                              url);
    snprintf(c->authority, sizeof(c->authority), "%.*s", (int)(path - url), url);
    t = *path == '/' ? path + 1 : path;
    tl = strcspn(t, "/?#");
    if (tl >= sizeof(c->tenant))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "the vault's challenge names a tenant too long");
    memcpy(c->tenant, t, tl);
    c->tenant[tl] = '\0';
    return CMK_OK;
}

cmk_err cmk_akv_challenge_parse(const char *header, cmk_akv_challenge *out, cmk_errbuf *eb)
{
    char authz[256] = "", resource[256] = "", scope[300] = "";
    const char *p = header;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (!p)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "the vault's 401 reply has no challenge");
    while (is_space(*p))
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] && !is_space(p[6])))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "the vault's challenge is not a Bearer challenge: '%.80s'", p);
    p += 6;
    for (;;) {
        const char *key, *val;
        size_t kl, vl;
        char *dst = NULL;
        size_t cap = 0;

        while (is_space(*p) || *p == ',')
            p++;
        if (!*p)
            break;
        key = p;
        while (*p && *p != '=' && !is_space(*p) && *p != ',')
            p++;
        kl = (size_t)(p - key);
        while (is_space(*p))
            p++;
        if (*p != '=' || kl == 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "malformed challenge from the vault (expected name=value "
                                  "pairs): '%.80s'",
                                  header);
        p++;
        while (is_space(*p))
            p++;
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"')
                p++;
            if (*p != '"')
                return cmk_errbuf_set(eb, CMK_E_INVAL,
                                      "malformed challenge from the vault (unterminated quoted "
                                      "value)");
            vl = (size_t)(p - val);
            p++;
        } else {
            val = p;
            while (*p && *p != ',' && !is_space(*p))
                p++;
            vl = (size_t)(p - val);
        }
        if ((kl == 13 && strncasecmp(key, "authorization", 13) == 0) ||
            (kl == 17 && strncasecmp(key, "authorization_uri", 17) == 0)) {
            dst = authz;
            cap = sizeof(authz);
        } else if (kl == 8 && strncasecmp(key, "resource", 8) == 0) {
            dst = resource;
            cap = sizeof(resource);
        } else if (kl == 5 && strncasecmp(key, "scope", 5) == 0) {
            dst = scope;
            cap = sizeof(scope);
        }
        if (dst && copy_val(dst, cap, val, vl) != 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "malformed challenge from the vault (value of '%.*s' too "
                                  "long or not text)",
                                  (int)(kl < 32 ? kl : 32), key);
    }
    if (!resource[0] && scope[0]) {
        /* scope="https://vault.azure.net/.default": the resource is the part before it. */
        snprintf(resource, sizeof(resource), "%s", scope);
        n = strlen(resource);
        if (n >= 9 && strcmp(resource + n - 9, "/.default") == 0)
            resource[n - 9] = '\0';
    }
    n = strlen(resource);
    while (n > 0 && resource[n - 1] == '/')
        resource[--n] = '\0';
    if (!resource[0])
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "the vault's challenge names no resource or scope: '%.120s'", header);
    {
        char host[200];
        if (url_host(resource, host, sizeof(host), NULL) != 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "the vault's challenge names a resource that is not an "
                                  "https:// URL: '%.120s'",
                                  resource);
    }
    memcpy(out->resource, resource, n + 1);
    snprintf(out->scope, sizeof(out->scope), "%s/.default", out->resource);
    if (authz[0])
        return set_authority(out, authz, eb);
    return CMK_OK;
}

int cmk_akv_challenge_domain_ok(const cmk_akv_challenge *c, const char *vault_host)
{
    char rh[200];
    size_t rl, vl;

    if (!vault_host || url_host(c->resource, rh, sizeof(rh), NULL) != 0)
        return 0;
    rl = strlen(rh);
    vl = strlen(vault_host);
    if (rl == vl)
        return strcasecmp(rh, vault_host) == 0;
    /* A parent domain: "vault.azure.net" of "myvault.vault.azure.net", on a label boundary. */
    return vl > rl && vault_host[vl - rl - 1] == '.' && strcasecmp(vault_host + vl - rl, rh) == 0 &&
           strchr(rh, '.') != NULL;
}
