/*
 * local_blob.c — the local backend's blob sink: a blob container written into a temporary
 * file of <dir>/tmp and published under blobs/<alg>/<xx>/<hex>.
 *
 * Records arrive in order and are written at the end of the file through the put's I/O
 * engine, several in flight at once; the caller's record buffer is held until its write
 * completes (poll reports its tag).
 *
 * Writeback of what is already written is started every WB_WINDOW bytes (sync_file_range
 * through the engine), so the disk works while later chunks are sealed and the fsync at
 * commit has only the tail left to wait for. Durability still comes from that fsync alone.
 *
 * Direct writes: on io_uring, a sink switches to O_DIRECT where the file system takes it,
 * once the store's direct_after bytes of plaintext are written (write mode "auto": 256 MiB,
 * so a mid-size layer stays in the page cache, which the VM host absorbs quickly; "direct":
 * from the first record of a blob of more than one chunk). From then on records, packed
 * back to back in the file, are copied into DW_COUNT aligned windows of DW_SIZE bytes, and
 * each full window goes to the engine as one aligned write, several in flight. Through the
 * page cache the same bytes are copied by the kernel and then written back by one flusher
 * at a time: on the virtual disks measured (bench/RESULTS.md) a 1 GiB blob reached half of
 * what aligned writes in flight do. The header is only known at finish: the file's first
 * block is kept and written again with the header in it once every window has completed;
 * the last window is padded to the block size and the file truncated to its length. The
 * commit's fsync is unchanged (it also flushes the disk's cache and the file's metadata).
 * A blob of one chunk (manifests, configs) stays buffered: one small write, one fsync.
 *
 * Scratch (CMK_BK_SCRATCH, a parked put's unfinished chunk): written where the next record
 * will go and read back; whatever it leaves beyond the blob's end is cut off at finish.
 *
 * Publish: the file is created with O_TMPFILE (invisible until linked), written, fsync'd,
 * then linked into place with linkat and the directory fsync'd. A crash at any point leaves
 * either no blob or the whole blob, and nothing behind: the kernel reclaims an unlinked
 * inode. Where the file system lacks O_TMPFILE a named file in tmp/ is used instead, locked
 * with flock while in use and renamed into place; the store's open sweeps unlocked leftovers.
 * Batched publishes make all files durable together (one cmk_io_fsync_many over the sinks'
 * engines), link them all, and fsync each touched directory once (again together): a batch
 * costs a few journal commits instead of two per blob.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/backend/local_blob.h"
#include "core/base/secmem.h"

/* Writeback is started in steps of this many bytes. */
#define WB_WINDOW (2u << 20)
/* On io_uring a background fdatasync is started once this many bytes are written since the
 * last one started (and none is running). Through the page cache, the VM disks measured do
 * the work at the flush: 140 MB written over 104 ms with writeback hints took as long to
 * fsync as right after an unpaced write (~100 ms). So flushes run while the stream goes on
 * (147 MB layer put, 64 -> 8 MiB: faster in 7 of 8 pairs, median +11%, bench/RESULTS.md).
 * Direct writes keep the longer interval (4 MiB there: faster in 4 of 10 pairs of 1 GiB
 * puts). */
#define WB_SYNC_EVERY_BUFFERED (8u << 20)
#define WB_SYNC_EVERY_DIRECT   (64u << 20)
/* Completion tags: records are tagged with their sequence number (far below these). */
#define WB_TAG UINT64_MAX
/* Direct writes: window size and count (see the top); window w completes with DW_TAG + w. */
#define DW_SIZE       (2u << 20)
#define DW_BLOCK      4096u
#define DW_TAG        (UINT64_MAX - 1 - DW_COUNT)
#define DW_ALLOC_STEP (64u << 20)  /* doubling up to DW_ALLOC_MAX: ext4's fallocate waits */
#define DW_ALLOC_MAX  (256u << 20) /* for the direct writes in flight, so call it rarely; */
                                   /* capped so a put reserves little beyond what it needs */

_Static_assert((uint64_t)DW_SIZE *DW_COUNT <= CMK_BK_SINK_BUF_MAX, "sink buffer budget");

static local_sink *sink_of(cmk_bk_sink *k)
{
    return (local_sink *)k;
}

