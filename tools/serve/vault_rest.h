/*
 * vault_rest.h — the JSON of `cmkstore vault serve`: the local vault's answers (shaped as
 * `az keyvault key ...` prints them, cmkstore_admin.h) turned into Key Vault's REST shapes,
 * and the store's key-access errors turned into Key Vault's error statuses and codes. Pure:
 * no I/O; every json_t * returned is a new reference (NULL when out of memory).
 *
 *   key bundle       {"key": {"kid", "kty", "key_ops", "n", "e"}, "attributes": {"enabled",
 *                    "created", "updated" (Unix seconds), "recoveryLevel", "recoverableDays",
 *                    "exp"/"nbf" when set}}
 *   deleted bundle   the key bundle plus "recoveryId", "deletedDate", "scheduledPurgeDate"
 *   version list     {"value": [{"kid", "attributes"}], "nextLink": null}
 *   error            {"error": {"code", "message", "innererror": {"code"}}}
 *
 * base is "https://<host>[:port]" as the client named the server: key identifiers are
 * rebuilt on it (local://<vault>/keys/<name>/<version> -> <base>/keys/<name>/<version>).
 */
#ifndef CMK_VAULT_REST_H
#define CMK_VAULT_REST_H

#include <jansson.h>

#include "cmkstore.h"

json_t *vault_rest_key(const json_t *az, const char *base);
json_t *vault_rest_deleted(const json_t *az, const char *base, const char *name);
json_t *vault_rest_versions(const json_t *az_list, const char *base);

/* An error body; inner may be NULL (no innererror). */
json_t *vault_rest_error(const char *code, const char *inner, const char *message);

/* Key Vault's answer to a failed key operation: HTTP status, error code and inner code
 * (NULL: none). */
typedef struct vault_rest_status {
    int status;
    const char *code;
    const char *inner;
} vault_rest_status;
vault_rest_status vault_rest_map(cmk_err rc);

/* <base>/keys/<name>[/<version>] from a local key identifier (its part from "/keys/");
 * 0, or -1 if it does not fit or has no "/keys/". */
int vault_rest_kid(const char *local_kid, const char *base, char *out, size_t cap);

#endif
