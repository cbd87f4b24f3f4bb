/* registry_gc.c — mark, doom, re-mark, claim, sweep (see registry_gc.h). */
#include "tools/serve/registry_gc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "tools/serve/registry_meta.h"

/* ---- small helpers ---- */

static cmk_err dump(const json_t *j, void **out, size_t *outlen)
{
    char *b = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

    if (!b)
        return CMK_E_NOMEM;
    *out = b;
    *outlen = strlen(b);
    return CMK_OK;
}

/* Parses the state record; fresh empty maps where missing. */
static json_t *parse_state(const void *val, size_t len)
{
    json_t *j = json_loadb(val, len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    if (!json_is_object(json_object_get(j, "doomed")))
        json_object_set_new(j, "doomed", json_object());
    if (!json_is_object(json_object_get(j, "claimed")))
        json_object_set_new(j, "claimed", json_object());
    return j;
}

static const char *state_id(const json_t *st)
{
    const char *id = json_string_value(json_object_get(st, "id"));

    return id ? id : "";
}

/* ---- the state record's transitions, each one compare-and-swap write ---- */

enum st_op { ST_BEGIN, ST_DOOM, ST_CLAIM, ST_END, ST_RESCUE };

struct st_arg {
    enum st_op op;
    const char *id;
    int64_t now;
    json_t *set;          /* ST_DOOM: candidates; ST_CLAIM: in candidates, out claimed;
                             ST_RESCUE: digests */
    json_t *taken_over;   /* ST_BEGIN: the claimed set of a stale state (new ref) */
    const char *const *d; /* ST_RESCUE */
    size_t n;
    int busy; /* ST_BEGIN: another collection runs; ST_RESCUE: a digest is claimed */
    int lost; /* the state is not ours any more */
    int rescued;
};

static cmk_err st_fn(const void *cur, size_t curlen, void **out, size_t *outlen, void *arg)
{
    struct st_arg *a = arg;
    json_t *st = cur ? parse_state(cur, curlen) : NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    *outlen = 0;
    a->busy = a->lost = 0;
    if (cur && !st && a->op != ST_BEGIN)
        return CMK_E_CORRUPT;
    switch (a->op) {
    case ST_BEGIN: {
        json_t *nst;
        if (st && json_integer_value(json_object_get(st, "updated")) > a->now - RGC_STALE_S) {
            a->busy = 1;
            json_decref(st);
            return CMK_E_REFUSED; /* left unchanged */
        }
        /* fn may run again after a lost race: drop what an earlier run took over. */
        json_decref(a->taken_over);
        a->taken_over = NULL;
        if (st && json_object_size(json_object_get(st, "claimed")))
            a->taken_over = json_deep_copy(json_object_get(st, "claimed"));
        nst = json_pack("{s:i, s:s, s:I, s:I, s:{}, s:{}}", "v", 1, "id", a->id, "started",
                        (json_int_t)a->now, "updated", (json_int_t)a->now, "doomed", "claimed");
        rc = nst ? dump(nst, out, outlen) : CMK_E_NOMEM;
        json_decref(nst);
        break;
    }
    case ST_RESCUE: {
        json_t *doomed, *claimed;
        if (!st)
            return CMK_OK; /* no collection: nothing to do, nothing written */
        doomed = json_object_get(st, "doomed");
        claimed = json_object_get(st, "claimed");
        for (size_t i = 0; i < a->n; i++) {
            if (json_object_get(claimed, a->d[i])) {
                a->busy = 1;
                json_decref(st);
                return CMK_E_REFUSED;
            }
        }
        a->rescued = 0;
        for (size_t i = 0; i < a->n; i++)
            a->rescued += json_object_del(doomed, a->d[i]) == 0;
        if (a->rescued)
            rc = dump(st, out, outlen);
        else
            rc = CMK_E_EXISTS; /* nothing to change: leave the record as it is */
        break;
    }
    default: {
        const char *k;
        json_t *v, *doomed, *claimed;
        void *tmp;
        if (!st || strcmp(state_id(st), a->id) != 0) {
            a->lost = 1;
            json_decref(st);
            return CMK_E_REFUSED;
        }
        doomed = json_object_get(st, "doomed");
        claimed = json_object_get(st, "claimed");
        if (a->op == ST_END) {
            json_decref(st);
            return CMK_OK; /* *out NULL: the record is deleted */
        }
        if (a->op == ST_DOOM) {
            json_object_update(doomed, a->set);
        } else { /* ST_CLAIM: what is still doomed is claimed; the rest was rescued */
            json_object_foreach_safe(a->set, tmp, k, v)
            {
                if (!json_object_get(doomed, k))
                    json_object_del(a->set, k);
            }
            json_object_clear(doomed);
            json_object_update(claimed, a->set);
        }
        json_object_set_new(st, "updated", json_integer((json_int_t)time(NULL)));
        rc = dump(st, out, outlen);
        break;
    }
    }
    json_decref(st);
    return rc;
}

static cmk_err st_apply(cmk_store *s, struct st_arg *a, cmk_errbuf *eb)
{
    cmk_err rc = rmeta_update_record(s, RGC_STATE, st_fn, a);

    if (rc == CMK_E_REFUSED && a->busy && a->op == ST_BEGIN)
        return cmk_errbuf_set(eb, CMK_E_BUSY, "another collection is running on the store");
    if (rc == CMK_E_REFUSED && a->lost)
        return cmk_errbuf_set(eb, CMK_E_BUSY,
                              "the collection was taken over by another one (it stalled)");
    if (rc != CMK_OK)
        cmk_errbuf_set(eb, rc, "cannot update the collection state: %s", cmk_errmsg());
    return rc;
}

cmk_err rgc_protect(cmk_store *s, const char *const *d, size_t n, cmk_errbuf *eb)
{
    struct st_arg a = {.op = ST_RESCUE, .d = d, .n = n};
    void *val = NULL;
    size_t len = 0, i;
    json_t *st;
    int doomed = 0, claimed = 0;
    cmk_err rc;

    /* The common case costs one read of an absent record. */
    rc = cmk_meta_get(s, RGC_STATE, &val, &len);
    if (rc == CMK_E_NOT_FOUND)
        return CMK_OK;
    if (rc != CMK_OK)
        return cmk_errbuf_set(eb, rc, "cannot read the collection state: %s", cmk_errmsg());
    st = parse_state(val, len);
    cmk_free(val);
    if (!st)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "the collection state record is damaged");
    for (i = 0; i < n; i++) {
        doomed |= json_object_get(json_object_get(st, "doomed"), d[i]) != NULL;
        claimed |= json_object_get(json_object_get(st, "claimed"), d[i]) != NULL;
    }
    json_decref(st);
    if (!doomed && !claimed)
        return CMK_OK;
    if (!claimed) {
        rc = rmeta_update_record(s, RGC_STATE, st_fn, &a);
        if (rc == CMK_OK || rc == CMK_E_EXISTS)
            return CMK_OK;
        if (rc != CMK_E_REFUSED)
            return cmk_errbuf_set(eb, rc, "cannot update the collection state: %s", cmk_errmsg());
    }
    return cmk_errbuf_set(eb, CMK_E_BUSY,
                          "the blob is being deleted by a garbage collection; retry the push");
}

