/*
 * get.c — the read pipeline: open and authenticate a blob's header and index, then stream
 * the chunks covering the requested range. Reads are issued ahead through the I/O engine
 * (up to the store's queue depth, behind the kernel's own readahead), each completed record is
 * authenticated and decompressed by the worker pool, and chunks are delivered in order. No byte
 * reaches the caller before the GCM tag of its chunk has verified.
 *
 * Error classes: a checksum (xxh3) mismatch or a structural problem is CMK_E_CORRUPT (torn
 * write, media error, truncation); a tag or commitment failure with intact checksums is
 * CMK_E_INTEGRITY (deliberate tampering, or a file from another store).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/blobseal.h"
#include "core/digest.h"
#include "core/format.h"
#include "core/base/secmem.h"
#include "core/store_internal.h"

enum { GSLOT_FREE, GSLOT_READING, GSLOT_OPENING, GSLOT_READY };

struct get_slot {
    cmk_job job;
    cmk_get *g;
    uint64_t index;
    uint8_t *rec;
    uint32_t rec_len;
    uint8_t *plain;
    const uint8_t *out; /* the chunk's plaintext: plain, or a raw chunk's payload in rec */
    uint32_t plain_len;
    uint32_t rec_hwm;   /* most bytes the record buffer has held (decrypted in place) */
    uint32_t plain_hwm; /* most bytes written to plain */
    int state;
    cmk_errbuf eb;
};

struct cmk_get {
    cmk_store *s;
    cmk_errbuf eb;
    cmk_err failed;
    cmk_bk_source *src; /* the blob, through the store's backend */
    uint64_t stored;    /* its stored size */
    int64_t mtime;
    cmk_fmt_header h;
    uint8_t header[CMK_FMT_HEADER_SIZE];
    cmk_blobkey *bk;
    cmk_fmt_index_entry *idx;
    cmk_blob_info info;

    uint64_t pos, end;     /* next byte to deliver, end of range (exclusive) */
    uint64_t next_read;    /* next chunk to read */
    uint64_t next_deliver; /* chunk being delivered */
    uint64_t last_chunk;   /* last chunk of the range (inclusive) */
    uint32_t deliver_off;  /* offset within the chunk being delivered */
    uint32_t rec_cap;      /* slot buffer sizes: chunk-sized, or smaller for a blob */
    uint32_t plain_cap;    /* smaller than one chunk */

