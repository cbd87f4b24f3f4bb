/*
 * blob.h — the blob section of the storage backend (see backend.h): where blob containers
 * are streamed in, published, read, stat'd, deleted and listed. The engine sees a blob
 * space (cmk_bk_blobs), sinks (one container being written) and nothing of files: the local
 * backend's temporary files, O_DIRECT windows, writeback pacing, link/rename and batched
 * fsyncs stay behind it (core/backend/local_blob.c).
 *
 * Keys: a blob's address, "<alg>/<hex>" ("sha256/<64 hex>"), made by cmk_bk_blob_key. The
 * local backend stores it as blobs/<alg>/<hex[0:2]>/<hex>.
 *
 * A sink is shaped for an object store too: it gets records strictly in order (no offsets),
 * the container's first head_len bytes (the blob header, known only at the end) are handed
 * over at finish (the local sink patches them in place, an object store's multipart upload
 * sends its first part last), and publishing is "only if absent" (If-None-Match) with the
 * engine deciding, through a callback, whether a copy already there is kept or replaced.
 * Local-only tricks are capabilities: CMK_BK_SCRATCH (the sink can hold unpublished bytes
 * past its end and read them back: a parked put's spill).
 *
 * A source reads a published container: whole reads, reads queued several at once and
 * polled (ranged GETs in flight, for an object store), a readahead hint.
 *
 * I/O engine: a sink writes through the cmk_io it is given (the put's, from the store's
 * cache); cmk_bk_sink_set_io(NULL) gives it back while the put is parked. A sink is used by
 * one thread at a time; the blob space by any number.
 */
#ifndef CMK_BACKEND_BLOB_H
#define CMK_BACKEND_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "io/io.h"

typedef struct cmk_bk_blobs cmk_bk_blobs;   /* a backend's blob space */
typedef struct cmk_bk_sink cmk_bk_sink;     /* one container being written */
typedef struct cmk_bk_source cmk_bk_source; /* one published container being read */
typedef struct cmk_bk_blob_ops cmk_bk_blob_ops;

/* The head of every blob space, sink and source: backends embed it first. */
struct cmk_bk_blobs {
    const cmk_bk_blob_ops *ops;
};
struct cmk_bk_sink {
    cmk_bk_blobs *bs;
};
struct cmk_bk_source {
    cmk_bk_blobs *bs;
};

/* Room for a key "<alg>/<hex>" (sha512: 6 + 1 + 128) and its NUL. */
#define CMK_BK_KEY_MAX 160

/* Pool memory one sink may hold for its own buffers (the local sink's direct windows),
 * beyond the records the engine lends it: what a put stream must budget. */
#define CMK_BK_SINK_BUF_MAX (16u << 20)

/* blob caps */
#define CMK_BK_SCRATCH 2u /* cmk_bk_sink_scratch_put/_get work (else CMK_E_UNSUPPORTED) */

/* append flags */
#define CMK_BK_APPEND_NOW                                                                          \
    1u /* the container's only record: nothing to overlap it with, so                              \
          the sink may write it at once instead of queueing it */

/* read flags */
#define CMK_BK_READ_COLD 1u /* queue: the range is not cached (cmk_bk_source_advise said so) */
#define CMK_BK_READ_ANY  2u /* read: from any thread (a worker), not through the engine */

/* What a publish does when the key is taken: the engine's verdict on the copy there.
 * CMK_OK keeps it (the sink is dropped: same address, same content); CMK_E_INTEGRITY,
 * CMK_E_CORRUPT, CMK_E_UNSUPPORTED or CMK_E_NOT_FOUND replace it (readers see the old or the
 * new); anything else fails that item with eb. */
typedef cmk_err (*cmk_bk_keep_fn)(void *arg, size_t i, cmk_errbuf *eb);

struct cmk_bk_blob_ops {
    uint32_t size; /* sizeof(cmk_bk_blob_ops) the backend was built against: grows */
    unsigned caps; /* CMK_BK_SCRATCH */

