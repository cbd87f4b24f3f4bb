/* context.c — locating, locking and loading one vault (see context.h). */
#include "kek/vault/context.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "kek/vault/common.h"

void cmk_vctx_init(cmk_vctx *c)
{
    memset(c, 0, sizeof(*c));
    c->lockfd = -1;
}

void cmk_vctx_close(cmk_vctx *c)
{
    if (c->lockfd >= 0)
        cmk_unlock(c->lockfd);
    c->lockfd = -1;
    json_decref(c->vj);
    c->vj = NULL;
}

static cmk_err vault_not_found(const cmk_vctx *c, cmk_errbuf *eb)
{
    /* States the fault only: the command line names the command to run (cmkstore_admin.h). */
    return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "vault '%s' not found in %s", c->name, c->home);
}

cmk_err cmk_vctx_load(cmk_vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_err rc;

    json_decref(c->vj);
    c->vj = NULL;
    rc = cmk_path(path, sizeof(path), eb, "%s/vault.json", c->dir);
    if (rc == CMK_OK)
        rc = cmk_json_load(path, &c->vj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return vault_not_found(c, eb);
    if (rc == CMK_OK && !json_is_object(json_object_get(c->vj, "properties")))
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "%s is damaged (no properties): restore it from a backup", path);
    return rc;
}

/* A vault purged and created again while we waited has a new lock file: the inode check
 * makes sure the lock we hold is the current vault's. */
cmk_err cmk_vctx_lock(cmk_vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    struct stat a, b;
    cmk_err rc;

    rc = cmk_path(path, sizeof(path), eb, "%s/lock", c->dir);
    for (int tries = 0; rc == CMK_OK && tries < 8; tries++) {
        rc = cmk_lock(path, 1, 1, &c->lockfd, eb);
        if (rc == CMK_E_NOT_FOUND)
            return vault_not_found(c, eb);
        if (rc != CMK_OK)
            return rc;
        if (fstat(c->lockfd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return CMK_OK;
        cmk_unlock(c->lockfd);
        c->lockfd = -1;
    }
    if (rc == CMK_OK)
        rc = cmk_errbuf_set(eb, CMK_E_BUSY, "vault '%s' keeps changing under us; retry", c->name);
    return rc;
}

cmk_err cmk_vctx_open(cmk_vctx *c, const char *home, const char *name, int lock, cmk_errbuf *eb)
{
    cmk_err rc;

    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_name_check(name, "vault", eb);
    if (rc == CMK_OK)
        rc = cmk_path(c->home, sizeof(c->home), eb, "%s", home);
    if (rc == CMK_OK)
        rc = cmk_path(c->name, sizeof(c->name), eb, "%s", name);
    if (rc == CMK_OK)
        rc = cmk_path(c->dir, sizeof(c->dir), eb, "%s/vaults/%s", home, name);
    if (rc == CMK_OK && lock)
        rc = cmk_vctx_lock(c, eb);
    if (rc == CMK_OK)
        rc = cmk_vctx_load(c, eb);
    if (rc == CMK_OK)
        c->located = 1;
    return rc;
}

cmk_err cmk_vctx_save(const cmk_vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_err rc = cmk_path(path, sizeof(path), eb, "%s/vault.json", c->dir);

    if (rc == CMK_OK)
        rc = cmk_json_save(path, c->vj, 0600, eb);
    return rc;
}

json_t *cmk_vctx_props(const cmk_vctx *c)
{
    return json_object_get(c->vj, "properties");
}

int cmk_vctx_purge_protected(const cmk_vctx *c)
{
    return cmk_json_bool(cmk_vctx_props(c), "enablePurgeProtection", 0);
}

int cmk_vctx_retention(const cmk_vctx *c)
{
    int64_t d =
        cmk_json_int(cmk_vctx_props(c), "softDeleteRetentionInDays", CMK_VAULT_RETENTION_DEF);
    return d >= CMK_VAULT_RETENTION_MIN && d <= CMK_VAULT_RETENTION_MAX ? (int)d
                                                                        : CMK_VAULT_RETENTION_DEF;
}

int cmk_vctx_deleted(const cmk_vctx *c, const char **date, const char **purge)
{
    const char *d = cmk_json_str(cmk_vctx_props(c), "deletionDate");

    if (date)
        *date = d ? d : "";
    if (purge) {
        const char *p = cmk_json_str(cmk_vctx_props(c), "scheduledPurgeDate");
        *purge = p ? p : "";
    }
    return d != NULL;
}

cmk_err cmk_vctx_deleted_err(const cmk_vctx *c, cmk_errbuf *eb)
{
    const char *date, *purge;

    cmk_vctx_deleted(c, &date, &purge);
    return cmk_errbuf_set(
        eb, CMK_E_KEY_DELETED,
        "vault '%s' is soft-deleted (since %s, scheduled purge %s): every key in it "
        "is unusable until the vault is recovered",
        c->name, date, purge);
}

cmk_err cmk_vctx_purge_allowed(const cmk_vctx *c, const char *what, const char *purge_date,
                               cmk_errbuf *eb)
{
    time_t when = cmk_parse_iso8601(purge_date);

    if (!cmk_vctx_purge_protected(c) || (when != (time_t)-1 && (int64_t)when <= cmk_now()))
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_REFUSED,
                          "%s is under purge protection: it cannot be purged before its "
                          "scheduled purge date %s; recover it to use it again",
                          what, purge_date);
}
