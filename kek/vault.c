/*
 * vault.c — the local key vault (see vault.h): management operations for the operator and
 * the KEK provider a store uses.
 *
 * Concurrency: every mutation holds the vault's flock (<vault>/lock) and replaces metadata
 * files by atomic rename (cmk_json_save), so readers never take the lock: they see either the
 * old or the new file. A version's private key is written before key.json names it and a
 * purged key's directory is renamed away before it is removed, so a reader that finds a
 * version in key.json but not its PEM file is looking at a purge in progress (key not found).
 */
#define _GNU_SOURCE
#include "kek/vault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "core/base/fsutil.h"
#include "kek/home.h"
#include "kek/identity.h"
#include "core/base/jsonfile.h"
#include "kek/kek.h"
#include "kek/pkcs11.h"
#include "core/base/secmem.h"

#define VERSION_HEX   32
#define OPERATOR      "operator"
#define PEM_MAX       (64u * 1024u)
#define KID_SHOW      "%.200s" /* key identifiers come from callers: bound them in messages */
#define STORE_PERMS   "get unwrapKey wrapKey"
#define RETENTION_DEF 90
#define RETENTION_MIN 7
#define RETENTION_MAX 90
#define DAY_SECONDS   86400

/* Every key permission a policy can grant, in the order policies list them. */
static const char *const key_perms[] = {
    "get",   "list",    "create",  "update",    "import",  "delete", "recover", "backup", "restore",
    "purge", "decrypt", "encrypt", "unwrapKey", "wrapKey", "verify", "sign",    "rotate",
};
#define NPERMS (sizeof(key_perms) / sizeof(key_perms[0]))
#define PERM_LIST                                                                                  \
    "get, list, create, update, import, delete, recover, backup, restore, purge, decrypt, "        \
    "encrypt, unwrapKey, wrapKey, verify, sign, rotate, all"

/* Internal functions accept a NULL errbuf from callers but need its message (audit reasons),
 * so public entry points substitute a local one. */
#define EB_ENSURE(eb, local)                                                                       \
    do {                                                                                           \
        if (!(eb))                                                                                 \
            (eb) = &(local);                                                                       \
        cmk_errbuf_clear(eb);                                                                      \
    } while (0)

/* ---- small helpers ----------------------------------------------------------------------- */

static int is_version(const char *s)
{
    size_t i;

    if (!s)
        return 0;
    for (i = 0; i < VERSION_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[i] == '\0';
}

static int is_uuid_ci(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (!s)
        return 0;
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        char c = s[i];
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (shape[i] == '-' ? c != '-' : !hex)
            return 0;
    }
    return s[sizeof(shape) - 1] == '\0';
}

static void now_iso(char out[32])
{
    cmk_iso8601((time_t)cmk_now(), out);
}

/* RFC 7515 base64url without padding (JWK "n", "e", "x", "y"). malloc'd; NULL on ENOMEM. */
static char *b64url(const unsigned char *in, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t o = 0, i = 0;

    if (!out)
        return NULL;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
    }
    out[o] = '\0';
    return out;
}

/* Sets key (taking ownership of val, which may be NULL after a failed allocation); returns
 * -1 on failure so callers can chain with |. */
static int jset(json_t *obj, const char *key, json_t *val)
{
    if (!val)
        return -1;
    return json_object_set_new(obj, key, val);
}

/* ---- key identifiers -------------------------------------------------------------------- */

static cmk_err kid_bad(const char *kid, const char *why, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "malformed key identifier '" KID_SHOW "' (%s): expected "
                          "local://<vault>/keys/<name> (versionless) or "
                          "local://<vault>/keys/<name>/<version> (32 hex digits)",
                          kid, why);
}

cmk_err cmk_vault_kid_parse(const char *kid, cmk_vault_kid *out, cmk_errbuf *eb)
{
    const size_t plen = sizeof(CMK_VAULT_SCHEME) - 1;
    char buf[256], *seg[5];
    size_t n, nseg = 0;
    char *p;

    memset(out, 0, sizeof(*out));
    if (!kid || !*kid)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no key identifier given: expected local://<vault>/keys/<name>"
                              "[/<version>]");
    if (strncasecmp(kid, CMK_VAULT_SCHEME, plen) != 0)
        return kid_bad(kid, "not a local:// identifier", eb);
    n = strlen(kid + plen);
    if (n >= sizeof(buf))
        return kid_bad(kid, "too long", eb);
    memcpy(buf, kid + plen, n + 1);
    if (n > 0 && buf[n - 1] == '/')
        buf[--n] = '\0';
    for (p = buf;;) {
        char *slash = strchr(p, '/');
        if (nseg == sizeof(seg) / sizeof(seg[0]))
            return kid_bad(kid, "too many path elements", eb);
        seg[nseg++] = p;
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    if (nseg < 3)
        return kid_bad(kid, "no key name", eb);
    if (nseg > 4)
        return kid_bad(kid, "too many path elements", eb);
    if (strcmp(seg[1], "keys") != 0)
        return kid_bad(kid, "the vault name must be followed by /keys/", eb);
    if (cmk_name_check(seg[0], "vault", NULL) != CMK_OK)
        return kid_bad(kid, "bad vault name", eb);
    if (cmk_name_check(seg[2], "key", NULL) != CMK_OK)
        return kid_bad(kid, "bad key name", eb);
    if (nseg == 4) {
        for (char *c = seg[3]; *c; c++)
            if (*c >= 'A' && *c <= 'F')
                *c = (char)(*c - 'A' + 'a');
        if (!is_version(seg[3]))
            return kid_bad(kid, "bad version", eb);
        memcpy(out->version, seg[3], VERSION_HEX + 1);
    }
    memcpy(out->vault, seg[0], strlen(seg[0]) + 1);
    memcpy(out->key, seg[2], strlen(seg[2]) + 1);
    return CMK_OK;
}

cmk_err cmk_vault_kid_format(char *out, size_t cap, const char *vault, const char *key,
                             const char *version, cmk_errbuf *eb)
{
    int n;

    if (version && *version)
        n = snprintf(out, cap, CMK_VAULT_SCHEME "%s/keys/%s/%s", vault, key, version);
    else
        n = snprintf(out, cap, CMK_VAULT_SCHEME "%s/keys/%s", vault, key);
    if (n < 0 || (size_t)n >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "key identifier too long");
    return CMK_OK;
}

/* ---- vault context ------------------------------------------------------------------------ */

typedef struct vctx {
    char home[CMK_PATH_MAX];
    char name[64];
    char dir[CMK_PATH_MAX];
    json_t *vj;  /* vault.json */
    int lockfd;  /* -1 unless the vault's lock is held */
    int located; /* the vault exists: operations on it are audited */
} vctx;

static void vctx_init(vctx *c)
{
    memset(c, 0, sizeof(*c));
    c->lockfd = -1;
}

static void vctx_close(vctx *c)
{
    if (c->lockfd >= 0)
        cmk_unlock(c->lockfd);
    c->lockfd = -1;
    json_decref(c->vj);
    c->vj = NULL;
}

static cmk_err vault_not_found(const vctx *c, cmk_err code, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, code,
                          "vault '%s' not found in %s: create it with `cmkstore vault create "
                          "--name %s` (`cmkstore vault list` shows the vaults)",
                          c->name, c->home, c->name);
}

static cmk_err vctx_load(vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_err rc;

    json_decref(c->vj);
    c->vj = NULL;
    rc = cmk_path(path, sizeof(path), eb, "%s/vault.json", c->dir);
    if (rc == CMK_OK)
        rc = cmk_json_load(path, &c->vj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return vault_not_found(c, CMK_E_NOT_FOUND, eb);
    if (rc == CMK_OK && !json_is_object(json_object_get(c->vj, "properties")))
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "%s is damaged (no properties): restore it from a backup", path);
    return rc;
}

/* Takes the vault's lock. A vault purged and created again while we waited has a new lock
 * file: the inode check makes sure the lock we hold is the current vault's. */
static cmk_err vctx_lock(vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    struct stat a, b;
    cmk_err rc;

    rc = cmk_path(path, sizeof(path), eb, "%s/lock", c->dir);
    for (int tries = 0; rc == CMK_OK && tries < 8; tries++) {
        rc = cmk_lock(path, 1, 1, &c->lockfd, eb);
        if (rc == CMK_E_NOT_FOUND)
            return vault_not_found(c, CMK_E_NOT_FOUND, eb);
        if (rc != CMK_OK)
            return rc;
        if (fstat(c->lockfd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return CMK_OK;
        cmk_unlock(c->lockfd);
        c->lockfd = -1;
    }
    if (rc == CMK_OK)
        rc = cmk_errbuf_set(eb, CMK_E_BUSY, "vault '%s' keeps changing under us; retry", c->name);
    return rc;
}

/* Locates vault `name` under home, optionally locks it, and loads vault.json. */
static cmk_err vctx_open(vctx *c, const char *home, const char *name, int lock, cmk_errbuf *eb)
{
    cmk_err rc;

    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_name_check(name, "vault", eb);
    if (rc == CMK_OK)
        rc = cmk_path(c->home, sizeof(c->home), eb, "%s", home);
    if (rc == CMK_OK)
        rc = cmk_path(c->name, sizeof(c->name), eb, "%s", name);
    if (rc == CMK_OK)
        rc = cmk_path(c->dir, sizeof(c->dir), eb, "%s/vaults/%s", home, name);
    if (rc == CMK_OK && lock)
        rc = vctx_lock(c, eb);
    if (rc == CMK_OK)
        rc = vctx_load(c, eb);
    if (rc == CMK_OK)
        c->located = 1;
    return rc;
}

static json_t *vprops(const vctx *c)
{
    return json_object_get(c->vj, "properties");
}

static int vault_purge_protected(const vctx *c)
{
    return cmk_json_bool(vprops(c), "enablePurgeProtection", 0);
}

static int vault_retention(const vctx *c)
{
    int64_t d = cmk_json_int(vprops(c), "softDeleteRetentionInDays", RETENTION_DEF);
    return d >= RETENTION_MIN && d <= RETENTION_MAX ? (int)d : RETENTION_DEF;
}

/* Non-zero if the vault is soft-deleted; *date / *purge receive its dates. */
static int vault_deleted(const vctx *c, const char **date, const char **purge)
{
    const char *d = cmk_json_str(vprops(c), "deletionDate");

    if (date)
        *date = d ? d : "";
    if (purge) {
        const char *p = cmk_json_str(vprops(c), "scheduledPurgeDate");
        *purge = p ? p : "";
    }
    return d != NULL;
}

/* The error of a key operation in a soft-deleted vault. */
static cmk_err vault_deleted_err(const vctx *c, cmk_errbuf *eb)
{
    const char *date, *purge;

    vault_deleted(c, &date, &purge);
    return cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                          "vault '%s' is deleted (since %s, scheduled purge %s): every key in it "
                          "is unusable; recover it with `cmkstore vault recover --name %s`",
                          c->name, date, purge, c->name);
}

/* ---- audit ------------------------------------------------------------------------------ */

typedef struct audit_rec {
    const char *identity, *op, *key, *version, *alg, *object_id;
} audit_rec;

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

/* Appends one record to <vault>/audit.log. The reason of a refusal is the error message,
 * which never holds key material. */
static cmk_err audit_write(const vctx *c, const audit_rec *a, cmk_err rc, const char *reason,
                           cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX], t[32];
    json_t *r = json_object();
    cmk_err arc;
    int bad = 0;

    if (!r)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory writing an audit record");
    now_iso(t);
    bad |= jset(r, "time", json_string(t));
    bad |= jset(r, "identity", json_string(a->identity && *a->identity ? a->identity : "(none)"));
    bad |= jset(r, "operation", json_string(a->op));
    bad |= jset(r, "vault", json_string(c->name));
    bad |= jset(r, "key", str_or_null(a->key));
    bad |= jset(r, "version", str_or_null(a->version));
    bad |= jset(r, "result", json_string(rc == CMK_OK ? "allowed" : "denied"));
    if (a->alg)
        bad |= jset(r, "algorithm", json_string(a->alg));
    if (a->object_id)
        bad |= jset(r, "objectId", json_string(a->object_id));
    if (rc != CMK_OK) {
        bad |= jset(r, "error", json_string(cmk_errname(rc)));
        bad |= jset(r, "reason", json_string(reason && *reason ? reason : cmk_strerror(rc)));
    }
    if (bad) {
        arc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory writing an audit record");
        goto out;
    }
    arc = cmk_path(path, sizeof(path), eb, "%s/audit.log", c->dir);
    if (arc == CMK_OK)
        arc = cmk_json_append_line(path, r, eb);
out:
    json_decref(r);
    return arc;
}

