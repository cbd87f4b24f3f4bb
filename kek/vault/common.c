/* common.c — small helpers shared by the vault's files (see common.h). */
#define _GNU_SOURCE
#include "kek/vault/common.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/identity/home.h"

#define DAY_SECONDS 86400

int cmk_vault_is_version(const char *s)
{
    size_t i;

    if (!s)
        return 0;
    for (i = 0; i < CMK_VAULT_VERSION_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[i] == '\0';
}

cmk_err cmk_vault_check_version_arg(const char *version, cmk_errbuf *eb)
{
    if (!version || !*version || cmk_vault_is_version(version))
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "bad key version '%.80s': a version is 32 lowercase hex digits", version);
}

void cmk_vault_now_iso(char out[32])
{
    cmk_iso8601((time_t)cmk_now(), out);
}

void cmk_vault_deletion_dates(int retention, char date[32], char purge[32])
{
    int64_t now = cmk_now();

    cmk_iso8601((time_t)now, date);
    cmk_iso8601((time_t)(now + (int64_t)retention * DAY_SECONDS), purge);
}

int cmk_vault_jset(json_t *obj, const char *key, json_t *val)
{
    if (!val)
        return -1;
    return json_object_set_new(obj, key, val);
}

json_t *cmk_vault_jstr(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

cmk_err cmk_vault_nomem(cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory building the vault's answer");
}

void cmk_vault_give(json_t **out, json_t *j)
{
    if (out)
        *out = j;
    else
        json_decref(j);
}

cmk_err cmk_vault_copy_out(json_t **out, const json_t *j, cmk_errbuf *eb)
{
    json_t *d;

    if (!out)
        return CMK_OK;
    d = json_deep_copy(j);
    if (!d)
        return cmk_vault_nomem(eb);
    *out = d;
    return CMK_OK;
}

static int cmp_name(const void *a, const void *b)
{
    const char *x = cmk_json_str(*(json_t *const *)a, "name");
    const char *y = cmk_json_str(*(json_t *const *)b, "name");
    return strcmp(x ? x : "", y ? y : "");
}

/* Sorts a JSON array of objects by their "name". */
static cmk_err sort_by_name(json_t *arr, cmk_errbuf *eb)
{
    size_t n = json_array_size(arr);
    json_t **v;

    if (n < 2)
        return CMK_OK;
    v = malloc(n * sizeof(*v));
    if (!v)
        return cmk_vault_nomem(eb);
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof(*v), cmp_name);
    for (size_t i = 0; i < n; i++)
        (void)json_array_set_new(arr, i, v[i]); /* in-range index: cannot fail */
    free(v);
    return CMK_OK;
}

cmk_err cmk_vault_each_name(const char *dir, const char *what, cmk_vault_name_fn fn, void *arg,
                            json_t **out, cmk_errbuf *eb)
{
    struct dirent *de;
    json_t *arr = json_array();
    cmk_err rc = CMK_OK;
    DIR *d = NULL;

    if (out)
        *out = NULL;
    if (!arr)
        return cmk_vault_nomem(eb);
    d = opendir(dir);
    if (!d && errno != ENOENT)
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot read %s", dir);
    while (d && rc == CMK_OK && (de = readdir(d)) != NULL) {
        json_t *item = NULL;

        if (cmk_name_check(de->d_name, what, NULL) != CMK_OK)
            continue;
        rc = fn(de->d_name, arg, &item, eb);
        if (rc == CMK_OK && item && json_array_append_new(arr, item) != 0)
            rc = cmk_vault_nomem(eb);
    }
    if (d)
        (void)closedir(d);
    if (rc == CMK_OK)
        rc = sort_by_name(arr, eb);
    if (rc == CMK_OK && out) {
        *out = arr;
        arr = NULL;
    }
    json_decref(arr);
    return rc;
}

cmk_err cmk_vault_bury(const char *dir, const char *parent, const char *what, int *moved,
                       cmk_errbuf *eb)
{
    char grave[CMK_PATH_MAX], rnd[17];
    cmk_err rc;

    if (moved)
        *moved = 0;
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(grave, sizeof(grave), eb, "%s/.purged-%s", parent, rnd);
    if (rc != CMK_OK)
        return rc;
    if (rename(dir, grave) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot purge %s %s", what, dir);
    if (moved)
        *moved = 1;
    rc = cmk_fsync_dir(parent, eb);
    if (rc == CMK_OK)
        rc = cmk_rm_rf(grave, eb);
    return rc;
}
