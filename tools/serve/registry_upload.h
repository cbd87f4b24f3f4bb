/*
 * registry_upload.h — the registry's blob upload sessions (POST /v2/<name>/blobs/uploads/ and
 * the PATCH/PUT requests on its Location) and the memory budget of requests that stream into
 * a put. No HTTP here: the handlers (registry_blob.c) map these results to responses.
 *
 * A session is a parked cmk_put (it holds no pipeline memory between requests, see
 * cmk_put_park) under an unguessable id; one request at a time may hold it (busy). A session
 * begun before the store lost key access is dropped by the next sweep: its put is aborted (its
 * blob key is wiped) and an entry without a put is kept until the upload timeout, so that the
 * client's next request on it is told why (CMK_E_KEY_UNREACHABLE) rather than that it never
 * existed. Nothing of an unfinished upload is ever published.
 *
 * Threading: every function is thread-safe (one mutex per table). A session returned by
 * reg_session_create or reg_session_acquire is the caller's until reg_session_release: its
 * put and offset may be used without the lock, except that offset is read by
 * reg_session_offset, so it changes only through reg_session_advance. The housekeeping's
 * save (reg_sessions_save_idle) holds a session the same way, only while no request does;
 * a request that arrives meanwhile waits for the save to end.
 */
#ifndef CMK_REGISTRY_UPLOAD_H
#define CMK_REGISTRY_UPLOAD_H

#include <stdint.h>

#include "cmkstore.h"
#include "tools/serve/registry_meta.h"

#define REG_SESSION_ID_LEN 32 /* hex digits */

typedef struct reg_session {
    struct reg_session *next;
    char id[REG_SESSION_ID_LEN + 1];
    char repo[REG_NAME_MAX + 1];
    cmk_put *put;    /* NULL once the session was dropped on a key-access loss */
    uint64_t offset; /* bytes received so far */
    uint64_t gen;    /* the store's access generation when it began */
    double last;     /* monotonic time of the last request */
    int busy;        /* a request (or the housekeeping's save) is using it */
    int saving;      /* the housekeeping is saving it: requests wait */
    int revoked;     /* dropped on a key-access loss: kept (no put) to answer once */
    int save_round;  /* the last reg_sessions_save_idle round that tried it */
    /* Saved (at shutdown, or by the housekeeping while serving): the blobs holding the first
     * base bytes of the upload, in order; put (NULL until the next request needs one) holds
     * the bytes after them. A final PUT reads the parts into a put of the whole upload
     * (reg_session_resume). persisted: the session's record is in the store, written when
     * the offset was saved_offset, at monotonic time saved_at. */
    char (*parts)[CMK_DIGEST_MAX];
    size_t nparts;
    uint64_t base;
    int persisted;
    int legacy; /* restored from a record whose parts have no suffix (see registry_upload.c) */
    uint64_t saved_offset;
    double saved_at;
} reg_session;

typedef struct reg_sessions reg_sessions;

/* s is borrowed and must outlive the table. max: sessions open at once; mem_budget: bytes of
 * put memory (cmk_put_memory) that requests may reserve at once. CMK_E_NOMEM. */
cmk_err reg_sessions_new(cmk_store *s, unsigned max, uint64_t mem_budget, reg_sessions **out);
/* Aborts every session (nothing partial is published) and frees the table. Only once no
 * request uses it. NULL is a no-op. */
void reg_sessions_free(reg_sessions *t);
/* Sessions open now (not counting those kept only to answer after a key-access loss). */
unsigned reg_sessions_count(reg_sessions *t);
/* Bytes the open sessions received since their last save (all of them for a session never
 * saved): what a crash would lose now. */
uint64_t reg_sessions_unsaved(reg_sessions *t);

/* Opens a session for repo, busy (release it when the request ends). CMK_E_BUSY when max
 * sessions are open; CMK_E_NOMEM, CMK_E_CRYPTO (no randomness for the id) or the store's
 * error from starting the put. */
cmk_err reg_session_create(reg_sessions *t, const char *repo, reg_session **out);
/* Takes session id of repo for one request. CMK_E_NOT_FOUND; CMK_E_BUSY if another request
 * is using it; CMK_E_KEY_UNREACHABLE (once; afterwards CMK_E_NOT_FOUND) if it was dropped on
 * a key-access loss. */
cmk_err reg_session_acquire(reg_sessions *t, const char *id, const char *repo, reg_session **out);
/* Gives a session back (it is idle from now on) or, with destroy, closes it and aborts its
 * put. */
