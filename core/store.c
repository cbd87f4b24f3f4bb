/*
 * store.c — the store handle: create, open, close, blob metadata operations, the key state
 * and the encryption status.
 *
 * Store directory:
 *   store.json      store id, format, home, chunk size, intervals, system identity
 *   keyring.json    wrapped DEKs + encryption state (see keyring.h), replaced atomically
 *   blobs/<alg>/<xx>/<hex>   sealed blob containers (prefix directories made at create)
 *   tmp/            unnamed (O_TMPFILE) or named in-progress writes
 *   events.log      the store's key events (JSON lines)
 *   lock            flock: shared by every process holding the store open, exclusive for
 *                   keyring changes
 *   meta/<xx>/<hex> encrypted metadata records (meta.c)
 *   registry.lock, serve.lock   the registry's flocks (tools/serve/registry_meta.h), opened there
 *                   with O_NOFOLLOW
 * The records, the event log and the locks are reached through the store's backend
 * (core/backend/local.c for this directory), which opens every one of them relative to the
 * store's directory fd and never through a symbolic link (cmk_openat_nofollow): the store's
 * files are data that whoever can write the directory controls, and a planted link must not
 * send a read or a write elsewhere.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/backend/select.h"
#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "core/digest.h"
#include "core/events.h"
#include "core/format.h"
#include "core/store_internal.h"

/* ---- options ---- */

void cmk_create_opts_init(cmk_create_opts *o)
{
    memset(o, 0, sizeof(*o));
}

void cmk_store_opts_init(cmk_store_opts *o)
{
    memset(o, 0, sizeof(*o));
}

/* ---- paths ---- */

const char *cmk_store_rel(const cmk_store *s, const char *path)
{
    size_t n = strlen(s->dir);

    return strncmp(path, s->dir, n) == 0 && path[n] == '/' ? path + n + 1 : path;
}

cmk_err cmk_store_blob_path(const cmk_store *s, int alg, const uint8_t *raw, char *path, size_t cap,
                            char *parent, size_t pcap, cmk_errbuf *eb)
{
    char hex[2 * CMK_DIGEST_RAW_MAX + 1];
    cmk_err rc;

    cmk_hex(hex, raw, cmk_digest_len(alg));
    rc = cmk_path(parent, pcap, eb, "%s/blobs/%s/%.2s", s->dir, cmk_digest_alg_name(alg), hex);
    if (rc == CMK_OK)
        rc = cmk_path(path, cap, eb, "%s/%s", parent, hex);
    return rc;
}

unsigned cmk_store_depth(const cmk_store *s)
{
    return s->depth;
}

/* ---- I/O engines ---- */

cmk_err cmk_store_io_get(cmk_store *s, cmk_io **out, cmk_errbuf *eb)
{
    cmk_err rc;

    pthread_mutex_lock(&s->io_mu);
    if (s->n_io_free > 0) {
        *out = s->io_free[--s->n_io_free];
        pthread_mutex_unlock(&s->io_mu);
        return CMK_OK;
    }
    pthread_mutex_unlock(&s->io_mu);
    /* Depth: every slot of a stream may be in flight, plus the header/index requests. */
    rc = cmk_io_create(s->io_kind, s->depth + 4, out, eb);
    if (rc == CMK_OK)
        atomic_fetch_add(&s->io_open, 1);
    return rc;
}

static void io_destroy(cmk_store *s, cmk_io *io)
{
    cmk_io_free(io);
    atomic_fetch_sub(&s->io_open, 1);
}

void cmk_store_io_put(cmk_store *s, cmk_io *io)
{
    if (!io)
        return;
    pthread_mutex_lock(&s->io_mu);
    if (s->n_io_free < CMK_IO_CACHE_MAX) {
        s->io_free[s->n_io_free++] = io;
        io = NULL;
    }
    pthread_mutex_unlock(&s->io_mu);
    if (io)
        io_destroy(s, io);
}

void cmk_store_resources_get(cmk_store *s, cmk_store_resources *out)
{
    memset(out, 0, sizeof(*out));
    if (!s)
        return;
    out->access_generation = atomic_load(&s->access_gen);
    out->io_open = atomic_load(&s->io_open);
    pthread_mutex_lock(&s->io_mu);
    out->io_cached = (unsigned)s->n_io_free;
    pthread_mutex_unlock(&s->io_mu);
    out->buf_cached = cmk_pool_buf_cached(s->pool);
}