/* ---- usage ---- */

struct usage_arg {
    int64_t bytes, blobs;
    int set; /* replace instead of add */
};

static int64_t add_floor(int64_t a, int64_t b)
{
    int64_t r = a + b;

    return r < 0 ? 0 : r;
}

static cmk_err usage_fn(const void *cur, size_t curlen, void **out, size_t *outlen, void *arg)
{
    struct usage_arg *a = arg;
    json_t *j = cur ? json_loadb(cur, curlen, 0, NULL) : NULL;
    int64_t b = json_integer_value(json_object_get(j, "bytes"));
    int64_t n = json_integer_value(json_object_get(j, "blobs"));
    json_t *nj;
    cmk_err rc;

    json_decref(j);
    if (a->set) {
        b = a->bytes;
        n = a->blobs;
    } else {
        b = add_floor(b, a->bytes);
        n = add_floor(n, a->blobs);
    }
    nj = json_pack("{s:i, s:I, s:I}", "v", 1, "bytes", (json_int_t)b, "blobs", (json_int_t)n);
    rc = nj ? dump(nj, out, outlen) : CMK_E_NOMEM;
    json_decref(nj);
    return rc;
}

/* Increments of this process not yet written (rgc_usage_note): one record write a second
 * instead of one per pushed blob, which would serialise every push on the usage record. */
