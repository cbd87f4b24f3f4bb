/*
 * registry_policy.h — the registry's storage policy: when a stored blob belongs to a
 * repository. No HTTP here; the handlers map the results to responses.
 *
 * A blob is visible in a repository once pushed or mounted into it (a link in the repository
 * record, registry_meta.h). Deletes only unlink (a blob link, a manifest, a tag: one record
 * update each, whatever the number of repositories); stored blobs leave the store through
 * garbage collection (registry_gc.h), which every link here is ordered against by
 * rgc_protect after its record is written: a link to a blob that a collection is deleting
 * fails with CMK_E_BUSY and is undone.
 *
 * Errors: the store's codes. When eb is given it receives the message of a lock failure and
 * of a refused link; other failures leave their message in cmk_errmsg(). Every function
 * is thread-safe (the store's functions are).
 */
#ifndef CMK_REGISTRY_POLICY_H
#define CMK_REGISTRY_POLICY_H

#include <jansson.h>
#include <sys/file.h>

#include "cmkstore.h"
#include "cmkstore_kek.h"

/* Files in the store's directory, created 0600 and never opened through a symbolic link.
 * RPOLICY_SERVE_LOCK is held by a running `cmkstore serve`. RPOLICY_GC_LOCK is no longer
 * taken by the registry (collection orders itself by records, registry_gc.h); kept for the
 * callers outside it that may still use a named flock. */
#define RPOLICY_GC_LOCK    "registry.lock"
#define RPOLICY_SERVE_LOCK "serve.lock"

/* flock(op) on the store's file `name` (op: LOCK_SH or LOCK_EX, optionally | LOCK_NB);
 * *fd receives the descriptor for rpolicy_unlock (-1 on failure). CMK_E_BUSY if LOCK_NB and
 * held elsewhere; CMK_E_REFUSED if the file is a symbolic link; CMK_E_IO. */
cmk_err rpolicy_lock_file(cmk_store *s, const char *name, int op, int *fd, cmk_errbuf *eb);
/* The collection lock: rpolicy_lock_file(s, RPOLICY_GC_LOCK, op, fd, eb). */
cmk_err rpolicy_lock(cmk_store *s, int op, int *fd, cmk_errbuf *eb);
/* Releases and closes; -1 is a no-op. */
void rpolicy_unlock(int fd);

/* Commits put (consumed, whatever happens) against expected (NULL: no check) and links the
 * blob into repo; a blob stored anew is added to the usage counters. digest receives the
 * blob's digest. CMK_E_DIGEST if the content does not match expected (nothing stored);
 * CMK_E_BUSY if a collection is deleting that very content (retry). */
cmk_err rpolicy_commit_blob(cmk_store *s, const char *repo, cmk_put *put, const char *expected,
                            char digest[CMK_DIGEST_MAX], cmk_errbuf *eb);

/* Links blob digest into repo if it may be mounted: with from, when from links it with the
 * stored size; without, when the store holds it; never a blob a collection is deleting.
 * CMK_E_NOT_FOUND if it may not (nothing changed). */
cmk_err rpolicy_mount(cmk_store *s, const char *repo, const char *digest, const char *from,
                      cmk_errbuf *eb);

/* After rmeta_put_manifest of digest (entry: its record entry, with "refs"): keeps the
 * manifest and what it names from a running collection. CMK_E_BUSY (the manifest is removed
 * again) if the collection is deleting one of them. */
cmk_err rpolicy_protect_manifest(cmk_store *s, const char *repo, const char *digest,
                                 const json_t *entry, cmk_errbuf *eb);

/* Removes the link of blob digest from repo (the stored blob stays until a collection).
 * CMK_E_NOT_FOUND if repo does not link digest. */
cmk_err rpolicy_unlink_blob(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb);
/* Removes manifest digest and its tags from repo. CMK_E_NOT_FOUND if repo has no such
 * manifest. */
cmk_err rpolicy_delete_manifest(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb);
/* Removes tag from repo (its manifest stays). CMK_E_NOT_FOUND. */
cmk_err rpolicy_delete_tag(cmk_store *s, const char *repo, const char *tag, cmk_errbuf *eb);

#endif
