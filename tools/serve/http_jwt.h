/*
 * http_jwt.h — the bearer tokens of Docker registry token authentication: compact JWS
 * (header.payload.signature, base64url) signed with RS256 or ES256, whose claims carry the
 * issuer, the audience (the registry's service name), the validity window and the access
 * granted ({"type", "name", "actions"} entries).
 *
 * Parsing is pure (no I/O, no global state, bounded: a token is at most JWT_MAX_LEN bytes,
 * at most JWT_MAX_ACCESS access entries) and fuzzed (tests/fuzz/fuzz_jwt.c). The signature is
 * checked with OpenSSL against keys the caller loaded (http_token.c); nothing here trusts a key
 * named by the token itself (kid, jku, x5c are ignored), so a token can only be one that a
 * holder of a configured key signed.
 */
#ifndef CMK_HTTP_JWT_H
#define CMK_HTTP_JWT_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

#include "cmkstore.h"

#define JWT_MAX_LEN      16384
#define JWT_MAX_ACCESS   32
#define JWT_MAX_AUD      8
#define JWT_STR_MAX      256 /* issuer, audience, subject, resource names: longer is refused */
#define JWT_DEFAULT_SKEW 60  /* seconds of clock skew allowed on exp and nbf */

/* Actions of an access entry, as bits. */
#define JWT_ACT_PULL   1u
#define JWT_ACT_PUSH   2u
#define JWT_ACT_DELETE 4u
#define JWT_ACT_ALL    8u /* "*" */

typedef enum { JWT_ALG_RS256, JWT_ALG_ES256 } jwt_alg;

typedef struct jwt_access {
    char type[32]; /* "repository", "registry" */
    char name[JWT_STR_MAX];
    unsigned actions; /* JWT_ACT_*; unknown actions are left out */
} jwt_access;

typedef struct jwt_token {
    jwt_alg alg;
    size_t signed_len; /* bytes of header.payload: the signed input is the token's prefix */
    unsigned char sig[512];
    size_t siglen;
    char iss[JWT_STR_MAX];
    char sub[JWT_STR_MAX];
    char aud[JWT_MAX_AUD][JWT_STR_MAX];
    size_t naud;
    int has_exp, has_nbf;
    int64_t exp, nbf;
    jwt_access access[JWT_MAX_ACCESS];
    size_t naccess;
} jwt_token;

/* Parses the compact token tok[0..len) (no signature check). CMK_E_INVAL with a reason in
 * err (never the token's bytes) if it is not a well-formed RS256/ES256 JWT. */
cmk_err jwt_parse(const char *tok, size_t len, jwt_token *out, char *err, size_t cap);

/* 1 if t's signature over tok's first t->signed_len bytes verifies with one of keys (RSA keys
 * of 2048 bits or more for RS256, P-256 keys for ES256), 0 otherwise. tok is the token t was
 * parsed from. */
int jwt_verify(const jwt_token *t, const char *tok, EVP_PKEY *const *keys, size_t nkeys);

/* Checks the claims: iss equals issuer, aud (a string or a list) holds audience, exp is
 * present and now < exp + skew, now >= nbf - skew when nbf is present. CMK_E_INVAL or
 * CMK_E_REFUSED (expired, not yet valid) with a reason in err. */
cmk_err jwt_check_claims(const jwt_token *t, const char *issuer, const char *audience, int64_t now,
                         unsigned skew, char *err, size_t cap);

/* The JWT_ACT_* bits t grants on resource type:name (JWT_ACT_ALL counts as every action). */
unsigned jwt_granted(const jwt_token *t, const char *type, const char *name);

#endif
