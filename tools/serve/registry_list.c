/*
 * registry_list.c — listings: GET /v2/_catalog and /v2/<name>/tags/list (lexical order, ?n=
 * and ?last= pagination with a Link to the next page), GET /v2/<name>/referrers/<digest> (an
 * OCI index, ?artifactType= filter), and GET /metrics (Prometheus text).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/registry_internal.h"

#define PAGE_MAX 100000

/* Reads ?n= and ?last=; answers and returns 1 on a bad n. *n = SIZE_MAX: no limit. */
static int page_args(struct req *q, size_t *n, const char **last, enum MHD_Result *ret)
{
    const char *ns = reg_arg(q, "n");
    uint64_t v;

    *n = SIZE_MAX;
    *last = reg_arg(q, "last");
    if (ns) {
        if (http_parse_u64(ns, PAGE_MAX, &v) != 0) {
            *ret = reg_send_error(q, MHD_HTTP_BAD_REQUEST, "PAGINATION_NUMBER_INVALID",
                                  "n must be a number from 0 to 100000", NULL);
            return 1;
        }
        *n = (size_t)v;
    }
    return 0;
}

/* Copies the names of sorted (a sorted array of strings) after `last`, at most n, into
 * page; *more = 1 if some remain. */
static void paginate(const json_t *sorted, size_t n, const char *last, json_t *page, int *more)
{
    size_t i;
    json_t *v;

    *more = 0;
    /* n=0 asks for no names: there is no next page to point to (a Link to the same query
     * would send a client round in circles). */
    if (n == 0)
        return;
    json_array_foreach(sorted, i, v)
    {
        if (last && strcmp(json_string_value(v), last) <= 0)
            continue;
        if (json_array_size(page) >= n) {
            *more = 1;
            break;
        }
        json_array_append(page, v);
    }
}

static void link_header(struct reply *rp, const char *base, size_t n, const json_t *page)
{
    char link[REG_NAME_MAX * 2 + 160];
    const char *lastv = json_string_value(json_array_get(page, json_array_size(page) - 1));

    /* Names and tags are URL-safe by their grammars. */
    snprintf(link, sizeof(link), "<%s?n=%zu&last=%s>; rel=\"next\"", base, n, lastv ? lastv : "");
    reg_hdr(rp, MHD_HTTP_HEADER_LINK, link);
}

static int cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* The keys of obj as a sorted JSON array (the spec wants lexical order; jansson keeps
 * insertion order). NULL when out of memory. */
static json_t *sorted_keys(const json_t *obj)
{
    size_t cnt = json_object_size(obj), i = 0;
    json_t **items = malloc((cnt ? cnt : 1) * sizeof(*items)), *out = json_array(), *v;
    const char *k;

    if (!items || !out)
        goto fail;
    json_object_foreach((json_t *)obj, k, v)
    {
        items[i] = json_string(k);
        if (!items[i])
            goto fail;
        i++;
    }
    qsort(items, i, sizeof(*items), cmp_json_str);
    for (size_t j = 0; j < i; j++) {
        if (json_array_append_new(out, items[j]) != 0) {
            items[j] = NULL;
            while (++j < i)
                json_decref(items[j]);
            i = 0;
            goto fail;
        }
    }
    free(items);
    return out;
fail:
    for (size_t j = 0; items && j < i; j++)
        json_decref(items[j]);
    free(items);
    json_decref(out);
    return NULL;
}

/* Answers 200 with the names of `all` (a sorted array, released) after `last`, at most n, as
 * {key: [...]} ({"name", key} for a repository's tags), and a Link from base to the next
 * page if there is one. */
static enum MHD_Result send_page(struct req *q, json_t *all, size_t n, const char *last,
                                 const char *key, const char *base)
{
    json_t *page = json_array(), *body;
    enum MHD_Result ret = MHD_NO;
    struct reply rp;
    int more;

    if (!all || !page)
        goto out;
    paginate(all, n, last, page, &more);
    if (q->route.rt == REG_RT_TAGS)
        body = json_pack("{s:s, s:O}", "name", q->route.name, key, page);
    else
        body = json_pack("{s:O}", key, page);
    rp = reg_reply_json(q, body, "application/json");
    if (more)
        link_header(&rp, base, n, page);
    ret = reg_send_reply(q, MHD_HTTP_OK, &rp);
out:
    json_decref(page);
    json_decref(all);
    return ret;
}

enum MHD_Result reg_tags_list(struct req *q)
{
    json_t *rec = NULL, *all;
    const char *last;
    enum MHD_Result ret;
    char base[REG_NAME_MAX + 32];
    size_t n;
    cmk_err rc;

    if (page_args(q, &n, &last, &ret))
        return ret;
    rc = rmeta_load(q->r->s, q->route.name, &rec);
    if (rc == CMK_E_NOT_FOUND)
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "NAME_UNKNOWN",
                              "repository name not known to registry",
                              json_pack("{s:s}", "name", q->route.name));
    if (rc != CMK_OK)
        return reg_store_error(q, rc, NULL, "cannot read the repository");
    all = sorted_keys(json_object_get(rec, "tags"));
    json_decref(rec);
    snprintf(base, sizeof(base), "/v2/%s/tags/list", q->route.name);
    return send_page(q, all, n, last, "tags", base);
}

enum MHD_Result reg_catalog(struct req *q)
{
    json_t *all = NULL;
    const char *last;
    enum MHD_Result ret;
    size_t n;
    cmk_err rc;

