/*
 * put.c — the write pipeline.
 *
 * The caller's thread copies plaintext into chunk slots. The digest (SHA-256 is serial per
 * blob) runs on a thread of its own over the slots in order, so the caller's thread only
 * copies and issues I/O; a blob of one chunk is hashed inline instead (no thread for a
 * manifest). Each full chunk is
 * handed to the worker pool, which compresses and seals it in its slot. Sealed records are
 * written in order through the store's I/O engine, several in flight at once; a slot is
 * reused once its write completes. Memory per put is bounded by the slot count (the
 * store's queue depth) times about twice the chunk size, whatever the blob's size.
 *
 * A chunk is dispatched only when the next byte arrives (or at commit), so that the last
 * chunk is known to be last when it is sealed: the is-last marker is part of its AAD.
 *
 * Writeback of what is already written is started every WB_WINDOW bytes (sync_file_range
 * through the engine), so the disk works while later chunks are sealed and the fsync at
 * commit has only the tail left to wait for. Durability still comes from that fsync alone.
 *
 * Direct writes: on io_uring, a put switches to O_DIRECT where the file system takes it,
 * once the store's direct_after bytes of plaintext are written (write mode "auto": 256 MiB,
 * so a mid-size layer stays in the page cache, which the VM host absorbs quickly; "direct":
 * from the first record of a blob of more than one chunk). From then on records, packed
 * back to back in the file, are copied into DW_COUNT aligned windows of DW_SIZE bytes, and
 * each full window goes to the engine as one aligned write, several in flight. Through the
 * page cache the same bytes are copied by the kernel and then written back by one flusher
 * at a time: on the virtual disks measured (bench/RESULTS.md) a 1 GiB blob reached half of
 * what aligned writes in flight do. The header is only known at commit: the file's first
 * block is kept and written again with the header in it once every window has completed;
 * the last window is padded to the block size and the file truncated to its length. The
 * commit's fsync is unchanged (it also flushes the disk's cache and the file's metadata).
 * A blob of one chunk (manifests, configs) stays buffered: one small write, one fsync.
 *
 * Batched commits (cmk_put_commit_many) finish every file first, then make all of them
 * durable together (one cmk_io_fsync_many over the puts' engines), link them all, and fsync
 * each touched directory once (again together): a batch costs a few journal commits
 * instead of two per blob, and no commit returns before its data and its directory entry
 * are durable.
 *
 * Parking (cmk_put_park, an upload session between requests): the chunks in flight are
 * finished, then the slots, the engine and the digest thread are given back. The chunk being
 * filled cannot be sealed as a chunk yet (whether it is the last is not known); if it is
 * larger than a small buffer it is sealed under the blob key with a nonce of its own domain
 * (CMK_NONCE_SPILL, counted per spill) into the temporary file where its record will go, and
 * read back at the next write. Whatever it leaves beyond the blob's end is cut off at commit.
 * A put fails as soon as the store loses key access (its access generation moves), even if
 * access is back by the next write, and its blob key is wiped then.
 *
 * Publish: the file is created with O_TMPFILE (invisible until linked), written, fsync'd,
 * then linked into place with linkat and the directory fsync'd. A crash at any point leaves
 * either no blob or the whole blob, and nothing behind: the kernel reclaims an unlinked
 * inode. Where the file system lacks O_TMPFILE a named file in tmp/ is used instead, locked
 * with flock while in use and renamed into place; cmk_store_open sweeps unlocked leftovers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/blobseal.h"
#include "core/base/bytes.h"
#include "core/compress.h"
#include "core/digest.h"
#include "core/format.h"
#include "core/base/fsutil.h"
#include "core/base/secmem.h"
#include "core/store_internal.h"

enum { SLOT_FREE, SLOT_FILLING, SLOT_SEALING, SLOT_SEALED, SLOT_WRITING };

/* Writeback is started in steps of this many bytes. */
#define WB_WINDOW (2u << 20)
/* On io_uring a background fdatasync is started once this many bytes are written since the
 * last one started (and none is running). Through the page cache, the VM disks measured do the work
 * at the flush: 140 MB written over 104 ms with writeback hints took as long to fsync as right
 * after an unpaced write (~100 ms). So flushes run while the stream goes on (147 MB layer
 * put, 64 -> 8 MiB: faster in 7 of 8 pairs, median +11%, bench/RESULTS.md). Direct writes
 * keep the longer interval (4 MiB there: faster in 4 of 10 pairs of 1 GiB puts). */
#define WB_SYNC_EVERY_BUFFERED (8u << 20)
#define WB_SYNC_EVERY_DIRECT   (64u << 20)
/* Completion tag of writeback requests (chunk indexes never get this high). */
#define WB_TAG UINT64_MAX
/* Direct writes: window size and count (see the top); window w completes with DW_TAG + w. */
#define DW_SIZE       (2u << 20)
#define DW_COUNT      8u
#define DW_BLOCK      4096u
#define DW_TAG        (UINT64_MAX - 1 - DW_COUNT)
#define DW_ALLOC_STEP (64u << 20)  /* doubling up to DW_ALLOC_MAX: ext4's fallocate waits */
#define DW_ALLOC_MAX  (256u << 20) /* for the direct writes in flight, so call it rarely; */
                                   /* capped so a put reserves little beyond what it needs */

struct put_win {
    uint8_t *buf; /* DW_SIZE bytes, DW_BLOCK-aligned (pool buffer) */
    uint64_t off; /* file offset of buf[0] */
    size_t len;   /* length of the write in flight */
    int busy;     /* its write is in flight */
};

struct put_slot {
    cmk_job job;
    cmk_put *p;
    uint64_t index;
    uint8_t *plain;
    uint32_t plain_len;
    uint32_t plain_hwm; /* most plaintext this buffer has held: what must be wiped */
    uint32_t plain_cap; /* CMK_SMALL_BUF or the chunk size */
    uint8_t *rec;
    uint32_t rec_size; /* capacity of rec, matching plain_cap */
    uint32_t rec_len;
    uint8_t last;
    int state;
    int need_hash; /* dispatched, not yet hashed (guarded by mu) */
    cmk_errbuf eb;
};

struct cmk_put {
    cmk_store *s;
    cmk_errbuf eb;
    cmk_err failed; /* sticky: the first error */
    cmk_digest dg;
    cmk_blobkey *bk; /* secret memory */
    cmk_fmt_header h;
    uint8_t header[CMK_FMT_HEADER_SIZE]; /* static part valid from begin */
    uint32_t rec_cap;

    int fd;
    int named_tmp; /* fallback path: a named temp file in tmp/ */
    char tmp_name[64];
    cmk_io *io;

    struct put_slot *slots;
    unsigned nslots;
    struct put_slot *cur; /* slot being filled */
    uint64_t dispatched;  /* chunks handed to sealing */
    uint64_t issued;      /* chunks whose write was queued */
    uint64_t file_off;    /* offset of the next record */
    uint64_t plain_total;
    unsigned io_inflight;
    uint64_t wb_off;      /* writeback started for the file below this offset */
    uint64_t wb_sync_off; /* a background fdatasync was started at this offset */
    int wb_was_sync;      /* the request in flight is that fdatasync (else a hint) */
    int wb_inflight;      /* a writeback request is in flight */
    int raw_only;         /* already-compressed content (gzip/zstd magic): no zstd attempts */

    /* Direct writes (see the top); off unless `direct`. */
    int direct, direct_tried;
    struct put_win win[DW_COUNT];
    unsigned wcur;      /* window being filled; bytes below file_off are in it or earlier */
    uint64_t alloc_end; /* the file is allocated (fallocate) up to here */
    uint8_t *blk0;      /* the file's first block as written, for the header at commit */

