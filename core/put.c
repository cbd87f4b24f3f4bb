/*
 * put.c — the write pipeline.
 *
 * The caller's thread copies plaintext into chunk slots. The digest (SHA-256 is serial per
 * blob) runs on a thread of its own over the slots in order, so the caller's thread only
 * copies and issues I/O; a blob of one chunk is hashed inline instead (no thread for a
 * manifest). Each full chunk is handed to the worker pool, which compresses and seals it
 * in its slot (blobseal.c). Memory per put is bounded by the slot count (the store's queue
 * depth) times about twice the chunk size, whatever the blob's size.
 *
 * A chunk is dispatched only when the next byte arrives (or at commit), so that the last
 * chunk is known to be last when it is sealed: the is-last marker is part of its AAD.
 *
 * The sealed records go, in order, to the store's blob sink (core/backend/blob.h): the local
 * backend writes them into a temporary file through the put's I/O engine, several in
 * flight, with writeback pacing and O_DIRECT windows, and publishes it under the digest at
 * commit (core/backend/local_blob.c). A slot whose record the sink holds is reused once the
 * sink reports the record written.
 *
 * Batched commits (cmk_put_commit_many) finish every blob first, then hand them all to the
 * sink's publish, which makes them durable and visible together (a few journal commits
 * instead of two per blob locally); no commit returns before its blob is durable.
 *
 * Parking (cmk_put_park, an upload session between requests): the chunks in flight are
 * finished, then the slots, the engine and the digest thread are given back. The chunk being
 * filled cannot be sealed as a chunk yet (whether it is the last is not known); if it is
 * larger than a small buffer and the backend keeps scratch bytes (CMK_BK_SCRATCH) it is
 * sealed under the blob key with a nonce of its own domain (CMK_NONCE_SPILL, counted per
 * spill) into the sink's scratch, and read back at the next write; elsewhere it stays in its
 * buffer. A put fails as soon as the store loses key access (its access generation moves),
 * even if access is back by the next write, and its blob key is wiped then.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/blob.h"
#include "core/blobseal.h"
#include "core/compress.h"
#include "core/digest.h"
#include "core/format.h"
#include "core/base/secmem.h"
#include "core/put_internal.h"
#include "core/store_internal.h"

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

/* Keeps the first failure (sticky). */
static cmk_err put_fail(cmk_put *p, cmk_err rc, const cmk_errbuf *src)
{
    return cmk_errbuf_first(&p->failed, &p->eb, rc, src);
}

static struct put_slot *slot_of(cmk_put *p, uint64_t index)
{
    return &p->slots[index % p->nslots];
}

static cmk_err unpark(cmk_put *p, cmk_errbuf *eb);

/* Submits the sink's queued writes and frees the slots whose records it has written
 * (waiting for at least one completion if `wait`). */
static void pump(cmk_put *p, int wait)
{
    uint64_t tags[32];
    cmk_errbuf eb = {0};
    int n = 0;
    cmk_err rc = cmk_bk_sink_poll(p->sink, tags, 32, wait, &n, &eb);

    for (int i = 0; i < n; i++)
        slot_of(p, tags[i])->state = SLOT_FREE;
    if (rc != CMK_OK)
        put_fail(p, rc, &eb);
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
        if (p->failed == CMK_OK) {
            /* A one-chunk blob: nothing to overlap with, the sink may write it at once. */
            unsigned flags = sl->last && p->issued == 0 ? CMK_BK_APPEND_NOW : 0;
            int held = 0;

            rc = cmk_bk_sink_append(p->sink, sl->rec, sl->rec_len, p->issued, flags, &held, &eb);
            if (rc != CMK_OK)
                put_fail(p, rc, &eb);
            sl->state = rc == CMK_OK && held ? SLOT_WRITING : SLOT_FREE;
        } else {
            sl->state = SLOT_FREE;
        }
        p->file_off += sl->rec_len;
        p->issued++;
    }
}

