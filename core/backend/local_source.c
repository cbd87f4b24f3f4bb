/*
 * local_source.c — the local backend's blob source: blobs/<alg>/<xx>/<hex> opened under the
 * store directory (never through a link) and read through the caller's I/O engine.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/backend/local_blob.h"
#include "core/base/fsutil.h"

/* A range longer than this is probed for being in the page cache this far in from either
 * end (range_cold); a shorter one is read through the engine as it is. */
#define COLD_PROBE (4u << 20)

typedef struct local_source {
    cmk_bk_source base;
    cmk_io *io;
    int fd;
    unsigned inflight; /* reads queued and not yet polled */
    char path[4200];   /* for messages */
} local_source;

static local_source *src_of(cmk_bk_source *s)
{
    return (local_source *)s;
}

void cmk_local_source_close(cmk_bk_source *bs)
{
    local_source *s = src_of(bs);

    while (s->inflight > 0) {
        cmk_io_cqe cqe[32];
        int n = cmk_io_reap(s->io, cqe, 32, 1);
        if (n <= 0)
            break;
        s->inflight -= (unsigned)n;
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

cmk_err cmk_local_source_open(cmk_bk_blobs *bs, const char *key, cmk_io *io, cmk_bk_source **out,
                              uint64_t *size, int64_t *mtime, cmk_errbuf *eb)
{
    local_blobs *lb = (local_blobs *)bs;
    const char *slash = strchr(key, '/');
    local_source *s = calloc(1, sizeof(*s));
    char rel[256];
    struct stat st;
    cmk_err rc;

    *out = NULL;
    if (!s)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (get)");
    s->base.bs = bs;
    s->io = io;
    s->fd = -1;
    if (!slash || strlen(slash + 1) < 2) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad blob key '%s'", key);
        goto fail;
    }
    rc = cmk_path(rel, sizeof(rel), eb, "blobs/%.*s/%.2s/%s", (int)(slash - key), key, slash + 1,
                  slash + 1);
    if (rc != CMK_OK)
        goto fail;
    snprintf(s->path, sizeof(s->path), "%s/%s", lb->dir, rel);
    /* O_NONBLOCK: a FIFO planted in place of the blob file must not hang the reader; it is
     * cleared once the file is known to be a regular one (io_uring honours it). */
    s->fd = cmk_openat_nofollow(lb->dirfd, rel, O_RDONLY | O_NONBLOCK, 0);
    if (s->fd < 0) {
        rc = errno == ENOENT
                 ? cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "blob %s is not in the store", key)
                 : cmk_errbuf_open(eb, errno, "open", lb->dir, rel);
        goto fail;
    }
    if (fstat(s->fd, &st) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot stat %s", s->path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is not a regular file", s->path);
        goto fail;
    }
    if (fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot set up %s", s->path);
        goto fail;
    }
    *size = (uint64_t)st.st_size;
    *mtime = (int64_t)st.st_mtime;
    *out = &s->base;
    return CMK_OK;
fail:
    cmk_local_source_close(&s->base);
    return rc;
}

cmk_err cmk_local_source_read(cmk_bk_source *bs, void *buf, size_t len, uint64_t off,
                              const char *what, unsigned flags, cmk_errbuf *eb)
{
    local_source *s = src_of(bs);

    /* A worker may not use the caller's engine: a plain pread there. */
    if (flags & CMK_BK_READ_ANY)
        return cmk_pread_all(s->fd, buf, len, (off_t)off, what, eb);
    return cmk_io_pread(s->io, s->fd, buf, len, off, what, eb);
}

cmk_err cmk_local_source_queue(cmk_bk_source *bs, void *buf, size_t len, uint64_t off, uint64_t tag,
                               unsigned flags, cmk_errbuf *eb)
{
    local_source *s = src_of(bs);
    cmk_err rc = (flags & CMK_BK_READ_COLD ? cmk_io_queue_read_cold : cmk_io_queue_read)(
        s->io, s->fd, buf, len, off, tag, eb);

    if (rc == CMK_OK)
        s->inflight++;
    return rc;
}

int cmk_local_source_poll(cmk_bk_source *bs, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb)
{
    local_source *s = src_of(bs);
    int n;

    if (cmk_io_submit(s->io, eb) != CMK_OK)
        return -1;
    if (s->inflight == 0)
        return 0;
    n = cmk_io_reap(s->io, out, (unsigned)max, wait ? 1 : 0);
    if (n < 0) {
        cmk_errbuf_sys(eb, CMK_E_IO, -n, "I/O engine failure reading %s", s->path);
        return -1;
    }
    s->inflight -= (unsigned)n;
    return n;
}

/* Whether the page holding the byte at off is in the page cache: mincore(2) over a one-page
 * mapping, which looks without reading. (A one-byte RWF_NOWAIT read, used before, starts
 * readahead of the page it asks about; when that finished before the read looked again, a
 * cold file was taken for a warm one, and test_put_batch's cold get failed under TSan.)
 * Unknown counts as cached: the reads then go as they would without the probe. */
static int cached_at(int fd, uint64_t off)
{
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char v = 1;
    void *m;

    if (pg <= 0)
        return 1;
    m = mmap(NULL, (size_t)pg, PROT_READ, MAP_SHARED, fd, (off_t)(off - off % (uint64_t)pg));
    if (m == MAP_FAILED)
        return 1;
    if (mincore(m, (size_t)pg, &v) != 0)
        v = 1;
    munmap(m, (size_t)pg);
    return v & 1;
}

/* Several chunks are read at once, out of order at the edges: the kernel is told the file
 * is read front to back, so its readahead stays ahead of them (a hint only). That readahead
 * is all a cold file gets (WILLNEED requests of 8 MiB kept up to 16 MiB ahead, through the
 * engine, made cold 1 GiB gets 20-40% slower on both engines, the kernel's own window being
 * 8 MiB here already), and a cold range is read with blocking reads behind it
 * (cmk_io_queue_read_cold; bench/RESULTS.md). Cold: not in the page cache COLD_PROBE bytes
 * in from either end. Not the end bytes themselves: reading the header and the index has
 * just brought the pages next to them in, so they look cached on a cold file. */
int cmk_local_source_advise(cmk_bk_source *bs, uint64_t start, uint64_t end)
{
    local_source *s = src_of(bs);

    (void)posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (end - start <= 2 * (uint64_t)COLD_PROBE)
        return 0;
    return !cached_at(s->fd, start + COLD_PROBE) || !cached_at(s->fd, end - 1 - COLD_PROBE);
}
