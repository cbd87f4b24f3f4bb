/*
 * store_internal.h — the store handle, shared by store.c (lifecycle, metadata), put.c
 * (write pipeline) and get.c (read pipeline). Not installed.
 *
 * Locking: `key_lock` (rwlock) guards the keyring, the unwrapped DEKs and the key-state
 * message; `key_ok` is an atomic mirror of "the KEK is reachable and the DEKs are loaded"
 * that streams check at every chunk without taking the lock. `io_mu` guards the free list
 * of I/O engines.
 */
#ifndef CMK_STORE_INTERNAL_H
#define CMK_STORE_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/backend/backend.h"
#include "core/backend/blob.h"
#include "cmkstore.h"
#include "core/base/error.h"
#include "io/io.h"
#include "kek/kek.h"
#include "core/keyring.h"
#include "core/base/pool.h"
#include "core/seal.h"

#define CMK_STORE_FORMAT             1
#define CMK_DEFAULT_ROTATION_CHECK_S 3600
#define CMK_DEFAULT_KEY_CHECK_S      60
#define CMK_DEFAULT_GRACE_S          300

/* write_mode "auto": the plaintext size past which a put goes O_DIRECT. Measured
 * (bench/RESULTS.md): a 140 MiB gzip layer written through the page cache is taken by the VM
 * host's cache at 1.2-1.4x the speed of direct writes; a 1 GiB blob is faster direct (the
 * disk streams, and a compressible one saves the CPU of the page cache and its writeback). */
#define CMK_DIRECT_AFTER (256ull << 20)

/* Idle I/O engines the store keeps (each io_uring instance pins kernel memory and a file
 * descriptor): enough for the streams a busy server runs at once; the rest are freed. */
#define CMK_IO_CACHE_MAX 16

struct cmk_store {
    char dir[4096];
    char home[4096];
    char id[37];
    cmk_backend *bk; /* the store's persistent state: records, event log, lock (and blobs) */
    uint32_t chunk_size;
    uint32_t rotation_check_s, key_check_s, grace_s;

    cmk_keyenv env; /* providers and identities, bound to `home` (kek/kek.h) */
    cmk_kek *kek;   /* env.kek */
    cmk_pool *pool;
    unsigned threads, depth;
    cmk_io_kind io_kind;
    uint64_t direct_after;   /* on io_uring a put switches to O_DIRECT once it has written
                                this many bytes of plaintext (write_mode); UINT64_MAX: never */
    cmk_bk_blobs *blobs;     /* the blob section of the storage backend (backend/blob.h) */
    atomic_int direct_state; /* the local blob space's O_DIRECT probe, kept here for the
                                tests: 0 not tried, 1 works in tmp/, -1 refused */

    pthread_mutex_t io_mu;
    cmk_io *io_free[CMK_IO_CACHE_MAX];
    size_t n_io_free;
    atomic_uint io_open;             /* engines made and not yet freed */
    atomic_uint_fast64_t access_gen; /* key-access losses (cmk_store_key_lost_locked) */

    pthread_rwlock_t key_lock;
    cmk_keyring kr;
    cmk_deks deks;
    cmk_errbuf key_err;      /* why the key is not accessible */
    atomic_int key_ok;       /* 1: DEKs loaded and access confirmed */
    int64_t last_key_check;  /* wall clock */
    double last_key_ok_mono; /* monotonic time of the last successful contact */
    uint64_t key_checks;     /* checks run by this handle */
    cmk_err key_cause;       /* the last check's own error (CMK_OK: it verified an unwrap) */

    pthread_mutex_t meta_mu; /* serialises metadata record writes in this process */
    json_t *cfg;             /* store.json as loaded; guarded by cfg_mu */
    cmk_rec_ver cfg_ver;     /* its version: a save replaces only that one */
    pthread_mutex_t cfg_mu;
    uint32_t dek_rollover; /* roll a new DEK after this many blobs; UINT32_MAX: never */
    atomic_uint blobs_since_roll;
    /* Version of the keyring record last loaded or written, to notice other processes'
     * changes and to replace only that one. Guarded by key_lock. */
    cmk_rec_ver kr_ver;
    /* Bumped at every keyring install, so a slower reload does not undo a newer one. */
    uint64_t kr_gen;
    double unreachable_since; /* monotonic time the vault first failed to answer; 0: it does */

    /* Background lifecycle thread (key checks, automatic rotation). */
    pthread_t bg_thread;
    int bg_running;
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;
    int bg_stop;
    double last_rotation_check_mono;
};

/* Creating and opening a store with a key environment from f (the library's public
 * cmk_store_create / cmk_store_open pass the built-in one: core/open/). On failure eb says
 * why and nothing is left behind (create) or held (open: *out is NULL). */
