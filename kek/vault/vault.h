/*
 * vault.h — the local key vault: the embedded default KEK holder (no server to install).
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

#include <jansson.h>

#include "cmkstore_kek.h"
#include "core/base/error.h"

#define CMK_VAULT_SCHEME "local://"

typedef struct cmk_vault_opts {
    int purge_protection; /* refuse purge of deleted keys/vault until the retention ends */
    int retention_days;   /* soft-delete retention, 7..90; 0: 90 */
    /* HSM-backed vault (kek/HSM.md): RSA-HSM keys are generated in this PKCS#11 token. */
    const char *hsm_token;    /* token label; NULL: a software-only vault */
    const char *hsm_module;   /* module path; NULL: $CMKSTORE_PKCS11_MODULE / pkcs11.json */
    const char *hsm_pin_file; /* user PIN file; NULL: the PIN is found at each use as for a
                               * pkcs11: key ($CMKSTORE_PKCS11_PIN_FILE, ..., pkcs11.json) */
} cmk_vault_opts;

/* Parsed local key identifier. version is "" for a versionless identifier. */
typedef struct cmk_vault_kid {
    char vault[64];
    char key[64];
    char version[33];
} cmk_vault_kid;

/* Parses "local://<vault>/keys/<name>[/<version>]" (a trailing '/' is tolerated).
 * CMK_E_INVAL with a message showing the expected form otherwise. */
cmk_err cmk_vault_kid_parse(const char *kid, cmk_vault_kid *out, cmk_errbuf *eb);
/* Formats a key identifier (versionless if version is NULL or ""). */
cmk_err cmk_vault_kid_format(char *out, size_t cap, const char *vault, const char *key,
                             const char *version, cmk_errbuf *eb);

/* ---- vaults (operator) ---- */
/* Each *out receives JSON in the shape `az keyvault ...` prints; the caller owns it. Every
 * json_t **out may be NULL when the caller does not want the result. */
cmk_err cmk_vault_create(const char *home, const char *name, const cmk_vault_opts *o, json_t **out,
                         cmk_errbuf *eb);
cmk_err cmk_vault_show(const char *home, const char *name, json_t **out, cmk_errbuf *eb);
cmk_err cmk_vault_list(const char *home, json_t **out, cmk_errbuf *eb);
/* Soft-deletes the vault: every key in it becomes unusable (CMK_E_KEY_DELETED) until
 * cmk_vault_recover. */
cmk_err cmk_vault_delete(const char *home, const char *name, cmk_errbuf *eb);
cmk_err cmk_vault_recover(const char *home, const char *name, json_t **out, cmk_errbuf *eb);
/* Purges a soft-deleted vault; CMK_E_REFUSED under purge protection. */
cmk_err cmk_vault_purge(const char *home, const char *name, cmk_errbuf *eb);

/* Sets the key permissions of object_id (replacing its previous key permissions).
 * Unknown permission names are CMK_E_INVAL listing the valid ones. */
cmk_err cmk_vault_set_policy(const char *home, const char *vault, const char *object_id,
                             const char *const *perms, size_t nperms, json_t **out, cmk_errbuf *eb);
/* Removes object_id's policy; CMK_E_NOT_FOUND if it has none. */
cmk_err cmk_vault_delete_policy(const char *home, const char *vault, const char *object_id,
                                json_t **out, cmk_errbuf *eb);

/* ---- keys (operator) ---- */
/* Creates key `name`, or a new version of it if it exists (as `az keyvault key create`
 * does). kty "RSA" (default when NULL), "RSA-HSM" (needs an HSM-backed vault), "EC".
 * size: RSA 2048 (default when 0), 3072, 4096; EC 256 (default), 384, 521.
 * CMK_E_EXISTS if a soft-deleted key has this name (recover or purge it first). */
cmk_err cmk_vault_key_create(const char *home, const char *vault, const char *name, const char *kty,
                             unsigned size, json_t **out, cmk_errbuf *eb);
/* version NULL or "": the latest version. */
cmk_err cmk_vault_key_show(const char *home, const char *vault, const char *name,
                           const char *version, json_t **out, cmk_errbuf *eb);
cmk_err cmk_vault_key_list(const char *home, const char *vault, json_t **out, cmk_errbuf *eb);
cmk_err cmk_vault_key_list_versions(const char *home, const char *vault, const char *name,
                                    json_t **out, cmk_errbuf *eb);
cmk_err cmk_vault_key_list_deleted(const char *home, const char *vault, json_t **out,
                                   cmk_errbuf *eb);
/* version NULL or "": the whole key (every version); else that version only. */
cmk_err cmk_vault_key_set_enabled(const char *home, const char *vault, const char *name,
                                  const char *version, int enabled, json_t **out, cmk_errbuf *eb);
/* Soft delete / recover / purge (purge: CMK_E_REFUSED under purge protection; only deleted
 * keys can be purged). */
cmk_err cmk_vault_key_delete(const char *home, const char *vault, const char *name, json_t **out,
                             cmk_errbuf *eb);
cmk_err cmk_vault_key_recover(const char *home, const char *vault, const char *name, json_t **out,
                              cmk_errbuf *eb);
cmk_err cmk_vault_key_purge(const char *home, const char *vault, const char *name, cmk_errbuf *eb);

/* The audit log as a JSON array (most recent last). */
cmk_err cmk_vault_audit(const char *home, const char *vault, json_t **out, cmk_errbuf *eb);

/* ---- the KEK provider for stores ---- */
/* A provider serving local:// identifiers of the vaults under home. Free it with
 * cmk_kek_provider_free (kek.h). Principals are authenticated by existing in the home's
 * identities, then authorised by the vault's policy. */
cmk_err cmk_vault_provider_new(const char *home, cmk_kek_provider **out, cmk_errbuf *eb);

#endif