/* Ends a management operation: audits it (as the operator) if the vault was found, releases
 * the context, and reports an audit failure of an operation that was carried out. */
static cmk_err mgmt_finish(vctx *c, const audit_rec *a, cmk_err rc, cmk_errbuf *eb)
{
    if (c->located) {
        cmk_errbuf ab = {0};
        cmk_err arc = audit_write(c, a, rc, eb->msg, &ab);
        if (arc != CMK_OK && rc == CMK_OK)
            rc = cmk_errbuf_set(eb, arc,
                                "%s on vault '%s' was done, but its audit log could not be "
                                "written: %s",
                                a->op, c->name, ab.msg);
    }
    vctx_close(c);
    return rc;
}

/* ---- keys: metadata ------------------------------------------------------------------------ */

static cmk_err key_paths(const vctx *c, const char *name, char dir[CMK_PATH_MAX],
                         char file[CMK_PATH_MAX], cmk_errbuf *eb)
{
    cmk_err rc = cmk_path(dir, CMK_PATH_MAX, eb, "%s/keys/%s", c->dir, name);

    if (rc == CMK_OK && file)
        rc = cmk_path(file, CMK_PATH_MAX, eb, "%s/key.json", dir);
    return rc;
}

static json_t *key_versions(const json_t *kj)
{
    return json_object_get(kj, "versions");
}

static json_t *key_latest(const json_t *kj)
{
    json_t *v = key_versions(kj);
    size_t n = json_array_size(v);

    return n ? json_array_get(v, n - 1) : NULL;
}

static json_t *key_find_version(const json_t *kj, const char *version)
{
    json_t *vs = key_versions(kj), *v;
    size_t i;

    json_array_foreach(vs, i, v)
    {
        const char *s = cmk_json_str(v, "version");
        if (s && strcmp(s, version) == 0)
            return v;
    }
    return NULL;
}

static int key_deleted(const json_t *kj)
{
    return json_is_object(json_object_get(kj, "deleted"));
}

static const char *key_deleted_field(const json_t *kj, const char *f)
{
    const char *s = cmk_json_str(json_object_get(kj, "deleted"), f);
    return s ? s : "";
}

/* Checks what the rest of this file relies on, so a damaged key.json is reported as such. */
static cmk_err key_validate(const json_t *kj, const char *path, cmk_errbuf *eb)
{
    json_t *vs = key_versions(kj), *v;
    size_t i;

    if (!json_is_array(vs) || json_array_size(vs) == 0)
        goto bad;
    json_array_foreach(vs, i, v)
    {
        const char *kty = cmk_json_str(v, "kty");
        if (!json_is_object(v) || !is_version(cmk_json_str(v, "version")) || !kty ||
            (strcmp(kty, "RSA") != 0 && strcmp(kty, "RSA-HSM") != 0 && strcmp(kty, "EC") != 0) ||
            cmk_json_int(v, "bits", 0) <= 0)
            goto bad;
    }
    return CMK_OK;
bad:
    return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                          "%s is damaged (versions missing or invalid): restore it from a backup",
                          path);
}

/* Loads keys/<name>/key.json. CMK_E_NOT_FOUND with a message naming key and vault. */
static cmk_err key_load(const vctx *c, const char *name, json_t **kj, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], file[CMK_PATH_MAX];
    cmk_err rc;

    *kj = NULL;
    rc = key_paths(c, name, dir, file, eb);
    if (rc == CMK_OK)
        rc = cmk_json_load(file, kj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND,
                              "key '%s' not found in vault '%s': create it with `cmkstore vault "
                              "key create --vault-name %s --name %s`",
                              name, c->name, c->name, name);
    if (rc == CMK_OK)
        rc = key_validate(*kj, file, eb);
    if (rc != CMK_OK) {
        json_decref(*kj);
        *kj = NULL;
    }
    return rc;
}

static cmk_err key_save(const vctx *c, const char *name, const json_t *kj, cmk_errbuf *eb)
{
    char dir[CMK_PATH_MAX], file[CMK_PATH_MAX];
    cmk_err rc = key_paths(c, name, dir, file, eb);

    if (rc == CMK_OK)
        rc = cmk_json_save(file, kj, 0600, eb);
    return rc;
}

static cmk_err vault_save(const vctx *c, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    cmk_err rc = cmk_path(path, sizeof(path), eb, "%s/vault.json", c->dir);

    if (rc == CMK_OK)
        rc = cmk_json_save(path, c->vj, 0600, eb);
    return rc;
}

static const char *recovery_level(const vctx *c)
{
    return vault_purge_protected(c) ? "Recoverable" : "Recoverable+Purgeable";
}

static int version_enabled(const json_t *kj, const json_t *ver)
{
    return cmk_json_bool(kj, "enabled", 1) && cmk_json_bool(ver, "enabled", 1);
}

/* Attributes of a version as `az keyvault key show` prints them. */
static json_t *attributes_json(const vctx *c, const json_t *kj, const json_t *ver)
{
    const char *created = cmk_json_str(ver, "created");
    const char *vu = cmk_json_str(ver, "updated"), *ku = cmk_json_str(kj, "updated");
    const char *updated = vu && ku && strcmp(ku, vu) > 0 ? ku : (vu ? vu : ku);
    json_t *a = json_object();

    if (!a)
        return NULL;
    if (jset(a, "created", str_or_null(created)) | jset(a, "updated", str_or_null(updated)) |
        jset(a, "enabled", json_boolean(version_enabled(kj, ver))) |
        jset(a, "exportable", json_false()) |
        jset(a, "recoveryLevel", json_string(recovery_level(c))) |
        jset(a, "recoverableDays", json_integer(vault_retention(c))) |
        jset(a, "expires", json_null()) | jset(a, "notBefore", json_null())) {
        json_decref(a);
        return NULL;
    }
    return a;
}

/* The public JWK of a version with its key operations. Never a private component. */
static json_t *jwk_json(const char *kid, const json_t *ver)
{
    const char *kty = cmk_json_str(ver, "kty");
    int ec = strcmp(kty, "EC") == 0;
    json_t *k = json_object(), *ops;
    int bad = 0;

    if (!k)
        return NULL;
    /* RSA-HSM pairs are generated without CKA_SIGN / CKA_VERIFY: they only protect keys. */
    ops = ec ? json_pack("[s,s]", "sign", "verify")
          : strcmp(kty, "RSA-HSM") == 0
              ? json_pack("[s,s,s,s]", "encrypt", "decrypt", "wrapKey", "unwrapKey")
              : json_pack("[s,s,s,s,s,s]", "encrypt", "decrypt", "sign", "verify", "wrapKey",
                          "unwrapKey");
    bad |= jset(k, "kid", json_string(kid));
    bad |= jset(k, "kty", json_string(kty));
    bad |= jset(k, "keyOps", ops);
    if (ec) {
        bad |= jset(k, "crv", str_or_null(cmk_json_str(ver, "crv")));
        bad |= jset(k, "x", str_or_null(cmk_json_str(ver, "x")));
        bad |= jset(k, "y", str_or_null(cmk_json_str(ver, "y")));
    } else {
        bad |= jset(k, "n", str_or_null(cmk_json_str(ver, "n")));
        bad |= jset(k, "e", str_or_null(cmk_json_str(ver, "e")));
    }
    if (bad) {
        json_decref(k);
        return NULL;
    }
    return k;
}

static cmk_err nomem(cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory building the vault's answer");
}

/* A key version as `az keyvault key show` prints it (plus the deletion fields of
 * `az keyvault key show-deleted` when the key is soft-deleted). */
static cmk_err key_json(const vctx *c, const char *name, const json_t *kj, const json_t *ver,
                        json_t **out, cmk_errbuf *eb)
{
    char kid[CMK_ID_MAX], rid[CMK_ID_MAX];
    json_t *j = json_object();
    cmk_err rc;
    int bad = 0;

    *out = NULL;
    if (!j)
        return nomem(eb);
    rc = cmk_vault_kid_format(kid, sizeof(kid), c->name, name, cmk_json_str(ver, "version"), eb);
    if (rc != CMK_OK)
        goto out;
    bad |= jset(j, "attributes", attributes_json(c, kj, ver));
    bad |= jset(j, "key", jwk_json(kid, ver));
    bad |= jset(j, "managed", json_null());
    bad |= jset(j, "tags", json_null());
    if (json_is_object(json_object_get(ver, "hsm"))) {
        /* Where an RSA-HSM version lives: the token and the key pair's label and CKA_ID. */
        const json_t *h = json_object_get(ver, "hsm");
        const char *tok = cmk_json_str(h, "token"), *lab = cmk_json_str(h, "label");
        char uri[CMK_ID_MAX];

        if (tok && lab &&
            cmk_p11_uri_build(tok, lab, cmk_json_str(ver, "version"), NULL, NULL, uri, sizeof(uri),
                              NULL) == CMK_OK)
            bad |= jset(j, "hsm",
                        json_pack("{s:s, s:s, s:s}", "token", tok, "label", lab, "keyUri", uri));
    }
    if (key_deleted(kj)) {
        snprintf(rid, sizeof(rid), CMK_VAULT_SCHEME "%s/deletedkeys/%s", c->name, name);
        bad |= jset(j, "deletedDate", json_string(key_deleted_field(kj, "deletedDate")));
        bad |=
            jset(j, "scheduledPurgeDate", json_string(key_deleted_field(kj, "scheduledPurgeDate")));
        bad |= jset(j, "recoveryId", json_string(rid));
    }
    if (bad) {
        rc = nomem(eb);
        goto out;
    }
    *out = j;
    j = NULL;
out:
    json_decref(j);
    return rc;
}

/* Hands j to the caller's out pointer (if any), else drops it. */
static void give(json_t **out, json_t *j)
{
    if (out)
        *out = j;
    else
        json_decref(j);
}

/* ---- keys: generation ----------------------------------------------------------------------- */

typedef enum { KT_RSA, KT_RSA_HSM, KT_EC } ktype;

static cmk_err parse_kty(const char *kty, unsigned size, ktype *t, unsigned *bits, cmk_errbuf *eb)
{
    if (!kty || !*kty || strcasecmp(kty, "RSA") == 0)
        *t = KT_RSA;
    else if (strcasecmp(kty, "RSA-HSM") == 0)
        *t = KT_RSA_HSM;
    else if (strcasecmp(kty, "EC") == 0)
        *t = KT_EC;
    else if (strcasecmp(kty, "EC-HSM") == 0 || strcasecmp(kty, "oct") == 0 ||
             strcasecmp(kty, "oct-HSM") == 0)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                              "key type %s is not supported by the local vault: use RSA (stores "
                              "accept only RSA and RSA-HSM keys)",
                              kty);
    else
        return cmk_errbuf_set(eb, CMK_E_INVAL, "unknown key type '%.40s': use RSA, RSA-HSM or EC",
                              kty);
    if (*t == KT_EC) {
        *bits = size ? size : 256;
        if (*bits != 256 && *bits != 384 && *bits != 521)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "EC key size must be 256, 384 or 521 (curve P-256, P-384, "
                                  "P-521), not %u",
                                  size);
    } else {
        *bits = size ? size : 2048;
        if (*bits != 2048 && *bits != 3072 && *bits != 4096)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "RSA key size must be 2048, 3072 or 4096, not %u", size);
    }
    return CMK_OK;
}