CMK_MUST_CHECK cmk_err cmk_store_create_with(const char *dir, const cmk_create_opts *o,
                                             const cmk_keyenv_factory *f, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_store_open_with(const char *dir, const cmk_store_opts *o,
                                           const cmk_keyenv_factory *f, cmk_store **out,
                                           cmk_errbuf *eb);

/* Blob path for a parsed digest: <dir>/blobs/<alg>/<hex[0:2]>/<hex> and its parent. */
CMK_MUST_CHECK cmk_err cmk_store_blob_path(const cmk_store *s, int alg, const uint8_t *raw,
                                           char *path, size_t cap, char *parent, size_t pcap,
                                           cmk_errbuf *eb);

/* path (made by cmk_store_blob_path or "<dir>/...") relative to the store directory, for
 * opening it under s->dirfd with cmk_openat_nofollow. */
const char *cmk_store_rel(const cmk_store *s, const char *path);

/* Takes an I/O engine from the store's free list (or makes one); give it back with
 * cmk_store_io_put. */
CMK_MUST_CHECK cmk_err cmk_store_io_get(cmk_store *s, cmk_io **out, cmk_errbuf *eb);
void cmk_store_io_put(cmk_store *s, cmk_io *io);

/* Records a key-access failure: every cached DEK is zeroized at once and the reason kept
 * for error messages. Caller holds key_lock for writing. */
void cmk_store_key_lost_locked(cmk_store *s, const cmk_errbuf *why);

/* A key check or key load that failed for a reason other than a key-access error (a damaged,
 * missing or unreadable file, a read error) is reported as CMK_E_KEY_UNREACHABLE naming the
 * fault, so it is handled like a vault that does not answer. Key-access errors are left. */
void cmk_store_fault_as_unreachable(cmk_errbuf *eb);

/* Re-reads keyring.json if it changed (always with force) and unwraps the DEKs not yet
 * held (all of them with need_all). On failure nothing changes. */
CMK_MUST_CHECK cmk_err cmk_store_refresh_keyring(cmk_store *s, int force, int need_all,
                                                 cmk_errbuf *eb);

/* Remembers which keyring version is installed (after a read or a write) and counts the
 * install in kr_gen. Caller holds key_lock for writing. */
void cmk_store_note_keyring(cmk_store *s, const cmk_rec_ver *ver);

/* Takes the store's cross-process lock (CMK_BK_LOCK_STORE, exclusive, waiting); *l is NULL
 * if the backend has none (the records' versions still refuse lost updates). Release with
 * cmk_store_unlock. */
CMK_MUST_CHECK cmk_err cmk_store_lock(cmk_store *s, cmk_bk_lock **l, cmk_errbuf *eb);
void cmk_store_unlock(cmk_store *s, cmk_bk_lock *l);

/* Re-reads store.json into s->cfg (and cfg_ver), so other processes' changes are kept.
 * Caller holds cfg_mu. */
CMK_MUST_CHECK cmk_err cmk_store_reload_config(cmk_store *s, cmk_errbuf *eb);
/* Saves s->cfg as store.json if it is still the version loaded (CMK_E_BUSY: another process
 * changed it; reload and retry). Caller holds cfg_mu and the store lock. */
CMK_MUST_CHECK cmk_err cmk_store_save_config(cmk_store *s, cmk_errbuf *eb);

/* Called after every published blob: counts towards the DEK rollover policy. */
void cmk_store_note_commit(cmk_store *s);

/* Stops the background thread if it runs (lifecycle.c). */
void cmk_store_bg_shutdown(cmk_store *s);

/* Fails with the key-access error if the key is not accessible (message names the key and
 * the identity). */
CMK_MUST_CHECK cmk_err cmk_store_key_gate(cmk_store *s, cmk_errbuf *eb);

/* Copies DEK `id` into out (secret memory owned by the caller). If the id is unknown the
 * keyring is reloaded once (another process may have rolled a new DEK). For writes, id 0
 * means "the current DEK" and *id_out receives it. */
CMK_MUST_CHECK cmk_err cmk_store_dek(cmk_store *s, uint32_t id, uint8_t out[CMK_DEK_LEN],
                                     uint32_t *id_out, cmk_errbuf *eb);

/* Known-answer tests only: replaces a put's random salt (before its first write), so a
 * fixed DEK and salt give exact, comparable bytes. */
CMK_MUST_CHECK cmk_err cmk_put_set_salt(cmk_put *p, const uint8_t salt[CMK_SALT_LEN]);
/* Bytes of chunk buffers one put stream holds at queue depth `depth` (its slots' plaintext
 * and record buffers, and the direct-write windows), and one get stream of a multi-chunk
 * blob (its slots' plaintext and record buffers). The store's pool keeps the two together,
 * so a server putting one blob while it serves another faults no memory in for either. */
size_t cmk_put_stream_bytes(uint32_t chunk_size, unsigned depth);
size_t cmk_get_stream_bytes(uint32_t chunk_size, unsigned depth);

/* Slots (chunks in flight) per stream. */
unsigned cmk_store_depth(const cmk_store *s);

#endif
