/* fsutil.c — durable file-system primitives. */
#define _GNU_SOURCE
#include "core/base/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/base/secmem.h"

cmk_err cmk_path(char *out, size_t cap, cmk_errbuf *eb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "path too long (limit %zu bytes)", cap - 1);
    return CMK_OK;
}

cmk_err cmk_mkdir_p(const char *dir, mode_t mode, cmk_errbuf *eb)
{
    char buf[4096];
    size_t n = strlen(dir);

    if (n == 0 || n >= sizeof(buf))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad directory path '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", buf);
    return CMK_OK;
}

cmk_err cmk_fsync_dir(const char *dir, cmk_errbuf *eb)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cmk_err rc = CMK_OK;

    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open directory %s",
                              dir);
    if (fsync(fd) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync directory %s", dir);
    close(fd);
    return rc;
}

cmk_err cmk_fsync_parent(const char *path, cmk_errbuf *eb)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n;

    if (!slash)
        return cmk_fsync_dir(".", eb);
    n = (size_t)(slash - path);
    if (n == 0)
        return cmk_fsync_dir("/", eb);
    if (n >= sizeof(dir))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "path too long");
    memcpy(dir, path, n);
    dir[n] = '\0';
    return cmk_fsync_dir(dir, eb);
}

cmk_err cmk_pwrite_all(int fd, const void *buf, size_t len, off_t off, const char *what,
                       cmk_errbuf *eb)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot write %s", what);
        }
        p += w;
        len -= (size_t)w;
        off += w;
    }
    return CMK_OK;
}

cmk_err cmk_pread_all(int fd, void *buf, size_t len, off_t off, const char *what, cmk_errbuf *eb)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read %s", what);
        }
        if (r == 0)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is truncated", what);
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return CMK_OK;
}

cmk_err cmk_write_file_in(int pfd, const char *dir, const char *base, const void *data, size_t len,
                          mode_t mode, struct stat *st, cmk_errbuf *eb)
{
    char tmp[512], rnd[17];
    int fd = -1;
    cmk_err rc;

    rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(tmp, sizeof(tmp), eb, "%s.tmp-%s", base, rnd);
    if (rc != CMK_OK)
        return rc;
    fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "create", dir, tmp);
    rc = cmk_pwrite_all(fd, data, len, 0, tmp, eb);
    if (rc != CMK_OK)
        goto out;
    if (fsync(fd) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync %s/%s", dir, tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot close %s/%s", dir, tmp);
        goto out;
    }
    fd = -1;
    if (renameat(pfd, tmp, pfd, base) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot rename %s/%s into place", dir, base);
        goto out;
    }
    if (fsync(pfd) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync directory %s", dir);
    if (st && fstatat(pfd, base, st, AT_SYMLINK_NOFOLLOW) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot stat %s/%s", dir, base);
    return CMK_OK;
out:
    if (fd >= 0)
        close(fd);
    unlinkat(pfd, tmp, 0);
    return rc;
}

cmk_err cmk_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                              cmk_errbuf *eb)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    int pfd;
    cmk_err rc;

    if (n >= sizeof(dir))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "path too long");
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (n == 0)
        snprintf(dir, sizeof(dir), "/");
    else {
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open directory %s",
                              dir);
    rc = cmk_write_file_in(pfd, dir, slash ? slash + 1 : path, data, len, mode, NULL, eb);
    close(pfd);
    return rc;
}

cmk_err cmk_read_fd(int fd, const char *shown, size_t max, char **out, size_t *len,
                    struct stat *st_out, cmk_errbuf *eb)
{
    struct stat st;
    char *buf = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (fstat(fd, &st) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot stat %s", shown);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is not a regular file", shown);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is too large (%lld bytes, limit %zu)", shown,
                            (long long)st.st_size, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory reading %s", shown);
        goto out;
    }
    rc = cmk_pread_all(fd, buf, (size_t)st.st_size, 0, shown, eb);
    if (rc != CMK_OK) {
        cmk_cleanse(buf, (size_t)st.st_size); /* callers read private keys with it */
        goto out;
    }
    buf[st.st_size] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = (size_t)st.st_size;
    if (st_out)
        *st_out = st;
out:
    free(buf);
    close(fd);
    return rc;
}

cmk_err cmk_read_file(const char *path, size_t max, char **out, size_t *len, cmk_errbuf *eb)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    *out = NULL;
    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open %s", path);
    return cmk_read_fd(fd, path, max, out, len, NULL, eb);
}