static const char *ec_curve(unsigned bits)
{
    return bits == 256 ? "P-256" : bits == 384 ? "P-384" : "P-521";
}

/* A big-number parameter of pkey as base64url of exactly `pad` bytes (0: minimal). */
static cmk_err bn_param_b64(const EVP_PKEY *pkey, const char *param, int pad, json_t *ver,
                            const char *field, cmk_errbuf *eb)
{
    BIGNUM *bn = NULL;
    unsigned char *buf = NULL;
    char *s = NULL;
    int n;
    cmk_err rc = CMK_OK;

    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot read the public key (%s)", field);
        goto out;
    }
    n = pad ? pad : BN_num_bytes(bn);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || BN_bn2binpad(bn, buf, n) != n) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot encode the public key (%s)", field);
        goto out;
    }
    s = b64url(buf, (size_t)n);
    if (!s || jset(ver, field, json_string(s)) != 0)
        rc = nomem(eb);
out:
    free(s);
    free(buf);
    BN_free(bn);
    ERR_clear_error();
    return rc;
}

/* Generates a software key. The caller frees *out with EVP_PKEY_free. */
static cmk_err generate_key(ktype t, unsigned bits, EVP_PKEY **out, cmk_errbuf *eb)
{
    if (t == KT_EC)
        *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", ec_curve(bits));
    else
        *out = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    ERR_clear_error();
    if (!*out)
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "key generation (%s %u) failed in OpenSSL",
                              t == KT_EC ? "EC" : "RSA", bits);
    return CMK_OK;
}

/* The version record of key.json: public JWK fields, no private material. */
static cmk_err version_record(EVP_PKEY *pkey, ktype t, unsigned bits, const char *version,
                              json_t **out, cmk_errbuf *eb)
{
    char now[32];
    json_t *v;
    cmk_err rc;

    now_iso(now);
    *out = NULL;
    v = json_pack("{s:s, s:s, s:i, s:s, s:s, s:b}", "version", version, "kty",
                  t == KT_EC        ? "EC"
                  : t == KT_RSA_HSM ? "RSA-HSM"
                                    : "RSA",
                  "bits", (int)bits, "created", now, "updated", now, "enabled", 1);
    if (!v)
        return nomem(eb);
    if (t == KT_EC) {
        int fb = (int)((bits + 7) / 8);
        rc = jset(v, "crv", json_string(ec_curve(bits))) ? nomem(eb) : CMK_OK;
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, fb, v, "x", eb);
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, fb, v, "y", eb);
    } else {
        rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0, v, "n", eb);
        if (rc == CMK_OK)
            rc = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0, v, "e", eb);
    }
    if (rc != CMK_OK) {
        json_decref(v);
        return rc;
    }
    *out = v;
    return CMK_OK;
}

/* Writes the private key as PKCS#8 PEM (0600). The PEM text lives only in a secure-heap BIO,
 * cleansed before it is freed. */
static cmk_err write_private(EVP_PKEY *pkey, const char *path, cmk_errbuf *eb)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *data = NULL;
    long n;
    cmk_err rc;

    if (!b || PEM_write_bio_PrivateKey(b, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(b, &data)) <= 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot encode a private key");
        goto out;
    }
    rc = cmk_write_file_atomic(path, data, (size_t)n, 0600, eb);
    cmk_cleanse(data, (size_t)n);
out:
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* vault keys are never encrypted: do not prompt */
}

/* Loads a version's private key (path known to exist in key.json). */
static cmk_err read_private(const char *path, const char *vkid, int want_rsa, EVP_PKEY **out,
                            cmk_errbuf *eb)
{
    char *text = NULL;
    size_t len = 0;
    BIO *b = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_read_file(path, PEM_MAX, &text, &len, eb);
    if (rc == CMK_E_NOT_FOUND) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                            "the private key of " KID_SHOW " is gone (purged?)", vkid);
        goto out;
    }
    if (rc != CMK_OK)
        goto out;
    b = BIO_new_mem_buf(text, (int)len);
    if (b)
        *out = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    if (!*out || (want_rsa && !EVP_PKEY_is_a(*out, "RSA"))) {
        EVP_PKEY_free(*out);
        *out = NULL;
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "the private key file of " KID_SHOW " cannot be read (damaged): "
                            "restore it from a backup",
                            vkid);
    }
out:
    BIO_free(b);
    if (text) {
        cmk_cleanse(text, len);
        free(text);
    }
    ERR_clear_error();
    return rc;
}

/*
 * ---- HSM-backed vaults (see kek/HSM.md) ------------------------------------------------------
 * A vault created with a PKCS#11 token (vault.json properties.hsm = {module, token, pinFile})
 * generates its RSA-HSM key versions inside that token (cmk_p11_key_generate): the private
 * half never leaves it. The token object's label is "<vault>.<key>" and the version string is
 * the hex of its CKA_ID, so a vault version and a token key pair are one and the same; the
 * version record keeps the public modulus and exponent (for `key show`) and the label. The
 * vault's policies, enable/disable, soft delete and audit apply unchanged; wrapping and
 * unwrapping go to the token through a PKCS#11 provider (which caches logged-in handles).
 */
typedef struct vhsm {
    char module[CMK_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    char pin_file[CMK_PATH_MAX]; /* "" : the PIN comes from the environment / pkcs11.json */
} vhsm;

/* 1 if the vault is HSM-backed (fills *hs), 0 if not. */
static int vault_hsm(const vctx *c, vhsm *hs)
{
    json_t *h = json_object_get(vprops(c), "hsm");
    const char *m = cmk_json_str(h, "module"), *t = cmk_json_str(h, "token");
    const char *pf = cmk_json_str(h, "pinFile");

    if (!json_is_object(h) || !m || !*m || !t || !*t)
        return 0;
    snprintf(hs->module, sizeof(hs->module), "%s", m);
    snprintf(hs->token, sizeof(hs->token), "%s", t);
    snprintf(hs->pin_file, sizeof(hs->pin_file), "%s", pf ? pf : "");
    return 1;
}

/* The token label of a vault key's versions. */
static cmk_err hsm_label(const char *vault, const char *key, char out[CMK_P11_LABEL_MAX + 1],
                         cmk_errbuf *eb)
{
    int n = snprintf(out, CMK_P11_LABEL_MAX + 1, "%s.%s", vault, key);

    if (n < 0 || n > CMK_P11_LABEL_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "vault and key names too long for a token label");
    return CMK_OK;
}

/* Prefixes eb's message (a PKCS#11 layer's) with what the vault was doing; keeps the code. */
static cmk_err hsm_context(cmk_err rc, cmk_errbuf *eb, const char *vault, const char *token)
{
    char why[sizeof(eb->msg)];

    memcpy(why, eb->msg, sizeof(why));
    return cmk_errbuf_set(eb, rc, "vault '%s' is backed by PKCS#11 token \"%s\": %s", vault, token,
                          why);
}

/* Opens the vault's token (operator operations; the provider uses its own cached handles). */
static cmk_err hsm_open(const vctx *c, const vhsm *hs, cmk_p11 **h, cmk_errbuf *eb)
{
    cmk_err rc = cmk_p11_open_home(c->home, hs->token, hs->module,
                                   hs->pin_file[0] ? hs->pin_file : NULL, h, eb);

    return rc == CMK_OK ? rc : hsm_context(rc, eb, c->name, hs->token);
}

/* The version's label as recorded (older records: derived from the names). */
static cmk_err hsm_version_label(const vctx *c, const char *key, const json_t *ver,
                                 char out[CMK_P11_LABEL_MAX + 1], cmk_errbuf *eb)
{
    const char *l = cmk_json_str(json_object_get(ver, "hsm"), "label");

    if (l && *l && strlen(l) <= CMK_P11_LABEL_MAX) {
        memcpy(out, l, strlen(l) + 1);
        return CMK_OK;
    }
    return hsm_label(c->name, key, out, eb);
}

/* Generates the next version of key `name` in the token (called with the vault locked, so
 * the token's sequence numbers follow the order of key.json). *ver_out receives the version
 * record; *h stays open so the caller can destroy the pair if key.json cannot be saved. */
static cmk_err hsm_generate_version(const vctx *c, const vhsm *hs, const char *name, unsigned bits,
                                    cmk_p11 **h, json_t **ver_out, char version[VERSION_HEX + 1],
                                    cmk_errbuf *eb)
{
    char label[CMK_P11_LABEL_MAX + 1];
    cmk_p11_key_attrs at;
    cmk_p11_version v;
    EVP_PKEY *pub = NULL;
    json_t *rec = NULL;
    int made = 0;
    cmk_err rc;

    *ver_out = NULL;
    rc = hsm_label(c->name, name, label, eb);
    if (rc == CMK_OK)
        rc = hsm_open(c, hs, h, eb);
    if (rc == CMK_OK) {
        rc = cmk_p11_key_generate(*h, label, bits, &v, eb);
        if (rc != CMK_OK)
            rc = hsm_context(rc, eb, c->name, hs->token);
    }
    if (rc != CMK_OK)
        goto out;
    made = 1;
    /* The generator checked these already; checked again from the stored object, since a
     * key that could leave the token would defeat the point of RSA-HSM. */
    rc = cmk_p11_key_attrs_get(*h, label, v.version, &at, eb);
    if (rc == CMK_OK && (at.sensitive != 1 || at.extractable != 0))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "PKCS#11 token \"%s\" reports the new private key of '%s' as "
                            "sensitive=%d extractable=%d: refused (it must be sensitive and "
                            "non-extractable)",
                            hs->token, name, at.sensitive, at.extractable);
    if (rc == CMK_OK)
        rc = cmk_p11_key_public(*h, label, v.version, &pub, eb);
    if (rc == CMK_OK)
        rc = version_record(pub, KT_RSA_HSM, bits, v.version, &rec, eb);
    if (rc == CMK_OK &&
        jset(rec, "hsm", json_pack("{s:s, s:s}", "token", hs->token, "label", label)) != 0)
        rc = nomem(eb);
    if (rc != CMK_OK)
        goto out;
    memcpy(version, v.version, VERSION_HEX + 1);
    *ver_out = rec;
    rec = NULL;
    made = 0;
out:
    if (made) {
        cmk_errbuf ignore = {0};
        (void)cmk_p11_key_destroy(*h, label, v.version, &ignore);
    }
    json_decref(rec);
    EVP_PKEY_free(pub);
    return rc;
}

/* Destroys the token objects of the RSA-HSM versions recorded in kj (purge). Versions that
 * are already gone are fine; any other failure stops before the purge removes anything. */
