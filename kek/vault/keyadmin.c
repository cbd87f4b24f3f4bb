/*
 * keyadmin.c — the operator's key management: create (a key, or a new version of it),
 * show, list, list-versions, list-deleted, enable/disable, delete (soft), recover, purge
 * (see vault.h). A version's private key (or token key pair) is made before key.json names
 * it: key.json is the commit point, and what it does not name is removed again.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/vault/audit.h"
#include "kek/vault/common.h"
#include "kek/vault/hsm.h"
#include "kek/vault/keygen.h"
#include "kek/vault/keymeta.h"
#include "kek/vault/vault.h"

/* Opens the vault for a key operation: the vault must exist and not be deleted. */
static cmk_err key_op_open(cmk_vctx *c, const char *home, const char *vault, const char *name,
                           int lock, cmk_errbuf *eb)
{
    cmk_err rc = CMK_OK;

    if (name)
        rc = cmk_name_check(name, "key", eb);
    if (rc == CMK_OK)
        rc = cmk_vctx_open(c, home, vault, lock, eb);
    if (rc == CMK_OK && cmk_vctx_deleted(c, NULL, NULL))
        rc = cmk_vctx_deleted_err(c, eb);
    return rc;
}

/* What an operation needs of the key's state. */
enum { KEY_ANY, KEY_LIVE, KEY_DELETED };

/* Opens the vault and loads key `name`. KEY_LIVE: a soft-deleted key is refused with the
 * message that it is soft-deleted; KEY_DELETED: a live key is refused, saying why_deleted. *kj is
 * the caller's to release. */
static cmk_err key_open(cmk_vctx *c, const char *home, const char *vault, const char *name,
                        int lock, int state, const char *why_deleted, json_t **kj, cmk_errbuf *eb)
{
    cmk_err rc = key_op_open(c, home, vault, name, lock, eb);

    if (rc == CMK_OK)
        rc = cmk_vkey_load(c, name, kj, eb);
    if (rc == CMK_OK && state == KEY_DELETED && !cmk_vkey_deleted(*kj))
        return cmk_errbuf_set(eb, CMK_E_REFUSED, "key '%s' in vault '%s' is not deleted: %s", name,
                              vault, why_deleted);
    if (rc == CMK_OK && state == KEY_LIVE && cmk_vkey_deleted(*kj))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                            "key '%s' in vault '%s' is deleted (since %s, scheduled purge %s): "
                            "recover it first",
                            name, c->name, cmk_vkey_deleted_field(*kj, "deletedDate"),
                            cmk_vkey_deleted_field(*kj, "scheduledPurgeDate"));
    return rc;
}

/* ---- create --------------------------------------------------------------------------------- */

/* A key version being made: the software key or the token pair, until key.json names it. */
typedef struct newver {
    cmk_vkty t;
    unsigned bits;
    EVP_PKEY *pkey; /* software key, generated before the lock is taken */
    cmk_vhsm hs;    /* RSA-HSM: the vault's token */
    cmk_p11 *h;     /* RSA-HSM: the open token */
    int hsm_made;   /* the pair exists in the token */
    char pem[CMK_PATH_MAX];
    int pem_written; /* the PEM file exists */
    json_t *rec;     /* the version record */
    char version[CMK_VAULT_VERSION_HEX + 1];
} newver;

/* Before the lock: a soft-deleted name is refused early, then the software key is generated
 * (an RSA-4096 key takes seconds and must not stall the vault's other writers) or the vault
 * checked to be HSM-backed. */
static cmk_err create_prepare(cmk_vctx *c, const char *home, const char *vault, const char *name,
                              newver *nv, cmk_errbuf *eb)
{
    json_t *kj = NULL;
    cmk_err rc = key_op_open(c, home, vault, name, 0, eb);

    if (rc != CMK_OK)
        return rc;
    rc = cmk_vkey_load(c, name, &kj, eb);
    if (rc == CMK_OK && cmk_vkey_deleted(kj))
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "key '%s' in vault '%s' is soft-deleted: recover or purge it first",
                            name, vault);
    else if (rc == CMK_E_NOT_FOUND || rc == CMK_OK) {
        cmk_errbuf_clear(eb);
        rc = CMK_OK;
    }
    json_decref(kj);
    if (rc == CMK_OK && nv->t == CMK_VKTY_RSA_HSM && !cmk_vhsm_get(c, &nv->hs))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is not HSM-backed: RSA-HSM keys are generated in a "
                            "PKCS#11 token, so they need an HSM-backed vault (one created with "
                            "--hsm-token, see kek/HSM.md); a software vault makes RSA and EC keys",
                            c->name);
    if (rc == CMK_OK && nv->t != CMK_VKTY_RSA_HSM)
        rc = cmk_vkey_generate(nv->t, nv->bits, &nv->pkey, eb);
    return rc;
}

