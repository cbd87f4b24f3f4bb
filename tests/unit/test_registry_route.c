/* test_registry_route.c — the registry's URL map (tools/serve/registry_route.c): every
 * endpoint with its name and reference, names with slashes, the upload forms with and
 * without a trailing slash, the statuses for unknown paths, bad names, bad references and
 * methods an endpoint does not take (with its Allow list), and the length bounds. */
#include <stdio.h>
#include <string.h>

#include "tests/check.h"
#include "tools/serve/registry_route.h"

#define D256 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static enum reg_route_status rt(const char *method, const char *url, reg_route *out)
{
    return registry_route(method, url, out);
}

struct routed {
    const char *method, *url;
    enum reg_rt rt;
    const char *name, *ref;
};

static const struct routed routed[] = {
    {"GET", "/v2/", REG_RT_PING, "", ""},
    {"HEAD", "/v2", REG_RT_PING, "", ""},
    {"GET", "/metrics", REG_RT_METRICS, "", ""},
    {"GET", "/v2/_catalog", REG_RT_CATALOG, "", ""},
    {"GET", "/v2/r/tags/list", REG_RT_TAGS, "r", ""},
    {"GET", "/v2/a/b/c/tags/list", REG_RT_TAGS, "a/b/c", ""},
    {"PUT", "/v2/lib/app/manifests/v1.0", REG_RT_MANIFEST, "lib/app", "v1.0"},
    {"DELETE", "/v2/r/manifests/" D256, REG_RT_MANIFEST, "r", D256},
    {"HEAD", "/v2/r/blobs/" D256, REG_RT_BLOB, "r", D256},
    {"POST", "/v2/a-b/c__d/blobs/uploads/", REG_RT_UPLOAD_NEW, "a-b/c__d", ""},
    {"POST", "/v2/r/blobs/uploads", REG_RT_UPLOAD_NEW, "r", ""},
    {"PATCH", "/v2/r/blobs/uploads/0123abcd", REG_RT_UPLOAD, "r", "0123abcd"},
    {"GET", "/v2/r/referrers/" D256, REG_RT_REFERRERS, "r", D256},
    /* The endpoint is read from the end: a repository may be named like an endpoint. */
    {"GET", "/v2/manifests/manifests/latest", REG_RT_MANIFEST, "manifests", "latest"},
    {"GET", "/v2/blobs/uploads/blobs/" D256, REG_RT_BLOB, "blobs/uploads", D256},
    {"GET", "/v2/tags/list/tags/list", REG_RT_TAGS, "tags/list", ""},
};

static void t_endpoints(void)
{
    for (size_t i = 0; i < sizeof(routed) / sizeof(routed[0]); i++) {
        const struct routed *w = &routed[i];
        reg_route r;
        enum reg_route_status st = rt(w->method, w->url, &r);

        CHECK_MSG(st == REG_ROUTE_OK, "%s %s: status %d", w->method, w->url, (int)st);
        CHECK_MSG(r.rt == w->rt, "%s %s: endpoint %d, want %d", w->method, w->url, (int)r.rt,
                  (int)w->rt);
        CHECK_MSG(strcmp(r.name, w->name) == 0, "%s: name '%s', want '%s'", w->url, r.name,
                  w->name);
        CHECK_MSG(strcmp(r.ref, w->ref) == 0, "%s: ref '%s', want '%s'", w->url, r.ref, w->ref);
        CHECK(r.allow != NULL);
    }
}

struct refused {
    const char *url;
    enum reg_route_status st;
};

static const struct refused refused[] = {
    {"/v3/", REG_ROUTE_UNKNOWN},
    {"/", REG_ROUTE_UNKNOWN},
    {"", REG_ROUTE_UNKNOWN},
    {"/metrics/", REG_ROUTE_UNKNOWN},
    {"/v2/r", REG_ROUTE_UNKNOWN},
    {"/v2/r/", REG_ROUTE_UNKNOWN},
    {"/v2/r/things/x", REG_ROUTE_UNKNOWN},
    {"/v2/r/uploads/x", REG_ROUTE_UNKNOWN}, /* not under blobs/ */
    {"/v2/_catalog/", REG_ROUTE_UNKNOWN},
    {"/v2/a/tags/list/", REG_ROUTE_UNKNOWN},
    {"/v2/_catalog/tags/list", REG_ROUTE_BAD_NAME},
    {"/v2//manifests/x", REG_ROUTE_BAD_NAME},
    {"/v2/Bad_Name/tags/list", REG_ROUTE_BAD_NAME},
    {"/v2/a//b/tags/list", REG_ROUTE_BAD_NAME},
    {"/v2/-a/manifests/x", REG_ROUTE_BAD_NAME},
    {"/v2/a./blobs/" D256, REG_ROUTE_BAD_NAME},
};

