/*
 * io_uring.c — the io_uring engine (liburing).
 *
 * Every request owns a slot of a table sized to the depth; the slot index is the SQE's
 * user_data. Requests wait in their slots until cmk_io_submit turns them into SQEs, so a
 * request queued but never submitted never reaches the kernel. Short transfers, -EAGAIN and
 * -EINTR are resubmitted from the slot (fd, buffer, length, offset, bytes done so far) while
 * reaping; the caller sees one completion per request.
 */
#define _GNU_SOURCE
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One SQE moves at most this much: CQE results are 32-bit, and Linux caps a single read or
 * write near 2 GiB anyway. Longer requests continue as "short" transfers. (Overridable so a
 * test build can drive the resubmission paths with small requests.) */
#ifndef URING_MAX_XFER
#define URING_MAX_XFER (1u << 30)
#endif
/* CQEs looked at per peek. */
#define URING_BATCH 32u

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_INFLIGHT };

struct uring_slot {
    cmk_io_req rq;
    uint64_t done; /* bytes moved so far */
    uint64_t seq;  /* queue order, for drain */
    enum slot_state state;
};

struct uring_state {
    struct io_uring ring;
    unsigned depth;
    struct uring_slot *slots;
    unsigned *free_idx; /* stack of free slots */
    unsigned nfree;
    unsigned *queued; /* slots waiting for submit, in queue order */
    unsigned nqueued;
    unsigned inflight;
    /* Completions made outside the ring (renameat(2) where IORING_OP_RENAMEAT is missing). */
    cmk_io_cqe *local;
    unsigned local_head, nlocal;
    uint64_t seq;
    int have_renameat;
    int have_sync_range;
};

static const char *errno_name(int e)
{
    switch (e) {
    case ENOSYS:
        return "ENOSYS";
    case EPERM:
        return "EPERM";
    case EACCES:
        return "EACCES";
    case ENOMEM:
        return "ENOMEM";
    case EINVAL:
        return "EINVAL";
    case EMFILE:
        return "EMFILE";
    default:
        return "error";
    }
}

static const char *refusal_hint(int e)
{
    switch (e) {
    case ENOSYS:
        return " (kernel without io_uring)";
    case EPERM:
    case EACCES:
        return " (blocked by a seccomp profile, e.g. a container runtime's, or by "
               "sysctl kernel.io_uring_disabled)";
    case ENOMEM:
        return " (RLIMIT_MEMLOCK too small for the ring on this kernel)";
    default:
        return "";
    }
}

static unsigned round_pow2(unsigned n)
{
    unsigned p = 1;

    while (p < n)
        p <<= 1;
    return p;
}

/* Sets the ring up; kernels older than the optional flags get a plain ring. */
static int ring_init(struct uring_state *u, unsigned entries)
{
    struct io_uring_params p;
    int r;

    /* SUBMIT_ALL (5.18): one bad SQE does not strand the rest of its batch in the ring.
     * (COOP_TASKRUN was measured here and made no difference, so it is left out.) */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SUBMIT_ALL;
    r = io_uring_queue_init_params(entries, &u->ring, &p);
    if (r == -EINVAL) {
        memset(&p, 0, sizeof(p));
        r = io_uring_queue_init_params(entries, &u->ring, &p);
    }
    return r;
}

/* Which opcodes the kernel has: READ/WRITE/FSYNC are required, RENAMEAT is optional. */
static cmk_err probe_ops(struct uring_state *u, int *sys_errno, cmk_errbuf *eb)
{
    struct io_uring_probe *pr = io_uring_get_probe_ring(&u->ring);
    cmk_err rc = CMK_OK;

    if (!pr || !io_uring_opcode_supported(pr, IORING_OP_READ) ||
        !io_uring_opcode_supported(pr, IORING_OP_WRITE) ||
        !io_uring_opcode_supported(pr, IORING_OP_FSYNC)) {
        /* Reported like a missing io_uring so AUTO falls back. */
        *sys_errno = ENOSYS;
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "io_uring on this kernel lacks IORING_OP_READ/WRITE (needs Linux "
                            "5.6 or later); use the sync engine");
        goto out;
    }
    u->have_renameat = io_uring_opcode_supported(pr, IORING_OP_RENAMEAT);
    u->have_sync_range = io_uring_opcode_supported(pr, IORING_OP_SYNC_FILE_RANGE);
