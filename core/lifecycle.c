/*
 * lifecycle.c — the customer-managed key's life: manual and automatic rotation, key checks,
 * revocation and restore, the background thread, DEK rollover, identities and policies.
 *
 * Rotation rewraps the DEKs only: new keyring entries are made with the new key version
 * (each checked by a test unwrap), then the keyring record is replaced in one atomic write.
 * At every instant the keyring on disk is the old one or the new one, each fully
 * unwrappable with the version it names; no blob is read or written.
 *
 * Denied is not unreachable: a denial (policy removed, key or version disabled, key or
 * vault deleted, key missing) zeroizes the cached DEKs at once; a vault that does not
 * answer lets the process coast on the DEKs it holds for the grace period, then fails
 * closed. Access is re-checked every key-check interval by the background thread (or on
 * demand), and restored the same way.
 *
 * Cross-process: every keyring or store.json change is made under the store's exclusive
 * lock (the backend's, where it has one) after re-reading the record, and written only over
 * the version read (CMK_E_BUSY otherwise), so two processes never overwrite each other;
 * other processes notice a changed keyring (its version) at their next check or at an
 * unknown DEK id.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "core/events.h"
#include "core/store_internal.h"

/* Best effort: the event log records what happened; a failure to append must not undo an
 * operation that has already been committed. */
static void event(cmk_store *s, const char *type, json_t *fields)
{
    cmk_errbuf ignore = {0};
    cmk_best_effort(cmk_events_append(s->bk, type, fields, &ignore));
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ---- keyring refresh ---- */

static int keyring_changed(cmk_store *s)
{
    cmk_errbuf ignore = {0};
    cmk_rec_ver ver;
    int changed;

    /* Gone or unreadable: changed, so the reload reports why instead of the check passing. */
    if (cmk_bk_rec_get(s->bk, CMK_KEYRING_FILE, CMK_KEYRING_MAX, NULL, NULL, &ver, &ignore) !=
        CMK_OK)
        return 1;
    pthread_rwlock_rdlock(&s->key_lock);
    changed = !cmk_rec_ver_eq(&ver, &s->kr_ver);
    pthread_rwlock_unlock(&s->key_lock);
    return changed;
}

/* Re-reads keyring.json (if it changed, or always with force) and unwraps what is needed:
 * DEKs already held are reused, unknown ones are unwrapped with the keyring's key version.
 * With need_all, every DEK is unwrapped again (access restore: proves the key works). On a
 * key-access failure nothing changes and the error is returned. */
cmk_err cmk_store_refresh_keyring(cmk_store *s, int force, int need_all, cmk_errbuf *eb)
{
    cmk_keyring nkr;
    cmk_deks nd = {0}, held = {0};
    cmk_rec_ver ver;
    uint8_t *k = NULL;
    uint64_t gen;
    cmk_err rc;

    if (!force && !keyring_changed(s))
        return CMK_OK;
    memset(&nkr, 0, sizeof(nkr));
    pthread_rwlock_rdlock(&s->key_lock);
    gen = s->kr_gen;
    rc = need_all ? CMK_OK : cmk_deks_copy(&held, &s->deks, eb);
    pthread_rwlock_unlock(&s->key_lock);
    if (rc == CMK_OK)
        rc = cmk_keyring_read(s->bk, &nkr, &ver, eb);
    if (rc != CMK_OK)
        goto out;
    k = cmk_secalloc(CMK_DEK_LEN);
    if (!k) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nkr.ndeks; i++) {
        const cmk_kr_dek *d = &nkr.deks[i];
        const uint8_t *have = cmk_deks_find(&held, d->id);
        size_t klen = CMK_DEK_LEN;
        if (!have) {
            rc = cmk_kek_unwrap(s->kek, d->kid, nkr.identity.principal, d->alg, d->wrapped,
                                d->wrapped_len, k, &klen, eb);
            if (rc == CMK_OK && klen != CMK_DEK_LEN)
                rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY, "DEK %u has the wrong length", d->id);
            if (rc != CMK_OK)
                goto out;
            have = k;
        }
        rc = cmk_deks_add(&nd, d->id, have, eb);
        if (rc != CMK_OK)
            goto out;
    }
    pthread_rwlock_wrlock(&s->key_lock);
    /* A rotation in this process installed a newer keyring while this one was read: keep
     * it. A restore must install its own DEKs, so it reports the race and is retried. */
    if (s->kr_gen != gen) {
        if (need_all)
            rc = cmk_errbuf_set(eb, CMK_E_BUSY, "the keyring changed during the check; retry");
    } else {
        cmk_keyring_free(&s->kr);
        s->kr = nkr;
        memset(&nkr, 0, sizeof(nkr));
        cmk_deks_free(&s->deks);
        s->deks = nd;
        memset(&nd, 0, sizeof(nd));
        cmk_store_note_keyring(s, &ver);
    }
    pthread_rwlock_unlock(&s->key_lock);
