/*
 * local_publish.c — the local backend's blob names: publishing finished sinks (fsync, link
 * or rename into blobs/<alg>/<xx>/<hex>, directory fsync, all batched), delete and list.
 *
 * A batch makes every file durable together (one cmk_io_fsync_many over the sinks' engines),
 * links them all, and fsyncs each directory touched once (again together): a few journal
 * commits instead of two per blob, and no result is CMK_OK before its data and its directory
 * entry are durable.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/backend/local_blob.h"
#include "core/base/secmem.h"

/* Opens blobs/<alg>/<hex[0:2]>, the directory of key "<alg>/<hex>", as found inside the
 * store (never through a link): *pfd, parent its path in the store, *base the file name. */
static cmk_err open_parent(local_blobs *lb, const char *key, char parent[256], const char **base,
                           int *pfd, cmk_errbuf *eb)
{
    const char *slash = strchr(key, '/');
    cmk_err rc;

    if (!slash || strlen(slash + 1) < 2 || strchr(slash + 1, '/'))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad blob key '%s'", key);
    *base = slash + 1;
    rc = cmk_path(parent, 256, eb, "blobs/%.*s/%.2s", (int)(slash - key), key, slash + 1);
    return rc == CMK_OK ? cmk_opendir_at(lb->dirfd, lb->dir, parent, pfd, eb) : rc;
}

/* A file is already published under the key. The engine's verdict (keep) decides: kept if
 * it authenticates whole (it then holds this content), else ours replaces it: a re-push must
 * repair a damaged blob, not report success over it. Our file is complete and fsync'd: it
 * gets a name in tmp/ (locked, so no sweep takes it) and is renamed over base in pfd, so
 * readers see the old file or the new one. */