    cmk_io *io;
    struct get_slot *slots;
    unsigned nslots;
    unsigned io_inflight;
    int cold;          /* the range was not in the page cache at open: its reads are cold reads */
    int check_records; /* cmk_verify: every record's xxh3 check too (see auth_failed) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* ---- opening a chunk (worker side) ---- */

static cmk_err check_mismatch(struct get_slot *sl)
{
    return cmk_errbuf_set(&sl->eb, CMK_E_CORRUPT,
                          "chunk %llu checksum mismatch (torn write or media error)",
                          (unsigned long long)sl->index);
}

/* A chunk record's xxh3 check serves the error message: torn or corrupt, or forged. The GCM
 * tag covers every byte the check covers but the check itself, so a get computes the check
 * only when the tag fails, over the record read again from the file (a compressed chunk was
 * decrypted in place). On every chunk it took ~15% of a warm get's CPU (perf, RESULTS.md).
 * cmk_verify, a scrub, still checks every record first: it also finds a damaged check field.
 * A record that cannot be read again is reported as corrupt. */
static cmk_err auth_failed(cmk_get *g, struct get_slot *sl, const cmk_fmt_chunk *c)
{
    cmk_errbuf eb = {0};

    if (cmk_bk_source_read(g->src, sl->rec, sl->rec_len, g->idx[sl->index].offset, "blob chunk",
                           CMK_BK_READ_ANY, &eb) != CMK_OK ||
        !cmk_blobseal_check_ok(sl->rec, c))
        return check_mismatch(sl);
    return cmk_errbuf_set(&sl->eb, CMK_E_INTEGRITY,
                          "chunk %llu failed authentication (tampered or moved)",
                          (unsigned long long)sl->index);
}

static cmk_err open_chunk(cmk_get *g, struct get_slot *sl)
{
    cmk_fmt_chunk c;
    cmk_err rc;

    rc = cmk_blobseal_chunk_parse(&g->h, &g->idx[sl->index], sl->index, sl->rec, &c, &sl->eb);
    if (rc != CMK_OK)
        return rc;
    /* The buffers are sized from the blob's size (see cmk_get_open). */
    if (c.plain_len > g->plain_cap)
        return cmk_errbuf_set(&sl->eb, CMK_E_CORRUPT,
                              "chunk %llu is larger than the blob's size allows",
                              (unsigned long long)sl->index);
    /* A slot takes a plain buffer for its first compressed chunk (raw ones need none and are
     * delivered from rec: one buffer less for the caches to carry between the cores), and
     * notes what the decompression may write there, to be wiped at close. */
    if (c.flags & CMK_CHUNK_ZSTD) {
        if (!sl->plain && !(sl->plain = cmk_pool_buf_get(g->s->pool, g->plain_cap)))
            return cmk_errbuf_set(&sl->eb, CMK_E_NOMEM, "out of memory (chunk buffers)");
        if (c.plain_len > sl->plain_hwm)
            sl->plain_hwm = c.plain_len;
    }
    if (g->check_records && !cmk_blobseal_check_ok(sl->rec, &c))
        return check_mismatch(sl);
    rc = cmk_blobseal_chunk_open(g->bk, g->header, sl->index, sl->rec, &c, sl->plain, &sl->out,
                                 &sl->eb);
    if (rc == CMK_E_INTEGRITY)
        return auth_failed(g, sl, &c);
    if (rc != CMK_OK)
        return rc;
    sl->plain_len = c.plain_len;
    return CMK_OK;
}

/* Opens slot sl's chunk and marks it READY. On a worker (`worker`) that is done under mu
 * with a broadcast, as the caller may wait for it; inline the caller is the only one
 * looking. */
static void open_slot(cmk_get *g, struct get_slot *sl, int worker)
{
    cmk_err rc = open_chunk(g, sl);

    if (worker)
        pthread_mutex_lock(&g->mu);
    sl->eb.code = rc;
    sl->state = GSLOT_READY;
    if (worker) {
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
}

static void open_job(cmk_job *job)
{
    struct get_slot *sl = (struct get_slot *)job;

    open_slot(sl->g, sl, 1);
}

/* ---- pipeline (caller side) ---- */

/* Keeps the first failure (sticky). */
static cmk_err get_fail(cmk_get *g, cmk_err rc, const cmk_errbuf *src)
{
    return cmk_errbuf_first(&g->failed, &g->eb, rc, src);
}

static struct get_slot *gslot(cmk_get *g, uint64_t index)
{
    return &g->slots[index % g->nslots];
}

static int gstate(cmk_get *g, struct get_slot *sl)
{
    int st;
    pthread_mutex_lock(&g->mu);
    st = sl->state;
    pthread_mutex_unlock(&g->mu);
    return st;
}

static void issue_reads(cmk_get *g)
{
    while (g->failed == CMK_OK && g->next_read <= g->last_chunk) {
        struct get_slot *sl = gslot(g, g->next_read);
        const cmk_fmt_index_entry *e = &g->idx[g->next_read];
        cmk_errbuf eb = {0};

        if (gstate(g, sl) != GSLOT_FREE)
            return;
        if (!sl->rec)
            sl->rec = cmk_pool_buf_get(g->s->pool, g->rec_cap);
        if (!sl->rec) {
            get_fail(g, cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (chunk buffers)"), &eb);
            return;
        }
        sl->index = g->next_read;
        sl->g = g;
        if (cmk_fmt_record_len(e->stored_len) > g->rec_cap) {
            get_fail(g,
                     cmk_errbuf_set(&eb, CMK_E_CORRUPT,
                                    "chunk %llu is larger than the blob's size allows",
                                    (unsigned long long)sl->index),
                     &eb);
            return;
        }
        sl->rec_len = (uint32_t)cmk_fmt_record_len(e->stored_len);
        if (sl->rec_len > sl->rec_hwm)
            sl->rec_hwm = sl->rec_len;
        if (g->next_read == g->last_chunk && g->next_read == g->next_deliver &&
            g->io_inflight == 0) {
            /* The only chunk left (a small blob, or a range within one chunk): nothing to
             * overlap with, so read it directly and open it inline, no ring round trip. */
            cmk_err rc =
                cmk_bk_source_read(g->src, sl->rec, sl->rec_len, e->offset, "blob chunk", 0, &eb);
            g->next_read++;
            if (rc != CMK_OK) {
                if (rc == CMK_E_CORRUPT)
                    cmk_errbuf_set(&sl->eb, CMK_E_CORRUPT, "blob file truncated at chunk %llu",
                                   (unsigned long long)sl->index);
                else
                    cmk_errbuf_set(&sl->eb, rc, "cannot read chunk %llu: %s",
                                   (unsigned long long)sl->index, eb.msg);
                sl->state = GSLOT_READY;
                return;
            }
            sl->state = GSLOT_OPENING;
            open_slot(g, sl, 0);
            return;
        }
        /* Warm reads go through the ring, which copies from the page cache inline at submit.
         * Handing raw chunks' reads to io_uring's kernel workers (IOSQE_ASYNC) measured
         * 1.08-1.13x of sync on a 2-vCPU Intel, where the caller's thread was the bottleneck,
         * but 0.83-0.93x on a 2-vCPU AMD EPYC, slower in 6-8 of 8 pairs (RESULTS.md, twelfth
         * session): at least as fast as sync everywhere wins. */
        if (cmk_bk_source_queue(g->src, sl->rec, sl->rec_len, e->offset, sl->index,
                                g->cold ? CMK_BK_READ_COLD : 0, &eb) != CMK_OK) {
            get_fail(g, eb.code, &eb);
            return;
        }
        sl->state = GSLOT_READING;
        g->io_inflight++;
        g->next_read++;
    }
}

static void pump_reads(cmk_get *g, int wait)
{
    cmk_io_cqe cqe[32];
    cmk_errbuf eb = {0};
    int n;

    n = cmk_bk_source_poll(g->src, cqe, 32, wait && g->io_inflight > 0, &eb);
    if (n < 0) {
        get_fail(g, eb.code, &eb);
        return;
    }
    for (int i = 0; i < n; i++) {
        struct get_slot *sl;
        g->io_inflight--;
        sl = gslot(g, cqe[i].tag);
        if (cqe[i].res < 0 || (uint64_t)cqe[i].res != sl->rec_len) {
            if (cqe[i].res < 0)
                cmk_errbuf_sys(&sl->eb, CMK_E_IO, (int)-cqe[i].res, "cannot read chunk %llu",
                               (unsigned long long)sl->index);
            else
                cmk_errbuf_set(&sl->eb, CMK_E_CORRUPT, "blob file truncated at chunk %llu",
                               (unsigned long long)sl->index);
            sl->state = GSLOT_READY;
            continue;
        }
        sl->eb.code = CMK_OK;
        sl->state = GSLOT_OPENING;
        /* The last chunk of the range, when it is also the next to deliver, is opened
         * inline: no worker hop for single-chunk blobs. */
        if (sl->index == g->last_chunk && sl->index == g->next_deliver) {
            open_slot(g, sl, 0);
        } else {
            sl->job.run = open_job;
            cmk_pool_submit(g->s->pool, &sl->job);
        }
    }
}

/* Waits until the chunk being delivered is READY. */
static void wait_ready(cmk_get *g)
{
    struct get_slot *sl = gslot(g, g->next_deliver);

    for (;;) {
        issue_reads(g);
        pump_reads(g, 0);
        int st = gstate(g, sl);
        if (st == GSLOT_READY)
            return;
        if (st == GSLOT_READING) {
            /* A failed poll leaves the slot reading for good: stop (the caller reports it). */
            if (g->failed != CMK_OK)
                return;
            pump_reads(g, 1);
            continue;
        }
        if (st == GSLOT_FREE && g->failed != CMK_OK)
            return;
        pthread_mutex_lock(&g->mu);
        while (sl->state == GSLOT_OPENING)
            pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
}

/* ---- opening a blob ---- */

size_t cmk_get_stream_bytes(uint32_t chunk_size, unsigned depth)
{
    return (size_t)depth * (chunk_size + cmk_fmt_record_max(chunk_size));
}

static cmk_err load_blob(cmk_get *g, const char *digest, cmk_errbuf *eb)
{
    cmk_store *s = g->s;
    uint8_t raw[CMK_DIGEST_RAW_MAX], *ibuf = NULL, *dek = NULL;
    char key[CMK_BK_KEY_MAX];
    uint64_t isize;
    int alg;
    cmk_err rc;

    rc = cmk_digest_parse(digest, &alg, raw, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_bk_blob_key(digest, key, eb);
    if (rc == CMK_OK)
        rc = cmk_bk_source_open(s->blobs, key, g->io, &g->src, &g->stored, &g->mtime, eb);
    if (rc == CMK_E_NOT_FOUND)
        cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "blob %s is not in the store", digest);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_bk_source_read(g->src, g->header, CMK_FMT_HEADER_SIZE, 0, "blob header", 0, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_fmt_header_decode(g->header, CMK_FMT_HEADER_SIZE, &g->h, eb);
    if (rc != CMK_OK)
        goto out;
    if (g->h.digest_alg != alg || memcmp(g->h.digest, raw, cmk_digest_len(alg)) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "the file stored for %s holds another blob (files swapped?)", digest);
        goto out;
    }
    if (g->stored != cmk_fmt_file_size(&g->h)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "blob file is %lld bytes, its header says %llu (truncated or "
                            "extended)",
                            (long long)g->stored, (unsigned long long)cmk_fmt_file_size(&g->h));
        goto out;
    }
    /* Keys first: a header that does not commit to this DEK is rejected before any chunk or
     * index byte is decrypted. */
    dek = cmk_pool_sec_get(s->pool, CMK_DEK_LEN);
    g->bk = cmk_pool_sec_get(s->pool, sizeof(*g->bk));
    if (!dek || !g->bk) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keys)");
        goto out;
    }
    rc = cmk_store_dek(s, g->h.dek_id, dek, NULL, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_blobseal_key_open(dek, &g->h, g->bk, eb);
    if (rc != CMK_OK)
        goto out;
    isize = cmk_fmt_index_size(g->h.chunk_count);
    ibuf = malloc((size_t)isize);
    g->idx = calloc(g->h.chunk_count ? (size_t)g->h.chunk_count : 1, sizeof(*g->idx));
    if (!ibuf || !g->idx) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (index)");
        goto out;
    }
    rc = cmk_bk_source_read(g->src, ibuf, (size_t)isize, g->h.index_offset, "blob index", 0, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_blobseal_index_open(g->bk, g->header, &g->h, ibuf, g->idx, eb);
    if (rc != CMK_OK)
        goto out;
    memset(&g->info, 0, sizeof(g->info));
    memcpy(g->info.digest, digest, strlen(digest) + 1);
    g->info.size = g->h.plain_size;
    g->info.stored_size = g->stored;
    g->info.chunk_size = g->h.chunk_size;
    g->info.chunk_count = g->h.chunk_count;
    g->info.dek_id = g->h.dek_id;
    g->info.format_version = g->h.version;
    g->info.mtime = g->mtime;
out:
    cmk_pool_sec_put(s->pool, dek, CMK_DEK_LEN);
    free(ibuf);
    return rc;
}

static void get_free(cmk_get *g)
{
    if (!g)
        return;
    if (g->slots) {
        pthread_mutex_lock(&g->mu);
        for (unsigned i = 0; i < g->nslots; i++)
            while (g->slots[i].state == GSLOT_OPENING)
                pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
        /* Its reads in flight complete before the buffers go back. */
        cmk_bk_source_close(g->src);
        g->src = NULL;
        for (unsigned i = 0; i < g->nslots; i++) {
            struct get_slot *sl = &g->slots[i];
            /* Decrypted bytes are wiped before the buffers go back to the pool: plaintext in
             * plain (at most a chunk), and what was decrypted in place in rec (at most what
             * was read). */
            if (sl->plain) {
                cmk_cleanse(sl->plain, sl->plain_hwm);
                cmk_pool_buf_put(g->s->pool, sl->plain, g->plain_cap);
            }
            if (sl->rec) {
                cmk_cleanse(sl->rec, sl->rec_hwm);
                cmk_pool_buf_put(g->s->pool, sl->rec, g->rec_cap);
            }
        }
        free(g->slots);
    }
    cmk_bk_source_close(g->src);
    if (g->io)
        cmk_store_io_put(g->s, g->io);
    cmk_pool_sec_put(g->s->pool, g->bk, sizeof(*g->bk));
    free(g->idx);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

cmk_err cmk_get_open(cmk_store *s, const char *digest, uint64_t offset, uint64_t length,
                     cmk_get **out)
{
    cmk_errbuf eb = {0};
    cmk_get *g = NULL;
    cmk_err rc;

    if (!s || !digest || !out)
        return cmk_set_last(CMK_E_INVAL, "cmk_get_open: NULL argument");
    *out = NULL;
    rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK && !(g = calloc(1, sizeof(*g))))
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (get)");
    if (rc != CMK_OK)
        goto out;
    g->s = s;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    rc = cmk_store_io_get(s, &g->io, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = load_blob(g, digest, &eb);
    if (rc != CMK_OK)
        goto out;
    if (offset > g->h.plain_size || (offset == g->h.plain_size && offset > 0 && length > 0)) {
        rc = cmk_errbuf_set(&eb, CMK_E_RANGE, "range start %llu is beyond the blob's %llu bytes",
                            (unsigned long long)offset, (unsigned long long)g->h.plain_size);
        goto out;
    }
    g->pos = offset;
    g->end = (length == CMK_TO_END || length > g->h.plain_size - offset) ? g->h.plain_size
                                                                         : offset + length;
    if (g->end > g->pos) {
        g->next_read = g->pos / g->h.chunk_size;
        g->next_deliver = g->next_read;
        g->deliver_off = (uint32_t)(g->pos % g->h.chunk_size);
        g->last_chunk = (g->end - 1) / g->h.chunk_size;
        g->nslots = cmk_store_depth(s);
        if (g->last_chunk - g->next_read + 1 < g->nslots)
            g->nslots = (unsigned)(g->last_chunk - g->next_read + 1);
        /* A blob smaller than the small buffer size (manifests, configs) gets small
         * buffers, the same sizes put uses, so the pool's cache serves both. */
        g->plain_cap = g->h.plain_size <= CMK_SMALL_BUF && g->h.chunk_size > CMK_SMALL_BUF
                           ? CMK_SMALL_BUF
                           : g->h.chunk_size;
        g->rec_cap = (uint32_t)cmk_fmt_record_max(g->plain_cap);
        g->slots = calloc(g->nslots, sizeof(*g->slots));
        if (!g->slots) {
            rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory (get)");
            goto out;
        }
        /* Several chunks are read at once, out of order at the edges: the backend is told
         * the range is read front to back (readahead), and says whether it is cold, so that
         * its reads are queued as cold reads (see cmk_bk_source_advise). */
        if (g->last_chunk > g->next_read) {
            const cmk_fmt_index_entry *le = &g->idx[g->last_chunk];
            g->cold = cmk_bk_source_advise(g->src, g->idx[g->next_read].offset,
                                           le->offset + cmk_fmt_record_len(le->stored_len));
        }
    }
    *out = g;
    g = NULL;
out:
    get_free(g);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_get_read(cmk_get *g, void *buf, size_t cap, size_t *n)
{
    uint8_t *dst = buf;
    size_t done = 0;
    cmk_errbuf eb = {0};

    if (!g || !n || (!buf && cap))
        return cmk_set_last(CMK_E_INVAL, "cmk_get_read: NULL argument");
    *n = 0;
    if (g->failed != CMK_OK)
        return cmk_publish(&g->eb, g->failed);
    while (done < cap && g->pos < g->end) {
        struct get_slot *sl = gslot(g, g->next_deliver);
        cmk_err rc;

        /* Revocation stops reads at the next chunk, not only at the next open. */
        rc = cmk_store_key_gate(g->s, &eb);
        if (rc != CMK_OK)
            return cmk_publish(&g->eb, get_fail(g, rc, &eb));
        wait_ready(g);
        if (g->failed != CMK_OK)
            return cmk_publish(&g->eb, g->failed);
        if (sl->eb.code != CMK_OK)
            return cmk_publish(&g->eb, get_fail(g, sl->eb.code, &sl->eb));
        size_t avail = sl->plain_len - g->deliver_off;
        size_t want = g->end - g->pos;
        size_t k = cap - done;
        if (k > avail)
            k = avail;
        if (k > want)
            k = want;
        memcpy(dst + done, sl->out + g->deliver_off, k);
        done += k;
        g->pos += k;
        g->deliver_off += (uint32_t)k;
        if (g->deliver_off == sl->plain_len || g->pos == g->end) {
            pthread_mutex_lock(&g->mu);
            sl->state = GSLOT_FREE;
            pthread_mutex_unlock(&g->mu);
            g->next_deliver++;
            g->deliver_off = 0;
        }
    }
    *n = done;
    return CMK_OK;
}

const cmk_blob_info *cmk_get_info(const cmk_get *g)
{
    return g ? &g->info : NULL;
}

void cmk_get_close(cmk_get *g)
{
    get_free(g);
}

/* ---- stat and verify ---- */

cmk_err cmk_stat(cmk_store *s, const char *digest, cmk_blob_info *out)
{
    cmk_get *g = NULL;
    cmk_err rc = cmk_get_open(s, digest, 0, 0, &g);

    if (rc != CMK_OK)
        return rc;
    if (out)
        *out = g->info;
    cmk_get_close(g);
    return CMK_OK;
}

cmk_err cmk_verify(cmk_store *s, const char *digest, cmk_blob_info *out)
{
    cmk_errbuf eb = {0};
    cmk_get *g = NULL;
    cmk_digest dg = {0};
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    uint8_t *buf = NULL;
    size_t n;
    cmk_err rc;

    rc = cmk_get_open(s, digest, 0, CMK_TO_END, &g);
    if (rc != CMK_OK)
        return rc;
    g->check_records = 1; /* no chunk has been opened yet: the reads start in cmk_get_read */
    buf = malloc(1u << 20);
    if (!buf) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    rc = cmk_digest_init(&dg, g->h.digest_alg, &eb);
    if (rc != CMK_OK)
        goto out;
    for (;;) {
        rc = cmk_get_read(g, buf, 1u << 20, &n);
        if (rc != CMK_OK) {
            eb = g->eb;
            goto out;
        }
        if (n == 0)
            break;
        rc = cmk_digest_update(&dg, buf, n, &eb);
        if (rc != CMK_OK)
            goto out;
    }
    rc = cmk_digest_final(&dg, raw, &eb);
    if (rc != CMK_OK)
        goto out;
    if (memcmp(raw, g->h.digest, cmk_digest_len(g->h.digest_alg)) != 0) {
        rc = cmk_errbuf_set(&eb, CMK_E_INTEGRITY,
                            "decrypted content of %s does not hash to its digest", digest);
        goto out;
    }
    if (out)
        *out = g->info;
out:
    cmk_digest_free(&dg);
    free(buf);
    cmk_get_close(g);
    return cmk_publish(&eb, rc);
}
