/*
 * vault_token.h — the access tokens of `cmkstore vault serve`: what its token endpoint
 * issues to an identity of the home and what its key endpoints accept.
 *
 * A token is "cmkv1." base64url(payload) "." base64url(HMAC-SHA256(secret, payload)), the
 * payload "<principalId>|<clientId>|<expires, Unix seconds>|<resource>". Clients treat it as
 * opaque (as Entra tokens are to a Key Vault client); only the server that holds the secret
 * can verify it. The secret is 32 random bytes in <home>/vault-serve/token.key (0600), made
 * on first use, so tokens stay valid across restarts of the server and across servers of one
 * home. Tokens are never logged.
 */
#ifndef CMK_VAULT_TOKEN_H
#define CMK_VAULT_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore.h"

#define VAULT_TOKEN_MAX    1024 /* longest token accepted or issued, with its terminator */
#define VAULT_RESOURCE_MAX 256

typedef struct vault_tokens vault_tokens;

/* Loads the home's token secret, making it if absent. err: what failed (CMK_E_IO,
 * CMK_E_REFUSED for a secret file readable by group or others, CMK_E_CORRUPT for one of the
 * wrong size, CMK_E_NOMEM). */
cmk_err vault_tokens_open(const char *home, vault_tokens **out, char *err, size_t cap);
/* Wipes the secret. NULL is a no-op. */
void vault_tokens_free(vault_tokens *t);

/* A token for principal / client_id (UUIDs) and resource, expiring at exp. Returns 0, or -1
 * if it does not fit out (cap: VAULT_TOKEN_MAX is enough) or a field holds '|'. */
int vault_token_issue(const vault_tokens *t, const char *principal, const char *client_id,
                      int64_t exp, const char *resource, char *out, size_t cap);

enum vault_token_result {
    VAULT_TOKEN_OK,
    VAULT_TOKEN_BAD,     /* malformed, or not signed with this secret */
    VAULT_TOKEN_EXPIRED, /* genuine, past its expiry */
};

/* The identity a token names (fields set only for OK and EXPIRED). */
typedef struct vault_token_claims {
    char principal[37];
    char client_id[37];
    int64_t exp;
    char resource[VAULT_RESOURCE_MAX];
} vault_token_claims;

/* Verifies token (untrusted: any bytes, len bounded by the caller) at time now. Pure apart
 * from reading the secret; constant-time comparison of the MAC. */
enum vault_token_result vault_token_verify(const vault_tokens *t, const char *token, int64_t now,
                                           vault_token_claims *out);

/* For tests and fuzzing: a token context over a given secret (32 bytes). */
vault_tokens *vault_tokens_from_secret(const unsigned char secret[32]);

#endif
