/*
 * backend.h — the storage backend seam: the one way the store engine reaches its persistent
 * state (blob containers, small records, the event log, a cross-process lock).
 *
 * The engine (store, put/get, keyring, lifecycle, meta, events) holds one cmk_backend per
 * open store and calls the cmk_bk_* functions below; no engine file outside core/backend/
 * opens, renames, links, locks or fsyncs a store file itself. The local backend
 * (core/backend/local*.c) is the store directory as it has always been (format v1, the same
 * bytes on disk). Every call is shaped so that an object store fits it as well: no rename,
 * no link, no fsync, no file offsets for writes, no flock. Small records are replaced whole
 * and conditionally (a version token, If-Match / If-None-Match with an ETag), the lock is
 * optional (CMK_BK_LOCK in caps), and a sink publishes a blob only if it is absent.
 *
 * ABI: cmk_backend_ops starts with `size`, the sizeof(cmk_backend_ops) the backend was built
 * against. The struct only grows at its end; the cmk_bk_* wrappers check that a member lies
 * inside `size` and is set before calling it (CMK_E_UNSUPPORTED otherwise), so a backend
 * built against an older header keeps working.
 *
 * Thread-safety: a backend handle is shared by all threads of its store; every op may be
 * called from several threads at once. Errors: every op returns a cmk_err and fills eb with
 * what failed and what to do.
 */
#ifndef CMK_BACKEND_H
#define CMK_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/backend/blob.h"
#include "core/base/error.h"
#include "core/base/pool.h"

typedef struct cmk_backend cmk_backend;
typedef struct cmk_backend_ops cmk_backend_ops;

/* The head of every backend's state: backends embed it first and point ops at their table. */
struct cmk_backend {
    const cmk_backend_ops *ops;
};

/* caps (CMK_BK_SCRATCH, 2u, is the blob space's: blob.h) */
#define CMK_BK_LOCK 1u /* has a cross-process lock (lock/unlock) */

/* ---- small records: names and version tokens (owner: records helper "rec") -------------
 *
 * A record name is "<name>" (top level: "store.json", "keyring.json") or "<ns>/<key>"
 * (a namespace: "meta/<64 hex>"). Names and keys use [A-Za-z0-9._-], do not start with '.',
 * hold no ".tmp-" (the local backend's temporaries) and are at most CMK_REC_NAME_MAX bytes;
 * a key has at least 2 characters. Anything else is CMK_E_INVAL. The local backend stores
 * "<name>" as <dir>/<name> and "<ns>/<key>" as <dir>/<ns>/<key[0:2]>/<key>. */
#define CMK_REC_NAME_MAX 255

/* A record version: opaque text, compared whole. "" means absent. The local backend's is
 * "l1:<dev>:<ino>:<mtime ns>:<ctime ns>:<size>:<xxh3 of the bytes>" (file identity plus
 * content, so an inode reused within one timestamp tick is still told apart); an object
 * store's is the ETag. */
typedef struct cmk_rec_ver {
    char tag[128];
} cmk_rec_ver;

/* As `expect` of a put or delete: whatever is there (a blind write or delete). */
#define CMK_REC_ANY "*"

static inline int cmk_rec_ver_eq(const cmk_rec_ver *a, const cmk_rec_ver *b)
{
    return strncmp(a->tag, b->tag, sizeof(a->tag)) == 0;
}

/* lock flags */
#define CMK_BK_EXCLUSIVE 1u /* else shared */
#define CMK_BK_NOWAIT    2u /* CMK_E_BUSY at once if another holder conflicts */

/* Lock names: CMK_BK_LOCK_STORE (keyring and settings changes), CMK_BK_LOCK_META (metadata
 * record read-modify-writes). The local backend's are the flocks <dir>/lock and
 * <dir>/meta/lock. */
#define CMK_BK_LOCK_STORE "store"
#define CMK_BK_LOCK_META  "meta"

typedef struct cmk_bk_lock cmk_bk_lock;

/* What a sweep (the op below) deleted, or with CMK_BK_SWEEP_DRY would delete. */
typedef struct cmk_bk_sweep_stats {
    uint64_t objects; /* objects (files) that no blob name reaches */
    uint64_t bytes;   /* their bytes */
    uint64_t uploads; /* incomplete uploads aborted (an object store's multipart uploads) */
} cmk_bk_sweep_stats;