static cmk_err hsm_destroy_versions(const vctx *c, const char *key, const json_t *kj,
                                    cmk_errbuf *eb)
{
    char label[CMK_P11_LABEL_MAX + 1];
    json_t *v;
    cmk_p11 *h = NULL;
    vhsm hs;
    size_t i;
    cmk_err rc = CMK_OK;

    json_array_foreach(key_versions(kj), i, v)
    {
        const char *kty = cmk_json_str(v, "kty");
        if (!kty || strcmp(kty, "RSA-HSM") != 0)
            continue;
        if (!h) {
            if (!vault_hsm(c, &hs))
                return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                                      "key '%s' in vault '%s' has RSA-HSM versions but the "
                                      "vault names no PKCS#11 token (vault.json damaged)",
                                      key, c->name);
            rc = hsm_open(c, &hs, &h, eb);
            if (rc != CMK_OK)
                break;
        }
        rc = hsm_version_label(c, key, v, label, eb);
        if (rc == CMK_OK)
            rc = cmk_p11_key_destroy(h, label, cmk_json_str(v, "version"), eb);
        if (rc == CMK_E_KEY_NOT_FOUND) {
            cmk_errbuf_clear(eb);
            rc = CMK_OK;
        }
        if (rc != CMK_OK) {
            rc = hsm_context(rc, eb, c->name, hs.token);
            break;
        }
    }
    cmk_p11_close(h);
    return rc;
}

/* path made absolute against the working directory (out may be path). */
static cmk_err absolute(const char *path, char *out, size_t cap, const char *what, cmk_errbuf *eb)
{
    char cwd[PATH_MAX], tmp[CMK_PATH_MAX];
    int n;

    if (path[0] == '/')
        n = snprintf(tmp, sizeof(tmp), "%s", path);
    else if (!getcwd(cwd, sizeof(cwd)))
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot resolve %s %s", what, path);
    else
        n = snprintf(tmp, sizeof(tmp), "%s/%s", cwd, path);
    if (n < 0 || (size_t)n >= cap || (size_t)n >= sizeof(tmp))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s path too long", what);
    memcpy(out, tmp, (size_t)n + 1);
    return CMK_OK;
}

/* Checks and records the token of a new HSM-backed vault: the module loads, the token is
 * there and the PIN logs in, so a mistake shows now rather than at the first key. */
static cmk_err hsm_configure(const char *home, const cmk_vault_opts *o, json_t *vj, cmk_errbuf *eb)
{
    char module[CMK_PATH_MAX], pinf[CMK_PATH_MAX] = "";
    cmk_p11 *h = NULL;
    cmk_err rc;

    rc = cmk_p11_resolve_module(home, o->hsm_module, module, sizeof(module), eb);
    if (rc != CMK_OK)
        return rc;
    /* Recorded absolute, so the vault does not depend on the directory a command ran in;
     * symbolic links are kept (a distribution's module link outlives its target). A bare
     * name is left to the dynamic loader's search path. */
    if (strchr(module, '/') && module[0] != '/') {
        rc = absolute(module, module, sizeof(module), "--hsm-module", eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (o->hsm_pin_file && *o->hsm_pin_file) {
        rc = absolute(o->hsm_pin_file, pinf, sizeof(pinf), "--hsm-pin-file", eb);
        if (rc != CMK_OK)
            return rc;
    }
    rc = cmk_p11_open_home(home, o->hsm_token, module, pinf[0] ? pinf : NULL, &h, eb);
    cmk_p11_close(h);
    if (rc != CMK_OK)
        return rc;
    if (jset(json_object_get(vj, "properties"), "hsm",
             json_pack("{s:s, s:s, s:o}", "module", module, "token", o->hsm_token, "pinFile",
                       pinf[0] ? json_string(pinf) : json_null())))
        return nomem(eb);
    return CMK_OK;
}

/* ---- vaults ------------------------------------------------------------------------------- */

static json_t *vault_new_json(const char *name, const char *tenant, int purge_protection,
                              int retention)
{
    char now[32], id[128], uri[128];

    now_iso(now);
    snprintf(id, sizeof(id), "/cmkstore/vaults/%s", name);
    snprintf(uri, sizeof(uri), CMK_VAULT_SCHEME "%s/", name);
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:b, s:b, s:i, s:[]}}", "id", id, "name",
                     name, "type", "cmkstore/vaults", "created", now, "properties", "vaultUri", uri,
                     "tenantId", tenant, "enablePurgeProtection", purge_protection,
                     "enableSoftDelete", 1, "softDeleteRetentionInDays", retention,
                     "accessPolicies");
}

static cmk_err copy_out(json_t **out, const json_t *j, cmk_errbuf *eb)
{
    json_t *d;

    if (!out)
        return CMK_OK;
    d = json_deep_copy(j);
    if (!d)
        return nomem(eb);
    *out = d;
    return CMK_OK;
}

cmk_err cmk_vault_create(const char *home, const char *name, const cmk_vault_opts *o, json_t **out,
                         cmk_errbuf *eb)
{
    char vaults[CMK_PATH_MAX], stage[CMK_PATH_MAX], p[CMK_PATH_MAX], tenant[37], rnd[17];
    int retention = o && o->retention_days ? o->retention_days : RETENTION_DEF;
    audit_rec a = {.identity = OPERATOR, .op = "vaultCreate"};
    cmk_errbuf local;
    int staged = 0, fd;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    if (!home || !*home) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
        goto out;
    }
    rc = cmk_name_check(name, "vault", eb);
    if (rc != CMK_OK)
        goto out;
    if (retention < RETENTION_MIN || retention > RETENTION_MAX) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "soft-delete retention must be %d to %d days, not %d",
                            RETENTION_MIN, RETENTION_MAX, retention);
        goto out;
    }
    snprintf(c.name, sizeof(c.name), "%s", name);
    snprintf(c.home, sizeof(c.home), "%s", home);
    rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = cmk_path(c.dir, sizeof(c.dir), eb, "%s/%s", vaults, name);
    if (rc != CMK_OK)
        goto out;
    /* Checked before anything is written, so a refused create changes nothing. */
    if (cmk_exists(c.dir)) {
        if (vctx_load(&c, eb) == CMK_OK && vault_deleted(&c, NULL, NULL))
            rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                                "vault '%s' exists and is soft-deleted: recover it (`cmkstore "
                                "vault recover --name %s`) or purge it first",
                                name, name);
        else
            rc = cmk_errbuf_set(eb, CMK_E_EXISTS, "vault '%s' already exists in %s", name, home);
        json_decref(c.vj);
        c.vj = NULL;
        goto out;
    }
    rc = cmk_home_tenant(home, tenant, eb);
    if (rc == CMK_OK)
        rc = cmk_mkdir_p(vaults, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(stage, sizeof(stage), eb, "%s/.new-%s", vaults, rnd);
    if (rc != CMK_OK)
        goto out;
    /* The vault is built complete in a staging directory and renamed into place: other
     * processes see no vault or a whole one, and a concurrent create of the same name
     * fails at the rename. */
    if (mkdir(stage, 0700) != 0) {
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", stage);
        goto out;
    }
    staged = 1;
    c.vj = vault_new_json(name, tenant, o && o->purge_protection, retention);
    if (!c.vj) {
        rc = nomem(eb);
        goto out;
    }
    if (o && o->hsm_token && *o->hsm_token) {
        rc = hsm_configure(home, o, c.vj, eb);
        if (rc != CMK_OK)
            goto out;
    } else if (o && ((o->hsm_module && *o->hsm_module) || (o->hsm_pin_file && *o->hsm_pin_file))) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "an HSM-backed vault needs the label of its PKCS#11 token "
                            "(--hsm-token) besides the module and PIN file");
        goto out;
    }
    rc = cmk_path(p, sizeof(p), eb, "%s/keys", stage);
    if (rc == CMK_OK && mkdir(p, 0700) != 0)
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", p);
    if (rc == CMK_OK)
        rc = cmk_path(p, sizeof(p), eb, "%s/lock", stage);
    if (rc == CMK_OK) {
        fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", p);
        else
            close(fd);
    }
    if (rc == CMK_OK)
        rc = cmk_path(p, sizeof(p), eb, "%s/vault.json", stage);
    if (rc == CMK_OK)
        rc = cmk_json_save(p, c.vj, 0600, eb);
    if (rc != CMK_OK)
        goto out;
    if (rename(stage, c.dir) != 0) {
        rc = errno == EEXIST || errno == ENOTEMPTY
                 ? cmk_errbuf_set(eb, CMK_E_EXISTS,
                                  "vault '%s' already exists in %s (created concurrently)", name,
                                  home)
                 : cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create vault %s",
                                  c.dir);
        goto out;
    }
    staged = 0;
    c.located = 1;
    rc = cmk_fsync_dir(vaults, eb);
    if (rc == CMK_OK)
        rc = copy_out(out, c.vj, eb);
out:
    if (staged)
        (void)cmk_rm_rf(stage, NULL);
    rc = mgmt_finish(&c, &a, rc, eb);
    if (rc != CMK_OK && out && *out) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

cmk_err cmk_vault_show(const char *home, const char *name, json_t **out, cmk_errbuf *eb)
{
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = vctx_open(&c, home, name, 0, eb);
    if (rc == CMK_OK) {
        give(out, c.vj);
        c.vj = NULL;
    }
    vctx_close(&c);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    const char *x = cmk_json_str(*(json_t *const *)a, "name");
    const char *y = cmk_json_str(*(json_t *const *)b, "name");
    return strcmp(x ? x : "", y ? y : "");
}

/* Sorts a JSON array of objects by their "name". */
static cmk_err sort_by_name(json_t *arr, cmk_errbuf *eb)
{
    size_t n = json_array_size(arr);
    json_t **v;

    if (n < 2)
        return CMK_OK;
    v = malloc(n * sizeof(*v));
    if (!v)
        return nomem(eb);
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof(*v), cmp_name);
    for (size_t i = 0; i < n; i++)
        (void)json_array_set_new(arr, i, v[i]); /* in-range index: cannot fail */
    free(v);
    return CMK_OK;
}

/* Names of the valid entries of dir (vault or key directories), in a JSON array; a missing
 * directory is an empty list. Staging and purge leftovers start with '.' and are skipped. */
static cmk_err list_names(const char *dir, const char *what, json_t **out, cmk_errbuf *eb)
{
    struct dirent *de;
    json_t *arr = json_array();
    cmk_err rc = CMK_OK;
    DIR *d = NULL;

    *out = NULL;
    if (!arr) {
        rc = nomem(eb);
        goto out;
    }
    d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot read %s", dir);
        goto out;
    }
    while ((de = readdir(d)) != NULL) {
        if (cmk_name_check(de->d_name, what, NULL) != CMK_OK)
            continue;
        if (json_array_append_new(arr, json_string(de->d_name)) != 0) {
            rc = nomem(eb);
            goto out;
        }
    }
out:
    if (d)
        (void)closedir(d);
    if (rc == CMK_OK) {
        *out = arr;
        arr = NULL;
    }
    json_decref(arr);
    return rc;
}

cmk_err cmk_vault_list(const char *home, json_t **out, cmk_errbuf *eb)
{
    char vaults[CMK_PATH_MAX];
    json_t *names = NULL, *arr = NULL, *n;
    cmk_errbuf local;
    size_t i;
    cmk_err rc;

    EB_ENSURE(eb, local);
    if (out)
        *out = NULL;
    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = list_names(vaults, "vault", &names, eb);
    if (rc != CMK_OK)
        goto out;
    arr = json_array();
    if (!arr) {
        rc = nomem(eb);
        goto out;
    }
    json_array_foreach(names, i, n)
    {
        vctx c;
        cmk_errbuf ignore = {0};

        vctx_init(&c);
        /* A vault being purged or created right now is simply not listed. */
        if (vctx_open(&c, home, json_string_value(n), 0, &ignore) == CMK_OK &&
            json_array_append(arr, c.vj) != 0)
            rc = nomem(eb);
        vctx_close(&c);
        if (rc != CMK_OK)
            goto out;
    }
    rc = sort_by_name(arr, eb);
    if (rc == CMK_OK) {
        give(out, arr);
        arr = NULL;
    }
out:
    json_decref(names);
    json_decref(arr);
    return rc;
}

