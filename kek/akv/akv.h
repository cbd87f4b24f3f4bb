/*
 * akv.h — internal: the Azure Key Vault KEK provider ("akv"). It serves key identifiers
 * https://<vault-host>[:port]/keys/<name>[/<version>] over the Key Vault REST protocol
 * (api-version 7.4): GET /keys/<name>[/<version>] describes a key, POST .../wrapkey and
 * .../unwrapkey wrap and unwrap data keys in the vault, GET /deletedkeys/<name> tells a deleted
 * key from a missing one. Plain http:// identifiers are refused.
 *
 * Authentication: the first request to a vault goes without a token; the vault's 401
 * challenge names the tenant and resource (its domain must be the vault's, unless
 * CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION=1), then tokens come from the sources
 * of token.h. The store's identity (the principal of each call) is looked up in the home:
 * a user-assigned identity's client id is sent to the managed-identity endpoint, a
 * system-assigned one sends none; AZURE_CLIENT_ID, when set, is sent instead (on an Azure
 * host the home's identities are not Azure's).
 *
 * Configuration (environment, read when a key is first used): CMKSTORE_CA_FILE (extra CA
 * certificates), CMKSTORE_AKV_MAX_ATTEMPTS, and the credential variables of token.h.
 */
#ifndef CMK_AKV_H
#define CMK_AKV_H

#include "core/base/error.h"
#include "kek/kek.h"

/* The provider for home (may be NULL or "": identities are then system-assigned only).
 * Cheap: nothing is read or connected until an https:// key is used. */
CMK_MUST_CHECK cmk_err cmk_akv_provider_new(const char *home, cmk_kek_provider **out,
                                            cmk_errbuf *eb);

#endif
