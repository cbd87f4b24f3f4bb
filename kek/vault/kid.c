/* kid.c — local key identifiers: local://<vault>/keys/<name>[/<version>] (see vault.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kek/identity/home.h"
#include "kek/vault/common.h"
#include "kek/vault/vault.h"

static cmk_err kid_bad(const char *kid, const char *why, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "malformed key identifier '" CMK_VAULT_KID_SHOW "' (%s): expected "
                          "local://<vault>/keys/<name> (versionless) or "
                          "local://<vault>/keys/<name>/<version> (32 hex digits)",
                          kid, why);
}

cmk_err cmk_vault_kid_parse(const char *kid, cmk_vault_kid *out, cmk_errbuf *eb)
{
    const size_t plen = sizeof(CMK_VAULT_SCHEME) - 1;
    char buf[256], *seg[5];
    size_t n, nseg = 0;
    char *p;

    memset(out, 0, sizeof(*out));
    if (!kid || !*kid)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no key identifier given: expected local://<vault>/keys/<name>"
                              "[/<version>]");
    if (strncasecmp(kid, CMK_VAULT_SCHEME, plen) != 0)
        return kid_bad(kid, "not a local:// identifier", eb);
    n = strlen(kid + plen);
    if (n >= sizeof(buf))
        return kid_bad(kid, "too long", eb);
    memcpy(buf, kid + plen, n + 1);
    if (n > 0 && buf[n - 1] == '/')
        buf[--n] = '\0';
    for (p = buf;;) {
        char *slash = strchr(p, '/');
        if (nseg == sizeof(seg) / sizeof(seg[0]))
            return kid_bad(kid, "too many path elements", eb);
        seg[nseg++] = p;
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    if (nseg < 3)
        return kid_bad(kid, "no key name", eb);
    if (nseg > 4)
        return kid_bad(kid, "too many path elements", eb);
    if (strcmp(seg[1], "keys") != 0)
        return kid_bad(kid, "the vault name must be followed by /keys/", eb);
    if (cmk_name_check(seg[0], "vault", NULL) != CMK_OK)
        return kid_bad(kid, "bad vault name", eb);
    if (cmk_name_check(seg[2], "key", NULL) != CMK_OK)
        return kid_bad(kid, "bad key name", eb);
    if (nseg == 4) {
        for (char *c = seg[3]; *c; c++)
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        if (!cmk_vault_is_version(seg[3]))
            return kid_bad(kid, "bad version", eb);
        memcpy(out->version, seg[3], CMK_VAULT_VERSION_HEX + 1);
    }
    memcpy(out->vault, seg[0], strlen(seg[0]) + 1);
    memcpy(out->key, seg[2], strlen(seg[2]) + 1);
    return CMK_OK;
}

cmk_err cmk_vault_kid_format(char *out, size_t cap, const char *vault, const char *key,
                             const char *version, cmk_errbuf *eb)
{
    int n;

    if (version && *version)
        n = snprintf(out, cap, CMK_VAULT_SCHEME "%s/keys/%s/%s", vault, key, version);
    else
        n = snprintf(out, cap, CMK_VAULT_SCHEME "%s/keys/%s", vault, key);
    if (n < 0 || (size_t)n >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "key identifier too long");
    return CMK_OK;
}
