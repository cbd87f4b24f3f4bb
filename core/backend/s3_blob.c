/*
 * s3_blob.c — the S3 backend's blob space (blob.h): containers streamed into objects,
 * published only if absent, read with ranged GETs. This file holds the space itself (its
 * ops, open and close, delete and list); the rest is split by concern (s3_blob.h names the
 * files): the sink, publishing, the source and the worker pool they share.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_blob.h"

static cmk_err s3_blob_delete(cmk_bk_blobs *b, const char *key, cmk_errbuf *eb)
{
    s3_blobs *bs = bs_of(b);
    char bkey[CMK_BK_KEY_MAX + 8], data[CMK_BK_KEY_MAX + 48];
    uint8_t first[LINK_MAX];
    uint64_t lsize, osize;
    int64_t mt;
    size_t fl;
    int is_link = 0;
    cmk_s3_req r = {.method = "DELETE"};
    cmk_err rc;

    snprintf(bkey, sizeof(bkey), "blobs/%s", key);
    rc = cmk_s3_read_link(bs->bk, bkey, data, sizeof(data), &lsize, &is_link, &osize, &mt, first,
                          sizeof(first), &fl, eb);
    if (rc != CMK_OK)
        return rc;
    r.key = bkey;
    rc = cmk_s3_http_do(bs->bk->http, &r, eb);
    cmk_s3_req_done(&r);
    if (rc == CMK_OK && is_link)
        cmk_s3_delete_key(bs->bk, data);
    return rc;
}

struct blob_list_ctx {
    int (*cb)(const char *key, void *arg);
    void *arg;
};

static int blob_list_one(const char *key, uint64_t size, void *arg)
{
    struct blob_list_ctx *c = arg;

    (void)size;
    if (strncmp(key, "blobs/", 6) != 0 || !strchr(key + 6, '/'))
        return 0;
    return c->cb(key + 6, c->arg);
}

static cmk_err s3_blob_list(cmk_bk_blobs *b, int (*cb)(const char *key, void *arg), void *arg,
                            cmk_errbuf *eb)
{
    struct blob_list_ctx c = {cb, arg};

    return cmk_s3_list(bs_of(b)->bk, "blobs/", NULL, blob_list_one, &c, eb);
}

static void s3_blobs_close(cmk_bk_blobs *b)
{
    s3_blobs *bs = bs_of(b);

    cmk_s3_pool_stop(bs);
    pthread_mutex_destroy(&bs->mu);
    pthread_cond_destroy(&bs->cv);
    free(bs);
}

static const cmk_bk_blob_ops s3_blob_ops = {
    .size = sizeof(cmk_bk_blob_ops),
    .caps = 0,
    .sink_create = cmk_s3_sink_create,
    .sink_append = cmk_s3_sink_append,
    .sink_poll = cmk_s3_sink_poll,
    .sink_pending = cmk_s3_sink_pending,
    .sink_quiesce = cmk_s3_sink_quiesce,
    .sink_set_io = cmk_s3_sink_set_io,
    .sink_finish = cmk_s3_sink_finish,
    .publish_many = cmk_s3_publish_many,
    .sink_close = cmk_s3_sink_close,
    .source_open = cmk_s3_source_open,
    .source_read = cmk_s3_source_read,
    .source_queue = cmk_s3_source_queue,
    .source_poll = cmk_s3_source_poll,
    .source_advise = cmk_s3_source_advise,
    .source_close = cmk_s3_source_close,
    .blob_delete = s3_blob_delete,
    .blob_list = s3_blob_list,
    .close = s3_blobs_close,
};

cmk_err cmk_s3_blobs_open_op(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                             atomic_int *direct_state, cmk_bk_blobs **out, cmk_errbuf *eb)
{
    s3_blobs *bs = calloc(1, sizeof(*bs));
    cmk_err rc;

    (void)direct_after;
    (void)direct_state;
    *out = NULL;
    if (!bs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob space)");
    bs->base.ops = &s3_blob_ops;
    bs->bk = cmk_s3_of(b);
    bs->pool = pool;
    /* One put's parts kept for the next (the first, the one filling, those uploading). */
    cmk_pool_buf_reserve(pool, (size_t)(S3_UP_MAX + 2) * S3_PART);
    pthread_mutex_init(&bs->mu, NULL);
    pthread_cond_init(&bs->cv, NULL);
    rc = cmk_s3_pool_start(bs, eb);
    if (rc != CMK_OK) {
        s3_blobs_close(&bs->base);
        return rc;
    }
    *out = &bs->base;
    return CMK_OK;
}