    /* Starts a container. Its records follow head_len bytes that finish supplies.
     * chunk_size: the plaintext most records carry (the local sink's direct-write policy
     * counts it). */
    cmk_err (*sink_create)(cmk_bk_blobs *bs, cmk_io *io, uint32_t head_len, uint32_t chunk_size,
                           cmk_bk_sink **out, cmk_errbuf *eb);
    /* Appends the next record. *held: 1 if the sink keeps using rec until poll reports tag
     * (the record is written from the caller's buffer), 0 if it is done with it already.
     * After a failure (sticky) nothing more is written. */
    cmk_err (*sink_append)(cmk_bk_sink *k, const void *rec, size_t len, uint64_t tag,
                           unsigned flags, int *held, cmk_errbuf *eb);
    /* Submits what is queued and collects completions, waiting for at least one if wait
     * and anything is in flight. *n receives how many held records (their tags, at most
     * max) were released. Returns the sink's sticky error. */
    cmk_err (*sink_poll)(cmk_bk_sink *k, uint64_t *tags, int max, int wait, int *n, cmk_errbuf *eb);
    /* Records still held, and requests in flight (held records and the sink's own). */
    void (*sink_pending)(const cmk_bk_sink *k, unsigned *held, unsigned *busy);
    /* Waits for everything in flight and leaves any mode a park must not keep (the local
     * sink's direct windows), so that set_io(NULL) may follow. */
    cmk_err (*sink_quiesce)(cmk_bk_sink *k, cmk_errbuf *eb);
    /* The engine the sink writes through from now on (NULL: none, the put is parked). */
    void (*sink_set_io)(cmk_bk_sink *k, cmk_io *io);
    /* CMK_BK_SCRATCH: keeps len bytes past the container's current end (replacing what an
     * earlier scratch_put kept), never published; scratch_get reads them back. */
    cmk_err (*sink_scratch_put)(cmk_bk_sink *k, const void *buf, size_t len, cmk_errbuf *eb);
    cmk_err (*sink_scratch_get)(cmk_bk_sink *k, void *buf, size_t len, cmk_errbuf *eb);
    /* Ends the container: tail (its last bytes) after the records, head (head_len bytes) in
     * front of them. Nothing is visible or durable yet. */
    cmk_err (*sink_finish)(cmk_bk_sink *k, const void *tail, size_t tail_len, const void *head,
                           cmk_errbuf *eb);
    /* Publishes n finished sinks (NULL entries are skipped, their results left as they are)
     * under keys[i]: all made durable
     * together, then each made visible only if absent (else keep() decides, see above), and
     * every name made durable, together, before results[i] is CMK_OK. ebs[i] receives each
     * failure. */
    void (*publish_many)(cmk_bk_blobs *bs, cmk_bk_sink *const *sinks, const char *const *keys,
                         size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                         cmk_errbuf *ebs);
    /* Drops the sink (an unpublished container with it); waits for its requests first. */
    void (*sink_close)(cmk_bk_sink *k);

    /* Opens blob `key` for reading through io (the caller's engine, used by its thread
     * only): CMK_E_NOT_FOUND if it is not there, CMK_E_CORRUPT if it is not a plain blob
     * (the local one: not a regular file). *size and *mtime (seconds) receive its stored
     * size and modification time. */
    cmk_err (*source_open)(cmk_bk_blobs *bs, const char *key, cmk_io *io, cmk_bk_source **out,
                           uint64_t *size, int64_t *mtime, cmk_errbuf *eb);
    /* Reads exactly len bytes at off, waiting; CMK_E_CORRUPT "<what> is truncated" past the
     * end. flags: CMK_BK_READ_ANY. */
    cmk_err (*source_read)(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                           const char *what, unsigned flags, cmk_errbuf *eb);
    /* Queues a read into buf (valid until its completion is polled) under tag; CMK_E_BUSY if
     * the engine is full (poll first). flags: CMK_BK_READ_COLD. */
    cmk_err (*source_queue)(cmk_bk_source *src, void *buf, size_t len, uint64_t off, uint64_t tag,
                            unsigned flags, cmk_errbuf *eb);
    /* Submits queued reads and collects up to max completions (res: bytes read, or
     * -errno), waiting for one if wait and any is in flight. The count, or -1 with eb set
     * if the engine itself failed, or if a read failed for a reason an errno would lose (an
     * object store's error: which object, which endpoint, after how many tries). */
    int (*source_poll)(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb);
    /* The caller reads [start, end) front to back from now on (a readahead hint). 1 if the
     * range is cold (not cached): its reads are then queued with CMK_BK_READ_COLD. */
    int (*source_advise)(cmk_bk_source *src, uint64_t start, uint64_t end);
    /* Closes the source, once its reads in flight have completed. */
    void (*source_close)(cmk_bk_source *src);

