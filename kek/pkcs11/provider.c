/* provider.c — the KEK provider for pkcs11: identifiers: a cache of logged-in handles per
 * (module, token), remembered PIN rejections, and the operator's module and PIN only
 * (see pkcs11.h, cmk_pkcs11_provider_new). */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/secmem.h"
#include "kek/pkcs11/objects.h"
#include "kek/provider.h"

struct prov_ent {
    char module[CMK_P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    cmk_p11 *h;
    unsigned refs;
    int dead; /* unlinked after a fault or a denial; closed by its last user */
    struct prov_ent *next;
};

/* A PIN a token rejected, remembered (as an HMAC under a per-provider key) so that the same
 * wrong PIN is not presented again on every call: real HSMs lock the user PIN after a few
 * failed logins. A different PIN (the operator fixed the file) is tried at once. */
struct prov_bad {
    char module[CMK_P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    unsigned char mac[32];
    char msg[sizeof(((cmk_errbuf *)0)->msg)];
    struct prov_bad *next;
};

struct p11_prov {
    char *home;
    unsigned flags; /* CMK_P11_PROV_* */
    pthread_mutex_t mu;
    struct prov_ent *ents;
    struct prov_bad *bad;
    unsigned char mac_key[32];
};

static cmk_err pin_mac(const struct p11_prov *p, const char *pin, unsigned char mac[32],
                       cmk_errbuf *eb)
{
    size_t n = 0;

    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, p->mac_key, sizeof(p->mac_key),
                   (const unsigned char *)pin, strlen(pin), mac, 32, &n) ||
        n != 32) {
        ERR_clear_error();
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "HMAC-SHA256 failed");
    }
    return CMK_OK;
}

/* The remembered rejection of (module, token), or NULL; called with p->mu held. */
static struct prov_bad **bad_find(struct p11_prov *p, const char *module, const char *token)
{
    struct prov_bad **pp;

    for (pp = &p->bad; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->module, module) == 0 && strcmp((*pp)->token, token) == 0)
            return pp;
    }
    return NULL;
}

/* Opens a handle for (module, token), unless this very PIN was rejected before; called with
 * p->mu held, so there is one login per token, not one per racing thread. */
static cmk_err prov_open(struct p11_prov *p, const char *module, const cmk_p11_uri *u, cmk_p11 **h,
                         cmk_errbuf *eb)
{
    char where[CMK_P11_PATH_MAX + 64];
    unsigned char mac[32];
    struct prov_bad **pb, *b;
    char *pin = NULL;
    cmk_err rc;

    /* A pin-source in an identifier is read only when the identifier is the operator's own
     * (an HSM-backed vault builds it from vault.json); a store's identifier is data. */
    rc = cmk_p11_load_pin(
        p->home, (p->flags & CMK_P11_PROV_OBEY_QUERY) && u->pin_file[0] ? u->pin_file : NULL, &pin,
        where, sizeof(where), eb);
    if (rc == CMK_E_KEY_DENIED && u->pin_file[0] && !(p->flags & CMK_P11_PROV_OBEY_QUERY))
        cmk_eb_append(eb, " (the key identifier's pin-source is not read: a PIN file comes only "
                          "from the operator's configuration)");
    if (rc == CMK_OK)
        rc = pin_mac(p, pin, mac, eb);
    if (rc != CMK_OK)
        goto out;
    pb = bad_find(p, module, u->token);
    if (pb && CRYPTO_memcmp((*pb)->mac, mac, sizeof(mac)) == 0) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "%s (this PIN was rejected before and is not presented again, so "
                            "the token does not lock it: fix the PIN in %s)",
                            (*pb)->msg, where);
        goto out;
    }
    rc = cmk_p11_open(module, u->token, pin, h, eb);
    if (rc == CMK_E_KEY_DENIED) {
        cmk_eb_append(eb, " (the PIN came from %s)", where);
        b = pb ? *pb : calloc(1, sizeof(*b));
        if (b) {
            snprintf(b->module, sizeof(b->module), "%s", module);
            snprintf(b->token, sizeof(b->token), "%s", u->token);
            memcpy(b->mac, mac, sizeof(mac));
            snprintf(b->msg, sizeof(b->msg), "%s", eb ? eb->msg : "PIN rejected");
            if (!pb) {
                b->next = p->bad;
                p->bad = b;
            }
        }
    } else if (rc == CMK_OK && pb) {
        b = *pb;
        *pb = b->next;
        free(b);
    }