static void deletion_dates(int retention, char date[32], char purge[32])
{
    int64_t now = cmk_now();

    cmk_iso8601((time_t)now, date);
    cmk_iso8601((time_t)(now + (int64_t)retention * DAY_SECONDS), purge);
}

cmk_err cmk_vault_delete(const char *home, const char *name, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "vaultDelete"};
    char date[32], purge[32];
    const char *d0, *p0;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    rc = vctx_open(&c, home, name, 1, eb);
    if (rc != CMK_OK)
        goto out;
    if (vault_deleted(&c, &d0, &p0)) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is already deleted (since %s, scheduled purge %s)", name,
                            d0, p0);
        goto out;
    }
    deletion_dates(vault_retention(&c), date, purge);
    if (jset(vprops(&c), "deletionDate", json_string(date)) |
        jset(vprops(&c), "scheduledPurgeDate", json_string(purge))) {
        rc = nomem(eb);
        goto out;
    }
    rc = vault_save(&c, eb);
out:
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_recover(const char *home, const char *name, json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "vaultRecover"};
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = vctx_open(&c, home, name, 1, eb);
    if (rc != CMK_OK)
        goto out;
    if (!vault_deleted(&c, NULL, NULL)) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED, "vault '%s' is not deleted: nothing to recover",
                            name);
        goto out;
    }
    (void)json_object_del(vprops(&c), "deletionDate");
    (void)json_object_del(vprops(&c), "scheduledPurgeDate");
    rc = vault_save(&c, eb);
    if (rc == CMK_OK)
        rc = copy_out(out, c.vj, eb);
out:
    return mgmt_finish(&c, &a, rc, eb);
}

/* Purge protection: refuses until the scheduled purge date has passed. */
static cmk_err purge_allowed(const vctx *c, const char *what, const char *purge_date,
                             const char *recover_cmd, cmk_errbuf *eb)
{
    time_t when = cmk_parse_iso8601(purge_date);

    if (!vault_purge_protected(c) || (when != (time_t)-1 && (int64_t)when <= cmk_now()))
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_REFUSED,
                          "%s is under purge protection: it cannot be purged before its "
                          "scheduled purge date %s; recover it with `%s` to use it again",
                          what, purge_date, recover_cmd);
}

/* Destroys the token objects of every RSA-HSM version of every key of an HSM-backed vault
 * that is being purged. */
static cmk_err hsm_purge_all(const vctx *c, cmk_errbuf *eb)
{
    char keys[CMK_PATH_MAX];
    json_t *names = NULL, *n;
    size_t i;
    cmk_err rc;

    rc = cmk_path(keys, sizeof(keys), eb, "%s/keys", c->dir);
    if (rc == CMK_OK)
        rc = list_names(keys, "key", &names, eb);
    json_array_foreach(names, i, n)
    {
        json_t *kj = NULL;

        if (rc != CMK_OK)
            break;
        rc = key_load(c, json_string_value(n), &kj, eb);
        if (rc == CMK_OK)
            rc = hsm_destroy_versions(c, json_string_value(n), kj, eb);
        json_decref(kj);
    }
    json_decref(names);
    return rc;
}

cmk_err cmk_vault_purge(const char *home, const char *name, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "vaultPurge"};
    char vaults[CMK_PATH_MAX], grave[CMK_PATH_MAX], what[96], cmd[128], rnd[17];
    const char *date, *purge;
    cmk_errbuf local;
    vhsm hs;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    rc = vctx_open(&c, home, name, 1, eb);
    if (rc != CMK_OK)
        goto out;
    if (!vault_deleted(&c, &date, &purge)) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is not deleted: only a soft-deleted vault can be purged "
                            "(`cmkstore vault delete --name %s` first)",
                            name, name);
        goto out;
    }
    snprintf(what, sizeof(what), "vault '%s'", name);
    snprintf(cmd, sizeof(cmd), "cmkstore vault recover --name %s", name);
    rc = purge_allowed(&c, what, purge, cmd, eb);
    if (rc == CMK_OK && vault_hsm(&c, &hs))
        rc = hsm_purge_all(&c, eb);
    if (rc == CMK_OK)
        rc = cmk_path(vaults, sizeof(vaults), eb, "%s/vaults", home);
    if (rc == CMK_OK)
        rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(grave, sizeof(grave), eb, "%s/.purged-%s", vaults, rnd);
    if (rc != CMK_OK)
        goto out;
    /* Renamed away first: the vault disappears at once for every reader; the removal of the
     * tree after that is only cleanup. */
    if (rename(c.dir, grave) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot purge vault %s", c.dir);
        goto out;
    }
    c.located = 0; /* its audit log went with it */
    rc = cmk_fsync_dir(vaults, eb);
    vctx_close(&c);
    if (rc == CMK_OK)
        rc = cmk_rm_rf(grave, eb);
out:
    return mgmt_finish(&c, &a, rc, eb);
}

/* ---- access policies ------------------------------------------------------------------------ */

static json_t *policies(const vctx *c)
{
    return json_object_get(vprops(c), "accessPolicies");
}

static json_t *find_policy(const vctx *c, const char *object_id, size_t *index)
{
    json_t *ps = policies(c), *p;
    size_t i;

    json_array_foreach(ps, i, p)
    {
        const char *o = cmk_json_str(p, "objectId");
        if (o && strcasecmp(o, object_id) == 0) {
            if (index)
                *index = i;
            return p;
        }
    }
    return NULL;
}

static cmk_err check_object_id(const char *object_id, char out[37], cmk_errbuf *eb)
{
    if (!is_uuid_ci(object_id))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad object id '%.80s': give the principalId (a UUID) of an "
                              "identity; `cmkstore identity show --name NAME` prints it",
                              object_id ? object_id : "");
    for (int i = 0; i < 36; i++)
        out[i] = (char)(object_id[i] >= 'A' && object_id[i] <= 'F' ? object_id[i] - 'A' + 'a'
                                                                   : object_id[i]);
    out[36] = '\0';
    return CMK_OK;
}

cmk_err cmk_vault_set_policy(const char *home, const char *vault, const char *object_id,
                             const char *const *perms, size_t nperms, json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "setPolicy"};
    char oid[37], tenant[37];
    unsigned granted = 0;
    size_t ngranted = 0;
    json_t *keys = NULL, *pol;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = check_object_id(object_id, oid, eb);
    if (rc != CMK_OK)
        goto out;
    a.object_id = oid;
    if (nperms == 0 || !perms) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "no key permissions given: name some of " PERM_LIST
                            " (a store needs " STORE_PERMS ")");
        goto out;
    }
    for (size_t i = 0; i < nperms; i++) {
        size_t k;
        if (perms[i] && strcasecmp(perms[i], "all") == 0) {
            granted = (1u << NPERMS) - 1;
            continue;
        }
        for (k = 0; k < NPERMS; k++)
            if (perms[i] && strcasecmp(perms[i], key_perms[k]) == 0)
                break;
        if (k == NPERMS) {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "unknown key permission '%.40s': use " PERM_LIST,
                                perms[i] ? perms[i] : "(null)");
            goto out;
        }
        granted |= 1u << k;
    }
    keys = json_array();
    for (size_t k = 0; keys && k < NPERMS; k++) {
        if (!(granted & (1u << k)))
            continue;
        ngranted++;
        if (json_array_append_new(keys, json_string(key_perms[k])) != 0)
            break;
    }
    if (!keys || json_array_size(keys) != ngranted) {
        rc = nomem(eb);
        goto out;
    }
    rc = vctx_open(&c, home, vault, 1, eb);
    if (rc == CMK_OK && vault_deleted(&c, NULL, NULL))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is deleted: recover it first (`cmkstore vault recover "
                            "--name %s`)",
                            vault, vault);
    if (rc == CMK_OK)
        rc = cmk_home_tenant(home, tenant, eb);
    if (rc != CMK_OK)
        goto out;
    pol = find_policy(&c, oid, NULL);
    if (pol) {
        if (jset(json_object_get(pol, "permissions"), "keys", json_incref(keys)) != 0) {
            rc = nomem(eb);
            goto out;
        }
    } else {
        pol = json_pack("{s:s, s:s, s:{s:O}}", "objectId", oid, "tenantId", tenant, "permissions",
                        "keys", keys);
        if (!pol || json_array_append_new(policies(&c), pol) != 0) {
            rc = nomem(eb);
            goto out;
        }
    }
    rc = vault_save(&c, eb);
    if (rc == CMK_OK)
        rc = copy_out(out, c.vj, eb);
out:
    json_decref(keys);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_delete_policy(const char *home, const char *vault, const char *object_id,
                                json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "deletePolicy"};
    cmk_errbuf local;
    char oid[37];
    size_t idx = 0;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = check_object_id(object_id, oid, eb);
    if (rc != CMK_OK)
        goto out;
    a.object_id = oid;
    rc = vctx_open(&c, home, vault, 1, eb);
    if (rc == CMK_OK && vault_deleted(&c, NULL, NULL))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "vault '%s' is deleted: recover it first (`cmkstore vault recover "
                            "--name %s`)",
                            vault, vault);
    if (rc != CMK_OK)
        goto out;
    if (!find_policy(&c, oid, &idx)) {
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "vault '%s' has no access policy for object id %s",
                            vault, oid);
        goto out;
    }
    if (json_array_remove(policies(&c), idx) != 0) {
        rc = nomem(eb);
        goto out;
    }
    rc = vault_save(&c, eb);
    if (rc == CMK_OK)
        rc = copy_out(out, c.vj, eb);
out:
    return mgmt_finish(&c, &a, rc, eb);
}

/* ---- keys: management ------------------------------------------------------------------- */

/* Opens the vault for a key operation: the vault must exist and not be deleted. */
static cmk_err key_op_open(vctx *c, const char *home, const char *vault, const char *name, int lock,
                           cmk_errbuf *eb)
{
    cmk_err rc = CMK_OK;

    if (name)
        rc = cmk_name_check(name, "key", eb);
    if (rc == CMK_OK)
        rc = vctx_open(c, home, vault, lock, eb);
    if (rc == CMK_OK && vault_deleted(c, NULL, NULL))
        rc = vault_deleted_err(c, eb);
    return rc;
}

static cmk_err key_deleted_err(const vctx *c, const char *name, const json_t *kj, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                          "key '%s' in vault '%s' is deleted (since %s, scheduled purge %s): "
                          "recover it with `cmkstore vault key recover --vault-name %s --name %s`",
                          name, c->name, key_deleted_field(kj, "deletedDate"),
                          key_deleted_field(kj, "scheduledPurgeDate"), c->name, name);
}

/* Opens the vault and loads key `name` for an operation on a live key: a soft-deleted key is
 * refused with the hint to recover it. *kj is the caller's to release. */
static cmk_err key_open_live(vctx *c, const char *home, const char *vault, const char *name,
                             int lock, json_t **kj, cmk_errbuf *eb)
{
    cmk_err rc = key_op_open(c, home, vault, name, lock, eb);

    if (rc == CMK_OK)
        rc = key_load(c, name, kj, eb);
    if (rc == CMK_OK && key_deleted(*kj))
        rc = key_deleted_err(c, name, *kj, eb);
    return rc;
}

/* A fresh version id, unique within the key. */
static cmk_err new_version_id(const json_t *kj, char out[VERSION_HEX + 1], cmk_errbuf *eb)
{
    cmk_err rc;

    do {
        rc = cmk_random_hex(out, VERSION_HEX / 2, eb);
    } while (rc == CMK_OK && kj && key_find_version(kj, out));
    return rc;
}