out:
    if (pr)
        io_uring_free_probe(pr);
    return rc;
}

static void uring_free_state(struct uring_state *u, int ring_up)
{
    if (ring_up)
        io_uring_queue_exit(&u->ring);
    free(u->slots);
    free(u->free_idx);
    free(u->queued);
    free(u->local);
    free(u);
}

static cmk_err uring_create(unsigned depth, void **state, int *sys_errno, cmk_errbuf *eb)
{
    struct uring_state *u = calloc(1, sizeof(*u));
    unsigned entries = round_pow2(depth);
    int ring_up = 0, r;
    cmk_err rc = CMK_OK;

    *sys_errno = 0;
    *state = NULL;
    if (!u)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (I/O engine)");
    u->depth = depth;
    u->slots = calloc(depth, sizeof(*u->slots));
    u->free_idx = calloc(depth, sizeof(*u->free_idx));
    u->queued = calloc(depth, sizeof(*u->queued));
    u->local = calloc(depth, sizeof(*u->local));
    if (!u->slots || !u->free_idx || !u->queued || !u->local) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (I/O engine, depth %u)", depth);
        goto out;
    }
    for (unsigned i = 0; i < depth; i++)
        u->free_idx[i] = depth - 1 - i;
    u->nfree = depth;
    r = ring_init(u, entries);
    if (r < 0) {
        int e = -r;
        cmk_err code = (e == ENOSYS || e == EPERM || e == EACCES || e == ENOMEM)
                           ? CMK_E_UNSUPPORTED
                           : cmk_err_from_errno(e);

        *sys_errno = e;
        rc = cmk_errbuf_sys(eb, code, e, "io_uring_setup(%u entries) refused with %s%s", entries,
                            errno_name(e), refusal_hint(e));
        goto out;
    }
    ring_up = 1;
    rc = probe_ops(u, sys_errno, eb);
out:
    if (rc != CMK_OK)
        uring_free_state(u, ring_up);
    else
        *state = u;
    return rc;
}

static cmk_err uring_queue(void *state, const cmk_io_req *rq, cmk_errbuf *eb)
{
    struct uring_state *u = state;
    unsigned i;

    /* io.c keeps at most depth requests outstanding, so a slot is always free here. */
    if (u->nfree == 0)
        return cmk_errbuf_set(eb, CMK_E_BUSY, "io_uring request table full");
    i = u->free_idx[--u->nfree];
    u->slots[i].rq = *rq;
    u->slots[i].done = 0;
    u->slots[i].seq = ++u->seq;
    u->slots[i].state = SLOT_QUEUED;
    u->queued[u->nqueued++] = i;
    return CMK_OK;
}

static void slot_release(struct uring_state *u, unsigned i)
{
    u->slots[i].state = SLOT_FREE;
    u->free_idx[u->nfree++] = i;
}

static void local_complete(struct uring_state *u, unsigned i, int64_t res)
{
    cmk_io_cqe *c = &u->local[(u->local_head + u->nlocal) % u->depth];

    c->tag = u->slots[i].rq.tag;
    c->res = res;
    u->nlocal++;
    slot_release(u, i);
}

/* Pushes prepared SQEs to the kernel and optionally waits for wait_nr CQEs, in one call. */
static int ring_enter(struct uring_state *u, unsigned wait_nr)
{
    int r;

    do {
        r = wait_nr ? io_uring_submit_and_wait(&u->ring, wait_nr) : io_uring_submit(&u->ring);
    } while (r == -EINTR);
    /* Out of kernel memory or completion space for now: the SQEs stay in the ring and go
     * with the next enter. */
    if (r == -EAGAIN || r == -EBUSY)
        r = 0;
    return r;
}

