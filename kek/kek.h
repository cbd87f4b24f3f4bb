/*
 * kek.h — internal: the KEK interface as the store engine sees it.
 *
 *  - cmk_kek: the set of KEK providers a store consults, in order (the first whose handles()
 *    accepts a key identifier serves it). Thread-safe if its providers are.
 *  - cmk_identity (cmkstore_kek.h): an identity the store acts as.
 *  - cmk_keyenv: what a store needs from the world of keys, bound to one home: its provider
 *    set and its directory of identities (and, at create, a store-managed key). The engine
 *    gets one from a cmk_keyenv_factory; the built-in factory (kek/builtin.h) serves the
 *    local vaults, identities and PKCS#11 tokens of a cmkstore home. The engine never
 *    includes a provider's header: this is its only way to them.
 */
#ifndef CMK_KEK_H
#define CMK_KEK_H

#include "cmkstore_kek.h"
#include "core/base/error.h"

typedef struct cmk_kek cmk_kek;

/* An empty provider set. */
CMK_MUST_CHECK cmk_err cmk_kek_new(cmk_kek **out, cmk_errbuf *eb);
/* Appends p (consulted after those added before). owned: the set frees p at close (with
 * cmk_kek_provider_free), else p is borrowed and must outlive the set. CMK_E_INVAL if p's
 * size is below CMK_KEK_PROVIDER_V1_SIZE or a required member is NULL (an owned p is freed
 * then too); CMK_E_NOMEM when the set is full. */
CMK_MUST_CHECK cmk_err cmk_kek_add(cmk_kek *k, const cmk_kek_provider *p, int owned,
                                   cmk_errbuf *eb);
/* Frees the set and the providers it owns. NULL is a no-op. */
void cmk_kek_close(cmk_kek *k);

/* Dispatch to the provider that handles kid (CMK_E_KEY_NOT_FOUND "no provider serves key
 * identifier ..." if none). */
CMK_MUST_CHECK cmk_err cmk_kek_describe(cmk_kek *k, const char *kid, const char *principal,
                                        cmk_key_desc *out, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_kek_wrap(cmk_kek *k, const char *vkid, const char *principal,
                                    cmk_wrap_alg alg, const unsigned char *dek, size_t keylen,
                                    unsigned char *out, size_t *outlen, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_kek_unwrap(cmk_kek *k, const char *vkid, const char *principal,
                                      cmk_wrap_alg alg, const unsigned char *wrapped,
                                      size_t wrappedlen, unsigned char *dek, size_t *keylen,
                                      cmk_errbuf *eb);

/* CMK_OK if d describes a key usable as a KEK (RSA or RSA-HSM, >= 2048 bits), else
 * CMK_E_KEY_UNSUPPORTED: "key <kid> is <kty>: only RSA and RSA-HSM keys are supported". */
CMK_MUST_CHECK cmk_err cmk_kek_check_type(const cmk_key_desc *d, const char *kid, cmk_errbuf *eb);
/* RSA-OAEP-256 if the key's provider supports it, else RSA-OAEP (SHA-1). */
cmk_wrap_alg cmk_kek_pick_alg(const cmk_key_desc *d);

/* Frees a provider made by one of the built-in constructors (calls its release). */
void cmk_kek_provider_free(cmk_kek_provider *p);

/* ---- the key environment of a store ---- */

typedef struct cmk_keyenv {
    char home[4096]; /* the resolved home the environment is bound to */
    cmk_kek *kek;    /* owned */
    void *self;      /* passed to the functions below */
    /* Finds an identity by reference (name, resource id, principalId or clientId):
     * CMK_E_NOT_FOUND naming ref otherwise. */
    cmk_err (*identity_get)(void *self, const char *ref, cmk_identity *out, cmk_errbuf *eb);
    /* The system-assigned identity of store_id; CMK_E_NOT_FOUND if it has none. */
    cmk_err (*identity_get_system)(void *self, const char *store_id, cmk_identity *out,
                                   cmk_errbuf *eb);
    /* Creates the system-assigned identity of store_id (returns the existing one). */
    cmk_err (*identity_create_system)(void *self, const char *store_id, cmk_identity *out,
                                      cmk_errbuf *eb);
    /* Creates a store-managed key for store_id that only `sys` may use; vkid receives its
     * versioned key identifier. */
    cmk_err (*managed_key_create)(void *self, const char *store_id, const cmk_identity *sys,
                                  char vkid[CMK_ID_MAX], cmk_errbuf *eb);
    void (*release)(void *self); /* may be NULL */
} cmk_keyenv;

/* Releases what the environment holds (its provider set and self). */
void cmk_keyenv_close(cmk_keyenv *e);

typedef struct cmk_keyenv_factory {
    /* Resolves the home to use: `given` (NULL: $CMKSTORE_HOME, else ~/.cmkstore); with create
     * the home may be made. out has room for 4096 bytes. */
    cmk_err (*resolve_home)(const char *given, int create, char *out, cmk_errbuf *eb);
    /* Binds an environment to home (resolved); extra (borrowed, may be NULL) is consulted
     * before the built-in providers. */
    cmk_err (*open)(const char *home, const cmk_kek_provider *extra, cmk_keyenv *out,
                    cmk_errbuf *eb);
} cmk_keyenv_factory;

#endif