void cmk_store_trim(cmk_store *s)
{
    cmk_io *idle[CMK_IO_CACHE_MAX];
    size_t n;

    if (!s)
        return;
    pthread_mutex_lock(&s->io_mu);
    n = s->n_io_free;
    memcpy(idle, s->io_free, n * sizeof(*idle));
    s->n_io_free = 0;
    pthread_mutex_unlock(&s->io_mu);
    for (size_t i = 0; i < n; i++)
        io_destroy(s, idle[i]);
    cmk_pool_trim(s->pool);
    /* glibc keeps freed memory in its arenas (and raises its mmap threshold as large
     * buffers are freed, so later ones come from the heap too): give it back. */
    malloc_trim(0);
}

/* ---- key state ---- */

cmk_err cmk_store_key_gate(cmk_store *s, cmk_errbuf *eb)
{
    cmk_err rc;

    if (atomic_load_explicit(&s->key_ok, memory_order_acquire))
        return CMK_OK;
    pthread_rwlock_rdlock(&s->key_lock);
    rc = s->key_err.code != CMK_OK ? s->key_err.code : CMK_E_KEY_DENIED;
    cmk_errbuf_set(eb, rc, "%s", s->key_err.msg[0] ? s->key_err.msg : "key not accessible");
    pthread_rwlock_unlock(&s->key_lock);
    return rc;
}

void cmk_store_key_lost_locked(cmk_store *s, const cmk_errbuf *why)
{
    atomic_store_explicit(&s->key_ok, 0, memory_order_release);
    /* Every put begun before fails from here on (put.c), even if access comes back. */
    atomic_fetch_add(&s->access_gen, 1);
    cmk_deks_free(&s->deks);
    s->key_err.code = why->code;
    snprintf(s->key_err.msg, sizeof(s->key_err.msg), "cannot use key %s as identity %s (%s): %s",
             s->kr.versioned_kid, s->kr.identity.principal, s->kr.identity.kind, why->msg);
}

cmk_err cmk_store_dek(cmk_store *s, uint32_t id, uint8_t out[CMK_DEK_LEN], uint32_t *id_out,
                      cmk_errbuf *eb)
{
    const uint8_t *k;
    uint32_t want;
    int reloaded = 0;
    cmk_err rc;

again:
    rc = cmk_store_key_gate(s, eb);
    if (rc != CMK_OK)
        return rc;
    pthread_rwlock_rdlock(&s->key_lock);
    want = id ? id : s->kr.current_dek;
    k = cmk_deks_find(&s->deks, want);
    if (k) {
        memcpy(out, k, CMK_DEK_LEN);
        pthread_rwlock_unlock(&s->key_lock);
        if (id_out)
            *id_out = want;
        return CMK_OK;
    }
    pthread_rwlock_unlock(&s->key_lock);
    if (!atomic_load(&s->key_ok))
        return cmk_store_key_gate(s, eb);
    /* Another process may have rolled a new DEK since this one loaded the keyring. */
    if (id && !reloaded) {
        reloaded = 1;
        rc = cmk_store_refresh_keyring(s, 0, 0, eb);
        if (rc != CMK_OK)
            return rc;
        goto again;
    }
    return cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                          "blob names data key %u, which this store's keyring does not hold "
                          "(blob from another store?)",
                          want);
}

/* ---- store.json ---- */

/* The home store.json names, used when the caller gives none. It is store data, and the
 * home is where the key configuration lives (vaults with their HSM modules, pkcs11.json):
 * it is taken only if it is a directory the running user (or root) owns that nobody else
 * may write and that does not lie inside the store, so a store's writer cannot point it
 * at a configuration of their own. */
