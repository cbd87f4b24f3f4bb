/*
 * local_rec.c — the local backend's small records, its event log and its cross-process
 * locks, and its ops table. Records: files replaced whole (temporary, fsync,
 * rename, fsync directory), each read with a version token made of its file identity and a
 * hash of its bytes. A conditional write or delete compares the token and makes its change
 * under the flock of the record's directory (cmk_local_dir_lock), so the compare and the
 * rename are one step for every writer of this store; readers take no lock (a rename is
 * atomic). Nothing on disk is added for it: the files are the ones format v1 has always had.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fsutil.h"
#include "core/backend/local_internal.h"

struct cmk_bk_lock {
    int fd;
};

/* "<ns>/<xx>/<key>": CMK_REC_NAME_MAX plus the fan-out directory. */
#define REL_MAX (CMK_REC_NAME_MAX + 8)
/* What a version check reads of the record in place: past anything the engine writes. */
#define VER_READ_MAX (64u << 20)

/* The record's file below the store directory and its directory ("" at the top level):
 * "<name>", or "<ns>/<key[0:2]>/<key>" in "<ns>/<key[0:2]>". */
static cmk_err rec_rel(const char *name, char rel[REL_MAX], char parent[REL_MAX], cmk_errbuf *eb)
{
    const char *slash;
    cmk_err rc = cmk_bk_rec_name_check(name, eb);

    if (rc != CMK_OK)
        return rc;
    slash = strchr(name, '/');
    if (!slash) {
        parent[0] = '\0';
        snprintf(rel, REL_MAX, "%s", name);
    } else {
        snprintf(parent, REL_MAX, "%.*s/%.2s", (int)(slash - name), name, slash + 1);
        snprintf(rel, REL_MAX, "%s/%s", parent, slash + 1);
    }
    return CMK_OK;
}

static int64_t ts_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void ver_make(const struct stat *st, const void *data, size_t len, cmk_rec_ver *ver)
{
    snprintf(ver->tag, sizeof(ver->tag), "l1:%ju:%ju:%" PRId64 ":%" PRId64 ":%jd:%016" PRIx64,
             (uintmax_t)st->st_dev, (uintmax_t)st->st_ino, ts_ns(st->st_mtim), ts_ns(st->st_ctim),
             (intmax_t)st->st_size, (uint64_t)XXH3_64bits(data, len));
}

/* Reads the record file rel (never through a link; a FIFO does not block): *data (may be
 * NULL: version only), *len, *ver. */
static cmk_err read_rel(cmk_local_bk *l, const char *rel, size_t max, void **data, size_t *len,
                        cmk_rec_ver *ver, cmk_errbuf *eb)
{
    char shown[sizeof(l->dir) + REL_MAX + 2];
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int fd = cmk_openat_nofollow(l->dirfd, rel, O_RDONLY | O_NONBLOCK, 0);
    cmk_err rc;

    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open", l->dir, rel);
    snprintf(shown, sizeof(shown), "%s/%s", l->dir, rel);
    rc = cmk_read_fd(fd, shown, max, &buf, &n, &st, eb);
    if (rc != CMK_OK)
        return rc;
    if (ver)
        ver_make(&st, buf, n, ver);
    if (len)
        *len = n;
    if (data)
        *data = buf;
    else
        free(buf);
    return CMK_OK;
}

static cmk_err local_rec_get(cmk_backend *b, const char *name, size_t max, void **data, size_t *len,
                             cmk_rec_ver *ver, cmk_errbuf *eb)
{
    char rel[REL_MAX], parent[REL_MAX];
    cmk_err rc;

    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (ver)
        ver->tag[0] = '\0';
    rc = rec_rel(name, rel, parent, eb);
    if (rc == CMK_OK)
        rc = read_rel(cmk_local_of(b), rel, max, data, len, ver, eb);
    return rc;
}

/* Under the directory's lock: is the record at rel what the writer expects? */
static cmk_err check_expect(cmk_local_bk *l, const char *rel, const cmk_rec_ver *expect,
                            cmk_errbuf *eb)
{
    cmk_rec_ver cur;
    cmk_err rc;

    if (expect && strcmp(expect->tag, CMK_REC_ANY) == 0)
        return CMK_OK;
    rc = read_rel(l, rel, VER_READ_MAX, NULL, NULL, &cur, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        cur.tag[0] = '\0';
    } else if (rc != CMK_OK) {
        return rc;
    }
    if (!expect)
        return cur.tag[0] ? cmk_errbuf_set(eb, CMK_E_BUSY,
                                           "%s/%s was created by another process meanwhile; "
                                           "retry",
                                           l->dir, rel)
                          : CMK_OK;
    if (cmk_rec_ver_eq(&cur, expect))
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_BUSY,
                          "%s/%s was %s by another process since it was read; retry", l->dir, rel,
                          cur.tag[0] ? "changed" : "deleted");
}

