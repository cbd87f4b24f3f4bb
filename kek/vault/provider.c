/*
 * provider.c — the local vault's KEK provider (see vault.h, cmk_vault_provider_new): every
 * call resolves the key identifier, authorises the store's identity by the vault's access
 * policy, checks the key's state, does the work and is audited. RSA keys are used from
 * their PEM file; RSA-HSM versions go to the vault's token through a PKCS#11 provider.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/kek.h"
#include "kek/provider.h"
#include "kek/vault/audit.h"
#include "kek/vault/hsm.h"
#include "kek/vault/keygen.h"
#include "kek/vault/keymeta.h"
#include "kek/vault/policy.h"
#include "kek/vault/vault.h"

#define KID_SHOW CMK_VAULT_KID_SHOW

typedef struct vprov {
    char home[CMK_PATH_MAX];
    /* Serves the RSA-HSM versions of HSM-backed vaults, after the vault's own checks: it
     * keeps logged-in token handles (a session pool each) shared by all threads. */
    cmk_kek_provider *p11;
} vprov;

/* A key identifier resolved for a provider call. */
typedef struct kref {
    cmk_errbuf local; /* for callers that pass no error buffer */
    cmk_vctx c;
    cmk_vault_kid k;
    json_t *kj;
    json_t *ver; /* borrowed from kj */
    char vkid[CMK_ID_MAX];
    unsigned bits;
    cmk_kty kty;
    int requested_versioned;  /* the caller's kid named a version */
    cmk_vhsm hs;              /* RSA-HSM versions: the vault's token */
    char hsm_uri[CMK_ID_MAX]; /* RSA-HSM versions: the version's pkcs11: identifier */
} kref;

/* The vault and key of kid, the principal authorised for perm, the version named (or the
 * latest) found. */
static cmk_err resolve_key(const vprov *p, const char *kid, const char *principal, const char *perm,
                           kref *r, cmk_errbuf *eb)
{
    cmk_err rc = cmk_vctx_open(&r->c, p->home, r->k.vault, 0, eb);

    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "vault '%s' of key " KID_SHOW " not found in %s: check the key "
                              "identifier",
                              r->k.vault, kid, p->home);
    if (rc == CMK_OK && cmk_vctx_deleted(&r->c, NULL, NULL))
        rc = cmk_vctx_deleted_err(&r->c, eb);
    if (rc == CMK_OK)
        rc = cmk_vault_authorise(&r->c, kid, principal, perm, eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_load(&r->c, r->k.key, &r->kj, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "key " KID_SHOW " not found: vault '%s' has no key '%s'", kid,
                              r->k.vault, r->k.key);
    if (rc != CMK_OK)
        return rc;
    if (cmk_vkey_deleted(r->kj))
        return cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                              "key " KID_SHOW " is deleted (since %s, scheduled purge %s): "
                              "recover it to use it again",
                              kid, cmk_vkey_deleted_field(r->kj, "deletedDate"),
                              cmk_vkey_deleted_field(r->kj, "scheduledPurgeDate"));
    r->ver = r->k.version[0] ? cmk_vkey_find_version(r->kj, r->k.version) : cmk_vkey_latest(r->kj);
    if (!r->ver)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "key " KID_SHOW " not found: key '%s' in vault '%s' has no such "
                              "version",
                              kid, r->k.key, r->k.vault);
    r->requested_versioned = r->k.version[0] != '\0';
    if (!r->k.version[0])
        memcpy(r->k.version, cmk_json_str(r->ver, "version"), CMK_VAULT_VERSION_HEX + 1);
    return cmk_vault_kid_format(r->vkid, sizeof(r->vkid), r->k.vault, r->k.key, r->k.version, eb);
}

