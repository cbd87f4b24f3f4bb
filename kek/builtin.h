/*
 * builtin.h — internal: the built-in key environment of a cmkstore home. Its provider set
 * is, in order: an optional caller-supplied provider, the home's local vaults, PKCS#11
 * tokens; its identities are the home's (identity.h); its store-managed keys live in the
 * home's "cmkstore-managed" vault.
 */
#ifndef CMK_BUILTIN_H
#define CMK_BUILTIN_H

#include "core/base/error.h"
#include "kek/kek.h"

/* The factory the library's public cmk_store_create / cmk_store_open use. */
extern const cmk_keyenv_factory cmk_builtin_keyenv;

/* The built-in provider set alone. home: resolved home directory (NULL or "": no local
 * vault). extra: borrowed, may be NULL, consulted first. */
CMK_MUST_CHECK cmk_err cmk_kek_open(const char *home, const cmk_kek_provider *extra, cmk_kek **out,
                                    cmk_errbuf *eb);

#endif