    if (page_args(q, &n, &last, &ret))
        return ret;
    rc = rmeta_list_repos(q->r->s, &all);
    if (rc != CMK_OK)
        return reg_store_error(q, rc, NULL, "cannot list the repositories");
    return send_page(q, all, n, last, "repositories", "/v2/_catalog");
}

enum MHD_Result reg_referrers(struct req *q)
{
    const char *filter = reg_arg(q, "artifactType");
    json_t *rec = NULL, *keys = NULL, *mans = json_array(), *k;
    struct reply rp;
    size_t i;
    cmk_err rc;

    if (!mans)
        return MHD_NO;
    if (filter && !*filter)
        filter = NULL;
    if (!registry_digest_valid(q->route.ref)) {
        json_decref(mans);
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    }
    rc = rmeta_load(q->r->s, q->route.name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND) {
        json_decref(mans);
        return reg_store_error(q, rc, NULL, "cannot read the repository");
    }
    /* An unknown subject (or repository) has no referrers: an empty index, not a 404. */
    if (rec)
        keys = sorted_keys(json_object_get(rec, "manifests"));
    json_array_foreach(keys, i, k)
    {
        const char *d = json_string_value(k);
        json_t *m = rmeta_manifest(rec, d), *desc;
        const char *subj = json_string_value(json_object_get(m, "subject"));
        const char *at = json_string_value(json_object_get(m, "artifactType"));

        if (!subj || strcmp(subj, q->route.ref) != 0)
            continue;
        if (filter && (!at || strcmp(at, filter) != 0))
            continue;
        desc = json_pack("{s:O, s:s, s:O}", "mediaType", json_object_get(m, "mediaType"), "digest",
                         d, "size", json_object_get(m, "size"));
        if (desc && at)
            json_object_set_new(desc, "artifactType", json_string(at));
        if (desc && json_object_get(m, "annotations"))
            json_object_set(desc, "annotations", json_object_get(m, "annotations"));
        if (!desc || json_array_append_new(mans, desc) != 0)
            break;
    }
    json_decref(keys);
    json_decref(rec);
    rp = reg_reply_json(q,
                        json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
                                  "manifests", mans),
                        MT_OCI_INDEX);
    if (filter)
        reg_hdr(&rp, "OCI-Filters-Applied", "artifactType");
    return reg_send_reply(q, MHD_HTTP_OK, &rp);
}

enum MHD_Result reg_metrics(struct req *q)
{
    registry *r = q->r;
    struct reply rp = {NULL, 0};
    blob_cache_stats cs;
    char *text = NULL, *more;
    size_t len = 0;
    int n;

    if (!r->metrics || http_metrics_render(r->metrics, r->s, registry_uploads(r),
                                           registry_inflight(r), &text, &len) != 0)
        return reg_send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN",
                              "metrics are not available", NULL);
    blob_cache_get_stats(r->cache, &cs);
    more = realloc(text, len + 1536);
    if (!more) {
        free(text);
        return MHD_NO;
    }
    text = more;
    n = snprintf(text + len, 1536,
                 "# HELP cmkstore_blob_cache_hits_total Blob reads answered from the cache of "
                 "decrypted blobs (--cache-size).\n"
                 "# TYPE cmkstore_blob_cache_hits_total counter\n"
                 "cmkstore_blob_cache_hits_total %llu\n"
                 "# TYPE cmkstore_blob_cache_misses_total counter\n"
                 "cmkstore_blob_cache_misses_total %llu\n"
                 "# TYPE cmkstore_blob_cache_fills_total counter\n"
                 "cmkstore_blob_cache_fills_total %llu\n"
                 "# TYPE cmkstore_blob_cache_evictions_total counter\n"
                 "cmkstore_blob_cache_evictions_total %llu\n"
                 "# HELP cmkstore_blob_cache_waits_total Reads that waited for another "
                 "request's fill of the same blob.\n"
                 "# TYPE cmkstore_blob_cache_waits_total counter\n"
                 "cmkstore_blob_cache_waits_total %llu\n"
                 "# TYPE cmkstore_blob_cache_bytes gauge\n"
                 "cmkstore_blob_cache_bytes %llu\n"
                 "# TYPE cmkstore_blob_cache_entries gauge\n"
                 "cmkstore_blob_cache_entries %llu\n"
                 "# TYPE cmkstore_blob_cache_max_bytes gauge\n"
                 "cmkstore_blob_cache_max_bytes %llu\n"
                 "# HELP cmkstore_uploads_unsaved_bytes Bytes open upload sessions received "
                 "since their last save (--upload-save-after): what a crash would lose now.\n"
                 "# TYPE cmkstore_uploads_unsaved_bytes gauge\n"
                 "cmkstore_uploads_unsaved_bytes %llu\n",
                 (unsigned long long)cs.hits, (unsigned long long)cs.misses,
                 (unsigned long long)cs.fills, (unsigned long long)cs.evictions,
                 (unsigned long long)cs.waits, (unsigned long long)cs.bytes,
                 (unsigned long long)cs.entries, (unsigned long long)cs.max_bytes,
                 (unsigned long long)reg_sessions_unsaved(r->sessions));
    if (n > 0 && n < 1536)
        len += (size_t)n;
    more = reg_maint_metrics(r);
    if (more) {
        size_t ml = strlen(more);
        char *all = realloc(text, len + ml);
        if (all) {
            memcpy(all + len, more, ml);
            text = all;
            len += ml;
        }
        free(more);
    }
    rp.resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!rp.resp) {
        free(text);
        return MHD_NO;
    }
    q->out += len;
    reg_hdr(&rp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    return reg_send_reply(q, MHD_HTTP_OK, &rp);
}
