/* registry_meta.c — repository records of the OCI registry over cmk_meta_* (see the header). */
#include "tools/serve/registry_meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REC_PREFIX "repo/"
/* Record names are "repo/" + a name of at most REG_NAME_MAX characters. */
#define REC_NAME_CAP (sizeof(REC_PREFIX) + REG_NAME_MAX + 1)

/* ---- grammars ---- */

static int lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int registry_name_valid(const char *name)
{
    const char *p = name;
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n > REG_NAME_MAX)
        return 0;
    for (;;) {
        /* A path component: alphanumeric runs joined by ".", "_", "__" or "-"+. */
        if (!lower_alnum(*p))
            return 0;
        while (lower_alnum(*p))
            p++;
        while (*p == '.' || *p == '_' || *p == '-') {
            if (*p == '.') {
                p++;
            } else if (*p == '_') {
                p++;
                if (*p == '_')
                    p++;
            } else {
                while (*p == '-')
                    p++;
            }
            if (!lower_alnum(*p))
                return 0;
            while (lower_alnum(*p))
                p++;
        }
        if (*p == '\0')
            return 1;
        if (*p != '/')
            return 0;
        p++;
    }
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

int registry_tag_valid(const char *tag)
{
    size_t n = tag ? strlen(tag) : 0;

    if (n == 0 || n > REG_TAG_MAX || !word_char(tag[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!word_char(tag[i]) && tag[i] != '.' && tag[i] != '-')
            return 0;
    return 1;
}

static int hex_run(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return p[n] == '\0';
}

int registry_digest_valid(const char *d)
{
    if (!d)
        return 0;
    if (strncmp(d, "sha256:", 7) == 0)
        return strlen(d) == 7 + 64 && hex_run(d + 7, 64);
    if (strncmp(d, "sha512:", 7) == 0)
        return strlen(d) == 7 + 128 && hex_run(d + 7, 128);
    return 0;
}

int registry_looks_like_digest(const char *d)
{
    /* Tags cannot hold ':', so anything with one is meant as a digest. */
    return d && strchr(d, ':') != NULL;
}

/* ---- records ---- */

static cmk_err rec_name(const char *repo, char out[REC_NAME_CAP])
{
    if (!registry_name_valid(repo))
        return CMK_E_INVAL;
    snprintf(out, REC_NAME_CAP, "%s%s", REC_PREFIX, repo);
    return CMK_OK;
}

/* Parses a record value; a missing value gives a fresh empty record. */
static cmk_err rec_parse(const void *val, size_t len, json_t **out)
{
    json_t *j;

    if (!val) {
        j = json_pack("{s:i, s:{}, s:{}, s:{}}", "v", 1, "tags", "manifests", "blobs");
    } else {
        j = json_loadb(val, len, JSON_REJECT_DUPLICATES, NULL);
        if (!j)
            return CMK_E_CORRUPT;
        if (!json_is_object(j)) {
            json_decref(j);
            return CMK_E_CORRUPT;
        }
        /* Tolerate records written without one of the maps. */
        static const char *const maps[] = {"tags", "manifests", "blobs"};
        for (size_t i = 0; i < 3; i++) {
            json_t *m = json_object_get(j, maps[i]);
            if (!m) {
                if (json_object_set_new(j, maps[i], json_object()) != 0) {
                    json_decref(j);
                    return CMK_E_NOMEM;
                }
            } else if (!json_is_object(m)) {
                json_decref(j);
                return CMK_E_CORRUPT;
            }
        }
    }
    if (!j)
        return CMK_E_NOMEM;
    *out = j;
    return CMK_OK;
}

static int rec_empty(const json_t *j)
{
    return json_object_size(json_object_get(j, "tags")) == 0 &&
           json_object_size(json_object_get(j, "manifests")) == 0 &&
           json_object_size(json_object_get(j, "blobs")) == 0;
}

/* Serialises into a malloc'd buffer (the store frees it with free()). */
static cmk_err rec_dump(const json_t *j, void **out, size_t *outlen)
{
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS);
    char *buf;

    if (n == 0)
        return CMK_E_NOMEM;
    buf = malloc(n);
    if (!buf)
        return CMK_E_NOMEM;
    if (json_dumpb(j, buf, n, JSON_COMPACT | JSON_SORT_KEYS) != n) {
        free(buf);
        return CMK_E_NOMEM;
    }
    *out = buf;
    *outlen = n;
    return CMK_OK;
}

cmk_err rmeta_load(cmk_store *s, const char *repo, json_t **out)
{
    char name[REC_NAME_CAP];
    void *val = NULL;
    size_t len = 0;
    cmk_err rc;

    *out = NULL;
    rc = rec_name(repo, name);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_meta_get(s, name, &val, &len);
    if (rc != CMK_OK)
        return rc;
    rc = rec_parse(val, len, out);
    cmk_free(val);
    return rc;
}

int rmeta_blob(const json_t *rec, const char *digest, uint64_t *size)
{
    json_t *v = json_object_get(json_object_get(rec, "blobs"), digest);

    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return 0;
    if (size)
        *size = (uint64_t)json_integer_value(v);
    return 1;
}

json_t *rmeta_manifest(const json_t *rec, const char *digest)
{
    json_t *m = json_object_get(json_object_get(rec, "manifests"), digest);

    return json_is_object(m) ? m : NULL;
}

const char *rmeta_tag(const json_t *rec, const char *tag)
{
    return json_string_value(json_object_get(json_object_get(rec, "tags"), tag));
}

/* ---- updates ---- */

enum rop {
    ROP_LINK,
    ROP_UNLINK,
    ROP_PUT_MANIFEST,
    ROP_DEL_MANIFEST,
    ROP_DEL_TAG,
    ROP_UNLINK_SET,
    ROP_DEL_UNREACHABLE
};

struct rupdate {
    enum rop op;
    const char *digest;
    const char *tag;
    uint64_t size;
    const json_t *entry;
    const json_t *set;    /* ROP_UNLINK_SET: digests (object keys) */
    int64_t cutoff;       /* ROP_DEL_UNREACHABLE: manifests pushed after it are kept */
    size_t removed;       /* ROP_UNLINK_SET, ROP_DEL_UNREACHABLE: how many went */
    int created, deleted; /* the record was created / deleted by this update */
};

/* The "linked" map: when each link was made (seconds since the epoch), so that collection
 * spares links younger than its grace period (a push whose manifest is still to come). */
static json_t *linked_map(json_t *rec)
{
    json_t *m = json_object_get(rec, "linked");

    if (json_is_object(m))
        return m;
    m = json_object();
    if (!m || json_object_set_new(rec, "linked", m) != 0)
        return NULL;
    return m;
}

static cmk_err apply(json_t *rec, const struct rupdate *u)
{
    json_t *blobs = json_object_get(rec, "blobs");
    json_t *mans = json_object_get(rec, "manifests");
    json_t *tags = json_object_get(rec, "tags");
    const char *k;
    json_t *v;
    void *tmp;

    switch (u->op) {
    case ROP_LINK:
        v = linked_map(rec);
        if (!v || json_object_set_new(v, u->digest, json_integer((json_int_t)time(NULL))) != 0)
            return CMK_E_NOMEM;
        return json_object_set_new(blobs, u->digest, json_integer((json_int_t)u->size)) == 0
                   ? CMK_OK
                   : CMK_E_NOMEM;
    case ROP_UNLINK:
        json_object_del(json_object_get(rec, "linked"), u->digest);
        return json_object_del(blobs, u->digest) == 0 ? CMK_OK : CMK_E_NOT_FOUND;
    case ROP_UNLINK_SET:
        json_object_foreach((json_t *)u->set, k, v)
        {
            json_object_del(json_object_get(rec, "linked"), k);
            if (json_object_del(blobs, k) == 0)
                ((struct rupdate *)u)->removed++;
        }
        return CMK_OK;
    case ROP_DEL_UNREACHABLE: {
        json_t *keep = json_object();
        if (!keep || rmeta_reachable(rec, u->cutoff, keep) != CMK_OK) {
            json_decref(keep);
            return CMK_E_NOMEM;
        }
        json_object_foreach_safe(mans, tmp, k, v)
        {
            if (!json_object_get(keep, k)) {
                json_object_del(mans, k);
                ((struct rupdate *)u)->removed++;
            }
        }
        json_decref(keep);
        /* Nothing to delete: no write at all (CMK_E_EXISTS leaves the record as it is). */
        return u->removed ? CMK_OK : CMK_E_EXISTS;
    }
    case ROP_PUT_MANIFEST:
        v = json_deep_copy(u->entry);
        /* When it was pushed: collection of untagged manifests spares the young ones (the
         * children of an index are pushed before the index that names them). */
        if (!v || json_object_set_new(v, "pushed", json_integer((json_int_t)time(NULL))) != 0 ||
            json_object_set_new(mans, u->digest, v) != 0)
            return CMK_E_NOMEM;
        if (u->tag && json_object_set_new(tags, u->tag, json_string(u->digest)) != 0)
            return CMK_E_NOMEM;
        return CMK_OK;
    case ROP_DEL_MANIFEST:
        if (json_object_del(mans, u->digest) != 0)
            return CMK_E_NOT_FOUND;
        json_object_foreach_safe(tags, tmp, k, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), u->digest) == 0)
                json_object_del(tags, k);
        }
        return CMK_OK;
    case ROP_DEL_TAG:
        return json_object_del(tags, u->tag) == 0 ? CMK_OK : CMK_E_NOT_FOUND;
    }
    return CMK_E_INVAL;
}

