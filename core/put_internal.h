/*
 * put_internal.h — the put stream's state, shared by put.c (the pipeline: slots, sealing
 * workers, the digest thread, parking) and put_commit.c (finishing and publishing). Not
 * installed; nothing else includes it.
 */
#ifndef CMK_PUT_INTERNAL_H
#define CMK_PUT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "core/backend/blob.h"
#include "core/digest.h"
#include "core/format.h"
#include "core/base/pool.h"
#include "core/seal.h"
#include "core/store_internal.h"

enum { SLOT_FREE, SLOT_FILLING, SLOT_SEALING, SLOT_SEALED, SLOT_WRITING };

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

    cmk_bk_sink *sink; /* where the records go (the store's blob space) */
    cmk_io *io;

    struct put_slot *slots;
    unsigned nslots;
    struct put_slot *cur; /* slot being filled */
    uint64_t dispatched;  /* chunks handed to sealing */
    uint64_t issued;      /* chunks whose write was queued */
    uint64_t file_off;    /* offset of the next record in the container */
    uint64_t plain_total;
    int raw_only; /* already-compressed content (gzip/zstd magic): no zstd attempts */

    uint64_t gen;       /* the store's access generation at begin */
    int parked;         /* cmk_put_park gave the engine and the buffers back */
    uint32_t spill_len; /* parked: plaintext of the unfinished chunk in the sink's scratch */
    uint64_t spill_seq; /* spills so far: the nonce counter of the next */

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

/* Fails the put if it has failed or lost key access (see access_check), else takes back
 * what a park gave away. The put's sticky error, with eb filled. */
CMK_MUST_CHECK cmk_err cmk_put_settle(cmk_put *p, cmk_errbuf *eb);
/* Seals the chunk being filled as the last one and waits until every chunk is sealed,
 * written and hashed; the digest thread is stopped. */
CMK_MUST_CHECK cmk_err cmk_put_flush(cmk_put *p, cmk_errbuf *eb);
/* Frees the put: waits for its workers, digest thread and sink, drops the sink (an
 * unpublished container with it), wipes and returns its buffers and key. NULL: nothing. */
void cmk_put_free(cmk_put *p);

#endif
