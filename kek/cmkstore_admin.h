/*
 * cmkstore_admin.h — administering a cmkstore home: where it is, its managed identities,
 * and its local key vaults with their keys and access policies. The `cmkstore identity`
 * and `cmkstore vault` commands are built on it; a program embedding the store uses it the
 * same way.
 *
 * The local vault is modelled on Azure Key Vault: RSA keys (2048/3072/4096; RSA-HSM in an
 * HSM-backed vault, see kek/HSM.md) with versions (32 lowercase hex digits), key identifiers
 *     local://<vault>/keys/<name>/<version>   versioned   (manual rotation)
 *     local://<vault>/keys/<name>             versionless (the latest version)
 * access policies per principal (an identity's principalId) with key permissions, enable /
 * disable per key or version, soft delete with a retention period, recover, purge (refused
 * under purge protection), and an audit log of every key operation. Managed identities are
 * modelled on Azure's: a user-assigned identity is made on its own and may serve several
 * stores; a system-assigned one is made with a store and lives and dies with it.
 *
 * Conventions
 *  - home is a resolved home directory (cmk_home_resolve); NULL or "" is CMK_E_INVAL.
 *  - Functions returning cmk_err (cmkstore_err.h) return CMK_OK on success. On failure *eb
 *    (eb may be NULL) holds the code and a message naming what failed; messages never
 *    contain key material or PINs. They state the fault and never name a `cmkstore`
 *    command; the command line adds which command to run as a hint.
 *  - A failed call leaves nothing half done on disk (metadata files are replaced
 *    atomically; a new vault, key version or identity appears whole or not at all) and
 *    leaves *out NULL. The one exception is said where it applies.
 *  - json_t **out (jansson): on success a new reference the caller owns and releases with
 *    json_decref, in the shape `az keyvault ...` / `az identity ...` print. out may be NULL
 *    when the answer is not wanted.
 *  - Thread- and process-safety: every function is re-entrant and keeps no state between
 *    calls. Each mutation of a vault holds the vault's lock (flock on <vault>/lock); readers
 *    never wait. Concurrent creates of one name: one wins, the others get CMK_E_EXISTS.
 *  - Vault operations are the operator's: access policies do not apply to them; each is
 *    audited as identity "operator" (an operation done but not recorded fails with the
 *    audit's error). Access policies govern the stores' key use only.
 *  - Errors every function may return besides those listed: CMK_E_INVAL (bad argument or
 *    name: 1-63 letters, digits and '-', not starting with '-'), CMK_E_NOMEM, CMK_E_IO (a
 *    file operation failed; the message says which), CMK_E_CORRUPT (a metadata file is
 *    damaged: the message names it; restore it from a backup), CMK_E_BUSY (a vault kept
 *    being replaced while waiting for its lock: retry).
 */
#ifndef CMKSTORE_ADMIN_H
#define CMKSTORE_ADMIN_H

#include <jansson.h>

#include "cmkstore_err.h"
#include "cmkstore_kek.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CMK_PATH_MAX     4096       /* room for a home directory (cmk_home_resolve) */
#define CMK_VAULT_SCHEME "local://" /* local vault key identifiers */

/* ---- the home --------------------------------------------------------------------------- */

/* Resolves the home: explicit_home if not NULL or "", else $CMKSTORE_HOME, else
 * $HOME/.cmkstore; out receives its canonical absolute path. With create the directory is
 * made (0700) when missing. CMK_E_NOT_FOUND if it is missing and create is 0, CMK_E_INVAL
 * if none of the three is set or the path is not a directory. */
CMK_API cmk_err cmk_home_resolve(const char *explicit_home, int create, char out[CMK_PATH_MAX],
                                 cmk_errbuf *eb);

/* The home's tenant id (a UUID, <home>/tenant: created and saved on first call): the tenant of
 * its identities and access policies. CMK_E_CORRUPT if the file holds no UUID. */
CMK_API cmk_err cmk_home_tenant(const char *home, char out[37], cmk_errbuf *eb);

/* ---- managed identities (<home>/identities/, 0600 JSON files) ---------------------------- */

/* Creates user-assigned identity `name` (fresh principalId and clientId, the home's
 * tenant). CMK_E_EXISTS if it exists. */
CMK_API cmk_err cmk_identity_create(const char *home, const char *name, cmk_identity *out,
                                    cmk_errbuf *eb);