out:
    cmk_secfree(k);
    cmk_deks_free(&held);
    cmk_deks_free(&nd);
    cmk_keyring_free(&nkr);
    return rc;
}

/* ---- access state transitions ---- */

static void access_lost(cmk_store *s, const cmk_errbuf *why, cmk_err cause)
{
    int was_ok;

    pthread_rwlock_wrlock(&s->key_lock);
    was_ok = atomic_load(&s->key_ok);
    cmk_store_key_lost_locked(s, why);
    s->unreachable_since = 0;
    s->key_cause = cause;
    pthread_rwlock_unlock(&s->key_lock);
    if (was_ok)
        event(s, "key.accessLost",
              json_pack("{s:s, s:s, s:s, s:s, s:s}", "keyIdentifier", s->kr.versioned_kid,
                        "identity", s->kr.identity.principal, "error", cmk_errname(why->code),
                        "cause", cmk_errname(cause), "reason", why->msg));
}

static void access_ok(cmk_store *s, int was_ok)
{
    pthread_rwlock_wrlock(&s->key_lock);
    atomic_store(&s->key_ok, 1);
    cmk_errbuf_clear(&s->key_err);
    s->last_key_ok_mono = cmk_monotonic();
    s->unreachable_since = 0;
    s->key_cause = CMK_OK;
    pthread_rwlock_unlock(&s->key_lock);
    if (!was_ok)
        event(s, "key.accessRestored",
              json_pack("{s:s, s:s}", "keyIdentifier", s->kr.versioned_kid, "identity",
                        s->kr.identity.principal));
}

void cmk_store_fault_as_unreachable(cmk_errbuf *eb)
{
    cmk_errbuf why;

    if (eb->code == CMK_OK || cmk_err_is_key_access(eb->code))
        return;
    why = *eb;
    cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE, "key check failed (%s): %s", cmk_errname(why.code),
                   why.msg);
}

/* A check that did not end in a verified unwrap. A denial fails closed at once; anything
 * else (no answer, a damaged, missing or unreadable file, a read error) counts as
 * unreachable: the first one starts the grace timer and is recorded, the store coasts on
 * the DEKs it holds until the grace ends, then fails closed. Returns the check's error. */
static cmk_err check_failed(cmk_store *s, cmk_errbuf *eb, const char *vkid, double now)
{
    cmk_err cause = eb->code;
    int denial = cmk_err_is_key_access(cause) && cause != CMK_E_KEY_UNREACHABLE;
    int coasting = 0, first = 0;
    double down = 0;

    cmk_store_fault_as_unreachable(eb);
    pthread_rwlock_wrlock(&s->key_lock);
    s->key_cause = cause;
    if (!denial && atomic_load(&s->key_ok)) {
        coasting = 1;
        first = s->unreachable_since == 0;
        if (first)
            s->unreachable_since = now;
        down = now - s->unreachable_since;
    }
    pthread_rwlock_unlock(&s->key_lock);
    if (coasting) {
        if (first)
            event(s, "key.unreachable",
                  json_pack("{s:s, s:s, s:s, s:i}", "keyIdentifier", vkid, "cause",
                            cmk_errname(cause), "reason", eb->msg, "graceSeconds",
                            (int)s->grace_s));
        if (down < s->grace_s)
            return eb->code;
        cmk_errbuf why = *eb;
        cmk_errbuf_set(eb, why.code, "key checks failing for %.0f s (grace %u s): %s", down,
                       s->grace_s, why.msg);
    }
    access_lost(s, eb, cause);
    return eb->code;
}

/* ---- rotation ---- */

typedef struct rot_target {
    char key_id[CMK_ID_MAX];
    cmk_kr_identity ident;
    const char *trigger; /* "manual" or "automatic" */
} rot_target;

