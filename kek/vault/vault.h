/*
 * vault.h — internal: the local key vault, the embedded default KEK holder (no server to
 * install). Its administration functions are public, in cmkstore_admin.h; this header adds
 * the KEK provider a store uses.
 *
 * Modelled on Azure Key Vault as the seeds use it: RSA keys (2048/3072/4096) with versions
 * (a version is 32 lowercase hex chars), key identifiers
 *     local://<vault>/keys/<name>/<version>   versioned   (manual rotation)
 *     local://<vault>/keys/<name>             versionless (the latest version: automatic)
 * access policies per principal (object id) with key permissions (get, list, create, update,
 * import, delete, recover, backup, restore, purge, decrypt, encrypt, unwrapKey, wrapKey,
 * verify, sign, rotate, all), enable/disable per key or per version, soft delete with a
 * retention period, recover, purge (refused under purge protection), and an audit log of
 * every key operation (JSON lines: time, identity, operation, vault, key, version, result).
 *
 * The management functions (create, set-policy, key create, ...) are the operator's: they
 * are not subject to access policies (they are audited as identity "operator"). The provider
 * (cmk_vault_provider_new) is what a store uses: its get / wrapKey / unwrapKey are checked
 * against the policy of the principal the store names.
 *
 * Honesty note (also in the README): the policy check guards against misconfiguration, not
 * against a process that can read the vault's files; the private keys are PEM files (0600)
 * in the vault directory. Use an HSM (PKCS#11) for keys that must not be readable.
 *
 * HSM-backed vaults (kek/HSM.md): a vault created with a PKCS#11 token (cmk_vault_opts.hsm_*;
 * vault.json properties.hsm = {module, token, pinFile}) generates RSA-HSM versions in the
 * token: a key pair labelled "<vault>.<key>" whose CKA_ID (4-byte sequence || 12 random bytes)
 * is the version string. No PEM file exists for such a version; the provider checks policy,
 * state and audit as for any key and lets the token unwrap. Purge destroys the pairs.
 *
 * Files under <home>/vaults/<vault>/:
 *   vault.json              name, uri, created, purge protection, retention, policies, deleted
 *   keys/<name>/key.json    kty, size, versions [{version, created, enabled}], enabled,
 *                           deleted {deletedDate, scheduledPurgeDate}
 *   keys/<name>/<version>.pem  RSA private key (PKCS#8 PEM, 0600; none for RSA-HSM versions)
 *   audit.log               JSON lines
 *   lock                    flock taken for every mutation
 * Every metadata update is atomic (cmk_json_save). Thread- and process-safe.
 */
#ifndef CMK_VAULT_H
#define CMK_VAULT_H

#include "cmkstore_admin.h"
#include "cmkstore_kek.h"
#include "core/base/error.h"

/* ---- the KEK provider for stores ---- */
/* A provider serving local:// identifiers of the vaults under home. Free it with
 * cmk_kek_provider_free (kek.h). Principals are authenticated by existing in the home's
 * identities, then authorised by the vault's policy. */
CMK_MUST_CHECK cmk_err cmk_vault_provider_new(const char *home, cmk_kek_provider **out,
                                              cmk_errbuf *eb);

#endif
