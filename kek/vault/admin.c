/*
 * admin.c — the operator's vault management: create, show, list, delete (soft), recover,
 * purge (see vault.h). A vault is built complete in a staging directory and renamed into
 * place, and renamed away before it is removed, so readers see no vault or a whole one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/vault/audit.h"
#include "kek/vault/common.h"
#include "kek/vault/hsm.h"
#include "kek/vault/vault.h"

static json_t *vault_new_json(const char *name, const char *tenant, int purge_protection,
                              int retention)
{
    char now[32], id[128], uri[128];

    cmk_vault_now_iso(now);
    snprintf(id, sizeof(id), "/cmkstore/vaults/%s", name);
    snprintf(uri, sizeof(uri), CMK_VAULT_SCHEME "%s/", name);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:b, s:b, s:i, s:[]}}", "id", id, "name",
                     name, "type", "cmkstore/vaults", "created", now, "properties", "vaultUri", uri,
                     "tenantId", tenant, "enablePurgeProtection", purge_protection,
                     "enableSoftDelete", 1, "softDeleteRetentionInDays", retention,
                     "accessPolicies");
}

/* The checks a create makes before it writes anything (a refused create changes nothing):
 * arguments, and that no vault (live or soft-deleted) has the name. Fills c's names. */
static cmk_err create_check(cmk_vctx *c, const char *home, const char *name,
                            const cmk_vault_opts *o, int retention, cmk_errbuf *eb)
{
    cmk_err rc;

    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_name_check(name, "vault", eb);
    if (rc != CMK_OK)
        return rc;
    if (retention < CMK_VAULT_RETENTION_MIN || retention > CMK_VAULT_RETENTION_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "soft-delete retention must be %d to %d days, not %d",
                              CMK_VAULT_RETENTION_MIN, CMK_VAULT_RETENTION_MAX, retention);
    if (o && !(o->hsm_token && *o->hsm_token) &&
        ((o->hsm_module && *o->hsm_module) || (o->hsm_pin_file && *o->hsm_pin_file)))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "an HSM-backed vault needs the label of its PKCS#11 token "
                              "(--hsm-token) besides the module and PIN file");
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->home, sizeof(c->home), "%s", home);
    rc = cmk_path(c->dir, sizeof(c->dir), eb, "%s/vaults/%s", home, name);
    if (rc != CMK_OK || !cmk_exists(c->dir))
        return rc;
    if (cmk_vctx_load(c, eb) == CMK_OK && cmk_vctx_deleted(c, NULL, NULL))
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "vault '%s' exists and is soft-deleted: recover or purge it first",
                            name);
    else
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS, "vault '%s' already exists in %s", name, home);
    json_decref(c->vj);
    c->vj = NULL;
    return rc;
}

/* Writes the new vault's files into the staging directory stage: keys/, lock, vault.json. */
static cmk_err create_stage(const char *stage, const json_t *vj, cmk_errbuf *eb)
{
    char p[CMK_PATH_MAX];
    int fd;
    cmk_err rc;

    rc = cmk_path(p, sizeof(p), eb, "%s/keys", stage);
    if (rc == CMK_OK && mkdir(p, 0700) != 0)
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", p);
    if (rc == CMK_OK)
        rc = cmk_path(p, sizeof(p), eb, "%s/lock", stage);
    if (rc == CMK_OK) {
        fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", p);
        else
            close(fd);
    }
    if (rc == CMK_OK)
        rc = cmk_path(p, sizeof(p), eb, "%s/vault.json", stage);
    if (rc == CMK_OK)
        rc = cmk_json_save(p, vj, 0600, eb);
    return rc;
}

cmk_err cmk_vault_create(const char *home, const char *name, const cmk_vault_opts *o, json_t **out,
                         cmk_errbuf *eb)
{
    char vaults[CMK_PATH_MAX], stage[CMK_PATH_MAX], tenant[37], rnd[17];
    int retention = o && o->retention_days ? o->retention_days : CMK_VAULT_RETENTION_DEF;
    int staged = 0;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "vaultCreate", NULL, eb, out);
    rc = create_check(&v.c, home, name, o, retention, eb);
    if (rc == CMK_OK)
        rc = cmk_home_tenant(home, tenant, eb);
    if (rc == CMK_OK)
        rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = cmk_mkdir_p(vaults, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(stage, sizeof(stage), eb, "%s/.new-%s", vaults, rnd);
    if (rc != CMK_OK)
        goto out;
    /* Renamed into place when complete: a concurrent create of the same name fails at the
     * rename. */
    if (mkdir(stage, 0700) != 0) {
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", stage);
        goto out;
    }
    staged = 1;
    v.c.vj = vault_new_json(name, tenant, o && o->purge_protection, retention);
    rc = v.c.vj ? CMK_OK : cmk_vault_nomem(eb);
    if (rc == CMK_OK && o && o->hsm_token && *o->hsm_token)
        rc = cmk_vhsm_configure(home, o, v.c.vj, eb);
    if (rc == CMK_OK)
        rc = create_stage(stage, v.c.vj, eb);
    if (rc != CMK_OK)
        goto out;
    if (rename(stage, v.c.dir) != 0) {
        rc = errno == EEXIST || errno == ENOTEMPTY
                 ? cmk_errbuf_set(eb, CMK_E_EXISTS,
                                  "vault '%s' already exists in %s (created concurrently)", name,
                                  home)
                 : cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create vault %s",
                                  v.c.dir);
        goto out;
    }
    staged = 0;
    v.c.located = 1;
    rc = cmk_fsync_dir(vaults, eb);
    if (rc == CMK_OK)
        rc = cmk_vault_copy_out(out, v.c.vj, eb);