/* Rewraps every DEK for t. Takes the store lock; the keyring is re-read under it. */
static cmk_err rotate(cmk_store *s, const rot_target *t, cmk_errbuf *eb)
{
    cmk_keyring nkr;
    cmk_key_desc desc;
    cmk_deks held = {0};
    cmk_rec_ver ver;
    char from[CMK_ID_MAX];
    cmk_bk_lock *lk = NULL;
    cmk_wrap_alg alg;
    cmk_err rc;

    memset(&nkr, 0, sizeof(nkr));
    rc = cmk_store_lock(s, &lk, eb);
    if (rc != CMK_OK)
        return rc;
    /* The DEKs are needed in the clear to rewrap them: a store that cannot reach its current
     * key cannot rotate until access is restored. */
    rc = cmk_store_refresh_keyring(s, 1, !atomic_load(&s->key_ok), eb);
    if (rc != CMK_OK) {
        if (cmk_err_is_key_access(rc)) {
            cmk_errbuf why = *eb;
            cmk_errbuf_set(eb, rc,
                           "cannot rotate: the key in use is not accessible, so the data keys "
                           "cannot be rewrapped (restore access first): %s",
                           why.msg);
        }
        goto out;
    }
    rc = cmk_kek_describe(s->kek, t->key_id, t->ident.principal, &desc, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_kek_check_type(&desc, t->key_id, eb);
    if (rc != CMK_OK)
        goto out;
    alg = cmk_kek_pick_alg(&desc);
    pthread_rwlock_rdlock(&s->key_lock);
    rc = cmk_keyring_copy(&nkr, &s->kr, eb);
    if (rc == CMK_OK)
        rc = cmk_deks_copy(&held, &s->deks, eb);
    ver = s->kr_ver;
    snprintf(from, sizeof(from), "%s", s->kr.versioned_kid);
    pthread_rwlock_unlock(&s->key_lock);
    if (rc != CMK_OK)
        goto out;
    for (size_t i = 0; i < nkr.ndeks; i++) {
        const uint8_t *dek = cmk_deks_find(&held, nkr.deks[i].id);
        cmk_kr_dek e = nkr.deks[i];
        if (!dek) {
            rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY, "DEK %u is not unwrapped", e.id);
            goto out;
        }
        rc = cmk_keyring_wrap_checked(s->kek, desc.kid, t->ident.principal, alg, dek, &e, eb);
        if (rc != CMK_OK)
            goto out;
        nkr.deks[i] = e;
    }
    snprintf(nkr.key_identifier, sizeof(nkr.key_identifier), "%s", t->key_id);
    snprintf(nkr.versioned_kid, sizeof(nkr.versioned_kid), "%s", desc.kid);
    nkr.rotation_enabled = !desc.requested_versioned;
    nkr.identity = t->ident;
    nkr.last_rotation = cmk_now();
    rc = cmk_keyring_write(s->bk, &nkr, &ver, &ver, eb);
    if (rc != CMK_OK)
        goto out;
    /* Committed. */
    pthread_rwlock_wrlock(&s->key_lock);
    cmk_keyring_free(&s->kr);
    s->kr = nkr;
    memset(&nkr, 0, sizeof(nkr));
    cmk_store_note_keyring(s, &ver);
    pthread_rwlock_unlock(&s->key_lock);
    access_ok(s, 1);
    event(s, "key.rotated",
          json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:i}", "from", from, "to", desc.kid,
                    "keyIdentifier", t->key_id, "identity", t->ident.principal, "trigger",
                    t->trigger, "keyRotationEnabled", !desc.requested_versioned, "deks",
                    (int)s->kr.ndeks));
out:
    cmk_deks_free(&held);
    cmk_keyring_free(&nkr);
    cmk_store_unlock(s, lk);
    return rc;
}

/* Resolves an identity reference for the store: NULL keeps the current one; "[system]" is the
 * store's system-assigned identity; anything else must be a user-assigned identity assigned
 * to the store. */