/* Keeps the first failure (sticky). */
static cmk_err sink_fail(local_sink *k, cmk_err rc, const cmk_errbuf *src)
{
    return cmk_errbuf_first(&k->failed, &k->eb, rc, src);
}

/* The sink's sticky error, copied to eb (may be NULL). */
static cmk_err sink_error(const local_sink *k, cmk_errbuf *eb)
{
    if (k->failed != CMK_OK && eb)
        *eb = k->eb;
    return k->failed;
}

/* ---- records in flight ---- */

static cmk_err q_push(local_sink *k, uint64_t tag, uint32_t len, int done, cmk_errbuf *eb)
{
    /* Every held record may be released before the caller polls: room for all of them. */
    if (k->held + k->nrel + 1 > k->relcap) {
        size_t ncap = k->relcap ? 2 * k->relcap : 64;
        uint64_t *nrel = realloc(k->rel, ncap * sizeof(*nrel));

        if (!nrel)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob writes)");
        k->rel = nrel;
        k->relcap = ncap;
    }
    if (k->qtail - k->qhead == k->qcap) {
        size_t ncap = k->qcap ? 2 * k->qcap : 64;
        struct rec_ent *nq = malloc(ncap * sizeof(*nq));

        if (!nq)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob writes)");
        for (uint64_t s = k->qhead; s < k->qtail; s++)
            nq[s & (ncap - 1)] = k->q[s & (k->qcap - 1)];
        free(k->q);
        k->q = nq;
        k->qcap = ncap;
    }
    k->off += len;
    k->q[k->qtail & (k->qcap - 1)] = (struct rec_ent){tag, k->off, len, done};
    k->qtail++;
    return CMK_OK;
}

/* Marks record seq written; drops the written ones from the head. */
static void q_done(local_sink *k, uint64_t seq)
{
    k->q[seq & (k->qcap - 1)].done = 1;
    while (k->qhead < k->qtail && k->q[k->qhead & (k->qcap - 1)].done) {
        k->done_end = k->q[k->qhead & (k->qcap - 1)].end;
        k->qhead++;
    }
}

/* ---- completions ---- */

/* Fails the sink if a write of want bytes (what: "blob data at offset N", "blob chunk N")
 * completed with res other than want. */
static void write_result(local_sink *k, int64_t res, uint64_t want, const char *what, uint64_t n)
{
    cmk_errbuf eb = {0};

    if (res < 0)
        sink_fail(k,
                  cmk_errbuf_sys(&eb, CMK_E_IO, (int)-res, "cannot write %s %llu", what,
                                 (unsigned long long)n),
                  &eb);
    else if ((uint64_t)res != want)
        sink_fail(
            k, cmk_errbuf_set(&eb, CMK_E_IO, "short write of %s %llu", what, (unsigned long long)n),
            &eb);
}

static void win_done(local_sink *k, const cmk_io_cqe *c)
{
    struct win *w = &k->win[c->tag - DW_TAG];

    w->busy = 0;
    write_result(k, c->res, w->len, "blob data at offset", w->off);
}

static void rec_done(local_sink *k, const cmk_io_cqe *c)
{
    struct rec_ent *e = &k->q[c->tag & (k->qcap - 1)];

    write_result(k, c->res, e->len, "blob chunk", e->tag);
    k->rel[k->nrel++] = e->tag;
    k->held--;
    q_done(k, c->tag);
}

/* Submits queued requests and reaps completions (waiting for at least one if `wait`).
 * -1 if the engine itself failed (the sink has failed then). */
