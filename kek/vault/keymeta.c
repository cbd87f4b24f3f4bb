/* keymeta.c — key metadata: key.json and the answers made from it (see keymeta.h). */
#include "kek/vault/keymeta.h"

#include <stdio.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "kek/pkcs11/pkcs11.h"
#include "kek/vault/common.h"
#include "kek/vault/vault.h"

cmk_err cmk_vkey_paths(const cmk_vctx *c, const char *name, char dir[CMK_PATH_MAX],
                       char file[CMK_PATH_MAX], cmk_errbuf *eb)
{
    cmk_err rc = cmk_path(dir, CMK_PATH_MAX, eb, "%s/keys/%s", c->dir, name);

    if (rc == CMK_OK && file)
        rc = cmk_path(file, CMK_PATH_MAX, eb, "%s/key.json", dir);
    return rc;
}

json_t *cmk_vkey_versions(const json_t *kj)
{
    return json_object_get(kj, "versions");
}

json_t *cmk_vkey_latest(const json_t *kj)
{
    json_t *v = cmk_vkey_versions(kj);
    size_t n = json_array_size(v);

    return n ? json_array_get(v, n - 1) : NULL;
}

json_t *cmk_vkey_find_version(const json_t *kj, const char *version)
{
    json_t *vs = cmk_vkey_versions(kj), *v;
    size_t i;

    json_array_foreach(vs, i, v)
    {
        const char *s = cmk_json_str(v, "version");
        if (s && strcmp(s, version) == 0)
            return v;
    }
    return NULL;
}

int cmk_vkey_deleted(const json_t *kj)
{
    return json_is_object(json_object_get(kj, "deleted"));
}

const char *cmk_vkey_deleted_field(const json_t *kj, const char *f)
{
    const char *s = cmk_json_str(json_object_get(kj, "deleted"), f);
    return s ? s : "";
}

/* Checks what the vault relies on, so a damaged key.json is reported as such. */
static cmk_err key_validate(const json_t *kj, const char *path, cmk_errbuf *eb)
{
    json_t *vs = cmk_vkey_versions(kj), *v;
    size_t i;

    if (!json_is_array(vs) || json_array_size(vs) == 0)
        goto bad;
    json_array_foreach(vs, i, v)
    {
        const char *kty = cmk_json_str(v, "kty");
        if (!json_is_object(v) || !cmk_vault_is_version(cmk_json_str(v, "version")) || !kty ||
            (strcmp(kty, "RSA") != 0 && strcmp(kty, "RSA-HSM") != 0 && strcmp(kty, "EC") != 0) ||
            cmk_json_int(v, "bits", 0) <= 0)
            goto bad;
    }
    return CMK_OK;
bad:
    return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                          "%s is damaged (versions missing or invalid): restore it from a backup",
                          path);
}

/* Loads keys/<name>/key.json. CMK_E_NOT_FOUND with a message naming key and vault. */
cmk_err cmk_vkey_load(const cmk_vctx *c, const char *name, json_t **kj, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], file[CMK_PATH_MAX];
    cmk_err rc;

    *kj = NULL;
    rc = cmk_vkey_paths(c, name, dir, file, eb);
    if (rc == CMK_OK)
        rc = cmk_json_load(file, kj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "key '%s' not found in vault '%s'", name,
                              c->name);
    if (rc == CMK_OK)
        rc = key_validate(*kj, file, eb);
    if (rc != CMK_OK) {
        json_decref(*kj);
        *kj = NULL;
    }
    return rc;
}

cmk_err cmk_vkey_save(const cmk_vctx *c, const char *name, const json_t *kj, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], file[CMK_PATH_MAX];
    cmk_err rc = cmk_vkey_paths(c, name, dir, file, eb);

    if (rc == CMK_OK)
        rc = cmk_json_save(file, kj, 0600, eb);
    return rc;
}

static const char *recovery_level(const cmk_vctx *c)
{
    return cmk_vctx_purge_protected(c) ? "Recoverable" : "Recoverable+Purgeable";
}

static int version_enabled(const json_t *kj, const json_t *ver)
{
    return cmk_json_bool(kj, "enabled", 1) && cmk_json_bool(ver, "enabled", 1);
}

/* Attributes of a version as `az keyvault key show` prints them. */
static json_t *attributes_json(const cmk_vctx *c, const json_t *kj, const json_t *ver)
{
    const char *created = cmk_json_str(ver, "created");
    const char *vu = cmk_json_str(ver, "updated"), *ku = cmk_json_str(kj, "updated");
    const char *updated = vu && ku && strcmp(ku, vu) > 0 ? ku : (vu ? vu : ku);
    json_t *a = json_object();

    if (!a)
        return NULL;
    if (cmk_vault_jset(a, "created", cmk_vault_jstr(created)) |
        cmk_vault_jset(a, "updated", cmk_vault_jstr(updated)) |
        cmk_vault_jset(a, "enabled", json_boolean(version_enabled(kj, ver))) |
        cmk_vault_jset(a, "exportable", json_false()) |
        cmk_vault_jset(a, "recoveryLevel", json_string(recovery_level(c))) |
        cmk_vault_jset(a, "recoverableDays", json_integer(cmk_vctx_retention(c))) |
        cmk_vault_jset(a, "expires", json_null()) | cmk_vault_jset(a, "notBefore", json_null())) {
        json_decref(a);
        return NULL;
    }
    return a;
}

