/*
 * s3_publish.c — the S3 blob space's publishing: a finished sink made visible under its
 * blob's name only if that name is free, and the link objects that name a data object.
 *
 * A one-part container is PUT as blobs/<key> with If-None-Match: *. A multipart one
 * is completed into its data object, then a link object, "CMKSLINK\n<data key>\n<size>\n",
 * is created as blobs/<key> with If-None-Match: * (RGW ignores conditions on
 * CompleteMultipartUpload, so the exclusive step is the link's). The loser of a race, or a
 * put whose copy the engine keeps, deletes its own data object. A crash leaves at most an
 * incomplete upload or an unlinked data object, never anything under blobs/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_blob.h"
#include "core/backend/s3_xml.h"

static cmk_err complete_upload(s3_sink *k, cmk_errbuf *eb)
{
    int nparts = k->nparts + 1;
    size_t cap = 64 + (size_t)nparts * 140;
    char *xml = malloc(cap), eid[1600], query[1700];
    size_t n = 0;
    cmk_s3_req r = {.method = "POST", .key = k->data_key};
    cmk_err rc;

    if (!xml)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (blob upload)");
    n += (size_t)snprintf(xml + n, cap - n, "<CompleteMultipartUpload>");
    for (int i = 1; i <= nparts; i++)
        n += (size_t)snprintf(xml + n, cap - n,
                              "<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag></Part>", i,
                              k->etags[i - 1]);
    n += (size_t)snprintf(xml + n, cap - n, "</CompleteMultipartUpload>");
    if (cmk_s3_query_escape(k->upload_id, eid, sizeof(eid)) < 0) {
        free(xml);
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "upload id too long");
    }
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    r.query = query;
    r.body = xml;
    r.body_len = n;
    rc = cmk_s3_http_do(k->bs->bk->http, &r, eb);
    /* S3 may answer 200 with an error document in the body. */
    if (rc == CMK_OK && r.resp && strstr(r.resp, "<Error>")) {
        char code[64], msg[256];
        cmk_s3_xml_error(r.resp, r.resp_len, code, sizeof(code), msg, sizeof(msg));
        rc = cmk_errbuf_set(eb, CMK_E_IO, "S3 complete upload %s/%s: %s %s", k->bs->bk->name,
                            k->data_key, code, msg);
    }
    if (rc == CMK_E_NOT_FOUND && r.tries > 1)
        rc = CMK_OK; /* the first attempt completed it (the upload id is gone) */
    if (rc == CMK_OK)
        k->completed = 1;
    cmk_s3_req_done(&r);
    free(xml);
    return rc;
}

void cmk_s3_delete_key(cmk_s3_bk *bk, const char *key)
{
    cmk_s3_req r = {.method = "DELETE", .key = key};
    cmk_errbuf eb = {0};

    /* Best effort: an object left behind is unreachable garbage, not a visible blob. */
    if (cmk_s3_http_do(bk->http, &r, &eb) != CMK_OK) {
    }
    cmk_s3_req_done(&r);
}

/* The object under blobs/<key>: whether it is a link, and the data key it names. */
cmk_err cmk_s3_read_link(cmk_s3_bk *bk, const char *bkey, char *data, size_t cap, uint64_t *size,
                         int *is_link, uint64_t *obj_size, int64_t *mtime, uint8_t *first,
                         size_t first_cap, size_t *first_len, cmk_errbuf *eb)
{
    cmk_s3_req r = {
        .method = "GET", .key = bkey, .range_len = first_cap, .dst = first, .dst_cap = first_cap};
    cmk_err rc = cmk_s3_http_do(bk->http, &r, eb);

    *is_link = 0;
    if (rc == CMK_E_RANGE) {
        /* An empty object: no range of it exists. */
        *obj_size = 0;
        *first_len = 0;
        *mtime = 0;
        cmk_s3_req_done(&r);
        return CMK_OK;
    }
    if (rc == CMK_E_NOT_FOUND)
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "blob %s not found in %s", bkey + 6, bk->name);
    if (rc != CMK_OK) {
        cmk_s3_req_done(&r);
        return rc;
    }
    *obj_size = r.total ? r.total : r.resp_len;
    *mtime = r.mtime;
    *first_len = r.resp_len;
    cmk_s3_req_done(&r);
    if (*obj_size == *first_len) {
        int lk = cmk_s3_link_parse(first, *first_len, data, cap, size);
        if (lk < 0)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s/%s: malformed link object", bk->name,
                                  bkey);
        *is_link = lk;
    }
    return CMK_OK;
}

