/*
 * s3_internal.h — the S3 backend's state, shared by its files (core/backend/s3*.c). Not for
 * the engine: it goes through backend.h.
 */
#ifndef CMK_BACKEND_S3_INTERNAL_H
#define CMK_BACKEND_S3_INTERNAL_H

#include <pthread.h>

#include "core/backend/backend.h"
#include "core/backend/s3_http.h"

/* Objects a staged (unpublished) store has written, deleted if it is closed unpublished. */
#define S3_STAGED_MAX 16

typedef struct cmk_s3_bk {
    cmk_backend base; /* first: a cmk_backend * is a cmk_s3_bk * */
    cmk_s3_http *http;
    char name[700]; /* s3://bucket[/prefix], for messages */
    int staged;     /* a new store: store.json held back until publish */
    void *held_cfg; /* staged: the store.json to publish */
    size_t held_len;
    pthread_mutex_t mu; /* guards the staged list */
    char written[S3_STAGED_MAX][CMK_REC_NAME_MAX + 40];
    int nwritten;
} cmk_s3_bk;

static inline cmk_s3_bk *cmk_s3_of(cmk_backend *b)
{
    return (cmk_s3_bk *)b;
}

extern const cmk_backend_ops cmk_s3_ops;

/* Lists every object below key prefix `pfx` (below the store's prefix) in key order, after
 * key `after` (relative too; NULL or "": from the first), calling cb with the key relative
 * to the store's prefix and the size; a nonzero return stops. */
CMK_MUST_CHECK cmk_err cmk_s3_list(cmk_s3_bk *s, const char *pfx, const char *after,
                                   int (*cb)(const char *key, uint64_t size, void *arg), void *arg,
                                   cmk_errbuf *eb);

/* As cmk_s3_list from the first key, with each object's LastModified (seconds; -1 if the
 * listing has none). */
CMK_MUST_CHECK cmk_err cmk_s3_list_mtime(cmk_s3_bk *s, const char *pfx,
                                         int (*cb)(const char *key, uint64_t size, int64_t mtime,
                                                   void *arg),
                                         void *arg, cmk_errbuf *eb);

/* A random writer nonce (32 hex) for x-amz-meta-cmk-writer. */
CMK_MUST_CHECK cmk_err cmk_s3_nonce(char out[33], cmk_errbuf *eb);
/* Makes conditional PUT r, which carries a writer nonce (r->writer). A 412 after a retry
 * may be its own first attempt's write (the answer lost, or a 500 that RGW 16 answers to one
 * of two racing conditional writes, having written): if the object holds that nonce, the
 * PUT succeeded (CMK_OK, r->etag its version). */
CMK_MUST_CHECK cmk_err cmk_s3_put(cmk_s3_bk *s, cmk_s3_req *r, cmk_errbuf *eb);

/* Remembers an object a staged store wrote. */
void cmk_s3_note_written(cmk_s3_bk *s, const char *key);

/* The blob space (s3_blob.c; its files: s3_blob.h). */
CMK_MUST_CHECK cmk_err cmk_s3_blobs_open_op(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                                            atomic_int *direct_state, cmk_bk_blobs **out,
                                            cmk_errbuf *eb);

/* The sweeps of writers' leftovers (s3_sweep.c). The grace, in seconds: CMKSTORE_S3_ORPHAN_GRACE
 * if set (decimal), else 24 h; CMK_E_INVAL naming the variable if it is not a number. */
CMK_MUST_CHECK cmk_err cmk_s3_orphan_grace(int64_t *out, cmk_errbuf *eb);
/* Aborts the incomplete multipart uploads under data/ started before cutoff (seconds since
 * the epoch); dry: counts them only. Best effort: a listing that fails ends it quietly.
 * Returns how many were (or would be) aborted. */
uint64_t cmk_s3_sweep_uploads(cmk_s3_bk *s, int64_t cutoff, int dry);
/* The backend's sweep op (backend.h): the uploads above, then the data objects no link names. */
CMK_MUST_CHECK cmk_err cmk_s3_sweep_op(cmk_backend *b, unsigned flags, cmk_bk_sweep_stats *out,
                                       cmk_errbuf *eb);

#endif
