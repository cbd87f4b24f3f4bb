/*
 * s3_blob.h — the S3 blob space's state, shared by its files (not for the engine, which goes
 * through blob.h):
 *   s3_blob.c     the space: its ops table, open and close, delete, list
 *   s3_pool.c     the worker threads and their queue: part uploads and queued reads
 *   s3_sink.c     a container streamed into a multipart upload while it is sealed
 *   s3_publish.c  completing the upload and making it visible only if absent (link objects)
 *   s3_source.c   a published container read with ranged GETs
 * The sink and the source hand work to the pool as jobs; the pool runs them on its threads.
 */
#ifndef CMK_BACKEND_S3_BLOB_H
#define CMK_BACKEND_S3_BLOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/backend/blob.h"
#include "core/base/pool.h"
#include "core/backend/s3_internal.h"
#include "core/backend/s3_link.h"

/* S3_P1: the first part's bytes after the header, S3's minimum part size (every part but
 * the last must hold 5 MiB). The first part is sent only at finish, after the last byte is
 * sealed: the smaller it is, the sooner the parts after it start and the less is left to
 * send at the end. S3_PART: the parts after it. */
#define S3_P1   (5u << 20)
#define S3_PART (16u << 20)
/* The multipart upload is started once the second part holds this many bytes: smaller
 * containers (header + 9 MiB) are one object, PUT at publish. */
#define S3_START      (4u << 20)
#define S3_HEAD_CACHE (64u << 10)
#define S3_READERS    4
#define S3_SRC_QMAX   16
/* Adjacent queued reads are merged into one ranged GET of at most this many bytes. */
#define S3_GET_MAX (4u << 20)
/* A read front to back of at least this many bytes (cmk_s3_source_advise) is one streamed
 * GET instead: ranged GETs of a few MiB ran at 80% of one GET of the same bytes from RGW,
 * each a new lookup in the gateway and a pause in the stream. */
#define S3_STREAM_MIN (8u << 20)
/* Streams running at once in a blob space (each a thread and a connection): past this, long
 * reads are ranged GETs on the workers, as short ones are. */
#define S3_STREAMS_MAX 64
/* Parts of one sink uploading at once (each holds an S3_PART buffer). One part PUT to RGW
 * runs well below what the gateway takes (each waits on the gateway's own writes): with four
 * in flight a put of random data went from 60% of a raw PUT's rate to 77% (README), and with
 * 16 MiB parts instead of 8 from 70% to 80% (fewer, longer requests: 8 x 4, 16 x 2, 16 x 3,
 * 16 x 4 and 32 x 2 MiB measured, 16 x 4 and 32 x 2 best). At most S3_READERS (the workers
 * run them). */
#define S3_UP_MAX 4
#define LINK_MAX  CMK_S3_LINK_MAX

typedef struct s3_blobs s3_blobs;
typedef struct s3_source s3_source;
struct s3_sink;

struct job {
    s3_source *src; /* a read, or NULL: an upload of part `part` of sink */
    struct s3_sink *sink;
    int part;
    void *buf;
    size_t len;
    uint64_t off, tag;
    struct job *next;
};

struct s3_blobs {
    cmk_bk_blobs base;
    cmk_s3_bk *bk;
    cmk_pool *pool; /* the store's: part buffers are taken there and given back */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail;
    int stop;
    int nthreads;
    atomic_int streams; /* streamed GETs running (s3_source.c) */
    pthread_t th[S3_READERS];
};

typedef struct s3_sink {
    cmk_bk_sink base;
    /* Parts past the first are uploaded by the space's worker threads, S3_UP_MAX at a time,
     * while the put goes on sealing; mu guards what they change (uploading, spare, etags,
     * failed, eb). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int uploading; /* jobs queued or running: part uploads and the start of the upload */
    int started;   /* the start of the multipart upload was queued (upload_id set once done) */
    uint8_t *spare[S3_UP_MAX];
    int nspare;
    s3_blobs *bs;
    uint32_t head_len;
    uint8_t *p1; /* the first part: header room and the first S3_P1 bytes */
    size_t p1_len;
    int p1_pooled; /* p1 is an S3_PART buffer of the pool (else malloc'd) */
    uint8_t *cur;  /* the part filling */
    size_t cur_len;
    uint64_t total;
    int nparts; /* parts uploaded (2..) */
    char (*etags)[72];
    int etag_cap;
    char data_key[CMK_BK_KEY_MAX + 40];
    char upload_id[512]; /* "" until the multipart upload is started */
    int finished, completed;
    cmk_err failed;
    cmk_errbuf eb;
} s3_sink;

