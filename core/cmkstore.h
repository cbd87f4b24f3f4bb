/*
 * cmkstore.h — envelope-encrypted blob store for container-registry content.
 *
 * A store is a directory of immutable, content-addressed blobs (OCI layers, configs,
 * manifests). Every blob is chunked, zstd-compressed where that pays, and sealed with
 * AES-256-GCM under a per-blob key derived from a data key (DEK). DEKs live in the store's
 * keyring wrapped by a key-encryption key (KEK) held by a key vault or HSM the store does not
 * own. See README.md for the format and the threat model.
 *
 * Conventions
 *  - Every function returns a cmk_err; CMK_OK (0) is success. The codes and their numbers are
 *    in cmkstore_err.h (stable). Every function may also return CMK_E_INVAL (a NULL or bad
 *    argument) and CMK_E_NOMEM; the "Errors:" line of each function lists the others.
 *    "Key-access errors" are the five codes cmk_err_is_key_access() accepts.
 *  - On failure a detail message is kept per thread: cmk_errmsg() returns the message of the
 *    last failed call made by the calling thread. Messages never contain key material and
 *    state the fault; they do not name commands of any tool.
 *  - A failed call changes nothing durable unless its comment says otherwise: a store file
 *    is replaced atomically or not at all, a blob is published whole or not at all.
 *  - Ownership: whoever calls *_open / *_begin / *_create owns the handle and releases it with
 *    the matching *_close / *_commit / *_abort / *_free.
 *  - Thread-safety: a cmk_store may be used by any number of threads at once. A cmk_put or
 *    cmk_get handle must be used by one thread at a time (it may move between threads).
 */
#ifndef CMKSTORE_H
#define CMKSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore_err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CMKSTORE_VERSION_STRING "0.1.0"

typedef struct cmk_store cmk_store;
typedef struct cmk_put cmk_put;
typedef struct cmk_get cmk_get;
struct cmk_kek_provider; /* see kek/cmkstore_kek.h */

/* ---- creating and opening a store ------------------------------------------------------ */

typedef struct cmk_create_opts {
    /* Home of the local vaults and identities; NULL: $CMKSTORE_HOME, else ~/.cmkstore. */
    const char *home;
    /* Customer-managed key: identity that reaches the vault (identity resource id, name,
     * principalId or clientId of a user-assigned identity, or "[system]") and the key
     * identifier, versioned ("<vault>/keys/<name>/<version>": manual rotation) or versionless
     * ("<vault>/keys/<name>": automatic rotation). Both NULL: a store-managed key is used and
     * the customer-managed key status is "disabled" (it cannot be enabled later). */
    const char *identity;
    const char *key_id;
    uint32_t chunk_size;                /* 0: 1 MiB; 64 KiB..16 MiB, a power of two */
    uint32_t rotation_check_interval_s; /* 0: 3600 (versionless key ids only) */
    uint32_t key_check_interval_s;      /* 0: 60 */
    uint32_t unreachable_grace_s;       /* 0: 300; how long cached DEKs serve through a vault
                                           outage (not through a denial) */
    /* Optional extra KEK provider (see cmk_store_opts); borrowed for the call. */
    const struct cmk_kek_provider *kek_provider;
} cmk_create_opts;

/* Fills *o with the defaults. */
CMK_API void cmk_create_opts_init(cmk_create_opts *o);

/* Creates a new store in dir (which must not exist or be empty) and, for a customer-managed
 * key, checks that the identity can get, wrap and unwrap with the key before anything is
 * written. Refuses EC and symmetric keys (CMK_E_KEY_UNSUPPORTED). o may be NULL (defaults).
 * Errors: CMK_E_REFUSED (a store exists in dir), CMK_E_EXISTS (dir not empty),
 * CMK_E_NOT_FOUND (identity, parent directory or home missing), key-access errors and
 * CMK_E_KEY_UNSUPPORTED (the key), CMK_E_IO / CMK_E_NOSPACE. On failure no store is left
 * behind (the store is built beside dir and renamed in); a system-assigned identity or
 * store-managed key already made in the home is kept (unused, harmless). */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_create(const char *dir, const cmk_create_opts *o);