static cmk_err recorded_home(cmk_store *s, const char *home, cmk_errbuf *eb)
{
    char real[PATH_MAX];
    struct stat st;
    size_t n = strlen(s->dir);
    const char *why = NULL;

    if (stat(home, &st) != 0 || realpath(home, real) == NULL)
        /* A home that is gone holds no configuration: the key lookups say what is missing. */
        return cmk_path(s->home, sizeof(s->home), eb, "%s", home);
    if (!S_ISDIR(st.st_mode))
        why = "is not a directory";
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        why = "is owned by another user";
    else if (st.st_mode & (S_IWGRP | S_IWOTH))
        why = "may be written by other users";
    else if (strncmp(real, s->dir, n) == 0 && (real[n] == '/' || real[n] == '\0'))
        why = "lies inside the store";
    if (why)
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "%s/store.json names the cmkstore home %.512s, which %s: a store's "
                              "files do not choose the key configuration. Give the home with "
                              "--home or $CMKSTORE_HOME",
                              s->dir, home, why);
    return cmk_path(s->home, sizeof(s->home), eb, "%s", real);
}

/* Rewrites eb (CMK_E_CORRUPT) for a store file that cannot be read: which file it is, what
 * it holds, and how to restore it. No blob is at fault, so none is to be removed. */
static cmk_err store_file_damaged(const cmk_store *s, const char *file, cmk_errbuf *eb)
{
    char why[sizeof(eb->msg)];
    int keyring = strcmp(file, CMK_KEYRING_FILE) == 0;

    snprintf(why, sizeof(why), "%s", eb->msg);
    return cmk_errbuf_set(
        eb, CMK_E_CORRUPT,
        "%s/%s, the store's %s, is damaged (%s). The blobs are not at fault: restore %s from a "
        "backup of this store%s",
        s->dir, file, keyring ? "keyring (its wrapped data keys)" : "settings", why, file,
        keyring ? " made after its last key or data-key rotation (without it no blob can be "
                  "decrypted)"
                : " (it changes only with create, encryption update, identity assign/remove "
                  "and key rotation)");
}

/* The most store.json may hold. */
#define CONFIG_MAX (4u << 20)

static cmk_err no_store(const cmk_store *s, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no store at %s (store.json is missing)", s->dir);
}

/* Reads and parses store.json: *out (the caller's) and its version. */
static cmk_err read_config(cmk_store *s, json_t **out, cmk_rec_ver *ver, cmk_errbuf *eb)
{
    char shown[4200];
    void *text = NULL;
    size_t len = 0;
    cmk_err rc = cmk_bk_rec_get(s->bk, "store.json", CONFIG_MAX, &text, &len, ver, eb);

    *out = NULL;
    if (rc != CMK_OK)
        return rc;
    snprintf(shown, sizeof(shown), "%s/store.json", s->dir);
    rc = cmk_json_parse(text, len, shown, out, eb);
    free(text);
    return rc;
}

cmk_err cmk_store_reload_config(cmk_store *s, cmk_errbuf *eb)
{
    json_t *j = NULL;
    cmk_rec_ver ver;
    cmk_err rc = read_config(s, &j, &ver, eb);

    if (rc != CMK_OK)
        return rc;
    json_decref(s->cfg);
    s->cfg = j;
    s->cfg_ver = ver;
    return CMK_OK;
}

static cmk_err load_config(cmk_store *s, cmk_errbuf *eb)
{
    char path[4200];
    json_t *j = NULL;
    cmk_rec_ver ver;
    const char *id, *home;
    int64_t cs;
    cmk_err rc;

    snprintf(path, sizeof(path), "%s/store.json", s->dir);
    rc = read_config(s, &j, &ver, eb);
    if (rc == CMK_E_NOT_FOUND)
        return no_store(s, eb);
    if (rc != CMK_OK)
        goto out;
    if (cmk_json_int(j, "format", 0) != CMK_STORE_FORMAT) {
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "store format %lld is not supported",
                            (long long)cmk_json_int(j, "format", 0));
        goto out;
    }
    id = cmk_json_str(j, "id");
    home = cmk_json_str(j, "home");
    cs = cmk_json_int(j, "chunkSize", 0);
    if (!id || strlen(id) != 36 || !home || !cmk_fmt_chunk_size_ok((uint64_t)cs)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s: missing or bad id, home or chunkSize", path);
        goto out;
    }
    memcpy(s->id, id, 37);
    if (!s->home[0]) {
        rc = recorded_home(s, home, eb);
        if (rc != CMK_OK)
            goto out;
    }
    s->chunk_size = (uint32_t)cs;
    s->rotation_check_s =
        (uint32_t)cmk_json_int(j, "rotationCheckIntervalSeconds", CMK_DEFAULT_ROTATION_CHECK_S);
    s->key_check_s = (uint32_t)cmk_json_int(j, "keyCheckIntervalSeconds", CMK_DEFAULT_KEY_CHECK_S);
    s->grace_s = (uint32_t)cmk_json_int(j, "unreachableGraceSeconds", CMK_DEFAULT_GRACE_S);
    s->dek_rollover = (uint32_t)cmk_json_int(j, "dekRolloverBlobs", UINT32_MAX);
    if (!json_is_object(json_object_get(j, "identity"))) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s: missing identity section", path);
        goto out;
    }
    s->cfg = j;
    s->cfg_ver = ver;
    j = NULL;