/* Creates the record's directory (and its namespace's) if missing, durably. */
static cmk_err make_parent(cmk_local_bk *l, const char *parent, cmk_errbuf *eb)
{
    char ns[REL_MAX];
    const char *slash = strchr(parent, '/');
    cmk_err rc;

    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - parent), parent);
    rc = cmk_mkdir_at(l->dirfd, l->dir, ns, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_mkdir_at(l->dirfd, l->dir, parent, 0700, eb);
    return rc;
}

static cmk_err local_rec_put(cmk_backend *b, const char *name, const void *data, size_t len,
                             const cmk_rec_ver *expect, cmk_rec_ver *newver, cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);
    char rel[REL_MAX], parent[REL_MAX], shown[sizeof(l->dir) + REL_MAX + 2];
    struct stat st;
    int pfd = -1;
    cmk_err rc;

    rc = rec_rel(name, rel, parent, eb);
    if (rc == CMK_OK && parent[0])
        rc = make_parent(l, parent, eb);
    if (rc == CMK_OK)
        rc = cmk_local_dir_lock(l, parent, 1, &pfd, eb);
    if (rc == CMK_OK)
        rc = check_expect(l, rel, expect, eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(shown, sizeof(shown), "%s%s%s", l->dir, parent[0] ? "/" : "", parent);
    rc = cmk_write_file_in(pfd, shown, rel + (parent[0] ? strlen(parent) + 1 : 0), data, len, 0600,
                           &st, eb);
    if (rc == CMK_OK && newver)
        ver_make(&st, data, len, newver);
out:
    if (pfd >= 0)
        close(pfd);
    return rc;
}

static cmk_err local_rec_delete(cmk_backend *b, const char *name, const cmk_rec_ver *expect,
                                cmk_errbuf *eb)
{
    static const cmk_rec_ver any = {CMK_REC_ANY};
    cmk_local_bk *l = cmk_local_of(b);
    char rel[REL_MAX], parent[REL_MAX];
    int pfd = -1;
    cmk_err rc;

    rc = rec_rel(name, rel, parent, eb);
    if (rc == CMK_OK)
        rc = cmk_local_dir_lock(l, parent, 1, &pfd, eb);
    if (rc == CMK_OK)
        rc = check_expect(l, rel, expect ? expect : &any, eb);
    if (rc != CMK_OK)
        goto out;
    if (unlinkat(pfd, rel + (parent[0] ? strlen(parent) + 1 : 0), 0) != 0)
        rc = cmk_errbuf_open(eb, errno, "delete", l->dir, rel);
    else if (fsync(pfd) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync %s/%s", l->dir,
                            parent[0] ? parent : ".");
out:
    if (pfd >= 0)
        close(pfd);
    return rc;
}

/* Lists the fan-out directory <ns>/<xx>: every record key in it that starts with kp. Returns
 * nonzero when cb asked to stop. */
static int list_sub(cmk_local_bk *l, const char *ns, const char *xx, const char *kp,
                    int (*cb)(const char *name, void *arg), void *arg)
{
    char sub[REL_MAX], full[REL_MAX];
    struct dirent *de;
    int stop = 0, fd;
    DIR *d;

    snprintf(sub, sizeof(sub), "%s/%s", ns, xx);
    fd = cmk_openat_nofollow(l->dirfd, sub, O_RDONLY | O_DIRECTORY, 0);
    d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    while (!stop && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, xx, 2) != 0 || strncmp(de->d_name, kp, strlen(kp)) != 0)
            continue;
        if (snprintf(full, sizeof(full), "%s/%s", ns, de->d_name) >= (int)sizeof(full) ||
            cmk_bk_rec_name_check(full, NULL) != CMK_OK)
            continue; /* temporaries, dot files, strangers */
        stop = cb(full, arg) != 0;
    }
    closedir(d);
    return stop;
}

static cmk_err local_rec_list(cmk_backend *b, const char *prefix,
                              int (*cb)(const char *name, void *arg), void *arg, cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);
    const char *slash = strchr(prefix, '/'); /* "ns/..." checked by cmk_bk_rec_list */
    char ns[REL_MAX];
    struct dirent *de;
    size_t kl;
    DIR *d;
    int fd, stop = 0;
    cmk_err rc;

    if ((size_t)(slash - prefix) >= sizeof(ns))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "namespace too long in '%.300s'", prefix);
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - prefix), prefix);
    rc = cmk_bk_rec_name_check(ns, eb);
    if (rc == CMK_OK)
        rc = cmk_opendir_at(l->dirfd, l->dir, ns, &fd, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        return CMK_OK;
    }
    if (rc != CMK_OK)
        return rc;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read %s/%s", l->dir, ns);
    }
    kl = strlen(slash + 1);
    while (!stop && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 2 || de->d_name[0] == '.' ||
            strncmp(de->d_name, slash + 1, kl < 2 ? kl : 2) != 0)
            continue;
        stop = list_sub(l, ns, de->d_name, slash + 1, cb, arg);
    }
    closedir(d);
    return CMK_OK;
}

