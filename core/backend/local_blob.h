/*
 * local_blob.h — the local backend's blob space, shared by its files: local_blob.c (the
 * sink: temporary file, direct windows, writeback pacing), local_publish.c (publish with
 * link/rename and batched fsyncs, delete, list) and local_source.c (reads). Not for the engine: it
 * goes through blob.h.
 */
#ifndef CMK_BACKEND_LOCAL_BLOB_H
#define CMK_BACKEND_LOCAL_BLOB_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/backend/blob.h"
#include "core/base/pool.h"

/* Direct-write windows per sink (see local_blob.c). */
#define DW_COUNT 8u

typedef struct local_blobs {
    cmk_bk_blobs base;
    const char *dir; /* the store directory, for messages (borrowed) */
    int dirfd;       /* borrowed */
    int tmpfd;       /* borrowed */
    cmk_pool *pool;
    uint64_t direct_after;
    atomic_int *direct_state; /* 0: not tried yet, 1: O_DIRECT works in tmp/, -1: refused */
} local_blobs;

struct win {
    uint8_t *buf; /* DW_SIZE bytes, DW_BLOCK-aligned (pool buffer) */
    uint64_t off; /* file offset of buf[0] */
    size_t len;   /* length of the write in flight */
    int busy;     /* its write is in flight */
};

/* A record appended and not yet known written, in append order. */
struct rec_ent {
    uint64_t tag; /* the caller's */
    uint64_t end; /* file offset just past it */
    uint32_t len;
    int done;
};

typedef struct local_sink {
    cmk_bk_sink base;
    local_blobs *lb;
    cmk_errbuf eb;
    cmk_err failed; /* sticky: the first error */
    cmk_io *io;
    int fd;
    int named_tmp; /* fallback path: a named temp file in tmp/ */
    char tmp_name[64];
    uint32_t head_len, chunk_size;
    uint64_t off;         /* offset of the next record */
    uint64_t nrec;        /* records appended */
    uint64_t spill_end;   /* a scratch write reached this offset (cut at finish) */
    uint32_t spill_len;   /* scratch bytes kept at off */
    unsigned io_inflight; /* every request in flight */
    unsigned held;        /* records whose buffers are in flight */

    /* Records in flight, a ring indexed by sequence number (seq & (qcap - 1)). */
    struct rec_ent *q;
    uint64_t qhead, qtail; /* sequence numbers: oldest not yet known written, next */
    size_t qcap;
    uint64_t *rel; /* tags of held records released by a reap, not yet reported */
    size_t nrel, relcap;
    uint64_t done_end; /* every record below this offset is written */

    uint64_t wb_off;      /* writeback started for the file below this offset */
    uint64_t wb_sync_off; /* a background fdatasync was started at this offset */
    int wb_was_sync;      /* the request in flight is that fdatasync (else a hint) */
    int wb_inflight;      /* a writeback request is in flight */

    /* Direct writes (see the top); off unless `direct`. */
    int direct, direct_tried;
    struct win win[DW_COUNT];
    unsigned wcur;      /* window being filled; bytes below off are in it or earlier */
    uint64_t alloc_end; /* the file is allocated (fallocate) up to here */
    uint8_t *blk0;      /* the file's first block as written, for the header at finish */
} local_sink;

/* The local blob space of the store directory dir (dirfd, with tmp/ open as tmpfd; all
 * three borrowed: they outlive the space). pool: the store's buffer pool (direct windows).
 * direct_after: plaintext bytes after which a sink goes O_DIRECT (UINT64_MAX: never);
 * direct_state: where the answer of the first O_DIRECT probe is kept (the handle's). */
CMK_MUST_CHECK cmk_err cmk_local_blobs_open(const char *dir, int dirfd, int tmpfd, cmk_pool *pool,
                                            uint64_t direct_after, atomic_int *direct_state,
                                            cmk_bk_blobs **out, cmk_errbuf *eb);

/* local_publish.c: the ops of the same names in blob.h. */
void cmk_local_publish_many(cmk_bk_blobs *bs, cmk_bk_sink *const *sinks, const char *const *keys,
                            size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                            cmk_errbuf *ebs);
/* local_source.c: the source ops. */
CMK_MUST_CHECK cmk_err cmk_local_source_open(cmk_bk_blobs *bs, const char *key, cmk_io *io,
                                             cmk_bk_source **out, uint64_t *size, int64_t *mtime,
                                             cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_local_source_read(cmk_bk_source *src, void *buf, size_t len,
                                             uint64_t off, const char *what, unsigned flags,
                                             cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_local_source_queue(cmk_bk_source *src, void *buf, size_t len,
                                              uint64_t off, uint64_t tag, unsigned flags,
                                              cmk_errbuf *eb);
int cmk_local_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb);
int cmk_local_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end);
void cmk_local_source_close(cmk_bk_source *src);
CMK_MUST_CHECK cmk_err cmk_local_blob_delete(cmk_bk_blobs *bs, const char *key, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_local_blob_list(cmk_bk_blobs *bs, int (*cb)(const char *key, void *arg),
                                           void *arg, cmk_errbuf *eb);

#endif