    uint64_t gen;       /* the store's access generation at begin */
    int parked;         /* cmk_put_park gave the engine and the buffers back */
    uint32_t spill_len; /* parked: plaintext of the unfinished chunk sealed at file_off */
    uint64_t spill_seq; /* spills so far: the nonce counter of the next */
    uint64_t spill_end; /* a spill wrote the file up to here (cut at finish) */

    uint8_t *index; /* CMK_FMT_INDEX_ENTRY_SIZE per chunk */
    size_t index_cap;

    /* The digest thread (see hasher); the counters are guarded by mu. */
    pthread_t hasher;
    int hasher_on, hasher_stop, hash_inline;
    uint64_t hash_avail; /* chunks handed to hashing */
    uint64_t hashed;     /* chunks hashed */
    cmk_errbuf hash_eb;  /* first hashing failure (code CMK_OK: none) */
    pthread_cond_t hcv;  /* wakes the digest thread */

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* ---- sealing (worker side) ---- */

/* Compresses (if it pays) and seals one chunk into its record. Pure apart from the slot;
 * runs on a worker thread or inline. */
static cmk_err seal_chunk(cmk_put *p, struct put_slot *sl)
{
    return cmk_blobseal_chunk(p->bk, p->header, sl->index, sl->last, !p->raw_only, sl->plain,
                              sl->plain_len, sl->rec, sl->rec_size, &sl->rec_len, &sl->eb);
}

static void seal_job(cmk_job *job)
{
    struct put_slot *sl = (struct put_slot *)job;
    cmk_put *p = sl->p;
    cmk_err rc = seal_chunk(p, sl);

    pthread_mutex_lock(&p->mu);
    sl->eb.code = rc;
    sl->state = SLOT_SEALED;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- pipeline (caller side) ---- */

static cmk_err put_fail(cmk_put *p, cmk_err rc, const cmk_errbuf *src)
{
    if (p->failed == CMK_OK) {
        p->failed = rc;
        if (src && src != &p->eb)
            p->eb = *src;
        p->eb.code = rc;
    }
    return p->failed;
}

static struct put_slot *slot_of(cmk_put *p, uint64_t index)
{
    return &p->slots[index % p->nslots];
}

/* Starts writeback of the records known to be written: when chunk `issued` goes out, its
 * slot was free, so chunk issued - nslots and everything before it has completed. */
static void start_writeback(cmk_put *p)
{
    uint64_t k = p->issued, end;
    cmk_errbuf eb = {0};
    int bg_sync;

    if (p->wb_inflight || k < p->nslots)
        return;
    end = cmk_ld64(p->index + (k - p->nslots + 1) * CMK_FMT_INDEX_ENTRY_SIZE);
    if (end < p->wb_off + WB_WINDOW)
        return;
    /* If the engine has no room, the next chunk tries again. On io_uring every
     * WB_SYNC_EVERY_* bytes the hint is an fdatasync instead, run by a kernel worker while the
     * pipeline goes on: ext4 without a journal writes the allocation metadata of the blob
     * synchronously at fsync, block group by block group, and doing it as the blob grows
     * leaves the commit's fsync only the tail. (More fsyncs, never fewer.) Direct writes
     * leave nothing dirty in the page cache to start writeback of: they get only the
     * fdatasync. */
    bg_sync = cmk_io_kind_of(p->io) == CMK_IO_URING &&
              end >= p->wb_sync_off + (p->direct ? WB_SYNC_EVERY_DIRECT : WB_SYNC_EVERY_BUFFERED);
    if (p->direct && !bg_sync)
        return;
    if (bg_sync) {
        if (cmk_io_queue_fsync(p->io, p->fd, 1, 0, WB_TAG, &eb) != CMK_OK)
            return;
        p->wb_sync_off = end;
        p->wb_was_sync = 1;
    } else if (cmk_io_queue_writeback(p->io, p->fd, p->wb_off, end - p->wb_off, WB_TAG, &eb) ==
               CMK_OK) {
        p->wb_was_sync = 0;
    } else {
        return;
    }
    p->wb_off = end;
    p->wb_inflight = 1;
    p->io_inflight++;
}

/* ---- direct writes (see the top) ---- */

static int pump_io(cmk_put *p, int wait);
static cmk_err unpark(cmk_put *p, cmk_errbuf *eb);

static void direct_release(cmk_put *p)
{
    for (unsigned i = 0; i < DW_COUNT; i++) {
        cmk_pool_buf_put(p->s->pool, p->win[i].buf, DW_SIZE);
        p->win[i].buf = NULL;
    }
    cmk_pool_buf_put(p->s->pool, p->blk0, DW_BLOCK);
    p->blk0 = NULL;
}

/* Switches the put to direct writes before the record that starts at file_off. Called
 * once per put: before its first record (write mode "direct") or once the chunks written
 * hold the store's direct_after bytes of plaintext (mode "auto"). What is already in the file was
 * written through the page cache; the first window starts at the block holding file_off, with that
 * block's bytes read back, and the file's first block is read back for the header at commit.
 * Anything that does not work leaves the put buffered: it is an optimisation, never a
 * failure. The store's first attempt makes one aligned write (of the window's first block,
 * which is its final content up to file_off), because some file systems accept O_DIRECT at
 * fcntl and refuse the write itself with EINVAL; the store remembers the answer. */
static void direct_begin(cmk_put *p)
{
    cmk_store *s = p->s;
    int state = atomic_load(&s->direct_state);
    uint64_t at = p->file_off & ~(uint64_t)(DW_BLOCK - 1);
    size_t head = (size_t)(p->file_off - at);
    int fl = -1, fresh = p->issued == 0;

    p->direct_tried = 1;
    /* The sync engine has one write in flight, and a direct write returns only once the
     * disk has the data: through the page cache the kernel's writeback overlaps it. */
    if (state < 0 || cmk_io_kind_of(p->io) != CMK_IO_URING)
        return;
    /* Buffered writes in flight must not meet the O_DIRECT flag (an io_uring worker that
     * retries one would issue it direct, unaligned). */
    while (p->io_inflight > 0)
        if (pump_io(p, 1) < 0)
            return;
    if (p->failed != CMK_OK)
        return;
    p->blk0 = cmk_pool_buf_get(s->pool, DW_BLOCK);
    int have_bufs = p->blk0 != NULL;
    for (unsigned i = 0; i < DW_COUNT; i++) {
        p->win[i].buf = cmk_pool_buf_get(s->pool, DW_SIZE);
        have_bufs = have_bufs && p->win[i].buf;
    }
    if (!have_bufs)
        goto release;
    /* The window's first block: what the file holds below file_off, zeros after it (and the
     * header's place stays zero until commit). */
    memset(p->win[0].buf, 0, DW_BLOCK);
    if (!fresh && (pread(p->fd, p->win[0].buf, head, (off_t)at) != (ssize_t)head ||
                   (at > 0 && pread(p->fd, p->blk0, DW_BLOCK, 0) != (ssize_t)DW_BLOCK)))
        goto release;
    fl = fcntl(p->fd, F_GETFL);
    if (fl < 0 || fcntl(p->fd, F_SETFL, fl | O_DIRECT) != 0) {
        atomic_store(&s->direct_state, -1);
        goto release;
    }
    if (state == 0) {
        if (pwrite(p->fd, p->win[0].buf, DW_BLOCK, (off_t)at) != (ssize_t)DW_BLOCK) {
            if (errno == EINVAL)
                atomic_store(&s->direct_state, -1);
            goto buffered;
        }
        atomic_store(&s->direct_state, 1);
    }
    p->win[0].off = at;
    p->wcur = 0;
    p->alloc_end = at;
    p->direct = 1;
    return;
buffered:
    /* A failed probe may have left part of a block beyond what was written before. */
    if (fcntl(p->fd, F_SETFL, fl) != 0 || ftruncate(p->fd, fresh ? 0 : (off_t)p->file_off) != 0) {
        cmk_errbuf eb = {0};
        put_fail(p, cmk_errbuf_sys(&eb, CMK_E_IO, errno, "cannot set up the blob file"), &eb);
    }
release:
    direct_release(p);
}

/* Waits until window w's write has completed; nonzero if it has not (the put failed). */
static int win_wait(cmk_put *p, struct put_win *w)
{
    while (w->busy && p->io_inflight > 0)
        if (pump_io(p, 1) < 0)
            break;
    return w->busy;
}

/* Queues the write of window wi's first len bytes (a multiple of DW_BLOCK). */
static void win_flush(cmk_put *p, unsigned wi, size_t len)
{
    struct put_win *w = &p->win[wi];
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (w->off == 0)
        memcpy(p->blk0, w->buf, DW_BLOCK);
    /* Space is allocated ahead of the writes, so that no write extends the file: ext4 waits
     * for an extending direct write to complete before it returns (it must move i_size
     * after the data), which would leave one write in flight however deep the ring. What
     * is allocated beyond the blob's end (at most DW_ALLOC_MAX) is given back by the
     * truncate at commit, or with the unlinked temp file if the put is abandoned. */
    if (w->off + len > p->alloc_end && p->alloc_end != UINT64_MAX) {
        uint64_t step = p->alloc_end < DW_ALLOC_STEP ? DW_ALLOC_STEP : p->alloc_end;
        if (step > DW_ALLOC_MAX)
            step = DW_ALLOC_MAX;
        if (fallocate(p->fd, 0, (off_t)p->alloc_end, (off_t)step) == 0)
            p->alloc_end += step;
        else
            p->alloc_end = UINT64_MAX; /* not supported (or no space): writes extend */
    }
    for (;;) {
        rc = cmk_io_queue_write(p->io, p->fd, w->buf, len, w->off, DW_TAG + wi, &eb);
        if (rc != CMK_E_BUSY || p->io_inflight == 0 || pump_io(p, 1) < 0)
            break;
    }
    if (rc != CMK_OK) {
        put_fail(p, rc, &eb);
        return;
    }
    w->busy = 1;
    w->len = len;
    p->io_inflight++;
}

/* Copies len bytes that belong at file offset `at` (the next byte of the file) into the
 * windows, sending each window that fills. Nonzero if the put failed meanwhile. */
static int direct_append(cmk_put *p, const uint8_t *src, size_t len, uint64_t at)
{
    while (len > 0) {
        struct put_win *w = &p->win[p->wcur];
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
        win_flush(p, p->wcur, DW_SIZE);
        next = (p->wcur + 1) % DW_COUNT;
        if (p->failed != CMK_OK || win_wait(p, &p->win[next]))
            return -1;
        p->win[next].off = w->off + DW_SIZE;
        p->wcur = next;
    }
    return p->failed != CMK_OK;
}

/* Writes the index (sealed, `total` bytes at the header's index_offset) and the header:
 * the last window padded to a block, every write completed, the first block again with
 * the header in it, and the file cut to its length. */
/* Sends the window being filled up to file offset `end`, padded with zeros to a block, and
 * waits for every write in flight. Nonzero if the put has failed. */
static int win_flush_last(cmk_put *p, uint64_t end)
{
    struct put_win *w = &p->win[p->wcur];
    size_t used = (size_t)(end - w->off);

    if (used > 0) {
        size_t padded = (used + DW_BLOCK - 1) / DW_BLOCK * DW_BLOCK;
        memset(w->buf + used, 0, padded - used);
        win_flush(p, p->wcur, padded);
    }
    while (p->io_inflight > 0)
        if (pump_io(p, 1) < 0)
            break;
    return p->failed != CMK_OK;
}

static cmk_err direct_finish(cmk_put *p, const uint8_t *index, size_t total, cmk_errbuf *eb)
{
    uint64_t end = p->h.index_offset + total;
    int header_in_tail;

    if (direct_append(p, index, total, p->h.index_offset) != 0)
        goto failed;
    header_in_tail = p->win[p->wcur].off == 0;
    if (header_in_tail)
        memcpy(p->win[p->wcur].buf, p->header, CMK_FMT_HEADER_SIZE);
    /* Two writes of one block in flight have no order: block 0 goes out again only after
     * every window has completed. */
    if (win_flush_last(p, end))
        goto failed;
    if (!header_in_tail) {
        cmk_err rc;
        memcpy(p->blk0, p->header, CMK_FMT_HEADER_SIZE);
        rc = cmk_io_pwrite(p->io, p->fd, p->blk0, DW_BLOCK, 0, "blob header", eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (ftruncate(p->fd, (off_t)end) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot set the length of the blob file");
    return CMK_OK;
failed:
    *eb = p->eb;
    return p->failed;
}

/* Queues writes for every sealed chunk that is next in order. */
static void issue_writes(cmk_put *p)
{
    for (;;) {
        struct put_slot *sl;
        cmk_errbuf eb = {0};
        cmk_err rc;
        int state;

        if (p->issued == p->dispatched)
            return;
        sl = slot_of(p, p->issued);
        pthread_mutex_lock(&p->mu);
        state = sl->state;
        pthread_mutex_unlock(&p->mu);
        if (state != SLOT_SEALED)
            return;
        if (sl->eb.code != CMK_OK) {
            put_fail(p, sl->eb.code, &sl->eb);
            sl->state = SLOT_FREE;
            p->issued++;
            continue;
        }
        if ((p->issued + 1) * CMK_FMT_INDEX_ENTRY_SIZE > p->index_cap) {
            size_t ncap = p->index_cap ? p->index_cap * 2 : 64 * CMK_FMT_INDEX_ENTRY_SIZE;
            uint8_t *n = realloc(p->index, ncap);
            if (!n) {
                put_fail(p, cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (index)"), &eb);
                return;
            }
            p->index = n;
            p->index_cap = ncap;
        }
        cmk_blobseal_entry(sl->rec, sl->rec_len, p->file_off,
                           p->index + p->issued * CMK_FMT_INDEX_ENTRY_SIZE);
        if (p->failed == CMK_OK && !p->direct_tried && !(sl->last && p->issued == 0) &&
            p->issued * p->s->chunk_size >= p->s->direct_after)
            direct_begin(p);
        if (p->failed == CMK_OK && p->direct) {
            /* The record is copied: its slot is free for the next chunk at once. */
            direct_append(p, sl->rec, sl->rec_len, p->file_off);
            sl->state = SLOT_FREE;
            start_writeback(p);
        } else if (p->failed == CMK_OK && sl->last && p->issued == 0) {
            /* A one-chunk blob: nothing to overlap with, so no round trip through a ring. */
            rc = cmk_io_pwrite(p->io, p->fd, sl->rec, sl->rec_len, p->file_off, "blob chunk", &eb);
            if (rc != CMK_OK)
                put_fail(p, rc, &eb);
            sl->state = SLOT_FREE;
        } else if (p->failed == CMK_OK) {
            rc =
                cmk_io_queue_write(p->io, p->fd, sl->rec, sl->rec_len, p->file_off, p->issued, &eb);
            if (rc != CMK_OK) {
                put_fail(p, rc, &eb);
                sl->state = SLOT_FREE;
            } else {
                sl->state = SLOT_WRITING;
                p->io_inflight++;
                start_writeback(p);
            }
        } else {
            sl->state = SLOT_FREE;
        }
        p->file_off += sl->rec_len;
        p->issued++;
    }
}

/* Submits queued writes and reaps completions (waiting for at least one if `wait`).
 * -1 if the engine itself failed (the put has failed then). */
static int pump_io(cmk_put *p, int wait)
{
    cmk_io_cqe cqe[32];
    cmk_errbuf eb = {0};
    int n;

    if (cmk_io_submit(p->io, &eb) != CMK_OK)
        put_fail(p, eb.code, &eb);
    if (p->io_inflight == 0)
        return 0;
    n = cmk_io_reap(p->io, cqe, 32, wait ? 1 : 0);
    if (n < 0) {
        put_fail(p, cmk_errbuf_sys(&eb, CMK_E_IO, -n, "I/O engine failure while writing blob"),
                 &eb);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct put_slot *sl;
        if (cqe[i].tag >= DW_TAG && cqe[i].tag < DW_TAG + DW_COUNT) {
            struct put_win *w = &p->win[cqe[i].tag - DW_TAG];
            w->busy = 0;
            p->io_inflight--;
            if (cqe[i].res < 0)
                put_fail(p,
                         cmk_errbuf_sys(&eb, CMK_E_IO, (int)-cqe[i].res,
                                        "cannot write blob data at offset %llu",
                                        (unsigned long long)w->off),
                         &eb);
            else if ((uint64_t)cqe[i].res != w->len)
                put_fail(p,
                         cmk_errbuf_set(&eb, CMK_E_IO, "short write of blob data at offset %llu",
                                        (unsigned long long)w->off),
                         &eb);
            continue;
        }
        if (cqe[i].tag == WB_TAG) {
            /* A failure here fails the put: an fdatasync that saw a writeback error has
             * consumed it (errseq), so the commit's fsync on this descriptor would not see
             * it again and would report success. */
            p->wb_inflight = 0;
            p->io_inflight--;
            /* (A writeback hint the file system does not take is no failure.) */
            if (cqe[i].res < 0 &&
                (p->wb_was_sync ||
                 (cqe[i].res != -EINVAL && cqe[i].res != -ESPIPE && cqe[i].res != -EOPNOTSUPP)))
                put_fail(p,
                         cmk_errbuf_sys(&eb, CMK_E_IO, (int)-cqe[i].res,
                                        "cannot write blob back to disk"),
                         &eb);
            continue;
        }
        sl = slot_of(p, cqe[i].tag);
        if (cqe[i].res < 0)
            put_fail(p,
                     cmk_errbuf_sys(&eb, CMK_E_IO, (int)-cqe[i].res, "cannot write blob chunk %llu",
                                    (unsigned long long)cqe[i].tag),
                     &eb);
        else if ((uint64_t)cqe[i].res != sl->rec_len)
            put_fail(p,
                     cmk_errbuf_set(&eb, CMK_E_IO, "short write of blob chunk %llu",
                                    (unsigned long long)cqe[i].tag),
                     &eb);
        sl->state = SLOT_FREE;
        p->io_inflight--;
    }
    return 0;
}

/* Drives the pipeline until `until` returns true. */
static void drive(cmk_put *p, int (*until)(cmk_put *, void *), void *arg)
{
    for (;;) {
        struct put_slot *next;
        int cpu_pending;

        issue_writes(p);
        pump_io(p, 0);
        if (until(p, arg))
            return;
        /* Buffered: a slot is freed by its write's completion, so wait for the disk while a
         * slot write is in flight. The writeback request alone is no reason to: no slot
         * waits for it, and as a background fdatasync it can take tens of milliseconds
         * while the digest thread finishes the chunk that is needed in a fraction of one
         * (a 140 MiB layer put measured 9-38% faster in five pairs, bench/RESULTS.md).
         * Direct: slots are freed when their record is copied into a window, and the
         * windows are waited for where one is needed, so wait for the sealers and the
         * digest thread first. They change state under mu and broadcast, so checking under
         * mu first loses no wakeup. */
        if (p->io_inflight > (unsigned)p->wb_inflight && !p->direct) {
            pump_io(p, 1);
            continue;
        }
        next = slot_of(p, p->issued);
        pthread_mutex_lock(&p->mu);
        cpu_pending =
            (p->issued < p->dispatched && next->state == SLOT_SEALING) || p->hashed < p->hash_avail;
        if (cpu_pending)
            pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (!cpu_pending && p->io_inflight > 0)
            pump_io(p, 1);
    }
}

static int slot_is_free(cmk_put *p, void *arg)
{
    int free_;

    pthread_mutex_lock(&p->mu);
    free_ = ((struct put_slot *)arg)->state == SLOT_FREE && !((struct put_slot *)arg)->need_hash;
    pthread_mutex_unlock(&p->mu);
    return free_;
}

static int all_done(cmk_put *p, void *arg)
{
    int hashed;

    (void)arg;
    if (p->issued != p->dispatched || p->io_inflight != 0)
        return 0;
    pthread_mutex_lock(&p->mu);
    hashed = p->hashed == p->hash_avail;
    pthread_mutex_unlock(&p->mu);
    return hashed;
}

/* Hashes one slot's plaintext and marks it hashed. */
static void hash_slot(cmk_put *p, struct put_slot *sl)
{
    cmk_errbuf eb = {0};
    cmk_err rc = cmk_digest_update(&p->dg, sl->plain, sl->plain_len, &eb);

    pthread_mutex_lock(&p->mu);
    if (rc != CMK_OK && p->hash_eb.code == CMK_OK) {
        p->hash_eb = eb;
        p->hash_eb.code = rc;
    }
    sl->need_hash = 0;
    p->hashed++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* The digest thread: hashes dispatched chunks in order while sealing goes on in the pool.
 * A slot is reused only once it is both written and hashed. */
static void *hasher(void *arg)
{
    cmk_put *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->hasher_stop && p->hashed == p->hash_avail)
            pthread_cond_wait(&p->hcv, &p->mu);
        if (p->hasher_stop)
            break;
        struct put_slot *sl = slot_of(p, p->hashed);
        pthread_mutex_unlock(&p->mu);
        hash_slot(p, sl);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void hasher_stop(cmk_put *p)
{
    if (!p->hasher_on)
        return;
    pthread_mutex_lock(&p->mu);
    p->hasher_stop = 1;
    pthread_cond_signal(&p->hcv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->hasher, NULL);
    p->hasher_on = 0;
}

/* Hands a dispatched chunk to hashing: inline for a single-chunk blob (or if no thread can
 * be started), else to the digest thread, started with the blob's first chunk. */
static void hash_dispatch(cmk_put *p, struct put_slot *sl, int last)
{
    int inline_ = p->hash_inline || (last && sl->index == 0);

    if (!inline_ && !p->hasher_on) {
        if (pthread_create(&p->hasher, NULL, hasher, p) == 0) {
            p->hasher_on = 1;
            (void)pthread_setname_np(p->hasher, "cmk-digest");
        } else
            inline_ = p->hash_inline = 1;
    }
    pthread_mutex_lock(&p->mu);
    sl->need_hash = 1;
    p->hash_avail++;
    if (!inline_)
        pthread_cond_signal(&p->hcv);
    pthread_mutex_unlock(&p->mu);
    if (inline_)
        hash_slot(p, sl);
}

static void dispatch(cmk_put *p, struct put_slot *sl, int last)
{
    /* Decided once per blob from its first bytes, before any chunk reaches a worker (the
     * pool's queue lock orders this write before the workers' reads). */
    if (p->dispatched == 0)
        p->raw_only = cmk_compress_skip(sl->plain, sl->plain_len);
    sl->last = (uint8_t)last;
    sl->index = p->dispatched++;
    sl->p = p;
    sl->eb.code = CMK_OK;
    sl->state = SLOT_SEALING;
    hash_dispatch(p, sl, last);
    /* A blob that is a single chunk is sealed inline: handing it to a worker would only
     * add a thread hop to the latency of small blobs (configs, manifests). */
    if (last && sl->index == 0) {
        sl->eb.code = seal_chunk(p, sl);
        sl->state = SLOT_SEALED;
        return;
    }
    sl->job.run = seal_job;
    cmk_pool_submit(p->s->pool, &sl->job);
}

size_t cmk_put_stream_bytes(uint32_t chunk_size, unsigned depth)
{
    size_t rec = cmk_fmt_record_max(chunk_size);

    /* One slot more: a blob's first chunk starts in small buffers (slot_ready), which wait in
     * the pool too, beside what other streams gave back. */
    return (size_t)(depth + 1) * (chunk_size + rec) + (size_t)DW_COUNT * DW_SIZE;
}

/* ---- public API ---- */

static cmk_err open_tmp(cmk_put *p, cmk_errbuf *eb)
{
    cmk_store *s = p->s;
    char rnd[17];
    cmk_err rc;

    p->fd = openat(s->tmpfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (p->fd >= 0)
        return CMK_OK;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot create a temporary file in %s/tmp",
                              s->dir);
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(p->tmp_name, sizeof(p->tmp_name), "put-%s.part", rnd);
    p->fd = openat(s->tmpfd, p->tmp_name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (p->fd < 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot create %s/tmp/%s", s->dir, p->tmp_name);
    p->named_tmp = 1;
    /* The lock tells cmk_store_open's sweep that this file is in use. */
    if (flock(p->fd, LOCK_EX) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot lock %s", p->tmp_name);
    return CMK_OK;
}

/* Waits until no worker, digest thread or I/O request uses the put's slots or key. */
static void put_quiesce(cmk_put *p)
{
    /* The digest thread reads slots: stop it first (it may leave chunks unhashed). */
    hasher_stop(p);
    if (!p->slots)
        return;
    /* Workers may still hold slots of a failed put: wait for them. */
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->nslots; i++)
        while (p->slots[i].state == SLOT_SEALING)
            pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    while (p->io_inflight > 0 && p->io) {
        cmk_io_cqe cqe[32];
        int n = cmk_io_reap(p->io, cqe, 32, 1);
        if (n <= 0)
            break;
        p->io_inflight -= (unsigned)n;
    }
}

/* Gives a slot's buffers back to the pool. */
static void slot_release(cmk_put *p, struct put_slot *sl)
{
    /* Plaintext may be sensitive even though it is not key material; only what was used
     * needs wiping (the rest of a cached buffer was wiped before). Sealed records hold
     * ciphertext only. */
    if (sl->plain) {
        cmk_cleanse(sl->plain, sl->plain_hwm);
        cmk_pool_buf_put(p->s->pool, sl->plain, sl->plain_cap);
    }
    /* A record whose sealing failed may still hold compressed plaintext. */
    if (sl->rec && sl->eb.code != CMK_OK)
        cmk_cleanse(sl->rec, sl->rec_size);
    cmk_pool_buf_put(p->s->pool, sl->rec, sl->rec_size);
    sl->plain = sl->rec = NULL;
    sl->plain_len = sl->plain_hwm = sl->plain_cap = sl->rec_size = 0;
}

static void put_free(cmk_put *p)
{
    if (!p)
        return;
    put_quiesce(p);
    if (p->slots) {
        for (unsigned i = 0; i < p->nslots; i++)
            slot_release(p, &p->slots[i]);
        free(p->slots);
    }
    direct_release(p);
    if (p->fd >= 0) {
        if (p->named_tmp)
            unlinkat(p->s->tmpfd, p->tmp_name, 0);
        close(p->fd);
    }
    if (p->io)
        cmk_store_io_put(p->s, p->io);
    cmk_digest_free(&p->dg);
    cmk_pool_sec_put(p->s->pool, p->bk, sizeof(*p->bk));
    free(p->index);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->hcv);
    free(p);
}

/* Fails the put if the store lost key access since it began, even if access is back: what
 * was sealed before the loss must not be published after it. The blob key is wiped once
 * nothing uses it any more. */
static cmk_err access_check(cmk_put *p)
{
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (p->failed != CMK_OK)
        return p->failed;
    if (atomic_load(&p->s->access_gen) == p->gen)
        return CMK_OK;
    rc = cmk_store_key_gate(p->s, &eb);
    if (rc == CMK_OK)
        rc = cmk_errbuf_set(&eb, CMK_E_KEY_UNREACHABLE,
                            "the store lost access to its key while this blob was written "
                            "(access is back now): write the blob again");
    put_fail(p, rc, &eb);
    put_quiesce(p);
    cmk_cleanse(p->bk, sizeof(*p->bk));
    return rc;
}

cmk_err cmk_put_begin(cmk_store *s, const char *digest_alg, cmk_put **out)
{
    cmk_errbuf eb = {0};
    uint8_t *dek = NULL;
    cmk_put *p = NULL;
    int alg;
    cmk_err rc;

    if (!s || !out)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_begin: NULL argument");
    *out = NULL;
    alg = cmk_digest_alg_from_name(digest_alg);
    if (!alg) {
        rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "unsupported digest algorithm '%s'", digest_alg);
        goto out;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (put)");
        goto out;
    }
    p->s = s;
    p->fd = -1;
    p->gen = atomic_load(&s->access_gen); /* before the DEK: a loss after it fails the put */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->hcv, NULL);
    p->bk = cmk_pool_sec_get(s->pool, sizeof(*p->bk));
    dek = cmk_pool_sec_get(s->pool, CMK_DEK_LEN);
    if (!p->bk || !dek) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (keys)");
        goto out;
    }
    rc = cmk_store_dek(s, 0, dek, &p->h.dek_id, &eb);
    if (rc != CMK_OK)
        goto out;
    p->h.version = CMK_FMT_VERSION;
    p->h.aead = CMK_AEAD_AES256GCM;
    p->h.kdf = CMK_KDF_HKDF_SHA256;
    p->h.comp = CMK_COMP_ZSTD;
    p->h.digest_alg = (uint8_t)alg;
    p->h.chunk_size = s->chunk_size;
    rc = cmk_random(p->h.salt, sizeof(p->h.salt), &eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_blobseal_key_new(dek, &p->h, p->header, p->bk, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_digest_init(&p->dg, alg, &eb);
    if (rc != CMK_OK)
        goto out;
    p->nslots = cmk_store_depth(s);
    p->rec_cap = (uint32_t)cmk_fmt_record_max(s->chunk_size);
    p->slots = calloc(p->nslots, sizeof(*p->slots));
    if (!p->slots) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (put)");
        goto out;
    }
    rc = cmk_store_io_get(s, &p->io, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = open_tmp(p, &eb);
    if (rc != CMK_OK)
        goto out;
    p->file_off = CMK_FMT_HEADER_SIZE;
    *out = p;
    p = NULL;
out:
    cmk_pool_sec_put(s->pool, dek, CMK_DEK_LEN);
    put_free(p);
    return cmk_publish(&eb, rc);
}

/* Gives slot buffers of plain capacity `cap` (the small size or the chunk size), keeping
 * the plaintext already in the slot. */
static cmk_err slot_buffers(cmk_put *p, struct put_slot *sl, uint32_t cap, cmk_errbuf *eb)
{
    uint32_t rsize = cap == p->s->chunk_size ? p->rec_cap : (uint32_t)cmk_fmt_record_max(cap);
    uint8_t *plain = cmk_pool_buf_get(p->s->pool, cap);
    uint8_t *rec = cmk_pool_buf_get(p->s->pool, rsize);

    if (!plain || !rec) {
        cmk_pool_buf_put(p->s->pool, plain, cap);
        cmk_pool_buf_put(p->s->pool, rec, rsize);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (chunk buffers)");
    }
    if (sl->plain) {
        memcpy(plain, sl->plain, sl->plain_len);
        cmk_cleanse(sl->plain, sl->plain_hwm);
        cmk_pool_buf_put(p->s->pool, sl->plain, sl->plain_cap);
        cmk_pool_buf_put(p->s->pool, sl->rec, sl->rec_size);
    }
    sl->plain = plain;
    sl->plain_cap = cap;
    sl->plain_hwm = sl->plain_len;
    sl->rec = rec;
    sl->rec_size = rsize;
    return CMK_OK;
}

/* Slot buffers are allocated on first use, so a small blob touches one slot only, and the
 * first chunk starts in small buffers that grow to the chunk size only if the blob does:
 * a manifest does not take (or fault in) two chunk-sized buffers. */
static cmk_err slot_ready(cmk_put *p, struct put_slot *sl, cmk_errbuf *eb)
{
    sl->plain_len = 0;
    if (!sl->plain) {
        uint32_t cap = p->dispatched == 0 && p->s->chunk_size > CMK_SMALL_BUF ? CMK_SMALL_BUF
                                                                              : p->s->chunk_size;
        cmk_err rc = slot_buffers(p, sl, cap, eb);
        if (rc != CMK_OK)
            return rc;
    }
    sl->state = SLOT_FILLING;
    return CMK_OK;
}

cmk_err cmk_put_write(cmk_put *p, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!p || (!buf && len))
        return cmk_set_last(CMK_E_INVAL, "cmk_put_write: NULL argument");
    if (access_check(p) != CMK_OK)
        return cmk_publish(&p->eb, p->failed);
    if (len == 0)
        return CMK_OK; /* a check of the put's state only: it stays parked */
    rc = unpark(p, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&p->eb, put_fail(p, rc, &eb));
    p->plain_total += len;
    while (len > 0) {
        if (p->cur && p->cur->plain_len == p->s->chunk_size) {
            dispatch(p, p->cur, 0);
            p->cur = NULL;
        }
        if (!p->cur) {
            struct put_slot *sl = slot_of(p, p->dispatched);
            drive(p, slot_is_free, sl);
            if (p->failed != CMK_OK)
                return cmk_publish(&p->eb, p->failed);
            rc = slot_ready(p, sl, &eb);
            if (rc != CMK_OK)
                return cmk_publish(&p->eb, put_fail(p, rc, &eb));
            p->cur = sl;
        }
        if (p->cur->plain_len == p->cur->plain_cap) {
            rc = slot_buffers(p, p->cur, p->s->chunk_size, &eb);
            if (rc != CMK_OK)
                return cmk_publish(&p->eb, put_fail(p, rc, &eb));
        }
        size_t room = p->cur->plain_cap - p->cur->plain_len;
        size_t n = len < room ? len : room;
        memcpy(p->cur->plain + p->cur->plain_len, in, n);
        p->cur->plain_len += (uint32_t)n;
        if (p->cur->plain_len > p->cur->plain_hwm)
            p->cur->plain_hwm = p->cur->plain_len;
        in += n;
        len -= n;
    }
    return CMK_OK;
}

/* ---- parking (see the top) ---- */

/* Leaves direct writes for a parked put: the window being filled goes out padded to a block
 * (what the padding covers is written again or cut off later), the descriptor goes back to
 * buffered writes, and the next record switches to direct again (direct_begin reads the
 * partial block back). */
static void direct_leave(cmk_put *p)
{
    cmk_errbuf eb = {0};
    int fl;

    if (win_flush_last(p, p->file_off))
        return;
    fl = fcntl(p->fd, F_GETFL);
    if (fl < 0 || fcntl(p->fd, F_SETFL, fl & ~O_DIRECT) != 0 ||
        ftruncate(p->fd, (off_t)p->file_off) != 0) {
        put_fail(p, cmk_errbuf_sys(&eb, CMK_E_IO, errno, "cannot set up the blob file"), &eb);
        return;
    }
    direct_release(p);
    p->direct = 0;
    p->direct_tried = 0;
}

/* Seals the unfinished chunk (in slot sl) into the file at file_off: ciphertext, then tag. */
static cmk_err spill_write(cmk_put *p, struct put_slot *sl, cmk_errbuf *eb)
{
    uint32_t n = sl->plain_len;
    cmk_err rc;

    /* The record buffer is larger than the chunk and its tag: ciphertext goes there, so the
     * plaintext is wiped with its buffer. */
    rc = cmk_blobseal_spill(p->bk, p->header, p->spill_seq++, sl->plain, n, sl->rec, eb);
    if (rc == CMK_OK)
        rc = cmk_io_pwrite(p->io, p->fd, sl->rec, (size_t)n + CMK_TAG_LEN, p->file_off,
                           "unfinished chunk", eb);
    if (rc != CMK_OK)
        return rc;
    p->spill_len = n;
    if (p->file_off + n + CMK_TAG_LEN > p->spill_end)
        p->spill_end = p->file_off + n + CMK_TAG_LEN;
    return CMK_OK;
}

/* Reads the spilled chunk back into a slot, which becomes the one being filled. */
static cmk_err spill_read(cmk_put *p, cmk_errbuf *eb)
{
    struct put_slot *sl = slot_of(p, p->dispatched);
    uint32_t n = p->spill_len;
    ssize_t got;
    cmk_err rc;

    rc = slot_buffers(p, sl, p->s->chunk_size, eb);
    if (rc != CMK_OK)
        return rc;
    got = pread(p->fd, sl->rec, (size_t)n + CMK_TAG_LEN, (off_t)p->file_off);
    if (got != (ssize_t)n + CMK_TAG_LEN)
        return got < 0
                   ? cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read the unfinished chunk back")
                   : cmk_errbuf_set(eb, CMK_E_IO, "short read of the unfinished chunk");
    rc = cmk_blobseal_unspill(p->bk, p->header, p->spill_seq - 1, sl->rec, n, sl->plain, eb);
    if (rc != CMK_OK)
        return rc;
    sl->plain_len = sl->plain_hwm = n;
    sl->state = SLOT_FILLING;
    p->cur = sl;
    p->spill_len = 0;
    return CMK_OK;
}

/* Takes back what cmk_put_park gave away. */
static cmk_err unpark(cmk_put *p, cmk_errbuf *eb)
{
    cmk_err rc;

    if (!p->parked)
        return CMK_OK;
    rc = cmk_store_io_get(p->s, &p->io, eb);
    if (rc != CMK_OK)
        return rc;
    p->parked = 0;
    return p->spill_len ? spill_read(p, eb) : CMK_OK;
}

cmk_err cmk_put_park(cmk_put *p)
{
    struct put_slot *cur;
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!p)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_park: NULL put");
    if (access_check(p) != CMK_OK || p->parked)
        return cmk_publish(&p->eb, p->failed);
    drive(p, all_done, NULL);
    if (p->failed == CMK_OK && p->direct)
        direct_leave(p);
    if (p->failed != CMK_OK)
        return cmk_publish(&p->eb, p->failed);
    /* Every dispatched chunk is hashed (all_done): the thread is started again if needed. */
    hasher_stop(p);
    p->hasher_stop = 0;
    cur = p->cur;
    if (cur && cur->plain_len > CMK_SMALL_BUF) {
        rc = spill_write(p, cur, &eb);
        if (rc != CMK_OK)
            return cmk_publish(&p->eb, put_fail(p, rc, &eb));
        p->cur = cur = NULL;
    } else if (cur && cur->plain_cap > CMK_SMALL_BUF) {
        rc = slot_buffers(p, cur, CMK_SMALL_BUF, &eb);
        if (rc != CMK_OK)
            return cmk_publish(&p->eb, put_fail(p, rc, &eb));
    }
    for (unsigned i = 0; i < p->nslots; i++)
        if (&p->slots[i] != cur)
            slot_release(p, &p->slots[i]);
    cmk_store_io_put(p->s, p->io);
    p->io = NULL;
    p->parked = 1;
    return CMK_OK;
}

size_t cmk_put_memory(const cmk_store *s, uint64_t len)
{
    uint64_t slots;

    if (!s)
        return 0;
    if (len <= CMK_SMALL_BUF)
        return CMK_SMALL_BUF + cmk_fmt_record_max(CMK_SMALL_BUF);
    if (len == UINT64_MAX || len > s->direct_after)
        return cmk_put_stream_bytes(s->chunk_size, s->depth);
    /* The slots a blob of this size fills (one more: the next chunk starts before the
     * previous is written), at most the queue depth's. */
    slots = (len + s->chunk_size - 1) / s->chunk_size + 1;
    if (slots > (uint64_t)s->depth + 1)
        slots = (uint64_t)s->depth + 1;
    return (size_t)slots * (s->chunk_size + cmk_fmt_record_max(s->chunk_size));
}

uint64_t cmk_put_size(const cmk_put *p)
{
    return p ? p->plain_total : 0;
}

/* Writes the index and header. Durability is the caller's (commit_batch). */
static cmk_err finish_file(cmk_put *p, cmk_errbuf *eb)
{
    uint64_t n = p->h.chunk_count;
    size_t total = (size_t)cmk_fmt_index_size(n);
    uint8_t *buf = malloc(total);
    cmk_err rc;

    if (!buf)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (index)");
    cmk_fmt_header_encode(&p->h, p->header);
    rc = cmk_blobseal_index(p->bk, p->header, p->index, n, buf, eb);
    if (rc != CMK_OK)
        goto out;
    if (p->direct) {
        rc = direct_finish(p, buf, total, eb);
        goto out;
    }
    rc = cmk_io_pwrite(p->io, p->fd, buf, total, p->h.index_offset, "blob index", eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_io_pwrite(p->io, p->fd, p->header, CMK_FMT_HEADER_SIZE, 0, "blob header", eb);
    /* A spill may have written past the blob's end (see the top). */
    if (rc == CMK_OK && p->spill_end > p->h.index_offset + total &&
        ftruncate(p->fd, (off_t)(p->h.index_offset + total)) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot set the length of the blob file");
out:
    free(buf);
    return rc;
}

/* A file is already published under p's digest. It is kept if it authenticates whole (it
 * then holds this content), else ours replaces it: a re-push must repair a damaged blob,
 * not report success over it. The check reads the existing blob once, and only on a
 * re-push. Our file is complete and fsync'd: it gets a name in tmp/ (locked, so no sweep
 * takes it) and is renamed over base in pfd, so readers see the old file or the new one. */
static cmk_err keep_or_replace(cmk_put *p, int pfd, const char *base, const char *procfd,
                               cmk_errbuf *eb)
{
    char digest[CMK_DIGEST_MAX], rnd[17], name[64];
    cmk_err rc;

    cmk_digest_format(p->h.digest_alg, p->h.digest, digest);
    rc = cmk_verify(p->s, digest, NULL);
    if (rc == CMK_OK)
        return CMK_OK;
    /* Only a file that is there and fails its check is replaced; without a verdict (key
     * access, I/O) the put fails rather than report a blob it could not check. */
    if (rc != CMK_E_INTEGRITY && rc != CMK_E_CORRUPT && rc != CMK_E_UNSUPPORTED &&
        rc != CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, rc, "cannot check the stored copy of %s: %s", digest,
                              cmk_errmsg());
    rc = cmk_random_hex(rnd, 8, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(name, sizeof(name), "put-%s.part", rnd);
    if (flock(p->fd, LOCK_EX) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot lock the new copy of %s", digest);
    if (linkat(AT_FDCWD, procfd, p->s->tmpfd, name, AT_SYMLINK_FOLLOW) != 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot link %s/tmp/%s", p->s->dir, name);
    rc = cmk_io_renameat(p->io, p->s->tmpfd, name, pfd, base, eb);
    if (rc != CMK_OK)
        (void)unlinkat(p->s->tmpfd, name, 0);
    return rc;
}

/* Makes the finished (and fsync'd) file visible under its digest; parent receives the
 * directory whose entry must then be made durable. */
static cmk_err publish(cmk_put *p, const uint8_t *raw, char *parent, size_t pcap, cmk_errbuf *eb)
{
    char path[4096], procfd[64];
    const char *base;
    int pfd = -1;
    cmk_err rc;

    rc = cmk_store_blob_path(p->s, p->h.digest_alg, raw, path, sizeof(path), parent, pcap, eb);
    /* Into the prefix directory as found inside the store, never through a link. */
    if (rc == CMK_OK)
        rc = cmk_opendir_at(p->s->dirfd, p->s->dir, cmk_store_rel(p->s, parent), &pfd, eb);
    if (rc != CMK_OK)
        return rc;
    base = strrchr(path, '/') + 1;
    if (p->named_tmp) {
        rc = cmk_io_renameat(p->io, p->s->tmpfd, p->tmp_name, pfd, base, eb);
        if (rc == CMK_OK)
            p->named_tmp = 0; /* nothing left to unlink */
        goto out;
    }
    snprintf(procfd, sizeof(procfd), "/proc/self/fd/%d", p->fd);
    /* Content-addressed: an existing file (EEXIST) that passes its check holds the same
     * content. Its directory entry is still fsync'd below: it may be another writer's that
     * is not durable yet. */
    if (linkat(AT_FDCWD, procfd, pfd, base, AT_SYMLINK_FOLLOW) != 0)
        rc = errno == EEXIST ? keep_or_replace(p, pfd, base, procfd, eb)
                             : cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot publish blob %s", path);
out:
    close(pfd);
    return rc;
}

/* Everything a commit does before durability: finishes the pipeline, checks the digest and
 * the key, writes the index and header. raw receives the digest. */
static cmk_err commit_prepare(cmk_put *p, const char *expected, char digest_out[CMK_DIGEST_MAX],
                              uint8_t raw[CMK_DIGEST_RAW_MAX], cmk_errbuf *eb)
{
    uint8_t want[CMK_DIGEST_RAW_MAX];
    char got[CMK_DIGEST_MAX];
    int want_alg = 0;
    cmk_err rc;

    if (access_check(p) == CMK_OK) {
        rc = unpark(p, eb);
        if (rc != CMK_OK)
            put_fail(p, rc, eb);
    }
    if (p->failed != CMK_OK) {
        *eb = p->eb;
        return p->failed;
    }
    if (expected) {
        rc = cmk_digest_parse(expected, &want_alg, want, eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (p->cur) {
        dispatch(p, p->cur, 1);
        p->cur = NULL;
    }
    drive(p, all_done, NULL);
    if (p->failed != CMK_OK) {
        *eb = p->eb;
        return p->failed;
    }
    /* Every chunk is hashed (all_done): the digest thread has nothing left to do. */
    hasher_stop(p);
    if (p->hash_eb.code != CMK_OK) {
        *eb = p->hash_eb;
        return p->hash_eb.code;
    }
    rc = cmk_digest_final(&p->dg, raw, eb);
    if (rc != CMK_OK)
        return rc;
    cmk_digest_format(p->h.digest_alg, raw, got);
    if (digest_out)
        memcpy(digest_out, got, CMK_DIGEST_MAX);
    if (expected &&
        (want_alg != p->h.digest_alg || memcmp(want, raw, cmk_digest_len(want_alg)) != 0))
        return cmk_errbuf_set(eb, CMK_E_DIGEST,
                              "content digest %s does not match the expected %s: nothing was "
                              "stored",
                              got, expected);
    /* Revocation stops writes too: do not publish under a key that is no longer ours. */
    rc = cmk_store_key_gate(p->s, eb);
    if (rc != CMK_OK)
        return rc;
    p->h.plain_size = p->plain_total;
    p->h.chunk_count = p->dispatched;
    p->h.index_offset = p->file_off;
    memcpy(p->h.digest, raw, cmk_digest_len(p->h.digest_alg));
    return finish_file(p, eb);
}

struct batch_item {
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    char parent[4096];
    int dir; /* index into the batch's directories */
    cmk_errbuf eb;
    cmk_err rc;
};

/* Records the first failure of the batch for cmk_errmsg. */
static void batch_fail(struct batch_item *it, cmk_err rc, const cmk_errbuf *eb)
{
    if (it->rc != CMK_OK)
        return;
    it->rc = rc;
    it->eb = *eb;
    it->eb.code = rc;
}

/* Commits n puts (n >= 1; NULL entries fail with CMK_E_INVAL) and frees them:
 *   1. each file is finished (pipeline drained, digest checked, index and header written);
 *   2. all files are fsync'd together;
 *   3. each is linked under its digest;
 *   4. every directory touched is fsync'd once, all together.
 * A put's result is CMK_OK only after its data (2) and its directory entry (4) are durable. */
static cmk_err commit_batch(cmk_store *s, cmk_put **puts, const char *const *expected, size_t n,
                            cmk_err *results, char (*digests_out)[CMK_DIGEST_MAX],
                            cmk_errbuf *first)
{
    struct batch_item *it = calloc(n, sizeof(*it));
    cmk_io **ios = calloc(n, sizeof(*ios));
    int *fds = calloc(n, sizeof(*fds)), *errs = calloc(n, sizeof(*errs));
    size_t *who = calloc(n, sizeof(*who));
    size_t nio = 0, nf = 0, nd = 0;
    cmk_errbuf eb = {0};
    cmk_err rc = CMK_OK;

    if (!it || !ios || !fds || !errs || !who) {
        rc = cmk_errbuf_set(first, CMK_E_NOMEM, "out of memory (batch commit)");
        for (size_t i = 0; i < n; i++)
            if (results)
                results[i] = rc;
        goto out;
    }
    /* 1. Finish every file. */
    for (size_t i = 0; i < n; i++) {
        cmk_put *p = puts[i];
        cmk_err r;

        if (!p) {
            batch_fail(&it[i], cmk_errbuf_set(&eb, CMK_E_INVAL, "NULL put in batch"), &eb);
            continue;
        }
        r = commit_prepare(p, expected ? expected[i] : NULL, digests_out ? digests_out[i] : NULL,
                           it[i].raw, &eb);
        if (r != CMK_OK) {
            batch_fail(&it[i], r, &eb);
            continue;
        }
        ios[nio++] = p->io;
        who[nf] = i;
        fds[nf++] = p->fd;
    }
    /* 2. Data durable, all files together. */
    if (nf > 0) {
        cmk_err r = cmk_io_fsync_many(ios, nio, fds, nf, errs, &eb);
        for (size_t k = 0; k < nf; k++) {
            cmk_errbuf e2 = {0};
            if (r != CMK_OK)
                batch_fail(&it[who[k]], r, &eb);
            else if (errs[k] != 0)
                batch_fail(&it[who[k]], cmk_errbuf_sys(&e2, CMK_E_IO, errs[k], "cannot fsync blob"),
                           &e2);
        }
    }
    /* 3. Publish, noting each distinct directory (fds[] now holds directory fds). */
    for (size_t i = 0; i < n; i++) {
        cmk_err r;

        if (it[i].rc != CMK_OK)
            continue;
        r = publish(puts[i], it[i].raw, it[i].parent, sizeof(it[i].parent), &eb);
        if (r != CMK_OK) {
            batch_fail(&it[i], r, &eb);
            continue;
        }
        it[i].dir = -1;
        for (size_t k = 0; k < i && it[i].dir < 0; k++)
            if (it[k].rc == CMK_OK && strcmp(it[k].parent, it[i].parent) == 0)
                it[i].dir = it[k].dir;
        if (it[i].dir >= 0)
            continue;
        int dfd = -1;
        r = cmk_opendir_at(s->dirfd, s->dir, cmk_store_rel(s, it[i].parent), &dfd, &eb);
        if (r != CMK_OK) {
            batch_fail(&it[i], r, &eb);
            continue;
        }
        it[i].dir = (int)nd;
        fds[nd++] = dfd;
    }
    /* 4. Directory entries durable, every directory once, all together. */
    if (nd > 0) {
        cmk_err r = cmk_io_fsync_many(ios, nio, fds, nd, errs, &eb);
        for (size_t i = 0; i < n; i++) {
            cmk_errbuf e2 = {0};
            if (it[i].rc != CMK_OK)
                continue;
            if (r != CMK_OK)
                batch_fail(&it[i], r, &eb);
            else if (errs[it[i].dir] != 0)
                batch_fail(&it[i],
                           cmk_errbuf_sys(&e2, CMK_E_IO, errs[it[i].dir],
                                          "cannot fsync directory %s", it[i].parent),
                           &e2);
        }
        for (size_t k = 0; k < nd; k++)
            close(fds[k]);
    }
    for (size_t i = 0; i < n; i++) {
        if (it[i].rc == CMK_OK)
            cmk_store_note_commit(s);
        else if (rc == CMK_OK) {
            rc = it[i].rc;
            *first = it[i].eb;
        }
        if (results)
            results[i] = it[i].rc;
    }
out:
    for (size_t i = 0; i < n; i++) {
        put_free(puts[i]);
        puts[i] = NULL;
    }
    free(it);
    free(ios);
    free(fds);
    free(errs);
    free(who);
    return rc;
}

cmk_err cmk_put_commit(cmk_put *p, const char *expected_digest, char digest_out[CMK_DIGEST_MAX])
{
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!p)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit: NULL put");
    rc = commit_batch(p->s, &p, (const char *const *)&expected_digest, 1, NULL,
                      digest_out ? (char(*)[CMK_DIGEST_MAX])digest_out : NULL, &eb);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_put_commit_many(cmk_put **puts, const char *const *expected_digests, size_t n,
                            cmk_err *results, char (*digests_out)[CMK_DIGEST_MAX])
{
    cmk_errbuf eb = {0};
    cmk_store *s = NULL;
    cmk_err rc;

    if (n == 0)
        return CMK_OK;
    if (!puts)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: NULL array");
    for (size_t i = 0; i < n && !s; i++)
        s = puts[i] ? puts[i]->s : NULL;
    for (size_t i = 0; i < n; i++)
        if (puts[i] && puts[i]->s != s) {
            /* One store per batch: the directories and engines are the store's. */
            for (size_t k = 0; k < n; k++) {
                if (results)
                    results[k] = CMK_E_INVAL;
                put_free(puts[k]);
                puts[k] = NULL;
            }
            return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: puts of different stores");
        }
    if (!s) {
        for (size_t k = 0; k < n; k++)
            if (results)
                results[k] = CMK_E_INVAL;
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: every put is NULL");
    }
    rc = commit_batch(s, puts, expected_digests, n, results, digests_out, &eb);
    return cmk_publish(&eb, rc);
}

void cmk_put_abort(cmk_put *p)
{
    put_free(p);
}

cmk_err cmk_put_set_salt(cmk_put *p, const uint8_t salt[CMK_SALT_LEN])
{
    cmk_errbuf eb = {0};
    uint8_t *dek = cmk_secalloc(CMK_DEK_LEN);
    cmk_err rc;

    if (!dek)
        return cmk_set_last(CMK_E_NOMEM, "out of memory");
    if (p->plain_total != 0) {
        rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "the salt can only be set before the first write");
        goto out;
    }
    rc = cmk_store_dek(p->s, p->h.dek_id, dek, NULL, &eb);
    if (rc != CMK_OK)
        goto out;
    memcpy(p->h.salt, salt, CMK_SALT_LEN);
    rc = cmk_blobseal_key_new(dek, &p->h, p->header, p->bk, &eb);
    if (rc != CMK_OK)
        goto out;
out:
    cmk_secfree(dek);
    return cmk_publish(&eb, rc);
}
