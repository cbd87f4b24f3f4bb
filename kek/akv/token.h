/*
 * token.h — internal: access tokens for Key Vault, got the way the Azure SDKs get them, and
 * cached per identity.
 *
 * Sources, in this order unless CMKSTORE_AZURE_CREDENTIAL names one (workload, secret,
 * managed):
 *  - workload identity: AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID + AZURE_TENANT_ID; the
 *    file's assertion is exchanged at AZURE_AUTHORITY_HOST (default
 *    https://login.microsoftonline.com) /<tenant>/oauth2/v2.0/token;
 *  - client secret: AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_CLIENT_SECRET, or the secret
 *    read from the file CMKSTORE_AZURE_CLIENT_SECRET_FILE (--client-secret-file); same
 *    endpoint;
 *  - managed identity through IMDS: GET <endpoint>?api-version=2018-02-01&resource=<resource>
 *    [&client_id=<the store's identity>] with "Metadata: true"; the endpoint is
 *    http://169.254.169.254/metadata/identity/oauth2/token, or
 *    $AZURE_POD_IDENTITY_AUTHORITY_HOST/metadata/identity/oauth2/token, or $IDENTITY_ENDPOINT
 *    (a whole URL; $IDENTITY_HEADER is sent as X-IDENTITY-HEADER when set); its client_id is
 *    $AZURE_CLIENT_ID if set (the Azure identity of the host), else the store's identity's.
 * The tenant is the configured one, else the vault's challenge's. Assertions and secrets are
 * read at each token request and wiped after; tokens live in secure memory and are never put
 * in messages.
 *
 * Cache: one token per (source, client id, tenant, resource), used until `margin` before its
 * expires_on (margin: 5 minutes, or half the token's lifetime if shorter), then renewed.
 * Thread-safe.
 */
#ifndef CMK_AKV_TOKEN_H
#define CMK_AKV_TOKEN_H

#include <stdint.h>

#include "core/base/error.h"
#include "kek/akv/challenge.h"
#include "kek/akv/http.h"
#include "kek/akv/json.h"

/* ---- the cache alone (pure but for its lock; the unit tests drive it with a clock) ---- */

typedef struct cmk_akv_tcache cmk_akv_tcache;

CMK_MUST_CHECK cmk_err cmk_akv_tcache_new(cmk_akv_tcache **out, cmk_errbuf *eb);
void cmk_akv_tcache_free(cmk_akv_tcache *c);
/* A copy of the token cached under key if it is still good at now (secure memory, for
 * cmk_secfree), else NULL. */
char *cmk_akv_tcache_get(cmk_akv_tcache *c, const char *key, int64_t now);
/* Keeps *t under key (replacing an older one); takes t's value over (t is cleared), got_at:
 * when it was issued (for the margin). CMK_E_NOMEM. */
CMK_MUST_CHECK cmk_err cmk_akv_tcache_put(cmk_akv_tcache *c, const char *key, cmk_akv_token *t,
                                          int64_t got_at, cmk_errbuf *eb);
/* Forgets the token under key (the vault refused it). */
void cmk_akv_tcache_drop(cmk_akv_tcache *c, const char *key);
/* How many entries the cache holds. */
size_t cmk_akv_tcache_size(cmk_akv_tcache *c);

/* ---- sources ---- */

typedef struct cmk_akv_auth cmk_akv_auth;

/* Reads the configuration from the environment. CMK_E_INVAL if CMKSTORE_AZURE_CREDENTIAL
 * names no source or the named source lacks a setting. */
CMK_MUST_CHECK cmk_err cmk_akv_auth_new(cmk_akv_http *http, cmk_akv_auth **out, cmk_errbuf *eb);
void cmk_akv_auth_free(cmk_akv_auth *a);

/* What the source is, for messages: "managed identity (IMDS)", "workload identity",
 * "client secret". */
const char *cmk_akv_auth_kind(const cmk_akv_auth *a);

/* A token (secure memory, for cmk_secfree) for the identity client_id ("" for the
 * system-assigned one; the secret and workload sources use AZURE_CLIENT_ID instead) and the
 * challenge's resource. fresh: ignore and replace the cached one. Errors: the source's
 * endpoint unreachable or failing -> CMK_E_KEY_UNREACHABLE; the identity unknown to it or
 * refused (400/401/403) -> CMK_E_KEY_DENIED; a malformed reply -> CMK_E_KEY_UNREACHABLE. The
 * message names the identity and the endpoint, never the token or secret. */
CMK_MUST_CHECK cmk_err cmk_akv_auth_token(cmk_akv_auth *a, const char *client_id,
                                          const cmk_akv_challenge *ch, int fresh, char **token,
                                          cmk_errbuf *eb);

/* The managed-identity source's client id from AZURE_CLIENT_ID ("" if unset or another
 * source): on an Azure host it names the user-assigned identity to use, as the SDKs'
 * default credential does; it wins over the store's identity. */
const char *cmk_akv_auth_env_client(const cmk_akv_auth *a);

/* How many tokens were fetched from the sources (not the cache) so far. */
unsigned long cmk_akv_auth_fetches(const cmk_akv_auth *a);

#endif