out:
    if (rc == CMK_E_CORRUPT)
        rc = store_file_damaged(s, "store.json", eb);
    json_decref(j);
    return rc;
}

/* Writes store.json through bk: if its version is still *expect (NULL: only if absent). */
static cmk_err put_config(cmk_backend *bk, const json_t *cfg, const cmk_rec_ver *expect,
                          cmk_rec_ver *newver, cmk_errbuf *eb)
{
    size_t n = 0;
    /* The bytes cmk_json_save_at has always written: pretty, sorted keys, a final newline. */
    char *text = cmk_json_dump_line(cfg, 1, &n);
    cmk_err rc = text ? cmk_bk_rec_put(bk, "store.json", text, n, expect, newver, eb)
                      : cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (store.json)");

    free(text);
    return rc;
}

cmk_err cmk_store_save_config(cmk_store *s, cmk_errbuf *eb)
{
    return put_config(s->bk, s->cfg, &s->cfg_ver, &s->cfg_ver, eb);
}

cmk_err cmk_store_lock(cmk_store *s, cmk_bk_lock **l, cmk_errbuf *eb)
{
    return cmk_bk_acquire(s->bk, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE, l, eb);
}

void cmk_store_unlock(cmk_store *s, cmk_bk_lock *l)
{
    cmk_bk_release(s->bk, l);
}

void cmk_store_note_keyring(cmk_store *s, const cmk_rec_ver *ver)
{
    s->kr_gen++;
    s->kr_ver = *ver;
}

static json_t *identity_entry(const cmk_identity *id)
{
    json_t *e = json_object();
    if (!e)
        return NULL;
    json_object_set_new(e, "id", json_string(id->id));
    json_object_set_new(e, "principalId", json_string(id->principal_id));
    if (id->client_id[0])
        json_object_set_new(e, "clientId", json_string(id->client_id));
    if (id->name[0])
        json_object_set_new(e, "name", json_string(id->name));
    return e;
}

/* store.json: the store's settings. The encryption state lives in the keyring. */
static json_t *config_json(const char *id, const char *home, uint32_t chunk, uint32_t rot,
                           uint32_t keychk, uint32_t grace, const cmk_identity *sys,
                           const cmk_identity *user)
{
    json_t *j = json_object(), *ids = json_object(), *users = json_array();
    json_t *se = identity_entry(sys);
    char ts[32];

    if (!j || !ids || !users || !se) {
        json_decref(j);
        json_decref(ids);
        json_decref(users);
        json_decref(se);
        return NULL;
    }
    cmk_iso8601((time_t)cmk_now(), ts);
    json_object_set_new(j, "format", json_integer(CMK_STORE_FORMAT));
    json_object_set_new(j, "id", json_string(id));
    json_object_set_new(j, "created", json_string(ts));
    json_object_set_new(j, "home", json_string(home));
    json_object_set_new(j, "chunkSize", json_integer(chunk));
    json_object_set_new(j, "rotationCheckIntervalSeconds", json_integer(rot));
    json_object_set_new(j, "keyCheckIntervalSeconds", json_integer(keychk));
    json_object_set_new(j, "unreachableGraceSeconds", json_integer(grace));
    json_object_set_new(j, "dekRolloverBlobs", json_integer(UINT32_MAX));
    json_object_set_new(se, "enabled", json_true());
    json_object_set_new(ids, "systemAssigned", se);
    if (user)
        json_array_append_new(users, identity_entry(user));
    json_object_set_new(ids, "userAssigned", users);
    json_object_set_new(j, "identity", ids);
    return j;
}

/* ---- create ---- */

