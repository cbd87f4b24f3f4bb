/*
 * put_commit.c — the end of a put: the digest checked against the expected one, the index
 * sealed, the container finished (header last) and published through the blob sink, one
 * put or a batch. A batch finishes every blob first, then the sink's publish makes them all
 * durable and visible together (locally: one fsync batch for the files, one for their
 * directories), so no commit returns before its blob is durable under its digest.
 */
#include <stdlib.h>
#include <string.h>

#include "core/blobseal.h"
#include "core/put_internal.h"

/* Seals the index and ends the container (the header goes in front last). Durability and
 * the name are the publish's (commit_batch). */
static cmk_err finish_file(cmk_put *p, cmk_errbuf *eb)
{
    uint64_t n = p->h.chunk_count;
    size_t total = (size_t)cmk_fmt_index_size(n);
    uint8_t *buf = malloc(total);
    cmk_err rc;

    if (!buf)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (index)");
    cmk_fmt_header_encode(&p->h, p->header);
    rc = cmk_blobseal_index(p->bk, p->header, p->index, n, buf, eb);
    if (rc == CMK_OK)
        rc = cmk_bk_sink_finish(p->sink, buf, total, p->header, eb);
    free(buf);
    return rc;
}

/* Everything a commit does before durability: finishes the pipeline, checks the digest and
 * the key, writes the index and header. raw receives the digest. */