/* Under the lock: the vault again, and key.json (a new one if the key does not exist). */
static cmk_err create_load(cmk_vctx *c, const char *vault, const char *name, json_t **kj,
                           cmk_errbuf *eb)
{
    char now[32];
    cmk_err rc = cmk_vctx_lock(c, eb);

    if (rc == CMK_OK)
        rc = cmk_vctx_load(c, eb);
    if (rc == CMK_OK && cmk_vctx_deleted(c, NULL, NULL))
        rc = cmk_vctx_deleted_err(c, eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_load(c, name, kj, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        cmk_vault_now_iso(now);
        *kj = json_pack("{s:s, s:s, s:s, s:b, s:[]}", "name", name, "created", now, "updated", now,
                        "enabled", 1, "versions");
        rc = *kj ? CMK_OK : cmk_vault_nomem(eb);
    } else if (rc == CMK_OK && cmk_vkey_deleted(*kj)) {
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "key '%s' in vault '%s' is soft-deleted: recover or purge it first",
                            name, vault);
    }
    return rc;
}

/* Makes the version's key material: the pair in the token (under the vault's lock, so the
 * token's sequence numbers follow the order of key.json), or the PEM file of the software
 * key with a fresh version id. */
static cmk_err create_material(const cmk_vctx *c, const char *name, const json_t *kj,
                               const char *kdir, newver *nv, cmk_errbuf *eb)
{
    cmk_err rc;

    if (nv->t == CMK_VKTY_RSA_HSM) {
        rc = cmk_vhsm_generate(c, &nv->hs, name, nv->bits, &nv->h, &nv->rec, nv->version, eb);
        nv->hsm_made = rc == CMK_OK;
        if (rc == CMK_OK && cmk_vkey_find_version(kj, nv->version))
            /* a CKA_ID the token reused: never name it twice */
            rc = cmk_errbuf_set(eb, CMK_E_EXISTS, "key '%s' already has version %s", name,
                                nv->version);
        return rc;
    }
    do {
        rc = cmk_random_hex(nv->version, CMK_VAULT_VERSION_HEX / 2, eb);
    } while (rc == CMK_OK && cmk_vkey_find_version(kj, nv->version));
    if (rc == CMK_OK)
        rc = cmk_vkey_version_record(nv->pkey, nv->t, nv->bits, nv->version, &nv->rec, eb);
    if (rc == CMK_OK)
        rc = cmk_path(nv->pem, sizeof(nv->pem), eb, "%s/%s.pem", kdir, nv->version);
    if (rc == CMK_OK)
        rc = cmk_vkey_write_private(nv->pkey, nv->pem, eb);
    nv->pem_written = rc == CMK_OK;
    return rc;
}