static cmk_err update_fn(const void *cur, size_t curlen, void **out, size_t *outlen, void *arg)
{
    struct rupdate *u = arg;
    json_t *rec = NULL;
    cmk_err rc;

    *out = NULL;
    *outlen = 0;
    rc = rec_parse(cur, curlen, &rec);
    if (rc != CMK_OK)
        return rc;
    u->removed = 0;
    rc = apply(rec, u);
    if (rc == CMK_OK && !rec_empty(rec))
        rc = rec_dump(rec, out, outlen);
    u->created = rc == CMK_OK && !cur && *out;
    u->deleted = rc == CMK_OK && cur && !*out;
    /* An empty record is deleted (*out stays NULL), so empty repositories vanish. */
    json_decref(rec);
    return rc;
}

/* cmk_meta_update, retried while another process changes the record between our read and
 * our write (CMK_E_BUSY: a backend without a cross-process lock writes by compare-and-swap). */
cmk_err rmeta_update_record(cmk_store *s, const char *name, cmk_meta_fn fn, void *arg)
{
    cmk_err rc;
    int i = 0;

    do
        rc = cmk_meta_update(s, name, fn, arg);
    while (rc == CMK_E_BUSY && ++i < RMETA_CAS_TRIES);
    return rc;
}

static cmk_err update(cmk_store *s, const char *repo, struct rupdate *u)
{
    char name[REC_NAME_CAP];
    cmk_err rc = rec_name(repo, name);

    if (rc != CMK_OK)
        return rc;
    rc = rmeta_update_record(s, name, update_fn, u);
    /* The catalog follows the records it lists: a repository enters it when its record is
     * created and leaves it when its record goes (empty). A failure here leaves the catalog
     * behind until the next collection repairs it; the repository change itself stands. */
    if (rc == CMK_OK && u->created && rmeta_catalog_add(s, repo) != CMK_OK)
        fprintf(stderr, "cmkstore: cannot add %s to the catalog: %s\n", repo, cmk_errmsg());
    if (rc == CMK_OK && u->deleted && rmeta_catalog_remove(s, repo) != CMK_OK)
        fprintf(stderr, "cmkstore: cannot remove %s from the catalog: %s\n", repo, cmk_errmsg());
    return rc;
}