typedef struct cmk_store_opts {
    const char *home;      /* NULL: $CMKSTORE_HOME, else the home recorded at create, which
                            * must be the user's (or root's), not group/other-writable and
                            * not inside the store (else CMK_E_REFUSED) */
    unsigned threads;      /* worker threads for sealing/opening chunks; 0: online cores */
    unsigned queue_depth;  /* chunks in flight per stream; 0: default (2 x threads + 4) */
    const char *io_engine; /* NULL or "auto", "uring", "sync"; env CMKSTORE_IO overrides auto */
    /* NULL or "auto": on the io_uring engine a blob is written through the page cache until
     * 256 MiB of it are written, then with O_DIRECT (aligned windows, several in flight) where
     * the file system takes it, so big blobs stream to the disk without the page cache in
     * between; "direct": O_DIRECT from the first chunk of any blob of more than one chunk;
     * "buffered": always through the page cache (a get right after the put is then served
     * from memory). Env CMKSTORE_WRITE overrides auto. CMK_E_INVAL at open for anything
     * else. */
    const char *write_mode;
    /* Optional extra KEK provider, consulted before the built-in ones. Borrowed: it must
     * outlive the store. */
    const struct cmk_kek_provider *kek_provider;
} cmk_store_opts;

CMK_API void cmk_store_opts_init(cmk_store_opts *o);

/* Opens the store in dir. Sweeps leftovers of interrupted writes. The KEK is contacted to
 * unwrap the DEKs; if that fails with a key-access error the store still opens (so its
 * status can be shown) but every read and write fails with that error until access comes
 * back (see cmk_store_check_key). opts may be NULL. Every file in dir is opened relative to
 * it without following symbolic links: a link there is CMK_E_REFUSED ("... is a symbolic
 * link ...").
 * Errors: CMK_E_NOT_FOUND (no store), CMK_E_CORRUPT (store.json or keyring.json damaged or
 * missing: the message names the file), CMK_E_UNSUPPORTED (store format), CMK_E_REFUSED
 * (links, a recorded home that is not the user's), CMK_E_IO. On failure *out is NULL and
 * nothing is held. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_open(const char *dir, const cmk_store_opts *opts,
                                              cmk_store **out);
/* Stops background work, zeroizes every DEK and frees the store. NULL is a no-op. Every put
 * and get handle of the store must be finished first. Cannot fail. */
CMK_API void cmk_store_close(cmk_store *s);

/* ---- writing a blob -------------------------------------------------------------------- */

/* Starts a streaming put. digest_alg: NULL or "sha256" (default), or "sha512". Nothing is
 * visible in the store until cmk_put_commit succeeds.
 * Errors: key-access errors (the store cannot reach its KEK), CMK_E_UNSUPPORTED (digest
 * algorithm), CMK_E_IO / CMK_E_NOSPACE (temporary file). On failure *out is NULL. */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_begin(cmk_store *s, const char *digest_alg, cmk_put **out);
/* Appends len bytes of plaintext.
 * Errors: key-access errors (also when access was lost and came back since the put began:
 * the put's key is wiped then), CMK_E_IO / CMK_E_NOSPACE, CMK_E_CRYPTO. A failure is sticky:
 * the put has failed, every later write or park returns the same error and commit returns it
 * too (and frees the handle); abort or commit it, then begin a new put. */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_write(cmk_put *p, const void *buf, size_t len);
/* Finishes the blob and publishes it atomically (temp file, fsync, rename, directory fsync).
 * Errors: the put's sticky error, CMK_E_DIGEST, key-access errors, CMK_E_IO / CMK_E_NOSPACE,
 * and those of the check of an existing copy (below); on any failure nothing is published.
 * If expected_digest is not NULL and differs from the content's digest, nothing is
 * published and CMK_E_DIGEST is returned. digest_out (may be NULL) receives the digest.
 * Always frees p, whether it succeeds or not. Putting a blob that already exists reads the
 * stored copy once to check it: an intact copy is left in place, one that fails its check
 * (CMK_E_INTEGRITY, CMK_E_CORRUPT, CMK_E_UNSUPPORTED) is replaced atomically by the new one.
 * Any other failure of that check (key access, I/O) fails the put. */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_commit(cmk_put *p, const char *expected_digest,
                                              char digest_out[CMK_DIGEST_MAX]);
/* Commits several puts together so their fsyncs are issued as one batch (each file and the
 * directories are still made durable before this returns). results[i] receives each put's
 * outcome; the return value is the first failure or CMK_OK. Frees every handle. */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_commit_many(cmk_put **puts,
                                                   const char *const *expected_digests, size_t n,
                                                   cmk_err *results,
                                                   char (*digests_out)[CMK_DIGEST_MAX]);
