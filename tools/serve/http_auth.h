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
 *
 * What a password guesser can cost the server is bounded (http_auth_set_limits): at most
 * max_checks PBKDF2 computations run at once (the others wait for a slot), and after
 * failure_limit failed checks in a row from one client address (4 x failure_limit for one
 * user name, from any address) further password checks from there / for that user are
 * refused for backoff_s seconds after the last failure, without computing PBKDF2. Credentials
 * already verified (in the cache) are never refused, so known clients keep working while
 * someone guesses. Failures are tracked under HMACs of the address and the user name, in a
 * bounded table.
 */
#ifndef CMK_HTTP_AUTH_H
#define CMK_HTTP_AUTH_H

#include <stddef.h>

#include "cmkstore.h"
#include "tools/serve/http_metrics.h"

#define HTTP_AUTH_DEFAULT_ITERATIONS 600000u
#define HTTP_AUTH_MIN_ITERATIONS     10000u
#define HTTP_AUTH_MAX_ITERATIONS     10000000u
#define HTTP_AUTH_DEFAULT_MAX_CHECKS 2u
#define HTTP_AUTH_DEFAULT_FAILURES   5u
#define HTTP_AUTH_DEFAULT_BACKOFF    10u
#define HTTP_AUTH_USER_FACTOR        4u /* a user name's failure limit: 4 x an address's */

typedef struct http_auth http_auth;

/* Loads the credentials (either path may be NULL; both NULL: *out = NULL, no auth). On
 * failure err receives a message (naming the file and line, never its content):
 * CMK_E_NOT_FOUND, CMK_E_REFUSED (mode), CMK_E_INVAL (syntax), CMK_E_IO, CMK_E_NOMEM. */
cmk_err http_auth_load(const char *htpasswd, const char *token_file, http_auth **out, char *err,
                       size_t errcap);
void http_auth_free(http_auth *a);

typedef struct http_auth_limits {
    unsigned max_checks;    /* PBKDF2 computations at once; 0: HTTP_AUTH_DEFAULT_MAX_CHECKS */
    unsigned failure_limit; /* failures in a row before the backoff; 0: the default */
    unsigned backoff_s;     /* refusal after the last failure, seconds; 0: the default */
} http_auth_limits;

/* Sets the limits (the defaults hold until then) and where to count checks, failures and
 * refusals (m may be NULL). Call before the first check. NULL a: no-op. */
void http_auth_set_limits(http_auth *a, const http_auth_limits *l, http_metrics *m);

enum http_auth_result {
    HTTP_AUTH_OK,      /* access granted */
    HTTP_AUTH_DENIED,  /* 401 */
    HTTP_AUTH_BACKOFF, /* 429: too many failures from this client or for this user */
};

#define HTTP_AUTH_USER_MAX 255

/* Checks the Authorization header value (may be NULL). client: the client's address key
 * (http_client_key; NULL: not tracked by address). For HTTP_AUTH_BACKOFF, *retry_after is the
 * wait in seconds (>= 1). a NULL: HTTP_AUTH_OK (no authentication). On HTTP_AUTH_OK, user
 * (usercap >= HTTP_AUTH_USER_MAX + 1; may be NULL) receives the Basic user name, or "" for a
 * static token or no authentication (per-repository access rules use it). Thread-safe; may
 * block while max_checks password checks run. */
enum http_auth_result http_auth_check(http_auth *a, const char *authorization, const char *client,
                                      unsigned *retry_after, char *user, size_t usercap);
/* Which challenges to send with a 401. */
int http_auth_has_basic(const http_auth *a);
int http_auth_has_bearer(const http_auth *a);

/* Makes an htpasswd line for user (1..255 characters, no ':' nor control characters) and
 * password (1..1024 bytes) with a fresh random salt. *line: malloc'd, no newline. */
cmk_err http_auth_make_line(const char *user, const char *password, size_t passlen,
                            unsigned iterations, char **line, char *err, size_t errcap);

#endif