struct s3_source {
    cmk_bk_source base;
    s3_blobs *bs;
    char key[CMK_BK_KEY_MAX + 48]; /* the object holding the bytes */
    uint64_t size;
    uint8_t *cache;
    size_t cache_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    cmk_io_cqe done[S3_SRC_QMAX];
    int ndone;
    cmk_errbuf eb; /* the first queued read's failure (why: endpoint, object, tries), or 0 */
    /* The stream (s3_source.c): reads that continue the advised range join sq, in order, and
     * one GET of the rest of the range, run by a thread of its own, writes into them as its
     * body arrives. st: 0 none yet, 1 running, 2 over (later reads go to the workers). mu
     * guards all but sq_fill and st_left, which only the stream's thread uses. */
    uint64_t st_next, st_end;
    struct job *sq_head, *sq_tail;
    size_t sq_fill;
    uint64_t st_left; /* bytes the GET may still deliver (the stream's thread only) */
    int st, closing, st_joinable;
    pthread_t st_th;
};

static inline s3_blobs *bs_of(cmk_bk_blobs *b)
{
    return (s3_blobs *)b;
}

/* ---- the pool (s3_pool.c) ---- */

/* Starts the space's S3_READERS worker threads (bs->mu, cv initialised by the caller). */
CMK_MUST_CHECK cmk_err cmk_s3_pool_start(s3_blobs *bs, cmk_errbuf *eb);
/* Stops them once the queue is empty and joins them; frees nothing. */
void cmk_s3_pool_stop(s3_blobs *bs);
/* Queues job j (a part upload or a read), run by the next free worker. */
void cmk_s3_pool_push(s3_blobs *bs, struct job *j);

/* ---- the sink (s3_sink.c) ---- */

/* Part buffers (S3_PART bytes) come from the store's buffer pool and go back to it: a put
 * that faulted in fresh pages for each of its parts spent up to half its CPU zeroing them
 * (first-touch faults in a VM), more than its sealing. */
void *cmk_s3_part_buf(s3_blobs *bs);
void cmk_s3_part_buf_put(s3_blobs *bs, void *buf);

CMK_MUST_CHECK cmk_err cmk_s3_sink_create(cmk_bk_blobs *b, cmk_io *io, uint32_t head_len,
                                          uint32_t chunk_size, cmk_bk_sink **out, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_s3_sink_append(cmk_bk_sink *ks, const void *rec, size_t len,
                                          uint64_t tag, unsigned flags, int *held, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_s3_sink_poll(cmk_bk_sink *ks, uint64_t *tags, int max, int wait, int *n,
                                        cmk_errbuf *eb);
void cmk_s3_sink_pending(const cmk_bk_sink *ks, unsigned *held, unsigned *busy);
CMK_MUST_CHECK cmk_err cmk_s3_sink_quiesce(cmk_bk_sink *ks, cmk_errbuf *eb);
void cmk_s3_sink_set_io(cmk_bk_sink *ks, cmk_io *io);
CMK_MUST_CHECK cmk_err cmk_s3_sink_finish(cmk_bk_sink *ks, const void *tail, size_t tail_len,
                                          const void *head, cmk_errbuf *eb);
void cmk_s3_sink_close(cmk_bk_sink *ks);
/* Runs a sink's job on a worker: the upload of a part, or (part 0) the start of the upload. */
void cmk_s3_part_job(struct job *j);

/* ---- publishing (s3_publish.c) ---- */

void cmk_s3_publish_many(cmk_bk_blobs *b, cmk_bk_sink *const *sinks, const char *const *keys,
                         size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                         cmk_errbuf *ebs);
/* Reads the first first_cap bytes of object bkey into first (*first_len of them, of
 * *obj_size in all; *mtime its time) and tells whether it is a link (*is_link; then data
 * receives the data key it names, *size the size it gives). CMK_E_NOT_FOUND if absent,
 * CMK_E_CORRUPT if it is a malformed link. */
CMK_MUST_CHECK cmk_err cmk_s3_read_link(cmk_s3_bk *bk, const char *bkey, char *data, size_t cap,
                                        uint64_t *size, int *is_link, uint64_t *obj_size,
                                        int64_t *mtime, uint8_t *first, size_t first_cap,
                                        size_t *first_len, cmk_errbuf *eb);
/* Deletes object key, best effort (what is left is unreachable garbage). */
void cmk_s3_delete_key(cmk_s3_bk *bk, const char *key);

/* ---- the source (s3_source.c) ---- */

CMK_MUST_CHECK cmk_err cmk_s3_source_open(cmk_bk_blobs *b, const char *key, cmk_io *io,
                                          cmk_bk_source **out, uint64_t *size, int64_t *mtime,
                                          cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_s3_source_read(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                                          const char *what, unsigned flags, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_s3_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                                           uint64_t tag, unsigned flags, cmk_errbuf *eb);
int cmk_s3_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb);
int cmk_s3_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end);
void cmk_s3_source_close(cmk_bk_source *src);
/* Takes from the queue (bs->mu held) the reads that continue j's range (see s3_source.c);
 * how many jobs js holds, j first. */
int cmk_s3_source_take(s3_blobs *bs, struct job *j, struct job **js);
/* Runs the n adjacent reads of js (one ranged GET) and reports them to their source; frees
 * the jobs. */
void cmk_s3_source_run(struct job **js, int n);

#endif