static void identity_to_kr(const cmk_identity *id, cmk_kr_identity *out)
{
    snprintf(out->kind, sizeof(out->kind), "%s", id->type);
    snprintf(out->id, sizeof(out->id), "%s", id->id);
    snprintf(out->principal, sizeof(out->principal), "%s", id->principal_id);
    snprintf(out->client, sizeof(out->client), "%s", id->client_id);
}

/* Writes the new store's records through its backend, staged (a local store beside dir),
 * then publishes it: a crash or a failure leaves no half-made store. */
static cmk_err write_store(const char *dir, const json_t *cfg, const cmk_keyring *kr, json_t *event,
                           cmk_errbuf *eb)
{
    cmk_backend *bk = NULL;
    cmk_err rc = cmk_backend_create(dir, &bk, eb);

    if (rc == CMK_OK)
        rc = put_config(bk, cfg, NULL, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_keyring_write(bk, kr, NULL, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_events_append(bk, "store.created", json_incref(event), eb);
    if (rc == CMK_OK)
        rc = cmk_backend_publish(bk, eb);
    cmk_bk_close(bk);
    return rc;
}

cmk_err cmk_store_create_with(const char *dir_in, const cmk_create_opts *o,
                              const cmk_keyenv_factory *f, cmk_errbuf *eb)
{
    char home[4096], dir[4096], id[37];
    cmk_create_opts def;
    cmk_identity sys, user;
    cmk_key_desc desc;
    cmk_keyring kr;
    cmk_deks deks = {0};
    cmk_keyenv env = {0};
    cmk_kek *kek;
    json_t *cfg = NULL, *ev = NULL;
    const char *principal;
    uint32_t chunk = o->chunk_size ? o->chunk_size : CMK_FMT_CHUNK_DEFAULT;
    cmk_err rc;

    memset(&kr, 0, sizeof(kr));
    if (!o) {
        cmk_create_opts_init(&def);
        o = &def;
    }
    if (!dir_in || !*dir_in)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no store directory given");
    if (!!o->identity != !!o->key_id)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "--identity and --key-encryption-key go together: a "
                              "customer-managed key needs both (or neither, for a "
                              "store-managed key)");
    if (!cmk_fmt_chunk_size_ok(chunk))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "chunk size %u is not valid: use a power of two from 64 KiB to "
                              "16 MiB",
                              chunk);
    if (o->identity && strcmp(o->identity, "[system]") == 0)
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "a new store's system-assigned identity cannot have vault access "
                              "yet: create the store with a user-assigned identity, grant the "
                              "system identity access, then `encryption rotate-key --identity "
                              "[system]`");
    rc = cmk_backend_target(dir_in, dir, sizeof(dir), eb);
    if (rc != CMK_OK)
        return rc;
    rc = f->resolve_home(o->home, 1, home, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_uuid4(id, eb);
    if (rc != CMK_OK)
        return rc;
    rc = f->open(home, o->kek_provider, &env, eb);
    if (rc != CMK_OK)
        return rc;
    kek = env.kek;

    if (o->key_id) {
        /* Everything about the customer's key is checked before anything is written. */
        rc = env.identity_get(env.self, o->identity, &user, eb);
        if (rc == CMK_E_NOT_FOUND) {
            rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND,
                                "identity '%s' not found in %s: a customer-managed key needs an "
                                "existing identity with get, wrapKey and unwrapKey on the vault",
                                o->identity, home);
            goto out;
        }
        if (rc != CMK_OK)
            goto out;
        principal = user.principal_id;
        rc = cmk_kek_describe(kek, o->key_id, principal, &desc, eb);
        if (rc != CMK_OK)
            goto out;
        rc = cmk_kek_check_type(&desc, o->key_id, eb);
        if (rc != CMK_OK)
            goto out;
        kr.cmk = 1;
        snprintf(kr.key_identifier, sizeof(kr.key_identifier), "%s", o->key_id);
        snprintf(kr.versioned_kid, sizeof(kr.versioned_kid), "%s", desc.kid);
        kr.rotation_enabled = !desc.requested_versioned;
        identity_to_kr(&user, &kr.identity);
        rc = cmk_keyring_add_dek(&kr, &deks, kek, cmk_kek_pick_alg(&desc), eb);
        if (rc != CMK_OK)
            goto out;
    }
    rc = env.identity_create_system(env.self, id, &sys, eb);
    if (rc != CMK_OK)
        goto out;
    if (!o->key_id) {
        rc = env.managed_key_create(env.self, id, &sys, kr.versioned_kid, eb);
        if (rc != CMK_OK)
            goto out;
        rc = cmk_kek_describe(kek, kr.versioned_kid, sys.principal_id, &desc, eb);
        if (rc != CMK_OK)
            goto out;
        kr.cmk = 0;
        snprintf(kr.key_identifier, sizeof(kr.key_identifier), "%s", kr.versioned_kid);
        kr.rotation_enabled = 0;
        identity_to_kr(&sys, &kr.identity);
        rc = cmk_keyring_add_dek(&kr, &deks, kek, cmk_kek_pick_alg(&desc), eb);
        if (rc != CMK_OK)
            goto out;
    }

    cfg = config_json(id, home, chunk,
                      o->rotation_check_interval_s ? o->rotation_check_interval_s
                                                   : CMK_DEFAULT_ROTATION_CHECK_S,
                      o->key_check_interval_s ? o->key_check_interval_s : CMK_DEFAULT_KEY_CHECK_S,
                      o->unreachable_grace_s ? o->unreachable_grace_s : CMK_DEFAULT_GRACE_S, &sys,
                      o->key_id ? &user : NULL);
    ev = json_pack("{s:s, s:b, s:s, s:s, s:s}", "storeId", id, "customerManagedKey", kr.cmk,
                   "keyIdentifier", kr.key_identifier, "versionedKeyIdentifier", kr.versioned_kid,
                   "identity", kr.identity.principal);
    if (!cfg || !ev) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    rc = write_store(dir, cfg, &kr, ev, eb);