/* ---- the cross-process locks: <dir>/lock, <dir>/<name>/lock ---- */

static cmk_err local_lock(cmk_backend *b, const char *name, unsigned flags, cmk_bk_lock **out,
                          cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);
    cmk_bk_lock *lk;
    char rel[CMK_REC_NAME_MAX + 8];
    cmk_err rc;

    *out = NULL;
    rc = cmk_bk_rec_name_check(name, eb);
    if (rc == CMK_OK && strchr(name, '/'))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad lock name '%s'", name);
    if (rc != CMK_OK)
        return rc;
    snprintf(rel, sizeof(rel), strcmp(name, CMK_BK_LOCK_STORE) == 0 ? "lock" : "%s/lock", name);
    lk = malloc(sizeof(*lk));
    if (!lk)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (lock)");
    rc = cmk_lock_at(l->dirfd, l->dir, rel, !!(flags & CMK_BK_EXCLUSIVE), !(flags & CMK_BK_NOWAIT),
                     &lk->fd, eb);
    if (rc != CMK_OK) {
        free(lk);
        return rc;
    }
    *out = lk;
    return CMK_OK;
}

static void local_unlock(cmk_bk_lock *lk)
{
    if (lk) {
        cmk_unlock(lk->fd);
        free(lk);
    }
}

/* ---- the event log ---- */

static cmk_err local_log_append(cmk_backend *b, const char *log, const char *line, size_t len,
                                cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);
    char shown[sizeof(l->dir) + CMK_REC_NAME_MAX + 2];
    cmk_err rc = cmk_bk_rec_name_check(log, eb);
    int fd;

    if (rc == CMK_OK && strchr(log, '/'))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad log name '%s'", log);
    if (rc != CMK_OK)
        return rc;
    /* O_NONBLOCK: a FIFO planted under the name must not hang the writer. */
    fd = cmk_openat_nofollow(l->dirfd, log, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK, 0600);
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open the log", l->dir, log);
    snprintf(shown, sizeof(shown), "%s/%s", l->dir, log);
    rc = cmk_append_fd(fd, line, len, shown, eb);
    close(fd);
    return rc;
}

/* Reads the log from the byte offset in *cursor on; whole lines only. */
static cmk_err local_log_read(cmk_backend *b, const char *log, char *cursor, size_t cap,
                              int (*cb)(const char *line, size_t len, void *arg), void *arg,
                              cmk_errbuf *eb)
{
    cmk_local_bk *l = cmk_local_of(b);
    char chunk[65536], *end = NULL;
    unsigned long long off = cursor[0] ? strtoull(cursor, &end, 10) : 0;
    size_t have = 0, start;
    char *buf = NULL;
    cmk_err rc = cmk_bk_rec_name_check(log, eb);
    int fd, stop = 0;

    if (rc == CMK_OK && (strchr(log, '/') || (end && *end != '\0')))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad log name or cursor");
    if (rc != CMK_OK)
        return rc;
    fd = cmk_openat_nofollow(l->dirfd, log, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open the log", l->dir, log);
    for (;;) {
        ssize_t r = pread(fd, chunk, sizeof(chunk), (off_t)(off + have));
        char *nb;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read %s/%s", l->dir, log);
            break;
        }
        if (r == 0)
            break;
        nb = realloc(buf, have + (size_t)r);
        if (!nb) {
            rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (log)");
            break;
        }
        buf = nb;
        memcpy(buf + have, chunk, (size_t)r);
        have += (size_t)r;
    }
    close(fd);
    start = 0;
    for (size_t i = 0; rc == CMK_OK && !stop && i < have; i++) {
        if (buf[i] != '\n')
            continue;
        if (i > start)
            stop = cb(buf + start, i - start, arg);
        start = i + 1;
    }
    if (rc == CMK_OK)
        snprintf(cursor, cap, "%llu", off + start);
    free(buf);
    return rc;
}

const cmk_backend_ops cmk_local_ops = {
    .size = sizeof(cmk_backend_ops),
    .name = "local",
    .caps = CMK_BK_LOCK,
    .close = cmk_local_close,
    .blobs_open = cmk_local_blobs_open_op,
    .rec_get = local_rec_get,
    .rec_put = local_rec_put,
    .rec_delete = local_rec_delete,
    .rec_list = local_rec_list,
    .log_append = local_log_append,
    .lock = local_lock,
    .unlock = local_unlock,
    .log_read = local_log_read,
};