cmk_err rmeta_link_blob(cmk_store *s, const char *repo, const char *digest, uint64_t size)
{
    struct rupdate u = {.op = ROP_LINK, .digest = digest, .size = size};

    if (size > (uint64_t)INT64_MAX)
        return CMK_E_INVAL;
    return update(s, repo, &u);
}

cmk_err rmeta_unlink_blob(cmk_store *s, const char *repo, const char *digest)
{
    struct rupdate u = {.op = ROP_UNLINK, .digest = digest};

    return update(s, repo, &u);
}

cmk_err rmeta_put_manifest(cmk_store *s, const char *repo, const char *digest, const json_t *entry,
                           const char *tag)
{
    struct rupdate u = {.op = ROP_PUT_MANIFEST, .digest = digest, .entry = entry, .tag = tag};

    return update(s, repo, &u);
}

cmk_err rmeta_delete_manifest(cmk_store *s, const char *repo, const char *digest)
{
    struct rupdate u = {.op = ROP_DEL_MANIFEST, .digest = digest};

    return update(s, repo, &u);
}

cmk_err rmeta_delete_tag(cmk_store *s, const char *repo, const char *tag)
{
    struct rupdate u = {.op = ROP_DEL_TAG, .tag = tag};

    return update(s, repo, &u);
}

