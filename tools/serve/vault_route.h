/*
 * vault_route.h — the URL map of `cmkstore vault serve` (a Key Vault REST subset and an
 * IMDS-shaped token endpoint): a request's method and path to an endpoint, the key name and
 * version it names. Pure: no I/O, no allocation, no global state; thread-safe.
 *
 *   /keys/<name>[/]                         VRT_KEY        GET   (the latest version)
 *   /keys/<name>/<version>[/]               VRT_KEY        GET
 *   /keys/<name>/versions                   VRT_VERSIONS   GET
 *   /keys/<name>/[<version>]/wrapkey        VRT_WRAP       POST  (no version: the latest)
 *   /keys/<name>/[<version>]/unwrapkey      VRT_UNWRAP     POST
 *   /deletedkeys/<name>                     VRT_DELETED    GET
 *   /metadata/identity/oauth2/token[/]      VRT_TOKEN      GET
 *   /cmkstore/test/throttle                 VRT_THROTTLE   POST  (test hook, off by default)
 *   /cmkstore/test/expire-tokens            VRT_EXPIRE     POST  (test hook, off by default)
 *
 * Key Vault's names: 1-127 letters, digits and '-'; versions 32 hex digits (matched without
 * regard to case and returned in lowercase). The operation words are matched without regard
 * to case, as Key Vault does.
 */
#ifndef CMK_VAULT_ROUTE_H
#define CMK_VAULT_ROUTE_H

#define VAULT_NAME_MAX    127
#define VAULT_VERSION_LEN 32

enum vault_rt {
    VRT_KEY,
    VRT_VERSIONS,
    VRT_WRAP,
    VRT_UNWRAP,
    VRT_DELETED,
    VRT_TOKEN,
    VRT_THROTTLE,
    VRT_EXPIRE,
};

enum vault_route_status {
    VROUTE_OK,
    VROUTE_UNKNOWN,    /* no such endpoint (404) */
    VROUTE_BAD_NAME,   /* the key name or version is invalid (400) */
    VROUTE_BAD_METHOD, /* the endpoint does not take the method (405); rt and allow set */
};

typedef struct vault_route {
    enum vault_rt rt;
    char name[VAULT_NAME_MAX + 1];       /* "" for TOKEN and the test hooks */
    char version[VAULT_VERSION_LEN + 1]; /* "" when none was named: the latest */
    const char *allow;                   /* the endpoint's method ("GET" or "POST") */
} vault_route;

/* Routes method + path (the path without its query string). out is filled on every status
 * but UNKNOWN (name and version may then be partial). */
enum vault_route_status vault_route_match(const char *method, const char *path, vault_route *out);

/* 1 if s is an api-version Key Vault could name: "7.4", "2025-07-01", "7.5-preview.1" (digits,
 * '.', '-' and letters, 1-32 characters, starting with a digit). */
int vault_api_version_valid(const char *s);

#endif