cmk_err cmk_vault_key_create(const char *home, const char *vault, const char *name, const char *kty,
                             unsigned size, json_t **out, cmk_errbuf *eb)
{
    char kdir[CMK_PATH_MAX];
    newver nv = {0};
    json_t *kj = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "create", name, eb, out);
    rc = cmk_vkey_parse_type(kty, size, &nv.t, &nv.bits, eb);
    if (rc == CMK_OK)
        rc = create_prepare(&v.c, home, vault, name, &nv, eb);
    if (rc == CMK_OK)
        rc = create_load(&v.c, vault, name, &kj, eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_paths(&v.c, name, kdir, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_mkdir_p(kdir, 0700, eb);
    if (rc == CMK_OK)
        rc = create_material(&v.c, name, kj, kdir, &nv, eb);
    if (rc == CMK_OK && json_array_append(cmk_vkey_versions(kj), nv.rec) != 0)
        rc = cmk_vault_nomem(eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_save(&v.c, name, kj, eb);
    if (rc == CMK_OK) {
        nv.pem_written = nv.hsm_made = 0; /* named by key.json: kept */
        v.a.version = nv.version;
    }
    if (rc == CMK_OK && out)
        rc = cmk_vkey_json(&v.c, name, kj, nv.rec, out, eb);
    if (nv.pem_written)
        (void)unlink(nv.pem);
    if (nv.hsm_made) /* key.json does not name it: the pair would be an orphan in the token */
        cmk_vhsm_discard(&v.c, nv.h, name, nv.version);
    cmk_p11_close(nv.h);
    EVP_PKEY_free(nv.pkey);
    json_decref(nv.rec);
    json_decref(kj);
    return cmk_vop_end(&v, rc, eb);
}

/* ---- show and list ------------------------------------------------------------------------- */

cmk_err cmk_vault_key_show(const char *home, const char *vault, const char *name,
                           const char *version, json_t **out, cmk_errbuf *eb)
{
    json_t *kj = NULL, *ver = NULL, *res = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "get", name, eb, out);
    v.a.version = version;
    rc = cmk_vault_check_version_arg(version, eb);
    if (rc == CMK_OK)
        rc = key_open(&v.c, home, vault, name, 0, KEY_ANY, NULL, &kj, eb);
    if (rc == CMK_OK) {
        ver = version && *version ? cmk_vkey_find_version(kj, version) : cmk_vkey_latest(kj);
        if (!ver)
            rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "key '%s' in vault '%s' has no version %s",
                                name, vault, version);
    }
    if (rc == CMK_OK) {
        v.a.version = cmk_json_str(ver, "version");
        rc = cmk_vkey_json(&v.c, name, kj, ver, &res, eb);
    }
    if (rc == CMK_OK)
        cmk_vault_give(out, res);
    rc = cmk_vop_end(&v, rc, eb);
    json_decref(kj);
    return rc;
}

/* One key of `key list` (deleted 0) or `key list-deleted` (1); keys being created or purged
 * right now are skipped, not errors. */
struct list_arg {
    const cmk_vctx *c;
    int deleted;
};

static cmk_err list_one(const char *name, void *arg, json_t **item, cmk_errbuf *eb)
{
    const struct list_arg *la = arg;
    cmk_errbuf ignore = {0};
    json_t *kj = NULL;

    if (cmk_vkey_load(la->c, name, &kj, &ignore) != CMK_OK)
        return CMK_OK;
    if (cmk_vkey_deleted(kj) == la->deleted) {
        *item = cmk_vkey_item_json(la->c, name, kj, cmk_vkey_latest(kj), 0);
        if (!*item) {
            json_decref(kj);
            return cmk_vault_nomem(eb);
        }
    }
    json_decref(kj);
    return CMK_OK;
}

static cmk_err key_list(const char *home, const char *vault, int deleted, json_t **out,
                        cmk_errbuf *eb)
{
    struct list_arg la = {NULL, deleted};
    char kdir[CMK_PATH_MAX];
    json_t *arr = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, deleted ? "listDeleted" : "list", NULL, eb, out);
    la.c = &v.c;
    rc = key_op_open(&v.c, home, vault, NULL, 0, eb);
    if (rc == CMK_OK)
        rc = cmk_path(kdir, sizeof(kdir), eb, "%s/keys", v.c.dir);
    if (rc == CMK_OK)
        rc = cmk_vault_each_name(kdir, "key", list_one, &la, &arr, eb);
    if (rc == CMK_OK)
        cmk_vault_give(out, arr);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_key_list(const char *home, const char *vault, json_t **out, cmk_errbuf *eb)
{
    return key_list(home, vault, 0, out, eb);
}

cmk_err cmk_vault_key_list_deleted(const char *home, const char *vault, json_t **out,
                                   cmk_errbuf *eb)
{
    return key_list(home, vault, 1, out, eb);
}

cmk_err cmk_vault_key_list_versions(const char *home, const char *vault, const char *name,
                                    json_t **out, cmk_errbuf *eb)
{
    json_t *kj = NULL, *arr = NULL, *ver;
    size_t i;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "listVersions", name, eb, out);
    rc = key_open(&v.c, home, vault, name, 0, KEY_LIVE, NULL, &kj, eb);
    if (rc == CMK_OK && !(arr = json_array()))
        rc = cmk_vault_nomem(eb);
    json_array_foreach(rc == CMK_OK ? cmk_vkey_versions(kj) : NULL, i, ver)
    {
        if (json_array_append_new(arr, cmk_vkey_item_json(&v.c, name, kj, ver, 1)) != 0) {
            rc = cmk_vault_nomem(eb);
            break;
        }
    }
    if (rc == CMK_OK) {
        cmk_vault_give(out, arr);
        arr = NULL;
    }
    json_decref(arr);
    json_decref(kj);
    return cmk_vop_end(&v, rc, eb);
}

