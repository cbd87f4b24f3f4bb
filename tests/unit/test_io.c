/* test_io.c — the I/O engines: the same body runs on the sync engine and on io_uring. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef CMK_HAVE_URING
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "tests/check.h"
#include "core/base/fsutil.h"
#include "io/io.h"

/* Expects a cmk_err from an internal function; prints the errbuf on mismatch. */
#define CHECK_EB(expr, want, eb)                                                                   \
    do {                                                                                           \
        cmk_err ceb_rc_ = (expr);                                                                  \
        CHECK_MSG(ceb_rc_ == (want), "%s (want %s): %s", cmk_errname(ceb_rc_), cmk_errname(want),  \
                  (eb)->msg);                                                                      \
    } while (0)

#define MiB (1024u * 1024u)

static const char *kind_name(cmk_io_kind k)
{
    return k == CMK_IO_URING ? "io_uring" : k == CMK_IO_SYNC ? "sync" : "auto";
}

static cmk_io *make_io(cmk_io_kind kind, unsigned depth)
{
    cmk_errbuf eb = {0};
    cmk_io *io = NULL;
    cmk_err rc = cmk_io_create(kind, depth, &io, &eb);

    CHECK_MSG(rc == CMK_OK, "create %s depth %u: %s", kind_name(kind), depth, eb.msg);
    if (io)
        CHECK(cmk_io_kind_of(io) == kind);
    return io;
}

static int open_in(const char *dir, const char *name, int flags)
{
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, flags | O_CLOEXEC, 0600);
    CHECK_MSG(fd >= 0, "open %s: %s", path, strerror(errno));
    return fd;
}

/* Reaps exactly n completions, in at most n calls of varying batch size. */
static unsigned reap_n(cmk_io *io, cmk_io_cqe *out, unsigned n)
{
    unsigned got = 0;

    while (got < n) {
        int r = cmk_io_reap(io, out + got, n - got, 1);

        if (r < 1) {
            fprintf(stderr, "reap returned %d\n", r);
            break;
        }
        got += (unsigned)r;
    }
    return got;
}

/* Moves total bytes in piece-sized requests, queueing until CMK_E_BUSY, then submitting and
 * reaping, as a streaming caller does. Returns how often the queue pushed back, or -1. */
static int pipelined(cmk_io *io, int fd, int write, unsigned char *buf, size_t total, size_t piece,
                     int64_t *res_by_tag)
{
    unsigned nreq = (unsigned)((total + piece - 1) / piece), next = 0;
    cmk_errbuf eb = {0};
    cmk_io_cqe c[8];
    int busy = 0;

    while (next < nreq || cmk_io_pending(io) > 0) {
        if (next < nreq) {
            size_t len =
                total - (size_t)next * piece < piece ? total - (size_t)next * piece : piece;
            uint64_t off = (uint64_t)next * piece;
            cmk_err rc = write ? cmk_io_queue_write(io, fd, buf + off, len, off, next, &eb)
                               : cmk_io_queue_read(io, fd, buf + off, len, off, next, &eb);

            if (rc == CMK_OK) {
                next++;
                continue;
            }
            if (rc != CMK_E_BUSY) {
                fprintf(stderr, "queue: %s: %s\n", cmk_errname(rc), eb.msg);
                return -1;
            }
            busy++;
        }
        if (cmk_io_submit(io, &eb) != CMK_OK) {
            fprintf(stderr, "submit: %s\n", eb.msg);
            return -1;
        }
        int n = cmk_io_reap(io, c, 8, 1);
        if (n < 1) {
            fprintf(stderr, "reap: %d\n", n);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (c[i].tag < nreq)
                res_by_tag[c[i].tag] = c[i].res;
    }
    return busy;
}

/* ---- the shared test body ---- */

/* Many writes in flight at scattered offsets, completions in any order, read back. */
static void t_many_inflight(cmk_io_kind kind, const char *dir)
{
    enum { N = 64 };
    cmk_io *io = make_io(kind, N);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[N];
    unsigned char *src = malloc((size_t)N * 8192), *dst = calloc((size_t)N, 8192);
    int seen[N] = {0};
    int fd = open_in(dir, "many", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(io && src && dst && fd >= 0);
    test_fill_random(src, (size_t)N * 8192, 1);
    /* Reverse order and ragged lengths: nothing depends on sequential writes. */
    for (int i = N - 1; i >= 0; i--)
        CHECK_EB(cmk_io_queue_write(io, fd, src + i * 8192, 4096 + (size_t)i * 61,
                                    (uint64_t)i * 8192, 1000 + (uint64_t)i, &eb),
                 CMK_OK, &eb);
    CHECK(cmk_io_pending(io) == N);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, N) == N);
    for (int i = 0; i < N; i++) {
        uint64_t t = c[i].tag - 1000;
        CHECK(t < N && !seen[t]);
        if (t >= N)
            continue;
        seen[t] = 1;
        CHECK_MSG(c[i].res == 4096 + (int64_t)t * 61, "tag %llu res %lld", (unsigned long long)t,
                  (long long)c[i].res);
    }
    CHECK(cmk_io_pending(io) == 0);
    for (int i = 0; i < N; i++)
        CHECK_EB(cmk_io_queue_read(io, fd, dst + i * 8192, 4096 + (size_t)i * 61,
                                   (uint64_t)i * 8192, (uint64_t)i, &eb),
                 CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, N) == N);
    for (int i = 0; i < N; i++)
        CHECK(c[i].res == 4096 + (int64_t)c[i].tag * 61);
    for (int i = 0; i < N; i++)
        CHECK_MSG(memcmp(src + i * 8192, dst + i * 8192, 4096 + (size_t)i * 61) == 0,
                  "%s: request %d read back differs", kind_name(kind), i);
    close(fd);
    cmk_io_free(io);
    free(src);
    free(dst);
}