    /* Deletes blob `key` durably; CMK_E_NOT_FOUND if it is not there. */
    cmk_err (*blob_delete)(cmk_bk_blobs *bs, const char *key, cmk_errbuf *eb);
    /* Calls cb with the key of every blob (order unspecified); a nonzero return stops. */
    cmk_err (*blob_list)(cmk_bk_blobs *bs, int (*cb)(const char *key, void *arg), void *arg,
                         cmk_errbuf *eb);
    /* Frees the blob space (sinks are closed before). */
    void (*close)(cmk_bk_blobs *bs);
};

/* The key of digest "<alg>:<hex>" (checked: CMK_E_INVAL). */
CMK_MUST_CHECK cmk_err cmk_bk_blob_key(const char *digest, char key[CMK_BK_KEY_MAX],
                                       cmk_errbuf *eb);
/* The digest "<alg>:<hex>" of a key (the inverse). */
void cmk_bk_blob_digest(const char *key, char *digest, size_t cap);

/* ---- engine-side calls (blob.c): dispatch through the space's ops ---- */

unsigned cmk_bk_blob_caps(const cmk_bk_blobs *bs);
CMK_MUST_CHECK cmk_err cmk_bk_sink_create(cmk_bk_blobs *bs, cmk_io *io, uint32_t head_len,
                                          uint32_t chunk_size, cmk_bk_sink **out, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_sink_append(cmk_bk_sink *k, const void *rec, size_t len, uint64_t tag,
                                          unsigned flags, int *held, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_sink_poll(cmk_bk_sink *k, uint64_t *tags, int max, int wait, int *n,
                                        cmk_errbuf *eb);
void cmk_bk_sink_pending(const cmk_bk_sink *k, unsigned *held, unsigned *busy);
CMK_MUST_CHECK cmk_err cmk_bk_sink_quiesce(cmk_bk_sink *k, cmk_errbuf *eb);
void cmk_bk_sink_set_io(cmk_bk_sink *k, cmk_io *io);
CMK_MUST_CHECK cmk_err cmk_bk_sink_scratch_put(cmk_bk_sink *k, const void *buf, size_t len,
                                               cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_sink_scratch_get(cmk_bk_sink *k, void *buf, size_t len,
                                               cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_sink_finish(cmk_bk_sink *k, const void *tail, size_t tail_len,
                                          const void *head, cmk_errbuf *eb);
void cmk_bk_publish_many(cmk_bk_blobs *bs, cmk_bk_sink *const *sinks, const char *const *keys,
                         size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                         cmk_errbuf *ebs);
void cmk_bk_sink_close(cmk_bk_sink *k); /* NULL: nothing */
CMK_MUST_CHECK cmk_err cmk_bk_source_open(cmk_bk_blobs *bs, const char *key, cmk_io *io,
                                          cmk_bk_source **out, uint64_t *size, int64_t *mtime,
                                          cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_source_read(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                                          const char *what, unsigned flags, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                                           uint64_t tag, unsigned flags, cmk_errbuf *eb);
int cmk_bk_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb);
int cmk_bk_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end);
void cmk_bk_source_close(cmk_bk_source *src); /* NULL: nothing */
CMK_MUST_CHECK cmk_err cmk_bk_blob_delete(cmk_bk_blobs *bs, const char *key, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_blob_list(cmk_bk_blobs *bs, int (*cb)(const char *key, void *arg),
                                        void *arg, cmk_errbuf *eb);
void cmk_bk_blobs_close(cmk_bk_blobs *bs); /* NULL: nothing */

#endif