/* ---- state changes -------------------------------------------------------------------------- */

cmk_err cmk_vault_key_set_enabled(const char *home, const char *vault, const char *name,
                                  const char *version, int enabled, json_t **out, cmk_errbuf *eb)
{
    json_t *kj = NULL, *ver = NULL, *target = NULL;
    char now[32];
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, enabled ? "enable" : "disable", name, eb, out);
    rc = cmk_vault_check_version_arg(version, eb);
    v.a.version = version && *version ? version : NULL;
    if (rc == CMK_OK)
        rc = key_open(&v.c, home, vault, name, 1, KEY_LIVE, NULL, &kj, eb);
    if (rc == CMK_OK && v.a.version) {
        /* One version only. */
        target = ver = cmk_vkey_find_version(kj, version);
        if (!ver)
            rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "key '%s' in vault '%s' has no version %s",
                                name, vault, version);
    } else if (rc == CMK_OK) {
        /* The whole key: every version. */
        ver = cmk_vkey_latest(kj);
        target = kj;
    }
    cmk_vault_now_iso(now);
    if (rc == CMK_OK && (cmk_vault_jset(target, "enabled", json_boolean(enabled)) |
                         cmk_vault_jset(target, "updated", json_string(now))))
        rc = cmk_vault_nomem(eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_commit(&v.c, name, kj, ver, out, eb);
    rc = cmk_vop_end(&v, rc, eb);
    json_decref(kj);
    return rc;
}

cmk_err cmk_vault_key_delete(const char *home, const char *vault, const char *name, json_t **out,
                             cmk_errbuf *eb)
{
    char date[32], purge[32];
    json_t *kj = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "delete", name, eb, out);
    rc = key_open(&v.c, home, vault, name, 1, KEY_LIVE, NULL, &kj, eb);
    if (rc == CMK_OK) {
        cmk_vault_deletion_dates(cmk_vctx_retention(&v.c), date, purge);
        if (cmk_vault_jset(
                kj, "deleted",
                json_pack("{s:s, s:s}", "deletedDate", date, "scheduledPurgeDate", purge)) != 0)
            rc = cmk_vault_nomem(eb);
    }
    if (rc == CMK_OK)
        rc = cmk_vkey_commit(&v.c, name, kj, cmk_vkey_latest(kj), out, eb);
    json_decref(kj);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_key_recover(const char *home, const char *vault, const char *name, json_t **out,
                              cmk_errbuf *eb)
{
    json_t *kj = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "recover", name, eb, out);
    rc = key_open(&v.c, home, vault, name, 1, KEY_DELETED, "nothing to recover", &kj, eb);
    if (rc == CMK_OK) {
        (void)json_object_del(kj, "deleted");
        rc = cmk_vkey_commit(&v.c, name, kj, cmk_vkey_latest(kj), out, eb);
    }
    json_decref(kj);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_key_purge(const char *home, const char *vault, const char *name, cmk_errbuf *eb)
{
    char kdir[CMK_PATH_MAX], keys[CMK_PATH_MAX], what[160];
    json_t *kj = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "purge", name, eb, NULL);
    rc = key_open(&v.c, home, vault, name, 1, KEY_DELETED, "only a soft-deleted key can be purged",
                  &kj, eb);
    if (rc == CMK_OK) {
        snprintf(what, sizeof(what), "key '%s' in vault '%s'", name, vault);
        rc = cmk_vctx_purge_allowed(&v.c, what, cmk_vkey_deleted_field(kj, "scheduledPurgeDate"),
                                    eb);
    }
    /* Purge means gone for good: an RSA-HSM version's key pair goes from the token too
     * (first: if the token cannot be reached, nothing is purged). */
    if (rc == CMK_OK)
        rc = cmk_vhsm_destroy_versions(&v.c, name, kj, eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_paths(&v.c, name, kdir, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_path(keys, sizeof(keys), eb, "%s/keys", v.c.dir);
    if (rc == CMK_OK)
        rc = cmk_vault_bury(kdir, keys, "key", NULL, eb);
    json_decref(kj);
    return cmk_vop_end(&v, rc, eb);
}
