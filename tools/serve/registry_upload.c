/* registry_upload.c — upload sessions and the upload memory budget (registry_upload.h). */
#include "tools/serve/registry_upload.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "tools/serve/http_util.h"
#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_policy.h"

#define REC_PREFIX    "upload/"
#define REC_NAME_MAX  (sizeof(REC_PREFIX) + REG_SESSION_ID_LEN)
#define MAX_PARTS     1024
#define RESUME_BUFFER (1u << 20)

struct reg_sessions {
    cmk_store *s;
    unsigned max;
    uint64_t mem_budget; /* bytes of chunk buffers upload requests may hold at once */
    uint64_t mem_used;   /* reserved by requests in flight */
    pthread_mutex_t mu;  /* guards everything below and every session's busy, last, offset */
    reg_session *open;
    reg_session *revoked; /* dropped on a key-access loss (see reg_sessions_expire) */
    unsigned n;
};

uint64_t reg_sessions_access_gen(reg_sessions *t)
{
    cmk_store_resources res;

    cmk_store_resources_get(t->s, &res);
    return res.access_generation;
}

int reg_sessions_reserve(reg_sessions *t, uint64_t n, uint64_t *held)
{
    int ok;

    pthread_mutex_lock(&t->mu);
    ok = t->mem_used == 0 || t->mem_used + n <= t->mem_budget;
    if (ok) {
        t->mem_used += n;
        *held += n;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void reg_sessions_unreserve(reg_sessions *t, uint64_t *held)
{
    pthread_mutex_lock(&t->mu);
    t->mem_used -= *held;
    pthread_mutex_unlock(&t->mu);
    *held = 0;
}

uint64_t reg_sessions_budget(const reg_sessions *t)
{
    return t->mem_budget;
}

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
static void forget_saved(reg_sessions *t, reg_session *u)
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

static void session_free(reg_session *u)
{
    if (!u)
        return;
    free(u->parts);
    free(u);
}

cmk_err reg_session_create(reg_sessions *t, const char *repo, reg_session **out)
{
    reg_session *u;
    unsigned char rnd[16];
    cmk_err rc;

    *out = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->n >= t->max) {
        pthread_mutex_unlock(&t->mu);
        return CMK_E_BUSY;
    }
    t->n++; /* reserved; the put is started outside the lock */
    pthread_mutex_unlock(&t->mu);
    u = calloc(1, sizeof(*u));
    if (!u) {
        rc = CMK_E_NOMEM;
        goto fail;
    }
    /* Session ids are capabilities (no per-repository authorisation): unguessable. */
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        rc = CMK_E_CRYPTO;
        goto fail;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(u->id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(u->repo, sizeof(u->repo), "%s", repo);
    u->gen = reg_sessions_access_gen(t);
    rc = cmk_put_begin(t->s, "sha256", &u->put);
    /* An idle session holds no engine or buffers (see upload memory in SERVE.md). */
    if (rc == CMK_OK)
        rc = cmk_put_park(u->put);
    if (rc != CMK_OK) {
        cmk_put_abort(u->put);
        goto fail;
    }
    u->last = http_mono();
    u->busy = 1;
    pthread_mutex_lock(&t->mu);
    u->next = t->open;
    t->open = u;
    pthread_mutex_unlock(&t->mu);
    *out = u;
    return CMK_OK;
fail:
    free(u);
    pthread_mutex_lock(&t->mu);
    t->n--;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

cmk_err reg_session_acquire(reg_sessions *t, const char *id, const char *repo, reg_session **out)
{
    cmk_err rc = CMK_E_NOT_FOUND;

    *out = NULL;
    pthread_mutex_lock(&t->mu);
    for (reg_session *u = t->open; u; u = u->next) {
        if (strcmp(u->id, id) != 0 || strcmp(u->repo, repo) != 0)
            continue;
        if (u->busy) {
            rc = CMK_E_BUSY;
        } else {
            u->busy = 1;
            *out = u;
            rc = CMK_OK;
        }
        break;
    }
    for (reg_session **pp = &t->revoked; rc == CMK_E_NOT_FOUND && *pp; pp = &(*pp)->next) {
        reg_session *u = *pp;
        if (strcmp(u->id, id) == 0 && strcmp(u->repo, repo) == 0) {
            *pp = u->next; /* told once */
            session_free(u);
            rc = CMK_E_KEY_UNREACHABLE;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static void unlink_locked(reg_sessions *t, reg_session *u)
{
    for (reg_session **pp = &t->open; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            t->n--;
            return;
        }
    }
}

void reg_session_release(reg_sessions *t, reg_session *u, int destroy)
{
    pthread_mutex_lock(&t->mu);
    if (destroy) {
        unlink_locked(t, u);
    } else {
        u->busy = 0;
        u->last = http_mono();
    }
    pthread_mutex_unlock(&t->mu);
    if (destroy) {
        cmk_put_abort(u->put); /* nothing of an unfinished upload is ever published */
        forget_saved(t, u);
        session_free(u);
    }
}

void reg_sessions_expire(reg_sessions *t, double max_idle, uint64_t gen)
{
    reg_session *dead = NULL, *u, *next;
    double now = http_mono();

    pthread_mutex_lock(&t->mu);
    for (u = t->open; u; u = next) {
        next = u->next;
        if (!u->busy && (max_idle < 0 || now - u->last > max_idle || u->gen != gen)) {
            unlink_locked(t, u);
            u->revoked = max_idle >= 0 && now - u->last <= max_idle;
            u->next = dead;
            dead = u;
        }
    }
    for (reg_session **pp = &t->revoked; *pp;) {
        u = *pp;
        if (max_idle < 0 || now - u->last > max_idle) {
            *pp = u->next;
            u->revoked = 0; /* its time to answer is over: freed below */
            u->next = dead;
            dead = u;
        } else {
            pp = &u->next;
        }
    }
    pthread_mutex_unlock(&t->mu);
    for (u = dead; u; u = next) {
        next = u->next;
        cmk_put_abort(u->put); /* its blob key is wiped with it */
        u->put = NULL;
        /* At shutdown (max_idle < 0) a saved session stays saved; expired, it goes. */
        if (max_idle >= 0)
            forget_saved(t, u);
        /* Kept without its put until the timeout, so that its next request is told why
         * (CMK_E_KEY_UNREACHABLE) rather than that it never existed. */
        if (u->revoked) {
            pthread_mutex_lock(&t->mu);
            u->last = now;
            u->next = t->revoked;
            t->revoked = u;
            pthread_mutex_unlock(&t->mu);
        } else {
            session_free(u);
        }
    }
}

int reg_session_offset(reg_sessions *t, const char *id, const char *repo, uint64_t *off)
{
    int found = 0;

    pthread_mutex_lock(&t->mu);
    for (reg_session *u = t->open; u; u = u->next) {
        if (strcmp(u->id, id) == 0 && strcmp(u->repo, repo) == 0) {
            *off = u->offset;
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

void reg_session_advance(reg_sessions *t, reg_session *u, uint64_t n)
{
    pthread_mutex_lock(&t->mu);
    u->offset += n;
    pthread_mutex_unlock(&t->mu);
}

unsigned reg_sessions_count(reg_sessions *t)
{
    unsigned n;

    pthread_mutex_lock(&t->mu);
    n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

cmk_err reg_sessions_new(cmk_store *s, unsigned max, uint64_t mem_budget, reg_sessions **out)
{
    reg_sessions *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (!t)
        return CMK_E_NOMEM;
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t);
        return CMK_E_NOMEM;
    }
    t->s = s;
    t->max = max;
    t->mem_budget = mem_budget;
    *out = t;
    return CMK_OK;
}

void reg_sessions_free(reg_sessions *t)
{
    if (!t)
        return;
    reg_sessions_expire(t, -1, 0);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---- surviving a restart ---- */

/* Writes u's record: {"v": 1, "repo", "offset", "parts": [digests], "saved": epoch s}. */
static cmk_err save_record(reg_sessions *t, const reg_session *u)
{
    char name[REC_NAME_MAX];
    json_t *parts = json_array(), *rec;
    char *text = NULL;
    cmk_err rc = CMK_E_NOMEM;

    for (size_t i = 0; parts && i < u->nparts; i++)
        if (json_array_append_new(parts, json_string(u->parts[i])) != 0)
            goto out;
    rec = parts ? json_pack("{s:i, s:s, s:I, s:O, s:I}", "v", 1, "repo", u->repo, "offset",
                            (json_int_t)u->offset, "parts", parts, "saved", (json_int_t)time(NULL))
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

static int add_part(reg_session *u, const char *digest)
{
    char(*np)[CMK_DIGEST_MAX];

    if (u->nparts >= MAX_PARTS)
        return -1;
    np = realloc(u->parts, (u->nparts + 1) * sizeof(*np));
    if (!np)
        return -1;
    u->parts = np;
    snprintf(u->parts[u->nparts++], CMK_DIGEST_MAX, "%s", digest);
    return 0;
}

/* Saves one session taken off the table: its put (if it has one) is committed as a part. */
static cmk_err suspend_one(reg_sessions *t, reg_session *u)
{
    char digest[CMK_DIGEST_MAX];
    cmk_err rc = CMK_OK;

    if (u->put) {
        cmk_put *p = u->put;
        u->put = NULL;
        if (cmk_put_size(p) == 0) {
            cmk_put_abort(p);
        } else {
            rc = cmk_put_commit(p, NULL, digest);
            if (rc == CMK_OK && add_part(u, digest) != 0)
                rc = CMK_E_NOMEM;
        }
    }
    if (rc == CMK_OK)
        rc = save_record(t, u);
    if (rc == CMK_OK)
        u->persisted = 1;
    else
        forget_saved(t, u);
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
        cmk_err rc;
        next = u->next;
        rc = suspend_one(t, u);
        if (rc == CMK_OK)
            (*saved)++;
        else if (first == CMK_OK)
            first = rc;
        session_free(u);
    }
    return first;
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

/* Reads a saved record into u (id set); -1 if it is not one. *saved_at: when it was saved. */
static int parse_record(const void *val, size_t len, reg_session *u, int64_t *saved_at)
{
    json_t *rec = json_loadb(val, len, JSON_REJECT_DUPLICATES, NULL), *parts, *v;
    const char *repo;
    json_int_t off, at;
    size_t i;
    int ok = 0;

    if (!rec || json_unpack(rec, "{s:s, s:I, s:o, s:I}", "repo", &repo, "offset", &off, "parts",
                            &parts, "saved", &at) != 0)
        goto out;
    if (!registry_name_valid(repo) || off < 0 || !json_is_array(parts))
        goto out;
    snprintf(u->repo, sizeof(u->repo), "%s", repo);
    u->offset = (uint64_t)off;
    *saved_at = (int64_t)at;
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

cmk_err reg_sessions_restore(reg_sessions *t, double max_idle, unsigned *restored,
                             unsigned *expired)
{
    struct names nl = {0};
    uint64_t gen = reg_sessions_access_gen(t);
    cmk_err rc;

    *restored = *expired = 0;
    rc = cmk_meta_list(t->s, REC_PREFIX, list_cb, &nl);
    if (rc == CMK_OK && nl.failed)
        rc = CMK_E_NOMEM;
    for (size_t i = 0; rc == CMK_OK && i < nl.n; i++) {
        reg_session *u = calloc(1, sizeof(*u));
        void *val = NULL;
        size_t len = 0;
        int64_t at = 0, age;

        if (!u) {
            rc = CMK_E_NOMEM;
            break;
        }
        snprintf(u->id, sizeof(u->id), "%s", nl.v[i] + strlen(REC_PREFIX));
        u->persisted = 1;
        rc = cmk_meta_get(t->s, nl.v[i], &val, &len);
        if (rc == CMK_E_NOT_FOUND) { /* gone meanwhile */
            rc = CMK_OK;
            session_free(u);
            continue;
        }
        if (rc != CMK_OK) {
            session_free(u);
            break;
        }
        age = 0;
        if (!hex_id(u->id) || parse_record(val, len, u, &at) != 0 ||
            (age = (int64_t)time(NULL) - at) > (int64_t)max_idle) {
            forget_saved(t, u); /* not a session record, or abandoned */
            session_free(u);
            (*expired)++;
            cmk_free(val);
            continue;
        }
        cmk_free(val);
        u->gen = gen;
        u->last = http_mono() - (double)(age > 0 ? age : 0); /* idle since it was saved */
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

cmk_err reg_session_resume(reg_sessions *t, reg_session *u)
{
    unsigned char *buf = NULL;
    cmk_put *p = NULL;
    uint64_t gen = reg_sessions_access_gen(t);
    cmk_err rc;

    if (u->put)
        return CMK_OK;
    buf = malloc(RESUME_BUFFER);
    if (!buf)
        return CMK_E_NOMEM;
    rc = cmk_put_begin(t->s, "sha256", &p);
    /* Each part is authenticated as it is read, and the new put hashes it again: the
     * digest's state is rebuilt from the bytes themselves. */
    for (size_t i = 0; rc == CMK_OK && i < u->nparts; i++) {
        cmk_get *g = NULL;
        size_t n = 0;
        rc = cmk_get_open(t->s, u->parts[i], 0, CMK_TO_END, &g);
        while (rc == CMK_OK && (rc = cmk_get_read(g, buf, RESUME_BUFFER, &n)) == CMK_OK && n)
            rc = cmk_put_write(p, buf, n);
        cmk_get_close(g);
    }
    if (rc == CMK_OK && cmk_put_size(p) != u->offset)
        rc = CMK_E_INTEGRITY;
    if (rc == CMK_OK)
        rc = cmk_put_park(p);
    free(buf);
    if (rc != CMK_OK) {
        cmk_put_abort(p);
        return rc;
    }
    u->put = p;
    u->gen = gen;
    forget_saved(t, u); /* the put holds it all now */
    return CMK_OK;
}
