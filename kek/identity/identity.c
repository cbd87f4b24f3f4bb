/* identity.c — managed identities stored as JSON files in the home (see identity.h). */
#define _GNU_SOURCE
#include "kek/identity/identity.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/identity/home.h"

#define TYPE_USER       "UserAssigned"
#define TYPE_SYSTEM     "SystemAssigned"
#define JSON_TYPE_USER  "cmkstore/userAssignedIdentities"
#define USER_SUBDIR     "identities"
#define SYSTEM_SUBDIR   "identities/system"
#define SYSTEM_NAME_PFX "system-"

/* Copies a required string member of an identity file into dst. */
static cmk_err copy_field(const json_t *j, const char *key, char *dst, size_t cap, const char *path,
                          cmk_errbuf *eb)
{
    const char *v = cmk_json_str(j, key);

    if (!v || !*v || strlen(v) >= cap)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "identity file %s is damaged: field \"%s\" is missing or invalid; "
                              "delete the file and create the identity again",
                              path, key);
    memcpy(dst, v, strlen(v) + 1);
    return CMK_OK;
}

/* Parses an identity file; `system` says which directory it came from, and the file must
 * agree. */
static cmk_err ident_parse(const json_t *j, int system, const char *path, cmk_identity *out,
                           cmk_errbuf *eb)
{
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    if ((rc = copy_field(j, "type", out->type, sizeof(out->type), path, eb)) != CMK_OK ||
        (rc = copy_field(j, "name", out->name, sizeof(out->name), path, eb)) != CMK_OK ||
        (rc = copy_field(j, "id", out->id, sizeof(out->id), path, eb)) != CMK_OK ||
        (rc = copy_field(j, "principalId", out->principal_id, sizeof(out->principal_id), path,
                         eb)) != CMK_OK ||
        (rc = copy_field(j, "clientId", out->client_id, sizeof(out->client_id), path, eb)) !=
            CMK_OK ||
        (rc = copy_field(j, "tenantId", out->tenant_id, sizeof(out->tenant_id), path, eb)) !=
            CMK_OK ||
        (rc = copy_field(j, "created", out->created, sizeof(out->created), path, eb)) != CMK_OK)
        return rc;
    if (system &&
        (rc = copy_field(j, "storeId", out->store_id, sizeof(out->store_id), path, eb)) != CMK_OK)
        return rc;
    if (strcmp(out->type, system ? TYPE_SYSTEM : TYPE_USER) != 0 ||
        !cmk_is_uuid(out->principal_id, 0) || !cmk_is_uuid(out->client_id, 0) ||
        !cmk_is_uuid(out->tenant_id, 0))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "identity file %s is damaged (type or ids invalid); delete the file "
                              "and create the identity again",
                              path);
    return CMK_OK;
}

/* The stored form: the fields of cmk_identity under their JSON names. */
static json_t *ident_file_json(const cmk_identity *id)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", id->type, "name", id->name,
                          "id", id->id, "principalId", id->principal_id, "clientId", id->client_id,
                          "tenantId", id->tenant_id, "created", id->created);

    if (j && id->store_id[0] && json_object_set_new(j, "storeId", json_string(id->store_id)) != 0) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

json_t *cmk_identity_json(const cmk_identity *id)
{
    int system = strcmp(id->type, TYPE_SYSTEM) == 0;
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "clientId", id->client_id, "id", id->id,
                  "name", id->name, "principalId", id->principal_id, "tenantId", id->tenant_id,
                  "type", system ? TYPE_SYSTEM : JSON_TYPE_USER, "created", id->created);

    if (j && system && json_object_set_new(j, "storeId", json_string(id->store_id)) != 0) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* *out is written only on success (callers may pass a reference that lives in *out). */
static cmk_err load_ident(const char *path, int system, cmk_identity *out, cmk_errbuf *eb)
{
    cmk_identity id;
    json_t *j = NULL;
    cmk_err rc = cmk_json_load(path, &j, eb);

    if (rc == CMK_OK)
        rc = ident_parse(j, system, path, &id, eb);
    if (rc == CMK_OK)
        *out = id;
    json_decref(j);
    return rc;
}

/* Publishes j at path only if nothing is there yet: the complete file is written beside it
 * and link()ed into place, which fails if another process created the name first. */
