/*
 * io.h — the file I/O engine: io_uring (liburing) with a portable pread/pwrite fallback behind
 * one small API.
 *
 * Model: queue requests (read, write, fsync), submit them in one batch, reap completions.
 * Each request carries a caller tag returned with its completion. Requests complete in any
 * order; a caller that needs ordering (fsync after writes) waits for the earlier ones first,
 * or uses cmk_io_fsync with drain=1 (IOSQE_IO_DRAIN on io_uring).
 *
 * Short transfers are finished inside the engine: a completion reports the full length or a
 * negative errno. The one exception is a read that reaches end of file: it completes with
 * the count read before the end.
 *
 * Engine choice: CMK_IO_AUTO tries io_uring and falls back to the sync engine when the ring
 * cannot be set up (ENOSYS on old kernels, EPERM under seccomp profiles of container
 * runtimes, ENOMEM under a small RLIMIT_MEMLOCK on old kernels); the environment variable
 * CMKSTORE_IO=sync|uring forces one for AUTO.
 *
 * Thread-safety: an engine is not thread-safe; use one per thread or per stream. It may be
 * handed from one thread to another between calls.
 */
#ifndef CMK_IO_H
#define CMK_IO_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

typedef enum cmk_io_kind { CMK_IO_AUTO = 0, CMK_IO_URING, CMK_IO_SYNC } cmk_io_kind;

typedef struct cmk_io cmk_io;

typedef struct cmk_io_cqe {
    uint64_t tag;
    int64_t res; /* bytes transferred (the full request) or -errno; 0 for fsync */
} cmk_io_cqe;

/* Parses "auto" / "uring" / "sync" (NULL: auto); -1 if unknown. */
int cmk_io_kind_parse(const char *s);

/* Creates an engine able to hold `depth` requests in flight (1..4096). CMK_E_UNSUPPORTED if
 * CMK_IO_URING was asked for and the kernel refuses it (the message says why). */
CMK_MUST_CHECK cmk_err cmk_io_create(cmk_io_kind kind, unsigned depth, cmk_io **out,
                                     cmk_errbuf *eb);
/* Waits for outstanding requests, then frees. NULL is a no-op. */
void cmk_io_free(cmk_io *io);
/* "io_uring" or "sync". */
const char *cmk_io_name(const cmk_io *io);
cmk_io_kind cmk_io_kind_of(const cmk_io *io);
unsigned cmk_io_depth(const cmk_io *io);
/* Why CMK_IO_AUTO settled for the sync engine (e.g. "io_uring_setup refused with EPERM ...");
 * "" when it did not fall back (io_uring in use, or sync asked for explicitly). */
const char *cmk_io_fallback_reason(const cmk_io *io);

/* Queue requests. CMK_E_BUSY if `depth` requests are already queued or in flight: reap
 * first. Buffers must stay valid until their completion is reaped. */