/* 64 MiB through many 1 MiB requests (queue until busy, reap, go on), and in one request. */
static void t_large(cmk_io_kind kind, const char *dir)
{
    const size_t total = 64 * MiB;
    unsigned char *src = malloc(total), *dst = malloc(total);
    int64_t res[64];
    cmk_io *io = make_io(kind, 8);
    cmk_errbuf eb = {0};
    int fd = open_in(dir, "large", O_RDWR | O_CREAT | O_TRUNC);
    int busy, ok = 1;

    REQUIRE(src && dst && io && fd >= 0);
    test_fill_random(src, total, 7);
    for (int i = 0; i < 64; i++)
        res[i] = -1;
    busy = pipelined(io, fd, 1, src, total, MiB, res);
    CHECK(busy > 0); /* depth 8 for 64 requests: the queue must have pushed back */
    for (int i = 0; i < 64; i++)
        ok &= res[i] == (int64_t)MiB;
    CHECK_MSG(ok, "%s: a 1 MiB write did not complete in full", kind_name(kind));
    memset(dst, 0, total);
    for (int i = 0; i < 64; i++)
        res[i] = -1;
    CHECK(pipelined(io, fd, 0, dst, total, MiB, res) > 0);
    ok = 1;
    for (int i = 0; i < 64; i++)
        ok &= res[i] == (int64_t)MiB;
    CHECK(ok);
    CHECK_MSG(memcmp(src, dst, total) == 0, "%s: 64 MiB read back differs", kind_name(kind));

    /* One request for the whole 64 MiB each way, through the conveniences. */
    test_fill_random(src, total, 8);
    CHECK_EB(cmk_io_pwrite(io, fd, src, total, 4096, "large file", &eb), CMK_OK, &eb);
    memset(dst, 0, total);
    CHECK_EB(cmk_io_pread(io, fd, dst, total, 4096, "large file", &eb), CMK_OK, &eb);
    CHECK(memcmp(src, dst, total) == 0);
    CHECK_EB(cmk_io_fsync(io, fd, "large file", &eb), CMK_OK, &eb);
    close(fd);
    cmk_io_free(io);
    free(src);
    free(dst);
}

