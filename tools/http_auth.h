/*
 * http_auth.h — client authentication for `cmkstore serve`: HTTP Basic against an htpasswd
 * file of PBKDF2-SHA256 hashes, and static bearer tokens.
 *
 * htpasswd lines:  user:$pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>
 * ('#' starts a comment line). Token file: one token per line (at least 16 characters).
 * Both files hold secrets and must not be readable by group or others (0600): loading
 * refuses them otherwise. Nothing from either file, nor any Authorization header, is ever
 * logged.
 *
 * PBKDF2 is slow on purpose, and registry clients send credentials with every request, so a
 * successful Basic check is remembered as an HMAC (under a per-process random key) of the
 * credentials; the cache holds no password.
 */
#ifndef CMK_HTTP_AUTH_H
#define CMK_HTTP_AUTH_H

#include <stddef.h>

#include "cmkstore.h"

#define HTTP_AUTH_DEFAULT_ITERATIONS 600000u
#define HTTP_AUTH_MIN_ITERATIONS     10000u
#define HTTP_AUTH_MAX_ITERATIONS     10000000u

typedef struct http_auth http_auth;

/* Loads the credentials (either path may be NULL; both NULL: *out = NULL, no auth). On
 * failure err receives a message (naming the file and line, never its content):
 * CMK_E_NOT_FOUND, CMK_E_REFUSED (mode), CMK_E_INVAL (syntax), CMK_E_IO, CMK_E_NOMEM. */
cmk_err http_auth_load(const char *htpasswd, const char *token_file, http_auth **out, char *err,
                       size_t errcap);
void http_auth_free(http_auth *a);

/* 1 if the Authorization header value (may be NULL) grants access. Thread-safe. */
int http_auth_check(http_auth *a, const char *authorization);
/* Which challenges to send with a 401. */
int http_auth_has_basic(const http_auth *a);
int http_auth_has_bearer(const http_auth *a);

/* Makes an htpasswd line for user (1..255 characters, no ':' nor control characters) and
 * password (1..1024 bytes) with a fresh random salt. *line: malloc'd, no newline. */
cmk_err http_auth_make_line(const char *user, const char *password, size_t passlen,
                            unsigned iterations, char **line, char *err, size_t errcap);

#endif
