/* blob.c — the engine's side of the blob section (blob.h): keys and dispatch. */
#include "core/backend/blob.h"

#include <stdio.h>
#include <string.h>

#include "core/digest.h"
#include "core/base/secmem.h"

cmk_err cmk_bk_blob_key(const char *digest, char key[CMK_BK_KEY_MAX], cmk_errbuf *eb)
{
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    char hex[2 * CMK_DIGEST_RAW_MAX + 1];
    int alg;
    cmk_err rc = cmk_digest_parse(digest, &alg, raw, eb);

    if (rc != CMK_OK)
        return rc;
    cmk_hex(hex, raw, cmk_digest_len(alg));
    snprintf(key, CMK_BK_KEY_MAX, "%s/%s", cmk_digest_alg_name(alg), hex);
    return CMK_OK;
}

void cmk_bk_blob_digest(const char *key, char *digest, size_t cap)
{
    const char *slash = strchr(key, '/');

    if (slash)
        snprintf(digest, cap, "%.*s:%s", (int)(slash - key), key, slash + 1);
    else
        snprintf(digest, cap, "%s", key);
}

unsigned cmk_bk_blob_caps(const cmk_bk_blobs *bs)
{
    return bs->ops->caps;
}

cmk_err cmk_bk_sink_create(cmk_bk_blobs *bs, cmk_io *io, uint32_t head_len, uint32_t chunk_size,
                           cmk_bk_sink **out, cmk_errbuf *eb)
{
    return bs->ops->sink_create(bs, io, head_len, chunk_size, out, eb);
}

cmk_err cmk_bk_sink_append(cmk_bk_sink *k, const void *rec, size_t len, uint64_t tag,
                           unsigned flags, int *held, cmk_errbuf *eb)
{
    return k->bs->ops->sink_append(k, rec, len, tag, flags, held, eb);
}

cmk_err cmk_bk_sink_poll(cmk_bk_sink *k, uint64_t *tags, int max, int wait, int *n, cmk_errbuf *eb)
{
    return k->bs->ops->sink_poll(k, tags, max, wait, n, eb);
}

void cmk_bk_sink_pending(const cmk_bk_sink *k, unsigned *held, unsigned *busy)
{
    k->bs->ops->sink_pending(k, held, busy);
}

cmk_err cmk_bk_sink_quiesce(cmk_bk_sink *k, cmk_errbuf *eb)
{
    return k->bs->ops->sink_quiesce(k, eb);
}

void cmk_bk_sink_set_io(cmk_bk_sink *k, cmk_io *io)
{
    k->bs->ops->sink_set_io(k, io);
}

cmk_err cmk_bk_sink_scratch_put(cmk_bk_sink *k, const void *buf, size_t len, cmk_errbuf *eb)
{
    if (!(k->bs->ops->caps & CMK_BK_SCRATCH))
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "this backend keeps no scratch bytes");
    return k->bs->ops->sink_scratch_put(k, buf, len, eb);
}

cmk_err cmk_bk_sink_scratch_get(cmk_bk_sink *k, void *buf, size_t len, cmk_errbuf *eb)
{
    if (!(k->bs->ops->caps & CMK_BK_SCRATCH))
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "this backend keeps no scratch bytes");
    return k->bs->ops->sink_scratch_get(k, buf, len, eb);
}

cmk_err cmk_bk_sink_finish(cmk_bk_sink *k, const void *tail, size_t tail_len, const void *head,
                           cmk_errbuf *eb)
{
    return k->bs->ops->sink_finish(k, tail, tail_len, head, eb);
}

void cmk_bk_publish_many(cmk_bk_blobs *bs, cmk_bk_sink *const *sinks, const char *const *keys,
                         size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                         cmk_errbuf *ebs)
{
    bs->ops->publish_many(bs, sinks, keys, n, keep, arg, results, ebs);
}

void cmk_bk_sink_close(cmk_bk_sink *k)
{
    if (k)
        k->bs->ops->sink_close(k);
}

cmk_err cmk_bk_source_open(cmk_bk_blobs *bs, const char *key, cmk_io *io, cmk_bk_source **out,
                           uint64_t *size, int64_t *mtime, cmk_errbuf *eb)
{
    return bs->ops->source_open(bs, key, io, out, size, mtime, eb);
}

cmk_err cmk_bk_source_read(cmk_bk_source *src, void *buf, size_t len, uint64_t off,
                           const char *what, unsigned flags, cmk_errbuf *eb)
{
    return src->bs->ops->source_read(src, buf, len, off, what, flags, eb);
}

cmk_err cmk_bk_source_queue(cmk_bk_source *src, void *buf, size_t len, uint64_t off, uint64_t tag,
                            unsigned flags, cmk_errbuf *eb)
{
    return src->bs->ops->source_queue(src, buf, len, off, tag, flags, eb);
}

int cmk_bk_source_poll(cmk_bk_source *src, cmk_io_cqe *out, int max, int wait, cmk_errbuf *eb)
{
    return src->bs->ops->source_poll(src, out, max, wait, eb);
}

int cmk_bk_source_advise(cmk_bk_source *src, uint64_t start, uint64_t end)
{
    return src->bs->ops->source_advise(src, start, end);
}

void cmk_bk_source_close(cmk_bk_source *src)
{
    if (src)
        src->bs->ops->source_close(src);
}

cmk_err cmk_bk_blob_delete(cmk_bk_blobs *bs, const char *key, cmk_errbuf *eb)
{
    return bs->ops->blob_delete(bs, key, eb);
}

cmk_err cmk_bk_blob_list(cmk_bk_blobs *bs, int (*cb)(const char *key, void *arg), void *arg,
                         cmk_errbuf *eb)
{
    return bs->ops->blob_list(bs, cb, arg, eb);
}

void cmk_bk_blobs_close(cmk_bk_blobs *bs)
{
    if (bs)
        bs->ops->close(bs);
}
