/*
 * policy.h — internal to kek/vault/: access policies (vault.json properties.accessPolicies:
 * [{objectId, tenantId, permissions: {keys: [...]}}]) and the authorisation of a store's
 * key use by them. The management side (set/delete) is in vault.h.
 */
#ifndef CMK_VAULT_POLICY_H
#define CMK_VAULT_POLICY_H

#include "kek/vault/context.h"

/* Authenticates principal (it must be an identity of c's home) and authorises permission
 * perm on key kid by the vault's access policy. CMK_E_KEY_DENIED saying who, what, which
 * key and how to fix it; CMK_E_KEY_UNREACHABLE if the identities cannot be read. */
CMK_MUST_CHECK cmk_err cmk_vault_authorise(const cmk_vctx *c, const char *kid,
                                           const char *principal, const char *perm, cmk_errbuf *eb);

#endif
