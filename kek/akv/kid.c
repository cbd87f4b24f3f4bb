/* kid.c — Azure Key Vault key identifiers (see kid.h). */
#include "kek/akv/kid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Identifiers are echoed into messages cut to this many characters. */
#define KID_SHOW "%.200s"

static cmk_err kid_bad(const char *kid, const char *why, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "malformed Key Vault key identifier '" KID_SHOW "' (%s): expected "
                          "https://<vault-host>[:port]/keys/<name> (versionless) or "
                          "https://<vault-host>[:port]/keys/<name>/<version>",
                          kid, why);
}

int cmk_akv_kid_claims(const char *kid)
{
    return kid && (strncasecmp(kid, "https://", 8) == 0 || strncasecmp(kid, "http://", 7) == 0);
}

static int is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* host[:port] of len bytes at s: a DNS name or IPv4 address, or a bracketed IPv6 literal. */
static const char *parse_authority(const char *s, size_t len, cmk_akv_kid *out)
{
    size_t hl = len;
    const char *colon = NULL;

    if (len == 0)
        return "no vault host";
    if (s[0] == '[') {
        const char *end = memchr(s, ']', len);
        if (!end)
            return "unterminated IPv6 address";
        hl = (size_t)(end - s) + 1;
        for (size_t i = 1; i + 1 < hl; i++)
            if (!(is_alnum(s[i]) || s[i] == ':' || s[i] == '.'))
                return "bad IPv6 address";
        if (hl == 2)
            return "bad IPv6 address";
        if (hl < len) {
            if (s[hl] != ':')
                return "bad character after the IPv6 address";
            colon = s + hl;
        }
    } else {
        colon = memchr(s, ':', len);
        hl = colon ? (size_t)(colon - s) : len;
        if (hl == 0)
            return "no vault host";
        for (size_t i = 0; i < hl; i++)
            if (!(is_alnum(s[i]) || s[i] == '-' || s[i] == '.'))
                return s[i] == '@' ? "user information is not allowed" : "bad vault host";
        if (s[0] == '.' || s[0] == '-' || s[hl - 1] == '-')
            return "bad vault host";
    }
    if (hl >= sizeof(out->host))
        return "vault host too long";
    for (size_t i = 0; i < hl; i++)
        out->host[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    out->host[hl] = '\0';
    if (colon) {
        size_t pl = len - (size_t)(colon - s) - 1;
        unsigned long port = 0;
        if (pl == 0 || pl > 5)
            return "bad port";
        for (size_t i = 0; i < pl; i++) {
            if (colon[1 + i] < '0' || colon[1 + i] > '9')
                return "bad port";
            port = port * 10 + (unsigned long)(colon[1 + i] - '0');
        }
        if (port == 0 || port > 65535)
            return "bad port";
        out->port = port == 443 ? 0 : (unsigned)port;
    }
    return NULL;
}

cmk_err cmk_akv_kid_parse(const char *kid, cmk_akv_kid *out, cmk_errbuf *eb)
{
    const char *p, *slash, *why, *seg[3];
    size_t seglen[3], nseg = 0, len;
    int n;

    memset(out, 0, sizeof(*out));
    if (!kid || !*kid)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no key identifier given: expected "
                              "https://<vault-host>/keys/<name>[/<version>]");
    if (strncasecmp(kid, "http://", 7) == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "key identifier '" KID_SHOW "' names a vault over plain http://: "
                              "keys are only reached over https:// (TLS), use "
                              "https://<vault-host>/keys/<name>[/<version>]",
                              kid);
    if (strncasecmp(kid, CMK_AKV_SCHEME, 8) != 0)
        return kid_bad(kid, "not an https:// identifier", eb);
    len = strlen(kid);
    if (len >= CMK_ID_MAX)
        return kid_bad(kid, "too long", eb);
    if (strpbrk(kid, "?#"))
        return kid_bad(kid, "a query or fragment is not allowed", eb);
    p = kid + 8;
    slash = strchr(p, '/');
    if (!slash)
        return kid_bad(kid, "no /keys/<name> path", eb);
    why = parse_authority(p, (size_t)(slash - p), out);
    if (why)
        return kid_bad(kid, why, eb);
    /* The path: keys/<name>[/<version>][/] */
    p = slash + 1;
    while (*p) {
        slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (l == 0)
            return kid_bad(kid, "empty path element", eb);
        if (nseg == 3)
            return kid_bad(kid, "too many path elements", eb);
        seg[nseg] = p;
        seglen[nseg++] = l;
        if (!slash)
            break;
        p = slash + 1; /* a trailing slash ends the loop at '\0' */
    }
    if (nseg < 1 || seglen[0] != 4 || strncmp(seg[0], "keys", 4) != 0)
        return kid_bad(kid, "the path must start with /keys/", eb);
    if (nseg < 2)
        return kid_bad(kid, "no key name", eb);
    if (seglen[1] > CMK_AKV_NAME_MAX)
        return kid_bad(kid, "key name longer than 127 characters", eb);
    for (size_t i = 0; i < seglen[1]; i++)
        if (!(is_alnum(seg[1][i]) || seg[1][i] == '-'))
            return kid_bad(kid, "bad key name: letters, digits and '-' only", eb);
    memcpy(out->name, seg[1], seglen[1]);
    if (nseg == 3) {
        if (seglen[2] > CMK_AKV_VERSION_MAX)
            return kid_bad(kid, "version too long", eb);
        for (size_t i = 0; i < seglen[2]; i++)
            if (!is_alnum(seg[2][i]))
                return kid_bad(kid, "bad version: letters and digits only", eb);
        memcpy(out->version, seg[2], seglen[2]);
    }
    if (out->port)
        n = snprintf(out->base, sizeof(out->base), "https://%s:%u", out->host, out->port);
    else
        n = snprintf(out->base, sizeof(out->base), "https://%s", out->host);
    if (n < 0 || (size_t)n >= sizeof(out->base))
        return kid_bad(kid, "vault host too long", eb);
    return CMK_OK;
}

cmk_err cmk_akv_kid_format(const cmk_akv_kid *k, const char *version, char *out, size_t cap,
                           cmk_errbuf *eb)
{
    int n = version && *version ? snprintf(out, cap, "%s/keys/%s/%s", k->base, k->name, version)
                                : snprintf(out, cap, "%s/keys/%s", k->base, k->name);

    if (n < 0 || (size_t)n >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "key identifier too long for key '%s' on %s",
                              k->name, k->host);
    return CMK_OK;
}
