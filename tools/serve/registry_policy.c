/*
 * registry_policy.c — links, mounts and deletes of the registry's blobs (registry_policy.h);
 * collection is registry_gc.c's.
 */
#include "tools/serve/registry_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/serve/registry_gc.h"
#include "tools/serve/registry_meta.h"

/* Undo callbacks of protect(). */
static cmk_err rmeta_unlink_blob_cb(cmk_store *s, const char *repo, const char *digest)
{
    return rmeta_unlink_blob(s, repo, digest);
}

static cmk_err rmeta_delete_manifest_cb(cmk_store *s, const char *repo, const char *digest)
{
    return rmeta_delete_manifest(s, repo, digest);
}

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

/* After a link or reference to digests was written: keeps them from a running collection,
 * or undoes the change (undo) if one is deleting them already. */
static cmk_err protect(cmk_store *s, const char *const *d, size_t n, cmk_errbuf *eb,
                       cmk_err (*undo)(cmk_store *, const char *, const char *), const char *repo,
                       const char *digest)
{
    cmk_err rc = rgc_protect(s, d, n, eb);

    if (rc == CMK_E_BUSY && undo && undo(s, repo, digest) != CMK_OK)
        fprintf(stderr, "cmkstore serve: cannot undo the link of %s in %s: %s\n", digest, repo,
                cmk_errmsg());
    return rc;
}

cmk_err rpolicy_commit_blob(cmk_store *s, const char *repo, cmk_put *put, const char *expected,
                            char digest[CMK_DIGEST_MAX], cmk_errbuf *eb)
{
    uint64_t size = cmk_put_size(put);
    cmk_blob_info bi;
    int existed = 0;
    cmk_err rc;

    /* Whether the store held it before, for the usage counters (a blob stored anew adds). */
    if (expected && cmk_stat(s, expected, &bi) == CMK_OK)
        existed = 1;
    rc = cmk_put_commit(put, expected, digest);
    if (rc == CMK_OK)
        rc = rmeta_link_blob(s, repo, digest, size);
    if (rc == CMK_OK) {
        const char *d = digest;
        rc = protect(s, &d, 1, eb, rmeta_unlink_blob_cb, repo, digest);
    }
    if (rc == CMK_OK && !existed)
        rgc_usage_note((int64_t)size, 1);
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

cmk_err rpolicy_mount(cmk_store *s, const char *repo, const char *digest, const char *from,
                      cmk_errbuf *eb)
{
    uint64_t size = 0;
    cmk_blob_info bi;
    cmk_err rc;

    /* No "from": the spec lets a registry find the blob itself; the store holding it is
     * enough (one header read, whatever the number of repositories). */
    if (from) {
        rc = linked_size(s, from, digest, &size);
    } else {
        rc = cmk_stat(s, digest, &bi);
        size = bi.size;
    }
    if (rc == CMK_OK)
        rc = rmeta_link_blob(s, repo, digest, size);
    if (rc == CMK_OK)
        rc = protect(s, &digest, 1, eb, rmeta_unlink_blob_cb, repo, digest);
    /* A blob being collected is not mountable: the client uploads it instead. */
    return rc == CMK_E_BUSY ? CMK_E_NOT_FOUND : rc;
}

cmk_err rpolicy_protect_manifest(cmk_store *s, const char *repo, const char *digest,
                                 const json_t *entry, cmk_errbuf *eb)
{
    json_t *refs = json_object_get(entry, "refs"), *r;
    size_t n = 0, i;
    const char **d = calloc(json_array_size(refs) + 1, sizeof(*d));
    cmk_err rc;

    if (!d)
        return CMK_E_NOMEM;
    d[n++] = digest;
    json_array_foreach(refs, i, r)
    {
        if (json_is_string(r))
            d[n++] = json_string_value(r);
    }
    rc = protect(s, d, n, eb, rmeta_delete_manifest_cb, repo, digest);
    free(d);
    return rc;
}

cmk_err rpolicy_unlink_blob(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb)
{
    (void)eb;
    /* Unlink only: the stored blob goes at the next collection if nothing references it. */
    return rmeta_unlink_blob(s, repo, digest);
}

cmk_err rpolicy_delete_manifest(cmk_store *s, const char *repo, const char *digest, cmk_errbuf *eb)
{
    (void)eb;
    return rmeta_delete_manifest(s, repo, digest);
}

cmk_err rpolicy_delete_tag(cmk_store *s, const char *repo, const char *tag, cmk_errbuf *eb)
{
    (void)eb;
    return rmeta_delete_tag(s, repo, tag);
}