/* Turns slot i (what remains of it) into an SQE. */
static cmk_err slot_prep(struct uring_state *u, unsigned i, cmk_errbuf *eb)
{
    struct uring_slot *s = &u->slots[i];
    struct io_uring_sqe *sqe;
    uint64_t left = s->rq.len - s->done;
    unsigned n = left > URING_MAX_XFER ? URING_MAX_XFER : (unsigned)left;
    int r;

    /* Operations the kernel lacks, ranges longer than the 32-bit length of
     * IORING_OP_SYNC_FILE_RANGE, and cold reads are made here with plain calls. */
    if ((s->rq.op == CMK_IO_OP_RENAME && !u->have_renameat) ||
        (s->rq.op == CMK_IO_OP_WRITEBACK && (!u->have_sync_range || s->rq.len > UINT32_MAX)) ||
        (s->rq.op == CMK_IO_OP_READ && s->rq.mode == CMK_IO_READ_COLD)) {
        local_complete(u, i, cmk_io_perform_sync(&s->rq));
        return CMK_OK;
    }
    sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        /* Cannot happen with the ring sized to depth; flush and retry to be safe. */
        r = ring_enter(u, 0);
        if (r < 0)
            return cmk_errbuf_sys(eb, CMK_E_IO, -r, "io_uring submit failed");
        sqe = io_uring_get_sqe(&u->ring);
        if (!sqe)
            return cmk_errbuf_set(eb, CMK_E_IO, "io_uring submission queue full");
    }
    switch (s->rq.op) {
    case CMK_IO_OP_READ:
        io_uring_prep_read(sqe, s->rq.fd, (unsigned char *)s->rq.buf + s->done, n,
                           s->rq.off + s->done);
        break;
    case CMK_IO_OP_WRITE:
        io_uring_prep_write(sqe, s->rq.fd, (unsigned char *)s->rq.buf + s->done, n,
                            s->rq.off + s->done);
        break;
    case CMK_IO_OP_FSYNC:
        io_uring_prep_fsync(sqe, s->rq.fd, s->rq.datasync ? IORING_FSYNC_DATASYNC : 0);
        if (s->rq.drain)
            sqe->flags |= IOSQE_IO_DRAIN;
        break;
    case CMK_IO_OP_RENAME:
        io_uring_prep_renameat(sqe, s->rq.fd, s->rq.path, s->rq.fd2, s->rq.path2, 0);
        break;
    case CMK_IO_OP_WRITEBACK:
        io_uring_prep_sync_file_range(sqe, s->rq.fd, (unsigned)s->rq.len, s->rq.off,
                                      SYNC_FILE_RANGE_WRITE);
        break;
    }
    io_uring_sqe_set_data64(sqe, i);
    if (s->state != SLOT_INFLIGHT) {
        s->state = SLOT_INFLIGHT;
        u->inflight++;
    }
    return CMK_OK;
}

/* Prepares everything queued, in queue order (drain relies on it). */
static cmk_err prep_queued(struct uring_state *u, cmk_errbuf *eb)
{
    cmk_err rc = CMK_OK;
    unsigned k;

    for (k = 0; k < u->nqueued; k++) {
        rc = slot_prep(u, u->queued[k], eb);
        if (rc != CMK_OK)
            break;
    }
    /* Keep what could not be prepared for the next submit. */
    memmove(u->queued, u->queued + k, (u->nqueued - k) * sizeof(*u->queued));
    u->nqueued -= k;
    return rc;
}

static cmk_err uring_submit(void *state, unsigned wait_nr, cmk_errbuf *eb)
{
    struct uring_state *u = state;
    cmk_err rc = prep_queued(u, eb);
    unsigned ready;
    int r;

    if (rc != CMK_OK)
        return rc;
    ready = io_uring_sq_ready(&u->ring);
    if (ready == 0)
        return CMK_OK;
    /* Waiting for more than went in (or than is in flight) could block forever. */
    if (wait_nr > ready)
        wait_nr = ready;
    r = ring_enter(u, wait_nr);
    if (r < 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, -r, "io_uring submit failed");
    return CMK_OK;
}

/* 1 if a request queued before seq is still in flight (only possible when it was resubmitted
 * after a drain request had been started: the drain did not cover its remainder). */
static int earlier_inflight(const struct uring_state *u, unsigned self, uint64_t seq)
{
    for (unsigned i = 0; i < u->depth; i++)
        if (i != self && u->slots[i].state == SLOT_INFLIGHT && u->slots[i].seq < seq)
            return 1;
    return 0;
}

/* Handles one CQE: either the request is finished (written to *out, returns 1) or what
 * remains is resubmitted (returns 0). */