/* Reads at and past end of file complete with the count read. */
static void t_eof(cmk_io_kind kind, const char *dir)
{
    unsigned char data[10000], buf[16384];
    cmk_io *io = make_io(kind, 8);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[8];
    int64_t res[8];
    int fd = open_in(dir, "eof", O_RDWR | O_CREAT | O_TRUNC);
    int efd = open_in(dir, "empty", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(io && fd >= 0 && efd >= 0);
    test_fill_random(data, sizeof(data), 3);
    CHECK_EB(cmk_io_pwrite(io, fd, data, sizeof(data), 0, "eof file", &eb), CMK_OK, &eb);
    /* Spanning the end (the engine retries the short read and meets EOF), past it, at it,
     * the empty file, and a zero-length read. */
    CHECK_EB(cmk_io_queue_read(io, fd, buf, 8192, 8000, 0, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, fd, buf + 8192, 100, 20000, 1, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, fd, buf + 8192, 100, 10000, 2, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, efd, buf + 8192, 4096, 0, 3, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, fd, buf + 8192, 0, 0, 4, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, 5) == 5);
    for (int i = 0; i < 5; i++)
        if (c[i].tag < 5)
            res[c[i].tag] = c[i].res;
    CHECK_MSG(res[0] == 2000, "%s: read across EOF gave %lld", kind_name(kind), (long long)res[0]);
    CHECK(memcmp(buf, data + 8000, 2000) == 0);
    CHECK(res[1] == 0);
    CHECK(res[2] == 0);
    CHECK(res[3] == 0);
    CHECK(res[4] == 0);
    /* The exact-read convenience calls a short file truncated. */
    CHECK_EB(cmk_io_pread(io, fd, buf, 4096, 8000, "blob header", &eb), CMK_E_CORRUPT, &eb);
    CHECK(strstr(eb.msg, "blob header is truncated") != NULL);
    CHECK_EB(cmk_io_pread(io, efd, buf, 1, 0, "empty", &eb), CMK_E_CORRUPT, &eb);
    CHECK_EB(cmk_io_pread(io, efd, buf, 0, 0, "empty", &eb), CMK_OK, &eb);
    close(fd);
    close(efd);
    cmk_io_free(io);
}

/* A drained fsync queued behind writes in the same batch completes after all of them. */
static void t_fsync_drain(cmk_io_kind kind, const char *dir)
{
    enum { W = 12 };
    unsigned char *src = malloc((size_t)W * 65536), *dst = malloc((size_t)W * 65536);
    cmk_io *io = make_io(kind, 16);
    cmk_errbuf eb = {0};
    cmk_io_cqe c;
    int fd = open_in(dir, "drain", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(src && dst && io && fd >= 0);
    test_fill_random(src, (size_t)W * 65536, 11);
    for (int round = 0; round < 2; round++) {
        unsigned writes_done = 0, order_ok = 1, all_ok = 1;

        for (int i = 0; i < W; i++)
            CHECK_EB(cmk_io_queue_write(io, fd, src + i * 65536, 65536, (uint64_t)i * 65536,
                                        (uint64_t)i, &eb),
                     CMK_OK, &eb);
        /* round 0: fsync, round 1: fdatasync */
        CHECK_EB(cmk_io_queue_fsync(io, fd, round, 1, 999, &eb), CMK_OK, &eb);
        CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
        for (int i = 0; i <= W; i++) {
            CHECK(cmk_io_reap(io, &c, 1, 1) == 1);
            if (c.tag == 999) {
                order_ok &= writes_done == W;
                all_ok &= c.res == 0;
            } else {
                writes_done++;
                all_ok &= c.res == 65536;
            }
        }
        CHECK_MSG(order_ok, "%s: drained fsync completed before the writes", kind_name(kind));
        CHECK(all_ok);
        CHECK(cmk_io_pending(io) == 0);
    }
    CHECK_EB(cmk_io_pread(io, fd, dst, (size_t)W * 65536, 0, "drain", &eb), CMK_OK, &eb);
    CHECK(memcmp(src, dst, (size_t)W * 65536) == 0);
    /* An fsync without drain on its own. */
    CHECK_EB(cmk_io_queue_fsync(io, fd, 0, 0, 5, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(cmk_io_reap(io, &c, 1, 1) == 1 && c.tag == 5 && c.res == 0);
    close(fd);
    cmk_io_free(io);
    free(src);
    free(dst);
}

/* Failures come back as negative errno completions; bad arguments are refused at queue. */
static void t_errors(cmk_io_kind kind, const char *dir)
{
    char buf[4096] = {0};
    cmk_io *io = make_io(kind, 8);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[8];
    int64_t res[8] = {0};
    int rfd, wfd, closed;

    REQUIRE(io != NULL);
    wfd = open_in(dir, "ro", O_WRONLY | O_CREAT | O_TRUNC);
    CHECK(write(wfd, "hello", 5) == 5);
    rfd = open_in(dir, "ro", O_RDONLY);
    closed = open_in(dir, "ro", O_RDONLY);
    close(closed); /* a number that is no longer an open fd */
    CHECK_EB(cmk_io_queue_write(io, rfd, buf, sizeof(buf), 0, 0, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, wfd, buf, sizeof(buf), 0, 1, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_write(io, -1, buf, sizeof(buf), 0, 2, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, closed, buf, sizeof(buf), 0, 3, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_fsync(io, -1, 0, 0, 4, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_write(io, rfd, buf, 0, 0, 5, &eb), CMK_OK, &eb); /* bad fd, no data */
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, 6) == 6);
    for (int i = 0; i < 6; i++)
        if (c[i].tag < 8)
            res[c[i].tag] = c[i].res;
    for (int i = 0; i < 6; i++)
        CHECK_MSG(res[i] == -EBADF, "%s: request %d gave %lld, want -EBADF", kind_name(kind), i,
                  (long long)res[i]);
    /* The engine is still usable after failures. */
    CHECK_EB(cmk_io_pread(io, rfd, buf, 5, 0, "ro", &eb), CMK_OK, &eb);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EB(cmk_io_pwrite(io, rfd, buf, 5, 0, "read-only file", &eb), CMK_E_IO, &eb);
    CHECK(strstr(eb.msg, "cannot write read-only file") != NULL);
    CHECK_EB(cmk_io_fsync(io, -1, "nothing", &eb), CMK_E_IO, &eb);

    /* Refused before they reach an engine. */
    CHECK_EB(cmk_io_queue_write(io, wfd, NULL, 10, 0, 0, &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_queue_read(io, wfd, buf, 10, (uint64_t)INT64_MAX, 0, &eb), CMK_E_INVAL, &eb);
    CHECK(cmk_io_pending(io) == 0);
    CHECK(cmk_io_reap(io, c, 8, 1) == -EINVAL); /* min_wait above pending */
    CHECK(cmk_io_reap(io, c, 1, 2) == -EINVAL); /* min_wait above max */
    CHECK(cmk_io_reap(io, c, 8, 0) == 0);
    /* The conveniences refuse to run over unreaped requests. */
    CHECK_EB(cmk_io_queue_read(io, rfd, buf, 5, 0, 7, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_pread(io, rfd, buf, 5, 0, "ro", &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(cmk_io_reap(io, c, 8, 1) == 1 && c[0].tag == 7 && c[0].res == 5);
    close(rfd);
    close(wfd);
    cmk_io_free(io);
}

/* A write that the file size limit cuts short: the first part goes in, then EFBIG. The
 * engine must report the error, not the partial count. */
static void t_short_then_error(cmk_io_kind kind, const char *dir)
{
    struct rlimit old, lim;
    unsigned char *buf = calloc(1, MiB);
    cmk_io *io = make_io(kind, 4);
    cmk_errbuf eb = {0};
    cmk_io_cqe c;
    struct stat st;
    void (*old_sig)(int);
    int fd = open_in(dir, "fsize", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(buf && io && fd >= 0);
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    old_sig = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 256 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK_EB(cmk_io_queue_write(io, fd, buf, MiB, 0, 1, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(cmk_io_reap(io, &c, 1, 1) == 1);
    CHECK_MSG(c.res == -EFBIG, "%s: capped write gave %lld", kind_name(kind), (long long)c.res);
    CHECK_EB(cmk_io_pwrite(io, fd, buf, MiB, 0, "capped", &eb), CMK_E_IO, &eb);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, old_sig);
    CHECK(fstat(fd, &st) == 0 && st.st_size == 256 * 1024);
    close(fd);
    cmk_io_free(io);
    free(buf);
}

/* Depth counts requests queued or in flight until they are reaped. */
static void t_busy(cmk_io_kind kind, const char *dir)
{
    char buf[4][512];
    cmk_io *io = make_io(kind, 4);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[4];
    int fd = open_in(dir, "busy", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(io && fd >= 0);
    CHECK(cmk_io_depth(io) == 4);
    memset(buf, 'b', sizeof(buf));
    for (int i = 0; i < 4; i++)
        CHECK_EB(cmk_io_queue_write(io, fd, buf[i], 512, (uint64_t)i * 512, (uint64_t)i, &eb),
                 CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_write(io, fd, buf[0], 512, 4096, 9, &eb), CMK_E_BUSY, &eb);
    CHECK_EB(cmk_io_queue_fsync(io, fd, 0, 1, 9, &eb), CMK_E_BUSY, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read(io, fd, buf[0], 512, 0, 9, &eb), CMK_E_BUSY, &eb);
    CHECK_EB(cmk_io_pwrite(io, fd, buf[0], 512, 0, "busy", &eb), CMK_E_INVAL, &eb);
    CHECK(cmk_io_reap(io, c, 1, 1) == 1);
    CHECK(cmk_io_pending(io) == 3);
    CHECK_EB(cmk_io_queue_write(io, fd, buf[0], 512, 4096, 9, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_write(io, fd, buf[0], 512, 4096, 9, &eb), CMK_E_BUSY, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, 4) == 4);
    CHECK(cmk_io_pending(io) == 0);
    close(fd);
    cmk_io_free(io);
}

static void t_rename(cmk_io_kind kind, const char *dir)
{
    char a[4096], b[4096];
    cmk_io *io = make_io(kind, 2);
    cmk_errbuf eb = {0};
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = open_in(dir, "from", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(io && dfd >= 0 && fd >= 0);
    close(fd);
    snprintf(a, sizeof(a), "%s/from", dir);
    snprintf(b, sizeof(b), "%s/to", dir);
    CHECK_EB(cmk_io_renameat(io, dfd, "from", dfd, "to", &eb), CMK_OK, &eb);
    CHECK(!cmk_exists(a) && cmk_exists(b));
    CHECK_EB(cmk_io_renameat(io, AT_FDCWD, b, AT_FDCWD, a, &eb), CMK_OK, &eb);
    CHECK(cmk_exists(a) && !cmk_exists(b));
    CHECK_EB(cmk_io_renameat(io, dfd, "missing", dfd, "to", &eb), CMK_E_NOT_FOUND, &eb);
    CHECK(strstr(eb.msg, "cannot rename missing to to") != NULL);
    CHECK(cmk_io_pending(io) == 0);
    close(dfd);
    cmk_io_free(io);
}

/* min_wait is honoured, max is never exceeded; reaping requests not yet submitted does not
 * hang (the engine submits them). */
static void t_min_wait(cmk_io_kind kind, const char *dir)
{
    enum { N = 16 };
    unsigned char data[N * 1024], buf[N * 1024];
    cmk_io *io = make_io(kind, N);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[N];
    int fd = open_in(dir, "minwait", O_RDWR | O_CREAT | O_TRUNC);
    int n;

    REQUIRE(io && fd >= 0);
    test_fill_random(data, sizeof(data), 5);
    CHECK_EB(cmk_io_pwrite(io, fd, data, sizeof(data), 0, "minwait", &eb), CMK_OK, &eb);
    for (int i = 0; i < N; i++)
        CHECK_EB(
            cmk_io_queue_read(io, fd, buf + i * 1024, 1024, (uint64_t)i * 1024, (uint64_t)i, &eb),
            CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    n = cmk_io_reap(io, c, N, N);
    CHECK_MSG(n == N, "%s: reap(min %d) gave %d", kind_name(kind), N, n);
    CHECK(memcmp(data, buf, sizeof(buf)) == 0);
    for (int i = 0; i < N; i++)
        CHECK_EB(
            cmk_io_queue_read(io, fd, buf + i * 1024, 1024, (uint64_t)i * 1024, (uint64_t)i, &eb),
            CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    n = cmk_io_reap(io, c, 4, 3);
    CHECK(n >= 3 && n <= 4);
    if (n > 0) {
        unsigned left = N - (unsigned)n;
        CHECK(cmk_io_pending(io) == left);
        CHECK(reap_n(io, c, left) == left);
    }
    /* No submit before the reap. */
    CHECK_EB(cmk_io_queue_read(io, fd, buf, 1024, 0, 77, &eb), CMK_OK, &eb);
    CHECK(cmk_io_reap(io, c, 1, 1) == 1 && c[0].tag == 77 && c[0].res == 1024);
    close(fd);
    cmk_io_free(io);
}

/* Freeing waits for submitted requests; requests never submitted are dropped. */
static void t_free_pending(cmk_io_kind kind, const char *dir)
{
    enum { N = 8 };
    unsigned char *src = malloc((size_t)N * 65536), *dst = malloc((size_t)N * 65536);
    cmk_io *io = make_io(kind, N + 2);
    cmk_errbuf eb = {0};
    cmk_io_cqe c;
    struct stat st;
    int fd = open_in(dir, "freepend", O_RDWR | O_CREAT | O_TRUNC);

    REQUIRE(src && dst && io && fd >= 0);
    test_fill_random(src, (size_t)N * 65536, 9);
    for (int i = 0; i < N; i++)
        CHECK_EB(cmk_io_queue_write(io, fd, src + i * 65536, 65536, (uint64_t)i * 65536,
                                    (uint64_t)i, &eb),
                 CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(cmk_io_reap(io, &c, 1, 1) == 1); /* some reaped, the rest left pending */
    CHECK_EB(cmk_io_queue_write(io, fd, src, 65536, (uint64_t)N * 65536, 100, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_fsync(io, fd, 0, 1, 101, &eb), CMK_OK, &eb);
    CHECK(cmk_io_pending(io) == N + 1);
    cmk_io_free(io);
    CHECK(pread(fd, dst, (size_t)N * 65536, 0) == (ssize_t)N * 65536);
    CHECK_MSG(memcmp(src, dst, (size_t)N * 65536) == 0, "%s: submitted writes lost at free",
              kind_name(kind));
    CHECK(fstat(fd, &st) == 0 && st.st_size == (off_t)N * 65536);
    cmk_io_free(NULL);
    close(fd);
    free(src);
    free(dst);
}

/* Writeback hints complete; a batch of fsyncs over one or several engines reports each
 * file's result (a bad descriptor fails alone) and leaves the engines empty. */
static void t_fsync_many(cmk_io_kind kind, const char *dir)
{
    enum { N = 12 };
    cmk_io *ios[3] = {make_io(kind, 2), make_io(kind, 2), make_io(kind, 4)};
    unsigned char data[8192];
    cmk_errbuf eb = {0};
    cmk_io_cqe c;
    int fds[N], errs[N];
    char name[32];

    REQUIRE(ios[0] && ios[1] && ios[2]);
    test_fill_random(data, sizeof(data), 21);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "many%d", i);
        fds[i] = open_in(dir, name, O_RDWR | O_CREAT | O_TRUNC);
        REQUIRE(fds[i] >= 0);
        CHECK(pwrite(fds[i], data, sizeof(data), 0) == (ssize_t)sizeof(data));
    }
    /* A writeback hint on its own, over a range and to the end of the file. */
    CHECK_EB(cmk_io_queue_writeback(ios[0], fds[0], 0, 4096, 7, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_writeback(ios[0], fds[1], 0, 0, 8, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_submit(ios[0], &eb), CMK_OK, &eb);
    for (int k = 0; k < 2; k++) {
        CHECK(cmk_io_reap(ios[0], &c, 1, 1) == 1);
        CHECK_MSG(c.res == 0 && (c.tag == 7 || c.tag == 8), "%s: writeback res %lld tag %llu",
                  kind_name(kind), (long long)c.res, (unsigned long long)c.tag);
    }
    CHECK_EB(cmk_io_queue_writeback(ios[0], fds[0], UINT64_MAX - 1, 4096, 9, &eb), CMK_E_INVAL,
             &eb);
    /* One engine, more files than its depth. */
    memset(errs, 0x55, sizeof(errs));
    CHECK_EB(cmk_io_fsync_many(ios, 1, fds, N, errs, &eb), CMK_OK, &eb);
    for (int i = 0; i < N; i++)
        CHECK_MSG(errs[i] == 0, "%s: fsync %d: %s", kind_name(kind), i, strerror(errs[i]));
    /* Three engines; one descriptor is bad. */
    int bad = fds[5];
    fds[5] = open_in(dir, "many-closed", O_RDWR | O_CREAT | O_TRUNC);
    close(fds[5]);
    CHECK_EB(cmk_io_fsync_many(ios, 3, fds, N, errs, &eb), CMK_OK, &eb);
    for (int i = 0; i < N; i++)
        CHECK_MSG(errs[i] == (i == 5 ? EBADF : 0), "%s: fsync %d: errno %d", kind_name(kind), i,
                  errs[i]);
    fds[5] = bad;
    for (int e = 0; e < 3; e++)
        CHECK(cmk_io_pending(ios[e]) == 0);
    /* Directories too; zero files is a no-op; a busy engine is refused. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dfd >= 0);
    CHECK_EB(cmk_io_fsync_many(ios + 2, 1, &dfd, 1, errs, &eb), CMK_OK, &eb);
    CHECK(errs[0] == 0);
    CHECK_EB(cmk_io_fsync_many(ios, 3, fds, 0, errs, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_fsync(ios[1], fds[0], 0, 0, 1, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_fsync_many(ios, 3, fds, N, errs, &eb), CMK_E_INVAL, &eb);
    CHECK(strstr(eb.msg, "not reaped") != NULL);
    CHECK(cmk_io_reap(ios[1], &c, 1, 1) == 1 && c.res == 0);
    CHECK_EB(cmk_io_fsync_many(NULL, 0, fds, N, errs, &eb), CMK_E_INVAL, &eb);
    close(dfd);
    for (int i = 0; i < N; i++) {
        unsigned char back[8192];
        CHECK(pread(fds[i], back, sizeof(back), 0) == (ssize_t)sizeof(back) &&
              memcmp(back, data, sizeof(back)) == 0);
        close(fds[i]);
    }
    for (int e = 0; e < 3; e++)
        cmk_io_free(ios[e]);
}

/* Writeback hints complete (0 on a file, -EBADF on a closed descriptor, -ESPIPE on a pipe),
 * also over a range longer than a ring request's 32-bit length, their range is checked, and
 * reads after them return the file's bytes. */
static void t_writeback_hints(cmk_io_kind kind, const char *dir)
{
    size_t n = 3u << 20;
    unsigned char *data = malloc(n), *got = malloc(n);
    cmk_io *io = make_io(kind, 8);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[5];
    int64_t res[5] = {-1, -1, -1, -1, -1};
    int fd, closed, pfd[2];

    REQUIRE(data && got && io && pipe(pfd) == 0);
    test_fill_random(data, n, 31);
    fd = open_in(dir, "wb", O_RDWR | O_CREAT | O_TRUNC);
    CHECK(write(fd, data, n) == (ssize_t)n);
    closed = open_in(dir, "wb", O_RDONLY);
    close(closed);
    CHECK_EB(cmk_io_queue_writeback(io, fd, 0, n, 0, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_writeback(io, fd, 1u << 20, 0, 1, &eb), CMK_OK, &eb); /* to the end */
    CHECK_EB(cmk_io_queue_writeback(io, closed, 0, 4096, 2, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_writeback(io, pfd[0], 0, 4096, 3, &eb), CMK_OK, &eb);
    /* Longer than a ring request's 32-bit length. */
    CHECK_EB(cmk_io_queue_writeback(io, fd, 0, (uint64_t)5 << 30, 4, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_writeback(io, fd, UINT64_MAX - 1, 4096, 9, &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, 5) == 5);
    for (unsigned k = 0; k < 5; k++)
        if (c[k].tag < 5)
            res[c[k].tag] = c[k].res;
    CHECK_MSG(res[0] == 0 && res[1] == 0 && res[4] == 0, "%s: writeback results %lld %lld %lld",
              kind_name(kind), (long long)res[0], (long long)res[1], (long long)res[4]);
    CHECK_MSG(res[2] == -EBADF, "%s: writeback of a closed fd: %lld", kind_name(kind),
              (long long)res[2]);
    CHECK_MSG(res[3] == -ESPIPE, "%s: writeback of a pipe: %lld", kind_name(kind),
              (long long)res[3]);
    CHECK(cmk_io_pending(io) == 0);
    int64_t rres[3] = {0};
    CHECK(pipelined(io, fd, 0, got, n, 1u << 20, rres) >= 0 && memcmp(got, data, n) == 0);
    CHECK(rres[0] == 1 << 20 && rres[2] == 1 << 20);
    close(fd);
    close(pfd[0]);
    close(pfd[1]);
    cmk_io_free(io);
    free(data);
    free(got);
}

/* Cold reads (made with a plain call at submit on both engines) return the file's bytes beside
 * ring requests in flight, a short count at the end of the file, and -EBADF on a closed
 * descriptor, each under its own tag. The file is dropped from the page cache first. */
static void t_cold_reads(cmk_io_kind kind, const char *dir)
{
    size_t n = 3u << 20, piece = 1u << 20;
    unsigned char *data = malloc(n), *got = malloc(n + 4096), extra[4096];
    cmk_io *io = make_io(kind, 8);
    cmk_errbuf eb = {0};
    cmk_io_cqe c[6];
    int64_t res[6] = {-1, -1, -1, -1, -1, -1};
    int fd, wfd, closed;

    REQUIRE(data && got && io);
    test_fill_random(data, n, 41);
    test_fill_random(extra, sizeof(extra), 42);
    fd = open_in(dir, "cold", O_RDWR | O_CREAT | O_TRUNC);
    wfd = open_in(dir, "cold-w", O_RDWR | O_CREAT | O_TRUNC);
    CHECK(write(fd, data, n) == (ssize_t)n && fsync(fd) == 0);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* where the kernel agrees */
    closed = open_in(dir, "cold", O_RDONLY);
    close(closed);
    CHECK_EB(cmk_io_queue_write(io, wfd, extra, sizeof(extra), 0, 0, &eb), CMK_OK, &eb);
    for (unsigned k = 0; k < 3; k++)
        CHECK_EB(cmk_io_queue_read_cold(io, fd, got + k * piece, k == 2 ? piece + 4096 : piece,
                                        (uint64_t)k * piece, 1 + k, &eb),
                 CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read_cold(io, closed, got, 4096, 0, 4, &eb), CMK_OK, &eb);
    CHECK_EB(cmk_io_queue_read_cold(io, fd, got, 4096, UINT64_MAX - 1, 5, &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_submit(io, &eb), CMK_OK, &eb);
    CHECK(reap_n(io, c, 5) == 5);
    for (unsigned k = 0; k < 5; k++)
        if (c[k].tag < 6)
            res[c[k].tag] = c[k].res;
    CHECK_MSG(res[0] == (int64_t)sizeof(extra), "%s: ring write beside cold reads: %lld",
              kind_name(kind), (long long)res[0]);
    CHECK_MSG(res[1] == (int64_t)piece && res[2] == (int64_t)piece && res[3] == (int64_t)piece,
              "%s: cold reads %lld %lld %lld (the last one past the end of the file)",
              kind_name(kind), (long long)res[1], (long long)res[2], (long long)res[3]);
    CHECK_MSG(res[4] == -EBADF, "%s: cold read of a closed fd: %lld", kind_name(kind),
              (long long)res[4]);
    CHECK(memcmp(got, data, n) == 0);
    CHECK(pread(wfd, got, sizeof(extra), 0) == (ssize_t)sizeof(extra) &&
          memcmp(got, extra, sizeof(extra)) == 0);
    CHECK(cmk_io_pending(io) == 0);
    close(fd);
    close(wfd);
    cmk_io_free(io);
    free(data);
    free(got);
}

static void suite(cmk_io_kind kind)
{
    const char *dir = test_tmpdir(kind_name(kind));
    int before = check_failed;

    t_many_inflight(kind, dir);
    t_large(kind, dir);
    t_eof(kind, dir);
    t_fsync_drain(kind, dir);
    t_errors(kind, dir);
    t_short_then_error(kind, dir);
    t_busy(kind, dir);
    t_rename(kind, dir);
    t_min_wait(kind, dir);
    t_free_pending(kind, dir);
    t_fsync_many(kind, dir);
    t_writeback_hints(kind, dir);
    t_cold_reads(kind, dir);
    printf("engine %s: %s\n", kind_name(kind), check_failed == before ? "ok" : "FAILED");
}

/* ---- engine choice ---- */

static void test_parse_and_create(void)
{
    static char dummy;
    cmk_errbuf eb = {0};
    cmk_io *io = (cmk_io *)(void *)&dummy; /* must be reset to NULL on failure */

    CHECK(cmk_io_kind_parse(NULL) == CMK_IO_AUTO);
    CHECK(cmk_io_kind_parse("auto") == CMK_IO_AUTO);
    CHECK(cmk_io_kind_parse("uring") == CMK_IO_URING);
    CHECK(cmk_io_kind_parse("sync") == CMK_IO_SYNC);
    CHECK(cmk_io_kind_parse("Sync") == -1);
    CHECK(cmk_io_kind_parse("") == -1);
    CHECK(cmk_io_kind_parse("aio") == -1);
    CHECK_EB(cmk_io_create(CMK_IO_SYNC, 0, &io, &eb), CMK_E_INVAL, &eb);
    CHECK(io == NULL);
    CHECK_EB(cmk_io_create(CMK_IO_SYNC, 4097, &io, &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_create((cmk_io_kind)7, 4, &io, &eb), CMK_E_INVAL, &eb);
    CHECK_EB(cmk_io_create(CMK_IO_SYNC, 4096, &io, &eb), CMK_OK, &eb);
    CHECK(io && strcmp(cmk_io_name(io), "sync") == 0 && cmk_io_depth(io) == 4096);
    CHECK(io && strcmp(cmk_io_fallback_reason(io), "") == 0);
    cmk_io_free(io);
}

/* AUTO follows CMKSTORE_IO. Returns 1 if io_uring can be used here. */
static int test_auto(void)
{
    cmk_errbuf eb = {0};
    cmk_io *io = NULL;
    int have_uring = 0;
    cmk_err rc;

    REQUIRE(setenv("CMKSTORE_IO", "sync", 1) == 0);
    CHECK_EB(cmk_io_create(CMK_IO_AUTO, 8, &io, &eb), CMK_OK, &eb);
    CHECK(io && cmk_io_kind_of(io) == CMK_IO_SYNC && strcmp(cmk_io_name(io), "sync") == 0);
    CHECK(io && strcmp(cmk_io_fallback_reason(io), "") == 0);
    cmk_io_free(io);
    /* An explicit kind wins over the environment. */
    rc = cmk_io_create(CMK_IO_URING, 8, &io, &eb);
    if (rc == CMK_OK)
        CHECK(cmk_io_kind_of(io) == CMK_IO_URING);
    cmk_io_free(io);
    REQUIRE(setenv("CMKSTORE_IO", "bogus", 1) == 0);
    CHECK_EB(cmk_io_create(CMK_IO_AUTO, 8, &io, &eb), CMK_E_INVAL, &eb);
    CHECK(strstr(eb.msg, "CMKSTORE_IO='bogus'") != NULL);

    REQUIRE(unsetenv("CMKSTORE_IO") == 0);
    CHECK_EB(cmk_io_create(CMK_IO_AUTO, 8, &io, &eb), CMK_OK, &eb);
    if (io) {
        have_uring = cmk_io_kind_of(io) == CMK_IO_URING;
        printf("auto engine: %s%s%s\n", cmk_io_name(io), have_uring ? "" : " — ",
               cmk_io_fallback_reason(io));
        /* Either io_uring, or sync with the reason recorded. */
        CHECK(have_uring == (cmk_io_fallback_reason(io)[0] == '\0'));
    }
    cmk_io_free(io);
#ifndef CMK_HAVE_URING
    CHECK(!have_uring);
    CHECK_EB(cmk_io_create(CMK_IO_URING, 8, &io, &eb), CMK_E_UNSUPPORTED, &eb);
    CHECK(strstr(eb.msg, "CMK_WITH_URING=OFF") != NULL);
#else
    if (have_uring) {
        REQUIRE(setenv("CMKSTORE_IO", "uring", 1) == 0);
        CHECK_EB(cmk_io_create(CMK_IO_AUTO, 8, &io, &eb), CMK_OK, &eb);
        CHECK(io && cmk_io_kind_of(io) == CMK_IO_URING && strcmp(cmk_io_name(io), "io_uring") == 0);
        cmk_io_free(io);
        REQUIRE(unsetenv("CMKSTORE_IO") == 0);
    }
#endif
    return have_uring;
}

#ifdef CMK_HAVE_URING
#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define TEST_AUDIT_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TEST_AUDIT_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_S390X
#endif

#if defined(TEST_AUDIT_ARCH) && defined(__NR_io_uring_setup)
/* Denies io_uring_setup with EPERM the way container runtimes' profiles do. */
static int deny_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

/* Exit status of a child that could not install the filter (already confined). */
#define CHILD_NO_FILTER 100

/* In a child under the filter: AUTO falls back to sync and says why, URING is refused, and
 * the fallback engine does I/O. The exit status carries one bit per failed expectation. */
static int seccomp_child(const char *dir)
{
    cmk_errbuf eb = {0};
    cmk_io *io = NULL;
    char out[16] = "fallback ok", in[16] = {0};
    const char *why;
    int fd, fails = 0;

    if (unsetenv("CMKSTORE_IO") != 0)
        return 1;
    if (deny_io_uring() != 0)
        return CHILD_NO_FILTER;
    if (cmk_io_create(CMK_IO_AUTO, 8, &io, &eb) != CMK_OK)
        return 2;
    why = cmk_io_fallback_reason(io);
    fprintf(stderr, "  child: auto -> %s (%s)\n", cmk_io_name(io), why);
    if (cmk_io_kind_of(io) != CMK_IO_SYNC)
        fails |= 4;
    if (!strstr(why, "EPERM") || !strstr(why, "seccomp"))
        fails |= 8;
    fd = open_in(dir, "seccomp", O_RDWR | O_CREAT | O_TRUNC);
    if (fd < 0 || cmk_io_pwrite(io, fd, out, sizeof(out), 0, "seccomp", &eb) != CMK_OK ||
        cmk_io_pread(io, fd, in, sizeof(in), 0, "seccomp", &eb) != CMK_OK ||
        memcmp(in, out, sizeof(in)) != 0)
        fails |= 16;
    if (fd >= 0)
        close(fd);
    cmk_io_free(io);
    io = NULL;
    if (cmk_io_create(CMK_IO_URING, 8, &io, &eb) != CMK_E_UNSUPPORTED || io != NULL)
        fails |= 32;
    fprintf(stderr, "  child: uring -> %s\n", eb.msg);
    if (!strstr(eb.msg, "EPERM") || !strstr(eb.msg, "seccomp"))
        fails |= 64;
    return fails;
}

static void test_seccomp_fallback(void)
{
    const char *dir = test_tmpdir("seccomp");
    int status = 0;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        _exit(seccomp_child(dir)); /* _exit: the child must not run the parent's cleanup */
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status), "seccomp child died (signal %d)",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_NO_FILTER) {
        printf("SKIP seccomp fallback test: cannot install a seccomp filter here\n");
        return;
    }
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "seccomp child failed, status bits 0x%x (1 setup, 2 create, 4 kind, "
              "8 reason, 16 I/O, 32 uring refused, 64 uring message)",
              WEXITSTATUS(status));
}
#else
static void test_seccomp_fallback(void)
{
    printf("SKIP seccomp fallback test: unknown audit arch for this CPU\n");
}
#endif
#endif

int main(void)
{
    int have_uring;

    test_parse_and_create();
    have_uring = test_auto();
    suite(CMK_IO_SYNC);
#ifdef CMK_HAVE_URING
    if (have_uring)
        suite(CMK_IO_URING);
    else
        printf("SKIP io_uring engine tests: io_uring is not available here\n");
    test_seccomp_fallback();
#else
    (void)have_uring;
#endif
    return check_summary();
}