cmk_err cmk_vault_key_create(const char *home, const char *vault, const char *name, const char *kty,
                             unsigned size, json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "create"};
    char kdir[CMK_PATH_MAX], pem[CMK_PATH_MAX], version[VERSION_HEX + 1] = "", now[32];
    json_t *kj = NULL, *ver = NULL;
    EVP_PKEY *pkey = NULL;
    cmk_p11 *hsm = NULL;
    int pem_written = 0, hsm_made = 0;
    vhsm hs;
    cmk_errbuf local;
    unsigned bits = 0;
    ktype t = KT_RSA;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    a.key = name;
    rc = parse_kty(kty, size, &t, &bits, eb);
    if (rc == CMK_OK)
        rc = key_op_open(&c, home, vault, name, 0, eb);
    if (rc != CMK_OK)
        goto out;
    /* Early refusal of a soft-deleted name, before spending seconds on key generation. */
    rc = key_load(&c, name, &kj, eb);
    if (rc == CMK_OK && key_deleted(kj)) {
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "key '%s' in vault '%s' is soft-deleted: recover or purge it first "
                            "(`cmkstore vault key recover|purge --vault-name %s --name %s`)",
                            name, vault, vault, name);
        goto out;
    }
    if (rc != CMK_OK && rc != CMK_E_NOT_FOUND)
        goto out;
    cmk_errbuf_clear(eb);
    json_decref(kj);
    kj = NULL;
    if (t == KT_RSA_HSM) {
        if (!vault_hsm(&c, &hs)) {
            rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                                "vault '%s' is not HSM-backed: RSA-HSM keys are generated in a "
                                "PKCS#11 token; create an HSM-backed vault (`cmkstore vault "
                                "create --name NAME --hsm-token LABEL --hsm-module PATH "
                                "--hsm-pin-file FILE`, see kek/HSM.md) or use --kty RSA",
                                c.name);
            goto out;
        }
    } else {
        /* Generated outside the lock: an RSA-4096 key takes seconds and must not stall the
         * vault's other writers. */
        rc = generate_key(t, bits, &pkey, eb);
        if (rc != CMK_OK)
            goto out;
    }

    rc = vctx_lock(&c, eb);
    if (rc == CMK_OK)
        rc = vctx_load(&c, eb);
    if (rc == CMK_OK && vault_deleted(&c, NULL, NULL))
        rc = vault_deleted_err(&c, eb);
    if (rc != CMK_OK)
        goto out;
    rc = key_load(&c, name, &kj, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        now_iso(now);
        kj = json_pack("{s:s, s:s, s:s, s:b, s:[]}", "name", name, "created", now, "updated", now,
                       "enabled", 1, "versions");
        rc = kj ? CMK_OK : nomem(eb);
    } else if (rc == CMK_OK && key_deleted(kj)) {
        rc = cmk_errbuf_set(eb, CMK_E_EXISTS,
                            "key '%s' in vault '%s' is soft-deleted: recover or purge it first",
                            name, vault);
    }
    if (rc == CMK_OK && t == KT_RSA_HSM) {
        /* In the token, under the vault's lock: the token's sequence numbers then follow the
         * order of key.json, whose last version is the latest. */
        rc = hsm_generate_version(&c, &hs, name, bits, &hsm, &ver, version, eb);
        if (rc != CMK_OK)
            goto out;
        hsm_made = 1;
        if (key_find_version(kj, version)) /* a CKA_ID the token reused: never name it twice */
            rc = cmk_errbuf_set(eb, CMK_E_EXISTS, "key '%s' already has version %s", name, version);
        if (rc == CMK_OK)
            rc = key_paths(&c, name, kdir, NULL, eb);
        if (rc == CMK_OK)
            rc = cmk_mkdir_p(kdir, 0700, eb);
        if (rc == CMK_OK && json_array_append(key_versions(kj), ver) != 0)
            rc = nomem(eb);
        if (rc == CMK_OK)
            rc = key_save(&c, name, kj, eb);
        if (rc != CMK_OK)
            goto out;
        hsm_made = 0;
        a.version = version;
        if (out)
            rc = key_json(&c, name, kj, ver, out, eb);
        goto out;
    }
    if (rc == CMK_OK)
        rc = new_version_id(kj, version, eb);
    if (rc == CMK_OK)
        rc = version_record(pkey, t, bits, version, &ver, eb);
    if (rc == CMK_OK)
        rc = key_paths(&c, name, kdir, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_mkdir_p(kdir, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_path(pem, sizeof(pem), eb, "%s/%s.pem", kdir, version);
    if (rc != CMK_OK)
        goto out;
    /* The private key first, then key.json naming it: key.json is the commit point. */
    rc = write_private(pkey, pem, eb);
    if (rc != CMK_OK)
        goto out;
    pem_written = 1;
    if (json_array_append(key_versions(kj), ver) != 0) {
        rc = nomem(eb);
        goto out;
    }
    rc = key_save(&c, name, kj, eb);
    if (rc != CMK_OK)
        goto out;
    pem_written = 0;
    a.version = version;
    if (out)
        rc = key_json(&c, name, kj, ver, out, eb);
out:
    if (pem_written)
        (void)unlink(pem);
    if (hsm_made) {
        /* key.json does not name it: the pair would be an orphan in the token. */
        char label[CMK_P11_LABEL_MAX + 1];
        cmk_errbuf ignore = {0};
        if (hsm_label(c.name, name, label, &ignore) == CMK_OK)
            (void)cmk_p11_key_destroy(hsm, label, version, &ignore);
    }
    cmk_p11_close(hsm);
    EVP_PKEY_free(pkey);
    json_decref(ver);
    json_decref(kj);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_key_show(const char *home, const char *vault, const char *name,
                           const char *version, json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "get", .key = name, .version = version};
    json_t *kj = NULL, *ver, *res = NULL;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    if (version && *version && !is_version(version)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "bad key version '%.80s': a version is 32 lowercase hex digits",
                            version);
        goto out;
    }
    rc = key_op_open(&c, home, vault, name, 0, eb);
    if (rc == CMK_OK)
        rc = key_load(&c, name, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    ver = version && *version ? key_find_version(kj, version) : key_latest(kj);
    if (!ver) {
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "key '%s' in vault '%s' has no version %s", name,
                            vault, version);
        goto out;
    }
    a.version = cmk_json_str(ver, "version");
    rc = key_json(&c, name, kj, ver, &res, eb);
    if (rc == CMK_OK) {
        give(out, res);
        res = NULL;
    }
out:
    rc = mgmt_finish(&c, &a, rc, eb);
    json_decref(kj);
    return rc;
}

/* The entries of `key list` / `key list-deleted` / `key list-versions`. */
static json_t *key_item_json(const vctx *c, const char *name, const json_t *kj, const json_t *ver,
                             int versioned)
{
    char kid[CMK_ID_MAX];
    json_t *j;

    if (cmk_vault_kid_format(kid, sizeof(kid), c->name, name,
                             versioned ? cmk_json_str(ver, "version") : NULL, NULL) != CMK_OK)
        return NULL;
    j = json_pack("{s:s, s:s, s:s, s:n, s:n}", "kid", kid, "name", name, "kty",
                  cmk_json_str(ver, "kty"), "tags", "managed");
    if (j && jset(j, "attributes", attributes_json(c, kj, ver)) != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Lists keys: deleted == 0 the live ones, 1 the soft-deleted ones. */
static cmk_err key_list(const char *home, const char *vault, int deleted, json_t **out,
                        cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = deleted ? "listDeleted" : "list"};
    char kdir[CMK_PATH_MAX], rid[CMK_ID_MAX];
    json_t *names = NULL, *arr = NULL, *n;
    cmk_errbuf local;
    size_t i;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = key_op_open(&c, home, vault, NULL, 0, eb);
    if (rc == CMK_OK)
        rc = cmk_path(kdir, sizeof(kdir), eb, "%s/keys", c.dir);
    if (rc == CMK_OK)
        rc = list_names(kdir, "key", &names, eb);
    if (rc != CMK_OK)
        goto out;
    arr = json_array();
    if (!arr) {
        rc = nomem(eb);
        goto out;
    }
    json_array_foreach(names, i, n)
    {
        const char *name = json_string_value(n);
        cmk_errbuf ignore = {0};
        json_t *kj = NULL, *item;

        /* Keys being created or purged right now are skipped, not errors. */
        if (key_load(&c, name, &kj, &ignore) != CMK_OK)
            continue;
        if (key_deleted(kj) != deleted) {
            json_decref(kj);
            continue;
        }
        item = key_item_json(&c, name, kj, key_latest(kj), 0);
        if (item && deleted) {
            snprintf(rid, sizeof(rid), CMK_VAULT_SCHEME "%s/deletedkeys/%s", c.name, name);
            if (jset(item, "recoveryId", json_string(rid)) |
                jset(item, "deletedDate", json_string(key_deleted_field(kj, "deletedDate"))) |
                jset(item, "scheduledPurgeDate",
                     json_string(key_deleted_field(kj, "scheduledPurgeDate")))) {
                json_decref(item);
                item = NULL;
            }
        }
        json_decref(kj);
        if (!item || json_array_append_new(arr, item) != 0) {
            rc = nomem(eb);
            goto out;
        }
    }
    rc = sort_by_name(arr, eb);
    if (rc == CMK_OK) {
        give(out, arr);
        arr = NULL;
    }
out:
    json_decref(names);
    json_decref(arr);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_key_list(const char *home, const char *vault, json_t **out, cmk_errbuf *eb)
{
    return key_list(home, vault, 0, out, eb);
}

cmk_err cmk_vault_key_list_deleted(const char *home, const char *vault, json_t **out,
                                   cmk_errbuf *eb)
{
    return key_list(home, vault, 1, out, eb);
}

cmk_err cmk_vault_key_list_versions(const char *home, const char *vault, const char *name,
                                    json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "listVersions", .key = name};
    json_t *kj = NULL, *arr = NULL, *ver;
    cmk_errbuf local;
    size_t i;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = key_open_live(&c, home, vault, name, 0, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    arr = json_array();
    if (!arr) {
        rc = nomem(eb);
        goto out;
    }
    json_array_foreach(key_versions(kj), i, ver)
    {
        if (json_array_append_new(arr, key_item_json(&c, name, kj, ver, 1)) != 0) {
            rc = nomem(eb);
            goto out;
        }
    }
    give(out, arr);
    arr = NULL;
out:
    json_decref(arr);
    json_decref(kj);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_key_set_enabled(const char *home, const char *vault, const char *name,
                                  const char *version, int enabled, json_t **out, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = enabled ? "enable" : "disable", .key = name};
    json_t *kj = NULL, *ver = NULL, *target;
    cmk_errbuf local;
    char now[32];
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    if (version && *version && !is_version(version)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "bad key version '%.80s': a version is 32 lowercase hex digits",
                            version);
        goto out;
    }
    a.version = version && *version ? version : NULL;
    rc = key_open_live(&c, home, vault, name, 1, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    if (version && *version) {
        ver = key_find_version(kj, version);
        if (!ver) {
            rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "key '%s' in vault '%s' has no version %s",
                                name, vault, version);
            goto out;
        }
        target = ver;
    } else {
        ver = key_latest(kj);
        target = kj;
    }
    now_iso(now);
    if (jset(target, "enabled", json_boolean(enabled)) |
        jset(target, "updated", json_string(now))) {
        rc = nomem(eb);
        goto out;
    }
    rc = key_save(&c, name, kj, eb);
    if (rc == CMK_OK && out)
        rc = key_json(&c, name, kj, ver, out, eb);
out:
    rc = mgmt_finish(&c, &a, rc, eb);
    json_decref(kj);
    return rc;
}

cmk_err cmk_vault_key_delete(const char *home, const char *vault, const char *name, json_t **out,
                             cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "delete", .key = name};
    char date[32], purge[32];
    json_t *kj = NULL, *del;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = key_open_live(&c, home, vault, name, 1, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    deletion_dates(vault_retention(&c), date, purge);
    del = json_pack("{s:s, s:s}", "deletedDate", date, "scheduledPurgeDate", purge);
    if (jset(kj, "deleted", del) != 0) {
        rc = nomem(eb);
        goto out;
    }
    rc = key_save(&c, name, kj, eb);
    if (rc == CMK_OK && out)
        rc = key_json(&c, name, kj, key_latest(kj), out, eb);
out:
    json_decref(kj);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_key_recover(const char *home, const char *vault, const char *name, json_t **out,
                              cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "recover", .key = name};
    json_t *kj = NULL;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = key_op_open(&c, home, vault, name, 1, eb);
    if (rc == CMK_OK)
        rc = key_load(&c, name, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    if (!key_deleted(kj)) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "key '%s' in vault '%s' is not deleted: nothing "
                            "to recover",
                            name, vault);
        goto out;
    }
    (void)json_object_del(kj, "deleted");
    rc = key_save(&c, name, kj, eb);
    if (rc == CMK_OK && out)
        rc = key_json(&c, name, kj, key_latest(kj), out, eb);
out:
    json_decref(kj);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_key_purge(const char *home, const char *vault, const char *name, cmk_errbuf *eb)
{
    audit_rec a = {.identity = OPERATOR, .op = "purge", .key = name};
    char kdir[CMK_PATH_MAX], keys[CMK_PATH_MAX], grave[CMK_PATH_MAX], what[160], cmd[192];
    char rnd[17];
    json_t *kj = NULL;
    cmk_errbuf local;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    rc = key_op_open(&c, home, vault, name, 1, eb);
    if (rc == CMK_OK)
        rc = key_load(&c, name, &kj, eb);
    if (rc != CMK_OK)
        goto out;
    if (!key_deleted(kj)) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "key '%s' in vault '%s' is not deleted: only a soft-deleted key can "
                            "be purged (`cmkstore vault key delete --vault-name %s --name %s` "
                            "first)",
                            name, vault, vault, name);
        goto out;
    }
    snprintf(what, sizeof(what), "key '%s' in vault '%s'", name, vault);
    snprintf(cmd, sizeof(cmd), "cmkstore vault key recover --vault-name %s --name %s", vault, name);
    rc = purge_allowed(&c, what, key_deleted_field(kj, "scheduledPurgeDate"), cmd, eb);
    /* Purge means gone for good: an RSA-HSM version's key pair goes from the token too
     * (first: if the token cannot be reached, nothing is purged). */
    if (rc == CMK_OK)
        rc = hsm_destroy_versions(&c, name, kj, eb);
    if (rc == CMK_OK)
        rc = key_paths(&c, name, kdir, NULL, eb);
    if (rc == CMK_OK)
        rc = cmk_path(keys, sizeof(keys), eb, "%s/keys", c.dir);
    if (rc == CMK_OK)
        rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(grave, sizeof(grave), eb, "%s/.purged-%s", keys, rnd);
    if (rc != CMK_OK)
        goto out;
    if (rename(kdir, grave) != 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot purge key %s", kdir);
        goto out;
    }
    rc = cmk_fsync_dir(keys, eb);
    if (rc == CMK_OK)
        rc = cmk_rm_rf(grave, eb);