cmk_err rmeta_unlink_set(cmk_store *s, const char *repo, const json_t *set, size_t *removed)
{
    struct rupdate u = {.op = ROP_UNLINK_SET, .set = set};
    cmk_err rc = update(s, repo, &u);

    if (removed)
        *removed = rc == CMK_OK ? u.removed : 0;
    return rc;
}

cmk_err rmeta_delete_unreachable(cmk_store *s, const char *repo, int64_t cutoff, size_t *removed)
{
    struct rupdate u = {.op = ROP_DEL_UNREACHABLE, .cutoff = cutoff};
    cmk_err rc = update(s, repo, &u);

    if (rc == CMK_E_EXISTS)
        rc = CMK_OK;
    if (removed)
        *removed = rc == CMK_OK ? u.removed : 0;
    return rc;
}

int64_t rmeta_link_time(const json_t *rec, const char *digest)
{
    json_t *v = json_object_get(json_object_get(rec, "linked"), digest);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

int64_t rmeta_pushed_time(const json_t *manifest)
{
    json_t *v = json_object_get(manifest, "pushed");

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* Adds the manifests of rec that digest d reaches (itself, the index children it names in
 * rec) to set. */
static int reach(const json_t *rec, const char *d, json_t *set)
{
    json_t *m = rmeta_manifest(rec, d), *r;
    size_t i;

    if (!m || json_object_get(set, d))
        return 0;
    if (json_object_set_new(set, d, json_true()) != 0)
        return -1;
    json_array_foreach(json_object_get(m, "refs"), i, r)
    {
        if (json_is_string(r) && reach(rec, json_string_value(r), set) != 0)
            return -1;
    }
    return 0;
}

cmk_err rmeta_reachable(const json_t *rec, int64_t cutoff, json_t *set)
{
    json_t *tags = json_object_get(rec, "tags"), *mans = json_object_get(rec, "manifests"), *v;
    const char *k;
    int grew;

    /* Roots: every tagged manifest, and every manifest pushed after cutoff. */
    json_object_foreach(tags, k, v)
    {
        if (json_is_string(v) && reach(rec, json_string_value(v), set) != 0)
            return CMK_E_NOMEM;
    }
    json_object_foreach(mans, k, v)
    {
        if (rmeta_pushed_time(v) > cutoff && reach(rec, k, set) != 0)
            return CMK_E_NOMEM;
    }
    /* Referrers live as long as their subject: repeat until nothing is added (a referrer of
     * a referrer). */
    do {
        grew = 0;
        json_object_foreach(mans, k, v)
        {
            const char *subj = json_string_value(json_object_get(v, "subject"));
            if (subj && !json_object_get(set, k) && json_object_get(set, subj)) {
                if (reach(rec, k, set) != 0)
                    return CMK_E_NOMEM;
                grew = 1;
            }
        }
    } while (grew);
    return CMK_OK;
}

uint64_t rmeta_repo_bytes(const json_t *rec)
{
    json_t *blobs = json_object_get(rec, "blobs"), *mans = json_object_get(rec, "manifests"), *v;
    const char *k;
    uint64_t n = 0;

    json_object_foreach(blobs, k, v)
    {
        if (json_is_integer(v) && json_integer_value(v) > 0)
            n += (uint64_t)json_integer_value(v);
    }
    json_object_foreach(mans, k, v)
    {
        json_int_t sz = json_integer_value(json_object_get(v, "size"));
        if (!json_object_get(blobs, k) && sz > 0)
            n += (uint64_t)sz;
    }
    return n;
}

/* ---- scans ---- */

struct name_list {
    json_t *arr;
    int failed;
};

static int collect_cb(const char *name, void *arg)
{
    struct name_list *nl = arg;
    const char *repo = name + strlen(REC_PREFIX);

    /* Records of other kinds may share the prefix space some day: keep valid names only. */
    if (!registry_name_valid(repo))
        return 0;
    if (json_array_append_new(nl->arr, json_string(repo)) != 0) {
        nl->failed = 1;
        return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* Every repository record's name, sorted, found by reading every record of the store. */
cmk_err rmeta_scan_repos(cmk_store *s, json_t **out)
{
    struct name_list nl = {json_array(), 0};
    json_t **items = NULL, *sorted = NULL;
    size_t n;
    cmk_err rc;

    *out = NULL;
    if (!nl.arr)
        return CMK_E_NOMEM;
    rc = cmk_meta_list(s, REC_PREFIX, collect_cb, &nl);
    if (rc == CMK_OK && nl.failed)
        rc = CMK_E_NOMEM;
    if (rc != CMK_OK)
        goto out;
    n = json_array_size(nl.arr);
    items = malloc((n ? n : 1) * sizeof(*items));
    sorted = json_array();
    if (!items || !sorted) {
        rc = CMK_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        items[i] = json_array_get(nl.arr, i);
    qsort(items, n, sizeof(*items), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (json_array_append(sorted, items[i]) != 0) {
            rc = CMK_E_NOMEM;
            goto out;
        }
    }
    *out = sorted;
    sorted = NULL;
out:
    free(items);
    json_decref(sorted);
    json_decref(nl.arr);
    return rc;
}

/* ---- the catalog: one record listing the repositories ---- */

struct cat_op {
    const char *name; /* to add or remove */
    int add;
    const json_t *names; /* instead: replace the list with these (a rebuild) */
};

/* Index of the first element >= name in a sorted array of strings. */
static size_t lower_bound(const json_t *arr, const char *name)
{
    size_t lo = 0, hi = json_array_size(arr);

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(json_string_value(json_array_get(arr, mid)), name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static cmk_err parse_catalog(const void *val, size_t len, json_t **out)
{
    json_t *j = json_loadb(val, len, JSON_REJECT_DUPLICATES, NULL), *v;
    json_t *arr = json_object_get(j, "repositories");
    size_t i;

    if (!json_is_array(arr)) {
        json_decref(j);
        return CMK_E_CORRUPT;
    }
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v) || (i > 0 && strcmp(json_string_value(json_array_get(arr, i - 1)),
                                                   json_string_value(v)) >= 0)) {
            json_decref(j);
            return CMK_E_CORRUPT;
        }
    }
    *out = json_incref(arr);
    json_decref(j);
    return CMK_OK;
}

static cmk_err cat_fn(const void *cur, size_t curlen, void **out, size_t *outlen, void *arg)
{
    const struct cat_op *op = arg;
    json_t *arr = NULL, *doc;
    cmk_err rc;

    *out = NULL;
    if (op->names) {
        arr = json_deep_copy(op->names);
    } else if (cur) {
        rc = parse_catalog(cur, curlen, &arr);
        if (rc != CMK_OK)
            return rc;
    } else {
        arr = json_array();
    }
    if (!arr)
        return CMK_E_NOMEM;
    if (op->name) {
        size_t i = lower_bound(arr, op->name);
        int here = i < json_array_size(arr) &&
                   strcmp(json_string_value(json_array_get(arr, i)), op->name) == 0;
        if (op->add && !here && json_array_insert_new(arr, i, json_string(op->name)) != 0) {
            json_decref(arr);
            return CMK_E_NOMEM;
        }
        if (!op->add && here)
            json_array_remove(arr, i);
    }
    /* The record stays when the list is empty: its absence means "never built". */
    doc = json_pack("{s:i, s:o}", "v", 1, "repositories", arr);
    if (!doc)
        return CMK_E_NOMEM;
    rc = rec_dump(doc, out, outlen);
    json_decref(doc);
    return rc;
}

static int repo_exists(cmk_store *s, const char *repo)
{
    json_t *rec = NULL;
    cmk_err rc = rmeta_load(s, repo, &rec);

    json_decref(rec);
    return rc != CMK_E_NOT_FOUND;
}

cmk_err rmeta_catalog_add(cmk_store *s, const char *repo)
{
    struct cat_op op = {.name = repo, .add = 1};

    return rmeta_update_record(s, RMETA_CATALOG, cat_fn, &op);
}

cmk_err rmeta_catalog_remove(cmk_store *s, const char *repo)
{
    struct cat_op op = {.name = repo, .add = 0};
    cmk_err rc = rmeta_update_record(s, RMETA_CATALOG, cat_fn, &op);

    /* A push may have made the repository again between its record's deletion and this
     * removal: its own catalog addition may have come first, so look again (the record is
     * written before the catalog, so a repository made after this check adds itself). */
    if (rc == CMK_OK && repo_exists(s, repo))
        rc = rmeta_catalog_add(s, repo);
    return rc;
}

cmk_err rmeta_catalog_rebuild(cmk_store *s, const json_t *names)
{
    struct cat_op op = {.names = names};
    json_t *v;
    size_t i;
    cmk_err rc = rmeta_update_record(s, RMETA_CATALOG, cat_fn, &op);

    /* Records made while the scan ran are not in names; each has added itself, possibly
     * before this rebuild replaced the list: add back whatever exists now and is missing. */
    if (rc != CMK_OK)
        return rc;
    json_t *now = NULL;
    rc = rmeta_scan_repos(s, &now);
    if (rc != CMK_OK)
        return rc;
    json_array_foreach(now, i, v)
    {
        size_t j = lower_bound(names, json_string_value(v));
        if (j < json_array_size(names) &&
            strcmp(json_string_value(json_array_get(names, j)), json_string_value(v)) == 0)
            continue;
        rc = rmeta_catalog_add(s, json_string_value(v));
        if (rc != CMK_OK)
            break;
    }
    json_decref(now);
    return rc;
}

/* The catalog record, parsed into *out. */
static cmk_err read_catalog(cmk_store *s, json_t **out)
{
    void *val = NULL;
    size_t len = 0;
    cmk_err rc = cmk_meta_get(s, RMETA_CATALOG, &val, &len);

    if (rc == CMK_OK) {
        rc = parse_catalog(val, len, out);
        cmk_free(val);
    }
    return rc;
}

cmk_err rmeta_list_repos(cmk_store *s, json_t **out)
{
    json_t *names = NULL;
    cmk_err rc;

    *out = NULL;
    rc = read_catalog(s, out);
    if (rc != CMK_E_NOT_FOUND)
        return rc;
    /* A store written before the catalog record existed: build it once from the records. */
    rc = rmeta_scan_repos(s, &names);
    if (rc == CMK_OK)
        rc = rmeta_catalog_rebuild(s, names);
    json_decref(names);
    return rc == CMK_OK ? read_catalog(s, out) : rc;
}

static int record_refers(const json_t *rec, const char *digest)
{
    const char *k;
    json_t *m;

    if (rmeta_blob(rec, digest, NULL) || rmeta_manifest(rec, digest))
        return 1;
    json_object_foreach((json_t *)json_object_get(rec, "manifests"), k, m)
    {
        size_t i;
        json_t *r;

        json_array_foreach(json_object_get(m, "refs"), i, r)
        {
            if (json_is_string(r) && strcmp(json_string_value(r), digest) == 0)
                return 1;
        }
    }
    return 0;
}

/* Scans every repository record for digest; appends the names of those that refer to it
 * to found (stopping at the first if found is NULL). *any = 1 if one does. */
static cmk_err scan_refs(cmk_store *s, const char *digest, json_t *found, int *any)
{
    json_t *repos = NULL, *rec = NULL, *v;
    size_t i;
    cmk_err rc;

    *any = 0;
    rc = rmeta_scan_repos(s, &repos);
    if (rc != CMK_OK)
        return rc;
    json_array_foreach(repos, i, v)
    {
        rc = rmeta_load(s, json_string_value(v), &rec);
        if (rc == CMK_E_NOT_FOUND) { /* deleted since the listing */
            rc = CMK_OK;
            continue;
        }
        if (rc != CMK_OK)
            break;
        int refers = record_refers(rec, digest);
        json_decref(rec);
        rec = NULL;
        if (!refers)
            continue;
        *any = 1;
        if (!found)
            break;
        if (json_array_append(found, v) != 0) {
            rc = CMK_E_NOMEM;
            break;
        }
    }
    json_decref(repos);
    return rc;
}

cmk_err rmeta_is_referenced(cmk_store *s, const char *digest, int *referenced)
{
    return scan_refs(s, digest, NULL, referenced);
}

cmk_err rmeta_referrers(cmk_store *s, const char *digest, json_t **repos)
{
    json_t *found = json_array();
    int any = 0;
    cmk_err rc = found ? scan_refs(s, digest, found, &any) : CMK_E_NOMEM;

    *repos = NULL;
    if (rc != CMK_OK) {
        json_decref(found);
        return rc;
    }
    *repos = found;
    return CMK_OK;
}