static cmk_err create_exclusive(const char *dir, const char *path, const json_t *j, cmk_errbuf *eb)
{
    char tmp[CMK_PATH_MAX], rnd[17];
    int have_tmp = 0;
    cmk_err rc;

    rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(tmp, sizeof(tmp), eb, "%s.new-%s", path, rnd);
    if (rc == CMK_OK)
        rc = cmk_json_save(tmp, j, 0600, eb);
    if (rc != CMK_OK)
        goto out;
    have_tmp = 1;
    if (link(tmp, path) != 0) {
        rc = errno == EEXIST
                 ? cmk_errbuf_set(eb, CMK_E_EXISTS, "%s already exists", path)
                 : cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", path);
        goto out;
    }
    (void)unlink(tmp);
    have_tmp = 0;
    rc = cmk_fsync_dir(dir, eb);
out:
    if (have_tmp)
        (void)unlink(tmp);
    return rc;
}

/* Fills the fields every identity has. */
static cmk_err ident_init(const char *home, cmk_identity *id, cmk_errbuf *eb)
{
    cmk_err rc;

    memset(id, 0, sizeof(*id));
    rc = cmk_home_tenant(home, id->tenant_id, eb);
    if (rc == CMK_OK)
        rc = cmk_uuid4(id->principal_id, eb);
    if (rc == CMK_OK)
        rc = cmk_uuid4(id->client_id, eb);
    cmk_iso8601((time_t)cmk_now(), id->created);
    return rc;
}

/* Creates a new identity's file path in dir: fresh ids, the home's tenant, the given type,
 * name, resource id and store id (system-assigned; else ""). CMK_E_EXISTS if the file
 * appeared meanwhile. *out receives the identity. */
static cmk_err ident_make(const char *home, const char *dir, const char *path, const char *type,
                          const char *name, const char *rid, const char *store_id,
                          cmk_identity *out, cmk_errbuf *eb)
{
    cmk_identity id;
    json_t *j;
    cmk_err rc = ident_init(home, &id, eb);

    if (rc == CMK_OK)
        rc = cmk_mkdir_p(dir, 0700, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(id.type, sizeof(id.type), "%s", type);
    snprintf(id.name, sizeof(id.name), "%s", name);
    snprintf(id.id, sizeof(id.id), "%s", rid);
    snprintf(id.store_id, sizeof(id.store_id), "%s", store_id);
    j = ident_file_json(&id);
    if (!j)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating identity '%s'", name);
    rc = create_exclusive(dir, path, j, eb);
    json_decref(j);
    if (rc == CMK_OK)
        *out = id;
    return rc;
}

cmk_err cmk_identity_create(const char *home, const char *name, cmk_identity *out, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], path[CMK_PATH_MAX], rid[CMK_ID_MAX];
    cmk_err rc;

    if (!home || !out)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "identity create: NULL argument");
    rc = cmk_name_check(name, "identity", eb);
    if (rc == CMK_OK)
        rc = cmk_path(dir, sizeof(dir), eb, "%s/" USER_SUBDIR, home);
    if (rc == CMK_OK)
        rc = cmk_path(path, sizeof(path), eb, "%s/%s.json", dir, name);
    if (rc != CMK_OK)
        return rc;
    /* Checked first so that a refused create leaves the home untouched. */
    if (cmk_exists(path))
        return cmk_errbuf_set(eb, CMK_E_EXISTS, "identity '%s' already exists", name);
    snprintf(rid, sizeof(rid), "/cmkstore/userAssignedIdentities/%s", name);
    rc = ident_make(home, dir, path, TYPE_USER, name, rid, "", out, eb);
    if (rc == CMK_E_EXISTS)
        cmk_errbuf_set(eb, CMK_E_EXISTS, "identity '%s' already exists (created concurrently)",
                       name);
    return rc;
}

static cmk_err system_path(const char *home, const char *store_id, char dir[CMK_PATH_MAX],
                           char path[CMK_PATH_MAX], cmk_errbuf *eb)
{
    cmk_err rc;

    if (!home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_name_check(store_id, "store id", eb);
    if (rc == CMK_OK)
        rc = cmk_path(dir, CMK_PATH_MAX, eb, "%s/" SYSTEM_SUBDIR, home);
    if (rc == CMK_OK)
        rc = cmk_path(path, CMK_PATH_MAX, eb, "%s/%s.json", dir, store_id);
    return rc;
}

cmk_err cmk_identity_get_system(const char *home, const char *store_id, cmk_identity *out,
                                cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], path[CMK_PATH_MAX];
    cmk_err rc;

    rc = system_path(home, store_id, dir, path, eb);
    if (rc == CMK_OK)
        rc = load_ident(path, 1, out, eb);
    if (rc == CMK_E_NOT_FOUND)
        cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "store %s has no system-assigned identity in %s",
                       store_id, home);
    return rc;
}

