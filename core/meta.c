/*
 * meta.c — small encrypted records: a registry's repositories, tags and manifest metadata.
 *
 * Backend record "meta/<hex>" (the local backend's file <dir>/meta/<hh>/<hex>), where
 * <hex> = HMAC-SHA256(name key, record name): names are not visible in storage. The name key is
 * HKDF(DEK 1, "cmkstore v1 meta names"), stable for the store's life (DEK 1 is never dropped).
 * Record layout:
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
 * cannot be moved under another name. The sealing is blobseal.c's; this file stores, through
 * the backend: writes are atomic (its record put); blind puts and deletes are serialised by a
 * mutex and the backend's lock CMK_BK_LOCK_META (the flock <dir>/meta/lock); a
 * read-modify-write takes no lock on any backend: it writes only over the version it read,
 * and a write that lost to another writer reads again and re-applies its change.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/bytes.h"
#include "core/base/secmem.h"
#include "core/blobseal.h"
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

/* The backend record of a name hash: "meta/<hex>". */
#define META_NS       "meta/"
#define META_REC_MAX  (sizeof(META_NS) + 64)
#define META_FILE_MAX (CMK_META_MAX + CMK_META_OVERHEAD + 4 + CMK_META_NAME_MAX)

static void record_name(const uint8_t hash[32], char rec[META_REC_MAX])
{
    char hex[65];

    cmk_hex(hex, hash, 32);
    snprintf(rec, META_REC_MAX, META_NS "%s", hex);
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

/* Reads record `name`; *ver (may be NULL) receives the version read. */
static cmk_err read_record(cmk_store *s, const char *name, void **val, size_t *len,
                           cmk_rec_ver *ver, cmk_errbuf *eb)
{
    char rec[META_REC_MAX];
    uint8_t hash[32], *plain = NULL;
    void *buf = NULL;
    const char *rname;
    const uint8_t *v;
    size_t blen, nl, vl;
    cmk_err rc;

    *val = NULL;
    *len = 0;
    rc = name_hash(s, name, hash, eb);
    if (rc != CMK_OK)
        return rc;
    record_name(hash, rec);
    rc = cmk_bk_rec_get(s->bk, rec, META_FILE_MAX, &buf, &blen, ver, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no metadata record '%s'", name);
    if (rc != CMK_OK)
        return rc;
    rc = open_record(s, buf, blen, hash, &plain, &rname, &nl, &v, &vl, eb);
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

/* Writes record `name` over version *expect (NULL: only if absent; CMK_REC_ANY: whatever). */
static cmk_err write_record(cmk_store *s, const char *name, const void *val, size_t len,
                            const cmk_rec_ver *expect, cmk_errbuf *eb)
{
    char rec[META_REC_MAX];
    uint8_t hash[32], *dek = NULL, *buf = NULL;
    size_t total = 0;
    uint32_t dek_id = 0;
    cmk_err rc;

    rc = name_hash(s, name, hash, eb);
    if (rc != CMK_OK)
        return rc;
    record_name(hash, rec);
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
    rc = cmk_bk_rec_put(s->bk, rec, buf, total, expect, NULL, eb);
out:
    cmk_secfree(dek);
    free(buf);
    return rc;
}

/* Deletes record `name` if it is still version *expect (NULL: whatever it is). */
static cmk_err delete_record(cmk_store *s, const char *name, const cmk_rec_ver *expect,
                             cmk_errbuf *eb)
{
    char rec[META_REC_MAX];
    uint8_t hash[32];
    cmk_err rc = name_hash(s, name, hash, eb);

    if (rc != CMK_OK)
        return rc;
    record_name(hash, rec);
    rc = cmk_bk_rec_delete(s->bk, rec, expect, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no metadata record '%s'", name);
    return rc;
}

static cmk_err check_name(const char *name, cmk_errbuf *eb)
{
    if (!name || !*name || strlen(name) > CMK_META_NAME_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad metadata record name");
    return CMK_OK;
}

/* Serialises writers: the mutex within the process, the backend's lock across processes. */
static cmk_err meta_lock(cmk_store *s, cmk_bk_lock **lk, cmk_errbuf *eb)
{
    cmk_err rc;

    pthread_mutex_lock(&s->meta_mu);
    rc = cmk_bk_acquire(s->bk, CMK_BK_LOCK_META, CMK_BK_EXCLUSIVE, lk, eb);
    if (rc != CMK_OK)
        pthread_mutex_unlock(&s->meta_mu);
    return rc;
}

static void meta_unlock(cmk_store *s, cmk_bk_lock *lk)
{
    cmk_bk_release(s->bk, lk);
    pthread_mutex_unlock(&s->meta_mu);
}

static const cmk_rec_ver any_version = {CMK_REC_ANY};

/* The opening of every write: a valid name (and size), key access, the metadata lock. On
 * CMK_OK the caller holds the lock and releases it with meta_unlock. */
static cmk_err begin_write(cmk_store *s, const char *name, size_t len, cmk_bk_lock **lk,
                           cmk_errbuf *eb)
{
    cmk_err rc = check_name(name, eb);

    if (rc == CMK_OK && len > CMK_META_MAX)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "metadata record too large (%zu bytes)", len);
    if (rc == CMK_OK)
        rc = cmk_store_key_gate(s, eb);
    if (rc == CMK_OK)
        rc = meta_lock(s, lk, eb);
    return rc;
}

cmk_err cmk_meta_get(cmk_store *s, const char *name, void **val, size_t *len)
{
    cmk_errbuf eb = {0};
    cmk_err rc;

    if (!s || !val || !len)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_get: NULL argument");
    rc = check_name(name, &eb);
    if (rc == CMK_OK)
        rc = read_record(s, name, val, len, NULL, &eb);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_meta_put(cmk_store *s, const char *name, const void *val, size_t len)
{
    cmk_errbuf eb = {0};
    cmk_bk_lock *lk = NULL;
    cmk_err rc;

    if (!s || (!val && len))
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_put: NULL argument");
    rc = begin_write(s, name, len, &lk, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    rc = write_record(s, name, val, len, &any_version, &eb);
    meta_unlock(s, lk);
    return cmk_publish(&eb, rc);
}

cmk_err cmk_meta_delete(cmk_store *s, const char *name)
{
    cmk_errbuf eb = {0};
    cmk_bk_lock *lk = NULL;
    cmk_err rc;

    if (!s)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_delete: NULL store");
    rc = begin_write(s, name, 0, &lk, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    rc = delete_record(s, name, NULL, &eb);
    meta_unlock(s, lk);
    return cmk_publish(&eb, rc);
}

/* How often a read-modify-write is tried again when another process wrote the record between
 * its read and its write (a backend without a lock: the versions decide). Each try is one
 * read and one conditional write; the waits between them grow to META_RETRY_WAIT_MAX_MS. */
#define META_RETRIES           64
#define META_RETRY_WAIT_MAX_MS 50

/* A random pause of up to 2^attempt ms (capped), so racing writers spread out. */
static void retry_pause(unsigned attempt)
{
    unsigned max_ms = attempt < 6 ? 1u << attempt : META_RETRY_WAIT_MAX_MS;
    uint32_t r = 0;
    cmk_errbuf ignore = {0};
    struct timespec ts;

    if (max_ms > META_RETRY_WAIT_MAX_MS)
        max_ms = META_RETRY_WAIT_MAX_MS;
    if (cmk_random(&r, sizeof(r), &ignore) != CMK_OK)
        r = attempt * 7919u;
    r %= max_ms * 1000u + 1u;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)r * 1000L;
    while (nanosleep(&ts, &ts) != 0)
        ;
}

cmk_err cmk_meta_update(cmk_store *s, const char *name, cmk_meta_fn fn, void *arg)
{
    cmk_errbuf eb = {0};
    void *cur = NULL, *out = NULL;
    size_t curlen = 0, outlen = 0;
    cmk_rec_ver ver;
    cmk_err rc;

    if (!s || !fn)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_update: NULL argument");
    rc = check_name(name, &eb);
    if (rc == CMK_OK)
        rc = cmk_store_key_gate(s, &eb);
    if (rc != CMK_OK)
        return cmk_publish(&eb, rc);
    /* No lock, on any backend: the write goes over the version read (compare-and-swap), so
     * updates of different records run in parallel (one flock and one fsync at a time for
     * the whole store made every registry push and delete queue), and a lost race on one
     * record reads it again below. */
    for (unsigned attempt = 0;; attempt++) {
        rc = read_record(s, name, &cur, &curlen, &ver, &eb);
        if (rc == CMK_E_NOT_FOUND) {
            cmk_errbuf_clear(&eb);
            rc = CMK_OK;
        }
        if (rc != CMK_OK)
            goto out;
        rc = fn(cur, curlen, &out, &outlen, arg);
        if (rc != CMK_OK) {
            /* The callback's own error: keep the thread's detail it may have set. */
            free(cur);
            free(out);
            return rc;
        }
        if (out) {
            if (outlen > CMK_META_MAX)
                rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "metadata record too large");
            else
                rc = write_record(s, name, out, outlen, cur ? &ver : NULL, &eb);
        } else if (cur) {
            rc = delete_record(s, name, &ver, &eb);
            if (rc == CMK_E_NOT_FOUND) { /* deleted meanwhile: what fn wanted */
                cmk_errbuf_clear(&eb);
                rc = CMK_OK;
            }
        }
        /* CMK_E_BUSY: another writer got in between the read and the write. The record is
         * read again and fn applied to what is there now, so no writer's change is lost. */
        if (rc != CMK_E_BUSY || attempt + 1 >= META_RETRIES)
            break;
        free(cur);
        free(out);
        cur = out = NULL;
        curlen = outlen = 0;
        cmk_errbuf_clear(&eb);
        retry_pause(attempt);
    }
out:
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

typedef struct list_ctx {
    cmk_store *s;
    const char *prefix;
    int (*cb)(const char *name, void *arg);
    void *arg;
    cmk_err rc;
    cmk_errbuf *eb;
} list_ctx;

/* One backend record of the listing: decrypted for its name, passed on if it matches.
 * Returns nonzero to stop (the caller's wish, or an error kept in ctx). */
static int list_one(const char *rec, void *arg)
{
    list_ctx *c = arg;
    const char *hex = rec + strlen(META_NS);
    uint8_t hash[32], *plain = NULL;
    char namez[CMK_META_NAME_MAX + 1];
    const uint8_t *v;
    const char *name;
    void *buf = NULL;
    size_t blen, nl, vl;

    if (!is_hex64(hex) || cmk_unhex(hash, 32, hex) != 0)
        return 0;
    c->rc = cmk_bk_rec_get(c->s->bk, rec, META_FILE_MAX, &buf, &blen, NULL, c->eb);
    if (c->rc == CMK_E_NOT_FOUND) { /* deleted meanwhile */
        c->rc = CMK_OK;
        cmk_errbuf_clear(c->eb);
        return 0;
    }
    if (c->rc == CMK_OK)
        c->rc = open_record(c->s, buf, blen, hash, &plain, &name, &nl, &v, &vl, c->eb);
    free(buf);
    if (c->rc != CMK_OK)
        return 1;
    memcpy(namez, name, nl);
    namez[nl] = '\0';
    free(plain);
    return (!*c->prefix || strncmp(namez, c->prefix, strlen(c->prefix)) == 0) &&
           c->cb(namez, c->arg) != 0;
}

cmk_err cmk_meta_list(cmk_store *s, const char *prefix, int (*cb)(const char *name, void *arg),
                      void *arg)
{
    cmk_errbuf eb = {0};
    list_ctx c = {s, prefix ? prefix : "", cb, arg, CMK_OK, &eb};
    cmk_err rc;

    if (!s || !cb)
        return cmk_set_last(CMK_E_INVAL, "cmk_meta_list: NULL argument");
    rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = cmk_bk_rec_list(s->bk, META_NS, list_one, &c, &eb);
    if (rc == CMK_OK)
        rc = c.rc;
    return cmk_publish(&eb, rc);
}
