/*
 * registry_policy.c — links, mounts and collection of the registry's blobs, ordered by the
 * collection lock (registry_policy.h).
 */
#include "tools/serve/registry_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tools/serve/registry_meta.h"

cmk_err rpolicy_lock_file(cmk_store *s, const char *name, int op, int *fd, cmk_errbuf *eb)
{
    char path[4200];
    int lfd, e;

    *fd = -1;
    /* A store in object storage has no directory to hold a lock file, and any number of
     * front-ends share it: its records are written by compare-and-swap instead (README,
     * "Object storage and several front-ends"). */
    if (strncmp(cmk_store_dir(s), "s3://", 5) == 0)
        return CMK_OK;
    snprintf(path, sizeof(path), "%s/%s", cmk_store_dir(s), name);
    /* O_NOFOLLOW: whoever can write the store must not point the lock at another file. */
    lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) {
        e = errno;
        return cmk_errbuf_set(eb, e == ELOOP ? CMK_E_REFUSED : CMK_E_IO, "cannot open %s: %s%s",
                              path, strerror(e), e == ELOOP ? " (a symbolic link)" : "");
    }
    while (flock(lfd, op) != 0) {
        e = errno;
        if (e == EINTR)
            continue;
        close(lfd);
        if (e == EWOULDBLOCK)
            return cmk_errbuf_set(eb, CMK_E_BUSY, "%s is locked by another process", path);
        return cmk_errbuf_set(eb, CMK_E_IO, "cannot lock %s: %s", path, strerror(e));
    }
    *fd = lfd;
    return CMK_OK;
}

void rpolicy_unlock(int fd)
{
    if (fd >= 0) {
        (void)flock(fd, LOCK_UN);
        close(fd);
    }
}

cmk_err rpolicy_lock(cmk_store *s, int op, int *fd, cmk_errbuf *eb)
{
    return rpolicy_lock_file(s, RPOLICY_GC_LOCK, op, fd, eb);
}

cmk_err rpolicy_commit_blob(cmk_store *s, const char *repo, cmk_put *put, const char *expected,
                            char digest[CMK_DIGEST_MAX], cmk_errbuf *eb)
{
    uint64_t size = cmk_put_size(put);
    int lk;
    cmk_err rc;

    rc = rpolicy_lock(s, LOCK_SH, &lk, eb);
    if (rc != CMK_OK) {
        cmk_put_abort(put);
        return rc;
    }
    rc = cmk_put_commit(put, expected, digest);
    if (rc == CMK_OK)
        rc = rmeta_link_blob(s, repo, digest, size);
    rpolicy_unlock(lk);
    return rc;
}

/* The size of blob digest as linked by repo from, checked against the store. */
static cmk_err linked_size(cmk_store *s, const char *from, const char *digest, uint64_t *size)
{
    json_t *rec = NULL;
    cmk_blob_info bi;
    cmk_err rc = rmeta_load(s, from, &rec);

    if (rc == CMK_OK && !rmeta_blob(rec, digest, size))
        rc = CMK_E_NOT_FOUND;
    if (rc == CMK_OK)
        rc = cmk_stat(s, digest, &bi);
    if (rc == CMK_OK && bi.size != *size)
        rc = CMK_E_NOT_FOUND;
    json_decref(rec);
    return rc;
}

/* The size of blob digest if the store holds it and a repository references it. */
static cmk_err referenced_size(cmk_store *s, const char *digest, uint64_t *size)
{
    cmk_blob_info bi;
    int used = 0;
    cmk_err rc = cmk_stat(s, digest, &bi);

    if (rc == CMK_OK)
        rc = rmeta_is_referenced(s, digest, &used);
    if (rc == CMK_OK && !used)
        rc = CMK_E_NOT_FOUND;
    if (rc == CMK_OK)
        *size = bi.size;
    return rc;
}

cmk_err rpolicy_mount(cmk_store *s, const char *repo, const char *digest, const char *from,
                      cmk_errbuf *eb)
{
    uint64_t size = 0;
    int lk;
    cmk_err rc;

    rc = rpolicy_lock(s, LOCK_SH, &lk, eb);
    if (rc != CMK_OK)
        return rc;
    /* No "from": the spec lets a registry find the blob itself. Every client is authorised
     * for every repository here, so this reveals nothing a client could not read anyway. */
    rc = from ? linked_size(s, from, digest, &size) : referenced_size(s, digest, &size);
    if (rc == CMK_OK)
        rc = rmeta_link_blob(s, repo, digest, size);
    rpolicy_unlock(lk);
    return rc;
}

cmk_err rpolicy_collect(cmk_store *s, const char *digest)
{
    int used = 0;
    cmk_err rc = rmeta_is_referenced(s, digest, &used);

    if (rc != CMK_OK || used)
        return rc;
    rc = cmk_delete(s, digest);
    return rc == CMK_E_NOT_FOUND ? CMK_OK : rc;
}

cmk_err rpolicy_unlink_blob(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb)
{
    json_t *rec = NULL;
    uint64_t size = 0;
    int lk;
    cmk_err rc;

    rc = rpolicy_lock(s, LOCK_EX, &lk, eb);
    if (rc != CMK_OK)
        return rc;
    rc = rmeta_load(s, repo, &rec);
    if (rc == CMK_OK && !rmeta_blob(rec, digest, &size))
        rc = CMK_E_NOT_FOUND;
    if (rc == CMK_OK)
        rc = rmeta_unlink_blob(s, repo, digest);
    if (rc == CMK_OK) {
        rc = rpolicy_collect(s, digest);
        /* All or nothing: a delete that fails leaves the link, so the blob stays visible
         * and is collected by the delete the client retries (none is left unreferenced
         * and never collected). */
        if (rc != CMK_OK) {
            cmk_errbuf_set(eb, rc, "%s", cmk_errmsg());
            if (rmeta_link_blob(s, repo, digest, size) != CMK_OK)
                fprintf(stderr,
                        "cmkstore serve: cannot restore the link of %s in %s after a "
                        "failed delete: %s\n",
                        digest, repo, cmk_errmsg());
        }
    }
    rpolicy_unlock(lk);
    json_decref(rec);
    return rc;
}

/* Deletes manifest digest (tag NULL) or tag from repo under the exclusive lock; a deleted
 * manifest's blob is collected if nothing references it any more. */
static cmk_err delete_ref(cmk_store *s, const char *repo, const char *digest, const char *tag,
                          cmk_errbuf *eb)
{
    int lk;
    cmk_err rc;

    rc = rpolicy_lock(s, LOCK_EX, &lk, eb);
    if (rc != CMK_OK)
        return rc;
    if (tag) {
        rc = rmeta_delete_tag(s, repo, tag);
    } else {
        rc = rmeta_delete_manifest(s, repo, digest);
        if (rc == CMK_OK)
            rc = rpolicy_collect(s, digest);
    }
    rpolicy_unlock(lk);
    return rc;
}

cmk_err rpolicy_delete_manifest(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb)
{
    return delete_ref(s, repo, digest, NULL, eb);
}

cmk_err rpolicy_delete_tag(cmk_store *s, const char *repo, const char *tag, cmk_errbuf *eb)
{
    return delete_ref(s, repo, NULL, tag, eb);
}