/* The resolved version's state (enabled), type and size; for RSA-HSM its token identifier. */
static cmk_err resolve_version(kref *r, cmk_errbuf *eb)
{
    char label[CMK_P11_LABEL_MAX + 1];
    const char *kty = cmk_json_str(r->ver, "kty");
    cmk_err rc;

    if (!cmk_json_bool(r->kj, "enabled", 1))
        return cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                              "key " KID_SHOW " is disabled (key '%s' in vault '%s', every "
                              "version)",
                              r->vkid, r->k.key, r->k.vault);
    if (!cmk_json_bool(r->ver, "enabled", 1))
        return cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                              "key version " KID_SHOW " is disabled (version %s of key '%s' in "
                              "vault '%s')",
                              r->vkid, r->k.version, r->k.key, r->k.vault);
    r->kty = strcmp(kty, "EC") == 0        ? CMK_KTY_EC
             : strcmp(kty, "RSA-HSM") == 0 ? CMK_KTY_RSA_HSM
                                           : CMK_KTY_RSA;
    r->bits = (unsigned)cmk_json_int(r->ver, "bits", 0);
    if (r->kty != CMK_KTY_RSA_HSM)
        return CMK_OK;
    if (!cmk_vhsm_get(&r->c, &r->hs))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "key " KID_SHOW " is RSA-HSM but vault '%s' names no PKCS#11 "
                              "token (vault.json damaged): restore it from a backup",
                              r->vkid, r->k.vault);
    rc = cmk_vhsm_version_label(&r->c, r->k.key, r->ver, label, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_uri_build(r->hs.token, label, r->k.version, r->hs.module, r->hs.pin_file,
                               r->hsm_uri, sizeof(r->hsm_uri), eb);
    return rc;
}

/* Resolves kid's vault, the authorisation for perm and the key (the version named, or the
 * latest), not the version's state: the opening of every provider and access call.
 * *eb is replaced by r's own buffer if it is NULL; r is released by kref_finish either way. */
static cmk_err kref_open(const vprov *p, const char *kid, const char *principal, const char *perm,
                         int need_version, kref *r, cmk_errbuf **eb)
{
    cmk_err rc;

    memset(r, 0, sizeof(*r));
    cmk_vctx_init(&r->c);
    CMK_VAULT_EB_ENSURE(*eb, r->local);
    rc = cmk_vault_kid_parse(kid, &r->k, *eb);

    if (rc == CMK_OK && need_version && !r->k.version[0])
        rc = cmk_errbuf_set(*eb, CMK_E_INVAL,
                            "%s needs a versioned key identifier "
                            "(local://<vault>/keys/<name>/<version>), not " KID_SHOW,
                            perm, kid);
    if (rc == CMK_OK)
        rc = resolve_key(p, kid, principal, perm, r, *eb);
    return rc;
}

/* Resolves kid for an operation needing perm: vault, authorisation, key, version, state.
 * *eb is replaced by r's own buffer if it is NULL; r is released by kref_finish either way. */
static cmk_err kref_resolve(const vprov *p, const char *kid, const char *principal,
                            const char *perm, int need_version, kref *r, cmk_errbuf **eb)
{
    cmk_err rc = kref_open(p, kid, principal, perm, need_version, r, eb);

    if (rc == CMK_OK)
        rc = resolve_version(r, *eb);
    return rc;
}

/* Audits a provider call (if the vault was found) and releases r. A call that succeeded but
 * could not be recorded fails: every use of the key must be on record. */
static cmk_err kref_finish(kref *r, const char *principal, const char *op, cmk_wrap_alg alg,
                           cmk_err rc, cmk_errbuf *eb)
{
    cmk_vault_audit_rec a = {.identity = principal,
                             .op = op,
                             .key = r->k.key,
                             .version = r->k.version,
                             .alg = alg != CMK_WRAP_NONE ? cmk_wrap_alg_name(alg) : NULL,
                             .vkid = r->vkid};

    rc = cmk_vault_audit_end(&r->c, &a, rc, eb);
    json_decref(r->kj);
    r->kj = NULL;
    r->ver = NULL;
    return rc;
}

/* kref_finish for a call about the key as a whole: the audit record names the key, not the
 * latest version resolve_key picked. */
static cmk_err kref_finish_key(kref *r, const char *principal, const char *op, cmk_err rc,
                               cmk_errbuf *eb)
{
    r->k.version[0] = '\0';
    r->vkid[0] = '\0';
    return kref_finish(r, principal, op, CMK_WRAP_NONE, rc, eb);
}