CMK_MUST_CHECK cmk_err cmk_io_queue_write(cmk_io *io, int fd, const void *buf, size_t len,
                                          uint64_t off, uint64_t tag, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_io_queue_read(cmk_io *io, int fd, void *buf, size_t len, uint64_t off,
                                         uint64_t tag, cmk_errbuf *eb);
/* A read of a range that was not in the page cache when the caller started reading it in
 * order. Both engines make it a blocking read at submit, on the caller's thread, behind the
 * kernel's readahead: buffered reads through the ring that find the pages still coming
 * measured slower for cold gets (bench/RESULTS.md). Completes as cmk_io_queue_read does. */
CMK_MUST_CHECK cmk_err cmk_io_queue_read_cold(cmk_io *io, int fd, void *buf, size_t len,
                                              uint64_t off, uint64_t tag, cmk_errbuf *eb);
/* drain: start only after every earlier request of this engine has completed.
 * datasync: fdatasync semantics. */
CMK_MUST_CHECK cmk_err cmk_io_queue_fsync(cmk_io *io, int fd, int datasync, int drain, uint64_t tag,
                                          cmk_errbuf *eb);
/* Starts writeback of [off, off+len) of fd (sync_file_range SYNC_FILE_RANGE_WRITE): a hint
 * that lets the disk work while more data is produced, so a later fsync has less to wait
 * for. It makes nothing durable by itself. Completes with 0 or -errno. */
CMK_MUST_CHECK cmk_err cmk_io_queue_writeback(cmk_io *io, int fd, uint64_t off, uint64_t len,
                                              uint64_t tag, cmk_errbuf *eb);

/* Submits everything queued. The sync engine performs the requests here. */
CMK_MUST_CHECK cmk_err cmk_io_submit(cmk_io *io, cmk_errbuf *eb);

/* Reaps at least min_wait (at most max) completions into out; returns the count, or a
 * negative errno on an engine failure. min_wait must not exceed cmk_io_pending().
 * Requests still queued are submitted first when min_wait needs them; on io_uring that
 * happens in the same system call as the wait (queue + reap: one call per batch). */
int cmk_io_reap(cmk_io *io, cmk_io_cqe *out, unsigned max, unsigned min_wait);

/* Requests queued or in flight and not yet reaped. */
unsigned cmk_io_pending(const cmk_io *io);

/* ---- synchronous conveniences (any pending requests must have been reaped first). Reads,
 * writes and fsyncs are made directly with the system call on either engine: for one
 * request a ring only adds a round trip (and, for a buffered write ext4 cannot do without
 * blocking, a hop to a worker thread); renames go through the engine. ---- */
CMK_MUST_CHECK cmk_err cmk_io_pwrite(cmk_io *io, int fd, const void *buf, size_t len, uint64_t off,
                                     const char *what, cmk_errbuf *eb);
/* Reads exactly len bytes; CMK_E_CORRUPT "<what> is truncated" at end of file. */
CMK_MUST_CHECK cmk_err cmk_io_pread(cmk_io *io, int fd, void *buf, size_t len, uint64_t off,
                                    const char *what, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_io_fsync(cmk_io *io, int fd, const char *what, cmk_errbuf *eb);
/* Makes n files (or directories) durable together. On io_uring: starts writeback of all of
 * them, then fsyncs them all, spreading the requests over the nio engines (each up to its
 * depth) so that they are in flight together and the file system and the disk can fold
 * their work; the sync engine runs the fsyncs on up to 16 threads at once; a single fsync
 * is made directly. errs[i] receives 0 or the errno of fds[i]. Every engine must have
 * nothing pending. Returns CMK_OK when every fsync was attempted (check errs), or an engine
 * failure. */
CMK_MUST_CHECK cmk_err cmk_io_fsync_many(cmk_io *const *ios, size_t nio, const int *fds, size_t n,
                                         int *errs, cmk_errbuf *eb);
/* rename(2) relative to directory fds (IORING_OP_RENAMEAT where the kernel has it). */
CMK_MUST_CHECK cmk_err cmk_io_renameat(cmk_io *io, int olddirfd, const char *oldpath, int newdirfd,
                                       const char *newpath, cmk_errbuf *eb);

/* ---- internal: the interface between io.c and an engine (io_uring.c); not for callers ---- */

typedef enum cmk_io_op {
    CMK_IO_OP_READ,
    CMK_IO_OP_WRITE,
    CMK_IO_OP_FSYNC,
    CMK_IO_OP_RENAME,
    CMK_IO_OP_WRITEBACK /* sync_file_range(SYNC_FILE_RANGE_WRITE) of [off, off+len) */
} cmk_io_op;

/* How a READ is made; the sync engine makes both the same way. */
typedef enum cmk_io_read_mode {
    CMK_IO_READ_RING = 0, /* io_uring: through the ring (cmk_io_queue_read) */
    CMK_IO_READ_COLD      /* a plain blocking call at submit (cmk_io_queue_read_cold) */
} cmk_io_read_mode;

/* One validated request. RENAME: fd/fd2 are the directory fds, path/path2 the names (valid
 * until the completion is reaped). */
typedef struct cmk_io_req {
    cmk_io_op op;
    int fd, fd2;
    void *buf;
    size_t len;
    uint64_t off;
    const char *path, *path2;
    uint64_t tag;
    int datasync, drain;
    cmk_io_read_mode mode; /* READ only */
} cmk_io_req;

/* An engine. io.c does the argument checks and the depth accounting: queue is never called
 * with `depth` requests outstanding, reap never asked for more than are outstanding. */
typedef struct cmk_io_engine {
    const char *name;
    cmk_io_kind kind;
    /* On failure *sys_errno receives the errno the kernel refused with (0 if none). */
    cmk_err (*create)(unsigned depth, void **state, int *sys_errno, cmk_errbuf *eb);
    /* Drops requests queued but not submitted, waits for submitted ones, frees. */
    void (*destroy)(void *state);
    cmk_err (*queue)(void *state, const cmk_io_req *rq, cmk_errbuf *eb);
    /* wait_nr > 0: the caller will wait for that many completions next (lets the engine
     * submit and wait in one system call). */
    cmk_err (*submit)(void *state, unsigned wait_nr, cmk_errbuf *eb);
    int (*reap)(void *state, cmk_io_cqe *out, unsigned max, unsigned min_wait);
} cmk_io_engine;

/* Performs one request with plain system calls, retrying EINTR: the bytes transferred
 * (READ may stop short at end of file) or 0, else -errno. The sync engine's way, and an
 * engine's fallback for an operation it cannot hand to the kernel. */
int64_t cmk_io_perform_sync(const cmk_io_req *rq);

#ifdef CMK_HAVE_URING
extern const cmk_io_engine cmk_io_uring_engine;
#endif

#endif
