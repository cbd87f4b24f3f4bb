/* registry_upload.c — upload sessions and the upload memory budget (registry_upload.h); their
 * saves and restores are in registry_upload_save.c. */
#include "tools/serve/registry_upload_int.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/http_util.h"

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

void reg_upl_session_free(reg_session *u)
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
again:
    for (reg_session *u = t->open; u; u = u->next) {
        if (strcmp(u->id, id) != 0 || strcmp(u->repo, repo) != 0)
            continue;
        if (u->saving) {
            /* A save takes a commit and a record write: the request waits rather than being
             * told that the upload is in use. The session may be gone afterwards (its save
             * failed): look it up again. */
            pthread_cond_wait(&t->saved, &t->mu);
            goto again;
        }
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
            reg_upl_session_free(u);
            rc = CMK_E_KEY_UNREACHABLE;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void reg_upl_unlink_locked(reg_sessions *t, reg_session *u)
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
        reg_upl_unlink_locked(t, u);
    } else {
        u->busy = 0;
        u->last = http_mono();
    }
    pthread_mutex_unlock(&t->mu);
    if (destroy) {
        cmk_put_abort(u->put); /* nothing of an unfinished upload is ever published */
        reg_upl_forget_saved(t, u);
        reg_upl_session_free(u);
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
            reg_upl_unlink_locked(t, u);
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
            reg_upl_forget_saved(t, u);
        /* Kept without its put until the timeout, so that its next request is told why
         * (CMK_E_KEY_UNREACHABLE) rather than that it never existed. */
        if (u->revoked) {
            pthread_mutex_lock(&t->mu);
            u->last = now;
            u->next = t->revoked;
            t->revoked = u;
            pthread_mutex_unlock(&t->mu);
        } else {
            reg_upl_session_free(u);
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

uint64_t reg_sessions_unsaved(reg_sessions *t)
{
    uint64_t n = 0;

    pthread_mutex_lock(&t->mu);
    for (const reg_session *u = t->open; u; u = u->next)
        if (!u->revoked)
            n += u->offset - (u->persisted && u->saved_offset <= u->offset ? u->saved_offset : 0);
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
    if (pthread_cond_init(&t->saved, NULL) != 0) {
        pthread_mutex_destroy(&t->mu);
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
    pthread_cond_destroy(&t->saved);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