static int prov_handles(void *self, const char *kid)
{
    (void)self;
    return kid && strncasecmp(kid, CMK_VAULT_SCHEME, sizeof(CMK_VAULT_SCHEME) - 1) == 0;
}

static cmk_err prov_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                             cmk_errbuf *eb)
{
    const cmk_kek_provider *p11 = ((const vprov *)self)->p11;
    cmk_key_desc d;
    kref r;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = kref_resolve(self, kid, principal, "get", 0, &r, &eb);
    if (rc == CMK_OK)
        rc = cmk_vault_kid_format(out->versionless, sizeof(out->versionless), r.k.vault, r.k.key,
                                  NULL, eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(out->kid, sizeof(out->kid), "%s", r.vkid);
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
        rc = p11->describe(p11->self, r.hsm_uri, principal, &d, eb);
        if (rc != CMK_OK) {
            rc = cmk_vhsm_context(rc, eb, r.k.vault, r.hs.token);
            goto out;
        }
        out->bits = d.bits;
        out->wrap_algs = d.wrap_algs;
    }
out:
    rc = kref_finish(&r, principal, "get", CMK_WRAP_NONE, rc, eb);
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- wrap and unwrap ------------------------------------------------------------------------- */

/* One wrap (in: the data key) or unwrap (in: the wrapped key): out has capacity cap and
 * receives *outlen bytes (0 until it succeeds). */
typedef struct wrap_io {
    int unwrap;
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t cap;
    size_t *outlen;
} wrap_io;

/* What a key of r's size can take: a data key of 1 to k - 2 * hash - 2 bytes to wrap, a
 * wrapped key of exactly k bytes (the modulus) to unwrap. */
static cmk_err check_io(const kref *r, cmk_wrap_alg alg, const wrap_io *io, cmk_errbuf *eb)
{
    size_t k = r->bits / 8, hlen = alg == CMK_WRAP_RSA_OAEP_256 ? 32 : 20;

    if (r->kty == CMK_KTY_EC)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key " KID_SHOW " is EC: only RSA and RSA-HSM keys can %s data "
                              "keys",
                              r->vkid, io->unwrap ? "unwrap" : "wrap");
    if (r->kty != CMK_KTY_RSA && r->kty != CMK_KTY_RSA_HSM)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key " KID_SHOW " is %s, which this vault cannot use", r->vkid,
                              cmk_kty_name(r->kty));
    if (alg != CMK_WRAP_RSA_OAEP_256 && alg != CMK_WRAP_RSA_OAEP)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                              "wrap algorithm %d is not supported: use RSA-OAEP-256 or RSA-OAEP",
                              (int)alg);
    if (io->unwrap && (!io->in || io->inlen != k))
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                              "cannot unwrap with key " KID_SHOW ": the wrapped key is %zu bytes, "
                              "the key (RSA %u) makes %zu-byte ones; it was altered or wrapped "
                              "by another key",
                              r->vkid, io->inlen, r->bits, k);
    if (!io->unwrap && (!io->in || io->inlen == 0 || io->inlen > k - 2 * hlen - 2))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "a data key of %zu bytes cannot be wrapped with " KID_SHOW
                              " (%s takes 1 to %zu bytes)",
                              io->inlen, r->vkid, cmk_wrap_alg_name(alg), k - 2 * hlen - 2);
    return CMK_OK;
}