out:
    json_decref(cfg);
    json_decref(ev);
    cmk_deks_free(&deks);
    cmk_keyring_free(&kr);
    cmk_keyenv_close(&env);
    return rc;
}

/* ---- open / close ---- */

/* Loads the keyring and unwraps its DEKs. A failure to unwrap is not an open failure: it is
 * recorded as the key state (a damaged or unreadable vault as unreachable), so the store
 * opens failed closed and the next successful check restores it. */
static cmk_err load_keys(cmk_store *s, cmk_errbuf *eb)
{
    cmk_errbuf why = {0};
    cmk_rec_ver ver;
    cmk_err rc;

    rc = cmk_keyring_read(s->bk, &s->kr, &ver, eb);
    cmk_store_note_keyring(s, &ver);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "%s/" CMK_KEYRING_FILE " is missing: the store cannot be "
                              "opened; restore it from a backup of this store",
                              s->dir);
    if (rc == CMK_E_CORRUPT || rc == CMK_E_INTEGRITY)
        return store_file_damaged(s, CMK_KEYRING_FILE, eb);
    if (rc != CMK_OK)
        return rc;
    s->last_key_check = cmk_now();
    rc = cmk_keyring_unwrap_all(&s->kr, s->kek, &s->deks, &why);
    if (rc == CMK_OK) {
        atomic_store(&s->key_ok, 1);
        s->last_key_ok_mono = cmk_monotonic();
        return CMK_OK;
    }
    s->key_cause = rc;
    cmk_store_fault_as_unreachable(&why);
    cmk_store_key_lost_locked(s, &why);
    return CMK_OK;
}