/* Discards the put; nothing is published (its temporary file is removed). Frees p. NULL is a
 * no-op. */
CMK_API void cmk_put_abort(cmk_put *p);
/* Plaintext bytes written so far. */
CMK_API uint64_t cmk_put_size(const cmk_put *p);
/* Hands the store every chunk already complete, for a caller about to wait for more input
 * (a pipe that paused): waits until the chunks being sealed are sealed and passed to the
 * store's sink (an object store's upload may start or a part go), not until the store has
 * written them. Without it, chunks sealed while the caller waits are passed on at its next
 * write. The chunk being filled stays (it cannot be sealed before the blob's end is known).
 * Errors: the put's sticky error, and those of cmk_put_write. */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_drain(cmk_put *p);
/* Parks a put between writes (a registry upload session waiting for its next request): waits
 * for the chunks in flight, then gives back its chunk buffers, its I/O engine and its digest
 * thread. A chunk not yet complete (it cannot be sealed before the blob's end is known) is
 * kept in a small buffer if it fits, else sealed under the blob's key into its temporary
 * file and read back at the next write. The next cmk_put_write or commit takes what it needs
 * again. On failure the put has failed (its later calls return the same error). */
CMK_API CMK_MUST_CHECK cmk_err cmk_put_park(cmk_put *p);
/* Bytes of chunk buffers a put of len bytes (UINT64_MAX: unknown) may hold while it streams:
 * what a server budgets per upload request. */
CMK_API size_t cmk_put_memory(const cmk_store *s, uint64_t len);

/* ---- reading a blob -------------------------------------------------------------------- */

typedef struct cmk_blob_info {
    char digest[CMK_DIGEST_MAX];
    uint64_t size;        /* plaintext bytes */
    uint64_t stored_size; /* bytes on disk */
    uint32_t chunk_size;
    uint64_t chunk_count;
    uint32_t dek_id;
    uint16_t format_version;
    int64_t mtime; /* seconds since the epoch */
} cmk_blob_info;

#define CMK_TO_END UINT64_MAX

/* Opens blob `digest` for reading bytes [offset, offset+length) (length CMK_TO_END: to the
 * end). Only the chunks covering the range are read and decrypted. Every byte returned has
 * been authenticated; a blob that fails authentication yields CMK_E_INTEGRITY or
 * CMK_E_CORRUPT and no data from the failing chunk. CMK_E_RANGE if offset > size.
 * Errors: CMK_E_NOT_FOUND (no such blob), CMK_E_INTEGRITY / CMK_E_CORRUPT (header or index),
 * CMK_E_UNSUPPORTED (format version), key-access errors, CMK_E_RANGE, CMK_E_IO. On failure
 * *out is NULL. */
CMK_API CMK_MUST_CHECK cmk_err cmk_get_open(cmk_store *s, const char *digest, uint64_t offset,
                                            uint64_t length, cmk_get **out);
/* Reads up to cap bytes into buf; *n receives the count, 0 at the end of the range.
 * Errors: CMK_E_INTEGRITY / CMK_E_CORRUPT (a chunk failed its check: nothing of it is
 * returned), key-access errors (access lost while reading), CMK_E_IO. A failure is sticky:
 * later reads return the same error and no data. To retry (after a transient I/O or key
 * error), close the handle and open the blob again at the offset reached. */
CMK_API CMK_MUST_CHECK cmk_err cmk_get_read(cmk_get *g, void *buf, size_t cap, size_t *n);
/* The blob's description, read and authenticated at open. The pointer is valid until
 * cmk_get_close(g); NULL for a NULL g. */
CMK_API const cmk_blob_info *cmk_get_info(const cmk_get *g);
/* Frees g and its buffers. NULL is a no-op. */
CMK_API void cmk_get_close(cmk_get *g);

/* ---- other blob operations ------------------------------------------------------------- */

/* Reads and authenticates the blob's header and index (no chunk is decrypted).
 * Errors: as cmk_get_open. */
CMK_API CMK_MUST_CHECK cmk_err cmk_stat(cmk_store *s, const char *digest, cmk_blob_info *out);
/* Decrypts every chunk and recomputes the digest.
 * Errors: as cmk_get_open and cmk_get_read, and CMK_E_DIGEST (content differs from the
 * digest it is stored under). */
