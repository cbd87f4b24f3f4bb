/* audit.c — the vault's audit log: writing records, reading the log (see audit.h). */
#define _GNU_SOURCE
#include "kek/vault/audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "kek/vault/common.h"
#include "kek/vault/vault.h"

/* Appends one record to <vault>/audit.log. */
static cmk_err audit_write(const cmk_vctx *c, const cmk_vault_audit_rec *a, cmk_err rc,
                           const char *reason, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX], t[32];
    json_t *r = json_object();
    cmk_err arc;
    int bad = 0;

    if (!r)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory writing an audit record");
    cmk_vault_now_iso(t);
    bad |= cmk_vault_jset(r, "time", json_string(t));
    bad |= cmk_vault_jset(r, "identity",
                          json_string(a->identity && *a->identity ? a->identity : "(none)"));
    bad |= cmk_vault_jset(r, "operation", json_string(a->op));
    bad |= cmk_vault_jset(r, "vault", json_string(c->name));
    bad |= cmk_vault_jset(r, "key", cmk_vault_jstr(a->key));
    bad |= cmk_vault_jset(r, "version", cmk_vault_jstr(a->version));
    bad |= cmk_vault_jset(r, "result", json_string(rc == CMK_OK ? "allowed" : "denied"));
    if (a->alg)
        bad |= cmk_vault_jset(r, "algorithm", json_string(a->alg));
    if (a->object_id)
        bad |= cmk_vault_jset(r, "objectId", json_string(a->object_id));
    if (rc != CMK_OK) {
        bad |= cmk_vault_jset(r, "error", json_string(cmk_errname(rc)));
        bad |=
            cmk_vault_jset(r, "reason", json_string(reason && *reason ? reason : cmk_strerror(rc)));
    }
    if (bad) {
        arc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory writing an audit record");
        goto out;
    }
    arc = cmk_path(path, sizeof(path), eb, "%s/audit.log", c->dir);
    if (arc == CMK_OK)
        arc = cmk_json_append_line(path, r, eb);
out:
    json_decref(r);
    return arc;
}

cmk_err cmk_vault_audit_end(cmk_vctx *c, const cmk_vault_audit_rec *a, cmk_err rc, cmk_errbuf *eb)
{
    cmk_errbuf ab = {0};
    cmk_err arc = c->located ? audit_write(c, a, rc, eb->msg, &ab) : CMK_OK;

    if (arc != CMK_OK && rc == CMK_OK && a->vkid)
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "vault '%s' cannot record %s on key " CMK_VAULT_KID_SHOW
                            " in its audit log, so it refused it: %s",
                            c->name, a->op, a->vkid, ab.msg);
    else if (arc != CMK_OK && rc == CMK_OK)
        rc = cmk_errbuf_set(eb, arc,
                            "%s on vault '%s' was done, but its audit log could not be "
                            "written: %s",
                            a->op, c->name, ab.msg);
    cmk_vctx_close(c);
    return rc;
}

cmk_errbuf *cmk_vop_begin(cmk_vop *v, const char *op, const char *key, cmk_errbuf *eb, json_t **out)
{
    memset(v, 0, sizeof(*v));
    cmk_vctx_init(&v->c);
    v->a.identity = CMK_VAULT_OPERATOR;
    v->a.op = op;
    v->a.key = key;
    CMK_VAULT_EB_ENSURE(eb, v->local);
    if (out)
        *out = NULL;
    return eb;
}

cmk_err cmk_vop_end(cmk_vop *v, cmk_err rc, cmk_errbuf *eb)
{
    if (!v->a.op) {
        cmk_vctx_close(&v->c);
        return rc;
    }
    return cmk_vault_audit_end(&v->c, &v->a, rc, eb);
}

/* Appends every complete record of f to arr; a record torn by a crash is skipped. */
static cmk_err read_records(FILE *f, const char *path, json_t *arr, cmk_errbuf *eb)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    cmk_err rc = CMK_OK;

    while (rc == CMK_OK && (n = getline(&line, &cap, f)) > 0) {
        json_t *r = json_loadb(line, (size_t)n, 0, NULL);

        if (!json_is_object(r))
            json_decref(r);
        else if (json_array_append_new(arr, r) != 0)
            rc = cmk_vault_nomem(eb);
    }
    if (rc == CMK_OK && ferror(f))
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read %s", path);
    free(line);
    return rc;
}

cmk_err cmk_vault_audit(const char *home, const char *vault, json_t **out, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    json_t *arr = NULL;
    FILE *f = NULL;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, NULL, NULL, eb, out);
    rc = cmk_vctx_open(&v.c, home, vault, 0, eb);
    if (rc == CMK_OK)
        rc = cmk_path(path, sizeof(path), eb, "%s/audit.log", v.c.dir);
    if (rc == CMK_OK && !(arr = json_array()))
        rc = cmk_vault_nomem(eb);
    if (rc == CMK_OK && !(f = fopen(path, "re")) && errno != ENOENT)
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot read %s", path);
    if (rc == CMK_OK && f)
        rc = read_records(f, path, arr, eb);
    if (rc == CMK_OK) {
        cmk_vault_give(out, arr);
        arr = NULL;
    }
    if (f)
        (void)fclose(f);
    json_decref(arr);
    return cmk_vop_end(&v, rc, eb);
}