/* Sets up an RSA-OAEP context for encryption (enc) or decryption with alg's digests. */
static EVP_PKEY_CTX *oaep_ctx(EVP_PKEY *pkey, cmk_wrap_alg alg, int enc)
{
    const EVP_MD *md = alg == CMK_WRAP_RSA_OAEP_256 ? EVP_sha256() : EVP_sha1();
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

    if (!ctx)
        return NULL;
    if ((enc ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Wraps with the public half of the PEM key (the result fits CMK_WRAPPED_MAX). */
static cmk_err sw_wrap(const kref *r, EVP_PKEY *pkey, cmk_wrap_alg alg, const wrap_io *io,
                       cmk_errbuf *eb)
{
    EVP_PKEY_CTX *ctx = oaep_ctx(pkey, alg, 1);
    size_t n = 0;

    if (!ctx || EVP_PKEY_encrypt(ctx, NULL, &n, io->in, io->inlen) != 1 || n > CMK_WRAPPED_MAX ||
        EVP_PKEY_encrypt(ctx, io->out, &n, io->in, io->inlen) != 1) {
        EVP_PKEY_CTX_free(ctx);
        return cmk_errbuf_set(eb, CMK_E_CRYPTO,
                              "wrapping with key " KID_SHOW " (%s) failed in OpenSSL", r->vkid,
                              cmk_wrap_alg_name(alg));
    }
    EVP_PKEY_CTX_free(ctx);
    *io->outlen = n;
    return CMK_OK;
}

/* Unwraps with the PEM key, through secure memory of the modulus' size. */
static cmk_err sw_unwrap(const kref *r, EVP_PKEY *pkey, cmk_wrap_alg alg, const wrap_io *io,
                         cmk_errbuf *eb)
{
    size_t cap = io->cap, n = r->bits / 8;
    unsigned char *plain = cmk_secalloc(n);
    EVP_PKEY_CTX *ctx = NULL;
    cmk_err rc = CMK_OK;

    if (!plain)
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory unwrapping a data key");
    else if (!(ctx = oaep_ctx(pkey, alg, 0)))
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot set up %s for key " KID_SHOW,
                            cmk_wrap_alg_name(alg), r->vkid);
    else if (EVP_PKEY_decrypt(ctx, plain, &n, io->in, io->inlen) != 1)
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "cannot unwrap with key " KID_SHOW " (%s): the wrapped key was "
                            "altered, or wrapped by another key or algorithm",
                            r->vkid, cmk_wrap_alg_name(alg));
    else if (n > cap || !io->out)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "unwrapped key (%zu bytes) does not fit the %zu-byte buffer", n, cap);
    if (rc == CMK_OK) {
        memcpy(io->out, plain, n);
        *io->outlen = n;
    }
    cmk_secfree(plain);
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/* RSA-HSM: the token does it (unwrapping in the token: the private key never comes here). */
static cmk_err hsm_io(const vprov *p, const kref *r, const char *principal, cmk_wrap_alg alg,
                      const wrap_io *io, cmk_errbuf *eb)
{
    const cmk_kek_provider *p11 = p->p11;
    size_t n = io->cap;
    cmk_err rc =
        io->unwrap
            ? p11->unwrap(p11->self, r->hsm_uri, principal, alg, io->in, io->inlen, io->out, &n, eb)
            : p11->wrap(p11->self, r->hsm_uri, principal, alg, io->in, io->inlen, io->out, &n, eb);

    if (rc != CMK_OK)
        return cmk_vhsm_context(rc, eb, r->k.vault, r->hs.token);
    *io->outlen = n;
    return CMK_OK;
}

static cmk_err prov_io(const vprov *p, const char *vkid, const char *principal, cmk_wrap_alg alg,
                       const wrap_io *io, cmk_errbuf *eb)
{
    const char *perm = io->unwrap ? "unwrapKey" : "wrapKey";
    char path[CMK_PATH_MAX];
    EVP_PKEY *pkey = NULL;
    kref r;
    cmk_err rc;

    *io->outlen = 0;
    rc = kref_resolve(p, vkid, principal, perm, 1, &r, &eb);
    if (rc == CMK_OK)
        rc = check_io(&r, alg, io, eb);
    if (rc == CMK_OK && r.kty == CMK_KTY_RSA_HSM) {
        rc = hsm_io(p, &r, principal, alg, io, eb);
    } else if (rc == CMK_OK) {
        rc = cmk_path(path, sizeof(path), eb, "%s/keys/%s/%s.pem", r.c.dir, r.k.key, r.k.version);
        if (rc == CMK_OK)
            rc = cmk_vkey_read_private(path, r.vkid, 1, &pkey, eb);
        if (rc == CMK_OK)
            rc = io->unwrap ? sw_unwrap(&r, pkey, alg, io, eb) : sw_wrap(&r, pkey, alg, io, eb);
    }
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    rc = kref_finish(&r, principal, perm, alg, rc, eb);
    if (rc != CMK_OK && *io->outlen) {
        cmk_cleanse(io->out, *io->outlen);
        *io->outlen = 0;
    }
    return rc;
}

static cmk_err prov_wrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                         const unsigned char *dek, size_t keylen, unsigned char *out,
                         size_t *outlen, cmk_errbuf *eb)
{
    wrap_io io = {0, dek, keylen, out, CMK_WRAPPED_MAX, outlen};

    return prov_io(self, vkid, principal, alg, &io, eb);
}