/* Finds an identity by reference: name, resource id, principalId or clientId (user- or
 * system-assigned). CMK_E_NOT_FOUND naming ref otherwise. */
CMK_API cmk_err cmk_identity_get(const char *home, const char *ref, cmk_identity *out,
                                 cmk_errbuf *eb);

/* The system-assigned identity of store store_id; CMK_E_NOT_FOUND if it has none. */
CMK_API cmk_err cmk_identity_get_system(const char *home, const char *store_id, cmk_identity *out,
                                        cmk_errbuf *eb);

/* Deletes user-assigned identity `ref` (any reference form). Vault policies naming it stay
 * (as in Azure) but grant nothing any more: the principal no longer exists.
 * CMK_E_NOT_FOUND; CMK_E_REFUSED for a system-assigned identity (it goes with its store). */
CMK_API cmk_err cmk_identity_delete(const char *home, const char *ref, cmk_errbuf *eb);

/* JSON array of every user-assigned identity (cmk_identity_json), sorted by name. A
 * damaged identity file is left out rather than failing the list. */
CMK_API cmk_err cmk_identity_list(const char *home, json_t **out, cmk_errbuf *eb);

/* The identity as `az identity create` prints it (clientId, id, name, principalId,
 * tenantId, type, created; storeId for a system-assigned one). A new reference the caller
 * owns; NULL when out of memory. */
CMK_API json_t *cmk_identity_json(const cmk_identity *id);

/* ---- vaults (<home>/vaults/<vault>/) ----------------------------------------------------- */

typedef struct cmk_vault_opts {
    int purge_protection; /* refuse purge of deleted keys/vault until the retention ends */
    int retention_days;   /* soft-delete retention, 7..90; 0: 90 */
    /* HSM-backed vault (kek/HSM.md): RSA-HSM keys are generated in this PKCS#11 token. */
    const char *hsm_token;    /* token label; NULL: a software-only vault */
    const char *hsm_module;   /* module path; NULL: $CMKSTORE_PKCS11_MODULE / pkcs11.json */
    const char *hsm_pin_file; /* user PIN file; NULL: the PIN is found at each use as for a
                               * pkcs11: key ($CMKSTORE_PKCS11_PIN_FILE, ..., pkcs11.json) */
} cmk_vault_opts;

/* Creates vault `name` (o may be NULL: defaults). An HSM-backed vault's token is checked
 * now (module loads, token present, PIN logs in): the PKCS#11 errors of kek/HSM.md.
 * CMK_E_EXISTS if a vault of that name exists, live or soft-deleted. */
CMK_API cmk_err cmk_vault_create(const char *home, const char *name, const cmk_vault_opts *o,
                                 json_t **out, cmk_errbuf *eb);

/* vault.json of vault `name` (also while soft-deleted). CMK_E_NOT_FOUND. Not audited. */
CMK_API cmk_err cmk_vault_show(const char *home, const char *name, json_t **out, cmk_errbuf *eb);

/* Every vault of the home (as cmk_vault_show), sorted by name; a vault being created or
 * purged right now is left out. Not audited. */
CMK_API cmk_err cmk_vault_list(const char *home, json_t **out, cmk_errbuf *eb);

/* Soft-deletes the vault: every key in it becomes unusable (CMK_E_KEY_DELETED) until
 * cmk_vault_recover. CMK_E_NOT_FOUND; CMK_E_REFUSED if it is already deleted. */
CMK_API cmk_err cmk_vault_delete(const char *home, const char *name, cmk_errbuf *eb);

/* Undoes cmk_vault_delete. CMK_E_NOT_FOUND; CMK_E_REFUSED if it is not deleted. */
CMK_API cmk_err cmk_vault_recover(const char *home, const char *name, json_t **out, cmk_errbuf *eb);

/* Removes a soft-deleted vault for good, with its keys (an HSM-backed vault's key pairs are
 * destroyed in the token first; if that fails nothing is removed). CMK_E_NOT_FOUND;
 * CMK_E_REFUSED if it is not deleted or under purge protection before its scheduled purge
 * date. */
CMK_API cmk_err cmk_vault_purge(const char *home, const char *name, cmk_errbuf *eb);

/* Sets the key permissions of object_id (a principalId; replaces its previous ones). perms:
 * get, list, create, update, import, delete, recover, backup, restore, purge, decrypt,
 * encrypt, unwrapKey, wrapKey, verify, sign, rotate, all (a store needs get, unwrapKey,
 * wrapKey). CMK_E_INVAL for an unknown permission or an object id that is not a UUID;
 * CMK_E_NOT_FOUND; CMK_E_REFUSED in a soft-deleted vault. */