/* 1 if bkey is a readable link object, its data object's key then in out; else 0. */
static int link_target(s3_blobs *bs, const char *bkey, char *out, size_t cap)
{
    uint8_t first[LINK_MAX];
    uint64_t sz, osz;
    int64_t mt;
    size_t fl;
    int is_link = 0;
    cmk_errbuf ign = {0};

    return cmk_s3_read_link(bs->bk, bkey, out, cap, &sz, &is_link, &osz, &mt, first, sizeof(first),
                            &fl, &ign) == CMK_OK &&
           is_link;
}

/* Publishes one finished sink under key: CMK_OK, or the error for results[i]. */
static cmk_err publish_one(s3_blobs *bs, s3_sink *k, const char *key, size_t i, cmk_bk_keep_fn keep,
                           void *arg, cmk_errbuf *eb)
{
    char bkey[CMK_BK_KEY_MAX + 8], link[LINK_MAX];
    const void *body;
    size_t len;
    cmk_err rc;
    int replace = 0;

    if (!k->finished)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "blob %s: the container was not finished", key);
    snprintf(bkey, sizeof(bkey), "blobs/%s", key);
    if (k->upload_id[0]) {
        if (!k->completed && (rc = complete_upload(k, eb)) != CMK_OK)
            return rc;
        int ll = cmk_s3_link_format(link, sizeof(link), k->data_key, k->total);
        if (ll < 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL, "blob %s: link too long", key);
        len = (size_t)ll;
        body = link;
    } else {
        body = k->p1;
        len = k->p1_len;
    }
    for (;;) {
        cmk_s3_req r = {
            .method = "PUT", .key = bkey, .body = body, .body_len = len, .if_none_match = !replace};
        char old[CMK_BK_KEY_MAX + 48] = "";

        /* The copy there is damaged: remember its data object to delete after. */
        if (replace && !link_target(bs, bkey, old, sizeof(old)))
            old[0] = '\0';
        rc = cmk_s3_http_do(bs->bk->http, &r, eb);
        cmk_s3_req_done(&r);
        if (rc == CMK_E_BUSY && r.tries > 1 && k->upload_id[0]) {
            /* A retried create may meet its own first attempt: is the link ours? */
            char cur[CMK_BK_KEY_MAX + 48];
            if (link_target(bs, bkey, cur, sizeof(cur)) && strcmp(cur, k->data_key) == 0)
                rc = CMK_OK;
        }
        if (rc != CMK_E_BUSY) {
            if (rc == CMK_OK && old[0] && strcmp(old, k->data_key) != 0)
                cmk_s3_delete_key(bs->bk, old);
            if (rc == CMK_OK)
                k->completed = 2; /* linked: the data object is the blob's now */
            return rc;
        }
        /* Taken: the engine decides whether the copy there stays. */
        rc = keep(arg, i, eb);
        if (rc == CMK_OK)
            return CMK_OK; /* dropped: close deletes our data object */
        if (replace || !(rc == CMK_E_INTEGRITY || rc == CMK_E_CORRUPT || rc == CMK_E_UNSUPPORTED ||
                         rc == CMK_E_NOT_FOUND))
            return rc;
        replace = 1;
    }
}

void cmk_s3_publish_many(cmk_bk_blobs *b, cmk_bk_sink *const *sinks, const char *const *keys,
                         size_t n, cmk_bk_keep_fn keep, void *arg, cmk_err *results,
                         cmk_errbuf *ebs)
{
    for (size_t i = 0; i < n; i++) {
        if (!sinks[i])
            continue;
        results[i] = publish_one(bs_of(b), (s3_sink *)sinks[i], keys[i], i, keep, arg, &ebs[i]);
    }
}
