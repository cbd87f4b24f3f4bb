/*
 * fuzz_registry_route.c — libFuzzer target for the registry's URL map
 * (tools/serve/registry_route.c). Input: "<method>\n<path>" (cut at the first NUL, as a
 * request line is; no newline: the whole input is the path, method GET).
 *
 * Properties checked on every input:
 *  - the result's strings are terminated within their arrays, and allow is set whenever the
 *    endpoint is known (OK or BAD_METHOD);
 *  - a routed name matches the spec's grammar (registry_name_valid); a reference is set
 *    exactly for the endpoints that take one, never empty and never past REG_REF_MAX - 1;
 *  - the status is OK exactly when the method is one of the words of allow (checked by an
 *    independent split of the list);
 *  - routing is stable: the canonical path rebuilt from the endpoint, name and reference
 *    routes to the same result.
 * Seeds: tests/fuzz/corpus/fuzz_registry_route/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/registry_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int word_of(const char *method, const char *list)
{
    char copy[64], *save = NULL;

    snprintf(copy, sizeof(copy), "%s", list);
    for (char *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save))
        if (strcmp(w, method) == 0)
            return 1;
    return 0;
}

static int takes_name(enum reg_rt rt)
{
    return rt != REG_RT_PING && rt != REG_RT_METRICS && rt != REG_RT_CATALOG;
}

static int takes_ref(enum reg_rt rt)
{
    return rt == REG_RT_MANIFEST || rt == REG_RT_BLOB || rt == REG_RT_UPLOAD ||
           rt == REG_RT_REFERRERS;
}

/* The canonical path of a routed request. */
static void rebuild(const reg_route *r, char *out, size_t cap)
{
    static const char *const kind[] = {
        [REG_RT_MANIFEST] = "manifests",
        [REG_RT_BLOB] = "blobs",
        [REG_RT_UPLOAD] = "blobs/uploads",
        [REG_RT_REFERRERS] = "referrers",
    };

    switch (r->rt) {
    case REG_RT_PING:
        snprintf(out, cap, "/v2/");
        return;
    case REG_RT_METRICS:
        snprintf(out, cap, "/metrics");
        return;
    case REG_RT_CATALOG:
        snprintf(out, cap, "/v2/_catalog");
        return;
    case REG_RT_TAGS:
        snprintf(out, cap, "/v2/%s/tags/list", r->name);
        return;
    case REG_RT_UPLOAD_NEW:
        snprintf(out, cap, "/v2/%s/blobs/uploads/", r->name);
        return;
    default:
        snprintf(out, cap, "/v2/%s/%s/%s", r->name, kind[r->rt], r->ref);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[1200], method[64] = "GET", again_url[1200];
    const char *url = in, *nl;
    reg_route r, again;
    enum reg_route_status st, st2;

    fuzz_cstr(in, sizeof(in), data, size);
    nl = strchr(in, '\n');
    if (nl) {
        size_t ml = (size_t)(nl - in);
        if (ml >= sizeof(method))
            ml = sizeof(method) - 1;
        memcpy(method, in, ml);
        method[ml] = '\0';
        url = nl + 1;
    }
    st = registry_route(method, url, &r);
    if (memchr(r.name, '\0', sizeof(r.name)) == NULL || memchr(r.ref, '\0', sizeof(r.ref)) == NULL)
        abort();
    if (st != REG_ROUTE_OK && st != REG_ROUTE_BAD_METHOD)
        return 0;
    if (!r.allow || r.rt > REG_RT_REFERRERS)
        abort();
    if ((st == REG_ROUTE_OK) != word_of(method, r.allow))
        abort();
    if (takes_name(r.rt) ? !registry_name_valid(r.name) : r.name[0] != '\0')
        abort();
    if (takes_ref(r.rt) ? r.ref[0] == '\0' || strlen(r.ref) >= REG_REF_MAX : r.ref[0] != '\0')
        abort();
    rebuild(&r, again_url, sizeof(again_url));
    st2 = registry_route(method, again_url, &again);
    if (st2 != st || again.rt != r.rt || strcmp(again.name, r.name) != 0 ||
        strcmp(again.ref, r.ref) != 0 || again.allow != r.allow)
        abort();
    return 0;
}