CMK_API CMK_MUST_CHECK cmk_err cmk_verify(cmk_store *s, const char *digest, cmk_blob_info *out);
/* Removes the blob (durably). Requires key access as writes do.
 * Errors: CMK_E_NOT_FOUND (absent), key-access errors, CMK_E_IO. */
CMK_API CMK_MUST_CHECK cmk_err cmk_delete(cmk_store *s, const char *digest);
/* Calls cb for every blob (digest only, from the directory tree: no decryption); a non-zero
 * return from cb stops the walk and is passed through as CMK_E_INVAL-free success.
 * Errors: CMK_E_IO (a directory of the store cannot be read). */
CMK_API CMK_MUST_CHECK cmk_err cmk_list(cmk_store *s, int (*cb)(const char *digest, void *arg),
                                        void *arg);

/* What cmk_store_sweep deleted (or, with CMK_SWEEP_DRY_RUN, would delete). */
typedef struct cmk_sweep_info {
    uint64_t objects;         /* stored objects no blob name reaches (s3://: data objects) */
    uint64_t bytes;           /* their bytes as stored */
    uint64_t uploads_aborted; /* incomplete multipart uploads (s3://) */
} cmk_sweep_info;
#define CMK_SWEEP_DRY_RUN 1u /* count only; nothing is deleted */
/* Deletes what writers that died or lost a race left in the store and no blob name reaches,
 * safely while other processes write to it: on s3:// stores, incomplete multipart uploads
 * and completed data objects no link object names, both only once older than
 * CMKSTORE_S3_ORPHAN_GRACE seconds (default 86400), which must be far longer than any put
 * takes. It reads every blob's link object (one request per large blob), so it belongs in a
 * collection, not in every open. A directory store leaves nothing of the kind (every open
 * removes a dead writer's temporaries): CMK_OK, nothing counted. *out receives what was done,
 * also on failure. Requires key access as writes do (not for a dry run).
 * Errors: CMK_E_IO, CMK_E_CORRUPT (a link object cannot be read: nothing is deleted),
 * CMK_E_INVAL (CMKSTORE_S3_ORPHAN_GRACE is not a number of seconds), key-access errors. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_sweep(cmk_store *s, unsigned flags, cmk_sweep_info *out);

/* ---- encryption status and key lifecycle ----------------------------------------------- */

typedef struct cmk_encryption_info {
    int cmk_enabled;           /* 1: customer-managed key ("status": "enabled") */
    char identity[CMK_ID_MAX]; /* clientId (user-assigned) or principalId (system) */
    char identity_principal[CMK_ID_MAX];
    char identity_kind[24];          /* "UserAssigned" or "SystemAssigned" */
    char key_identifier[CMK_ID_MAX]; /* as configured: versioned or versionless */
    char versioned_key_identifier[CMK_ID_MAX];
    int key_rotation_enabled;  /* versionless key id: automatic rotation */
    int64_t last_key_rotation; /* seconds since the epoch, 0: never rotated */
    uint32_t rotation_check_interval_s;
    uint32_t key_check_interval_s;
    uint32_t unreachable_grace_s;
    char wrap_algorithm[32]; /* "RSA-OAEP-256" or "RSA-OAEP" */
    unsigned dek_count;
    uint32_t current_dek;
    int key_accessible; /* 1 if the last key check succeeded */
    cmk_err key_error;  /* why not, if not */
    char key_error_msg[1024];
    int64_t last_key_check;
    uint32_t dek_rollover_blobs; /* UINT32_MAX: never */
    int key_unreachable_since;   /* seconds the vault has not answered (grace) */
    uint64_t key_checks;         /* key checks run by this handle since it was opened */
    cmk_err key_check_error;     /* the last check's own error, CMK_OK if it verified an unwrap:
                                    e.g. CMK_E_CORRUPT for a damaged vault file while the store
                                    coasts through the grace period as unreachable */
} cmk_encryption_info;

