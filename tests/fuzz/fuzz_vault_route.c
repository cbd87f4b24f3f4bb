/*
 * fuzz_vault_route.c — libFuzzer target for the URL map of `cmkstore vault serve`
 * (tools/serve/vault_route.c). Input: "<method>\n<path>" (no newline: the whole input is the
 * path, method GET).
 *
 * Properties checked on every input:
 *  - the result's strings are terminated within their arrays;
 *  - a routed name is 1-127 letters, digits and '-'; a version is "" or 32 lowercase hex
 *    digits, and set only for KEY, WRAP and UNWRAP;
 *  - the status is OK exactly when the method is the endpoint's (allow);
 *  - routing is stable: the canonical path rebuilt from the result routes the same.
 * Seeds: tests/fuzz/corpus/fuzz_vault_route/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/vault_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rebuild(const vault_route *r, char *out, size_t cap)
{
    switch (r->rt) {
    case VRT_KEY:
        snprintf(out, cap, "/keys/%s%s%s", r->name, r->version[0] ? "/" : "", r->version);
        return;
    case VRT_VERSIONS:
        snprintf(out, cap, "/keys/%s/versions", r->name);
        return;
    case VRT_WRAP:
    case VRT_UNWRAP:
        snprintf(out, cap, "/keys/%s/%s/%s", r->name, r->version,
                 r->rt == VRT_WRAP ? "wrapkey" : "unwrapkey");
        return;
    case VRT_DELETED:
        snprintf(out, cap, "/deletedkeys/%s", r->name);
        return;
    case VRT_TOKEN:
        snprintf(out, cap, "/metadata/identity/oauth2/token");
        return;
    case VRT_THROTTLE:
        snprintf(out, cap, "/cmkstore/test/throttle");
        return;
    case VRT_EXPIRE:
        snprintf(out, cap, "/cmkstore/test/expire-tokens");
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[4096], method[64] = "GET", again[4200];
    const char *path = buf;
    char *nl;
    vault_route r, r2;
    enum vault_route_status st;
    size_t n;

    fuzz_cstr(buf, sizeof(buf), data, size);
    nl = strchr(buf, '\n');
    if (nl) {
        *nl = '\0';
        snprintf(method, sizeof(method), "%s", buf);
        path = nl + 1;
    }
    st = vault_route_match(method, path, &r);
    if (memchr(r.name, '\0', sizeof(r.name)) == NULL ||
        memchr(r.version, '\0', sizeof(r.version)) == NULL)
        abort();
    if (st != VROUTE_OK && st != VROUTE_BAD_METHOD)
        return 0;
    n = strlen(r.name);
    if (r.rt != VRT_TOKEN && r.rt != VRT_THROTTLE && r.rt != VRT_EXPIRE) {
        if (n == 0 || n > VAULT_NAME_MAX ||
            strspn(r.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                           "KLMNOPQRSTUVWXYZ0123456789-") != n)
            abort();
    } else if (n != 0) {
        abort();
    }
    n = strlen(r.version);
    if (n != 0 && (n != VAULT_VERSION_LEN || strspn(r.version, "0123456789abcdef") != n))
        abort();
    if (n != 0 && r.rt != VRT_KEY && r.rt != VRT_WRAP && r.rt != VRT_UNWRAP)
        abort();
    if (!r.allow || ((strcmp(method, r.allow) == 0) != (st == VROUTE_OK)))
        abort();
    rebuild(&r, again, sizeof(again));
    if (vault_route_match(method, again, &r2) != st || r2.rt != r.rt ||
        strcmp(r2.name, r.name) != 0 || strcmp(r2.version, r.version) != 0)
        abort();
    return 0;
}