/* The public JWK of a version with its key operations. Never a private component. */
static json_t *jwk_json(const char *kid, const json_t *ver)
{
    const char *kty = cmk_json_str(ver, "kty");
    int ec = strcmp(kty, "EC") == 0;
    json_t *k = json_object(), *ops;
    int bad = 0;

    if (!k)
        return NULL;
    /* RSA-HSM pairs are generated without CKA_SIGN / CKA_VERIFY: they only protect keys. */
    ops = ec ? json_pack("[s,s]", "sign", "verify")
          : strcmp(kty, "RSA-HSM") == 0
              ? json_pack("[s,s,s,s]", "encrypt", "decrypt", "wrapKey", "unwrapKey")
              : json_pack("[s,s,s,s,s,s]", "encrypt", "decrypt", "sign", "verify", "wrapKey",
                          "unwrapKey");
    bad |= cmk_vault_jset(k, "kid", json_string(kid));
    bad |= cmk_vault_jset(k, "kty", json_string(kty));
    bad |= cmk_vault_jset(k, "keyOps", ops);
    if (ec) {
        bad |= cmk_vault_jset(k, "crv", cmk_vault_jstr(cmk_json_str(ver, "crv")));
        bad |= cmk_vault_jset(k, "x", cmk_vault_jstr(cmk_json_str(ver, "x")));
        bad |= cmk_vault_jset(k, "y", cmk_vault_jstr(cmk_json_str(ver, "y")));
    } else {
        bad |= cmk_vault_jset(k, "n", cmk_vault_jstr(cmk_json_str(ver, "n")));
        bad |= cmk_vault_jset(k, "e", cmk_vault_jstr(cmk_json_str(ver, "e")));
    }
    if (bad) {
        json_decref(k);
        return NULL;
    }
    return k;
}

/* The fields `show-deleted` adds for a soft-deleted key; -1 when out of memory. */
static int deletion_fields(const cmk_vctx *c, const char *name, const json_t *kj, json_t *j)
{
    char rid[CMK_ID_MAX];

    snprintf(rid, sizeof(rid), CMK_VAULT_SCHEME "%s/deletedkeys/%s", c->name, name);
    return cmk_vault_jset(j, "recoveryId", json_string(rid)) |
           cmk_vault_jset(j, "deletedDate",
                          json_string(cmk_vkey_deleted_field(kj, "deletedDate"))) |
           cmk_vault_jset(j, "scheduledPurgeDate",
                          json_string(cmk_vkey_deleted_field(kj, "scheduledPurgeDate")));
}

/* A key version as `az keyvault key show` prints it (plus the deletion fields of
 * `az keyvault key show-deleted` when the key is soft-deleted). */
cmk_err cmk_vkey_json(const cmk_vctx *c, const char *name, const json_t *kj, const json_t *ver,
                      json_t **out, cmk_errbuf *eb)
{
    char kid[CMK_ID_MAX];
    json_t *j = json_object();
    cmk_err rc;
    int bad = 0;

    *out = NULL;
    if (!j)
        return cmk_vault_nomem(eb);
    rc = cmk_vault_kid_format(kid, sizeof(kid), c->name, name, cmk_json_str(ver, "version"), eb);
    if (rc != CMK_OK)
        goto out;
    bad |= cmk_vault_jset(j, "attributes", attributes_json(c, kj, ver));
    bad |= cmk_vault_jset(j, "key", jwk_json(kid, ver));
    bad |= cmk_vault_jset(j, "managed", json_null());
    bad |= cmk_vault_jset(j, "tags", json_null());
    if (json_is_object(json_object_get(ver, "hsm"))) {
        /* Where an RSA-HSM version lives: the token and the key pair's label and CKA_ID. */
        const json_t *h = json_object_get(ver, "hsm");
        const char *tok = cmk_json_str(h, "token"), *lab = cmk_json_str(h, "label");
        char uri[CMK_ID_MAX];

        if (tok && lab &&
            cmk_p11_uri_build(tok, lab, cmk_json_str(ver, "version"), NULL, NULL, uri, sizeof(uri),
                              NULL) == CMK_OK)
            bad |= cmk_vault_jset(
                j, "hsm", json_pack("{s:s, s:s, s:s}", "token", tok, "label", lab, "keyUri", uri));
    }
    if (cmk_vkey_deleted(kj))
        bad |= deletion_fields(c, name, kj, j);
    if (bad) {
        rc = cmk_vault_nomem(eb);
        goto out;
    }
    *out = j;
    j = NULL;
out:
    json_decref(j);
    return rc;
}

cmk_err cmk_vkey_commit(const cmk_vctx *c, const char *name, const json_t *kj, const json_t *ver,
                        json_t **out, cmk_errbuf *eb)
{
    cmk_err rc = cmk_vkey_save(c, name, kj, eb);

    if (rc == CMK_OK && out)
        rc = cmk_vkey_json(c, name, kj, ver, out, eb);
    return rc;
}

json_t *cmk_vkey_item_json(const cmk_vctx *c, const char *name, const json_t *kj, const json_t *ver,
                           int versioned)
{
    char kid[CMK_ID_MAX];
    json_t *j;

    if (cmk_vault_kid_format(kid, sizeof(kid), c->name, name,
                             versioned ? cmk_json_str(ver, "version") : NULL, NULL) != CMK_OK)
        return NULL;
    j = json_pack("{s:s, s:s, s:s, s:n, s:n}", "kid", kid, "name", name, "kty",
                  cmk_json_str(ver, "kty"), "tags", "managed");
    if (j && (cmk_vault_jset(j, "attributes", attributes_json(c, kj, ver)) != 0 ||
              (!versioned && cmk_vkey_deleted(kj) && deletion_fields(c, name, kj, j) != 0))) {
        json_decref(j);
        return NULL;
    }
    return j;
}
