/*
 * fsutil.h — durable file-system primitives shared by the store, the keyring and the vault.
 *
 * "Durable" here means: data fsync'd, renamed into place, and the directory fsync'd, so a
 * crash at any point leaves either the old file or the new one, never a mix.
 */
#ifndef CMK_FSUTIL_H
#define CMK_FSUTIL_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "core/base/error.h"

/* snprintf into out; CMK_E_INVAL "path too long" if it does not fit. */
CMK_MUST_CHECK cmk_err cmk_path(char *out, size_t cap, cmk_errbuf *eb, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Creates dir and its missing parents with mode (existing ones are left as they are). */
CMK_MUST_CHECK cmk_err cmk_mkdir_p(const char *dir, mode_t mode, cmk_errbuf *eb);

/* fsyncs a directory (after a rename, create or unlink in it). */
CMK_MUST_CHECK cmk_err cmk_fsync_dir(const char *dir, cmk_errbuf *eb);
/* fsyncs the directory containing path. */
CMK_MUST_CHECK cmk_err cmk_fsync_parent(const char *path, cmk_errbuf *eb);

/* Writes len bytes to path atomically and durably with the given mode (0600 for anything
 * secret): temp file beside it, write, fsync, rename, fsync directory. */
CMK_MUST_CHECK cmk_err cmk_write_file_atomic(const char *path, const void *data, size_t len,
                                             mode_t mode, cmk_errbuf *eb);

/* Writes base inside the open directory pfd atomically and durably: a temporary
 * "<base>.tmp-<16 hex>" beside it (O_EXCL, never through a link), write, fsync, rename,
 * fsync the directory. dir names pfd in messages; st (may be NULL) receives the stat of the
 * file in place after the rename. */
CMK_MUST_CHECK cmk_err cmk_write_file_in(int pfd, const char *dir, const char *base,
                                         const void *data, size_t len, mode_t mode, struct stat *st,
                                         cmk_errbuf *eb);

/* Reads the open file fd (closed here, whatever happens), named shown in messages: a regular
 * file of at most max bytes into a malloc'd, NUL-terminated *out (CMK_E_CORRUPT if it is not
 * a regular file, is larger or is cut short); st (may be NULL) receives its fstat. Bytes read
 * before a failure are zeroed before they are freed (the file may hold a key). */
CMK_MUST_CHECK cmk_err cmk_read_fd(int fd, const char *shown, size_t max, char **out, size_t *len,
                                   struct stat *st, cmk_errbuf *eb);

/* Appends len bytes to the open file fd (O_APPEND; not closed here) in one write, then
 * fdatasyncs it; CMK_E_REFUSED if fd is not a regular file (a FIFO planted as a log). */
CMK_MUST_CHECK cmk_err cmk_append_fd(int fd, const void *data, size_t len, const char *shown,
                                     cmk_errbuf *eb);

/* Reads a whole file of at most max bytes into a malloc'd, NUL-terminated buffer. The caller
 * frees *out. CMK_E_NOT_FOUND if it does not exist; CMK_E_CORRUPT if larger than max. */
CMK_MUST_CHECK cmk_err cmk_read_file(const char *path, size_t max, char **out, size_t *len,
                                     cmk_errbuf *eb);

/* Writes all len bytes at offset (retrying short writes and EINTR). */
CMK_MUST_CHECK cmk_err cmk_pwrite_all(int fd, const void *buf, size_t len, off_t off,
                                      const char *what, cmk_errbuf *eb);
/* Reads exactly len bytes at offset; CMK_E_CORRUPT "truncated" on a short file. */
CMK_MUST_CHECK cmk_err cmk_pread_all(int fd, void *buf, size_t len, off_t off, const char *what,
                                     cmk_errbuf *eb);

/* Takes an advisory lock (flock) on path, creating it 0600; *fd_out receives the fd to pass
 * to cmk_unlock. Blocks if wait, else CMK_E_BUSY when held by another process. */
CMK_MUST_CHECK cmk_err cmk_lock(const char *path, int exclusive, int wait, int *fd_out,
                                cmk_errbuf *eb);
void cmk_unlock(int fd);

/* ---- files inside a directory that may hold links planted by whoever can write it -------
 * (the store's files: see "What a store writer can do" in README.md). rel is a relative
 * path ("keyring.json", "meta/ab/<hex>"); no component of it may be a symbolic link (nor
 * "..") and the open fails with ELOOP (EXDEV / ELOOP from the walk) if one is. `dir` is
 * the directory's path, used in messages only. */

/* openat(dirfd, rel, flags | O_NOFOLLOW | O_CLOEXEC, mode) that refuses a symbolic link
 * in any component: openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH) where the kernel has
 * it, else a walk of O_NOFOLLOW opens. Returns the fd, or -1 with errno. */
int cmk_openat_nofollow(int dirfd, const char *rel, int flags, mode_t mode);
/* The walk alone (kernels without openat2, or a sandbox that refuses it; and tests): one
 * openat(O_NOFOLLOW | O_DIRECTORY) per directory component, ".." refused (EXDEV). */
int cmk_openat_walk(int dirfd, const char *rel, int flags, mode_t mode);
/* Sets eb for a failed open of dir/rel: a link is CMK_E_REFUSED "... is a symbolic link
 * ...", anything else as cmk_errbuf_sys with what ("open", "create"). */
cmk_err cmk_errbuf_open(cmk_errbuf *eb, int errnum, const char *what, const char *dir,
                        const char *rel);
/* The same operations as above, on dir/rel. */
CMK_MUST_CHECK cmk_err cmk_read_file_at(int dirfd, const char *dir, const char *rel, size_t max,
                                        char **out, size_t *len, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_write_file_at(int dirfd, const char *dir, const char *rel,
                                         const void *data, size_t len, mode_t mode, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_lock_at(int dirfd, const char *dir, const char *rel, int exclusive,
                                   int wait, int *fd_out, cmk_errbuf *eb);
/* Opens the directory dir/rel (no link in any component); the caller closes *fd. */
CMK_MUST_CHECK cmk_err cmk_opendir_at(int dirfd, const char *dir, const char *rel, int *fd,
                                      cmk_errbuf *eb);
/* Creates the directory dir/rel (its parent must exist) and makes the entry durable;
 * an existing directory is fine. */
CMK_MUST_CHECK cmk_err cmk_mkdir_at(int dirfd, const char *dir, const char *rel, mode_t mode,
                                    cmk_errbuf *eb);
/* fsyncs the directory dir/rel. */
CMK_MUST_CHECK cmk_err cmk_fsync_dir_at(int dirfd, const char *dir, const char *rel,
                                        cmk_errbuf *eb);

/* Removes a directory tree (for purge). Missing is not an error. */
CMK_MUST_CHECK cmk_err cmk_rm_rf(const char *path, cmk_errbuf *eb);

/* 1 if path exists (any type), 0 otherwise. */
int cmk_exists(const char *path);

#endif