/* sweep flags */
#define CMK_BK_SWEEP_DRY 1u /* count only; nothing is deleted */

struct cmk_backend_ops {
    uint32_t size;    /* sizeof(cmk_backend_ops) the backend was built against */
    const char *name; /* "local" */
    unsigned caps;    /* CMK_BK_* above */

    /* Releases everything the handle holds (locks taken through it must be released
     * before). */
    void (*close)(cmk_backend *b);

    /* ---- blob containers (owner: put/seal helper "put"): core/backend/blob.h -------------
     * Opens the backend's blob space: sinks (stream a container in, publish it only if
     * absent or replace a damaged one, or abort), delete, list. pool: the store's buffer
     * pool; direct_after and direct_state: the store's write policy and where the local
     * space keeps its O_DIRECT probe (see cmk_local_blobs_open). Closed with
     * cmk_bk_blobs_close before the backend. */
    cmk_err (*blobs_open)(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                          atomic_int *direct_state, cmk_bk_blobs **out, cmk_errbuf *eb);

    /* ---- small records, event log, lock (owner: records helper "rec") ------------------ */

    /* Reads record `name` whole: *data (malloc'd, NUL-terminated after len bytes, the
     * caller frees) and *len; data NULL reads the version only. *ver (may be NULL) receives
     * its version. CMK_E_NOT_FOUND if absent (*ver then ""), CMK_E_CORRUPT if it holds more
     * than max bytes or is not a plain record (the local backend: not a regular file),
     * CMK_E_REFUSED if reaching it would follow a symbolic link. */
    cmk_err (*rec_get)(cmk_backend *b, const char *name, size_t max, void **data, size_t *len,
                       cmk_rec_ver *ver, cmk_errbuf *eb);
    /* Replaces record `name` with len bytes, atomically and durably (readers see the old
     * bytes or the new, a crash leaves one of them), only if its version still equals
     * *expect; expect NULL: only if it is absent; expect CMK_REC_ANY: whatever is there.
     * Otherwise CMK_E_BUSY "... changed by another process; retry" and nothing changes.
     * *newver (may be NULL) receives the version written. Records are private (0600) and
     * never empty (len 0 is CMK_E_INVAL: an object store marks deleted records so). */
    cmk_err (*rec_put)(cmk_backend *b, const char *name, const void *data, size_t len,
                       const cmk_rec_ver *expect, cmk_rec_ver *newver, cmk_errbuf *eb);
    /* Deletes record `name` durably if its version equals *expect (NULL or CMK_REC_ANY:
     * whatever it is); CMK_E_NOT_FOUND if absent, CMK_E_BUSY if it changed. */
    cmk_err (*rec_delete)(cmk_backend *b, const char *name, const cmk_rec_ver *expect,
                          cmk_errbuf *eb);
    /* Calls cb with the full name of every record whose name starts with prefix, which
     * names a namespace ("meta/" or "meta/ab"); order unspecified; a record written or
     * deleted meanwhile may or may not be seen. A nonzero return of cb stops the listing
     * (CMK_OK). */
    cmk_err (*rec_list)(cmk_backend *b, const char *prefix, int (*cb)(const char *name, void *arg),
                        void *arg, cmk_errbuf *eb);

    /* Appends len bytes (one whole line, ending in '\n') to the append-only log `log`
     * ("events.log") durably; concurrent appenders' lines do not interleave. */
    cmk_err (*log_append)(cmk_backend *b, const char *log, const char *line, size_t len,
                          cmk_errbuf *eb);

    /* Takes the cross-process lock `name` (CMK_BK_LOCK_*) with flags; *out receives the
     * handle to give to unlock. Threads of one process exclude each other too. NULL op
     * (no CMK_BK_LOCK): the backend has no lock, the records' version tokens serve. */
    cmk_err (*lock)(cmk_backend *b, const char *name, unsigned flags, cmk_bk_lock **out,
                    cmk_errbuf *eb);
    void (*unlock)(cmk_bk_lock *l);

