/* registry_route.c — the registry's URL map (registry_route.h). */
#include "tools/serve/registry_route.h"

#include <stdio.h>
#include <string.h>

static const char *const allowed[] = {
    [REG_RT_PING] = "GET, HEAD",
    [REG_RT_METRICS] = "GET",
    [REG_RT_CATALOG] = "GET",
    [REG_RT_TAGS] = "GET",
    [REG_RT_MANIFEST] = "GET, HEAD, PUT, DELETE",
    [REG_RT_BLOB] = "GET, HEAD, DELETE",
    [REG_RT_UPLOAD_NEW] = "POST",
    [REG_RT_UPLOAD] = "GET, PATCH, PUT, DELETE",
    [REG_RT_REFERRERS] = "GET",
};

/* 1 if method is one of the ", "-separated words of list. */
static int method_in(const char *method, const char *list)
{
    size_t ml = strlen(method);

    while (*list) {
        size_t wl = strcspn(list, ",");
        if (wl == ml && ml > 0 && memcmp(list, method, ml) == 0)
            return 1;
        list += wl;
        while (*list == ',' || *list == ' ')
            list++;
    }
    return 0;
}

/* The path after "/v2/", neither "" nor "_catalog". */
static enum reg_route_status route_repo(const char *url, reg_route *out)
{
    char buf[REG_NAME_MAX + REG_REF_MAX + 32];
    char *last, *prev, *name_end;
    const char *seg, *pseg;
    size_t len = strlen(url);

    if (len >= sizeof(buf))
        return REG_ROUTE_BAD_NAME;
    memcpy(buf, url, len + 1);
    if (len > 10 && strcmp(buf + len - 10, "/tags/list") == 0) {
        out->rt = REG_RT_TAGS;
        name_end = buf + len - 10;
        goto name;
    }
    last = strrchr(buf, '/');
    if (!last || last == buf)
        return REG_ROUTE_UNKNOWN;
    *last = '\0';
    seg = last + 1;
    prev = strrchr(buf, '/');
    if (!prev)
        return REG_ROUTE_UNKNOWN;
    pseg = prev + 1;
    name_end = prev;
    if (strcmp(pseg, "manifests") == 0) {
        out->rt = REG_RT_MANIFEST;
    } else if (strcmp(pseg, "referrers") == 0) {
        out->rt = REG_RT_REFERRERS;
    } else if (strcmp(pseg, "blobs") == 0) {
        /* ".../blobs/uploads" without the trailing slash starts an upload too. */
        out->rt = strcmp(seg, "uploads") == 0 ? REG_RT_UPLOAD_NEW : REG_RT_BLOB;
    } else if (strcmp(pseg, "uploads") == 0) {
        *prev = '\0';
        char *pp = strrchr(buf, '/');
        if (!pp || strcmp(pp + 1, "blobs") != 0)
            return REG_ROUTE_UNKNOWN;
        name_end = pp;
        out->rt = *seg ? REG_RT_UPLOAD : REG_RT_UPLOAD_NEW;
    } else {
        return REG_ROUTE_UNKNOWN;
    }
    if (out->rt != REG_RT_UPLOAD_NEW) {
        if (!*seg || strlen(seg) >= sizeof(out->ref))
            return REG_ROUTE_BAD_REF;
        snprintf(out->ref, sizeof(out->ref), "%s", seg);
    }
name:
    *name_end = '\0';
    if (!registry_name_valid(buf)) {
        out->ref[0] = '\0';
        return REG_ROUTE_BAD_NAME;
    }
    snprintf(out->name, sizeof(out->name), "%s", buf);
    return REG_ROUTE_OK;
}

enum reg_route_status registry_route(const char *method, const char *url, reg_route *out)
{
    enum reg_route_status st = REG_ROUTE_OK;

    memset(out, 0, sizeof(*out));
    if (strcmp(url, "/metrics") == 0)
        out->rt = REG_RT_METRICS;
    else if (strcmp(url, "/v2/") == 0 || strcmp(url, "/v2") == 0)
        out->rt = REG_RT_PING;
    else if (strncmp(url, "/v2/", 4) != 0)
        return REG_ROUTE_UNKNOWN;
    else if (strcmp(url + 4, "_catalog") == 0)
        out->rt = REG_RT_CATALOG;
    else
        st = route_repo(url + 4, out);
    if (st != REG_ROUTE_OK)
        return st;
    out->allow = allowed[out->rt];
    return method_in(method, out->allow) ? REG_ROUTE_OK : REG_ROUTE_BAD_METHOD;
}