/* Fills *out with the encryption status (no vault call: the state of the last check).
 * Errors: none beyond CMK_E_INVAL. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_encryption(cmk_store *s, cmk_encryption_info *out);

/* Rewraps every DEK under key_id (a new version, another key, or a key in another vault) as
 * `identity` (an identity assigned to the store: id, name, principalId or clientId, or
 * "[system]"; NULL: keep the current one). The new key version is adopted only after a test
 * wrap and unwrap with it succeed; the keyring is replaced atomically. A versionless key_id
 * turns automatic rotation on, a versioned one turns it off. No blob is read or written.
 * CMK_E_REFUSED on a store without a customer-managed key; CMK_E_KEY_UNSUPPORTED for keys
 * other than RSA / RSA-HSM; key-access errors if the current or the new key is out of reach
 * (the store is unchanged then); CMK_E_NOT_FOUND (identity or key), CMK_E_IO. The store
 * lock is waited for. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_rotate_key(cmk_store *s, const char *key_id,
                                                    const char *identity);

/* Checks key access now: picks up keyring changes made by other processes, confirms the
 * identity can still get and unwrap with the key version in use (zeroizing every cached DEK
 * on a denial, restoring them when access is back), and, for a versionless key id whose
 * rotation check is due (or when force_rotation_check > 0), rotates to a newer version if the
 * vault has one; the first check in a process is always due; force_rotation_check < 0 skips
 * the rotation check. *rotated (may be NULL) is set to 1 if a rotation happened. Returns the
 * key-access error when access is lost (the store then refuses reads and writes until a
 * later check succeeds); CMK_E_CORRUPT or CMK_E_IO for a damaged or unreadable keyring count
 * as an unreachable vault (grace period). */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_check_key(cmk_store *s, int force_rotation_check,
                                                   int *rotated);

/* Starts a background thread that runs cmk_store_check_key every key-check interval (and the
 * rotation check every rotation-check interval) until cmk_store_stop_background or
 * cmk_store_close. Already running: CMK_OK. Errors: CMK_E_NOMEM (no thread). */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_start_background(cmk_store *s);
CMK_API void cmk_store_stop_background(cmk_store *s);

/* Starts a new DEK for new writes (old blobs keep theirs); *new_id (may be NULL) gets its
 * id. Errors: key-access errors (the new DEK must be wrapped), CMK_E_IO / CMK_E_NOSPACE
 * (keyring). On failure the current DEK stays in use. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_rotate_dek(cmk_store *s, uint32_t *new_id);

/* Changes the intervals (0: leave unchanged; rotation and key checks 1 s .. 1 day, grace
 * 0 s .. 1 day) and the DEK rollover policy (roll a new DEK after this many blobs written by
 * one process; 0: leave unchanged, UINT32_MAX: never). Persisted in store.json.
 * Errors: CMK_E_INVAL (out of range: nothing is changed), CMK_E_IO / CMK_E_NOSPACE. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_set_policy(cmk_store *s, uint32_t rotation_check_s,
                                                    uint32_t key_check_s, uint32_t grace_s,
                                                    uint32_t dek_rollover_blobs);

/* ---- identities assigned to the store ------------------------------------------------- */

typedef struct cmk_store_identity {
    char kind[24]; /* "SystemAssigned" or "UserAssigned" */
    char id[CMK_ID_MAX];
    char principal[40];
    char client[40];
    int used_for_encryption;
} cmk_store_identity;

/* Lists the identities assigned to the store (at most cap; *n receives the total).
 * Errors: none beyond CMK_E_INVAL. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_identities(cmk_store *s, cmk_store_identity *out,
                                                    size_t cap, size_t *n);
/* Assigns an identity ("[system]" enables the system-assigned one).
 * Errors: CMK_E_NOT_FOUND (no such identity in the home), CMK_E_IO / CMK_E_NOSPACE. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_identity_assign(cmk_store *s, const char *identity);
/* Removes an identity; CMK_E_REFUSED if encryption uses it (assign it again, or rotate to
 * another identity first); CMK_E_NOT_FOUND (not assigned), CMK_E_IO. */
CMK_API CMK_MUST_CHECK cmk_err cmk_store_identity_remove(cmk_store *s, const char *identity);

/* ---- small encrypted records (registry metadata) ------------------------------------- */

/* Named records of at most CMK_META_MAX bytes (repository, tag and manifest metadata of a
 * registry), sealed like blobs under the store's current DEK and kept in <dir>/meta/ with
 * their names hidden: a record's file name is a keyed hash (HMAC) of its name. Writes are
 * atomic and durable. Key access is required as for blobs. */
#define CMK_META_MAX (4u << 20)

/* Reads record `name`; *val (malloc'd, free with cmk_free) and *len receive its value.
 * CMK_E_NOT_FOUND if absent. Errors also: key-access errors, CMK_E_INTEGRITY /
 * CMK_E_CORRUPT (a damaged record), CMK_E_IO. */
