/*
 * pool.h — a fixed pool of worker threads running jobs in FIFO order.
 *
 * Jobs are intrusive (embedded in the caller's structures), so submitting allocates
 * nothing. The pool knows nothing about completion: a job signals its owner itself.
 * Thread-safety: submit may be called from any thread.
 */
#ifndef CMK_POOL_H
#define CMK_POOL_H

#include "error.h"

typedef struct cmk_job {
    struct cmk_job *next;
    void (*run)(struct cmk_job *job);
} cmk_job;

typedef struct cmk_pool cmk_pool;

/* nthreads 0: the number of online cores. */
cmk_err cmk_pool_create(unsigned nthreads, cmk_pool **out, cmk_errbuf *eb);
/* Runs every queued job, then joins the threads and frees. NULL is a no-op. */
void cmk_pool_free(cmk_pool *p);
void cmk_pool_submit(cmk_pool *p, cmk_job *job);
unsigned cmk_pool_threads(const cmk_pool *p);

/* Online cores (at least 1). */
unsigned cmk_ncpu(void);

#endif