static cmk_err prov_unwrap(void *self, const char *vkid, const char *principal, cmk_wrap_alg alg,
                           const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                           size_t *keylen, cmk_errbuf *eb)
{
    wrap_io io = {1, wrapped, wrappedlen, dek, *keylen, keylen};

    return prov_io(self, vkid, principal, alg, &io, eb);
}

static void prov_release(void *self)
{
    vprov *p = self;

    if (p)
        cmk_kek_provider_free(p->p11);
    free(p);
}

static const cmk_kek_provider vault_ops = CMK_KEK_PROVIDER_OPS("local-vault", prov);

cmk_err cmk_vault_provider_new(const char *home, cmk_kek_provider **out, cmk_errbuf *eb)
{
    vprov *p = NULL;
    cmk_err rc;

    *out = NULL;
    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "the local vault provider needs a cmkstore home");
    p = calloc(1, sizeof(*p));
    if (!p)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the local vault provider");
    rc = cmk_path(p->home, sizeof(p->home), eb, "%s", home);
    if (rc == CMK_OK)
        /* Its identifiers are built here from vault.json's hsm section (operator's). */
        rc = cmk_pkcs11_provider_new(home, CMK_P11_PROV_OBEY_QUERY, &p->p11, eb);
    if (rc != CMK_OK) {
        prov_release(p);
        return rc;
    }
    return cmk_kek_provider_make(&vault_ops, p, out, eb);
}

/* ---- a principal's key use, for the vault served over HTTPS (cmkstore_admin.h) ------------- */

struct cmk_vault_access {
    cmk_kek_provider *p; /* the provider above: the same checks and audit as a store's use */
};

cmk_err cmk_vault_access_open(const char *home, cmk_vault_access **out, cmk_errbuf *eb)
{
    cmk_vault_access *a;
    cmk_err rc;

    if (!out)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "cmk_vault_access_open: out is NULL");
    *out = NULL;
    if (!(a = calloc(1, sizeof(*a))))
        return cmk_vault_nomem(eb);
    rc = cmk_vault_provider_new(home, &a->p, eb);
    if (rc != CMK_OK) {
        free(a);
        return rc;
    }
    *out = a;
    return CMK_OK;
}

void cmk_vault_access_close(cmk_vault_access *a)
{
    if (!a)
        return;
    cmk_kek_provider_free(a->p);
    free(a);
}

static cmk_err access_args(const cmk_vault_access *a, const char *kid, const char *principal,
                           cmk_errbuf *eb)
{
    if (!a || !kid || !principal)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "vault access: a handle, a key identifier and a "
                              "principal are needed");
    return CMK_OK;
}

