/* kek.c — the KEK provider set a store consults (dispatch by key identifier), the key
 * environment, and the provider helpers. Knows no provider: they are added from above. */
#include "kek/kek.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/secmem.h"

#define KEK_MAX_PROVIDERS 6

struct cmk_kek {
    /* In the order they are consulted; the first whose handles() accepts a kid serves it. */
    const cmk_kek_provider *list[KEK_MAX_PROVIDERS];
    size_t n;
    /* Built-in providers this set owns (freed at close). */
    cmk_kek_provider *owned[KEK_MAX_PROVIDERS];
    size_t nowned;
};

/* names[v] if v indexes a named entry, else dflt. */
static const char *name_of(const char *const *names, size_t n, unsigned v, const char *dflt)
{
    return v < n && names[v] ? names[v] : dflt;
}

const char *cmk_kty_name(cmk_kty kty)
{
    static const char *const names[] = {[CMK_KTY_RSA] = "RSA",
                                        [CMK_KTY_RSA_HSM] = "RSA-HSM",
                                        [CMK_KTY_EC] = "EC",
                                        [CMK_KTY_OCT] = "oct"};
    return name_of(names, sizeof(names) / sizeof(names[0]), (unsigned)kty, "unknown");
}

const char *cmk_wrap_alg_name(cmk_wrap_alg alg)
{
    static const char *const names[] = {
        [CMK_WRAP_RSA_OAEP_256] = "RSA-OAEP-256", [CMK_WRAP_RSA_OAEP] = "RSA-OAEP"};
    return name_of(names, sizeof(names) / sizeof(names[0]), (unsigned)alg, "none");
}

cmk_wrap_alg cmk_wrap_alg_from_name(const char *name)
{
    if (!name)
        return CMK_WRAP_NONE;
    if (strcasecmp(name, "RSA-OAEP-256") == 0)
        return CMK_WRAP_RSA_OAEP_256;
    if (strcasecmp(name, "RSA-OAEP") == 0)
        return CMK_WRAP_RSA_OAEP;
    return CMK_WRAP_NONE;
}

void cmk_kek_provider_free(cmk_kek_provider *p)
{
    if (!p)
        return;
    if (p->release)
        p->release(p->self);
    free(p);
}

cmk_err cmk_kek_new(cmk_kek **out, cmk_errbuf *eb)
{
    *out = calloc(1, sizeof(**out));
    if (!*out)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory opening the key providers");
    return CMK_OK;
}

cmk_err cmk_kek_add(cmk_kek *k, const cmk_kek_provider *p, int owned, cmk_errbuf *eb)
{
    cmk_err rc = CMK_OK;

    if (!p || p->size < CMK_KEK_PROVIDER_V1_SIZE || !p->handles || !p->describe || !p->wrap ||
        !p->unwrap)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "KEK provider %.64s does not implement this interface (size %zu, "
                            "at least %zu with handles, describe, wrap and unwrap expected)",
                            p && p->size >= CMK_KEK_PROVIDER_V1_SIZE && p->name ? p->name : "?",
                            p ? p->size : 0, (size_t)CMK_KEK_PROVIDER_V1_SIZE);
    else if (k->n == KEK_MAX_PROVIDERS)
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "too many KEK providers (at most %d)",
                            KEK_MAX_PROVIDERS);
    if (rc != CMK_OK) {
        if (owned)
            cmk_kek_provider_free((cmk_kek_provider *)p);
        return rc;
    }
    if (owned)
        k->owned[k->nowned++] = (cmk_kek_provider *)p;
    k->list[k->n++] = p;
    return CMK_OK;
}

void cmk_keyenv_close(cmk_keyenv *e)
{
    if (!e)
        return;
    cmk_kek_close(e->kek);
    e->kek = NULL;
    if (e->release)
        e->release(e->self);
    e->self = NULL;
    e->release = NULL;
}

void cmk_kek_close(cmk_kek *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->nowned; i++)
        cmk_kek_provider_free(k->owned[i]);
    free(k);
}

/* The provider serving kid; starts the call's error buffer afresh. */
static cmk_err pick(cmk_kek *k, const char *kid, const cmk_kek_provider **p, cmk_errbuf *eb)
{
    cmk_errbuf_clear(eb);
    *p = NULL;
    if (!k || !kid || !*kid)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no key identifier given");
    for (size_t i = 0; i < k->n; i++) {
        if (k->list[i]->handles && k->list[i]->handles(k->list[i]->self, kid)) {
            *p = k->list[i];
            return CMK_OK;
        }
    }
    return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                          "no provider serves key identifier '%.200s': use "
                          "local://<vault>/keys/<name>[/<version>] for a local vault key, "
                          "https://<vault-host>/keys/<name>[/<version>] for a key in Azure Key "
                          "Vault or pkcs11:token=<token>;object=<label>[;id=<version>] for a key "
                          "in a PKCS#11 token (HSM)",
                          kid);
}