cmk_err cmk_append_fd(int fd, const void *data, size_t len, const char *shown, cmk_errbuf *eb)
{
    struct stat st;
    ssize_t w;

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return cmk_errbuf_set(eb, CMK_E_REFUSED, "log %s is not a regular file: refused", shown);
    /* One write() of the whole line: O_APPEND makes concurrent writers' lines not interleave
     * for lines of this size on local file systems. */
    w = write(fd, data, len);
    if (w < 0 || (size_t)w != len)
        return cmk_errbuf_sys(eb, CMK_E_IO, w < 0 ? errno : EIO, "cannot append to log %s", shown);
    if (fdatasync(fd) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot sync log %s", shown);
    return CMK_OK;
}

/* Locks the open file fd (closed on failure) named shown in messages. */
static cmk_err lock_fd(int fd, const char *shown, int exclusive, int wait, int *fd_out,
                       cmk_errbuf *eb)
{
    int op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);

    while (flock(fd, op) != 0) {
        int e = errno;
        if (e == EINTR)
            continue;
        close(fd);
        if (e == EWOULDBLOCK)
            return cmk_errbuf_set(eb, CMK_E_BUSY, "%s is locked by another process; retry", shown);
        return cmk_errbuf_sys(eb, CMK_E_IO, e, "cannot lock %s", shown);
    }
    *fd_out = fd;
    return CMK_OK;
}

cmk_err cmk_lock(const char *path, int exclusive, int wait, int *fd_out, cmk_errbuf *eb)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    *fd_out = -1;
    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open lock %s", path);
    return lock_fd(fd, path, exclusive, wait, fd_out, eb);
}

void cmk_unlock(int fd)
{
    if (fd >= 0) {
        (void)flock(fd, LOCK_UN);
        close(fd);
    }
}

/* ---- inside a directory, never through a link ---- */

/* An open with O_DIRECTORY of a link answers ENOTDIR: say ELOOP, as for any other link. */
static int link_errno(int dirfd, const char *rel, int fd)
{
    struct stat st;
    int e = errno;

    if (fd < 0 && e == ENOTDIR && fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode))
        e = ELOOP;
    errno = e;
    return fd;
}

/* One component of the walk, never a link, never "..". */
static int open_comp(int cur, const char *comp, int flags, mode_t mode)
{
    if (strcmp(comp, "..") == 0) {
        errno = EXDEV;
        return -1;
    }
    return link_errno(cur, comp, openat(cur, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode));
}

int cmk_openat_walk(int dirfd, const char *rel, int flags, mode_t mode)
{
    char buf[4096];
    char *comp, *slash;
    int cur = dirfd, next, e;
    size_t n = strlen(rel);

    if (n == 0 || n >= sizeof(buf) || rel[0] == '/') {
        errno = n == 0 || rel[0] == '/' ? EXDEV : ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, rel, n + 1);
    for (comp = buf; (slash = strchr(comp, '/')) != NULL; comp = slash + 1) {
        *slash = '\0';
        next = open_comp(cur, comp, O_RDONLY | O_DIRECTORY, 0);
        e = errno;
        if (cur != dirfd)
            close(cur);
        if (next < 0) {
            errno = e;
            return -1;
        }
        cur = next;
    }
    next = open_comp(cur, comp, flags, mode);
    e = errno;
    if (cur != dirfd)
        close(cur);
    errno = e;
    return next;
}

int cmk_openat_nofollow(int dirfd, const char *rel, int flags, mode_t mode)
{
    static atomic_int no_openat2;

#ifdef SYS_openat2
    if (!atomic_load_explicit(&no_openat2, memory_order_relaxed)) {
        struct open_how how;
        long fd;

        memset(&how, 0, sizeof(how));
        how.flags = (uint64_t)(unsigned)(flags | O_NOFOLLOW | O_CLOEXEC);
        how.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0;
        how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH;
        fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM && errno != E2BIG))
            return link_errno(dirfd, rel, (int)fd);
        if (errno == ENOSYS)
            atomic_store_explicit(&no_openat2, 1, memory_order_relaxed);
    }
#else
    (void)no_openat2;
#endif
    return cmk_openat_walk(dirfd, rel, flags, mode);
}