CMK_API cmk_err cmk_vault_set_policy(const char *home, const char *vault, const char *object_id,
                                     const char *const *perms, size_t nperms, json_t **out,
                                     cmk_errbuf *eb);

/* Removes object_id's policy: its key use is denied from the next call on. CMK_E_NOT_FOUND
 * (no such vault, or no policy for object_id); CMK_E_REFUSED in a soft-deleted vault. */
CMK_API cmk_err cmk_vault_delete_policy(const char *home, const char *vault, const char *object_id,
                                        json_t **out, cmk_errbuf *eb);

/* The vault's audit log as a JSON array, oldest first (a record torn by a crash is
 * skipped). CMK_E_NOT_FOUND. Not audited. */
CMK_API cmk_err cmk_vault_audit(const char *home, const char *vault, json_t **out, cmk_errbuf *eb);

/* ---- keys ---------------------------------------------------------------------------------- */

/* Creates key `name`, or a new version of it if it exists (as `az keyvault key create`).
 * kty "RSA" (NULL: RSA), "RSA-HSM" (HSM-backed vaults), "EC"; size RSA 2048 (0), 3072,
 * 4096; EC 256 (0), 384, 521. CMK_E_NOT_FOUND (vault); CMK_E_KEY_DELETED (vault
 * soft-deleted); CMK_E_EXISTS if a soft-deleted key has the name (recover or purge it
 * first); CMK_E_UNSUPPORTED for EC-HSM and oct; CMK_E_REFUSED for RSA-HSM in a software
 * vault; CMK_E_CRYPTO if generation fails; RSA-HSM: the PKCS#11 errors of kek/HSM.md. */
CMK_API cmk_err cmk_vault_key_create(const char *home, const char *vault, const char *name,
                                     const char *kty, unsigned size, json_t **out, cmk_errbuf *eb);

/* Version `version` of the key (NULL or "": the latest), also of a soft-deleted key (with
 * its deletion dates). CMK_E_NOT_FOUND (vault, key or version); CMK_E_KEY_DELETED (vault
 * soft-deleted). */
CMK_API cmk_err cmk_vault_key_show(const char *home, const char *vault, const char *name,
                                   const char *version, json_t **out, cmk_errbuf *eb);

/* The live keys (list) or the soft-deleted ones (list_deleted), sorted by name; every
 * version of one live key (list_versions, oldest first). CMK_E_NOT_FOUND;
 * CMK_E_KEY_DELETED (vault, or for list_versions the key, soft-deleted). */
CMK_API cmk_err cmk_vault_key_list(const char *home, const char *vault, json_t **out,
                                   cmk_errbuf *eb);
CMK_API cmk_err cmk_vault_key_list_deleted(const char *home, const char *vault, json_t **out,
                                           cmk_errbuf *eb);
CMK_API cmk_err cmk_vault_key_list_versions(const char *home, const char *vault, const char *name,
                                            json_t **out, cmk_errbuf *eb);

/* Enables or disables the whole key (version NULL or "": every version) or one version; a
 * store's next use of a disabled key fails with CMK_E_KEY_DISABLED. CMK_E_NOT_FOUND;
 * CMK_E_KEY_DELETED. */
CMK_API cmk_err cmk_vault_key_set_enabled(const char *home, const char *vault, const char *name,
                                          const char *version, int enabled, json_t **out,
                                          cmk_errbuf *eb);

/* Soft-deletes the key (every store use fails with CMK_E_KEY_DELETED until it is
 * recovered), recovers it, or purges a soft-deleted key for good (RSA-HSM pairs destroyed
 * in the token first). CMK_E_NOT_FOUND; CMK_E_KEY_DELETED (delete of a deleted key, or the
 * vault deleted); CMK_E_REFUSED (recover or purge of a live key, purge under purge
 * protection before the scheduled purge date). */
CMK_API cmk_err cmk_vault_key_delete(const char *home, const char *vault, const char *name,
                                     json_t **out, cmk_errbuf *eb);
CMK_API cmk_err cmk_vault_key_recover(const char *home, const char *vault, const char *name,
                                      json_t **out, cmk_errbuf *eb);
CMK_API cmk_err cmk_vault_key_purge(const char *home, const char *vault, const char *name,
                                    cmk_errbuf *eb);

