/*
 * keymeta.h — internal to kek/vault/: a key's metadata, keys/<name>/key.json:
 *   {name, created, updated, enabled, versions: [{version, kty, bits, created, updated,
 *    enabled, n, e | crv, x, y, hsm: {token, label}}], deleted: {deletedDate,
 *    scheduledPurgeDate}}
 * and the JSON answers made from it, in the shapes `az keyvault key ...` prints. Functions
 * returning json_t * return a new reference, NULL when out of memory.
 */
#ifndef CMK_VAULT_KEYMETA_H
#define CMK_VAULT_KEYMETA_H

#include "kek/vault/context.h"

/* keys/<name> (dir) and keys/<name>/key.json (file, if not NULL). */
CMK_MUST_CHECK cmk_err cmk_vkey_paths(const cmk_vctx *c, const char *name, char dir[CMK_PATH_MAX],
                                      char file[CMK_PATH_MAX], cmk_errbuf *eb);

/* Loads and checks key.json. CMK_E_NOT_FOUND with a message naming key and vault;
 * CMK_E_CORRUPT if what the vault relies on is damaged. *kj is the caller's. */
CMK_MUST_CHECK cmk_err cmk_vkey_load(const cmk_vctx *c, const char *name, json_t **kj,
                                     cmk_errbuf *eb);
/* Writes key.json (atomically); the caller holds the vault's lock. */
CMK_MUST_CHECK cmk_err cmk_vkey_save(const cmk_vctx *c, const char *name, const json_t *kj,
                                     cmk_errbuf *eb);

/* The versions array, the latest version, version `version` (NULL if absent); borrowed. */
json_t *cmk_vkey_versions(const json_t *kj);
json_t *cmk_vkey_latest(const json_t *kj);
json_t *cmk_vkey_find_version(const json_t *kj, const char *version);

/* 1 if the key is soft-deleted; a field of its deletion record ("" if absent). */
int cmk_vkey_deleted(const json_t *kj);
const char *cmk_vkey_deleted_field(const json_t *kj, const char *field);

/* Version ver of key `name` as `az keyvault key show` prints it (plus the deletion fields
 * of `show-deleted` for a soft-deleted key). */
CMK_MUST_CHECK cmk_err cmk_vkey_json(const cmk_vctx *c, const char *name, const json_t *kj,
                                     const json_t *ver, json_t **out, cmk_errbuf *eb);

/* Saves key.json, then (if out is not NULL) answers with version ver as cmk_vkey_json. */
CMK_MUST_CHECK cmk_err cmk_vkey_commit(const cmk_vctx *c, const char *name, const json_t *kj,
                                       const json_t *ver, json_t **out, cmk_errbuf *eb);

/* An entry of `key list` (versioned 0: the key's versionless kid; deleted: with the deletion
 * fields) or `key list-versions` (versioned 1). */
json_t *cmk_vkey_item_json(const cmk_vctx *c, const char *name, const json_t *kj, const json_t *ver,
                           int versioned);

#endif
