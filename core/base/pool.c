/* pool.c — worker threads for sealing and opening chunks. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "core/base/pool.h"

#include "core/base/secmem.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#define SEC_SLOTS 64

struct cmk_pool {
    /* Cached buffers (see cmk_pool_buf_get), guarded by buf_mu. The bytes are capped by
     * buf_cache; the count by buf_slots, sized from it so that a deep queue's streams (more
     * buffers than a fixed count would hold) are kept whole too. */
    pthread_mutex_t buf_mu;
    void **buf;
    size_t *buf_size;
    unsigned nbuf, buf_slots;
    size_t buf_bytes, buf_cache;
    void *sec[SEC_SLOTS]; /* wiped secret blocks (cmk_secalloc) */
    size_t sec_size[SEC_SLOTS];
    unsigned nsec;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    cmk_job *head, *tail;
    int stopping;
    unsigned n;
    pthread_t *threads;
};

unsigned cmk_ncpu(void)
{
    /* The CPUs this process may run on (a container's cpuset, taskset), not all online: more
     * workers than that only take turns. */
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void *worker(void *arg)
{
    cmk_pool *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        cmk_job *j = p->head;
        if (!j) {
            if (p->stopping)
                break;
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->run(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

cmk_err cmk_pool_create(unsigned nthreads, size_t cache, cmk_pool **out, cmk_errbuf *eb)
{
    cmk_pool *p;

    *out = NULL;
    if (nthreads == 0)
        nthreads = cmk_ncpu();
    if (nthreads > 256)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "too many worker threads (%u, limit 256)", nthreads);
    p = calloc(1, sizeof(*p));
    if (!p)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (pool)");
    p->buf_cache = cache > CMK_POOL_BUF_CACHE ? cache : CMK_POOL_BUF_CACHE;
    /* Every buffer a stream takes is a chunk-sized or small (CMK_SMALL_BUF) one, a write
     * window, or the one block of a direct put's header: this many slots hold them all. */
    p->buf_slots = (unsigned)(p->buf_cache / CMK_SMALL_BUF) + 64;
    p->threads = calloc(nthreads, sizeof(*p->threads));
    p->buf = calloc(p->buf_slots, sizeof(*p->buf));
    p->buf_size = calloc(p->buf_slots, sizeof(*p->buf_size));
    if (!p->threads || !p->buf || !p->buf_size) {
        free(p->threads);
        free(p->buf);
        free(p->buf_size);
        free(p);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (pool)");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->buf_mu, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            cmk_pool_free(p);
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot start worker thread %u", i);
        }
        /* Named for top -H and perf; a name that cannot be set changes nothing else. */
        (void)pthread_setname_np(p->threads[i], "cmk-worker");
        p->n++;
    }
    *out = p;
    return CMK_OK;
}

void cmk_pool_free(cmk_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    for (unsigned i = 0; i < p->nbuf; i++)
        free(p->buf[i]);
    for (unsigned i = 0; i < p->nsec; i++)
        cmk_secfree(p->sec[i]);
    pthread_mutex_destroy(&p->buf_mu);
    free(p->buf);
    free(p->buf_size);
    free(p->threads);
    free(p);
}

void *cmk_pool_buf_get(cmk_pool *p, size_t size)
{
    void *b = NULL;

    pthread_mutex_lock(&p->buf_mu);
    /* Most recently returned first: its pages are the likeliest to be warm. */
    for (unsigned i = p->nbuf; i-- > 0;) {
        if (p->buf_size[i] != size)
            continue;
        b = p->buf[i];
        p->buf_bytes -= size;
        p->nbuf--;
        p->buf[i] = p->buf[p->nbuf];
        p->buf_size[i] = p->buf_size[p->nbuf];
        break;
    }
    pthread_mutex_unlock(&p->buf_mu);
    if (!b && posix_memalign(&b, CMK_POOL_BUF_ALIGN, size) != 0)
        b = NULL;
    return b;
}

void cmk_pool_buf_put(cmk_pool *p, void *buf, size_t size)
{
    if (!buf)
        return;
    pthread_mutex_lock(&p->buf_mu);
    if (p->nbuf < p->buf_slots && p->buf_bytes + size <= p->buf_cache) {
        p->buf[p->nbuf] = buf;
        p->buf_size[p->nbuf] = size;
        p->nbuf++;
        p->buf_bytes += size;
        buf = NULL;
    }
    pthread_mutex_unlock(&p->buf_mu);
    free(buf);
}

void cmk_pool_buf_reserve(cmk_pool *p, size_t bytes)
{
    pthread_mutex_lock(&p->buf_mu);
    p->buf_cache += bytes;
    pthread_mutex_unlock(&p->buf_mu);
}

size_t cmk_pool_buf_cached(cmk_pool *p)
{
    size_t n;

    pthread_mutex_lock(&p->buf_mu);
    n = p->buf_bytes;
    pthread_mutex_unlock(&p->buf_mu);
    return n;
}

void cmk_pool_trim(cmk_pool *p)
{
    void **bufs;
    unsigned n;

    /* Taken out under the lock, freed outside it: munmap of many buffers is slow. */
    bufs = malloc(p->buf_slots * sizeof(*bufs));
    pthread_mutex_lock(&p->buf_mu);
    n = bufs ? p->nbuf : 0;
    for (unsigned i = 0; i < n; i++)
        bufs[i] = p->buf[i];
    if (bufs) {
        p->nbuf = 0;
        p->buf_bytes = 0;
    }
    pthread_mutex_unlock(&p->buf_mu);
    for (unsigned i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
}

void cmk_pool_submit(cmk_pool *p, cmk_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

unsigned cmk_pool_threads(const cmk_pool *p)
{
    return p->n;
}

void *cmk_pool_sec_get(cmk_pool *p, size_t size)
{
    void *b = NULL;

    pthread_mutex_lock(&p->buf_mu);
    for (unsigned i = p->nsec; i-- > 0;) {
        if (p->sec_size[i] != size)
            continue;
        b = p->sec[i];
        p->nsec--;
        p->sec[i] = p->sec[p->nsec];
        p->sec_size[i] = p->sec_size[p->nsec];
        break;
    }
    pthread_mutex_unlock(&p->buf_mu);
    return b ? b : cmk_secalloc(size);
}

void cmk_pool_sec_put(cmk_pool *p, void *buf, size_t size)
{
    if (!buf)
        return;
    cmk_cleanse(buf, size);
    pthread_mutex_lock(&p->buf_mu);
    if (p->nsec < SEC_SLOTS) {
        p->sec[p->nsec] = buf;
        p->sec_size[p->nsec] = size;
        p->nsec++;
        buf = NULL;
    }
    pthread_mutex_unlock(&p->buf_mu);
    cmk_secfree(buf);
}