out:
    json_decref(kj);
    return mgmt_finish(&c, &a, rc, eb);
}

cmk_err cmk_vault_audit(const char *home, const char *vault, json_t **out, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    json_t *arr = NULL;
    char *line = NULL;
    size_t cap = 0;
    cmk_errbuf local;
    FILE *f = NULL;
    ssize_t n;
    vctx c;
    cmk_err rc;

    EB_ENSURE(eb, local);
    vctx_init(&c);
    if (out)
        *out = NULL;
    rc = vctx_open(&c, home, vault, 0, eb);
    if (rc == CMK_OK)
        rc = cmk_path(path, sizeof(path), eb, "%s/audit.log", c.dir);
    if (rc != CMK_OK)
        goto out;
    arr = json_array();
    if (!arr) {
        rc = nomem(eb);
        goto out;
    }
    f = fopen(path, "re");
    if (!f) {
        if (errno != ENOENT)
            rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot read %s", path);
        goto done;
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        /* A record torn by a crash is skipped; every complete line is one JSON object. */
        json_t *r = json_loadb(line, (size_t)n, 0, NULL);
        if (!json_is_object(r)) {
            json_decref(r);
            continue;
        }
        if (json_array_append_new(arr, r) != 0) {
            rc = nomem(eb);
            goto out;
        }
    }
    if (ferror(f))
        rc = cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot read %s", path);
done:
    if (rc == CMK_OK) {
        give(out, arr);
        arr = NULL;
    }
out:
    if (f)
        (void)fclose(f);
    free(line);
    json_decref(arr);
    vctx_close(&c);
    return rc;
}

/* ---- the KEK provider ------------------------------------------------------------------------ */

typedef struct vprov {
    char home[CMK_PATH_MAX];
    /* Serves the RSA-HSM versions of HSM-backed vaults, after the vault's own checks: it
     * keeps logged-in token handles (a session pool each) shared by all threads. */
    cmk_kek_provider *p11;
} vprov;

/* A key identifier resolved for a provider call. */
typedef struct kref {
    vctx c;
    cmk_vault_kid k;
    json_t *kj;
    json_t *ver; /* borrowed from kj */
    char vkid[CMK_ID_MAX];
    unsigned bits;
    cmk_kty kty;
    int requested_versioned;  /* the caller's kid named a version */
    vhsm hs;                  /* RSA-HSM versions: the vault's token */
    char hsm_uri[CMK_ID_MAX]; /* RSA-HSM versions: the version's pkcs11: identifier */
} kref;

static void kref_free(kref *r)
{
    vctx_close(&r->c);
    json_decref(r->kj);
    r->kj = NULL;
    r->ver = NULL;
}

static int policy_grants(const json_t *pol, const char *perm)
{
    json_t *keys = json_object_get(json_object_get(pol, "permissions"), "keys"), *p;
    size_t i;

    json_array_foreach(keys, i, p)
    {
        const char *s = json_string_value(p);
        if (s && (strcmp(s, perm) == 0 || strcmp(s, "all") == 0))
            return 1;
    }
    return 0;
}

/* Authenticates the principal (it must be an identity of the home) and authorises perm by
 * the vault's access policy. Denials say who, what, which key and how to fix it. */
static cmk_err authorise(const vctx *c, const char *kid, const char *principal, const char *perm,
                         cmk_errbuf *eb)
{
    char who[200];
    cmk_identity id;
    const json_t *pol;
    cmk_err rc;

    if (!principal || !*principal)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "no identity given for %s on key " KID_SHOW
                              ": the vault serves identities only",
                              perm, kid);
    rc = cmk_identity_get_by_principal(c->home, principal, &id, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "identity %.64s does not exist in %s (deleted?), so it may not %s "
                              "key " KID_SHOW ": use an existing identity, or create one and "
                              "grant it access with `cmkstore vault set-policy`",
                              principal, c->home, perm, kid);
    if (rc != CMK_OK) {
        char why[sizeof(eb->msg)];
        memcpy(why, eb->msg, sizeof(why));
        return cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                              "the vault cannot check identity %.64s: %.300s", principal, why);
    }
    snprintf(who, sizeof(who), "identity '%s' (principal %s)", id.name, id.principal_id);
    pol = find_policy(c, id.principal_id, NULL);
    if (!pol)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "%s has no access policy in vault '%s', so %s on key " KID_SHOW
                              " is denied: grant it with `cmkstore vault set-policy --name %s "
                              "--object-id %s --key-permissions " STORE_PERMS "`",
                              who, c->name, perm, kid, c->name, id.principal_id);
    if (!policy_grants(pol, perm))
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "%s lacks the '%s' permission on key " KID_SHOW
                              " (access policy of vault '%s'): grant it with `cmkstore vault "
                              "set-policy --name %s --object-id %s --key-permissions " STORE_PERMS
                              "`",
                              who, perm, kid, c->name, c->name, id.principal_id);
    return CMK_OK;
}

/* Resolves kid for an operation needing perm: vault, authorisation, key, version, state. */
static cmk_err kref_resolve(const vprov *p, const char *kid, const char *principal,
                            const char *perm, int need_version, kref *r, cmk_errbuf *eb)
{
    const char *kty;
    cmk_err rc;

    rc = cmk_vault_kid_parse(kid, &r->k, eb);
    if (rc != CMK_OK)
        return rc;
    if (need_version && !r->k.version[0])
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "%s needs a versioned key identifier "
                              "(local://<vault>/keys/<name>/<version>), not " KID_SHOW,
                              perm, kid);
    rc = vctx_open(&r->c, p->home, r->k.vault, 0, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "vault '%s' of key " KID_SHOW " not found in %s: check the key "
                              "identifier (`cmkstore vault list`)",
                              r->k.vault, kid, p->home);
    if (rc != CMK_OK)
        return rc;
    if (vault_deleted(&r->c, NULL, NULL))
        return vault_deleted_err(&r->c, eb);
    rc = authorise(&r->c, kid, principal, perm, eb);
    if (rc != CMK_OK)
        return rc;
    rc = key_load(&r->c, r->k.key, &r->kj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "key " KID_SHOW " not found: vault '%s' has no key '%s' (`cmkstore "
                              "vault key list --vault-name %s`)",
                              kid, r->k.vault, r->k.key, r->k.vault);
    if (rc != CMK_OK)
        return rc;
    if (key_deleted(r->kj))
        return cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                              "key " KID_SHOW " is deleted (since %s, scheduled purge %s): "
                              "recover it with `cmkstore vault key recover --vault-name %s "
                              "--name %s`",
                              kid, key_deleted_field(r->kj, "deletedDate"),
                              key_deleted_field(r->kj, "scheduledPurgeDate"), r->k.vault, r->k.key);
    r->ver = r->k.version[0] ? key_find_version(r->kj, r->k.version) : key_latest(r->kj);
    if (!r->ver)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "key " KID_SHOW " not found: key '%s' in vault '%s' has no such "
                              "version (`cmkstore vault key list-versions`)",
                              kid, r->k.key, r->k.vault);
    r->requested_versioned = r->k.version[0] != '\0';
    if (!r->k.version[0])
        memcpy(r->k.version, cmk_json_str(r->ver, "version"), VERSION_HEX + 1);
    rc = cmk_vault_kid_format(r->vkid, sizeof(r->vkid), r->k.vault, r->k.key, r->k.version, eb);
    if (rc != CMK_OK)
        return rc;
    if (!cmk_json_bool(r->kj, "enabled", 1))
        return cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                              "key " KID_SHOW " is disabled (every version): enable it with "
                              "`cmkstore vault key set-attributes --vault-name %s --name %s "
                              "--enabled true`",
                              r->vkid, r->k.vault, r->k.key);
    if (!cmk_json_bool(r->ver, "enabled", 1))
        return cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                              "key version " KID_SHOW " is disabled: enable it with `cmkstore "
                              "vault key set-attributes --vault-name %s --name %s --version %s "
                              "--enabled true`",
                              r->vkid, r->k.vault, r->k.key, r->k.version);
    kty = cmk_json_str(r->ver, "kty");
    r->kty = strcmp(kty, "EC") == 0        ? CMK_KTY_EC
             : strcmp(kty, "RSA-HSM") == 0 ? CMK_KTY_RSA_HSM
                                           : CMK_KTY_RSA;
    r->bits = (unsigned)cmk_json_int(r->ver, "bits", 0);
    if (r->kty == CMK_KTY_RSA_HSM) {
        char label[CMK_P11_LABEL_MAX + 1];

        if (!vault_hsm(&r->c, &r->hs))
            return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                                  "key " KID_SHOW " is RSA-HSM but vault '%s' names no PKCS#11 "
                                  "token (vault.json damaged): restore it from a backup",
                                  r->vkid, r->k.vault);
        rc = hsm_version_label(&r->c, r->k.key, r->ver, label, eb);
        if (rc == CMK_OK)
            rc = cmk_p11_uri_build(r->hs.token, label, r->k.version, r->hs.module, r->hs.pin_file,
                                   r->hsm_uri, sizeof(r->hsm_uri), eb);
        if (rc != CMK_OK)
            return rc;
    }
    return CMK_OK;
}