static cmk_err keep_or_replace(local_sink *k, int pfd, const char *base, const char *procfd,
                               cmk_err verdict, cmk_errbuf *eb)
{
    local_blobs *lb = k->lb;
    char rnd[17], name[64];
    cmk_err rc;

    if (verdict == CMK_OK)
        return CMK_OK;
    /* Only a file that is there and fails its check is replaced; without a verdict (key
     * access, I/O) the put fails rather than report a blob it could not check. */
    if (verdict != CMK_E_INTEGRITY && verdict != CMK_E_CORRUPT && verdict != CMK_E_UNSUPPORTED &&
        verdict != CMK_E_NOT_FOUND)
        return verdict;
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(name, sizeof(name), "put-%s.part", rnd);
    if (flock(k->fd, LOCK_EX) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot lock the new copy of %s", base);
    if (linkat(AT_FDCWD, procfd, lb->tmpfd, name, AT_SYMLINK_FOLLOW) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot link %s/tmp/%s", lb->dir, name);
    rc = cmk_io_renameat(k->io, lb->tmpfd, name, pfd, base, eb);
    if (rc != CMK_OK)
        (void)unlinkat(lb->tmpfd, name, 0);
    return rc;
}

/* Makes the finished (and fsync'd) file visible under key; parent receives the directory
 * whose entry must then be made durable (relative to the store directory). */
static cmk_err publish(local_sink *k, const char *key, char parent[256], cmk_bk_keep_fn keep,
                       void *arg, size_t i, cmk_errbuf *eb)
{
    local_blobs *lb = k->lb;
    char procfd[64];
    const char *base = NULL;
    int pfd = -1;
    cmk_err rc;

    rc = open_parent(lb, key, parent, &base, &pfd, eb);
    if (rc != CMK_OK)
        return rc;
    if (k->named_tmp) {
        rc = cmk_io_renameat(k->io, lb->tmpfd, k->tmp_name, pfd, base, eb);
        if (rc == CMK_OK)
            k->named_tmp = 0; /* nothing left to unlink */
        goto out;
    }
    snprintf(procfd, sizeof(procfd), "/proc/self/fd/%d", k->fd);
    /* Content-addressed: an existing file (EEXIST) that passes its check holds the same
     * content. Its directory entry is still fsync'd: it may be another writer's that is
     * not durable yet. */
    if (linkat(AT_FDCWD, procfd, pfd, base, AT_SYMLINK_FOLLOW) != 0) {
        if (errno == EEXIST)
            rc = keep_or_replace(k, pfd, base, procfd, keep(arg, i, eb), eb);
        else
            rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot publish blob %s/%s/%s", lb->dir,
                                parent, base);
    }
out:
    close(pfd);
    return rc;
}

struct pub_item {
    char parent[256];
    int dir; /* index into the batch's directories */
};

/* Records the first failure of item i. */
static void item_fail(cmk_err *results, cmk_errbuf *ebs, size_t i, cmk_err rc, const cmk_errbuf *eb)
{
    if (results[i] != CMK_OK)
        return;
    results[i] = rc;
    ebs[i] = *eb;
    ebs[i].code = rc;
}

/* Spreads the outcome of one cmk_io_fsync_many over the items whose fd was fds[k]. */
static void fsync_outcome(cmk_err r, const cmk_errbuf *eb, int err, const char *what,
                          cmk_err *results, cmk_errbuf *ebs, size_t i)
{
    cmk_errbuf e2 = {0};

    if (r != CMK_OK)
        item_fail(results, ebs, i, r, eb);
    else if (err != 0)
        item_fail(results, ebs, i, cmk_errbuf_sys(&e2, CMK_E_IO, err, "cannot fsync %s", what),
                  &e2);
}

void cmk_local_publish_many(cmk_bk_blobs *bs, cmk_bk_sink *const *sinks, const char *const *keys,
                            size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                            cmk_errbuf *ebs)
{
    local_blobs *lb = (local_blobs *)bs;
    struct pub_item *it = calloc(n, sizeof(*it));
    cmk_io **ios = calloc(n, sizeof(*ios));
    int *fds = calloc(n, sizeof(*fds)), *errs = calloc(n, sizeof(*errs));
    size_t *who = calloc(n, sizeof(*who));
    size_t nf = 0, nd = 0;
    cmk_errbuf eb = {0};

    for (size_t i = 0; i < n; i++)
        if (sinks[i])
            results[i] = CMK_OK;
    if (!it || !ios || !fds || !errs || !who) {
        cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (batch commit)");
        for (size_t i = 0; i < n; i++)
            if (sinks[i])
                item_fail(results, ebs, i, CMK_E_NOMEM, &eb);
        goto out;
    }
    /* 1. Data durable, all files together. */
    for (size_t i = 0; i < n; i++)
        if (sinks[i]) {
            local_sink *k = (local_sink *)sinks[i];
            ios[nf] = k->io;
            who[nf] = i;
            fds[nf++] = k->fd;
        }
    if (nf > 0) {
        cmk_err r = cmk_io_fsync_many(ios, nf, fds, nf, errs, &eb);
        for (size_t j = 0; j < nf; j++)
            fsync_outcome(r, &eb, errs[j], "blob", results, ebs, who[j]);
    }
    /* 2. Publish, noting each distinct directory (fds[] now holds directory fds). */
    for (size_t i = 0; i < n; i++) {
        int dfd = -1;
        cmk_err r;

        if (!sinks[i] || results[i] != CMK_OK)
            continue;
        r = publish((local_sink *)sinks[i], keys[i], it[i].parent, keep, arg, i, &eb);
        if (r != CMK_OK) {
            item_fail(results, ebs, i, r, &eb);
            continue;
        }
        it[i].dir = -1;
        for (size_t j = 0; j < i && it[i].dir < 0; j++)
            if (sinks[j] && results[j] == CMK_OK && strcmp(it[j].parent, it[i].parent) == 0)
                it[i].dir = it[j].dir;
        if (it[i].dir >= 0)
            continue;
        r = cmk_opendir_at(lb->dirfd, lb->dir, it[i].parent, &dfd, &eb);
        if (r != CMK_OK) {
            item_fail(results, ebs, i, r, &eb);
            continue;
        }
        it[i].dir = (int)nd;
        fds[nd++] = dfd;
    }
    /* 3. Directory entries durable, every directory once, all together. */
    if (nd > 0) {
        cmk_err r = cmk_io_fsync_many(ios, nf, fds, nd, errs, &eb);
        for (size_t i = 0; i < n; i++) {
            char what[300];
            if (!sinks[i] || results[i] != CMK_OK)
                continue;
            snprintf(what, sizeof(what), "directory %s/%s", lb->dir, it[i].parent);
            fsync_outcome(r, &eb, errs[it[i].dir], what, results, ebs, i);
        }
        for (size_t j = 0; j < nd; j++)
            close(fds[j]);
    }
out:
    free(it);
    free(ios);
    free(fds);
    free(errs);
    free(who);
}

cmk_err cmk_local_blob_delete(cmk_bk_blobs *bs, const char *key, cmk_errbuf *eb)
{
    local_blobs *lb = (local_blobs *)bs;
    char parent[256];
    const char *base = NULL;
    int pfd = -1;
    cmk_err rc = open_parent(lb, key, parent, &base, &pfd, eb);

    if (rc != CMK_OK)
        return rc;
    if (unlinkat(pfd, base, 0) != 0)
        rc = errno == ENOENT
                 ? cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "blob %s is not in the store", key)
                 : cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot delete %s/%s/%s", lb->dir, parent,
                                  base);
    else if (fsync(pfd) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync directory %s/%s", lb->dir, parent);
    close(pfd);
    return rc;
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Opens directory rel under dirfd for reading, never through a link; NULL if it cannot. */
static DIR *open_dir(int dirfd, const char *rel)
{
    int fd = cmk_openat_nofollow(dirfd, rel, O_RDONLY | O_DIRECTORY, 0);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

    if (!d && fd >= 0)
        close(fd);
    return d;
}

/* Lists blobs/<alg>/<xx>/ for every xx: whatever is not a blob name of alg is passed over.
 * 1 if cb asked to stop. */
static int list_alg(local_blobs *lb, const char *alg, size_t hexlen,
                    int (*cb)(const char *key, void *arg), void *arg)
{
    char p[64], key[CMK_BK_KEY_MAX];

    for (int i = 0; i < 256; i++) {
        struct dirent *de;
        DIR *d;

        snprintf(p, sizeof(p), "blobs/%s/%02x", alg, i);
        d = open_dir(lb->dirfd, p);
        if (!d)
            continue; /* absent (or not a directory): no blobs there */
        while ((de = readdir(d)) != NULL) {
            if (!is_hex(de->d_name, hexlen) || strncmp(de->d_name, p + strlen(p) - 2, 2))
                continue;
            snprintf(key, sizeof(key), "%s/%s", alg, de->d_name);
            if (cb(key, arg) != 0) {
                closedir(d);
                return 1;
            }
        }
        closedir(d);
    }
    return 0;
}

cmk_err cmk_local_blob_list(cmk_bk_blobs *bs, int (*cb)(const char *key, void *arg), void *arg,
                            cmk_errbuf *eb)
{
    (void)eb;
    if (!list_alg((local_blobs *)bs, "sha256", 64, cb, arg))
        (void)list_alg((local_blobs *)bs, "sha512", 128, cb, arg);
    return CMK_OK;
}