static cmk_err resolve_identity(cmk_store *s, const char *ref, cmk_kr_identity *out, cmk_errbuf *eb)
{
    cmk_identity id;
    json_t *ids, *e;
    size_t i;
    int assigned = 0;
    cmk_err rc;

    if (!ref) {
        pthread_rwlock_rdlock(&s->key_lock);
        *out = s->kr.identity;
        pthread_rwlock_unlock(&s->key_lock);
        return CMK_OK;
    }
    if (strcmp(ref, "[system]") == 0) {
        rc = s->env.identity_get_system(s->env.self, s->id, &id, eb);
        if (rc == CMK_OK) {
            pthread_mutex_lock(&s->cfg_mu);
            e = json_object_get(json_object_get(s->cfg, "identity"), "systemAssigned");
            assigned = json_is_object(e) && cmk_json_bool(e, "enabled", 0);
            pthread_mutex_unlock(&s->cfg_mu);
        }
        if (rc == CMK_E_NOT_FOUND || (rc == CMK_OK && !assigned))
            return cmk_errbuf_set(eb, CMK_E_REFUSED,
                                  "the system-assigned identity of the store %s is not enabled: "
                                  "assign it to the store first",
                                  s->dir);
        if (rc != CMK_OK)
            return rc;
    } else {
        rc = s->env.identity_get(s->env.self, ref, &id, eb);
        if (rc == CMK_E_NOT_FOUND)
            return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "identity '%s' not found", ref);
        if (rc != CMK_OK)
            return rc;
        pthread_mutex_lock(&s->cfg_mu);
        ids = json_object_get(json_object_get(s->cfg, "identity"), "userAssigned");
        json_array_foreach(ids, i, e)
        {
            const char *pid = cmk_json_str(e, "principalId");
            assigned |= pid && strcmp(pid, id.principal_id) == 0;
        }
        pthread_mutex_unlock(&s->cfg_mu);
        if (!assigned)
            return cmk_errbuf_set(eb, CMK_E_REFUSED,
                                  "identity '%s' (%s) is not assigned to the store %s: assign it "
                                  "first",
                                  ref, id.id, s->dir);
    }
    snprintf(out->kind, sizeof(out->kind), "%s", id.type);
    snprintf(out->id, sizeof(out->id), "%s", id.id);
    snprintf(out->principal, sizeof(out->principal), "%s", id.principal_id);
    snprintf(out->client, sizeof(out->client), "%s", id.client_id);
    return CMK_OK;
}

cmk_err cmk_store_rotate_key(cmk_store *s, const char *key_id, const char *identity)
{
    cmk_errbuf eb = {0};
    rot_target t;
    cmk_err rc;
    int cmk;

    if (!s || !key_id || !*key_id)
        return cmk_set_last(CMK_E_INVAL, "rotate-key needs a key identifier");
    pthread_rwlock_rdlock(&s->key_lock);
    cmk = s->kr.cmk;
    pthread_rwlock_unlock(&s->key_lock);
    if (!cmk) {
        rc = cmk_errbuf_set(&eb, CMK_E_REFUSED,
                            "this store does not use a customer-managed key (status: disabled); "
                            "a customer-managed key can only be enabled when a store is "
                            "created");
        goto out;
    }
    if (strlen(key_id) >= sizeof(t.key_id)) {
        rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "key identifier too long");
        goto out;
    }
    snprintf(t.key_id, sizeof(t.key_id), "%s", key_id);
    t.trigger = "manual";
    rc = resolve_identity(s, identity, &t.ident, &eb);
    if (rc == CMK_OK)
        rc = rotate(s, &t, &eb);
out:
    if (rc != CMK_OK)
        event(s, "operation.refused",
              json_pack("{s:s, s:s, s:s, s:s}", "operation", "rotate-key", "keyIdentifier",
                        key_id ? key_id : "", "error", cmk_errname(rc), "reason", eb.msg));
    return cmk_publish(&eb, rc);
}

/* ---- checks ---- */