cmk_err cmk_store_open_with(const char *dir, const cmk_store_opts *o, const cmk_keyenv_factory *f,
                            cmk_store **out, cmk_errbuf *eb)
{
    cmk_store *s = calloc(1, sizeof(*s));
    const char *env;
    int kind;
    cmk_err rc;

    *out = NULL;
    if (!s)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (store)");
    pthread_mutex_init(&s->io_mu, NULL);
    pthread_rwlock_init(&s->key_lock, NULL);
    pthread_mutex_init(&s->bg_mu, NULL);
    pthread_cond_init(&s->bg_cv, NULL);
    pthread_mutex_init(&s->cfg_mu, NULL);
    pthread_mutex_init(&s->meta_mu, NULL);
    env = getenv("CMKSTORE_HOME");
    if (o && o->home) {
        rc = f->resolve_home(o->home, 0, s->home, eb);
        if (rc != CMK_OK)
            goto out;
    } else if (env && *env) {
        rc = f->resolve_home(NULL, 0, s->home, eb);
        if (rc != CMK_OK)
            goto out;
    }
    /* A directory is opened once (everything in it is opened relative to it), links among
     * the store's own entries are refused and crashed writers' leftovers swept; a bucket is
     * probed for conditional writes. */
    rc = cmk_backend_open(dir, 0, s->dir, sizeof(s->dir), &s->bk, eb);
    if (rc == CMK_E_NOT_FOUND && s->dir[0])
        rc = no_store(s, eb);
    if (rc != CMK_OK)
        goto out;
    rc = load_config(s, eb);
    if (rc != CMK_OK)
        goto out;
    kind = cmk_io_kind_parse(o ? o->io_engine : NULL);
    if (kind < 0) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "unknown I/O engine '%s' (auto, uring, sync)",
                            o->io_engine);
        goto out;
    }
    s->io_kind = (cmk_io_kind)kind;
    {
        const char *wm = o && o->write_mode ? o->write_mode : NULL;
        const char *wenv = getenv("CMKSTORE_WRITE");
        if ((!wm || strcmp(wm, "auto") == 0) && wenv && *wenv)
            wm = wenv;
        if (!wm || strcmp(wm, "auto") == 0)
            s->direct_after = CMK_DIRECT_AFTER;
        else if (strcmp(wm, "direct") == 0)
            s->direct_after = 0;
        else if (strcmp(wm, "buffered") == 0)
            s->direct_after = UINT64_MAX;
        else {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "unknown write mode '%s' (auto, direct, buffered)",
                                wm);
            goto out;
        }
    }
    s->threads = o && o->threads ? o->threads : cmk_ncpu();
    s->depth = o && o->queue_depth ? o->queue_depth : 2 * s->threads + 4;
    if (s->depth > 256)
        s->depth = 256;
    rc = cmk_pool_create(s->threads,
                         cmk_put_stream_bytes(s->chunk_size, s->depth) +
                             cmk_get_stream_bytes(s->chunk_size, s->depth),
                         &s->pool, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_bk_blobs_open(s->bk, s->pool, s->direct_after, &s->direct_state, &s->blobs, eb);
    if (rc != CMK_OK)
        goto out;
    rc = f->open(s->home, o ? o->kek_provider : NULL, &s->env, eb);
    if (rc != CMK_OK)
        goto out;
    s->kek = s->env.kek;
    rc = load_keys(s, eb);
    if (rc != CMK_OK)
        goto out;
    *out = s;
    s = NULL;
out:
    cmk_store_close(s);
    return rc;
}

void cmk_store_close(cmk_store *s)
{
    if (!s)
        return;
    cmk_store_bg_shutdown(s);
    cmk_bk_blobs_close(s->blobs);
    cmk_pool_free(s->pool);
    for (size_t i = 0; i < s->n_io_free; i++)
        io_destroy(s, s->io_free[i]);
    pthread_rwlock_wrlock(&s->key_lock);
    cmk_deks_free(&s->deks);
    cmk_keyring_free(&s->kr);
    pthread_rwlock_unlock(&s->key_lock);
    cmk_keyenv_close(&s->env);
    cmk_bk_close(s->bk);
    pthread_mutex_destroy(&s->io_mu);
    pthread_rwlock_destroy(&s->key_lock);
    pthread_mutex_destroy(&s->bg_mu);
    pthread_cond_destroy(&s->bg_cv);
    pthread_mutex_destroy(&s->cfg_mu);
    pthread_mutex_destroy(&s->meta_mu);
    json_decref(s->cfg);
    free(s);
}

const char *cmk_store_id(const cmk_store *s)
{
    return s ? s->id : "";
}

const char *cmk_store_dir(const cmk_store *s)
{
    return s ? s->dir : "";
}

/* ---- delete and list ---- */

cmk_err cmk_delete(cmk_store *s, const char *digest)
{
    cmk_errbuf eb = {0};
    char key[CMK_BK_KEY_MAX];
    cmk_err rc;

    if (!s || !digest)
        return cmk_set_last(CMK_E_INVAL, "cmk_delete: NULL argument");
    rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = cmk_bk_blob_key(digest, key, &eb);
    if (rc == CMK_OK)
        rc = cmk_bk_blob_delete(s->blobs, key, &eb);
    if (rc == CMK_E_NOT_FOUND)
        cmk_errbuf_set(&eb, CMK_E_NOT_FOUND, "blob %s is not in the store", digest);
    return cmk_publish(&eb, rc);
}

