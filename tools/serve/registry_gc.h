/*
 * registry_gc.h — garbage collection of the registry's blobs, safe while pushes go on and
 * with several front-ends on one store, without a cross-process lock: every step that must
 * not interleave goes through compare-and-swap writes of records (cmk_meta_update).
 *
 * Marking reads every repository record: a blob is live if a manifest is it or names it
 * (config, layers, index entries), or if a repository linked it less than the grace period
 * ago (a push whose manifest is still to come), or if an upload session saved for a restart
 * holds it as a part. A stored blob that is not live and was
 * written more than the grace period ago is a candidate. With delete_untagged, manifests
 * that no tag reaches (directly, through an index, or as a referrer of a reached manifest)
 * and that were pushed more than the grace period ago are deleted first.
 *
 * The sweep against concurrent links, through one record, RGC_STATE:
 *   1. mark; the candidates are written into the state as "doomed";
 *   2. mark again: candidates that became live are dropped;
 *   3. the rest move from "doomed" to "claimed" in one write;
 *   4. their links are removed from the repositories, the blobs deleted, the state cleared.
 * Whoever links or references a blob (push, mount, manifest put) writes its record first,
 * then calls rgc_protect: a doomed blob is taken out of "doomed" (so step 3 cannot claim
 * it), a claimed one makes the link fail with CMK_E_BUSY (the caller undoes its link and
 * the client retries). A link written before step 1's state write is seen by step 2's mark;
 * one written after it sees the state. One collection runs at a time: the state record is
 * created only if absent (or left by a collection that stopped RGC_STALE_S ago).
 *
 * Usage (quotas): RGC_USAGE holds the bytes of the blobs the store holds, as pushed
 * (plaintext sizes): pushes add what they store anew, collection recomputes it from the
 * store. A push during a collection, or two concurrent pushes of the same new blob, may be
 * counted twice until the next one (an over-count: quotas err on the refusing side).
 *
 * Errors: the store's codes; eb receives the message where given.
 */
#ifndef CMK_REGISTRY_GC_H
#define CMK_REGISTRY_GC_H

#include <jansson.h>
#include <stdint.h>

#include "cmkstore.h"

#define RGC_STATE     "registry/gc"
#define RGC_USAGE     "registry/usage"
#define RGC_STALE_S   900 /* a state older than this is a collection that stopped: taken over */
#define RGC_GRACE_DEF 3600
/* Records of upload sessions saved for a restart; their "parts" are live (registry_upload.c). */
#define RGC_UPLOAD_PREFIX "upload/"

typedef struct rgc_opts {
    int64_t grace_s;     /* blobs and links younger than this survive */
    int dry_run;         /* report only; nothing changes */
    int delete_untagged; /* also delete manifests no tag reaches */
} rgc_opts;

/* Runs one collection. *report (caller json_decref's; NULL on failure): {"dry_run",
 * "grace_s", "repositories", "blobs_stored", "blobs_freed", "bytes_freed",
 * "stored_bytes_freed", "manifests_deleted", "links_removed", "repositories_removed",
 * "blobs_young" (unreferenced, kept for the grace period), "rescued" (linked during the
 * collection), "orphans_deleted", "orphan_bytes_deleted", "orphan_uploads_aborted" (the
 * store's sweep of writers' leftovers, cmk_store_sweep, run last), "freed": [digests]}.
 * CMK_E_BUSY if another collection is running. A sweep that fails (a link object that cannot
 * be read) fails the run after the blobs were collected. */
cmk_err rgc_run(cmk_store *s, const rgc_opts *o, json_t **report, cmk_errbuf *eb);

/* Called after a record that links or references digests d[0..n) was written: takes them
 * out of a running collection's doomed set. CMK_E_BUSY if one is already claimed (being
 * deleted): the caller undoes its change and asks the client to retry. */
cmk_err rgc_protect(cmk_store *s, const char *const *d, size_t n, cmk_errbuf *eb);

/* Deletes one stored blob (`cmkstore blob rm`) through the same protocol: unless force, it
 * is refused with CMK_E_REFUSED when a repository links it, holds it as a manifest or has a
 * manifest naming it; *repos (may be NULL; caller json_decref's) then names them. A
 * concurrent link wins (CMK_E_BUSY). CMK_E_NOT_FOUND if not stored. With force, or when the
 * state record cannot be written for lack of space, no state is written (a full file system
 * refuses links too). The usage counters are left to the next collection. */
cmk_err rgc_remove_blob(cmk_store *s, const char *digest, int force, json_t **repos,
                        cmk_errbuf *eb);

/* The usage counters of RGC_USAGE (0, 0 if absent), plus this process's increments not yet
 * written. */
cmk_err rgc_usage_get(cmk_store *s, uint64_t *bytes, uint64_t *blobs);
/* Adds to them now (negative: subtracts, floored at 0). */
cmk_err rgc_usage_add(cmk_store *s, int64_t bytes, int64_t blobs);
/* Notes an increment, written by the next rgc_usage_flush (a server flushes every second and
 * when it stops; a collection flushes before it reads). Process-wide: one store per process. */
void rgc_usage_note(int64_t bytes, int64_t blobs);
cmk_err rgc_usage_flush(cmk_store *s);

#endif