cmk_err cmk_store_check_key(cmk_store *s, int force_rotation_check, int *rotated)
{
    cmk_errbuf eb = {0}, kreb = {0};
    cmk_key_desc desc;
    char key_id[CMK_ID_MAX], vkid[CMK_ID_MAX];
    cmk_kr_identity ident;
    cmk_kr_dek cur;
    int rot_enabled, was_ok, due, found = 0;
    uint8_t *k = NULL;
    double now = cmk_monotonic();
    cmk_err rc, krc;

    if (rotated)
        *rotated = 0;
    if (!s)
        return cmk_set_last(CMK_E_INVAL, "cmk_store_check_key: NULL store");
    was_ok = atomic_load(&s->key_ok);
    /* Pick up what other processes did (rotation, new DEKs). Read at every check, so a
     * damaged, missing or unreadable keyring is noticed whatever its times say. A failed
     * read is this check's fault, but the access check below still runs on the keyring
     * held: a denial is seen at once even then. */
    krc = cmk_store_refresh_keyring(s, 1, 0, &kreb);

    /* Write lock: the check's timestamps are written here, and checks may run in several
     * threads at once (the background checker and callers). */
    pthread_rwlock_wrlock(&s->key_lock);
    s->key_checks++;
    snprintf(key_id, sizeof(key_id), "%s", s->kr.key_identifier);
    snprintf(vkid, sizeof(vkid), "%s", s->kr.versioned_kid);
    ident = s->kr.identity;
    rot_enabled = s->kr.rotation_enabled;
    for (size_t i = 0; i < s->kr.ndeks; i++)
        if (s->kr.deks[i].id == s->kr.current_dek) {
            cur = s->kr.deks[i];
            found = 1;
        }
    s->last_key_check = cmk_now();
    /* force_rotation_check: > 0 forces the rotation check, 0 runs it if due (always the
     * first time in a process), < 0 skips it (an access check only). */
    due = krc == CMK_OK && rot_enabled && was_ok && force_rotation_check >= 0 &&
          (force_rotation_check > 0 || now - s->last_rotation_check_mono >= s->rotation_check_s);
    if (due)
        s->last_rotation_check_mono = now;
    pthread_rwlock_unlock(&s->key_lock);
    if (!found) {
        rc = cmk_errbuf_set(&eb, CMK_E_CORRUPT, "keyring has no current DEK");
        goto failed;
    }

    /* Automatic rotation first: it needs only the DEKs already held, so it works even if
     * the old version has just been disabled. */
    if (due) {
        rc = cmk_kek_describe(s->kek, key_id, ident.principal, &desc, &eb);
        if (rc == CMK_OK && strcmp(desc.kid, vkid) != 0) {
            rot_target t;
            snprintf(t.key_id, sizeof(t.key_id), "%s", key_id);
            t.ident = ident;
            t.trigger = "automatic";
            rc = rotate(s, &t, &eb);
            if (rc == CMK_OK) {
                if (rotated)
                    *rotated = 1;
                snprintf(vkid, sizeof(vkid), "%s", desc.kid);
                pthread_rwlock_rdlock(&s->key_lock);
                for (size_t i = 0; i < s->kr.ndeks; i++)
                    if (s->kr.deks[i].id == s->kr.current_dek)
                        cur = s->kr.deks[i];
                pthread_rwlock_unlock(&s->key_lock);
            } else {
                event(s, "key.rotationFailed",
                      json_pack("{s:s, s:s, s:s, s:s}", "from", vkid, "to", desc.kid, "error",
                                cmk_errname(rc), "reason", eb.msg));
            }
        }
        cmk_errbuf_clear(&eb);
    }

    /* Access check: the identity can get the version in use and unwrap with it. */
    k = cmk_secalloc(CMK_DEK_LEN + 32);
    if (!k) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory");
        goto failed;
    }
    rc = cmk_kek_describe(s->kek, vkid, ident.principal, &desc, &eb);
    if (rc == CMK_OK) {
        size_t klen = CMK_DEK_LEN + 32;
        rc = cmk_kek_unwrap(s->kek, cur.kid, ident.principal, cur.alg, cur.wrapped, cur.wrapped_len,
                            k, &klen, &eb);
    }
    /* A verified unwrap does not excuse a keyring that could not be read. */
    if (rc == CMK_OK && krc != CMK_OK) {
        eb = kreb;
        rc = krc;
    }
    /* Restore: every DEK is unwrapped again before service resumes. */
    if (rc == CMK_OK && !atomic_load(&s->key_ok))
        rc = cmk_store_refresh_keyring(s, 1, 1, &eb);
    if (rc == CMK_OK) {
        access_ok(s, was_ok);
        goto out;
    }
failed:
    rc = check_failed(s, &eb, vkid, now);
out:
    cmk_secfree(k);
    return cmk_publish(&eb, rc);
}

/* ---- background thread ---- */

static void *bg_main(void *arg)
{
    cmk_store *s = arg;
    struct timespec ts;

    pthread_mutex_lock(&s->bg_mu);
    while (!s->bg_stop) {
        uint32_t wait = s->key_check_s < s->rotation_check_s ? s->key_check_s : s->rotation_check_s;
        if (wait == 0)
            wait = 1;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait;
        while (!s->bg_stop && pthread_cond_timedwait(&s->bg_cv, &s->bg_mu, &ts) != ETIMEDOUT)
            ;
        if (s->bg_stop)
            break;
        pthread_mutex_unlock(&s->bg_mu);
        cmk_best_effort(cmk_store_check_key(s, 0, NULL));
        pthread_mutex_lock(&s->bg_mu);
    }
    pthread_mutex_unlock(&s->bg_mu);
    return NULL;
}