/* ---- key identifiers ----------------------------------------------------------------------- */

/* A parsed local key identifier; version is "" for a versionless one. */
typedef struct cmk_vault_kid {
    char vault[64];
    char key[64];
    char version[33];
} cmk_vault_kid;

/* Parses "local://<vault>/keys/<name>[/<version>]" (scheme case-insensitive, a trailing '/'
 * tolerated, the version folded to lowercase). CMK_E_INVAL with a message showing the
 * expected form otherwise. Pure: no I/O. */
CMK_API cmk_err cmk_vault_kid_parse(const char *kid, cmk_vault_kid *out, cmk_errbuf *eb);

/* Formats a key identifier into out (cap bytes): versionless if version is NULL or "".
 * CMK_E_INVAL if it does not fit. */
CMK_API cmk_err cmk_vault_kid_format(char *out, size_t cap, const char *vault, const char *key,
                                     const char *version, cmk_errbuf *eb);

/* ---- a principal's key use (the vault served over HTTPS, `cmkstore vault serve`) ---------- */

/* What a store does with a key through the local vault's KEK provider, done for another
 * party that has authenticated as `principal` (the principalId of an identity of the home):
 * each call authorises the principal by the vault's access policy, checks the vault's and
 * key's state and writes one audit record under the principal, exactly as the provider does
 * for a store, and fails with the key-access codes of cmkstore_kek.h: CMK_E_KEY_DENIED (the
 * principal is no identity of the home or lacks the permission), CMK_E_KEY_DISABLED,
 * CMK_E_KEY_DELETED (key or vault soft-deleted), CMK_E_KEY_NOT_FOUND (vault, key or
 * version), CMK_E_KEY_UNREACHABLE (the use could not be recorded). Key identifiers are
 * local:// ones (cmk_vault_kid_parse). A handle is thread-safe; close it once. */
typedef struct cmk_vault_access cmk_vault_access;

CMK_API cmk_err cmk_vault_access_open(const char *home, cmk_vault_access **out, cmk_errbuf *eb);
/* NULL is a no-op. */
CMK_API void cmk_vault_access_close(cmk_vault_access *a);

/* Permission "get": the version kid names (versionless: the latest) as cmk_vault_key_show
 * prints it; a disabled key or version is CMK_E_KEY_DISABLED. Audited "get". */
CMK_API cmk_err cmk_vault_access_get(cmk_vault_access *a, const char *kid, const char *principal,
                                     json_t **out, cmk_errbuf *eb);
/* Permission "list": every version of kid's key (as cmk_vault_key_list_versions), disabled
 * ones too. Audited "listVersions". */
CMK_API cmk_err cmk_vault_access_versions(cmk_vault_access *a, const char *kid,
                                          const char *principal, json_t **out, cmk_errbuf *eb);
/* Permission "get": kid's key while it is soft-deleted (its latest version with the deletion
 * fields, as cmk_vault_key_show); CMK_E_KEY_NOT_FOUND when it is not deleted. Audited
 * "getDeleted". */
CMK_API cmk_err cmk_vault_access_deleted(cmk_vault_access *a, const char *kid,
                                         const char *principal, json_t **out, cmk_errbuf *eb);
/* Permissions "wrapKey" / "unwrapKey" with a versioned vkid: in (inlen bytes) wrapped into out
 * (room for CMK_WRAPPED_MAX) or unwrapped into out (capacity *outlen); *outlen receives the
 * length (0 on failure, out wiped). CMK_E_UNSUPPORTED for another alg, CMK_E_INVAL for a data
 * key the key cannot take, CMK_E_INTEGRITY for a wrapped key it cannot undo. The caller
 * zeroizes an unwrapped key. Audited "wrapKey" / "unwrapKey" with the algorithm. */
CMK_API cmk_err cmk_vault_access_wrap(cmk_vault_access *a, const char *vkid, const char *principal,
                                      cmk_wrap_alg alg, const unsigned char *in, size_t inlen,
                                      unsigned char *out, size_t *outlen, cmk_errbuf *eb);
CMK_API cmk_err cmk_vault_access_unwrap(cmk_vault_access *a, const char *vkid,
                                        const char *principal, cmk_wrap_alg alg,
                                        const unsigned char *in, size_t inlen, unsigned char *out,
                                        size_t *outlen, cmk_errbuf *eb);

#ifdef __cplusplus
}
#endif
#endif /* CMKSTORE_ADMIN_H */