static int reap(local_sink *k, int wait)
{
    cmk_io_cqe cqe[32];
    cmk_errbuf eb = {0};
    int n;

    if (cmk_io_submit(k->io, &eb) != CMK_OK)
        sink_fail(k, eb.code, &eb);
    if (k->io_inflight == 0)
        return 0;
    n = cmk_io_reap(k->io, cqe, 32, wait ? 1 : 0);
    if (n < 0) {
        sink_fail(k, cmk_errbuf_sys(&eb, CMK_E_IO, -n, "I/O engine failure while writing blob"),
                  &eb);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        k->io_inflight--;
        if (cqe[i].tag >= DW_TAG && cqe[i].tag < DW_TAG + DW_COUNT) {
            win_done(k, &cqe[i]);
        } else if (cqe[i].tag == WB_TAG) {
            /* A failure here fails the put: an fdatasync that saw a writeback error has
             * consumed it (errseq), so the commit's fsync on this descriptor would not see
             * it again and would report success. (A writeback hint the file system does not
             * take is no failure.) */
            k->wb_inflight = 0;
            if (cqe[i].res < 0 &&
                (k->wb_was_sync ||
                 (cqe[i].res != -EINVAL && cqe[i].res != -ESPIPE && cqe[i].res != -EOPNOTSUPP)))
                sink_fail(k,
                          cmk_errbuf_sys(&eb, CMK_E_IO, (int)-cqe[i].res,
                                         "cannot write blob back to disk"),
                          &eb);
        } else {
            rec_done(k, &cqe[i]);
        }
    }
    return 0;
}

/* Waits for every request in flight. Nonzero if the sink has failed. */
static int drain(local_sink *k)
{
    while (k->io_inflight > 0)
        if (reap(k, 1) < 0)
            break;
    return k->failed != CMK_OK;
}

/* Starts writeback of the records known written. If the engine has no room, the next record
 * tries again. On io_uring every WB_SYNC_EVERY_* bytes the hint is an fdatasync instead, run
 * by a kernel worker while the pipeline goes on: ext4 without a journal writes the
 * allocation metadata of the blob synchronously at fsync, block group by block group, and
 * doing it as the blob grows leaves the commit's fsync only the tail. (More fsyncs, never
 * fewer.) Direct writes leave nothing dirty in the page cache to start writeback of: they
 * get only the fdatasync. */
static void start_writeback(local_sink *k)
{
    uint64_t end = k->done_end;
    cmk_errbuf eb = {0};
    int bg_sync;

    if (k->wb_inflight || end < k->wb_off + WB_WINDOW)
        return;
    bg_sync = cmk_io_kind_of(k->io) == CMK_IO_URING &&
              end >= k->wb_sync_off + (k->direct ? WB_SYNC_EVERY_DIRECT : WB_SYNC_EVERY_BUFFERED);
    if (k->direct && !bg_sync)
        return;
    if (bg_sync) {
        if (cmk_io_queue_fsync(k->io, k->fd, 1, 0, WB_TAG, &eb) != CMK_OK)
            return;
        k->wb_sync_off = end;
        k->wb_was_sync = 1;
    } else if (cmk_io_queue_writeback(k->io, k->fd, k->wb_off, end - k->wb_off, WB_TAG, &eb) ==
               CMK_OK) {
        k->wb_was_sync = 0;
    } else {
        return;
    }
    k->wb_off = end;
    k->wb_inflight = 1;
    k->io_inflight++;
}

/* ---- direct writes (see the top) ---- */

static void direct_release(local_sink *k)
{
    for (unsigned i = 0; i < DW_COUNT; i++) {
        cmk_pool_buf_put(k->lb->pool, k->win[i].buf, DW_SIZE);
        k->win[i].buf = NULL;
    }
    cmk_pool_buf_put(k->lb->pool, k->blk0, DW_BLOCK);
    k->blk0 = NULL;
}

/* Takes the windows and the first block's copy from the pool; 0 if there is no memory. */
static int direct_buffers(local_sink *k)
{
    int have = (k->blk0 = cmk_pool_buf_get(k->lb->pool, DW_BLOCK)) != NULL;

    for (unsigned i = 0; i < DW_COUNT; i++)
        have = (k->win[i].buf = cmk_pool_buf_get(k->lb->pool, DW_SIZE)) != NULL && have;
    return have;
}

/* Switches the sink to direct writes before the record that starts at off. Called once per
 * sink: before its first record (write mode "direct") or once the records written hold the
 * store's direct_after bytes of plaintext (mode "auto"). What is already in the file was
 * written through the page cache; the first window starts at the block holding off, with
 * that block's bytes read back, and the file's first block is read back for the header at
 * finish. Anything that does not work leaves the sink buffered: it is an optimisation,
 * never a failure. The store's first attempt makes one aligned write (of the window's first
 * block, which is its final content up to off), because some file systems accept O_DIRECT
 * at fcntl and refuse the write itself with EINVAL; the backend remembers the answer. */
