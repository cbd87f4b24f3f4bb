/*
 * pool.h — a fixed pool of worker threads running jobs in FIFO order.
 *
 * Jobs are intrusive (embedded in the caller's structures), so submitting allocates
 * nothing. The pool knows nothing about completion: a job signals its owner itself.
 * Thread-safety: submit may be called from any thread.
 */
#ifndef CMK_POOL_H
#define CMK_POOL_H

#include "core/base/error.h"

typedef struct cmk_job {
    struct cmk_job *next;
    void (*run)(struct cmk_job *job);
} cmk_job;

typedef struct cmk_pool cmk_pool;

/* nthreads 0: the number of online cores. cache: bytes of chunk buffers kept for reuse (see
 * cmk_pool_buf_get); at least CMK_POOL_BUF_CACHE. */
CMK_MUST_CHECK cmk_err cmk_pool_create(unsigned nthreads, size_t cache, cmk_pool **out,
                                       cmk_errbuf *eb);
/* Runs every queued job, then joins the threads and frees. NULL is a no-op. */
void cmk_pool_free(cmk_pool *p);
void cmk_pool_submit(cmk_pool *p, cmk_job *job);
unsigned cmk_pool_threads(const cmk_pool *p);

/* Chunk buffers. Streams take their chunk-sized buffers here and give them back when done,
 * so a put or get does not fault fresh memory in for every blob (first-touch page faults
 * cost more than the crypto on some VMs) and small blobs do not pay for a 1 MiB allocation.
 * At most the pool's cache size (cmk_pool_create) is kept, in as many buffers as it takes
 * (a slot for every 64 KiB of it, and 64 more); the rest is freed. A buffer is handed out
 * with whatever its last user left in it: callers wipe secrets before giving one back.
 * Buffers are aligned to CMK_POOL_BUF_ALIGN, so they can be used for O_DIRECT.
 * Thread-safe. */
#define CMK_POOL_BUF_CACHE (32u << 20) /* the least a pool keeps */
#define CMK_POOL_BUF_ALIGN 4096u
/* Plain-text buffer size of blobs that fit in it (put starts every blob there, get uses it
 * for blobs no larger): a manifest does not take two chunk-sized buffers. */
#define CMK_SMALL_BUF (64u << 10)
void *cmk_pool_buf_get(cmk_pool *p, size_t size);
void cmk_pool_buf_put(cmk_pool *p, void *buf, size_t size);
/* Bytes of buffers kept; cmk_pool_trim frees them all (buffers in use are not touched). */
size_t cmk_pool_buf_cached(cmk_pool *p);
void cmk_pool_trim(cmk_pool *p);
/* Keeps `bytes` more of buffers from now on: for a backend whose streams hold buffers of
 * their own beyond the chunk slots (an object store's upload parts). Thread-safe. */
void cmk_pool_buf_reserve(cmk_pool *p, size_t bytes);

/* Secret memory (cmk_secalloc: locked, kept out of core dumps) for per-blob keys, kept for
 * reuse: allocating it costs mmap + mlock and freeing it munmap, whose TLB shootdown
 * interrupts every core, for every blob. Blocks are wiped when given back and again when
 * finally freed. Thread-safe. */
void *cmk_pool_sec_get(cmk_pool *p, size_t size);
void cmk_pool_sec_put(cmk_pool *p, void *buf, size_t size);

/* Cores this process may run on (its CPU affinity; else the online ones; at least 1). */
unsigned cmk_ncpu(void);

#endif