static _Atomic int64_t pend_bytes, pend_blobs;

void rgc_usage_note(int64_t bytes, int64_t blobs)
{
    atomic_fetch_add(&pend_bytes, bytes);
    atomic_fetch_add(&pend_blobs, blobs);
}

cmk_err rgc_usage_flush(cmk_store *s)
{
    int64_t b = atomic_exchange(&pend_bytes, 0), n = atomic_exchange(&pend_blobs, 0);
    cmk_err rc;

    if (!b && !n)
        return CMK_OK;
    rc = rgc_usage_add(s, b, n);
    if (rc != CMK_OK)
        rgc_usage_note(b, n); /* kept for the next flush */
    return rc;
}

static cmk_err usage_read(cmk_store *s, uint64_t *bytes, uint64_t *blobs);

cmk_err rgc_usage_get(cmk_store *s, uint64_t *bytes, uint64_t *blobs)
{
    cmk_err rc = usage_read(s, bytes, blobs);
    int64_t b = atomic_load(&pend_bytes), n = atomic_load(&pend_blobs);

    if (rc == CMK_OK) {
        *bytes = (uint64_t)add_floor((int64_t)*bytes, b);
        *blobs = (uint64_t)add_floor((int64_t)*blobs, n);
    }
    return rc;
}

static cmk_err usage_read(cmk_store *s, uint64_t *bytes, uint64_t *blobs)
{
    void *val = NULL;
    size_t len = 0;
    json_t *j;
    cmk_err rc = cmk_meta_get(s, RGC_USAGE, &val, &len);

    *bytes = *blobs = 0;
    if (rc == CMK_E_NOT_FOUND)
        return CMK_OK;
    if (rc != CMK_OK)
        return rc;
    j = json_loadb(val, len, 0, NULL);
    cmk_free(val);
    if (!json_is_object(j)) {
        json_decref(j);
        return CMK_E_CORRUPT;
    }
    if (json_integer_value(json_object_get(j, "bytes")) > 0)
        *bytes = (uint64_t)json_integer_value(json_object_get(j, "bytes"));
    if (json_integer_value(json_object_get(j, "blobs")) > 0)
        *blobs = (uint64_t)json_integer_value(json_object_get(j, "blobs"));
    json_decref(j);
    return CMK_OK;
}

cmk_err rgc_usage_add(cmk_store *s, int64_t bytes, int64_t blobs)
{
    struct usage_arg a = {bytes, blobs, 0};

    return rmeta_update_record(s, RGC_USAGE, usage_fn, &a);
}

static cmk_err mark_uploads(cmk_store *s, json_t *live);

/* ---- marking ---- */

struct mark {
    json_t *live;    /* digest -> true */
    json_t *links;   /* repo -> {digest: true}: links older than the grace period */
    json_t *repos;   /* names read */
    size_t untagged; /* dry run with delete_untagged: manifests that would go */
};

static void mark_free(struct mark *m)
{
    json_decref(m->live);
    json_decref(m->links);
    json_decref(m->repos);
    memset(m, 0, sizeof(*m));
}

/* Reads every repository record. only_reachable (a dry run of delete_untagged): manifests
 * that rmeta_reachable does not reach count as gone. */
static cmk_err mark(cmk_store *s, int64_t cutoff, int only_reachable, struct mark *m)
{
    json_t *rec = NULL, *v;
    size_t i;
    cmk_err rc;

    memset(m, 0, sizeof(*m));
    m->live = json_object();
    m->links = json_object();
    if (!m->live || !m->links)
        return CMK_E_NOMEM;
    rc = rmeta_scan_repos(s, &m->repos);
    if (rc != CMK_OK)
        return rc;
    json_array_foreach(m->repos, i, v)
    {
        const char *repo = json_string_value(v), *k;
        json_t *e, *reach = NULL, *old = NULL;

        rc = rmeta_load(s, repo, &rec);
        if (rc == CMK_E_NOT_FOUND) {
            rc = CMK_OK;
            continue;
        }
        if (rc != CMK_OK)
            return rc;
        if (only_reachable) {
            reach = json_object();
            if (!reach || rmeta_reachable(rec, cutoff, reach) != CMK_OK) {
                json_decref(reach);
                json_decref(rec);
                return CMK_E_NOMEM;
            }
        }
        json_object_foreach(json_object_get(rec, "manifests"), k, e)
        {
            size_t j;
            json_t *r;
            if (reach && !json_object_get(reach, k)) {
                m->untagged++;
                continue;
            }
            json_object_set_new(m->live, k, json_true());
            json_array_foreach(json_object_get(e, "refs"), j, r)
            {
                if (json_is_string(r))
                    json_object_set_new(m->live, json_string_value(r), json_true());
            }
        }
        json_object_foreach(json_object_get(rec, "blobs"), k, e)
        {
            if (rmeta_link_time(rec, k) > cutoff) {
                json_object_set_new(m->live, k, json_true());
                continue;
            }
            if (!old) {
                old = json_object();
                if (!old || json_object_set_new(m->links, repo, old) != 0) {
                    json_decref(reach);
                    json_decref(rec);
                    return CMK_E_NOMEM;
                }
            }
            json_object_set_new(old, k, json_true());
        }
        json_decref(reach);
        json_decref(rec);
        rec = NULL;
    }
    return mark_uploads(s, m->live);
}

