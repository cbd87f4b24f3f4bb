/*
 * meta.c — small encrypted records: a registry's repositories, tags and manifest metadata.
 *
 * File <dir>/meta/<hh>/<hex>, where <hex> = HMAC-SHA256(name key, record name): names are
 * not visible on disk. The name key is HKDF(DEK 1, "cmkstore v1 meta names"), stable for
 * the store's life (DEK 1 is never dropped). Record layout:
 *
 *     0  magic "CMKSMETA"       8
 *     8  version (1)            u16
 *    10  reserved, zero         u16
 *    12  DEK id                 u32
 *    16  salt                   32
 *    48  ciphertext of (u32 name length || name || value)
 *     .  GCM tag                16
 *     .  xxh3-64 of everything before it
 *
 * key = HKDF(DEK, salt, "cmkstore v1 meta key" || DEK id), fresh salt per write, nonce 0
 * (the key is never reused). AAD = header [0, 48) || the file's name hash, so a record
 * cannot be moved under another name. The sealing is blobseal.c's; this file stores. Writes are
 * atomic (temp, fsync, rename, fsync dir) and serialised by a mutex and the flock <dir>/meta/lock.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/blobseal.h"
#include "core/base/bytes.h"
#include "core/base/fsutil.h"
#include "core/base/secmem.h"
#include "core/store_internal.h"

void cmk_free(void *p)
{
    free(p);
}

static cmk_err name_hash(cmk_store *s, const char *name, uint8_t out[32], cmk_errbuf *eb)
{
    uint8_t *dek = cmk_secalloc(CMK_DEK_LEN);
    cmk_err rc;

    if (!dek)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    rc = cmk_store_dek(s, 1, dek, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_blobseal_meta_name(dek, name, out, eb);
    cmk_secfree(dek);
    return rc;
}

/* The record's directory and file, relative to the store directory (opened under its fd,
 * never through a link). */
static void record_path(const uint8_t hash[32], char dir[8], char path[80])
{
    char hex[65];

    cmk_hex(hex, hash, 32);
    snprintf(dir, 8, "meta/%.2s", hex);
    snprintf(path, 80, "%s/%s", dir, hex);
}

/* Decrypts a record file's bytes; returns the name and value (pointers into *plain, which
 * the caller frees). hash: the record's name hash, bound into the AAD (from the name on a
 * read, from the file name when listing); never NULL. */