static void direct_begin(local_sink *k)
{
    local_blobs *lb = k->lb;
    int state = atomic_load(lb->direct_state);
    uint64_t at = k->off & ~(uint64_t)(DW_BLOCK - 1);
    size_t head = (size_t)(k->off - at);
    int fl = -1, fresh = k->nrec == 0;

    k->direct_tried = 1;
    /* The sync engine has one write in flight, and a direct write returns only once the
     * disk has the data: through the page cache the kernel's writeback overlaps it. */
    if (state < 0 || cmk_io_kind_of(k->io) != CMK_IO_URING)
        return;
    /* Buffered writes in flight must not meet the O_DIRECT flag (an io_uring worker that
     * retries one would issue it direct, unaligned). */
    if (drain(k))
        return;
    if (!direct_buffers(k))
        goto release;
    /* The window's first block: what the file holds below off, zeros after it (and the
     * header's place stays zero until finish). */
    memset(k->win[0].buf, 0, DW_BLOCK);
    if (!fresh && (pread(k->fd, k->win[0].buf, head, (off_t)at) != (ssize_t)head ||
                   (at > 0 && pread(k->fd, k->blk0, DW_BLOCK, 0) != (ssize_t)DW_BLOCK)))
        goto release;
    fl = fcntl(k->fd, F_GETFL);
    if (fl < 0 || fcntl(k->fd, F_SETFL, fl | O_DIRECT) != 0) {
        atomic_store(lb->direct_state, -1);
        goto release;
    }
    if (state == 0) {
        if (pwrite(k->fd, k->win[0].buf, DW_BLOCK, (off_t)at) != (ssize_t)DW_BLOCK) {
            if (errno == EINVAL)
                atomic_store(lb->direct_state, -1);
            goto buffered;
        }
        atomic_store(lb->direct_state, 1);
    }
    k->win[0].off = at;
    k->wcur = 0;
    k->alloc_end = at;
    k->direct = 1;
    return;
buffered:
    /* A failed probe may have left part of a block beyond what was written before. */
    if (fcntl(k->fd, F_SETFL, fl) != 0 || ftruncate(k->fd, fresh ? 0 : (off_t)k->off) != 0) {
        cmk_errbuf eb = {0};
        sink_fail(k, cmk_errbuf_sys(&eb, CMK_E_IO, errno, "cannot set up the blob file"), &eb);
    }
release:
    direct_release(k);
}

/* Waits until window w's write has completed; nonzero if it has not (the sink failed). */
static int win_wait(local_sink *k, struct win *w)
{
    while (w->busy && k->io_inflight > 0)
        if (reap(k, 1) < 0)
            break;
    return w->busy;
}

/* Queues the write of window wi's first len bytes (a multiple of DW_BLOCK). */
static void win_flush(local_sink *k, unsigned wi, size_t len)
{
    struct win *w = &k->win[wi];
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (w->off == 0)
        memcpy(k->blk0, w->buf, DW_BLOCK);
    /* Space is allocated ahead of the writes, so that no write extends the file: ext4 waits
     * for an extending direct write to complete before it returns (it must move i_size
     * after the data), which would leave one write in flight however deep the ring. What
     * is allocated beyond the blob's end (at most DW_ALLOC_MAX) is given back by the
     * truncate at finish, or with the unlinked temp file if the put is abandoned. */
    if (w->off + len > k->alloc_end && k->alloc_end != UINT64_MAX) {
        uint64_t step = k->alloc_end < DW_ALLOC_STEP ? DW_ALLOC_STEP : k->alloc_end;
        if (step > DW_ALLOC_MAX)
            step = DW_ALLOC_MAX;
        if (fallocate(k->fd, 0, (off_t)k->alloc_end, (off_t)step) == 0)
            k->alloc_end += step;
        else
            k->alloc_end = UINT64_MAX; /* not supported (or no space): writes extend */
    }
    for (;;) {
        rc = cmk_io_queue_write(k->io, k->fd, w->buf, len, w->off, DW_TAG + wi, &eb);
        if (rc != CMK_E_BUSY || k->io_inflight == 0 || reap(k, 1) < 0)
            break;
    }
    if (rc != CMK_OK) {
        sink_fail(k, rc, &eb);
        return;
    }
    w->busy = 1;
    w->len = len;
    k->io_inflight++;
}