/* Upload sessions saved for a restart (registry_upload.c: records "upload/<id>" holding
 * {"parts": [digests]}) keep their parts: they are blobs no repository links yet. */
struct upl {
    cmk_store *s;
    json_t *live;
    cmk_err rc;
};

static int upload_cb(const char *name, void *arg)
{
    struct upl *u = arg;
    void *val = NULL;
    size_t len = 0, i;
    json_t *j, *v;
    cmk_err rc = cmk_meta_get(u->s, name, &val, &len);

    if (rc == CMK_E_NOT_FOUND)
        return 0;
    if (rc != CMK_OK) {
        u->rc = rc;
        return 1;
    }
    j = json_loadb(val, len, 0, NULL);
    cmk_free(val);
    json_array_foreach(json_object_get(j, "parts"), i, v)
    {
        if (json_is_string(v))
            json_object_set_new(u->live, json_string_value(v), json_true());
    }
    json_decref(j);
    return 0;
}

static cmk_err mark_uploads(cmk_store *s, json_t *live)
{
    struct upl u = {s, live, CMK_OK};
    cmk_err rc = cmk_meta_list(s, RGC_UPLOAD_PREFIX, upload_cb, &u);

    return rc != CMK_OK ? rc : u.rc;
}

/* ---- the stored blobs ---- */

struct stored {
    json_t *digests;
    int oom;
};

static int list_cb(const char *digest, void *arg)
{
    struct stored *st = arg;

    if (json_array_append_new(st->digests, json_string(digest)) != 0) {
        st->oom = 1;
        return 1;
    }
    return 0;
}

static json_t *report_new(const rgc_opts *o)
{
    return json_pack("{s:b, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, "
                     "s:i, s:[]}",
                     "dry_run", o->dry_run, "grace_s", (json_int_t)o->grace_s, "repositories", 0,
                     "blobs_stored", 0, "blobs_freed", 0, "bytes_freed", 0, "stored_bytes_freed", 0,
                     "manifests_deleted", 0, "links_removed", 0, "repositories_removed", 0,
                     "blobs_young", 0, "rescued", 0, "orphans_deleted", 0, "orphan_bytes_deleted",
                     0, "orphan_uploads_aborted", 0, "freed");
}

static void rep_add(json_t *rep, const char *key, uint64_t n)
{
    json_object_set_new(
        rep, key, json_integer(json_integer_value(json_object_get(rep, key)) + (json_int_t)n));
}

/* The store's sweep of writers' leftovers (cmk_store_sweep), after the blobs are freed: a
 * blob whose data object could not be deleted just now is swept in the same run. */
static cmk_err sweep(cmk_store *s, const rgc_opts *o, json_t *rep, cmk_errbuf *eb)
{
    cmk_sweep_info si;
    cmk_err rc = cmk_store_sweep(s, o->dry_run ? CMK_SWEEP_DRY_RUN : 0, &si);

    rep_add(rep, "orphans_deleted", si.objects);
    rep_add(rep, "orphan_bytes_deleted", si.bytes);
    rep_add(rep, "orphan_uploads_aborted", si.uploads_aborted);
    if (rc != CMK_OK)
        cmk_errbuf_set(eb, rc, "cannot sweep the store's orphaned objects: %s", cmk_errmsg());
    return rc;
}