cmk_err cmk_errbuf_open(cmk_errbuf *eb, int errnum, const char *what, const char *dir,
                        const char *rel)
{
    if (errnum == ELOOP || errnum == EXDEV)
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "%s/%s is a symbolic link or lies behind one: refused (cmkstore "
                              "never follows links inside this directory; it made none there. "
                              "Replace the link with the real file from a backup)",
                              dir, rel);
    return cmk_errbuf_sys(eb, cmk_err_from_errno(errnum), errnum, "cannot %s %s/%s", what, dir,
                          rel);
}

cmk_err cmk_read_file_at(int dirfd, const char *dir, const char *rel, size_t max, char **out,
                         size_t *len, cmk_errbuf *eb)
{
    char shown[4200];
    int fd;

    *out = NULL;
    /* O_NONBLOCK: a FIFO planted under the name must not hang the reader. */
    fd = cmk_openat_nofollow(dirfd, rel, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open", dir, rel);
    snprintf(shown, sizeof(shown), "%s/%s", dir, rel);
    return cmk_read_fd(fd, shown, max, out, len, NULL, eb);
}

/* Opens the parent directory of rel inside dirfd (a new fd even for a bare name); *base
 * points into rel at the last component. */
static int open_parent(int dirfd, const char *rel, const char **base)
{
    char buf[4096];
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;

    *base = slash ? slash + 1 : rel;
    if (!slash)
        return fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (n >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, rel, n);
    buf[n] = '\0';
    return cmk_openat_nofollow(dirfd, buf, O_RDONLY | O_DIRECTORY, 0);
}

cmk_err cmk_write_file_at(int dirfd, const char *dir, const char *rel, const void *data, size_t len,
                          mode_t mode, cmk_errbuf *eb)
{
    char shown[4200];
    const char *base;
    int pfd = open_parent(dirfd, rel, &base);
    cmk_err rc;

    if (pfd < 0)
        return cmk_errbuf_open(eb, errno, "open the directory of", dir, rel);
    snprintf(shown, sizeof(shown), "%s/%.*s", dir, (int)(base > rel ? base - rel - 1 : 0), rel);
    if (base == rel)
        snprintf(shown, sizeof(shown), "%s", dir);
    rc = cmk_write_file_in(pfd, shown, base, data, len, mode, NULL, eb);
    close(pfd);
    return rc;
}

cmk_err cmk_lock_at(int dirfd, const char *dir, const char *rel, int exclusive, int wait,
                    int *fd_out, cmk_errbuf *eb)
{
    char shown[4200];
    int fd = cmk_openat_nofollow(dirfd, rel, O_RDWR | O_CREAT | O_NONBLOCK, 0600);

    *fd_out = -1;
    if (fd < 0)
        return cmk_errbuf_open(eb, errno, "open the lock", dir, rel);
    snprintf(shown, sizeof(shown), "%s/%s", dir, rel);
    return lock_fd(fd, shown, exclusive, wait, fd_out, eb);
}

cmk_err cmk_opendir_at(int dirfd, const char *dir, const char *rel, int *fd, cmk_errbuf *eb)
{
    *fd = cmk_openat_nofollow(dirfd, rel, O_RDONLY | O_DIRECTORY, 0);
    return *fd >= 0 ? CMK_OK : cmk_errbuf_open(eb, errno, "open the directory", dir, rel);
}

cmk_err cmk_mkdir_at(int dirfd, const char *dir, const char *rel, mode_t mode, cmk_errbuf *eb)
{
    const char *base;
    int pfd = open_parent(dirfd, rel, &base);
    cmk_err rc = CMK_OK;

    if (pfd < 0)
        return cmk_errbuf_open(eb, errno, "open the directory of", dir, rel);
    if (mkdirat(pfd, base, mode) == 0) {
        if (fsync(pfd) != 0)
            rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync the directory of %s/%s", dir,
                                rel);
    } else if (errno != EEXIST) {
        rc = cmk_errbuf_open(eb, errno, "create", dir, rel);
    }
    close(pfd);
    return rc;
}

cmk_err cmk_fsync_dir_at(int dirfd, const char *dir, const char *rel, cmk_errbuf *eb)
{
    int fd;
    cmk_err rc = cmk_opendir_at(dirfd, dir, rel, &fd, eb);

    if (rc != CMK_OK)
        return rc;
    if (fsync(fd) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync directory %s/%s", dir, rel);
    close(fd);
    return rc;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

cmk_err cmk_rm_rf(const char *path, cmk_errbuf *eb)
{
    if (!cmk_exists(path))
        return CMK_OK;
    if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot remove %s", path);
    return CMK_OK;
}

int cmk_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}