    /* Calls cb with every line (without its '\n') of the log `log` appended after *cursor
     * (opaque text of cap bytes; "" reads from the start), in append order, and leaves
     * *cursor after the last line delivered, so the next call reads only newer ones. A line
     * still being written is left for the next call. A nonzero return of cb stops (CMK_OK;
     * *cursor is after that line). CMK_E_NOT_FOUND if the log does not exist yet. */
    cmk_err (*log_read)(cmk_backend *b, const char *log, char *cursor, size_t cap,
                        int (*cb)(const char *line, size_t len, void *arg), void *arg,
                        cmk_errbuf *eb);

    /* ---- collection of writers' leftovers (optional) ------------------------------------
     * Deletes the stored bytes that writers which died or lost a race left behind and that no
     * blob name reaches, safely beside other writers of the store, and adds what it did to
     * *out (also on failure: what was done before it). A leftover that cannot be told apart
     * from a put still in progress is kept; anything the sweep cannot read that might name a
     * leftover (a link it cannot read) fails it before it deletes anything (fail closed).
     * Costly (may read every blob's name record): called by a collection, not at open.
     * NULL: the backend leaves no such bytes past what its open clears. The local one leaves
     * none: an O_TMPFILE temporary dies with its writer, a named one (file systems without
     * O_TMPFILE) is removed by every open once its writer's lock is gone, and a blob file is
     * published whole by link/rename. The S3 one (s3_sweep.c): incomplete multipart uploads
     * and completed data objects no link object names, older than a grace. */
    cmk_err (*sweep)(cmk_backend *b, unsigned flags, cmk_bk_sweep_stats *out, cmk_errbuf *eb);
};

/* Room for a log cursor (the local one: a decimal offset; S3: an object key). */
#define CMK_BK_CURSOR_MAX 256

/* A member of ops the backend provides: inside the size it was built against, and set. */
#define CMK_BK_HAS(b, member)                                                                      \
    ((b)->ops->size >= offsetof(cmk_backend_ops, member) + sizeof((b)->ops->member) &&             \
     (b)->ops->member != NULL)

/* ---- engine-side calls (backend.c): CMK_E_UNSUPPORTED for an op the backend lacks ---- */

void cmk_bk_close(cmk_backend *b);
CMK_MUST_CHECK cmk_err cmk_bk_blobs_open(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                                         atomic_int *direct_state, cmk_bk_blobs **out,
                                         cmk_errbuf *eb);
/* Checks a record name against the rules above (CMK_E_INVAL naming it). */
CMK_MUST_CHECK cmk_err cmk_bk_rec_name_check(const char *name, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_rec_get(cmk_backend *b, const char *name, size_t max, void **data,
                                      size_t *len, cmk_rec_ver *ver, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_rec_put(cmk_backend *b, const char *name, const void *data,
                                      size_t len, const cmk_rec_ver *expect, cmk_rec_ver *newver,
                                      cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_rec_delete(cmk_backend *b, const char *name,
                                         const cmk_rec_ver *expect, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_rec_list(cmk_backend *b, const char *prefix,
                                       int (*cb)(const char *name, void *arg), void *arg,
                                       cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_bk_log_append(cmk_backend *b, const char *log, const char *line,
                                         size_t len, cmk_errbuf *eb);
/* With no lock in the backend: CMK_OK and *out NULL (cmk_bk_release(NULL) does nothing). */
CMK_MUST_CHECK cmk_err cmk_bk_acquire(cmk_backend *b, const char *name, unsigned flags,
                                      cmk_bk_lock **out, cmk_errbuf *eb);
void cmk_bk_release(cmk_backend *b, cmk_bk_lock *l);
CMK_MUST_CHECK cmk_err cmk_bk_log_read(cmk_backend *b, const char *log, char *cursor, size_t cap,
                                       int (*cb)(const char *line, size_t len, void *arg),
                                       void *arg, cmk_errbuf *eb);
/* With no sweep op: CMK_OK, nothing counted (the backend leaves nothing to sweep). */
CMK_MUST_CHECK cmk_err cmk_bk_sweep(cmk_backend *b, unsigned flags, cmk_bk_sweep_stats *out,
                                    cmk_errbuf *eb);

#endif
