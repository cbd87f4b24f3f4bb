/* local.c — the local backend: the store directory's open and close, the sweep of crashed
 * writers' leftovers, the directory locks and the blob space's opening. A new store is made
 * in local_create.c; records, the event log and the cross-process locks are in local_rec.c,
 * blob files in local_blob.c and local_publish.c. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/backend/local.h"
#include "core/backend/local_blob.h"
#include "core/backend/local_internal.h"

/* ---- directory locks ---- */

cmk_err cmk_local_dir_lock(cmk_local_bk *l, const char *rel, int wait, int *out, cmk_errbuf *eb)
{
    const char *at = *rel ? rel : ".";
    int fd = cmk_openat_nofollow(l->dirfd, at, O_RDONLY | O_DIRECTORY, 0);

    *out = -1;
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open the directory", l->dir, at);
    while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
        int e = errno;
        if (e == EINTR)
            continue;
        close(fd);
        if (e == EWOULDBLOCK)
            return cmk_errbuf_set(eb, CMK_E_BUSY,
                                  "%s/%s is being written by another process; retry", l->dir, at);
        return cmk_errbuf_sys(eb, CMK_E_IO, e, "cannot lock the directory %s/%s", l->dir, at);
    }
    *out = fd;
    return CMK_OK;
}

/* ---- open / close ---- */

/* "<name>.tmp-<16 hex>": a record temporary (cmk_write_file_in). */
static int is_rec_tmp(const char *n)
{
    const char *t = strstr(n, ".tmp-");

    if (!t || t == n || strlen(t + 5) != 16)
        return 0;
    return strspn(t + 5, "0123456789abcdef") == 16;
}

/* Removes record temporaries beside store.json and keyring.json left by a process killed
 * between writing and renaming them. Every writer holds the directory's lock while its
 * temporary exists (local_rec.c), so they are stale if that lock can be taken now. The
 * store lock is tried first, as it always was (it also makes <dir>/lock at the first open,
 * as before). */
static void sweep_records(cmk_local_bk *l)
{
    cmk_errbuf ignore = {0};
    struct dirent *de;
    DIR *d;
    int fd, store_fd;

    if (cmk_lock_at(l->dirfd, l->dir, "lock", 1, 0, &store_fd, &ignore) != CMK_OK)
        return;
    if (cmk_local_dir_lock(l, "", 0, &fd, &ignore) != CMK_OK)
        goto out;
    d = fdopendir(fd); /* owns fd: closedir releases the lock */
    if (!d) {
        close(fd);
        goto out;
    }
    while ((de = readdir(d)) != NULL) {
        if (is_rec_tmp(de->d_name))
            unlinkat(l->dirfd, de->d_name, 0);
    }
    closedir(d);
out:
    cmk_unlock(store_fd);
}

/* Removes named temporaries left by crashed writers of the fallback path (unlocked ones:
 * a live writer holds an exclusive flock on its file). */
static void sweep_tmp(cmk_local_bk *l)
{
    DIR *d = fdopendir(dup(l->tmpfd));
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        /* O_NONBLOCK: a FIFO planted here must not hang every open of the store. */
        int fd = openat(l->tmpfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(l->tmpfd, de->d_name, 0);
        close(fd);
    }
    closedir(d);
}

/* Refuses a store whose own entries are symbolic links. Every open refuses them one by one;
 * this says so before anything is done, for the entries that are used only later or only by
 * some commands (events.log, lock, meta/, blobs/). */
static cmk_err check_no_links(cmk_local_bk *l, cmk_errbuf *eb)
{
    static const char *const names[] = {"events.log", "lock",  "tmp",          "meta",
                                        "meta/lock",  "blobs", "blobs/sha256", "blobs/sha512"};
    struct stat st;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (fstatat(l->dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            return cmk_errbuf_open(eb, ELOOP, "open", l->dir, names[i]);
    }
    return CMK_OK;
}

void cmk_local_close(cmk_backend *b)
{
    cmk_local_bk *l = cmk_local_of(b);

    if (l->dirfd >= 0)
        close(l->dirfd);
    if (l->tmpfd >= 0)
        close(l->tmpfd);
    if (l->staged) {
        /* A new store that was not published: nothing of it is left. */
        cmk_errbuf ignore = {0};
        cmk_best_effort(cmk_rm_rf(l->dir, &ignore));
    }
    free(l);
}

cmk_err cmk_local_blobs_open_op(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                                atomic_int *direct_state, cmk_bk_blobs **out, cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);

    return cmk_local_blobs_open(l->dir, l->dirfd, l->tmpfd, pool, direct_after, direct_state, out,
                                eb);
}

cmk_err cmk_local_new(const char *dir, cmk_local_bk **out, cmk_errbuf *eb)
{
    cmk_local_bk *l = calloc(1, sizeof(*l));
    cmk_err rc;

    *out = NULL;
    if (!l)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (backend)");
    l->base.ops = &cmk_local_ops;
    l->dirfd = l->tmpfd = -1;
    rc = cmk_path(l->dir, sizeof(l->dir), eb, "%s", dir);
    if (rc != CMK_OK)
        goto out;
    /* The directory is resolved once; everything in it is opened relative to this fd. */
    l->dirfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0)
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open the store %s",
                            l->dir);
out:
    if (rc == CMK_OK)
        *out = l;
    else
        cmk_local_close(&l->base);
    return rc;
}

cmk_err cmk_local_open_tmp(cmk_local_bk *l, cmk_errbuf *eb)
{
    cmk_err rc;

    l->tmpfd = cmk_openat_nofollow(l->dirfd, "tmp", O_RDONLY | O_DIRECTORY, 0);
    if (l->tmpfd >= 0)
        return CMK_OK;
    rc = cmk_errbuf_open(eb, errno, "open", l->dir, "tmp");
    if (rc != CMK_E_REFUSED) {
        rc = CMK_E_CORRUPT;
        if (eb)
            eb->code = rc;
    }
    return rc;
}

cmk_err cmk_backend_local_open(const char *dir, cmk_backend **out, cmk_errbuf *eb)
{
    cmk_local_bk *l = NULL;
    struct stat st;
    cmk_err rc = cmk_local_new(dir, &l, eb);

    *out = NULL;
    if (rc != CMK_OK)
        return rc;
    if (fstatat(l->dirfd, "store.json", &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "%s holds no store.json: not a store", l->dir);
        goto out;
    }
    rc = check_no_links(l, eb);
    if (rc == CMK_OK)
        rc = cmk_local_open_tmp(l, eb);
    if (rc != CMK_OK)
        goto out;
    sweep_tmp(l);
    sweep_records(l);
    *out = &l->base;
    l = NULL;
out:
    if (l)
        cmk_local_close(&l->base);
    return rc;
}