cmk_err cmk_identity_create_system(const char *home, const char *store_id, cmk_identity *out,
                                   cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], path[CMK_PATH_MAX], name[128], rid[CMK_ID_MAX];
    cmk_err rc;

    rc = system_path(home, store_id, dir, path, eb);
    if (rc == CMK_OK)
        rc = load_ident(path, 1, out, eb);
    if (rc != CMK_E_NOT_FOUND)
        return rc;
    cmk_errbuf_clear(eb);
    snprintf(name, sizeof(name), SYSTEM_NAME_PFX "%s", store_id);
    snprintf(rid, sizeof(rid), "/cmkstore/stores/%s/systemAssignedIdentity", store_id);
    rc = ident_make(home, dir, path, TYPE_SYSTEM, name, rid, store_id, out, eb);
    if (rc == CMK_E_EXISTS) {
        /* Another process made it first: idempotent, return theirs. */
        cmk_errbuf_clear(eb);
        rc = load_ident(path, 1, out, eb);
    }
    return rc;
}

/* Visits every identity file in one directory; cb returns non-zero to stop (the identity is
 * then in *out and scan_dir returns CMK_OK). Returns CMK_E_NOT_FOUND if cb never stopped.
 * Unreadable or damaged files are skipped: one bad file must not hide the others. */
typedef int (*visit_fn)(const cmk_identity *id, void *arg);

static cmk_err scan_dir(const char *dir, int system, visit_fn cb, void *arg, cmk_identity *out,
                        cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    struct dirent *de;
    cmk_identity id;
    cmk_err rc = CMK_E_NOT_FOUND;
    DIR *d = opendir(dir);

    if (!d) {
        if (errno == ENOENT)
            return CMK_E_NOT_FOUND;
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot read %s", dir);
    }
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        char stem[64];

        if (n < 6 || n - 5 >= sizeof(stem) || strcmp(de->d_name + n - 5, ".json") != 0)
            continue;
        memcpy(stem, de->d_name, n - 5);
        stem[n - 5] = '\0';
        if (cmk_name_check(stem, "identity", NULL) != CMK_OK)
            continue;
        if (cmk_path(path, sizeof(path), NULL, "%s/%s", dir, de->d_name) != CMK_OK ||
            load_ident(path, system, &id, NULL) != CMK_OK)
            continue;
        if (cb(&id, arg)) {
            if (out)
                *out = id;
            rc = CMK_OK;
            break;
        }
    }
    (void)closedir(d);
    return rc;
}

/* Both directories: user-assigned first. */
static cmk_err scan_all(const char *home, visit_fn cb, void *arg, cmk_identity *out, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX];
    cmk_err rc;

    rc = cmk_path(dir, sizeof(dir), eb, "%s/" USER_SUBDIR, home);
    if (rc == CMK_OK)
        rc = scan_dir(dir, 0, cb, arg, out, eb);
    if (rc != CMK_E_NOT_FOUND)
        return rc;
    rc = cmk_path(dir, sizeof(dir), eb, "%s/" SYSTEM_SUBDIR, home);
    if (rc == CMK_OK)
        rc = scan_dir(dir, 1, cb, arg, out, eb);
    return rc;
}

static int match_ref(const cmk_identity *id, void *arg)
{
    const char *ref = arg;

    return strcmp(id->name, ref) == 0 || strcasecmp(id->id, ref) == 0 ||
           strcasecmp(id->principal_id, ref) == 0 || strcasecmp(id->client_id, ref) == 0;
}

static int match_principal(const cmk_identity *id, void *arg)
{
    return strcasecmp(id->principal_id, (const char *)arg) == 0;
}

cmk_err cmk_identity_get(const char *home, const char *ref, cmk_identity *out, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_err rc;

    if (!home || !out)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "identity lookup: NULL argument");
    if (!ref || !*ref)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no identity given: name it by name, resource id, principalId or "
                              "clientId");
    /* A plain name is one file away; anything else needs a scan. */
    if (cmk_name_check(ref, "identity", NULL) == CMK_OK) {
        rc = cmk_path(path, sizeof(path), eb, "%s/" USER_SUBDIR "/%s.json", home, ref);
        if (rc == CMK_OK)
            rc = load_ident(path, 0, out, eb);
        if (rc != CMK_E_NOT_FOUND)
            return rc;
        cmk_errbuf_clear(eb);
    }
    rc = scan_all(home, match_ref, (void *)ref, out, eb);
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND,
                            "identity '%.200s' not found in %s: no identity has that name, "
                            "resource id, principalId or clientId",
                            ref, home);
    return rc;
}