out:
    cmk_secfree(pin);
    cmk_cleanse(mac, sizeof(mac));
    return rc;
}

/* 1 if a and b name the same file (same path, or both resolve to one inode). Only stat()
 * is done on them: nothing is loaded. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (strcmp(a, b) == 0)
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* The module for u: the operator's ($CMKSTORE_PKCS11_MODULE, pkcs11.json). A module-path
 * in the identifier is a claim checked against it, never loaded on its own: identifiers
 * are read back from a store's files, which whoever can write the store controls, and
 * loading a library runs its code. An identifier the operator built (HSM-backed vault) is
 * obeyed. */
static cmk_err prov_module(const struct p11_prov *p, const cmk_p11_uri *u, char *module, size_t cap,
                           cmk_errbuf *eb)
{
    cmk_err rc;

    if (p->flags & CMK_P11_PROV_OBEY_QUERY)
        return cmk_p11_resolve_module(p->home, u->module_path, module, cap, eb);
    rc = cmk_p11_resolve_module(p->home, NULL, module, cap, eb);
    if (!u->module_path[0])
        return rc;
    if (rc == CMK_E_INVAL)
        return cmk_errbuf_set(
            eb, CMK_E_KEY_UNREACHABLE,
            "key identifier for PKCS#11 key \"%s\" names module %.300s, which "
            "was not loaded: a module named by a key identifier is never "
            "loaded (identifiers are stored in the store's files), only the "
            "operator's. If you trust it, name it with --pkcs11-module, $" CMK_P11_ENV_MODULE
            " or \"module\" in <home>/pkcs11.json",
            u->object, u->module_path);
    if (rc == CMK_OK && !same_file(u->module_path, module))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "key identifier for PKCS#11 key \"%s\" names module %.300s, but the "
                            "configured module is %.300s: refused, neither was loaded (a key "
                            "identifier never chooses the module). If the identifier is right, "
                            "configure that module (--pkcs11-module, $" CMK_P11_ENV_MODULE
                            " or pkcs11.json)",
                            u->object, u->module_path, module);
    return rc;
}

