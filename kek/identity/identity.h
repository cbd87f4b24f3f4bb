/*
 * identity.h — internal: managed identities (the public functions are in cmkstore_admin.h).
 * What the store's key environment and the vault need beyond the administration API:
 * system-assigned identities made and removed with their store, and lookups by principal.
 *
 * Files: <home>/identities/<name>.json and <home>/identities/system/<store-id>.json (0600).
 * Thread-safety: functions are re-entrant; concurrent creates of one name: one wins, the
 * other gets CMK_E_EXISTS.
 */
#ifndef CMK_IDENTITY_H
#define CMK_IDENTITY_H

#include "cmkstore_admin.h"
#include "core/base/error.h"

/* Creates the system-assigned identity of a store (idempotent: returns the existing one). */
CMK_MUST_CHECK cmk_err cmk_identity_create_system(const char *home, const char *store_id,
                                                  cmk_identity *out, cmk_errbuf *eb);
/* Deletes the system-assigned identity of store_id. CMK_E_NOT_FOUND if it has none. */
CMK_MUST_CHECK cmk_err cmk_identity_delete_system(const char *home, const char *store_id,
                                                  cmk_errbuf *eb);
/* Finds the identity (user or system) whose principalId is exactly principal_id (case
 * aside): what a vault uses to authenticate a principal. out may be NULL.
 * CMK_E_NOT_FOUND otherwise. */
CMK_MUST_CHECK cmk_err cmk_identity_get_by_principal(const char *home, const char *principal_id,
                                                     cmk_identity *out, cmk_errbuf *eb);
/* 1 if an identity (user or system) with this principal id exists in home. */
int cmk_identity_principal_exists(const char *home, const char *principal_id);

#endif
