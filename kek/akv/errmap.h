/*
 * errmap.h — internal: Key Vault replies mapped to the store's key-access errors
 * (cmkstore_kek.h), with a message naming the vault host, key, version and identity (never a
 * token). Pure functions.
 *
 *   403 (AccessDenied, ForbiddenByRbac, ForbiddenByPolicy, ...) and a token refused (401)
 *                                                     -> CMK_E_KEY_DENIED
 *   KeyDisabled (any status), KeyExpired, KeyNotYetValid -> CMK_E_KEY_DISABLED
 *   404 (KeyNotFound, ...)                            -> CMK_E_KEY_NOT_FOUND (the provider asks
 *                                                        /deletedkeys/ whether it is deleted)
 *   409 ObjectIsDeletedButRecoverable / ObjectIsBeingDeleted -> CMK_E_KEY_DELETED
 *   400 on unwrapkey                                  -> CMK_E_INTEGRITY (altered or foreign)
 *   408, 429, 5xx (once the retry budget is spent), anything else -> CMK_E_KEY_UNREACHABLE
 */
#ifndef CMK_AKV_ERRMAP_H
#define CMK_AKV_ERRMAP_H

#include "core/base/error.h"
#include "kek/akv/json.h"

/* What a request was about, for messages. Members may be NULL or "". */
typedef struct cmk_akv_where {
    const char *op;       /* "get", "wrapKey", "unwrapKey", "deleted-key lookup", "token" */
    const char *host;     /* the vault: https://host[:port] */
    const char *key;      /* key name */
    const char *version;  /* version ("" or NULL: latest) */
    const char *identity; /* principal id / client id as the message should show it */
} cmk_akv_where;

/* 1 for statuses worth retrying after Retry-After: 408, 429, 500, 502, 503, 504. */
int cmk_akv_status_retryable(long status);

/* The store's code for an unsuccessful reply (status >= 300) with error body e (may be
 * NULL); sets eb. */
CMK_MUST_CHECK cmk_err cmk_akv_error_map(long status, const cmk_akv_error *e,
                                         const cmk_akv_where *w, cmk_errbuf *eb);

#endif
