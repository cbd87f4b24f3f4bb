/* registry_upload_save.c — upload sessions that outlive the process (registry_upload.h):
 * saved as part blobs and an encrypted upload/<id> record, at shutdown and while parked,
 * restored at start, resumed by streaming the parts into a new put. */
#include "tools/serve/registry_upload_int.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/serve/http_util.h"
#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_policy.h"

#define REC_PREFIX   "upload/"
#define REC_NAME_MAX (sizeof(REC_PREFIX) + REG_SESSION_ID_LEN)
#define MAX_PARTS    1024
/* A session saved this many times while serving has its parts merged into one at the next
 * save: a PUT opens every part, and the record lists them all. */
#define MERGE_PARTS   64
#define RESUME_BUFFER (1u << 20)
/* Every part ends with "cmkstore upload part <session id> <16 hex random>\n", which reading
 * it back drops (and checks). Two sessions receiving the same bytes, or a session whose part
 * is the whole blob that a repository also links, would otherwise share a part, and the
 * first to finish would collect the other's. */
#define SUFFIX_HEAD "cmkstore upload part "
#define SUFFIX_LEN  (sizeof(SUFFIX_HEAD) - 1 + REG_SESSION_ID_LEN + 1 + 16 + 1)

static void rec_name(const char *id, char out[REC_NAME_MAX])
{
    snprintf(out, REC_NAME_MAX, "%s%s", REC_PREFIX, id);
}

/* Collects a saved session's parts (each only if nothing else references it: a part may be
 * a whole blob that a repository also links) and forgets them. */
static void collect_parts(reg_sessions *t, reg_session *u)
{
    for (size_t i = 0; i < u->nparts; i++) {
        /* Through the collection protocol: refused while a repository references the part,
         * and safe against a push linking it meanwhile. One left behind (referenced, or a
         * collection running) is an unreferenced blob at worst: the next gc takes it. */
        cmk_err rc = rgc_remove_blob(t->s, u->parts[i], 0, NULL, NULL);
        (void)rc;
    }
    free(u->parts);
    u->parts = NULL;
    u->nparts = 0;
}

/* Drops what a restored session keeps in the store (its record, its parts). */
void reg_upl_forget_saved(reg_sessions *t, reg_session *u)
{
    char name[REC_NAME_MAX];

    if (u->persisted) {
        rec_name(u->id, name);
        cmk_err rc = cmk_meta_delete(t->s, name);
        (void)rc; /* a record left behind is dropped by the next restore, as expired */
        u->persisted = 0;
    }
    collect_parts(t, u);
}

/* The wall-clock time (epoch s) of monotonic time m. */
static int64_t epoch_of(double m)
{
    return (int64_t)time(NULL) - (int64_t)(http_mono() - m);
}

/* Writes u's record: {"v": 1, "repo", "offset", "parts": [digests], "saved": epoch s,
 * "last": epoch s of its last request, "instance": the saving front-end, "sfx": true (its
 * parts end with the suffix)}. Records without the last three (saved before crash safety)
 * are read too: their parts have no suffix (legacy). */
static cmk_err save_record(reg_sessions *t, const reg_session *u, double last)
{
    char name[REC_NAME_MAX];
    json_t *parts = json_array(), *rec;
    char *text = NULL;
    cmk_err rc = CMK_E_NOMEM;

    for (size_t i = 0; parts && i < u->nparts; i++)
        if (json_array_append_new(parts, json_string(u->parts[i])) != 0)
            goto out;
    rec = parts ? json_pack("{s:i, s:s, s:I, s:O, s:I, s:I, s:s, s:b}", "v", 1, "repo", u->repo,
                            "offset", (json_int_t)u->offset, "parts", parts, "saved",
                            (json_int_t)time(NULL), "last", (json_int_t)epoch_of(last), "instance",
                            t->instance, "sfx", !u->legacy)
                : NULL;
    text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (!text)
        goto out;
    rec_name(u->id, name);
    rc = cmk_meta_put(t->s, name, text, strlen(text));
    /* The record is what keeps the parts from garbage collection (registry_gc.h marks the
     * parts of every saved session): tell a collection running now. */
    if (rc == CMK_OK && u->nparts) {
        const char **d = calloc(u->nparts, sizeof(*d));
        if (!d) {
            rc = CMK_E_NOMEM;
            goto out;
        }
        for (size_t i = 0; i < u->nparts; i++)
            d[i] = u->parts[i];
        rc = rgc_protect(t->s, d, u->nparts, NULL);
        free(d);
    }
out:
    json_decref(parts);
    free(text);
    return rc;
}