static cmk_err commit_prepare(cmk_put *p, const char *expected, char digest_out[CMK_DIGEST_MAX],
                              uint8_t raw[CMK_DIGEST_RAW_MAX], cmk_errbuf *eb)
{
    uint8_t want[CMK_DIGEST_RAW_MAX];
    char got[CMK_DIGEST_MAX];
    int want_alg = 0;
    cmk_err rc;

    rc = cmk_put_settle(p, eb);
    if (rc != CMK_OK)
        return rc;
    if (expected) {
        rc = cmk_digest_parse(expected, &want_alg, want, eb);
        if (rc != CMK_OK)
            return rc;
    }
    rc = cmk_put_flush(p, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_digest_final(&p->dg, raw, eb);
    if (rc != CMK_OK)
        return rc;
    cmk_digest_format(p->h.digest_alg, raw, got);
    if (digest_out)
        memcpy(digest_out, got, CMK_DIGEST_MAX);
    if (expected &&
        (want_alg != p->h.digest_alg || memcmp(want, raw, cmk_digest_len(want_alg)) != 0))
        return cmk_errbuf_set(eb, CMK_E_DIGEST,
                              "content digest %s does not match the expected %s: nothing was "
                              "stored",
                              got, expected);
    /* Revocation stops writes too: do not publish under a key that is no longer ours. */
    rc = cmk_store_key_gate(p->s, eb);
    if (rc != CMK_OK)
        return rc;
    p->h.plain_size = p->plain_total;
    p->h.chunk_count = p->dispatched;
    p->h.index_offset = p->file_off;
    memcpy(p->h.digest, raw, cmk_digest_len(p->h.digest_alg));
    return finish_file(p, eb);
}

struct batch {
    cmk_store *s;
    char (*digests)[CMK_DIGEST_MAX];
};

/* The publish found a blob already stored under batch item i's digest: it is kept if it
 * authenticates whole (it then holds this content), else the new one replaces it: a re-push
 * must repair a damaged blob, not report success over it. The check reads the existing blob
 * once, and only on a re-push. Without a verdict (key access, I/O) the put fails rather
 * than report a blob it could not check. */
static cmk_err keep_existing(void *arg, size_t i, cmk_errbuf *eb)
{
    struct batch *b = arg;
    cmk_err rc = cmk_verify(b->s, b->digests[i], NULL);

    if (rc == CMK_OK || rc == CMK_E_INTEGRITY || rc == CMK_E_CORRUPT || rc == CMK_E_UNSUPPORTED ||
        rc == CMK_E_NOT_FOUND)
        return rc;
    return cmk_errbuf_set(eb, rc, "cannot check the stored copy of %s: %s", b->digests[i],
                          cmk_errmsg());
}

/* Commits n puts (n >= 1; NULL entries fail with CMK_E_INVAL) and frees them: each blob is
 * finished (pipeline drained, digest checked, index and header written), then the sink's
 * publish makes them all durable and visible together. A put's result is CMK_OK only once
 * its blob is durable under its digest. */
static cmk_err commit_batch(cmk_store *s, cmk_put **puts, const char *const *expected, size_t n,
                            cmk_err *results, char (*digests_out)[CMK_DIGEST_MAX],
                            cmk_errbuf *first)
{
    cmk_bk_sink **sinks = calloc(n, sizeof(*sinks));
    char(*keys)[CMK_BK_KEY_MAX] = calloc(n, sizeof(*keys));
    const char **keyp = calloc(n, sizeof(*keyp));
    char(*digests)[CMK_DIGEST_MAX] = calloc(n, sizeof(*digests));
    cmk_err *res = calloc(n, sizeof(*res));
    cmk_errbuf *ebs = calloc(n, sizeof(*ebs));
    struct batch b = {s, digests};
    cmk_err rc = CMK_OK;

    if (!sinks || !keys || !keyp || !digests || !res || !ebs) {
        rc = cmk_errbuf_set(first, CMK_E_NOMEM, "out of memory (batch commit)");
        for (size_t i = 0; i < n; i++)
            if (results)
                results[i] = rc;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t raw[CMK_DIGEST_RAW_MAX];

        if (!puts[i])
            res[i] = cmk_errbuf_set(&ebs[i], CMK_E_INVAL, "NULL put in batch");
        else
            res[i] =
                commit_prepare(puts[i], expected ? expected[i] : NULL, digests[i], raw, &ebs[i]);
        if (res[i] == CMK_OK)
            res[i] = cmk_bk_blob_key(digests[i], keys[i], &ebs[i]);
        if (digests_out && digests[i][0])
            memcpy(digests_out[i], digests[i], CMK_DIGEST_MAX);
        ebs[i].code = res[i];
        if (res[i] == CMK_OK) {
            sinks[i] = puts[i]->sink;
            keyp[i] = keys[i];
        }
    }
    cmk_bk_publish_many(s->blobs, sinks, keyp, n, keep_existing, &b, res, ebs);
    for (size_t i = 0; i < n; i++) {
        if (res[i] == CMK_OK)
            cmk_store_note_commit(s);
        else if (rc == CMK_OK) {
            rc = res[i];
            *first = ebs[i];
        }
        if (results)
            results[i] = res[i];
    }
out:
    for (size_t i = 0; i < n; i++) {
        cmk_put_free(puts[i]);
        puts[i] = NULL;
    }
    free(sinks);
    free(keys);
    free(keyp);
    free(digests);
    free(res);
    free(ebs);
    return rc;
}

cmk_err cmk_put_commit(cmk_put *p, const char *expected_digest, char digest_out[CMK_DIGEST_MAX])
{
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!p)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit: NULL put");
    rc = commit_batch(p->s, &p, (const char *const *)&expected_digest, 1, NULL,
                      digest_out ? (char(*)[CMK_DIGEST_MAX])digest_out : NULL, &eb);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_put_commit_many(cmk_put **puts, const char *const *expected_digests, size_t n,
                            cmk_err *results, char (*digests_out)[CMK_DIGEST_MAX])
{
    cmk_errbuf eb = {0};
    cmk_store *s = NULL;
    cmk_err rc;

    if (n == 0)
        return CMK_OK;
    if (!puts)
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: NULL array");
    for (size_t i = 0; i < n && !s; i++)
        s = puts[i] ? puts[i]->s : NULL;
    for (size_t i = 0; i < n; i++)
        if (puts[i] && puts[i]->s != s) {
            /* One store per batch: the directories and engines are the store's. */
            for (size_t k = 0; k < n; k++) {
                if (results)
                    results[k] = CMK_E_INVAL;
                cmk_put_free(puts[k]);
                puts[k] = NULL;
            }
            return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: puts of different stores");
        }
    if (!s) {
        for (size_t k = 0; k < n; k++)
            if (results)
                results[k] = CMK_E_INVAL;
        return cmk_set_last(CMK_E_INVAL, "cmk_put_commit_many: every put is NULL");
    }
    rc = commit_batch(s, puts, expected_digests, n, results, digests_out, &eb);
    return cmk_publish(&eb, rc);
}