/* A provider that failed without saying why still gets a message naming it and the key. */
static cmk_err fill_msg(const cmk_kek_provider *p, const char *kid, cmk_err rc, cmk_errbuf *eb)
{
    if (rc != CMK_OK && eb && (eb->code == CMK_OK || !eb->msg[0]))
        cmk_errbuf_set(eb, rc, "%s: %s for key %.200s", p->name ? p->name : "provider",
                       cmk_strerror(rc), kid);
    else if (rc != CMK_OK && eb)
        eb->code = rc;
    return rc;
}

cmk_err cmk_kek_describe(cmk_kek *k, const char *kid, const char *principal, cmk_key_desc *out,
                         cmk_errbuf *eb)
{
    const cmk_kek_provider *p;
    cmk_err rc = pick(k, kid, &p, eb);

    return rc != CMK_OK ? rc : fill_msg(p, kid, p->describe(p->self, kid, principal, out, eb), eb);
}

cmk_err cmk_kek_wrap(cmk_kek *k, const char *vkid, const char *principal, cmk_wrap_alg alg,
                     const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                     cmk_errbuf *eb)
{
    const cmk_kek_provider *p;
    cmk_err rc;

    *outlen = 0;
    rc = pick(k, vkid, &p, eb);
    if (rc != CMK_OK)
        return rc;
    rc = p->wrap(p->self, vkid, principal, alg, dek, keylen, out, outlen, eb);
    if (rc == CMK_OK && (*outlen == 0 || *outlen > CMK_WRAPPED_MAX)) {
        /* The contract bounds the output; a provider breaking it must not corrupt the
         * caller's keyring. */
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "%s returned a wrapped key of %zu bytes for %.200s",
                            p->name ? p->name : "provider", *outlen, vkid);
        *outlen = 0;
    }
    return fill_msg(p, vkid, rc, eb);
}

cmk_err cmk_kek_unwrap(cmk_kek *k, const char *vkid, const char *principal, cmk_wrap_alg alg,
                       const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                       size_t *keylen, cmk_errbuf *eb)
{
    const cmk_kek_provider *p;
    size_t cap = *keylen;
    cmk_err rc;

    rc = pick(k, vkid, &p, eb);
    if (rc != CMK_OK) {
        *keylen = 0;
        return rc;
    }
    rc = p->unwrap(p->self, vkid, principal, alg, wrapped, wrappedlen, dek, keylen, eb);
    if (rc == CMK_OK && *keylen > cap) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "%s overran the key buffer for %.200s",
                            p->name ? p->name : "provider", vkid);
        *keylen = 0;
    }
    if (rc != CMK_OK && *keylen) {
        cmk_cleanse(dek, *keylen <= cap ? *keylen : cap);
        *keylen = 0;
    }
    return fill_msg(p, vkid, rc, eb);
}

cmk_err cmk_kek_check_type(const cmk_key_desc *d, const char *kid, cmk_errbuf *eb)
{
    const char *name = kid && *kid ? kid : d->kid;

    if (d->kty != CMK_KTY_RSA && d->kty != CMK_KTY_RSA_HSM)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key %.200s is %s: only RSA and RSA-HSM keys are supported", name,
                              cmk_kty_name(d->kty));
    if (d->bits < 2048)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key %.200s is %s-%u: only RSA and RSA-HSM keys of at least 2048 "
                              "bits are supported",
                              name, cmk_kty_name(d->kty), d->bits);
    if (cmk_kek_pick_alg(d) == CMK_WRAP_NONE)
        return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                              "key %.200s offers neither RSA-OAEP-256 nor RSA-OAEP wrapping", name);
    return CMK_OK;
}

cmk_wrap_alg cmk_kek_pick_alg(const cmk_key_desc *d)
{
    if (d->wrap_algs & (1u << CMK_WRAP_RSA_OAEP_256))
        return CMK_WRAP_RSA_OAEP_256;
    if (d->wrap_algs & (1u << CMK_WRAP_RSA_OAEP))
        return CMK_WRAP_RSA_OAEP;
    return CMK_WRAP_NONE;
}
