/*
 * http_token.h — Docker registry token authentication (the scheme of distribution's
 * `auth: token`): clients without a token are sent to a token issuer by a
 * `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` challenge, fetch a JWT
 * there (the issuer decides what to grant) and send it as `Authorization: Bearer <jwt>`. The
 * registry trusts the public keys of a PEM file (certificates and/or public keys: the
 * issuer's signing certificate chain), checks the signature (RS256, ES256), the issuer, the
 * audience (the service name), the validity window, and the token's access entries against
 * what the request needs (registry_access.h).
 *
 * Nothing of a token is logged; a refusal's reason (expired, wrong audience...) goes to the
 * server log without the token.
 */
#ifndef CMK_HTTP_TOKEN_H
#define CMK_HTTP_TOKEN_H

#include <stddef.h>

#include "cmkstore.h"
#include "tools/serve/http_jwt.h"

#define HTTP_TOKEN_MAX_KEYS 64

typedef struct http_token http_token;

typedef struct http_token_opts {
    const char *realm;   /* the token issuer's URL, as clients are told */
    const char *service; /* this registry's name: the tokens' audience */
    const char *issuer;  /* the tokens' iss */
    const char *certs;   /* PEM file: CERTIFICATE and PUBLIC KEY blocks */
    unsigned skew_s;     /* clock skew allowed on exp/nbf; 0: JWT_DEFAULT_SKEW */
} http_token_opts;

/* Loads the keys and checks the strings (no quote, backslash or control character: they go
 * into a header). CMK_E_INVAL (naming what is wrong, never key bytes), CMK_E_NOT_FOUND, CMK_E_IO,
 * CMK_E_NOMEM. */
cmk_err http_token_load(const http_token_opts *o, http_token **out, char *err, size_t cap);
void http_token_free(http_token *t);
size_t http_token_keys(const http_token *t);
const char *http_token_realm(const http_token *t);

enum http_token_result {
    HTTP_TOKEN_OK,      /* a valid token; *out holds its claims */
    HTTP_TOKEN_MISSING, /* no bearer token in the request */
    HTTP_TOKEN_INVALID, /* malformed, bad signature, wrong issuer or audience, expired */
};

/* Checks the Authorization header value (may be NULL) at time now. A token whose signature
 * verified is remembered (its SHA-256 and claims, 64 of them): its next uses skip the
 * signature check, never the claims check. Thread-safe. On
 * HTTP_TOKEN_INVALID, why (if not NULL) says what was wrong, for the server log. */
enum http_token_result http_token_check(http_token *t, const char *authorization, int64_t now,
                                        jwt_token *out, char *why, size_t whycap);

/* The WWW-Authenticate value: Bearer realm="..",service=".." then, when needs is not 0,
 * scope="repository:NAME:pull,push" (or "registry:catalog:*" for REG_NEED_CATALOG) and
 * error="..." when error is not NULL. NULL if it does not fit in cap. */
const char *http_token_challenge(const http_token *t, const char *name, unsigned needs,
                                 const char *error, char *out, size_t cap);

#endif
