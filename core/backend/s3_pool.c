/*
 * s3_pool.c — the S3 blob space's worker threads: S3_READERS threads that take jobs from one
 * queue, a sink's part uploads (and the start of its upload) and a source's queued reads, so
 * that a put keeps sealing while its parts upload and a get's read-ahead has several ranged
 * GETs in flight. A job belongs to its sink or source, which counts it and waits for it
 * before closing; the pool only runs it. Reads of one source that continue each other are
 * taken together and run as one GET (cmk_s3_source_take).
 */
#include <pthread.h>
#include <stdlib.h>

#include "core/backend/s3_blob.h"

void cmk_s3_pool_push(s3_blobs *bs, struct job *j)
{
    pthread_mutex_lock(&bs->mu);
    if (bs->tail)
        bs->tail->next = j;
    else
        bs->head = j;
    bs->tail = j;
    pthread_cond_signal(&bs->cv);
    pthread_mutex_unlock(&bs->mu);
}

/* A worker: runs jobs in queue order until the pool stops and the queue is empty. */
static void *worker_main(void *arg)
{
    s3_blobs *bs = arg;

    pthread_mutex_lock(&bs->mu);
    for (;;) {
        struct job *j, *js[S3_SRC_QMAX];
        int n;

        while (!bs->head && !bs->stop)
            pthread_cond_wait(&bs->cv, &bs->mu);
        if (!bs->head)
            break;
        j = bs->head;
        bs->head = j->next;
        if (!bs->head)
            bs->tail = NULL;
        j->next = NULL;
        n = j->src ? cmk_s3_source_take(bs, j, js) : 0;
        pthread_mutex_unlock(&bs->mu);
        if (j->src)
            cmk_s3_source_run(js, n);
        else
            cmk_s3_part_job(j);
        pthread_mutex_lock(&bs->mu);
    }
    pthread_mutex_unlock(&bs->mu);
    return NULL;
}

cmk_err cmk_s3_pool_start(s3_blobs *bs, cmk_errbuf *eb)
{
    for (int i = 0; i < S3_READERS; i++) {
        if (pthread_create(&bs->th[i], NULL, worker_main, bs) != 0)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot start the blob space's worker threads");
        bs->nthreads++;
    }
    return CMK_OK;
}

void cmk_s3_pool_stop(s3_blobs *bs)
{
    pthread_mutex_lock(&bs->mu);
    bs->stop = 1;
    pthread_cond_broadcast(&bs->cv);
    pthread_mutex_unlock(&bs->mu);
    for (int i = 0; i < bs->nthreads; i++)
        pthread_join(bs->th[i], NULL);
    bs->nthreads = 0;
}
