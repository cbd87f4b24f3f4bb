/*
 * registry_route.h — the registry's URL map: a request's method and path to an endpoint, the
 * repository name and the reference (tag, digest or upload session id) it names. Pure: no
 * I/O, no allocation, no global state; thread-safe.
 *
 *   /v2/ and /v2                       REG_RT_PING         GET, HEAD
 *   /metrics                           REG_RT_METRICS      GET
 *   /v2/_catalog                       REG_RT_CATALOG      GET
 *   /v2/<name>/tags/list               REG_RT_TAGS         GET
 *   /v2/<name>/manifests/<ref>         REG_RT_MANIFEST     GET, HEAD, PUT, DELETE
 *   /v2/<name>/blobs/<digest>          REG_RT_BLOB         GET, HEAD, DELETE
 *   /v2/<name>/blobs/uploads[/]        REG_RT_UPLOAD_NEW   POST
 *   /v2/<name>/blobs/uploads/<id>      REG_RT_UPLOAD       GET, PATCH, PUT, DELETE
 *   /v2/<name>/referrers/<digest>      REG_RT_REFERRERS    GET
 *
 * Names hold '/', so the endpoint is read from the end of the path. The name must match the
 * distribution spec's grammar (registry_name_valid); the reference is only bounded here
 * (handlers check it as a tag or a digest, with the error code their endpoint calls for).
 */
#ifndef CMK_REGISTRY_ROUTE_H
#define CMK_REGISTRY_ROUTE_H

#include "tools/serve/registry_meta.h"

/* Longest reference: tags are <= 128, digests <= 135, upload ids 32. */
#define REG_REF_MAX 256

enum reg_rt {
    REG_RT_PING,
    REG_RT_METRICS,
    REG_RT_CATALOG,
    REG_RT_TAGS,
    REG_RT_MANIFEST,
    REG_RT_BLOB,
    REG_RT_UPLOAD_NEW,
    REG_RT_UPLOAD,
    REG_RT_REFERRERS,
};

enum reg_route_status {
    REG_ROUTE_OK,
    REG_ROUTE_UNKNOWN,    /* no such endpoint (404) */
    REG_ROUTE_BAD_NAME,   /* the repository name is invalid or too long (400) */
    REG_ROUTE_BAD_REF,    /* the reference is empty or too long (400); rt is set */
    REG_ROUTE_BAD_METHOD, /* the endpoint does not take the method (405); rt and allow set */
};

typedef struct reg_route {
    enum reg_rt rt;
    char name[REG_NAME_MAX + 1]; /* "" for PING, METRICS, CATALOG */
    char ref[REG_REF_MAX];       /* "" unless MANIFEST, BLOB, UPLOAD, REFERRERS */
    const char *allow;           /* the endpoint's methods ("GET, HEAD"): an Allow header */
} reg_route;

/* Routes method (e.g. "GET"; compared exactly) and url (the path, without the query). out is
 * always initialised; its fields are meaningful as the status says. */
enum reg_route_status registry_route(const char *method, const char *url, reg_route *out);

#endif