static void random_id(char out[33])
{
    unsigned char b[16];

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        /* Only tells two collections apart: time and pid will do. */
        snprintf(out, 33, "%016llx%08x", (unsigned long long)time(NULL), (unsigned)getpid());
        return;
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

cmk_err rgc_run(cmk_store *s, const rgc_opts *o, json_t **report, cmk_errbuf *eb)
{
    int64_t now = (int64_t)time(NULL), cutoff = now - o->grace_s;
    struct stored st = {json_array(), 0};
    struct mark m1 = {0}, m2 = {0};
    json_t *rep = report_new(o), *cand = json_object(), *sizes = json_object(), *v, *names = NULL;
    uint64_t total_bytes = 0, total_blobs = 0, u0_bytes = 0, u0_blobs = 0, u1_bytes, u1_blobs;
    char id[33];
    struct st_arg sa = {.id = id, .now = now};
    int began = 0;
    size_t i;
    const char *k;
    cmk_err rc;

    *report = NULL;
    random_id(id);
    if (!st.digests || !rep || !cand || !sizes) {
        rc = CMK_E_NOMEM;
        goto out;
    }
    if (!o->dry_run) {
        sa.op = ST_BEGIN;
        rc = st_apply(s, &sa, eb);
        if (rc != CMK_OK)
            goto out;
        began = 1;
        if (rgc_usage_flush(s) != CMK_OK)
            fprintf(stderr, "cmkstore: cannot update the usage record: %s\n", cmk_errmsg());
        rc = usage_read(s, &u0_bytes, &u0_blobs);
        if (rc != CMK_OK)
            goto out;
        if (o->delete_untagged) {
            json_t *all = NULL;
            rc = rmeta_scan_repos(s, &all);
            json_array_foreach(all, i, v)
            {
                size_t n = 0;
                if (rc != CMK_OK)
                    break;
                rc = rmeta_delete_unreachable(s, json_string_value(v), cutoff, &n);
                if (rc == CMK_E_INVAL || rc == CMK_E_NOT_FOUND)
                    rc = CMK_OK;
                rep_add(rep, "manifests_deleted", n);
            }
            json_decref(all);
            if (rc != CMK_OK)
                goto out;
        }
    }
    rc = mark(s, cutoff, o->dry_run && o->delete_untagged, &m1);
    if (rc != CMK_OK)
        goto out;
    if (o->dry_run)
        rep_add(rep, "manifests_deleted", m1.untagged);
    rc = cmk_list(s, list_cb, &st);
    if (rc == CMK_OK && st.oom)
        rc = CMK_E_NOMEM;
    if (rc != CMK_OK)
        goto out;
    json_array_foreach(st.digests, i, v)
    {
        const char *d = json_string_value(v);
        cmk_blob_info bi;
        cmk_err src = cmk_stat(s, d, &bi);
        if (src == CMK_E_NOT_FOUND)
            continue;
        if (src != CMK_OK) {
            /* A blob we cannot read is left alone (and reported by verify, not here). */
            continue;
        }
        total_bytes += bi.size;
        total_blobs++;
        if (json_object_get(m1.live, d))
            continue;
        if (bi.mtime > cutoff) {
            rep_add(rep, "blobs_young", 1);
            continue;
        }
        json_object_set_new(cand, d, json_true());
        json_object_set_new(sizes, d,
                            json_pack("[I,I]", (json_int_t)bi.size, (json_int_t)bi.stored_size));
    }
    rep_add(rep, "blobs_stored", total_blobs);
    /* A stale state's claimed blobs were verified unreferenced by the collection that
     * stalled; they go through the same steps again. */
    if (sa.taken_over) {
        json_object_foreach(sa.taken_over, k, v)
        {
            if (!json_object_get(m1.live, k) && !json_object_get(cand, k)) {
                cmk_blob_info bi;
                if (cmk_stat(s, k, &bi) == CMK_OK) {
                    json_object_set_new(cand, k, json_true());
                    json_object_set_new(
                        sizes, k,
                        json_pack("[I,I]", (json_int_t)bi.size, (json_int_t)bi.stored_size));
                }
            }
        }
    }
    if (o->dry_run) {
        json_object_set_new(rep, "repositories",
                            json_integer((json_int_t)json_array_size(m1.repos)));
        json_object_foreach(cand, k, v)
        {
            json_t *sz = json_object_get(sizes, k);
            rep_add(rep, "blobs_freed", 1);
            rep_add(rep, "bytes_freed", (uint64_t)json_integer_value(json_array_get(sz, 0)));
            rep_add(rep, "stored_bytes_freed", (uint64_t)json_integer_value(json_array_get(sz, 1)));
            json_array_append_new(json_object_get(rep, "freed"), json_string(k));
        }
        rc = sweep(s, o, rep, eb);
        if (rc != CMK_OK)
            goto out;
        goto done;
    }
    /* 1. doom, 2. mark again, 3. claim. */
    sa.op = ST_DOOM;
    sa.set = cand;
    rc = st_apply(s, &sa, eb);
    if (rc != CMK_OK)
        goto out;
    rc = mark(s, cutoff, 0, &m2);
    if (rc != CMK_OK)
        goto out;
    {
        size_t before = json_object_size(cand);
        void *tmp;
        json_object_foreach_safe(cand, tmp, k, v)
        {
            if (json_object_get(m2.live, k))
                json_object_del(cand, k);
        }
        sa.op = ST_CLAIM;
        rc = st_apply(s, &sa, eb);
        if (rc != CMK_OK)
            goto out;
        rep_add(rep, "rescued", before - json_object_size(cand));
    }
    /* 4. unlink the claimed blobs, and links to blobs no longer stored. */
    json_object_foreach(m2.links, k, v)
    {
        json_t *drop = json_object(), *lv;
        const char *d;
        size_t n = 0;
        if (!drop) {
            rc = CMK_E_NOMEM;
            goto out;
        }
        json_object_foreach(v, d, lv)
        {
            cmk_blob_info bi;
            if (json_object_get(cand, d) || cmk_stat(s, d, &bi) == CMK_E_NOT_FOUND)
                json_object_set_new(drop, d, json_true());
        }
        if (json_object_size(drop) > 0) {
            json_t *rec = NULL;
            rc = rmeta_unlink_set(s, k, drop, &n);
            if (rc == CMK_OK && rmeta_load(s, k, &rec) == CMK_E_NOT_FOUND)
                rep_add(rep, "repositories_removed", 1);
            json_decref(rec);
        }
        json_decref(drop);
        if (rc != CMK_OK) {
            cmk_errbuf_set(eb, rc, "cannot unlink collected blobs from %s: %s", k, cmk_errmsg());
            goto out;
        }
        rep_add(rep, "links_removed", n);
    }
    json_object_foreach(cand, k, v)
    {
        json_t *sz = json_object_get(sizes, k);
        cmk_err drc = cmk_delete(s, k);
        if (drc == CMK_E_NOT_FOUND)
            continue;
        if (drc != CMK_OK) {
            rc = cmk_errbuf_set(eb, drc, "cannot delete %s: %s", k, cmk_errmsg());
            goto out;
        }
        rep_add(rep, "blobs_freed", 1);
        rep_add(rep, "bytes_freed", (uint64_t)json_integer_value(json_array_get(sz, 0)));
        rep_add(rep, "stored_bytes_freed", (uint64_t)json_integer_value(json_array_get(sz, 1)));
        json_array_append_new(json_object_get(rep, "freed"), json_string(k));
    }
    sa.op = ST_END;
    rc = st_apply(s, &sa, eb);
    began = 0;
    if (rc != CMK_OK)
        goto out;
    /* The usage counters: what the store held at the listing, less what was freed, plus what
     * pushes added meanwhile (their increments since our first read). */
    if (rgc_usage_flush(s) != CMK_OK)
        fprintf(stderr, "cmkstore: cannot update the usage record: %s\n", cmk_errmsg());
    if (usage_read(s, &u1_bytes, &u1_blobs) == CMK_OK) {
        struct usage_arg ua = {
            add_floor((int64_t)total_bytes -
                          json_integer_value(json_object_get(rep, "bytes_freed")),
                      (int64_t)u1_bytes - (int64_t)u0_bytes),
            add_floor((int64_t)total_blobs -
                          json_integer_value(json_object_get(rep, "blobs_freed")),
                      (int64_t)u1_blobs - (int64_t)u0_blobs),
            1};
        if (rmeta_update_record(s, RGC_USAGE, usage_fn, &ua) != CMK_OK)
            fprintf(stderr, "cmkstore: cannot update the usage record: %s\n", cmk_errmsg());
    }
    /* The catalog, from the records as they are now. */
    rc = rmeta_scan_repos(s, &names);
    if (rc == CMK_OK)
        rc = rmeta_catalog_rebuild(s, names);
    if (rc != CMK_OK) {
        cmk_errbuf_set(eb, rc, "cannot rebuild the catalog: %s", cmk_errmsg());
        goto out;
    }
    json_object_set_new(rep, "repositories", json_integer((json_int_t)json_array_size(names)));
    rc = sweep(s, o, rep, eb);
    if (rc != CMK_OK)
        goto out;
done:
    *report = rep;
    rep = NULL;
out:
    if (began) {
        /* A failed collection leaves no doomed set behind: pushes go on undisturbed (claimed
         * blobs stay claimed until the next collection takes the state over). */
        struct st_arg end = {.op = ST_END, .id = id};
        if (rmeta_update_record(s, RGC_STATE, st_fn, &end) != CMK_OK)
            fprintf(stderr, "cmkstore: cannot clear the collection state: %s\n", cmk_errmsg());
    }
    json_decref(sa.taken_over);
    json_decref(names);
    mark_free(&m1);
    mark_free(&m2);
    json_decref(st.digests);
    json_decref(cand);
    json_decref(sizes);
    json_decref(rep);
    return rc;
}

cmk_err rgc_remove_blob(cmk_store *s, const char *digest, int force, json_t **repos, cmk_errbuf *eb)
{
    char id[33];
    json_t *set = json_pack("{s:b}", digest, 1), *found = NULL;
    struct st_arg sa = {.id = id, .now = (int64_t)time(NULL), .set = set};
    cmk_blob_info bi;
    int began = 0;
    cmk_err rc;

    if (repos)
        *repos = NULL;
    if (!set)
        return CMK_E_NOMEM;
    random_id(id);
    rc = cmk_stat(s, digest, &bi);
    if (rc != CMK_OK) {
        json_decref(set);
        return cmk_errbuf_set(eb, rc, "%s", cmk_errmsg());
    }
    if (force)
        goto remove; /* no record read or written: works whatever state they are in */
    sa.op = ST_BEGIN;
    rc = st_apply(s, &sa, eb);
    if (rc == CMK_E_NOSPACE) {
        /* A full file system, where removing blobs is how space comes back: the state cannot
         * be written, and no push can link anything either (a link is a record write), so
         * check and remove without it. */
        if (eb)
            *eb = (cmk_errbuf){0};
        rc = rmeta_referrers(s, digest, &found);
        if (rc == CMK_OK && json_array_size(found) > 0) {
            rc = CMK_E_REFUSED;
            if (repos)
                *repos = json_incref(found);
        }
        if (rc != CMK_OK)
            goto out_noend;
        goto remove;
    }
    if (rc != CMK_OK)
        goto out_noend;
    began = 1;
    sa.op = ST_DOOM;
    rc = st_apply(s, &sa, eb);
    if (rc == CMK_OK)
        rc = rmeta_referrers(s, digest, &found);
    if (rc != CMK_OK)
        goto out;
    if (json_array_size(found) > 0) {
        rc = CMK_E_REFUSED;
        if (repos)
            *repos = json_incref(found);
        goto out;
    }
    sa.op = ST_CLAIM;
    rc = st_apply(s, &sa, eb);
    if (rc == CMK_OK && json_object_size(set) == 0)
        rc = cmk_errbuf_set(eb, CMK_E_BUSY, "a push linked the blob meanwhile");
    if (rc != CMK_OK)
        goto out;
remove:
    /* The usage counters are left to the next collection: removing a blob is how space comes
     * back on a full file system, and a record write would take some of it. */
    rc = cmk_delete(s, digest);
    if (rc != CMK_OK)
        cmk_errbuf_set(eb, rc, "%s", cmk_errmsg());
out:
    if (began) {
        struct st_arg end = {.op = ST_END, .id = id};
        if (rmeta_update_record(s, RGC_STATE, st_fn, &end) != CMK_OK)
            fprintf(stderr, "cmkstore: cannot clear the collection state: %s\n", cmk_errmsg());
    }
out_noend:
    json_decref(found);
    json_decref(set);
    return rc;
}