/* Copies len bytes that belong at file offset `at` (the next byte of the file) into the
 * windows, sending each window that fills. Nonzero if the sink failed meanwhile. */
static int direct_append(local_sink *k, const uint8_t *src, size_t len, uint64_t at)
{
    while (len > 0) {
        struct win *w = &k->win[k->wcur];
        size_t pos = (size_t)(at - w->off), n = DW_SIZE - pos;
        unsigned next;

        if (n > len)
            n = len;
        memcpy(w->buf + pos, src, n);
        src += n;
        len -= n;
        at += n;
        if (pos + n < DW_SIZE)
            break;
        win_flush(k, k->wcur, DW_SIZE);
        next = (k->wcur + 1) % DW_COUNT;
        if (k->failed != CMK_OK || win_wait(k, &k->win[next]))
            return -1;
        k->win[next].off = w->off + DW_SIZE;
        k->wcur = next;
    }
    return k->failed != CMK_OK;
}

/* Sends the window being filled up to file offset `end`, padded with zeros to a block, and
 * waits for every write in flight. Nonzero if the sink has failed. */
static int win_flush_last(local_sink *k, uint64_t end)
{
    struct win *w = &k->win[k->wcur];
    size_t used = (size_t)(end - w->off);

    if (used > 0) {
        size_t padded = (used + DW_BLOCK - 1) / DW_BLOCK * DW_BLOCK;
        memset(w->buf + used, 0, padded - used);
        win_flush(k, k->wcur, padded);
    }
    return drain(k);
}

/* Writes the tail (at off) and the header: the last window padded to a block, every write
 * completed, the first block again with the header in it, and the file cut to its length. */