cmk_err cmk_identity_get_by_principal(const char *home, const char *principal_id, cmk_identity *out,
                                      cmk_errbuf *eb)
{
    cmk_identity tmp;
    cmk_err rc;

    if (!home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    if (!principal_id || !*principal_id)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no principal id given");
    rc = scan_all(home, match_principal, (void *)principal_id, out ? out : &tmp, eb);
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no identity with principalId %.64s in %s",
                            principal_id, home);
    return rc;
}

int cmk_identity_principal_exists(const char *home, const char *principal_id)
{
    return cmk_identity_get_by_principal(home, principal_id, NULL, NULL) == CMK_OK;
}

/* Removes an identity file durably; a concurrent delete makes it CMK_E_NOT_FOUND. */
static cmk_err remove_file(const char *path, const char *what, cmk_errbuf *eb)
{
    if (unlink(path) != 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot delete %s %s", what,
                              path);
    return cmk_fsync_parent(path, eb);
}

cmk_err cmk_identity_delete(const char *home, const char *ref, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_identity id;
    cmk_err rc;

    rc = cmk_identity_get(home, ref, &id, eb);
    if (rc != CMK_OK)
        return rc;
    if (strcmp(id.type, TYPE_SYSTEM) == 0)
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "identity '%s' is the system-assigned identity of store %s: it "
                              "lives and dies with that store and cannot be deleted on its own",
                              ref, id.store_id);
    rc = cmk_path(path, sizeof(path), eb, "%s/" USER_SUBDIR "/%s.json", home, id.name);
    if (rc == CMK_OK)
        rc = remove_file(path, "identity", eb);
    if (rc == CMK_E_NOT_FOUND)
        cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "identity '%s' not found (deleted concurrently)", ref);
    return rc;
}

cmk_err cmk_identity_delete_system(const char *home, const char *store_id, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], path[CMK_PATH_MAX];
    cmk_err rc;

    rc = system_path(home, store_id, dir, path, eb);
    if (rc == CMK_OK)
        rc = remove_file(path, "system-assigned identity", eb);
    if (rc == CMK_E_NOT_FOUND)
        cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "store %s has no system-assigned identity in %s",
                       store_id, home);
    return rc;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(cmk_json_str(*(json_t *const *)a, "name"),
                  cmk_json_str(*(json_t *const *)b, "name"));
}

struct list_acc {
    json_t **items;
    size_t n, cap;
    int nomem;
};

static int collect(const cmk_identity *id, void *arg)
{
    struct list_acc *acc = arg;
    json_t *j;

    if (acc->nomem)
        return 1;
    if (acc->n == acc->cap) {
        size_t cap = acc->cap ? 2 * acc->cap : 16;
        json_t **p = realloc(acc->items, cap * sizeof(*p));
        if (!p) {
            acc->nomem = 1;
            return 1;
        }
        acc->items = p;
        acc->cap = cap;
    }
    j = cmk_identity_json(id);
    if (!j) {
        acc->nomem = 1;
        return 1;
    }
    acc->items[acc->n++] = j;
    return 0;
}

cmk_err cmk_identity_list(const char *home, json_t **out, cmk_errbuf *eb)
{
    struct list_acc acc = {0};
    char dir[CMK_PATH_MAX];
    json_t *arr = NULL;
    cmk_err rc;

    *out = NULL;
    if (!home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_path(dir, sizeof(dir), eb, "%s/" USER_SUBDIR, home);
    if (rc != CMK_OK)
        goto out;
    rc = scan_dir(dir, 0, collect, &acc, NULL, eb);
    if (rc == CMK_E_NOT_FOUND)
        rc = CMK_OK; /* visited everything (or there is no directory yet) */
    if (rc == CMK_OK && acc.nomem)
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing identities");
    if (rc != CMK_OK)
        goto out;
    if (acc.n > 1)
        qsort(acc.items, acc.n, sizeof(*acc.items), cmp_by_name);
    arr = json_array();
    if (!arr) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing identities");
        goto out;
    }
    for (size_t i = 0; i < acc.n; i++) {
        if (json_array_append_new(arr, acc.items[i]) != 0) {
            acc.items[i] = NULL;
            rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing identities");
            goto out;
        }
        acc.items[i] = NULL;
    }
    *out = arr;
    arr = NULL;
out:
    for (size_t i = 0; i < acc.n; i++)
        json_decref(acc.items[i]);
    free(acc.items);
    json_decref(arr);
    return rc;
}