struct list_arg {
    int (*cb)(const char *digest, void *arg);
    void *arg;
};

static int list_one(const char *key, void *arg)
{
    struct list_arg *la = arg;
    char dg[CMK_DIGEST_MAX];

    cmk_bk_blob_digest(key, dg, sizeof(dg));
    return la->cb(dg, la->arg);
}

cmk_err cmk_list(cmk_store *s, int (*cb)(const char *digest, void *arg), void *arg)
{
    struct list_arg la = {cb, arg};
    cmk_errbuf eb = {0};

    if (!s || !cb)
        return cmk_set_last(CMK_E_INVAL, "cmk_list: NULL argument");
    return cmk_publish(&eb, cmk_bk_blob_list(s->blobs, list_one, &la, &eb));
}

cmk_err cmk_store_sweep(cmk_store *s, unsigned flags, cmk_sweep_info *out)
{
    cmk_bk_sweep_stats st = {0};
    cmk_errbuf eb = {0};
    cmk_err rc = CMK_OK;

    if (!s || !out)
        return cmk_set_last(CMK_E_INVAL, "cmk_store_sweep: NULL argument");
    memset(out, 0, sizeof(*out));
    if (!(flags & CMK_SWEEP_DRY_RUN))
        rc = cmk_store_key_gate(s, &eb);
    if (rc == CMK_OK)
        rc = cmk_bk_sweep(s->bk, (flags & CMK_SWEEP_DRY_RUN) ? CMK_BK_SWEEP_DRY : 0, &st, &eb);
    out->objects = st.objects;
    out->bytes = st.bytes;
    out->uploads_aborted = st.uploads;
    return cmk_publish(&eb, rc);
}

/* ---- encryption status ---- */

cmk_err cmk_store_encryption(cmk_store *s, cmk_encryption_info *out)
{
    if (!s || !out)
        return cmk_set_last(CMK_E_INVAL, "cmk_store_encryption: NULL argument");
    memset(out, 0, sizeof(*out));
    pthread_rwlock_rdlock(&s->key_lock);
    out->cmk_enabled = s->kr.cmk;
    snprintf(out->identity, sizeof(out->identity), "%s",
             s->kr.identity.client[0] ? s->kr.identity.client : s->kr.identity.principal);
    snprintf(out->identity_principal, sizeof(out->identity_principal), "%s",
             s->kr.identity.principal);
    snprintf(out->identity_kind, sizeof(out->identity_kind), "%s", s->kr.identity.kind);
    snprintf(out->key_identifier, sizeof(out->key_identifier), "%s", s->kr.key_identifier);
    snprintf(out->versioned_key_identifier, sizeof(out->versioned_key_identifier), "%s",
             s->kr.versioned_kid);
    out->key_rotation_enabled = s->kr.rotation_enabled;
    out->last_key_rotation = s->kr.last_rotation;
    out->rotation_check_interval_s = s->rotation_check_s;
    out->key_check_interval_s = s->key_check_s;
    out->unreachable_grace_s = s->grace_s;
    snprintf(out->wrap_algorithm, sizeof(out->wrap_algorithm), "%s",
             s->kr.ndeks ? cmk_wrap_alg_name(s->kr.deks[0].alg) : "");
    out->dek_count = (unsigned)s->kr.ndeks;
    out->current_dek = s->kr.current_dek;
    out->key_accessible = atomic_load(&s->key_ok);
    out->key_error = out->key_accessible ? CMK_OK : s->key_err.code;
    if (!out->key_accessible)
        snprintf(out->key_error_msg, sizeof(out->key_error_msg), "%s", s->key_err.msg);
    out->last_key_check = s->last_key_check;
    out->dek_rollover_blobs = s->dek_rollover;
    out->key_unreachable_since =
        s->unreachable_since > 0 ? (int)(cmk_monotonic() - s->unreachable_since) : 0;
    out->key_checks = s->key_checks;
    out->key_check_error = s->key_cause;
    pthread_rwlock_unlock(&s->key_lock);
    return CMK_OK;
}