/* Finds or opens the handle for the URI's module and token. */
static cmk_err prov_acquire(struct p11_prov *p, const cmk_p11_uri *u, struct prov_ent **out,
                            cmk_errbuf *eb)
{
    char module[CMK_P11_PATH_MAX];
    struct prov_ent *e;
    cmk_p11 *h = NULL;
    cmk_err rc;

    *out = NULL;
    rc = prov_module(p, u, module, sizeof(module), eb);
    if (rc == CMK_E_INVAL && eb)
        /* For a store this is not bad input but a key it cannot reach from here: the
         * identifier is valid, the environment lacks the module (key-access, exit 5). */
        rc = eb->code = CMK_E_KEY_UNREACHABLE;
    if (rc != CMK_OK)
        return rc;
    pthread_mutex_lock(&p->mu);
    for (e = p->ents; e; e = e->next) {
        if (strcmp(e->module, module) == 0 && strcmp(e->token, u->token) == 0) {
            e->refs++;
            *out = e;
            goto out;
        }
    }
    rc = prov_open(p, module, u, &h, eb);
    if (rc != CMK_OK)
        goto out;
    e = calloc(1, sizeof(*e));
    if (!e) {
        cmk_p11_close(h);
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(e->module, module, sizeof(module));
    snprintf(e->token, sizeof(e->token), "%s", u->token);
    e->h = h;
    e->refs = 1;
    e->next = p->ents;
    p->ents = e;
    *out = e;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void ent_release(struct p11_prov *p, struct prov_ent *e, cmk_err rc)
{
    struct prov_ent **pp;
    int close_it = 0;

    if (!e)
        return;
    pthread_mutex_lock(&p->mu);
    if ((rc == CMK_E_KEY_UNREACHABLE || rc == CMK_E_KEY_DENIED) && !e->dead) {
        /* The token went away, the module failed or a new login was refused: the next call
         * starts afresh (and reads the PIN again). */
        for (pp = &p->ents; *pp; pp = &(*pp)->next) {
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        }
        e->dead = 1;
    }
    close_it = --e->refs == 0 && e->dead;
    pthread_mutex_unlock(&p->mu);
    if (close_it) {
        cmk_p11_close(e->h);
        free(e);
    }
}

/* Parses kid and checks an id= is a cmkstore version; version receives its hex ("" if the
 * kid is versionless). */
static cmk_err prov_parse(const char *kid, cmk_p11_uri *u, char version[CMK_P11_VERSION_LEN + 1],
                          cmk_errbuf *eb)
{
    cmk_err rc = cmk_p11_uri_parse(kid, u, eb);

    version[0] = '\0';
    if (rc != CMK_OK)
        return rc;
    if (u->has_id) {
        if (!cmk_p11_id_is_version(u->id, u->id_len))
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "PKCS#11 key identifier for key \"%s\": id= is not a cmkstore "
                                  "key version (16 bytes: a 4-byte sequence number from 1, then "
                                  "12 random bytes)",
                                  u->object);
        cmk_hex(version, u->id, CMK_P11_ID_LEN);
    }
    return CMK_OK;
}

/* Adds the store's identity to a failure message. */
static cmk_err prov_done(cmk_err rc, const char *principal, cmk_errbuf *eb)
{
    if (rc != CMK_OK && principal && *principal)
        cmk_eb_append(eb, " [identity %s]", principal);
    return rc;
}

static int prov_handles(void *self, const char *kid)
{
    (void)self;
    return cmk_p11_is_uri(kid);
}

static cmk_err prov_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                             cmk_errbuf *eb)
{
    struct p11_prov *p = self;
    struct prov_ent *e = NULL;
    char version[CMK_P11_VERSION_LEN + 1];
    cmk_p11_version v;
    cmk_p11_uri u;
    unsigned algs = 0;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = prov_parse(kid, &u, version, eb);
    if (rc == CMK_OK)
        rc = prov_acquire(p, &u, &e, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_key_get(e->h, u.object, version, &v, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_wrap_algs(e->h, u.object, v.version, &algs, eb);
    if (rc != CMK_OK)
        goto out;
    out->requested_versioned = u.has_id;
    rc = cmk_p11_uri_format(&u, 0, out->versionless, sizeof(out->versionless), eb);
    if (rc != CMK_OK)
        goto out;
    u.has_id = 1;
    u.id_len = CMK_P11_ID_LEN;
    memcpy(u.id, v.id, CMK_P11_ID_LEN);
    rc = cmk_p11_uri_format(&u, 1, out->kid, sizeof(out->kid), eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(out->version, sizeof(out->version), "%s", v.version);
    out->kty = CMK_KTY_RSA_HSM;
    out->bits = v.bits;
    out->enabled = 1;
    out->wrap_algs = algs;
out:
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    ent_release(p, e, rc);
    return prov_done(rc, principal, eb);
}

/* Parses a versioned kid and acquires the handle of its token, for wrapping or unwrapping
 * (what, for messages). *e is released with ent_release. */
static cmk_err prov_begin_versioned(struct p11_prov *p, const char *kid, const char *what,
                                    cmk_p11_uri *u, char version[CMK_P11_VERSION_LEN + 1],
                                    struct prov_ent **e, cmk_errbuf *eb)
{
    cmk_err rc = prov_parse(kid, u, version, eb);

    if (rc == CMK_OK && !version[0])
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "%s with PKCS#11 key \"%s\" in token \"%s\" needs a versioned key "
                            "identifier (with id=); describe the key to get one",
                            what, u->object, u->token);
    if (rc == CMK_OK)
        rc = prov_acquire(p, u, e, eb);
    return rc;
}

/* One wrap or unwrap: in[0..inlen) into out (capacity *outlen in, length out). */
struct wrap_io {
    int unwrap;
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t *outlen;
};

static cmk_err prov_wrap_io(struct p11_prov *p, const char *kid, const char *principal,
                            cmk_wrap_alg alg, const struct wrap_io *io, cmk_errbuf *eb)
{
    struct prov_ent *e = NULL;
    char version[CMK_P11_VERSION_LEN + 1];
    cmk_p11_uri u;
    cmk_err rc;

    rc = prov_begin_versioned(p, kid, io->unwrap ? "unwrapping a key" : "wrapping a key", &u,
                              version, &e, eb);
    if (rc == CMK_OK && io->unwrap)
        rc = cmk_p11_unwrap(e->h, u.object, version, alg, io->in, io->inlen, io->out, io->outlen,
                            eb);
    else if (rc == CMK_OK)
        rc = cmk_p11_wrap(e->h, u.object, version, alg, io->in, io->inlen, io->out, io->outlen, eb);
    ent_release(p, e, rc);
    return prov_done(rc, principal, eb);
}

static cmk_err prov_wrap(void *self, const char *versioned_kid, const char *principal,
                         cmk_wrap_alg alg, const unsigned char *dek, size_t keylen,
                         unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    size_t cap = CMK_WRAPPED_MAX;
    struct wrap_io io = {0, dek, keylen, out, &cap};
    cmk_err rc = prov_wrap_io(self, versioned_kid, principal, alg, &io, eb);

    if (rc == CMK_OK)
        *outlen = cap;
    return rc;
}

static cmk_err prov_unwrap(void *self, const char *versioned_kid, const char *principal,
                           cmk_wrap_alg alg, const unsigned char *wrapped, size_t wrappedlen,
                           unsigned char *dek, size_t *keylen, cmk_errbuf *eb)
{
    struct wrap_io io = {1, wrapped, wrappedlen, dek, keylen};

    return prov_wrap_io(self, versioned_kid, principal, alg, &io, eb);
}

static void prov_release(void *self)
{
    struct p11_prov *p = self;
    struct prov_ent *e, *next;

    if (!p)
        return;
    for (e = p->ents; e; e = next) {
        next = e->next;
        cmk_p11_close(e->h);
        free(e);
    }
    while (p->bad) {
        struct prov_bad *b = p->bad;
        p->bad = b->next;
        free(b);
    }
    cmk_cleanse(p->mac_key, sizeof(p->mac_key));
    pthread_mutex_destroy(&p->mu);
    free(p->home);
    free(p);
}

static const cmk_kek_provider p11_ops = CMK_KEK_PROVIDER_OPS("pkcs11", prov);

cmk_err cmk_pkcs11_provider_new(const char *home, unsigned flags, cmk_kek_provider **out,
                                cmk_errbuf *eb)
{
    struct p11_prov *p = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    p = calloc(1, sizeof(*p));
    if (!p || (home && !(p->home = strdup(home)))) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the PKCS#11 provider");
        goto out;
    }
    p->flags = flags;
    rc = cmk_random(p->mac_key, sizeof(p->mac_key), eb);
    if (rc != CMK_OK)
        goto out;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot create a mutex for the PKCS#11 provider");
        goto out;
    }
    /* From here on p belongs to the provider (released by prov_release on failure too). */
    return cmk_kek_provider_make(&p11_ops, p, out, eb);
out:
    if (p)
        free(p->home);
    free(p);
    return rc;
}