static cmk_err direct_finish(local_sink *k, const uint8_t *tail, size_t len, const uint8_t *head,
                             cmk_errbuf *eb)
{
    uint64_t end = k->off + len;
    int header_in_tail;

    if (direct_append(k, tail, len, k->off) != 0)
        goto failed;
    header_in_tail = k->win[k->wcur].off == 0;
    if (header_in_tail)
        memcpy(k->win[k->wcur].buf, head, k->head_len);
    /* Two writes of one block in flight have no order: block 0 goes out again only after
     * every window has completed. */
    if (win_flush_last(k, end))
        goto failed;
    if (!header_in_tail) {
        cmk_err rc;
        memcpy(k->blk0, head, k->head_len);
        rc = cmk_io_pwrite(k->io, k->fd, k->blk0, DW_BLOCK, 0, "blob header", eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (ftruncate(k->fd, (off_t)end) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot set the length of the blob file");
    return CMK_OK;
failed:
    return sink_error(k, eb);
}

/* Leaves direct writes (for a park): the window being filled goes out padded to a block
 * (what the padding covers is written again or cut off later), the descriptor goes back to
 * buffered writes, and the next record switches to direct again (direct_begin reads the
 * partial block back). */
static void direct_leave(local_sink *k)
{
    cmk_errbuf eb = {0};
    int fl;

    if (win_flush_last(k, k->off))
        return;
    fl = fcntl(k->fd, F_GETFL);
    if (fl < 0 || fcntl(k->fd, F_SETFL, fl & ~O_DIRECT) != 0 ||
        ftruncate(k->fd, (off_t)k->off) != 0) {
        sink_fail(k, cmk_errbuf_sys(&eb, CMK_E_IO, errno, "cannot set up the blob file"), &eb);
        return;
    }
    direct_release(k);
    k->direct = 0;
    k->direct_tried = 0;
}

/* ---- the sink ops ---- */

static cmk_err open_tmp(local_sink *k, cmk_errbuf *eb)
{
    local_blobs *lb = k->lb;
    char rnd[17];
    cmk_err rc;

    k->fd = openat(lb->tmpfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (k->fd >= 0)
        return CMK_OK;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot create a temporary file in %s/tmp",
                              lb->dir);
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(k->tmp_name, sizeof(k->tmp_name), "put-%s.part", rnd);
    k->fd = openat(lb->tmpfd, k->tmp_name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (k->fd < 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot create %s/tmp/%s", lb->dir, k->tmp_name);
    k->named_tmp = 1;
    /* The lock tells the store's open sweep that this file is in use. */
    if (flock(k->fd, LOCK_EX) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot lock %s", k->tmp_name);
    return CMK_OK;
}

static void local_sink_close(cmk_bk_sink *bk)
{
    local_sink *k = sink_of(bk);

    if (!k)
        return;
    while (k->io_inflight > 0 && k->io) {
        cmk_io_cqe cqe[32];
        int n = cmk_io_reap(k->io, cqe, 32, 1);
        if (n <= 0)
            break;
        k->io_inflight -= (unsigned)n;
    }
    direct_release(k);
    if (k->fd >= 0) {
        if (k->named_tmp)
            unlinkat(k->lb->tmpfd, k->tmp_name, 0);
        close(k->fd);
    }
    free(k->q);
    free(k->rel);
    free(k);
}

static cmk_err local_sink_create(cmk_bk_blobs *bs, cmk_io *io, uint32_t head_len,
                                 uint32_t chunk_size, cmk_bk_sink **out, cmk_errbuf *eb)
{
    local_sink *k = calloc(1, sizeof(*k));
    cmk_err rc;

    *out = NULL;
    if (!k)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob file)");
    k->base.bs = bs;
    k->lb = (local_blobs *)bs;
    k->io = io;
    k->fd = -1;
    k->head_len = head_len;
    k->chunk_size = chunk_size;
    k->off = k->done_end = head_len;
    rc = open_tmp(k, eb);
    if (rc != CMK_OK) {
        local_sink_close(&k->base);
        return rc;
    }
    *out = &k->base;
    return CMK_OK;
}

static cmk_err local_sink_append(cmk_bk_sink *bk, const void *rec, size_t len, uint64_t tag,
                                 unsigned flags, int *held, cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);
    uint64_t at = k->off, seq = k->qtail;
    int now = (flags & CMK_BK_APPEND_NOW) && k->nrec == 0;
    cmk_errbuf e2 = {0};
    cmk_err rc;

    *held = 0;
    if (k->failed != CMK_OK)
        return sink_error(k, eb);
    if (!k->direct_tried && !now && k->nrec * k->chunk_size >= k->lb->direct_after)
        direct_begin(k);
    rc = k->failed == CMK_OK ? q_push(k, tag, (uint32_t)len, 1, &e2) : k->failed;
    if (rc != CMK_OK) {
        sink_fail(k, rc, &e2);
        return sink_error(k, eb);
    }
    k->nrec++;
    if (k->direct) {
        /* The record is copied: the caller's buffer is free at once. */
        direct_append(k, rec, len, at);
    } else if (now) {
        /* A one-record blob: nothing to overlap with, so no round trip through a ring. */
        rc = cmk_io_pwrite(k->io, k->fd, rec, len, at, "blob chunk", &e2);
    } else {
        /* A full engine makes room by reaping (what that releases is reported at the next
         * poll). */
        while ((rc = cmk_io_queue_write(k->io, k->fd, rec, len, at, seq, &e2)) == CMK_E_BUSY &&
               k->io_inflight > 0 && reap(k, 1) == 0)
            ;
        if (rc == CMK_OK) {
            k->q[seq & (k->qcap - 1)].done = 0;
            *held = 1;
            k->held++;
            k->io_inflight++;
        }
    }
    if (rc != CMK_OK)
        sink_fail(k, rc, &e2);
    if (!*held)
        q_done(k, seq);
    if (k->direct || *held)
        start_writeback(k);
    return sink_error(k, eb);
}

static cmk_err local_sink_poll(cmk_bk_sink *bk, uint64_t *tags, int max, int wait, int *n,
                               cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);

    cmk_errbuf e2 = {0};

    *n = 0;
    /* Released records are reported first; queued writes are submitted either way. */
    if (k->nrel == 0 && k->io)
        reap(k, wait);
    else if (k->io && cmk_io_submit(k->io, &e2) != CMK_OK)
        sink_fail(k, e2.code, &e2);
    while (*n < max && k->nrel > 0)
        tags[(*n)++] = k->rel[--k->nrel];
    return sink_error(k, eb);
}

static void local_sink_pending(const cmk_bk_sink *bk, unsigned *held, unsigned *busy)
{
    const local_sink *k = (const local_sink *)bk;

    /* Released records not yet reported are still held as far as the caller knows. */
    *held = k->held + (unsigned)k->nrel;
    *busy = k->io_inflight + (unsigned)k->nrel;
}

static cmk_err local_sink_quiesce(cmk_bk_sink *bk, cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);

    if (k->io) {
        drain(k);
        if (k->failed == CMK_OK && k->direct)
            direct_leave(k);
    }
    return sink_error(k, eb);
}

static void local_sink_set_io(cmk_bk_sink *bk, cmk_io *io)
{
    sink_of(bk)->io = io;
}

static cmk_err local_scratch_put(cmk_bk_sink *bk, const void *buf, size_t len, cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);
    cmk_err rc = cmk_io_pwrite(k->io, k->fd, buf, len, k->off, "unfinished chunk", eb);

    if (rc != CMK_OK)
        return rc;
    k->spill_len = (uint32_t)len;
    if (k->off + len > k->spill_end)
        k->spill_end = k->off + len;
    return CMK_OK;
}

static cmk_err local_scratch_get(cmk_bk_sink *bk, void *buf, size_t len, cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);
    ssize_t got = pread(k->fd, buf, len, (off_t)k->off);

    if (got != (ssize_t)len)
        return got < 0
                   ? cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read the unfinished chunk back")
                   : cmk_errbuf_set(eb, CMK_E_IO, "short read of the unfinished chunk");
    return CMK_OK;
}