CMK_API CMK_MUST_CHECK cmk_err cmk_meta_get(cmk_store *s, const char *name, void **val,
                                            size_t *len);
/* Creates or replaces record `name`. Errors: CMK_E_INVAL (larger than CMK_META_MAX),
 * key-access errors, CMK_E_IO / CMK_E_NOSPACE (the old value stays). */
CMK_API CMK_MUST_CHECK cmk_err cmk_meta_put(cmk_store *s, const char *name, const void *val,
                                            size_t len);
/* Removes record `name`; CMK_E_NOT_FOUND if absent; key-access errors, CMK_E_IO. */
CMK_API CMK_MUST_CHECK cmk_err cmk_meta_delete(cmk_store *s, const char *name);
/* Atomic read-modify-write across threads and processes: fn gets the current value (NULL,
 * 0 if absent) and sets *out / *outlen to the new value (malloc'd; the store frees it), or
 * *out = NULL to delete the record, or returns an error to leave it unchanged (passed
 * through). fn may be called more than once: when another writer (thread or process: no
 * lock is taken) wrote the record between the read and the write, it is read again
 * and fn applied to the new value; fn's result must depend only on its arguments.
 * Errors also: as cmk_meta_get and cmk_meta_put; CMK_E_BUSY if the record kept changing
 * under 64 tries. */
typedef cmk_err (*cmk_meta_fn)(const void *cur, size_t curlen, void **out, size_t *outlen,
                               void *arg);
CMK_API CMK_MUST_CHECK cmk_err cmk_meta_update(cmk_store *s, const char *name, cmk_meta_fn fn,
                                               void *arg);
/* Calls cb for every record whose name starts with prefix ("" for all); names come from the
 * decrypted records. A non-zero return from cb stops the walk.
 * Errors: key-access errors, CMK_E_INTEGRITY / CMK_E_CORRUPT (a damaged record stops the
 * walk), CMK_E_IO. */
CMK_API CMK_MUST_CHECK cmk_err cmk_meta_list(cmk_store *s, const char *prefix,
                                             int (*cb)(const char *name, void *arg), void *arg);
/* Frees memory returned by the library. */
CMK_API void cmk_free(void *p);

/* Resources a long-running process watches (cmkstore serve's /metrics). */
typedef struct cmk_store_resources {
    /* Counts key-access losses: when it changes, every put begun before has failed and a
     * caller holding puts between writes (upload sessions) should abort them. */
    uint64_t access_generation;
    unsigned io_open;   /* I/O engines (io_uring instances) open: in use or cached */
    unsigned io_cached; /* of them, idle in the store's cache (bounded) */
    size_t buf_cached;  /* bytes of chunk buffers kept for reuse */
} cmk_store_resources;
CMK_API void cmk_store_resources_get(cmk_store *s, cmk_store_resources *out);
/* Gives back what an idle store keeps for speed: cached I/O engines and chunk buffers, and
 * the heap's free memory to the system (malloc_trim). For a server with no request in
 * flight; streams still open keep theirs. */
CMK_API void cmk_store_trim(cmk_store *s);

/* Reads the event log of the store `store` (a directory, or s3://BUCKET[/PREFIX]) without
 * opening it, so with no key access at all (a revoked key is when the log matters): cb gets
 * every event (one JSON object, without a newline) written after *cursor, in order, and
 * *cursor is left after the last one delivered, so calling again with it gives only newer
 * events (follow). cursor: cap >= CMK_EVENTS_CURSOR_MAX bytes, "" to start from the first.
 * A nonzero return of cb stops. Errors: CMK_E_NOT_FOUND (no store; a store without events
 * yet is not an error), CMK_E_REFUSED (the log is a symbolic link), CMK_E_IO, CMK_E_INVAL
 * (bad name or cursor). Nothing of the store changes (an open of a directory store sweeps
 * crashed writers' leftovers, as every open does). */
#define CMK_EVENTS_CURSOR_MAX 256
CMK_API cmk_err cmk_store_events_read(const char *store, char *cursor, size_t cap,
                                      int (*cb)(const char *event, size_t len, void *arg),
                                      void *arg);

/* Store identifier (a UUID) and the directory it was opened from. */
CMK_API const char *cmk_store_id(const cmk_store *s);
CMK_API const char *cmk_store_dir(const cmk_store *s);

#ifdef __cplusplus
}
#endif
#endif /* CMKSTORE_H */
