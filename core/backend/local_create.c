/* local_create.c — a new store in a local directory: the target checked, the store built in
 * a staging directory beside it and renamed into place, so that a crash during create leaves
 * no half-made store. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/backend/local.h"
#include "core/backend/local_internal.h"
#include "core/base/fsutil.h"
#include "core/base/secmem.h"

/* Absolute path of a directory that may not exist yet (its parent must). */
static cmk_err resolve_new_dir(const char *in, char *out, size_t cap, cmk_errbuf *eb)
{
    char buf[4096], rp[4096], base[256];
    char *slash;
    size_t n;
    cmk_err rc;

    if (realpath(in, out) != NULL)
        return CMK_OK;
    if (errno != ENOENT)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot resolve %s", in);
    rc = cmk_path(buf, sizeof(buf), eb, "%s", in);
    if (rc != CMK_OK)
        return rc;
    n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    slash = strrchr(buf, '/');
    rc = cmk_path(base, sizeof(base), eb, "%s", slash ? slash + 1 : buf);
    if (rc != CMK_OK)
        return rc;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad store directory %s", in);
    if (!slash)
        strcpy(buf, ".");
    else if (slash == buf)
        buf[1] = '\0';
    else
        *slash = '\0';
    if (realpath(buf, rp) == NULL)
        return cmk_errbuf_sys(eb, CMK_E_NOT_FOUND, errno, "the parent directory of %s", in);
    return cmk_path(out, cap, eb, "%s/%s", strcmp(rp, "/") ? rp : "", base);
}

cmk_err cmk_backend_local_target(const char *dir_in, char *dir, size_t cap, cmk_errbuf *eb)
{
    char p[4200];
    DIR *d;
    struct dirent *de;
    cmk_err rc = resolve_new_dir(dir_in, dir, cap, eb);

    if (rc == CMK_OK)
        rc = cmk_path(p, sizeof(p), eb, "%s/store.json", dir);
    if (rc != CMK_OK)
        return rc;
    if (cmk_exists(p))
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "a store already exists in %s: nothing was changed. Encryption "
                              "settings are chosen when a store is created; a customer-managed "
                              "key cannot be enabled on (or removed from) an existing store",
                              dir);
    d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return CMK_OK;
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot open %s", dir);
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                                "%s is not empty: choose a new or empty directory for the store",
                                dir);
            break;
        }
    }
    closedir(d);
    return rc;
}

/* mkdir of rel below the store, 0700 (made by this process in a directory of its own). */
static cmk_err make_dir(cmk_local_bk *l, const char *rel, cmk_errbuf *eb)
{
    if (mkdirat(l->dirfd, rel, 0700) != 0)
        return cmk_errbuf_open(eb, errno, "create", l->dir, rel);
    return CMK_OK;
}

/* Every blob prefix directory exists from the start, so a put only ever fsyncs its leaf. */
static cmk_err make_layout(cmk_local_bk *l, cmk_errbuf *eb)
{
    static const char *const algs[] = {"blobs/sha256", "blobs/sha512"};
    char p[64];
    cmk_err rc = make_dir(l, "tmp", eb);

    if (rc == CMK_OK)
        rc = make_dir(l, "meta", eb);
    if (rc == CMK_OK)
        rc = make_dir(l, "blobs", eb);
    for (int a = 0; a < 2 && rc == CMK_OK; a++) {
        rc = make_dir(l, algs[a], eb);
        for (int i = 0; i < 256 && rc == CMK_OK; i++) {
            snprintf(p, sizeof(p), "%s/%02x", algs[a], i);
            rc = make_dir(l, p, eb);
        }
        if (rc == CMK_OK)
            rc = cmk_fsync_dir_at(l->dirfd, l->dir, algs[a], eb);
    }
    if (rc == CMK_OK)
        rc = cmk_fsync_dir_at(l->dirfd, l->dir, "blobs", eb);
    return rc;
}

cmk_err cmk_backend_local_create(const char *dir, cmk_backend **out, cmk_errbuf *eb)
{
    char stage[4200], rnd[17];
    cmk_local_bk *l = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(stage, sizeof(stage), eb, "%s.creating-%s", dir, rnd);
    if (rc != CMK_OK)
        return rc;
    if (mkdir(stage, 0700) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot create %s", stage);
    rc = cmk_local_new(stage, &l, eb);
    if (rc != CMK_OK) {
        cmk_errbuf ignore = {0};
        cmk_best_effort(cmk_rm_rf(stage, &ignore));
        return rc;
    }
    l->staged = 1;
    rc = cmk_path(l->target, sizeof(l->target), eb, "%s", dir);
    if (rc == CMK_OK)
        rc = make_layout(l, eb);
    if (rc == CMK_OK)
        rc = cmk_local_open_tmp(l, eb);
    if (rc != CMK_OK) {
        cmk_local_close(&l->base);
        return rc;
    }
    *out = &l->base;
    return CMK_OK;
}

cmk_err cmk_backend_local_publish(cmk_backend *b, cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);

    if (!l->staged)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s is not a new store", l->dir);
    /* Every entry made in the staging directory (records fsync theirs; the log's is new). */
    if (fsync(l->dirfd) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync %s", l->dir);
    if (rename(l->dir, l->target) != 0)
        return cmk_errbuf_sys(eb, errno == ENOTEMPTY || errno == EEXIST ? CMK_E_EXISTS : CMK_E_IO,
                              errno, "cannot move the new store into %s", l->target);
    l->staged = 0;
    memcpy(l->dir, l->target, sizeof(l->dir));
    return cmk_fsync_parent(l->dir, eb);
}