static cmk_err local_sink_finish(cmk_bk_sink *bk, const void *tail, size_t len, const void *head,
                                 cmk_errbuf *eb)
{
    local_sink *k = sink_of(bk);
    cmk_err rc;

    if (k->failed != CMK_OK)
        return sink_error(k, eb);
    if (k->direct)
        return direct_finish(k, tail, len, head, eb);
    rc = cmk_io_pwrite(k->io, k->fd, tail, len, k->off, "blob index", eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_io_pwrite(k->io, k->fd, head, k->head_len, 0, "blob header", eb);
    /* A scratch write may have written past the blob's end. */
    if (rc == CMK_OK && k->spill_end > k->off + len && ftruncate(k->fd, (off_t)(k->off + len)) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot set the length of the blob file");
    return rc;
}

static const cmk_bk_blob_ops local_blob_ops;

cmk_err cmk_local_blobs_open(const char *dir, int dirfd, int tmpfd, cmk_pool *pool,
                             uint64_t direct_after, atomic_int *direct_state, cmk_bk_blobs **out,
                             cmk_errbuf *eb)
{
    local_blobs *lb = calloc(1, sizeof(*lb));

    *out = NULL;
    if (!lb)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    lb->base.ops = &local_blob_ops;
    lb->dir = dir;
    lb->dirfd = dirfd;
    lb->tmpfd = tmpfd;
    lb->pool = pool;
    lb->direct_after = direct_after;
    lb->direct_state = direct_state;
    *out = &lb->base;
    return CMK_OK;
}

static void local_blobs_close(cmk_bk_blobs *bs)
{
    free(bs);
}

/* ---- publish, delete, list (local_publish.c), reads (local_source.c) ---- */

static const cmk_bk_blob_ops local_blob_ops = {
    .size = sizeof(cmk_bk_blob_ops),
    .caps = CMK_BK_SCRATCH,
    .sink_create = local_sink_create,
    .sink_append = local_sink_append,
    .sink_poll = local_sink_poll,
    .sink_pending = local_sink_pending,
    .sink_quiesce = local_sink_quiesce,
    .sink_set_io = local_sink_set_io,
    .sink_scratch_put = local_scratch_put,
    .sink_scratch_get = local_scratch_get,
    .sink_finish = local_sink_finish,
    .publish_many = cmk_local_publish_many,
    .sink_close = local_sink_close,
    .source_open = cmk_local_source_open,
    .source_read = cmk_local_source_read,
    .source_queue = cmk_local_source_queue,
    .source_poll = cmk_local_source_poll,
    .source_advise = cmk_local_source_advise,
    .source_close = cmk_local_source_close,
    .blob_delete = cmk_local_blob_delete,
    .blob_list = cmk_local_blob_list,
    .close = local_blobs_close,
};