static cmk_err open_record(cmk_store *s, const uint8_t *buf, size_t len, const uint8_t hash[32],
                           uint8_t **plain, const char **name, size_t *namelen, const uint8_t **val,
                           size_t *vallen, cmk_errbuf *eb)
{
    uint8_t *dek = NULL;
    uint32_t dek_id;
    cmk_err rc;

    *plain = NULL;
    rc = cmk_blobseal_meta_peek(buf, len, &dek_id, eb);
    if (rc != CMK_OK)
        return rc;
    dek = cmk_secalloc(CMK_DEK_LEN);
    if (!dek)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    rc = cmk_store_dek(s, dek_id, dek, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_blobseal_meta_open(dek, buf, len, hash, plain, name, namelen, val, vallen, eb);
    cmk_secfree(dek);
    return rc;
}

static cmk_err read_record(cmk_store *s, const char *name, void **val, size_t *len, cmk_errbuf *eb)
{
    char dir[8], path[80];
    uint8_t hash[32], *plain = NULL;
    char *buf = NULL;
    const char *rname;
    const uint8_t *v;
    size_t blen, nl, vl;
    cmk_err rc;

    *val = NULL;
    *len = 0;
    rc = name_hash(s, name, hash, eb);
    if (rc != CMK_OK)
        return rc;
    record_path(hash, dir, path);
    rc =
        cmk_read_file_at(s->dirfd, s->dir, path,
                         CMK_META_MAX + CMK_META_OVERHEAD + 4 + CMK_META_NAME_MAX, &buf, &blen, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no metadata record '%s'", name);
    if (rc != CMK_OK)
        return rc;
    rc = open_record(s, (uint8_t *)buf, blen, hash, &plain, &rname, &nl, &v, &vl, eb);
    if (rc != CMK_OK)
        goto out;
    if (nl != strlen(name) || memcmp(rname, name, nl) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY, "metadata record holds another name");
        goto out;
    }
    *val = malloc(vl ? vl : 1);
    if (!*val) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    if (vl)
        memcpy(*val, v, vl);
    *len = vl;
out:
    free(plain);
    free(buf);
    return rc;
}

static cmk_err write_record(cmk_store *s, const char *name, const void *val, size_t len,
                            cmk_errbuf *eb)
{
    char dir[8], path[80];
    uint8_t hash[32], *dek = NULL, *buf = NULL;
    size_t total = 0;
    uint32_t dek_id = 0;
    cmk_err rc;

    rc = name_hash(s, name, hash, eb);
    if (rc != CMK_OK)
        return rc;
    record_path(hash, dir, path);
    dek = cmk_secalloc(CMK_DEK_LEN);
    if (!dek) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    rc = cmk_store_dek(s, 0, dek, &dek_id, eb);
    if (rc == CMK_OK)
        rc = cmk_blobseal_meta_seal(dek, dek_id, hash, name, val, len, &buf, &total, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_mkdir_at(s->dirfd, s->dir, dir, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_write_file_at(s->dirfd, s->dir, path, buf, total, 0600, eb);
out:
    cmk_secfree(dek);
    free(buf);
    return rc;
}

static cmk_err delete_record(cmk_store *s, const char *name, cmk_errbuf *eb)
{
    char dir[8], path[80];
    uint8_t hash[32];
    int dfd = -1;
    cmk_err rc = name_hash(s, name, hash, eb);

    if (rc != CMK_OK)
        return rc;
    record_path(hash, dir, path);
    rc = cmk_opendir_at(s->dirfd, s->dir, dir, &dfd, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no metadata record '%s'", name);
    if (rc != CMK_OK)
        return rc;
    if (unlinkat(dfd, path + strlen(dir) + 1, 0) != 0)
        rc = errno == ENOENT
                 ? cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no metadata record '%s'", name)
                 : cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot delete %s/%s", s->dir, path);
    else if (fsync(dfd) != 0)
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot fsync %s/%s", s->dir, dir);
    close(dfd);
    return rc;
}

static cmk_err check_name(const char *name, cmk_errbuf *eb)
{
    if (!name || !*name || strlen(name) > CMK_META_NAME_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad metadata record name");
    return CMK_OK;
}

/* Serialises writers: the mutex within the process, the flock across processes. */
static cmk_err meta_lock(cmk_store *s, int *fd, cmk_errbuf *eb)
{
    cmk_err rc;

    pthread_mutex_lock(&s->meta_mu);
    rc = cmk_lock_at(s->dirfd, s->dir, "meta/lock", 1, 1, fd, eb);
    if (rc != CMK_OK)
        pthread_mutex_unlock(&s->meta_mu);
    return rc;
}

static void meta_unlock(cmk_store *s, int fd)
{
    cmk_unlock(fd);
    pthread_mutex_unlock(&s->meta_mu);
}

cmk_err cmk_meta_get(cmk_store *s, const char *name, void **val, size_t *len)
{
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!s || !val || !len)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_get: NULL argument");
    rc = check_name(name, &eb);
    if (rc == CMK_OK)
        rc = read_record(s, name, val, len, &eb);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_meta_put(cmk_store *s, const char *name, const void *val, size_t len)
{
    cmk_errbuf eb = {0};
    int fd = -1;
    cmk_err rc;

    if (!s || (!val && len))
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_put: NULL argument");
    rc = check_name(name, &eb);
    if (rc == CMK_OK && len > CMK_META_MAX)
        rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "metadata record too large (%zu bytes)", len);
    if (rc == CMK_OK)
        rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = meta_lock(s, &fd, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    rc = write_record(s, name, val, len, &eb);
    meta_unlock(s, fd);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_meta_delete(cmk_store *s, const char *name)
{
    cmk_errbuf eb = {0};
    int fd = -1;
    cmk_err rc;

    if (!s)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_delete: NULL store");
    rc = check_name(name, &eb);
    if (rc == CMK_OK)
        rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = meta_lock(s, &fd, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    rc = delete_record(s, name, &eb);
    meta_unlock(s, fd);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_meta_update(cmk_store *s, const char *name, cmk_meta_fn fn, void *arg)
{
    cmk_errbuf eb = {0};
    void *cur = NULL, *out = NULL;
    size_t curlen = 0, outlen = 0;
    int fd = -1;
    cmk_err rc;

    if (!s || !fn)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_update: NULL argument");
    rc = check_name(name, &eb);
    if (rc == CMK_OK)
        rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = meta_lock(s, &fd, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    rc = read_record(s, name, &cur, &curlen, &eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(&eb);
        rc = CMK_OK;
    }
    if (rc != CMK_OK)
        goto out;
    rc = fn(cur, curlen, &out, &outlen, arg);
    if (rc != CMK_OK) {
        /* The callback's own error: keep the thread's detail it may have set. */
        meta_unlock(s, fd);
        free(cur);
        free(out);
        return rc;
    }
    if (out) {
        if (outlen > CMK_META_MAX)
            rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "metadata record too large");
        else
            rc = write_record(s, name, out, outlen, &eb);
    } else if (cur) {
        rc = delete_record(s, name, &eb);
    }
out:
    meta_unlock(s, fd);
    free(cur);
    free(out);
    return cmk_publish(&eb, rc);
}

static int is_hex64(const char *n)
{
    if (strlen(n) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return 0;
    return 1;
}

cmk_err cmk_meta_list(cmk_store *s, const char *prefix, int (*cb)(const char *name, void *arg),
                      void *arg)
{
    cmk_errbuf eb = {0};
    size_t plen = prefix ? strlen(prefix) : 0;
    char sub[16], path[96];
    DIR *d = NULL, *d2 = NULL;
    int fd;
    struct dirent *de, *de2;
    int stop = 0;
    cmk_err rc;

    if (!s || !cb)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_list: NULL argument");
    rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = cmk_opendir_at(s->dirfd, s->dir, "meta", &fd, &eb);
    if (rc == CMK_E_NOT_FOUND)
        return CMK_OK;
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return cmk_publish(&eb,
                           cmk_errbuf_sys(&eb, CMK_E_IO, errno, "cannot read %s/meta", s->dir));
    }
    while (!stop && rc == CMK_OK && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 2 || de->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof(sub), "meta/%s", de->d_name);
        fd = cmk_openat_nofollow(s->dirfd, sub, O_RDONLY | O_DIRECTORY, 0);
        d2 = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d2) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        while (!stop && (de2 = readdir(d2)) != NULL) {
            uint8_t hash[32], *plain = NULL;
            const char *name;
            const uint8_t *v;
            size_t blen, nl, vl;
            char *buf = NULL, namez[CMK_META_NAME_MAX + 1];

            if (!is_hex64(de2->d_name) || cmk_unhex(hash, 32, de2->d_name) != 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", sub, de2->d_name);
            rc = cmk_read_file_at(s->dirfd, s->dir, path,
                                  CMK_META_MAX + CMK_META_OVERHEAD + 4 + CMK_META_NAME_MAX, &buf,
                                  &blen, &eb);
            if (rc == CMK_E_NOT_FOUND) { /* deleted meanwhile */
                rc = CMK_OK;
                cmk_errbuf_clear(&eb);
                continue;
            }
            if (rc == CMK_OK)
                rc = open_record(s, (uint8_t *)buf, blen, hash, &plain, &name, &nl, &v, &vl, &eb);
            free(buf);
            if (rc != CMK_OK)
                break;
            memcpy(namez, name, nl);
            namez[nl] = '\0';
            free(plain);
            if (plen == 0 || strncmp(namez, prefix, plen) == 0)
                stop = cb(namez, arg) != 0;
        }
        closedir(d2);
    }
    closedir(d);
    return cmk_publish(&eb, rc);
}
