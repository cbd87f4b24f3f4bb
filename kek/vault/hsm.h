/*
 * hsm.h — internal to kek/vault/: HSM-backed vaults (see kek/HSM.md).
 *
 * A vault created with a PKCS#11 token (vault.json properties.hsm = {module, token,
 * pinFile}) generates its RSA-HSM key versions inside that token (cmk_p11_key_generate):
 * the private half never leaves it. The token object's label is "<vault>.<key>" and the
 * version string is the hex of its CKA_ID, so a vault version and a token key pair are one
 * and the same; the version record keeps the public modulus and exponent (for `key show`)
 * and the label. The vault's policies, enable/disable, soft delete and audit apply
 * unchanged; wrapping and unwrapping go to the token through a PKCS#11 provider (which
 * caches logged-in handles). The operator functions here open the token for each call.
 */
#ifndef CMK_VAULT_HSM_H
#define CMK_VAULT_HSM_H

#include "kek/pkcs11/pkcs11.h"
#include "kek/vault/common.h"
#include "kek/vault/context.h"
#include "kek/vault/vault.h"

typedef struct cmk_vhsm {
    char module[CMK_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    char pin_file[CMK_PATH_MAX]; /* "" : the PIN comes from the environment / pkcs11.json */
} cmk_vhsm;

/* 1 if the vault is HSM-backed (fills *hs), 0 if not. */
int cmk_vhsm_get(const cmk_vctx *c, cmk_vhsm *hs);

/* Prefixes eb's message (the PKCS#11 layer's) with "vault ... is backed by PKCS#11 token
 * ..."; sets and returns rc. */
CMK_MUST_CHECK cmk_err cmk_vhsm_context(cmk_err rc, cmk_errbuf *eb, const char *vault,
                                        const char *token);

/* The token label of version ver of key `key` as recorded (older records: derived from the
 * names). */
CMK_MUST_CHECK cmk_err cmk_vhsm_version_label(const cmk_vctx *c, const char *key, const json_t *ver,
                                              char out[CMK_P11_LABEL_MAX + 1], cmk_errbuf *eb);

/* Checks (module loads, token present, PIN logs in) and records in vault.json (vj, not yet
 * saved) the token of a new HSM-backed vault; paths are recorded absolute. */
CMK_MUST_CHECK cmk_err cmk_vhsm_configure(const char *home, const cmk_vault_opts *o, json_t *vj,
                                          cmk_errbuf *eb);

/* Generates the next version of key `name` in the token; the caller holds the vault's lock,
 * so the token's sequence numbers follow the order of key.json. *ver_out receives the
 * version record, version its string; *h stays open (the caller closes it) so that
 * cmk_vhsm_discard can destroy the pair if key.json cannot be saved. */
CMK_MUST_CHECK cmk_err cmk_vhsm_generate(const cmk_vctx *c, const cmk_vhsm *hs, const char *name,
                                         unsigned bits, cmk_p11 **h, json_t **ver_out,
                                         char version[CMK_VAULT_VERSION_HEX + 1], cmk_errbuf *eb);

/* Destroys a pair cmk_vhsm_generate made that key.json does not name (best effort). */
void cmk_vhsm_discard(const cmk_vctx *c, cmk_p11 *h, const char *name, const char *version);

/* Destroys the token objects of the RSA-HSM versions recorded in kj (purge of key `key`).
 * Versions already gone are fine; any other failure stops before anything is removed. */
CMK_MUST_CHECK cmk_err cmk_vhsm_destroy_versions(const cmk_vctx *c, const char *key,
                                                 const json_t *kj, cmk_errbuf *eb);

/* The same for every key of the vault (purge of the vault). */
CMK_MUST_CHECK cmk_err cmk_vhsm_purge_all(const cmk_vctx *c, cmk_errbuf *eb);

#endif