cmk_err cmk_vault_access_get(cmk_vault_access *a, const char *kid, const char *principal,
                             json_t **out, cmk_errbuf *eb)
{
    json_t *j = NULL;
    kref r;
    cmk_err rc;

    if (out)
        *out = NULL;
    rc = access_args(a, kid, principal, eb);
    if (rc != CMK_OK)
        return rc;
    /* As describe: "get", the vault and key live, the version and key enabled. */
    rc = kref_resolve(a->p->self, kid, principal, "get", 0, &r, &eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_json(&r.c, r.k.key, r.kj, r.ver, &j, eb);
    rc = kref_finish(&r, principal, "get", CMK_WRAP_NONE, rc, eb);
    if (rc == CMK_OK)
        cmk_vault_give(out, j);
    else
        json_decref(j);
    return rc;
}

cmk_err cmk_vault_access_versions(cmk_vault_access *a, const char *kid, const char *principal,
                                  json_t **out, cmk_errbuf *eb)
{
    json_t *arr = NULL, *ver;
    size_t i;
    kref r;
    cmk_err rc;

    if (out)
        *out = NULL;
    rc = access_args(a, kid, principal, eb);
    if (rc != CMK_OK)
        return rc;
    /* "list", the vault and key live; disabled versions are listed (with their state). */
    rc = kref_open(a->p->self, kid, principal, "list", 0, &r, &eb);
    if (rc == CMK_OK && !(arr = json_array()))
        rc = cmk_vault_nomem(eb);
    json_array_foreach(rc == CMK_OK ? cmk_vkey_versions(r.kj) : NULL, i, ver)
    {
        if (json_array_append_new(arr, cmk_vkey_item_json(&r.c, r.k.key, r.kj, ver, 1)) != 0) {
            rc = cmk_vault_nomem(eb);
            break;
        }
    }
    rc = kref_finish_key(&r, principal, "listVersions", rc, eb);
    if (rc == CMK_OK)
        cmk_vault_give(out, arr);
    else
        json_decref(arr);
    return rc;
}

cmk_err cmk_vault_access_deleted(cmk_vault_access *a, const char *kid, const char *principal,
                                 json_t **out, cmk_errbuf *eb)
{
    json_t *j = NULL, *latest;
    kref r;
    cmk_err rc;

    if (out)
        *out = NULL;
    rc = access_args(a, kid, principal, eb);
    if (rc != CMK_OK)
        return rc;
    rc = kref_open(a->p->self, kid, principal, "get", 0, &r, &eb);
    /* resolve_key refuses a deleted key once it has authorised and loaded it: that is the
     * answer here. A deleted vault has loaded no key and stays refused. */
    if (rc == CMK_E_KEY_DELETED && r.kj && cmk_vkey_deleted(r.kj)) {
        cmk_errbuf_clear(eb);
        latest = cmk_vkey_latest(r.kj);
        rc = latest ? cmk_vkey_json(&r.c, r.k.key, r.kj, latest, &j, eb)
                    : cmk_errbuf_set(eb, CMK_E_CORRUPT, "deleted key " KID_SHOW " has no version",
                                     kid);
    } else if (rc == CMK_OK) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                            "key " KID_SHOW " is not deleted: vault '%s' has no deleted key '%s'",
                            kid, r.k.vault, r.k.key);
    }
    rc = kref_finish_key(&r, principal, "getDeleted", rc, eb);
    if (rc == CMK_OK)
        cmk_vault_give(out, j);
    else
        json_decref(j);
    return rc;
}

cmk_err cmk_vault_access_wrap(cmk_vault_access *a, const char *vkid, const char *principal,
                              cmk_wrap_alg alg, const unsigned char *in, size_t inlen,
                              unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    cmk_err rc = access_args(a, vkid, principal, eb);
    wrap_io io = {0, in, inlen, out, CMK_WRAPPED_MAX, outlen};

    if (rc == CMK_OK && (!out || !outlen))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "vault access: no output buffer");
    return rc != CMK_OK ? rc : prov_io(a->p->self, vkid, principal, alg, &io, eb);
}

cmk_err cmk_vault_access_unwrap(cmk_vault_access *a, const char *vkid, const char *principal,
                                cmk_wrap_alg alg, const unsigned char *in, size_t inlen,
                                unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    cmk_err rc = access_args(a, vkid, principal, eb);
    wrap_io io = {1, in, inlen, out, outlen ? *outlen : 0, outlen};

    if (rc == CMK_OK && (!out || !outlen))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "vault access: no output buffer");
    return rc != CMK_OK ? rc : prov_io(a->p->self, vkid, principal, alg, &io, eb);
}
