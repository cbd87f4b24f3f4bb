/*
 * registry_manifest.c — manifest endpoints: GET/HEAD/PUT/DELETE /v2/<name>/manifests/<ref>,
 * with the OCI checks on a pushed manifest (schemaVersion 2, a known media type that agrees
 * with Content-Type, valid descriptors, every referenced blob or child manifest known to the
 * repository, subject and artifactType for the referrers API).
 *
 * A manifest is stored as a blob (its digest is the manifest's) and recorded in the
 * repository record with the blobs it refers to; after the record update, a running garbage
 * collection is told (rpolicy_protect_manifest), so none deletes what the manifest names.
 */
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_internal.h"
#include "tools/serve/registry_policy.h"

static int known_manifest_type(const char *mt)
{
    return strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_OCI_INDEX) == 0 ||
           strcmp(mt, MT_DOCKER_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

static int is_index_type(const char *mt)
{
    return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
}

/* Resolves a manifest reference (tag or digest) in rec; NULL if unknown. */
static const char *resolve(const json_t *rec, const char *ref)
{
    const char *d = registry_looks_like_digest(ref) ? ref : rmeta_tag(rec, ref);

    return d && rmeta_manifest(rec, d) ? d : NULL;
}

enum MHD_Result reg_manifest_get(struct req *q)
{
    json_t *rec = NULL, *m;
    const char *d, *mt;
    char digest[CMK_DIGEST_MAX], ctype[256];
    json_int_t size;
    cmk_err rc;

    if (registry_looks_like_digest(q->route.ref) && !registry_digest_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                              "invalid digest (sha256:<64 hex> or sha512:<128 hex>)", NULL);
    /* A string that is no valid tag cannot name a manifest: unknown, as the conformance
     * suite and other registries answer (a 400 is kept for pushes to such a tag). */
    if (!registry_looks_like_digest(q->route.ref) && !registry_tag_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN",
                              "manifest unknown to registry (not a valid tag)",
                              json_pack("{s:s}", "tag", "(invalid)"));
    rc = rmeta_load(q->r->s, q->route.name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND)
        return reg_store_error(q, rc, NULL, "cannot read the repository");
    d = rec ? resolve(rec, q->route.ref) : NULL;
    if (!d) {
        json_decref(rec);
        return reg_send_error(
            q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown to registry",
            json_pack("{s:s}", registry_looks_like_digest(q->route.ref) ? "digest" : "tag",
                      q->route.ref));
    }
    m = rmeta_manifest(rec, d);
    mt = json_string_value(json_object_get(m, "mediaType"));
    size = json_integer_value(json_object_get(m, "size"));
    snprintf(digest, sizeof(digest), "%s", d);
    snprintf(ctype, sizeof(ctype), "%s", mt ? mt : MT_OCI_MANIFEST);
    json_decref(rec);
    if (size < 0)
        return reg_send_error(q, MHD_HTTP_INTERNAL_SERVER_ERROR, "UNKNOWN", "bad manifest record",
                              NULL);
    return reg_send_blob(q, digest, (uint64_t)size, 0, (uint64_t)size, MHD_HTTP_OK, ctype);
}

enum MHD_Result reg_manifest_delete(struct req *q)
{
    registry *r = q->r;
    int by_digest = registry_looks_like_digest(q->route.ref);
    cmk_errbuf eb = {0};
    cmk_err rc;
    struct reply rp;

    if (by_digest ? !registry_digest_valid(q->route.ref) : !registry_tag_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST,
                              by_digest ? "DIGEST_INVALID" : "MANIFEST_INVALID",
                              "invalid manifest reference (a tag or a digest)", NULL);
    if (by_digest)
        rc = rpolicy_delete_manifest(r->s, q->route.name, q->route.ref, &eb);
    else
        rc = rpolicy_delete_tag(r->s, q->route.name, q->route.ref, &eb);
    if (rc == CMK_E_NOT_FOUND)
        return reg_send_error(q, MHD_HTTP_NOT_FOUND, "MANIFEST_UNKNOWN",
                              "manifest unknown to registry", NULL);
    if (rc != CMK_OK)
        return reg_store_error(q, rc, reg_ebmsg(&eb), "cannot delete the manifest");
    rp = reg_reply_empty();
    return reg_send_reply(q, MHD_HTTP_ACCEPTED, &rp);
}

/* Checks a descriptor's shape; returns its digest or NULL. */
static const char *descriptor(const json_t *d, json_int_t *size)
{
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *sz = json_object_get(d, "size");

    if (!json_is_object(d) || !json_is_string(json_object_get(d, "mediaType")) ||
        !registry_digest_valid(dg) || !json_is_integer(sz) || json_integer_value(sz) < 0)
        return NULL;
    *size = json_integer_value(sz);
    return dg;
}

/* Validates a parsed manifest against the repository; fills entry (mediaType, size,
 * artifactType, subject, annotations, refs). Answers and returns 1 if invalid. */
static int manifest_check(struct req *q, json_t *j, const json_t *rec, const char *mt,
                          json_t *entry, enum MHD_Result *ret)
{
    json_t *refs = json_object_get(entry, "refs"), *missing = json_array(), *v, *subject;
    const char *msg = NULL, *at;
    json_int_t size;
    uint64_t have;
    size_t i;

    if (!missing) {
        *ret = MHD_NO;
        return 1;
    }
    if (is_index_type(mt)) {
        json_t *mans = json_object_get(j, "manifests");
        if (!json_is_array(mans)) {
            msg = "an index needs a \"manifests\" array";
            goto bad;
        }
        json_array_foreach(mans, i, v)
        {
            const char *d = descriptor(v, &size);
            json_t *m;
            if (!d) {
                msg = "invalid descriptor in \"manifests\"";
                goto bad;
            }
            m = rec ? rmeta_manifest(rec, d) : NULL;
            if (!m || json_integer_value(json_object_get(m, "size")) != size)
                json_array_append_new(missing, json_string(d));
            json_array_append_new(refs, json_string(d));
        }
    } else {
        json_t *cfg = json_object_get(j, "config"), *layers = json_object_get(j, "layers");
        const char *d = descriptor(cfg, &size);
        if (!d) {
            msg = "an image manifest needs a valid \"config\" descriptor";
            goto bad;
        }
        if (!rec || !rmeta_blob(rec, d, &have) || have != (uint64_t)size)
            json_array_append_new(missing, json_string(d));
        json_array_append_new(refs, json_string(d));
        if (!json_is_array(layers)) {
            msg = "an image manifest needs a \"layers\" array";
            goto bad;
        }
        json_array_foreach(layers, i, v)
        {
            d = descriptor(v, &size);
            if (!d) {
                msg = "invalid descriptor in \"layers\"";
                goto bad;
            }
            /* Foreign layers (with urls) live elsewhere by design. */
            if (!json_object_get(v, "urls") &&
                (!rec || !rmeta_blob(rec, d, &have) || have != (uint64_t)size))
                json_array_append_new(missing, json_string(d));
            json_array_append_new(refs, json_string(d));
        }
        at = json_string_value(json_object_get(cfg, "mediaType"));
        if (at && !json_object_get(j, "artifactType"))
            json_object_set_new(entry, "artifactType", json_string(at));
    }
    at = json_string_value(json_object_get(j, "artifactType"));
    if (json_object_get(j, "artifactType") && !at) {
        msg = "\"artifactType\" must be a string";
        goto bad;
    }
    if (at)
        json_object_set_new(entry, "artifactType", json_string(at));
    subject = json_object_get(j, "subject");
    if (subject) {
        const char *d = descriptor(subject, &size);
        json_t *ann = json_object_get(j, "annotations");
        if (!d) {
            msg = "invalid \"subject\" descriptor";
            goto bad;
        }
        json_object_set_new(entry, "subject", json_string(d));
        /* Referrers listings carry the annotations; keep them for those manifests only. */
        if (json_is_object(ann))
            json_object_set(entry, "annotations", ann);
    }
    if (json_array_size(missing) > 0) {
        json_t *errs = json_array();
        json_array_foreach(missing, i, v)
        {
            json_array_append_new(
                errs, reg_error_entry("MANIFEST_BLOB_UNKNOWN",
                                      "manifest references a blob or manifest "
                                      "unknown to the repository",
                                      reg_with_rid(q, reg_digest_detail(json_string_value(v)))));
        }
        json_decref(missing);
        struct reply rp = reg_reply_json(q, json_pack("{s:o}", "errors", errs), "application/json");
        *ret = reg_send_reply(q, MHD_HTTP_BAD_REQUEST, &rp);
        return 1;
    }
    json_decref(missing);
    return 0;
bad:
    json_decref(missing);
    *ret = reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", msg, NULL);
    return 1;
}

enum MHD_Result reg_manifest_put_finish(struct req *q)
{
    registry *r = q->r;
    int by_digest = registry_looks_like_digest(q->route.ref), stored_before = 0;
    const char *ctype_h = reg_header(q, MHD_HTTP_HEADER_CONTENT_TYPE), *mt_body;
    char ctype[256], mt[256], digest[CMK_DIGEST_MAX], loc[REG_NAME_MAX + CMK_DIGEST_MAX + 24];
    json_t *j = NULL, *rec = NULL, *entry = NULL;
    cmk_errbuf eb = {0};
    json_error_t jerr;
    enum MHD_Result ret;
    cmk_put *p = NULL;
    struct reply rp;
    cmk_err rc;

    if (q->too_big) {
        char msg[96];
        snprintf(msg, sizeof(msg), "manifest larger than the limit of %llu bytes",
                 (unsigned long long)r->max_manifest);
        return reg_send_error(q, MHD_HTTP_CONTENT_TOO_LARGE, "MANIFEST_INVALID", msg, NULL);
    }
    if (q->blen == 0)
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", "empty manifest", NULL);
    j = json_loadb(q->buf, q->blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "manifest is not a JSON object%s%s", j ? "" : ": ",
                 j ? "" : jerr.text);
        json_decref(j);
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID", msg, NULL);
    }
    if (json_integer_value(json_object_get(j, "schemaVersion")) != 2) {
        json_decref(j);
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                              "only schemaVersion 2 manifests are supported", NULL);
    }
    /* Content-Type without parameters. */
    ctype[0] = '\0';
    if (ctype_h) {
        size_t n = strcspn(ctype_h, "; \t");
        if (n >= sizeof(ctype))
            n = sizeof(ctype) - 1;
        memcpy(ctype, ctype_h, n);
        ctype[n] = '\0';
    }
    mt_body = json_string_value(json_object_get(j, "mediaType"));
    if (mt_body && ctype[0] && strcmp(mt_body, ctype) != 0) {
        json_decref(j);
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                              "Content-Type does not match the manifest's mediaType", NULL);
    }
    if (mt_body)
        snprintf(mt, sizeof(mt), "%s", mt_body);
    else if (ctype[0])
        snprintf(mt, sizeof(mt), "%s", ctype);
    else
        snprintf(mt, sizeof(mt), "%s",
                 json_object_get(j, "manifests") ? MT_OCI_INDEX : MT_OCI_MANIFEST);
    if (!known_manifest_type(mt)) {
        json_decref(j);
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST, "MANIFEST_INVALID",
                              "unsupported manifest media type (OCI image manifest or index, "
                              "Docker manifest v2 schema 2 or manifest list)",
                              NULL);
    }
    entry = json_pack("{s:s, s:I, s:[]}", "mediaType", mt, "size", (json_int_t)q->blen, "refs");
    if (!entry) {
        json_decref(j);
        return MHD_NO;
    }
    rc = rmeta_load(r->s, q->route.name, &rec);
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND) {
        ret = reg_store_error(q, rc, NULL, "cannot read the repository");
        goto out;
    }
    if (manifest_check(q, j, rec, mt, entry, &ret))
        goto out;
    if (reg_quota_check(q, by_digest ? q->route.ref : NULL, q->blen, &ret))
        goto out;
    /* Whether the store holds it already, for the usage counters (a new blob adds). */
    {
        char d[CMK_DIGEST_MAX];
        cmk_blob_info bi;
        if (by_digest) {
            snprintf(d, sizeof(d), "%s", q->route.ref);
        } else {
            unsigned char h[32];
            SHA256((const unsigned char *)q->buf, q->blen, h);
            memcpy(d, "sha256:", 7);
            for (int i = 0; i < 32; i++)
                snprintf(d + 7 + 2 * i, 3, "%02x", h[i]);
        }
        stored_before = cmk_stat(r->s, d, &bi) == CMK_OK;
    }
    rc = cmk_put_begin(
        r->s, by_digest && strncmp(q->route.ref, "sha512:", 7) == 0 ? "sha512" : "sha256", &p);
    if (rc == CMK_OK)
        rc = cmk_put_write(p, q->buf, q->blen);
    if (rc != CMK_OK) {
        ret = reg_store_error(q, rc, NULL, "cannot store the manifest");
        goto out;
    }
    rc = cmk_put_commit(p, by_digest ? q->route.ref : NULL, digest);
    p = NULL;
    if (rc == CMK_E_DIGEST) {
        ret = reg_send_error(q, MHD_HTTP_BAD_REQUEST, "DIGEST_INVALID",
                             "manifest digest does not match the reference; nothing was stored",
                             reg_digest_detail(q->route.ref));
        goto out;
    }
    if (rc == CMK_OK)
        rc =
            rmeta_put_manifest(r->s, q->route.name, digest, entry, by_digest ? NULL : q->route.ref);
    /* A collection running now must not delete what the manifest names. */
    if (rc == CMK_OK)
        rc = rpolicy_protect_manifest(r->s, q->route.name, digest, entry, &eb);
    if (rc == CMK_OK && !stored_before)
        rgc_usage_note((int64_t)q->blen, 1);
    if (rc != CMK_OK) {
        ret = reg_store_error(q, rc, reg_ebmsg(&eb), "cannot store the manifest");
        goto out;
    }
    rp = reg_reply_empty();
    snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", q->route.name, digest);
    reg_hdr(&rp, MHD_HTTP_HEADER_LOCATION, loc);
    reg_hdr(&rp, "Docker-Content-Digest", digest);
    if (json_object_get(entry, "subject"))
        reg_hdr(&rp, "OCI-Subject", json_string_value(json_object_get(entry, "subject")));
    ret = reg_send_reply(q, MHD_HTTP_CREATED, &rp);
out:
    cmk_put_abort(p);
    json_decref(rec);
    json_decref(entry);
    json_decref(j);
    return ret;
}

enum MHD_Result reg_manifest_put_start(struct req *q)
{
    const char *clen = reg_header(q, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t n = 0;

    if (registry_looks_like_digest(q->route.ref) ? !registry_digest_valid(q->route.ref)
                                                 : !registry_tag_valid(q->route.ref))
        return reg_send_error(q, MHD_HTTP_BAD_REQUEST,
                              registry_looks_like_digest(q->route.ref) ? "DIGEST_INVALID"
                                                                       : "MANIFEST_INVALID",
                              "invalid manifest reference: a tag matches "
                              "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}, a digest is sha256:<64 hex>",
                              NULL);
    if (clen && http_parse_u64(clen, UINT64_MAX, &n) == 0 && n > q->r->max_manifest) {
        q->too_big = 1;
        return reg_manifest_put_finish(q);
    }
    q->body = BODY_MANIFEST;
    return MHD_YES;
}