void reg_session_release(reg_sessions *t, reg_session *u, int destroy);
/* Adds n received bytes to a held session's offset. */
void reg_session_advance(reg_sessions *t, reg_session *u, uint64_t n);
/* *off = the offset of session id of repo; 0 if there is no such open session. */
int reg_session_offset(reg_sessions *t, const char *id, const char *repo, uint64_t *off);
/* Drops idle sessions: those idle for more than max_idle seconds, and those begun before the
 * store's access generation gen (their puts have failed); every session with max_idle < 0. */
void reg_sessions_expire(reg_sessions *t, double max_idle, uint64_t gen);

/* ---- surviving a restart or a crash ----
 * Saving a session (at shutdown for every open one; while serving, by the housekeeping, for
 * one parked long enough): the bytes its put received since the last save are committed as
 * a blob of its own, a "part" (sealed like any blob, through the store: whatever backend
 * holds the store holds it), and a record "upload/<id>" (cmk_meta_put: encrypted, through
 * the backend) names the session's repository, offset, parts, the front-end instance that
 * saved it, when it was saved and when its last request was. A crash loses what arrived
 * since the last save only: the put's sealed temporary file is swept when the store is next
 * opened, the parts and the record are not.
 * At start, reg_sessions_restore brings back this instance's sessions (and those saved by
 * a version that recorded no instance); a restored session answers its offset at once, its
 * next PATCH begins a new put for what follows (nothing is read back), and its final PUT
 * streams the parts into a put of the whole upload (authenticated by the read, hashed again
 * by the put: the digest state is rebuilt), after which the record goes and the parts are
 * collected if nothing else references them. A session dropped before that (cancelled,
 * expired) takes its record and parts with it. Other instances' records are left alone
 * unless saved more than the upload timeout ago (no front-end refreshes them: nobody uses
 * them), which are deleted with their parts. */

/* Saves every open session (see above) and closes it; *saved counts them. Sessions that
 * cannot be saved are aborted (the first error is returned), unless an earlier save of
 * theirs is in the store (it stays). Only once no request uses the table. */
cmk_err reg_sessions_suspend(reg_sessions *t, unsigned *saved);
/* Housekeeping: saves the parked sessions that changed since their last save (or were
 * never saved) and had no request for save_after seconds, and also, whatever save_after,
 * saved ones whose record is older than half of max_idle (it is refreshed, so that other
 * front-ends never take it for abandoned). Gives up after about budget_s seconds (the
 * rest wait for the next call). *saved counts the sessions saved, *lost those dropped
 * because the bytes since their last save could not be committed (a put that fails to
 * commit is gone). save_after < 0: only the refresh. saved_cb (may be NULL) is called with
 * cb_arg for each session saved, before the session is given back to the requests waiting
 * for it: a count it keeps (the metric) never lags a request that followed the save. */
void reg_sessions_save_idle(reg_sessions *t, double save_after, double max_idle, double budget_s,
                            void (*saved_cb)(void *cb_arg), void *cb_arg, unsigned *saved,
                            unsigned *lost);
/* Restores the sessions that instance saved in the store (see above; instance is kept for
 * later saves); those idle more than max_idle seconds (or whose record is unreadable as a
 * session) are deleted with their parts, and so are other instances' saved more than
 * max_idle seconds ago. *expired counts the deleted, *others those left to other
 * instances. */
cmk_err reg_sessions_restore(reg_sessions *t, const char *instance, double max_idle,
                             unsigned *restored, unsigned *expired, unsigned *others);
/* Gives a held session a put for its next bytes (no-op when it has one). final (a PUT): the
 * put must hold the whole upload, so a saved session's parts are read into a new one
 * (what its put held is committed as one more part first), and its record and parts go.
 * CMK_E_INTEGRITY if the parts do not add up to the offset; the store's errors. On failure
 * the session is intact (the client may retry) unless *lost is set (the bytes since the last
 * save could not be committed: drop it). */
cmk_err reg_session_resume(reg_sessions *t, reg_session *u, int final, int *lost);

/* The store's key-access generation now (cmk_store_resources). */
uint64_t reg_sessions_access_gen(reg_sessions *t);

/* Reserves n bytes of the budget; adds them to *held. One reservation always succeeds when
 * nothing else is reserved, so that a budget below one stream cannot stop all uploads.
 * 0 (nothing reserved) when the budget is spent. */
int reg_sessions_reserve(reg_sessions *t, uint64_t n, uint64_t *held);
/* Gives back *held bytes and sets it to 0. */
void reg_sessions_unreserve(reg_sessions *t, uint64_t *held);
/* The budget, in bytes. */
uint64_t reg_sessions_budget(const reg_sessions *t);

#endif