/* Room for one more part (so that a part just committed is never lost to a failed
 * realloc). -1: full or out of memory. */
static int part_room(reg_session *u)
{
    char(*np)[CMK_DIGEST_MAX];

    if (u->nparts >= MAX_PARTS)
        return -1;
    np = realloc(u->parts, (u->nparts + 1) * sizeof(*np));
    if (!np)
        return -1;
    u->parts = np;
    return 0;
}

static int add_part(reg_session *u, const char *digest)
{
    if (part_room(u) != 0)
        return -1;
    snprintf(u->parts[u->nparts++], CMK_DIGEST_MAX, "%s", digest);
    return 0;
}

/* Ends a part: see SUFFIX_HEAD. */
static cmk_err write_suffix(const reg_session *u, cmk_put *p)
{
    char sfx[SUFFIX_LEN + 1];
    unsigned char rnd[8];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return CMK_E_CRYPTO;
    snprintf(sfx, sizeof(sfx), SUFFIX_HEAD "%s %02x%02x%02x%02x%02x%02x%02x%02x\n", u->id, rnd[0],
             rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    return cmk_put_write(p, sfx, SUFFIX_LEN);
}

/* Commits what u's put holds as one more part (a put without bytes is kept: it costs
 * nothing to keep and the next request needs one). *lost: the put failed to commit, and
 * with it the bytes since the last save. */
static cmk_err commit_tail(reg_session *u, int *lost)
{
    char digest[CMK_DIGEST_MAX];
    cmk_put *p = u->put;
    cmk_err rc;

    if (!p || cmk_put_size(p) == 0)
        return CMK_OK;
    if (part_room(u) != 0)
        return CMK_E_NOMEM;
    u->put = NULL;
    rc = write_suffix(u, p);
    if (rc == CMK_OK)
        rc = cmk_put_commit(p, NULL, digest); /* frees p, whatever happens */
    else
        cmk_put_abort(p);
    if (rc != CMK_OK) {
        *lost = 1;
        return rc;
    }
    snprintf(u->parts[u->nparts++], CMK_DIGEST_MAX, "%s", digest);
    u->base = u->offset;
    return CMK_OK;
}

/* Streams part d into p without its suffix (see SUFFIX_HEAD; a legacy part has none): the
 * last SUFFIX_LEN bytes read are held back, and checked at the end. */
static cmk_err stream_part(reg_sessions *t, const reg_session *u, const char *d, cmk_put *p,
                           unsigned char *buf)
{
    unsigned char held[SUFFIX_LEN];
    size_t keep = u->legacy ? 0 : SUFFIX_LEN, nheld = 0, n = 0;
    char head[sizeof(SUFFIX_HEAD) + REG_SESSION_ID_LEN + 1];
    cmk_get *g = NULL;
    cmk_err rc = cmk_get_open(t->s, d, 0, CMK_TO_END, &g);

    while (rc == CMK_OK && (rc = cmk_get_read(g, buf, RESUME_BUFFER, &n)) == CMK_OK && n) {
        size_t total = nheld + n, emit, e1;
        if (total <= keep) {
            memcpy(held + nheld, buf, n);
            nheld += n;
            continue;
        }
        emit = total - keep;
        e1 = nheld < emit ? nheld : emit;
        if (e1)
            rc = cmk_put_write(p, held, e1);
        if (rc == CMK_OK && emit > e1)
            rc = cmk_put_write(p, buf, emit - e1);
        memmove(held, held + e1, nheld - e1);
        nheld -= e1;
        memcpy(held + nheld, buf + (emit - e1), n - (emit - e1));
        nheld += n - (emit - e1);
    }
    cmk_get_close(g);
    snprintf(head, sizeof(head), SUFFIX_HEAD "%s ", u->id);
    if (rc == CMK_OK && keep &&
        (nheld != keep || memcmp(held, head, strlen(head)) != 0 || held[keep - 1] != '\n'))
        rc = CMK_E_INTEGRITY; /* not a part of this session */
    return rc;
}

/* A new put holding u's parts, streamed in order: each part is authenticated as it is
 * read, and the put hashes it again (the digest's state is rebuilt from the bytes
 * themselves). CMK_E_INTEGRITY if they do not add up to u->base. */
static cmk_err read_parts(reg_sessions *t, const reg_session *u, cmk_put **out)
{
    unsigned char *buf = malloc(RESUME_BUFFER);
    cmk_put *p = NULL;
    cmk_err rc;

    *out = NULL;
    if (!buf)
        return CMK_E_NOMEM;
    rc = cmk_put_begin(t->s, "sha256", &p);
    for (size_t i = 0; rc == CMK_OK && i < u->nparts; i++)
        rc = stream_part(t, u, u->parts[i], p, buf);
    if (rc == CMK_OK && cmk_put_size(p) != u->base)
        rc = CMK_E_INTEGRITY;
    free(buf);
    if (rc != CMK_OK) {
        cmk_put_abort(p);
        return rc;
    }
    *out = p;
    return CMK_OK;
}

/* Replaces u's parts by one holding them all (see MERGE_PARTS); the old ones are collected
 * once the record naming the new one is written. On failure u is unchanged. */
static cmk_err merge_parts(reg_sessions *t, reg_session *u, char (**old)[CMK_DIGEST_MAX],
                           size_t *nold)
{
    char digest[CMK_DIGEST_MAX];
    char(*one)[CMK_DIGEST_MAX] = malloc(sizeof(*one));
    cmk_put *p = NULL;
    cmk_err rc;

    if (!one)
        return CMK_E_NOMEM;
    if (u->legacy) {
        free(one);
        return CMK_E_UNSUPPORTED; /* its parts are read back at its next request instead */
    }
    rc = read_parts(t, u, &p);
    if (rc == CMK_OK)
        rc = write_suffix(u, p);
    if (rc == CMK_OK)
        rc = cmk_put_commit(p, NULL, digest);
    else
        cmk_put_abort(p);
    if (rc != CMK_OK) {
        free(one);
        return rc;
    }
    snprintf(one[0], CMK_DIGEST_MAX, "%s", digest);
    *old = u->parts;
    *nold = u->nparts;
    u->parts = one;
    u->nparts = 1;
    return CMK_OK;
}

/* Saves u (held, or off the table): commits its put's bytes as a part, then writes its
 * record. last: the monotonic time of its last request. *lost: see commit_tail. */
static cmk_err save_session(reg_sessions *t, reg_session *u, double last, int *lost)
{
    char(*old)[CMK_DIGEST_MAX] = NULL;
    size_t nold = 0;
    cmk_err rc;

    *lost = 0;
    rc = commit_tail(u, lost);
    if (rc == CMK_OK && u->nparts >= MERGE_PARTS && merge_parts(t, u, &old, &nold) != CMK_OK)
        old = NULL; /* not merged: saved as it is (up to MAX_PARTS parts) */
    if (rc == CMK_OK)
        rc = save_record(t, u, last);
    if (rc == CMK_OK) {
        u->persisted = 1;
        u->saved_offset = u->offset;
        u->saved_at = http_mono();
    }
    if (old) {
        /* The merged parts: collected once the record names the merged one; otherwise the
         * session keeps them and the merged one is an unreferenced blob. */
        reg_session tmp = {.parts = rc == CMK_OK ? old : u->parts,
                           .nparts = rc == CMK_OK ? nold : u->nparts};
        if (rc != CMK_OK) {
            u->parts = old;
            u->nparts = nold;
        }
        collect_parts(t, &tmp);
    }
    return rc;
}

cmk_err reg_sessions_suspend(reg_sessions *t, unsigned *saved)
{
    reg_session *list, *u, *next;
    cmk_err first = CMK_OK;

    *saved = 0;
    pthread_mutex_lock(&t->mu);
    list = t->open;
    t->open = NULL;
    t->n = 0;
    pthread_mutex_unlock(&t->mu);
    for (u = list; u; u = next) {
        int lost = 0;
        cmk_err rc;
        next = u->next;
        /* Written even when nothing changed: the record's time says the session is in use. */
        rc = save_session(t, u, u->last, &lost);
        cmk_put_abort(u->put); /* a put without bytes, or one that could not be saved */
        u->put = NULL;
        if (rc == CMK_OK)
            (*saved)++;
        else if (first == CMK_OK)
            first = rc;
        /* An earlier save stays resumable (GET tells the client its offset); a session
         * never saved goes with whatever part this attempt committed. */
        if (rc != CMK_OK && !u->persisted)
            reg_upl_forget_saved(t, u);
        reg_upl_session_free(u);
    }
    return first;
}

/* Due for a save (see reg_sessions_save_idle). Under the lock. */
static int save_due(const reg_session *u, double now, double save_after, double max_idle, int round,
                    uint64_t gen)
{
    int changed = !u->persisted || u->saved_offset != u->offset || u->last > u->saved_at;

    if (u->busy || u->revoked || u->save_round == round || u->gen != gen || !changed)
        return 0;
    return (save_after >= 0 && now - u->last >= save_after) ||
           (u->persisted && now - u->saved_at >= max_idle / 2);
}

void reg_sessions_save_idle(reg_sessions *t, double save_after, double max_idle, double budget_s,
                            void (*saved_cb)(void *cb_arg), void *cb_arg, unsigned *saved,
                            unsigned *lost_n)
{
    double start = http_mono();
    uint64_t gen = reg_sessions_access_gen(t);
    int round;

    *saved = *lost_n = 0;
    pthread_mutex_lock(&t->mu);
    round = ++t->round;
    pthread_mutex_unlock(&t->mu);
    for (;;) {
        reg_session *u = NULL;
        double last = 0;
        int lost = 0;
        cmk_err rc;

        pthread_mutex_lock(&t->mu);
        for (reg_session *v = t->open; v; v = v->next) {
            if (save_due(v, http_mono(), save_after, max_idle, round, gen)) {
                u = v;
                break;
            }
        }
        if (u) {
            u->busy = u->saving = 1; /* held like a request holds it, and waited for */
            u->save_round = round;
            last = u->last;
        }
        pthread_mutex_unlock(&t->mu);
        if (!u)
            break;
        rc = save_session(t, u, last, &lost);
        pthread_mutex_lock(&t->mu);
        if (rc == CMK_OK && saved_cb)
            saved_cb(cb_arg); /* counted before a waiting request can go on */
        u->busy = u->saving = 0;
        if (lost)
            reg_upl_unlink_locked(t, u);
        pthread_cond_broadcast(&t->saved);
        pthread_mutex_unlock(&t->mu);
        if (rc == CMK_OK) {
            (*saved)++;
        } else if (lost) {
            /* Its next request is told the upload is unknown and starts again. */
            (*lost_n)++;
            reg_upl_forget_saved(t, u);
            reg_upl_session_free(u);
        }
        if (http_mono() - start >= budget_s)
            break;
    }
}

struct names {
    char (*v)[REC_NAME_MAX];
    size_t n;
    int failed;
};

static int list_cb(const char *name, void *arg)
{
    struct names *nl = arg;
    char(*nv)[REC_NAME_MAX];

    if (strlen(name) != REC_NAME_MAX - 1)
        return 0; /* not a session id: left alone */
    nv = realloc(nl->v, (nl->n + 1) * sizeof(*nv));
    if (!nv) {
        nl->failed = 1;
        return 1;
    }
    nl->v = nv;
    snprintf(nl->v[nl->n++], REC_NAME_MAX, "%s", name);
    return 0;
}

static int hex_id(const char *id)
{
    for (size_t i = 0; i < REG_SESSION_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    return id[REG_SESSION_ID_LEN] == '\0';
}

struct saved_rec {
    int64_t saved; /* epoch s of the save */
    int64_t last;  /* epoch s of the session's last request ("saved" when not recorded) */
    char instance[INSTANCE_MAX]; /* "" when not recorded */
};

/* Reads a saved record into u (id set); -1 if it is not one. */
static int parse_record(const void *val, size_t len, reg_session *u, struct saved_rec *sr)
{
    json_t *rec = json_loadb(val, len, JSON_REJECT_DUPLICATES, NULL), *parts, *v;
    const char *repo, *inst = NULL;
    json_int_t off, at, last = -1;
    int sfx = 0;
    size_t i;
    int ok = 0;

    if (!rec || json_unpack(rec, "{s:s, s:I, s:o, s:I, s?I, s?s, s?b}", "repo", &repo, "offset",
                            &off, "parts", &parts, "saved", &at, "last", &last, "instance", &inst,
                            "sfx", &sfx) != 0)
        goto out;
    u->legacy = !sfx;
    if (!registry_name_valid(repo) || off < 0 || !json_is_array(parts) ||
        (json_array_size(parts) == 0 && off != 0) || (inst && strlen(inst) >= INSTANCE_MAX))
        goto out;
    snprintf(u->repo, sizeof(u->repo), "%s", repo);
    u->offset = (uint64_t)off;
    sr->saved = (int64_t)at;
    sr->last = last >= 0 ? (int64_t)last : (int64_t)at;
    snprintf(sr->instance, sizeof(sr->instance), "%s", inst ? inst : "");
    json_array_foreach(parts, i, v)
    {
        if (!json_is_string(v) || !registry_digest_valid(json_string_value(v)) ||
            add_part(u, json_string_value(v)) != 0)
            goto out;
    }
    ok = 1;
out:
    json_decref(rec);
    return ok ? 0 : -1;
}

cmk_err reg_sessions_restore(reg_sessions *t, const char *instance, double max_idle,
                             unsigned *restored, unsigned *expired, unsigned *others)
{
    struct names nl = {0};
    uint64_t gen = reg_sessions_access_gen(t);
    int64_t now = (int64_t)time(NULL);
    cmk_err rc;

    *restored = *expired = *others = 0;
    pthread_mutex_lock(&t->mu);
    snprintf(t->instance, sizeof(t->instance), "%s", instance ? instance : "");
    pthread_mutex_unlock(&t->mu);
    rc = cmk_meta_list(t->s, REC_PREFIX, list_cb, &nl);
    if (rc == CMK_OK && nl.failed)
        rc = CMK_E_NOMEM;
    for (size_t i = 0; rc == CMK_OK && i < nl.n; i++) {
        reg_session *u = calloc(1, sizeof(*u));
        struct saved_rec sr = {0};
        void *val = NULL;
        size_t len = 0;
        int64_t idle;
        int valid, mine;

        if (!u) {
            rc = CMK_E_NOMEM;
            break;
        }
        snprintf(u->id, sizeof(u->id), "%s", nl.v[i] + strlen(REC_PREFIX));
        u->persisted = 1;
        rc = cmk_meta_get(t->s, nl.v[i], &val, &len);
        if (rc == CMK_E_NOT_FOUND) { /* gone meanwhile */
            rc = CMK_OK;
            reg_upl_session_free(u);
            continue;
        }
        if (rc != CMK_OK) {
            reg_upl_session_free(u);
            break;
        }
        valid = hex_id(u->id) && parse_record(val, len, u, &sr) == 0;
        cmk_free(val);
        mine = valid && (sr.instance[0] == '\0' || strcmp(sr.instance, t->instance) == 0);
        if (valid && !mine && now - sr.saved <= (int64_t)max_idle) {
            /* Another front-end's, saved recently: it may be serving it now. */
            reg_upl_session_free(u);
            (*others)++;
            continue;
        }
        idle = valid ? now - sr.last : 0;
        if (!valid || !mine || idle > (int64_t)max_idle) {
            reg_upl_forget_saved(t, u); /* not a session record, or abandoned */
            reg_upl_session_free(u);
            (*expired)++;
            continue;
        }
        u->gen = gen;
        u->base = u->saved_offset = u->offset;
        u->last = http_mono() - (double)(idle > 0 ? idle : 0);
        u->saved_at = http_mono() - (double)(now - sr.saved > 0 ? now - sr.saved : 0);
        pthread_mutex_lock(&t->mu);
        u->next = t->open;
        t->open = u;
        t->n++;
        pthread_mutex_unlock(&t->mu);
        (*restored)++;
    }
    free(nl.v);
    return rc;
}

cmk_err reg_session_resume(reg_sessions *t, reg_session *u, int final, int *lost)
{
    uint64_t gen = reg_sessions_access_gen(t);
    cmk_put *p = NULL;
    cmk_err rc;

    *lost = 0;
    /* A legacy session (parts without suffix) becomes an ordinary one at its first request:
     * its parts are read back then, as before crash safety. */
    if ((!final && !u->legacy) || u->nparts == 0) {
        /* The bytes that follow go into a put of their own: nothing is read back. */
        if (u->put)
            return CMK_OK;
        rc = cmk_put_begin(t->s, "sha256", &p);
        if (rc == CMK_OK)
            rc = cmk_put_park(p);
        if (rc != CMK_OK) {
            cmk_put_abort(p);
            return rc;
        }
        u->put = p;
        u->base = u->offset;
        u->gen = gen;
        u->legacy = 0; /* no parts: nothing to read back */
        return CMK_OK;
    }
    /* A PUT: one put holding the whole upload. What the session's put holds becomes one more
     * part (not saved in the record: if this process dies now, that part is an unreferenced
     * blob and the record still tells the offset before it). */
    rc = commit_tail(u, lost);
    if (rc != CMK_OK)
        return rc;
    rc = read_parts(t, u, &p);
    if (rc == CMK_OK && cmk_put_size(p) != u->offset)
        rc = CMK_E_INTEGRITY;
    if (rc == CMK_OK)
        rc = cmk_put_park(p);
    if (rc != CMK_OK) {
        cmk_put_abort(p);
        return rc;
    }
    cmk_put_abort(u->put); /* one without bytes (commit_tail keeps those) */
    u->put = p;
    u->base = 0;
    u->gen = gen;
    reg_upl_forget_saved(t, u); /* the put holds it all now */
    u->legacy = 0;
    return CMK_OK;
}