cmk_err cmk_store_start_background(cmk_store *s)
{
    pthread_condattr_t ca;
    int rc;

    if (!s)
        return cmk_set_last(CMK_E_INVAL, "NULL store");
    pthread_mutex_lock(&s->bg_mu);
    if (s->bg_running) {
        pthread_mutex_unlock(&s->bg_mu);
        return CMK_OK;
    }
    /* Timed waits on the monotonic clock: wall-clock jumps must not stall key checks. */
    pthread_cond_destroy(&s->bg_cv);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->bg_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->bg_stop = 0;
    s->last_rotation_check_mono = cmk_monotonic();
    rc = pthread_create(&s->bg_thread, NULL, bg_main, s);
    s->bg_running = rc == 0;
    if (rc == 0)
        (void)pthread_setname_np(s->bg_thread, "cmk-keycheck");
    pthread_mutex_unlock(&s->bg_mu);
    if (rc != 0)
        return cmk_set_last(CMK_E_NOMEM, "cannot start the key-check thread");
    return CMK_OK;
}

void cmk_store_bg_shutdown(cmk_store *s)
{
    int running;

    pthread_mutex_lock(&s->bg_mu);
    running = s->bg_running;
    s->bg_stop = 1;
    pthread_cond_broadcast(&s->bg_cv);
    pthread_mutex_unlock(&s->bg_mu);
    if (running) {
        pthread_join(s->bg_thread, NULL);
        pthread_mutex_lock(&s->bg_mu);
        s->bg_running = 0;
        pthread_mutex_unlock(&s->bg_mu);
    }
}

void cmk_store_stop_background(cmk_store *s)
{
    if (s)
        cmk_store_bg_shutdown(s);
}

/* ---- DEK rollover ---- */

