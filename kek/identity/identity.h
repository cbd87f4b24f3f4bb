/*
 * identity.h — managed identities, modelled on Azure's: a user-assigned identity is created
 * on its own and can be used by several stores; a system-assigned identity is created with a
 * store and lives and dies with it. Vault access policies name an identity's principalId.
 *
 * Files: <home>/identities/<name>.json and <home>/identities/system/<store-id>.json (0600).
 * Thread-safety: functions are re-entrant; concurrent creates of one name: one wins, the
 * other gets CMK_E_EXISTS.
 */
#ifndef CMK_IDENTITY_H
#define CMK_IDENTITY_H

#include <jansson.h>

#include "core/base/error.h"
#include "kek/kek.h"

/* Creates user-assigned identity `name`. CMK_E_EXISTS if it exists. */
cmk_err cmk_identity_create(const char *home, const char *name, cmk_identity *out, cmk_errbuf *eb);
/* Creates the system-assigned identity of a store (idempotent: returns the existing one). */
cmk_err cmk_identity_create_system(const char *home, const char *store_id, cmk_identity *out,
                                   cmk_errbuf *eb);
/* Finds an identity by reference: name, resource id, principalId or clientId (user-assigned
 * or system-assigned). CMK_E_NOT_FOUND with a message naming ref otherwise. */
cmk_err cmk_identity_get(const char *home, const char *ref, cmk_identity *out, cmk_errbuf *eb);
/* The system-assigned identity of store_id; CMK_E_NOT_FOUND if it has none. */
cmk_err cmk_identity_get_system(const char *home, const char *store_id, cmk_identity *out,
                                cmk_errbuf *eb);
/* Deletes user-assigned identity `ref` (any reference form), or a system one by store id with
 * cmk_identity_delete_system. Vault policies naming it stay (as in Azure) but no longer
 * grant anything: the principal no longer exists. */
cmk_err cmk_identity_delete(const char *home, const char *ref, cmk_errbuf *eb);
cmk_err cmk_identity_delete_system(const char *home, const char *store_id, cmk_errbuf *eb);
/* Finds the identity (user or system) whose principalId is exactly principal_id (case
 * aside): what a vault uses to authenticate a principal. out may be NULL.
 * CMK_E_NOT_FOUND otherwise. */
cmk_err cmk_identity_get_by_principal(const char *home, const char *principal_id, cmk_identity *out,
                                      cmk_errbuf *eb);
/* 1 if an identity (user or system) with this principal id exists in home. */
int cmk_identity_principal_exists(const char *home, const char *principal_id);
/* JSON array of all user-assigned identities. Caller owns. */
cmk_err cmk_identity_list(const char *home, json_t **out, cmk_errbuf *eb);
/* The identity as JSON in the shape `az identity create` prints (clientId, id, name,
 * principalId, tenantId, type, ...). Caller owns; NULL on allocation failure. */
json_t *cmk_identity_json(const cmk_identity *id);

#endif