out:
    if (staged)
        cmk_best_effort(cmk_rm_rf(stage, NULL));
    rc = cmk_vop_end(&v, rc, eb);
    if (rc != CMK_OK && out && *out) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

cmk_err cmk_vault_show(const char *home, const char *name, json_t **out, cmk_errbuf *eb)
{
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, NULL, NULL, eb, out);
    rc = cmk_vctx_open(&v.c, home, name, 0, eb);
    if (rc == CMK_OK) {
        cmk_vault_give(out, v.c.vj);
        v.c.vj = NULL;
    }
    return cmk_vop_end(&v, rc, eb);
}

/* One vault of `vault list`: its vault.json. A vault being purged or created right now is
 * simply not listed. */
static cmk_err list_one(const char *name, void *arg, json_t **item, cmk_errbuf *eb)
{
    cmk_errbuf ignore = {0};
    cmk_vctx c;

    (void)eb;
    cmk_vctx_init(&c);
    if (cmk_vctx_open(&c, arg, name, 0, &ignore) == CMK_OK) {
        *item = c.vj;
        c.vj = NULL;
    }
    cmk_vctx_close(&c);
    return CMK_OK;
}

cmk_err cmk_vault_list(const char *home, json_t **out, cmk_errbuf *eb)
{
    char vaults[CMK_PATH_MAX];
    cmk_errbuf local;
    json_t *arr = NULL;
    cmk_err rc;

    CMK_VAULT_EB_ENSURE(eb, local);
    if (out)
        *out = NULL;
    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = cmk_vault_each_name(vaults, "vault", list_one, (void *)home, &arr, eb);
    if (rc == CMK_OK)
        cmk_vault_give(out, arr);
    return rc;
}

cmk_err cmk_vault_delete(const char *home, const char *name, cmk_errbuf *eb)
{
    char date[32], purge[32];
    const char *d0, *p0;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "vaultDelete", NULL, eb, NULL);
    rc = cmk_vctx_open(&v.c, home, name, 1, eb);
    if (rc == CMK_OK && cmk_vctx_deleted(&v.c, &d0, &p0))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is already deleted (since %s, scheduled purge %s)", name,
                            d0, p0);
    if (rc != CMK_OK)
        return cmk_vop_end(&v, rc, eb);
    cmk_vault_deletion_dates(cmk_vctx_retention(&v.c), date, purge);
    if (cmk_vault_jset(cmk_vctx_props(&v.c), "deletionDate", json_string(date)) |
        cmk_vault_jset(cmk_vctx_props(&v.c), "scheduledPurgeDate", json_string(purge)))
        rc = cmk_vault_nomem(eb);
    else
        rc = cmk_vctx_save(&v.c, eb);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_recover(const char *home, const char *name, json_t **out, cmk_errbuf *eb)
{
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "vaultRecover", NULL, eb, out);
    rc = cmk_vctx_open(&v.c, home, name, 1, eb);
    if (rc == CMK_OK && !cmk_vctx_deleted(&v.c, NULL, NULL))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED, "vault '%s' is not deleted: nothing to recover",
                            name);
    if (rc == CMK_OK) {
        (void)json_object_del(cmk_vctx_props(&v.c), "deletionDate");
        (void)json_object_del(cmk_vctx_props(&v.c), "scheduledPurgeDate");
        rc = cmk_vctx_save(&v.c, eb);
    }
    if (rc == CMK_OK)
        rc = cmk_vault_copy_out(out, v.c.vj, eb);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_purge(const char *home, const char *name, cmk_errbuf *eb)
{
    char vaults[CMK_PATH_MAX], what[96];
    const char *date, *purge;
    cmk_vhsm hs;
    int moved = 0;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "vaultPurge", NULL, eb, NULL);
    rc = cmk_vctx_open(&v.c, home, name, 1, eb);
    if (rc == CMK_OK && !cmk_vctx_deleted(&v.c, &date, &purge))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is not deleted: only a soft-deleted vault can be purged",
                            name);
    if (rc != CMK_OK)
        return cmk_vop_end(&v, rc, eb);
    snprintf(what, sizeof(what), "vault '%s'", name);
    rc = cmk_vctx_purge_allowed(&v.c, what, purge, eb);
    if (rc == CMK_OK && cmk_vhsm_get(&v.c, &hs))
        rc = cmk_vhsm_purge_all(&v.c, eb);
    if (rc == CMK_OK)
        rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = cmk_vault_bury(v.c.dir, vaults, "vault", &moved, eb);
    if (moved)
        v.c.located = 0; /* its audit log went with it */
    return cmk_vop_end(&v, rc, eb);
}
