/*
 * pubkey.h — internal to kek/pkcs11/: the public halves of key versions, read from the token
 * once and cached in the handle with the wrap algorithms negotiated for them (wrap.c).
 * Thread-safe: the cache is guarded by h->mu.
 */
#ifndef CMK_P11_PUBKEY_H
#define CMK_P11_PUBKEY_H

#include "kek/pkcs11/session.h"

/* The public key of version id (a new reference: EVP_PKEY_free it) and its cached wrap
 * algorithms (0: not negotiated yet). Reads the token on a cache miss. */
CMK_MUST_CHECK cmk_err cmk_p11_cached_key(cmk_p11 *h, const char *label, const unsigned char *id,
                                          EVP_PKEY **pub, unsigned *algs, cmk_errbuf *eb);

/* Records the negotiated algorithms of a cached version (no-op if it is not cached). */
void cmk_p11_cache_set_algs(cmk_p11 *h, const char *label, const unsigned char *id, unsigned algs);

/* Drops cached versions: of label (every version if id is NULL), or all when label is NULL
 * (at close). */
void cmk_p11_cache_drop(cmk_p11 *h, const char *label, const unsigned char *id);

#endif
