/*
 * kek.h — internal: the set of KEK providers a store consults, in order: an optional
 * caller-supplied provider, the local vault of the home, the PKCS#11 provider. A store holds
 * one cmk_kek; it is thread-safe if its providers are.
 */
#ifndef CMK_KEK_H
#define CMK_KEK_H

#include "cmkstore_kek.h"
#include "error.h"

typedef struct cmk_kek cmk_kek;

/* home: resolved home directory (see home.h). extra: borrowed, may be NULL. */
cmk_err cmk_kek_open(const char *home, const cmk_kek_provider *extra, cmk_kek **out,
                     cmk_errbuf *eb);
void cmk_kek_close(cmk_kek *k);

/* Dispatch to the provider that handles kid (CMK_E_KEY_NOT_FOUND "no provider serves key
 * identifier ..." if none). */
cmk_err cmk_kek_describe(cmk_kek *k, const char *kid, const char *principal, cmk_key_desc *out,
                         cmk_errbuf *eb);
cmk_err cmk_kek_wrap(cmk_kek *k, const char *vkid, const char *principal, cmk_wrap_alg alg,
                     const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                     cmk_errbuf *eb);
cmk_err cmk_kek_unwrap(cmk_kek *k, const char *vkid, const char *principal, cmk_wrap_alg alg,
                       const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                       size_t *keylen, cmk_errbuf *eb);

/* CMK_OK if d describes a key usable as a KEK (RSA or RSA-HSM, >= 2048 bits), else
 * CMK_E_KEY_UNSUPPORTED: "key <kid> is <kty>: only RSA and RSA-HSM keys are supported". */
cmk_err cmk_kek_check_type(const cmk_key_desc *d, const char *kid, cmk_errbuf *eb);
/* RSA-OAEP-256 if the key's provider supports it, else RSA-OAEP (SHA-1). */
cmk_wrap_alg cmk_kek_pick_alg(const cmk_key_desc *d);

/* Frees a provider made by one of the built-in constructors (calls its release). */
void cmk_kek_provider_free(cmk_kek_provider *p);

#endif