static void t_refusals(void)
{
    reg_route r;

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        enum reg_route_status st = rt("GET", refused[i].url, &r);
        CHECK_MSG(st == refused[i].st, "GET %s: status %d, want %d", refused[i].url, (int)st,
                  (int)refused[i].st);
    }
    /* An empty reference is refused before the name is looked at; rt says which endpoint, so
     * the caller can name the error (MANIFEST_INVALID or DIGEST_INVALID). */
    CHECK(rt("GET", "/v2/Bad/manifests/", &r) == REG_ROUTE_BAD_REF && r.rt == REG_RT_MANIFEST);
    CHECK(rt("GET", "/v2/r/blobs/", &r) == REG_ROUTE_BAD_REF && r.rt == REG_RT_BLOB);
    CHECK(rt("GET", "/v2/r/referrers/", &r) == REG_ROUTE_BAD_REF && r.rt == REG_RT_REFERRERS);
}

static void t_methods(void)
{
    reg_route r;

    CHECK(rt("POST", "/v2/r/manifests/x", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(r.rt == REG_RT_MANIFEST && strcmp(r.allow, "GET, HEAD, PUT, DELETE") == 0);
    CHECK(strcmp(r.name, "r") == 0 && strcmp(r.ref, "x") == 0);
    CHECK(rt("PUT", "/v2/r/blobs/" D256, &r) == REG_ROUTE_BAD_METHOD);
    CHECK(strcmp(r.allow, "GET, HEAD, DELETE") == 0);
    CHECK(rt("GET", "/v2/r/blobs/uploads/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(strcmp(r.allow, "POST") == 0);
    CHECK(rt("POST", "/v2/r/blobs/uploads/id", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(strcmp(r.allow, "GET, PATCH, PUT, DELETE") == 0);
    CHECK(rt("HEAD", "/metrics", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("DELETE", "/v2/_catalog", &r) == REG_ROUTE_BAD_METHOD);
    /* Methods are whole words of the list, compared exactly. */
    CHECK(rt("GE", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("ET", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("get", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("HEAD,", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt(" ", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("OTHER", "/v2/", &r) == REG_ROUTE_BAD_METHOD);
    CHECK(rt("DELETE", "/v2/r/blobs/uploads/id", &r) == REG_ROUTE_OK);
    CHECK(rt("PUT", "/v2/r/blobs/uploads/id", &r) == REG_ROUTE_OK);
}

static void t_bounds(void)
{
    char url[2048], name[REG_NAME_MAX + 2], ref[REG_REF_MAX + 1];
    reg_route r;

    /* A name of REG_NAME_MAX characters is taken, one more is not. */
    memset(name, 'a', REG_NAME_MAX);
    name[REG_NAME_MAX] = '\0';
    snprintf(url, sizeof(url), "/v2/%s/tags/list", name);
    CHECK(rt("GET", url, &r) == REG_ROUTE_OK && strlen(r.name) == REG_NAME_MAX);
    name[REG_NAME_MAX] = 'a';
    name[REG_NAME_MAX + 1] = '\0';
    snprintf(url, sizeof(url), "/v2/%s/tags/list", name);
    CHECK(rt("GET", url, &r) == REG_ROUTE_BAD_NAME);
    /* References up to REG_REF_MAX - 1 characters. */
    memset(ref, 'x', REG_REF_MAX - 1);
    ref[REG_REF_MAX - 1] = '\0';
    snprintf(url, sizeof(url), "/v2/r/manifests/%s", ref);
    CHECK(rt("GET", url, &r) == REG_ROUTE_OK && strlen(r.ref) == REG_REF_MAX - 1);
    ref[REG_REF_MAX - 1] = 'x';
    ref[REG_REF_MAX] = '\0';
    snprintf(url, sizeof(url), "/v2/r/manifests/%s", ref);
    CHECK(rt("GET", url, &r) == REG_ROUTE_BAD_REF);
    /* A path longer than any valid one. */
    memset(url, 'a', sizeof(url) - 1);
    memcpy(url, "/v2/", 4);
    url[sizeof(url) - 1] = '\0';
    CHECK(rt("GET", url, &r) == REG_ROUTE_BAD_NAME);
}

int main(void)
{
    t_endpoints();
    t_refusals();
    t_methods();
    t_bounds();
    return check_summary();
}