/* Audits a provider call (if the vault was found) and releases r. A call that succeeded but
 * could not be recorded fails: every use of the key must be on record. */
static cmk_err prov_finish(kref *r, const char *principal, const char *op, cmk_wrap_alg alg,
                           cmk_err rc, cmk_errbuf *eb)
{
    audit_rec a = {.identity = principal,
                   .op = op,
                   .key = r->k.key,
                   .version = r->k.version,
                   .alg = alg != CMK_WRAP_NONE ? cmk_wrap_alg_name(alg) : NULL};

    if (r->c.located) {
        cmk_errbuf ab = {0};
        cmk_err arc = audit_write(&r->c, &a, rc, eb->msg, &ab);
        if (arc != CMK_OK && rc == CMK_OK)
            rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                                "vault '%s' cannot record %s on key " KID_SHOW
                                " in its audit log, so it refused it: %s",
                                r->c.name, op, r->vkid, ab.msg);
    }
    kref_free(r);
    return rc;
}

static int prov_handles(void *self, const char *kid)
{
    (void)self;
    return kid && strncasecmp(kid, CMK_VAULT_SCHEME, sizeof(CMK_VAULT_SCHEME) - 1) == 0;
}

static cmk_err prov_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                             cmk_errbuf *eb)
{
    cmk_errbuf local;
    kref r;
    cmk_err rc;

    EB_ENSURE(eb, local);
    memset(&r, 0, sizeof(r));
    vctx_init(&r.c);
    memset(out, 0, sizeof(*out));
    rc = kref_resolve(self, kid, principal, "get", 0, &r, eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(out->kid, sizeof(out->kid), "%s", r.vkid);
    rc = cmk_vault_kid_format(out->versionless, sizeof(out->versionless), r.k.vault, r.k.key, NULL,
                              eb);
    if (rc != CMK_OK)
        goto out;
    out->requested_versioned = r.requested_versioned;
    snprintf(out->version, sizeof(out->version), "%s", r.k.version);
    out->kty = r.kty;
    out->bits = r.bits;
    out->enabled = 1;
    out->wrap_algs =
        r.kty == CMK_KTY_RSA ? (1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP) : 0;
    if (r.kty == CMK_KTY_RSA_HSM) {
        /* The token says whether the key pair is still there and which OAEP hashes it can
         * undo (SoftHSM2 2.6: SHA-1 only). */
        cmk_key_desc d;
        const cmk_kek_provider *p11 = ((const vprov *)self)->p11;

        rc = p11->describe(p11->self, r.hsm_uri, principal, &d, eb);
        if (rc != CMK_OK) {
            rc = hsm_context(rc, eb, r.k.vault, r.hs.token);
            goto out;
        }
        out->bits = d.bits;
        out->wrap_algs = d.wrap_algs;
    }
out:
    rc = prov_finish(&r, principal, "get", CMK_WRAP_NONE, rc, eb);
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

static const EVP_MD *oaep_md(cmk_wrap_alg alg)
{
    return alg == CMK_WRAP_RSA_OAEP_256 ? EVP_sha256() : EVP_sha1();
}

/* Sets up an RSA-OAEP context for encryption (enc) or decryption with alg's digests. */
static EVP_PKEY_CTX *oaep_ctx(EVP_PKEY *pkey, cmk_wrap_alg alg, int enc)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

    if (!ctx)
        return NULL;
    if ((enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, oaep_md(alg)) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, oaep_md(alg)) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Common checks of wrap/unwrap after resolution: an RSA key, a known algorithm. */
static cmk_err check_wrap_use(const kref *r, cmk_wrap_alg alg, const char *op, cmk_errbuf *eb)
{
    if (r->kty == CMK_KTY_EC)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key " KID_SHOW " is EC: only RSA and RSA-HSM keys can %s data "
                              "keys",
                              r->vkid, op);
    if (r->kty != CMK_KTY_RSA && r->kty != CMK_KTY_RSA_HSM)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key " KID_SHOW " is %s, which this vault cannot use", r->vkid,
                              cmk_kty_name(r->kty));
    if (alg != CMK_WRAP_RSA_OAEP_256 && alg != CMK_WRAP_RSA_OAEP)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                              "wrap algorithm %d is not supported: use RSA-OAEP-256 or RSA-OAEP",
                              (int)alg);
    return CMK_OK;
}

static cmk_err pem_path(const kref *r, char out[CMK_PATH_MAX], cmk_errbuf *eb)
{
    return cmk_path(out, CMK_PATH_MAX, eb, "%s/keys/%s/%s.pem", r->c.dir, r->k.key, r->k.version);
}

static cmk_err prov_wrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                         const unsigned char *dek, size_t keylen, unsigned char *out,
                         size_t *outlen, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t n = 0, hlen = alg == CMK_WRAP_RSA_OAEP_256 ? 32 : 20, max;
    cmk_errbuf local;
    kref r;
    cmk_err rc;

    EB_ENSURE(eb, local);
    memset(&r, 0, sizeof(r));
    vctx_init(&r.c);
    *outlen = 0;
    rc = kref_resolve(self, vkid, principal, "wrapKey", 1, &r, eb);
    if (rc == CMK_OK)
        rc = check_wrap_use(&r, alg, "wrap", eb);
    if (rc != CMK_OK)
        goto out;
    max = r.bits / 8 - 2 * hlen - 2;
    if (!dek || keylen == 0 || keylen > max) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "a data key of %zu bytes cannot be wrapped with " KID_SHOW
                            " (%s takes 1 to %zu bytes)",
                            keylen, r.vkid, cmk_wrap_alg_name(alg), max);
        goto out;
    }
    if (r.kty == CMK_KTY_RSA_HSM) {
        const cmk_kek_provider *p11 = ((const vprov *)self)->p11;

        rc = p11->wrap(p11->self, r.hsm_uri, principal, alg, dek, keylen, out, outlen, eb);
        if (rc != CMK_OK)
            rc = hsm_context(rc, eb, r.k.vault, r.hs.token);
        goto out;
    }
    rc = pem_path(&r, path, eb);
    if (rc == CMK_OK)
        rc = read_private(path, r.vkid, 1, &pkey, eb);
    if (rc != CMK_OK)
        goto out;
    ctx = oaep_ctx(pkey, alg, 1);
    if (!ctx || EVP_PKEY_encrypt(ctx, NULL, &n, dek, keylen) != 1 || n > CMK_WRAPPED_MAX ||
        EVP_PKEY_encrypt(ctx, out, &n, dek, keylen) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "wrapping with key " KID_SHOW " (%s) failed in "
                            "OpenSSL",
                            r.vkid, cmk_wrap_alg_name(alg));
        goto out;
    }
    *outlen = n;
out:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    rc = prov_finish(&r, principal, "wrapKey", alg, rc, eb);
    if (rc != CMK_OK && *outlen) {
        cmk_cleanse(out, *outlen);
        *outlen = 0;
    }
    return rc;
}

static cmk_err prov_unwrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                           const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                           size_t *keylen, cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX];
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char *plain = NULL;
    size_t cap = *keylen, n = 0, k;
    cmk_errbuf local;
    kref r;
    cmk_err rc;

    EB_ENSURE(eb, local);
    memset(&r, 0, sizeof(r));
    vctx_init(&r.c);
    *keylen = 0;
    rc = kref_resolve(self, vkid, principal, "unwrapKey", 1, &r, eb);
    if (rc == CMK_OK)
        rc = check_wrap_use(&r, alg, "unwrap", eb);
    if (rc != CMK_OK)
        goto out;
    k = r.bits / 8;
    if (!wrapped || wrappedlen != k) {
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "cannot unwrap with key " KID_SHOW ": the wrapped key is %zu bytes, "
                            "the key (RSA %u) makes %zu-byte ones; it was altered or wrapped by "
                            "another key",
                            r.vkid, wrappedlen, r.bits, k);
        goto out;
    }
    if (r.kty == CMK_KTY_RSA_HSM) {
        /* Decrypted inside the token: the private key never comes here. */
        const cmk_kek_provider *p11 = ((const vprov *)self)->p11;

        *keylen = cap;
        rc =
            p11->unwrap(p11->self, r.hsm_uri, principal, alg, wrapped, wrappedlen, dek, keylen, eb);
        if (rc != CMK_OK) {
            *keylen = 0;
            rc = hsm_context(rc, eb, r.k.vault, r.hs.token);
        }
        goto out;
    }
    rc = pem_path(&r, path, eb);
    if (rc == CMK_OK)
        rc = read_private(path, r.vkid, 1, &pkey, eb);
    if (rc != CMK_OK)
        goto out;
    plain = cmk_secalloc(k);
    if (!plain) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory unwrapping a data key");
        goto out;
    }
    n = k;
    ctx = oaep_ctx(pkey, alg, 0);
    if (!ctx) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot set up %s for key " KID_SHOW,
                            cmk_wrap_alg_name(alg), r.vkid);
        goto out;
    }
    if (EVP_PKEY_decrypt(ctx, plain, &n, wrapped, wrappedlen) != 1) {
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "cannot unwrap with key " KID_SHOW " (%s): the wrapped key was "
                            "altered, or wrapped by another key or algorithm",
                            r.vkid, cmk_wrap_alg_name(alg));
        goto out;
    }
    if (n > cap || !dek) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "unwrapped key (%zu bytes) does not fit the %zu-byte "
                            "buffer",
                            n, cap);
        goto out;
    }
    memcpy(dek, plain, n);
    *keylen = n;
out:
    cmk_secfree(plain);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    rc = prov_finish(&r, principal, "unwrapKey", alg, rc, eb);
    if (rc != CMK_OK && *keylen) {
        cmk_cleanse(dek, *keylen);
        *keylen = 0;
    }
    return rc;
}

static void prov_release(void *self)
{
    vprov *p = self;

    if (p)
        cmk_kek_provider_free(p->p11);
    free(p);
}

cmk_err cmk_vault_provider_new(const char *home, cmk_kek_provider **out, cmk_errbuf *eb)
{
    cmk_kek_provider *kp = NULL;
    vprov *p = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "the local vault provider needs a cmkstore home");
    kp = calloc(1, sizeof(*kp));
    p = calloc(1, sizeof(*p));
    if (!kp || !p) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the local vault provider");
        goto out;
    }
    rc = cmk_path(p->home, sizeof(p->home), eb, "%s", home);
    if (rc == CMK_OK)
        /* Its identifiers are built here from vault.json's hsm section (operator's). */
        rc = cmk_pkcs11_provider_new(home, CMK_P11_PROV_OBEY_QUERY, &p->p11, eb);
    if (rc != CMK_OK)
        goto out;
    kp->size = sizeof(*kp);
    kp->name = "local-vault";
    kp->self = p;
    kp->handles = prov_handles;
    kp->describe = prov_describe;
    kp->wrap = prov_wrap;
    kp->unwrap = prov_unwrap;
    kp->release = prov_release;
    *out = kp;
    kp = NULL;
    p = NULL;
out:
    free(kp);
    prov_release(p);
    return rc;
}