cmk_err cmk_store_rotate_dek(cmk_store *s, uint32_t *new_id)
{
    cmk_errbuf eb = {0};
    cmk_keyring nkr;
    cmk_kr_dek e;
    cmk_rec_ver ver;
    uint8_t *dek = NULL;
    cmk_bk_lock *lk = NULL;
    cmk_err rc;

    if (!s)
        return cmk_set_last(CMK_E_INVAL, "NULL store");
    memset(&nkr, 0, sizeof(nkr));
    rc = cmk_store_key_gate(s, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_store_lock(s, &lk, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_store_refresh_keyring(s, 1, 0, &eb);
    if (rc != CMK_OK)
        goto out;
    dek = cmk_secalloc(CMK_DEK_LEN);
    if (!dek) {
        rc = cmk_errbuf_set(&eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    pthread_rwlock_rdlock(&s->key_lock);
    rc = cmk_keyring_copy(&nkr, &s->kr, &eb);
    ver = s->kr_ver;
    pthread_rwlock_unlock(&s->key_lock);
    if (rc != CMK_OK)
        goto out;
    /* Wrapping talks to the vault: done outside key_lock so reads and writes go on. */
    rc = cmk_keyring_new_dek(&nkr, s->kek, CMK_WRAP_NONE, &e, dek, &eb);
    if (rc == CMK_OK)
        rc = cmk_keyring_append(&nkr, &e, &eb);
    if (rc == CMK_OK)
        rc = cmk_keyring_write(s->bk, &nkr, &ver, &ver, &eb);
    if (rc != CMK_OK)
        goto out;
    pthread_rwlock_wrlock(&s->key_lock);
    rc = cmk_deks_add(&s->deks, e.id, dek, &eb);
    if (rc == CMK_OK) {
        cmk_keyring_free(&s->kr);
        s->kr = nkr;
        memset(&nkr, 0, sizeof(nkr));
        cmk_store_note_keyring(s, &ver);
    }
    pthread_rwlock_unlock(&s->key_lock);
    if (rc != CMK_OK)
        goto out;
    atomic_store(&s->blobs_since_roll, 0);
    if (new_id)
        *new_id = e.id;
    event(s, "dek.rotated", json_pack("{s:i}", "dek", (int)e.id));
out:
    cmk_secfree(dek);
    cmk_keyring_free(&nkr);
    cmk_store_unlock(s, lk);
    return cmk_publish(&eb, rc);
}

void cmk_store_note_commit(cmk_store *s)
{
    unsigned n = atomic_fetch_add(&s->blobs_since_roll, 1) + 1;

    /* Exactly one committer crosses the threshold; it rolls the DEK. A failure leaves the
     * current DEK in use (writes go on) and is retried at the next threshold. */
    if (s->dek_rollover != UINT32_MAX && n == s->dek_rollover)
        cmk_best_effort(cmk_store_rotate_dek(s, NULL));
}

/* ---- policy ---- */

static int interval_ok(uint32_t v)
{
    return v == 0 || (v >= 1 && v <= 86400);
}

cmk_err cmk_store_set_policy(cmk_store *s, uint32_t rotation_check_s, uint32_t key_check_s,
                             uint32_t grace_s, uint32_t dek_rollover_blobs)
{
    cmk_errbuf eb = {0};
    cmk_bk_lock *lk = NULL;
    cmk_err rc;

    if (!s)
        return cmk_set_last(CMK_E_INVAL, "NULL store");
    if (!interval_ok(rotation_check_s) || !interval_ok(key_check_s) || grace_s > 86400)
        return cmk_set_last(CMK_E_INVAL,
                            "intervals must be between 1 second and 1 day (grace: 0 to 1 day)");
    rc = cmk_store_lock(s, &lk, &eb);
    if (rc != CMK_OK)
        goto out;
    pthread_mutex_lock(&s->cfg_mu);
    /* From the file, not the copy loaded at open: another process may have changed it since
     * (an identity assigned), and that change must survive this write. */
    rc = cmk_store_reload_config(s, &eb);
    if (rc != CMK_OK) {
        pthread_mutex_unlock(&s->cfg_mu);
        goto out;
    }
    if (rotation_check_s)
        json_object_set_new(s->cfg, "rotationCheckIntervalSeconds", json_integer(rotation_check_s));
    if (key_check_s)
        json_object_set_new(s->cfg, "keyCheckIntervalSeconds", json_integer(key_check_s));
    if (grace_s)
        json_object_set_new(s->cfg, "unreachableGraceSeconds", json_integer(grace_s));
    if (dek_rollover_blobs)
        json_object_set_new(s->cfg, "dekRolloverBlobs", json_integer(dek_rollover_blobs));
    rc = cmk_store_save_config(s, &eb);
    if (rc == CMK_OK) {
        if (rotation_check_s)
            s->rotation_check_s = rotation_check_s;
        if (key_check_s)
            s->key_check_s = key_check_s;
        if (grace_s)
            s->grace_s = grace_s;
        if (dek_rollover_blobs)
            s->dek_rollover = dek_rollover_blobs;
    }
    pthread_mutex_unlock(&s->cfg_mu);
    if (rc == CMK_OK)
        event(s, "policy.updated",
              json_pack("{s:i, s:i, s:i, s:o}", "rotationCheckIntervalSeconds",
                        (int)s->rotation_check_s, "keyCheckIntervalSeconds", (int)s->key_check_s,
                        "unreachableGraceSeconds", (int)s->grace_s, "dekRolloverBlobs",
                        s->dek_rollover == UINT32_MAX ? json_null()
                                                      : json_integer((json_int_t)s->dek_rollover)));
    /* Wake the background thread so a shorter interval takes effect now. */
    pthread_mutex_lock(&s->bg_mu);
    pthread_cond_broadcast(&s->bg_cv);
    pthread_mutex_unlock(&s->bg_mu);
out:
    cmk_store_unlock(s, lk);
    return cmk_publish(&eb, rc);
}

/* ---- identities ---- */

cmk_err cmk_store_identities(cmk_store *s, cmk_store_identity *out, size_t cap, size_t *n)
{
    json_t *ids, *sys, *users, *e;
    char used[40];
    size_t i, count = 0;

    if (!s || !n)
        return cmk_set_last(CMK_E_INVAL, "NULL argument");
    pthread_rwlock_rdlock(&s->key_lock);
    snprintf(used, sizeof(used), "%s", s->kr.identity.principal);
    pthread_rwlock_unlock(&s->key_lock);
    pthread_mutex_lock(&s->cfg_mu);
    ids = json_object_get(s->cfg, "identity");
    sys = json_object_get(ids, "systemAssigned");
    users = json_object_get(ids, "userAssigned");
    if (json_is_object(sys) && cmk_json_bool(sys, "enabled", 0)) {
        if (count < cap) {
            cmk_store_identity *o = &out[count];
            memset(o, 0, sizeof(*o));
            snprintf(o->kind, sizeof(o->kind), "SystemAssigned");
            snprintf(o->id, sizeof(o->id), "%s", nz(cmk_json_str(sys, "id")));
            snprintf(o->principal, sizeof(o->principal), "%s",
                     nz(cmk_json_str(sys, "principalId")));
            o->used_for_encryption = strcmp(o->principal, used) == 0;
        }
        count++;
    }
    json_array_foreach(users, i, e)
    {
        if (count < cap) {
            cmk_store_identity *o = &out[count];
            memset(o, 0, sizeof(*o));
            snprintf(o->kind, sizeof(o->kind), "UserAssigned");
            snprintf(o->id, sizeof(o->id), "%s", nz(cmk_json_str(e, "id")));
            snprintf(o->principal, sizeof(o->principal), "%s", nz(cmk_json_str(e, "principalId")));
            snprintf(o->client, sizeof(o->client), "%s", nz(cmk_json_str(e, "clientId")));
            o->used_for_encryption = strcmp(o->principal, used) == 0;
        }
        count++;
    }
    pthread_mutex_unlock(&s->cfg_mu);
    *n = count;
    return CMK_OK;
}

static cmk_err change_identity(cmk_store *s, const char *ref, int assign)
{
    cmk_errbuf eb = {0};
    cmk_identity id;
    json_t *ids, *users, *e;
    char used[40];
    cmk_bk_lock *lk = NULL;
    int is_system;
    size_t i;
    cmk_err rc;

    if (!s || !ref || !*ref)
        return cmk_set_last(CMK_E_INVAL, "an identity is required ([system] or an id)");
    is_system = strcmp(ref, "[system]") == 0;
    rc = is_system ? (assign ? s->env.identity_create_system(s->env.self, s->id, &id, &eb)
                             : s->env.identity_get_system(s->env.self, s->id, &id, &eb))
                   : s->env.identity_get(s->env.self, ref, &id, &eb);
    if (rc != CMK_OK)
        goto out;
    pthread_rwlock_rdlock(&s->key_lock);
    snprintf(used, sizeof(used), "%s", s->kr.identity.principal);
    pthread_rwlock_unlock(&s->key_lock);
    if (!assign && strcmp(used, id.principal_id) == 0) {
        rc = cmk_errbuf_set(&eb, CMK_E_REFUSED,
                            "identity '%s' (principal %s) is used to reach the key-encryption "
                            "key of the store %s and cannot be removed: assign it again if it "
                            "was lost, or rotate the key to another identity first, then "
                            "remove it",
                            id.id, id.principal_id, s->dir);
        goto out;
    }
    rc = cmk_store_lock(s, &lk, &eb);
    if (rc != CMK_OK)
        goto out;
    pthread_mutex_lock(&s->cfg_mu);
    rc = cmk_store_reload_config(s, &eb);
    if (rc != CMK_OK)
        goto unlock;
    ids = json_object_get(s->cfg, "identity");
    if (is_system) {
        e = json_object_get(ids, "systemAssigned");
        if (!json_is_object(e)) {
            e = json_object();
            json_object_set_new(ids, "systemAssigned", e);
        }
        json_object_set_new(e, "id", json_string(id.id));
        json_object_set_new(e, "principalId", json_string(id.principal_id));
        json_object_set_new(e, "enabled", json_boolean(assign));
    } else {
        users = json_object_get(ids, "userAssigned");
        size_t found = (size_t)-1;
        json_array_foreach(users, i, e)
        {
            const char *pid = cmk_json_str(e, "principalId");
            if (pid && strcmp(pid, id.principal_id) == 0)
                found = i;
        }
        if (assign && found == (size_t)-1) {
            e = json_pack("{s:s, s:s, s:s, s:s}", "id", id.id, "principalId", id.principal_id,
                          "clientId", id.client_id, "name", id.name);
            json_array_append_new(users, e);
        } else if (!assign) {
            if (found == (size_t)-1) {
                rc = cmk_errbuf_set(&eb, CMK_E_NOT_FOUND,
                                    "identity '%s' is not assigned to this store", ref);
                goto unlock;
            }
            json_array_remove(users, found);
        }
    }
    rc = cmk_store_save_config(s, &eb);
unlock:
    pthread_mutex_unlock(&s->cfg_mu);
out:
    cmk_store_unlock(s, lk);
    if (rc == CMK_OK)
        event(s, assign ? "identity.assigned" : "identity.removed",
              json_pack("{s:s, s:s}", "identity", id.id, "principalId", id.principal_id));
    else if (rc == CMK_E_REFUSED)
        event(s, "operation.refused",
              json_pack("{s:s, s:s, s:s}", "operation", "identity remove", "identity", ref,
                        "reason", eb.msg));
    return cmk_publish(&eb, rc);
}

cmk_err cmk_store_identity_assign(cmk_store *s, const char *identity)
{
    return change_identity(s, identity, 1);
}

cmk_err cmk_store_identity_remove(cmk_store *s, const char *identity)
{
    return change_identity(s, identity, 0);
}
