/*
 * registry_policy.h — the registry's storage policy: when a stored blob belongs to a
 * repository, and when it may leave the store. No HTTP here; the handlers map the results to
 * responses, and `cmkstore blob rm` takes the same lock.
 *
 * A blob is visible in a repository once pushed or mounted into it (a link in the repository
 * record, registry_meta.h). Removing a link deletes the stored blob only when no repository
 * links it, holds it as a manifest, or has a manifest referring to it.
 *
 * The collection lock (RPOLICY_GC_LOCK, a flock on a file in the store's directory) orders
 * links against collection across threads and processes: whatever adds a link or a reference
 * (push, mount, manifest put) holds it shared from its check to its record update; whatever
 * may delete a stored blob (a registry DELETE, `cmkstore blob rm`) holds it exclusively. So a
 * delete never removes a blob that a concurrent push or mount has just linked. Each lock call
 * opens its own descriptor, so two handles of one process exclude each other as two processes
 * do.
 *
 * Errors: the store's codes. When eb is given it receives the message of a lock failure and
 * of a failed collection; other failures leave their message in cmk_errmsg(). Every function
 * is thread-safe (the store's functions are).
 */
#ifndef CMK_REGISTRY_POLICY_H
#define CMK_REGISTRY_POLICY_H

#include <sys/file.h>

#include "cmkstore.h"
#include "cmkstore_kek.h"

/* Files in the store's directory, created 0600 and never opened through a symbolic link.
 * RPOLICY_SERVE_LOCK is held by a running `cmkstore serve`. */
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
 * blob into repo, under the shared lock. digest receives the blob's digest. CMK_E_DIGEST if
 * the content does not match expected (nothing stored). */
cmk_err rpolicy_commit_blob(cmk_store *s, const char *repo, cmk_put *put, const char *expected,
                            char digest[CMK_DIGEST_MAX], cmk_errbuf *eb);

/* Links blob digest into repo if it may be mounted: with from, when from links it with the
 * stored size; without, when the store holds it and some repository references it (never a
 * blob awaiting collection). CMK_E_NOT_FOUND if it may not (nothing changed). */
cmk_err rpolicy_mount(cmk_store *s, const char *repo, const char *digest, const char *from,
                      cmk_errbuf *eb);

/* Removes the link of blob digest from repo and collects the blob if nothing references it
 * any more, under the exclusive lock. All or nothing: if the collection fails the link is
 * restored (the blob stays visible, and the retried delete collects it). CMK_E_NOT_FOUND if
 * repo does not link digest. */
cmk_err rpolicy_unlink_blob(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb);

/* Removes manifest digest and its tags from repo and collects its blob if nothing references
 * it any more, under the exclusive lock. CMK_E_NOT_FOUND if repo has no such manifest. */
cmk_err rpolicy_delete_manifest(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb);
/* Removes tag from repo (its manifest stays), under the exclusive lock. CMK_E_NOT_FOUND. */
cmk_err rpolicy_delete_tag(cmk_store *s, const char *repo, const char *tag, cmk_errbuf *eb);

/* Deletes digest from the store unless a repository links it, holds it as a manifest or has
 * a manifest referring to it. The caller holds the collection lock exclusively. CMK_OK also
 * when the blob was referenced (kept) or was not stored. */
cmk_err rpolicy_collect(cmk_store *s, const char *digest);

#endif