/* Drives the pipeline until `until` returns true. */
static void drive(cmk_put *p, int (*until)(cmk_put *, void *), void *arg)
{
    for (;;) {
        struct put_slot *next;
        unsigned held, busy;
        int cpu_pending;

        issue_writes(p);
        pump(p, 0);
        if (until(p, arg))
            return;
        /* A slot the sink holds is freed by its write's completion, so wait for the disk
         * while one is in flight. The sink's own requests (writeback, direct windows) are no
         * reason to: no slot waits for them, and a background fdatasync can take tens of
         * milliseconds while the digest thread finishes the chunk that is needed in a
         * fraction of one (a 140 MiB layer put measured 9-38% faster in five pairs,
         * bench/RESULTS.md). Then wait for the sealers and the digest thread: they change
         * state under mu and broadcast, so checking under mu first loses no wakeup. */
        cmk_bk_sink_pending(p->sink, &held, &busy);
        if (held > 0) {
            pump(p, 1);
            continue;
        }
        next = slot_of(p, p->issued);
        pthread_mutex_lock(&p->mu);
        cpu_pending =
            (p->issued < p->dispatched && next->state == SLOT_SEALING) || p->hashed < p->hash_avail;
        if (cpu_pending)
            pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (!cpu_pending && busy > 0)
            pump(p, 1);
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
    unsigned held, busy;
    int hashed;

    (void)arg;
    cmk_bk_sink_pending(p->sink, &held, &busy);
    if (p->issued != p->dispatched || busy != 0)
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
    return (size_t)(depth + 1) * (chunk_size + rec) + CMK_BK_SINK_BUF_MAX;
}

/* ---- public API ---- */

/* Waits until no worker or digest thread uses the put's slots or key. */
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

void cmk_put_free(cmk_put *p)
{
    if (!p)
        return;
    put_quiesce(p);
    /* The sink waits for its writes: then no request uses a slot's record. */
    cmk_bk_sink_close(p->sink);
    if (p->slots) {
        for (unsigned i = 0; i < p->nslots; i++)
            slot_release(p, &p->slots[i]);
        free(p->slots);
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
    rc = cmk_bk_sink_create(s->blobs, p->io, CMK_FMT_HEADER_SIZE, s->chunk_size, &p->sink, &eb);
    if (rc != CMK_OK)
        goto out;
    p->file_off = CMK_FMT_HEADER_SIZE;
    *out = p;
    p = NULL;
out:
    cmk_pool_sec_put(s->pool, dek, CMK_DEK_LEN);
    cmk_put_free(p);
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

static int all_issued(cmk_put *p, void *arg)
{
    (void)arg;
    return p->issued == p->dispatched;
}

cmk_err cmk_put_drain(cmk_put *p)
{
    if (!p)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_drain: NULL put");
    /* A parked put has nothing in flight (parking waited for it). */
    if (access_check(p) != CMK_OK || p->parked)
        return cmk_publish(&p->eb, p->failed);
    /* Only the caller's thread hands sealed chunks to the sink (the sink is not shared with
     * the workers), and it does so when it needs a slot: a caller about to wait for input
     * would otherwise leave every chunk sealed since its last write waiting for the next one
     * (an s3:// put paused past a part's end started no upload while paused). */
    drive(p, all_issued, NULL);
    return cmk_publish(&p->eb, p->failed);
}

/* ---- parking (see the top) ---- */

/* Seals the unfinished chunk (in slot sl) into the sink's scratch: ciphertext, then tag. */
static cmk_err spill_write(cmk_put *p, struct put_slot *sl, cmk_errbuf *eb)
{
    uint32_t n = sl->plain_len;
    cmk_err rc;

    /* The record buffer is larger than the chunk and its tag: ciphertext goes there, so the
     * plaintext is wiped with its buffer. */
    rc = cmk_blobseal_spill(p->bk, p->header, p->spill_seq++, sl->plain, n, sl->rec, eb);
    if (rc == CMK_OK)
        rc = cmk_bk_sink_scratch_put(p->sink, sl->rec, (size_t)n + CMK_TAG_LEN, eb);
    if (rc == CMK_OK)
        p->spill_len = n;
    return rc;
}

/* Reads the spilled chunk back into a slot, which becomes the one being filled. */
static cmk_err spill_read(cmk_put *p, cmk_errbuf *eb)
{
    struct put_slot *sl = slot_of(p, p->dispatched);
    uint32_t n = p->spill_len;
    cmk_err rc;

    rc = slot_buffers(p, sl, p->s->chunk_size, eb);
    if (rc == CMK_OK)
        rc = cmk_bk_sink_scratch_get(p->sink, sl->rec, (size_t)n + CMK_TAG_LEN, eb);
    if (rc == CMK_OK)
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
    cmk_bk_sink_set_io(p->sink, p->io);
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
    if (p->failed == CMK_OK && (rc = cmk_bk_sink_quiesce(p->sink, &eb)) != CMK_OK)
        put_fail(p, rc, &eb);
    if (p->failed != CMK_OK)
        return cmk_publish(&p->eb, p->failed);
    /* Every dispatched chunk is hashed (all_done): the thread is started again if needed. */
    hasher_stop(p);
    p->hasher_stop = 0;
    cur = p->cur;
    if (cur && cur->plain_len > CMK_SMALL_BUF && (cmk_bk_blob_caps(p->s->blobs) & CMK_BK_SCRATCH)) {
        rc = spill_write(p, cur, &eb);
        if (rc != CMK_OK)
            return cmk_publish(&p->eb, put_fail(p, rc, &eb));
        p->cur = cur = NULL;
    } else if (cur && cur->plain_cap > CMK_SMALL_BUF && cur->plain_len <= CMK_SMALL_BUF) {
        rc = slot_buffers(p, cur, CMK_SMALL_BUF, &eb);
        if (rc != CMK_OK)
            return cmk_publish(&p->eb, put_fail(p, rc, &eb));
    }
    for (unsigned i = 0; i < p->nslots; i++)
        if (&p->slots[i] != cur)
            slot_release(p, &p->slots[i]);
    cmk_bk_sink_set_io(p->sink, NULL);
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

cmk_err cmk_put_settle(cmk_put *p, cmk_errbuf *eb)
{
    cmk_err rc;

    if (access_check(p) == CMK_OK) {
        rc = unpark(p, eb);
        if (rc != CMK_OK)
            put_fail(p, rc, eb);
    }
    if (p->failed != CMK_OK)
        *eb = p->eb;
    return p->failed;
}

cmk_err cmk_put_flush(cmk_put *p, cmk_errbuf *eb)
{
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
    if (p->hash_eb.code != CMK_OK)
        *eb = p->hash_eb;
    return p->hash_eb.code;
}

void cmk_put_abort(cmk_put *p)
{
    cmk_put_free(p);
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
