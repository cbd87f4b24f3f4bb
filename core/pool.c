/* pool.c — worker threads for sealing and opening chunks. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct cmk_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cmk_job *head, *tail;
    int stopping;
    unsigned n;
    pthread_t *threads;
};

unsigned cmk_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
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

cmk_err cmk_pool_create(unsigned nthreads, cmk_pool **out, cmk_errbuf *eb)
{
    cmk_pool *p;

    *out = NULL;
    if (nthreads == 0)
        nthreads = cmk_ncpu();
    if (nthreads > 256)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "too many worker threads (%u, limit 256)",
                              nthreads);
    p = calloc(1, sizeof(*p));
    if (!p)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (pool)");
    p->threads = calloc(nthreads, sizeof(*p->threads));
    if (!p->threads) {
        free(p);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (pool)");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            cmk_pool_free(p);
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot start worker thread %u", i);
        }
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
    free(p->threads);
    free(p);
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