static int slot_finish(struct uring_state *u, const struct io_uring_cqe *cqe, cmk_io_cqe *out)
{
    uint64_t i = io_uring_cqe_get_data64(cqe);
    struct uring_slot *s;
    int64_t res = cqe->res;

    if (i >= u->depth || u->slots[i].state != SLOT_INFLIGHT)
        return 0; /* not ours (cannot happen; ignore rather than corrupt the table) */
    s = &u->slots[i];
    if (res == -EAGAIN || res == -EINTR)
        goto again;
    if (s->rq.op == CMK_IO_OP_READ || s->rq.op == CMK_IO_OP_WRITE) {
        if (res < 0)
            goto done;
        s->done += (uint64_t)res;
        if (s->done >= s->rq.len || (res == 0 && s->rq.op == CMK_IO_OP_READ)) {
            res = (int64_t)s->done; /* all of it, or up to end of file */
            goto done;
        }
        if (res == 0) {
            res = -EIO; /* a write making no progress would loop forever */
            goto done;
        }
        goto again;
    }
    if (s->rq.op == CMK_IO_OP_FSYNC && s->rq.drain && earlier_inflight(u, (unsigned)i, s->seq))
        goto again; /* the re-issued fsync drains behind the remainder */
done:
    out->tag = s->rq.tag;
    out->res = res;
    u->inflight--;
    slot_release(u, (unsigned)i);
    return 1;
again:
    if (slot_prep(u, (unsigned)i, NULL) != CMK_OK) {
        out->tag = s->rq.tag;
        out->res = -EIO;
        u->inflight--;
        slot_release(u, (unsigned)i);
        return 1;
    }
    return 0;
}

static int uring_reap(void *state, cmk_io_cqe *out, unsigned max, unsigned min_wait)
{
    struct uring_state *u = state;
    struct io_uring_cqe *cqes[URING_BATCH];
    struct io_uring_cqe *c;
    unsigned got = 0, n;
    int r = 0;

    while (got < max && u->nlocal > 0) {
        out[got++] = u->local[u->local_head];
        u->local_head = (u->local_head + 1) % u->depth;
        u->nlocal--;
    }
    /* Waiting for requests never submitted would wait forever: submit them now. */
    if (min_wait > got && u->nqueued > 0) {
        if (prep_queued(u, NULL) != CMK_OK && got == 0)
            return -EIO;
    }
    while (got < max) {
        n = max - got < URING_BATCH ? max - got : URING_BATCH;
        n = io_uring_peek_batch_cqe(&u->ring, cqes, n);
        if (n > 0) {
            for (unsigned k = 0; k < n; k++)
                got += (unsigned)slot_finish(u, cqes[k], &out[got]);
            io_uring_cq_advance(&u->ring, n);
            continue;
        }
        if (got >= min_wait || u->inflight == 0)
            break;
        /* Resubmissions (and late submissions) go in with the wait: one system call. */
        if (io_uring_sq_ready(&u->ring) > 0) {
            r = ring_enter(u, min_wait - got);
        } else {
            r = io_uring_wait_cqe_nr(&u->ring, &c, min_wait - got);
            if (r == -EINTR || r == -EAGAIN)
                r = 0;
        }
        if (r < 0)
            break;
    }
    /* Resubmissions made while reaping without waiting must not sit in the ring. */
    if (r >= 0 && io_uring_sq_ready(&u->ring) > 0)
        r = ring_enter(u, 0);
    /* Completions already taken from their slots are returned; the error comes next time. */
    if (r < 0 && got == 0)
        return r;
    return (int)got;
}

static void uring_destroy(void *state)
{
    struct uring_state *u = state;
    cmk_io_cqe sink[URING_BATCH];

    /* Never started: drop. */
    for (unsigned k = 0; k < u->nqueued; k++)
        slot_release(u, u->queued[k]);
    u->nqueued = 0;
    /* Started: the kernel may still write into the caller's buffers, so wait. */
    while (u->inflight > 0) {
        if (uring_reap(u, sink, URING_BATCH, 1) < 0)
            break;
    }
    uring_free_state(u, 1);
}

const cmk_io_engine cmk_io_uring_engine = {
    .name = "io_uring",
    .kind = CMK_IO_URING,
    .create = uring_create,
    .destroy = uring_destroy,
    .queue = uring_queue,
    .submit = uring_submit,
    .reap = uring_reap,
};
