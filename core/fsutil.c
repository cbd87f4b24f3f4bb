/* fsutil.c — durable file-system primitives. */
#define _GNU_SOURCE
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secmem.h"

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

cmk_err cmk_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                              cmk_errbuf *eb)
{
    char tmp[4096 + 32], rnd[17];
    int fd = -1;
    cmk_err rc;

    rc = cmk_random_hex(rnd, 8, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_path(tmp, sizeof(tmp), eb, "%s.tmp-%s", path, rnd);
    if (rc != CMK_OK)
        return rc;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", tmp);
    rc = cmk_pwrite_all(fd, data, len, 0, tmp, eb);
    if (rc != CMK_OK)
        goto out;
    if (fsync(fd) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync %s", tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot close %s", tmp);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot rename %s into place", path);
        goto out;
    }
    rc = cmk_fsync_parent(path, eb);
    return rc;
out:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

cmk_err cmk_read_file(const char *path, size_t max, char **out, size_t *len, cmk_errbuf *eb)
{
    struct stat st;
    char *buf = NULL;
    int fd;
    cmk_err rc = CMK_OK;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open %s", path);
    if (fstat(fd, &st) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot stat %s", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is too large (%lld bytes, limit %zu)", path,
                            (long long)st.st_size, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory reading %s", path);
        goto out;
    }
    rc = cmk_pread_all(fd, buf, (size_t)st.st_size, 0, path, eb);
    if (rc != CMK_OK)
        goto out;
    buf[st.st_size] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = (size_t)st.st_size;
out:
    free(buf);
    close(fd);
    return rc;
}

cmk_err cmk_lock(const char *path, int exclusive, int wait, int *fd_out, cmk_errbuf *eb)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);

    *fd_out = -1;
    if (fd < 0)
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot open lock %s", path);
    while (flock(fd, op) != 0) {
        int e = errno;
        if (e == EINTR)
            continue;
        close(fd);
        if (e == EWOULDBLOCK)
            return cmk_errbuf_set(eb, CMK_E_BUSY, "%s is locked by another process; retry", path);
        return cmk_errbuf_sys(eb, CMK_E_IO, e, "cannot lock %s", path);
    }
    *fd_out = fd;
    return CMK_OK;
}

void cmk_unlock(int fd)
{
    if (fd >= 0) {
        (void)flock(fd, LOCK_UN);
        close(fd);
    }
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
