/*
 * kid.h — internal: Azure Key Vault key identifiers, https://<host>[:port]/keys/<name>[/<version>]
 * (the seeds' form; a trailing slash means the latest version, as the Azure SDKs send it).
 * Pure functions: they read what users pass and what a store's keyring names.
 */
#ifndef CMK_AKV_KID_H
#define CMK_AKV_KID_H

#include <stddef.h>

#include "core/base/error.h"

#define CMK_AKV_SCHEME      "https://"
#define CMK_AKV_NAME_MAX    127 /* Key Vault key names: 1-127 of [0-9A-Za-z-] */
#define CMK_AKV_VERSION_MAX 64  /* Key Vault versions are 32 hex digits; room for others */

typedef struct cmk_akv_kid {
    char host[256];                        /* lowercase; an IPv6 literal keeps its brackets */
    unsigned port;                         /* 0: the scheme's default (443) */
    char base[300];                        /* "https://host[:port]": what requests go to */
    char name[CMK_AKV_NAME_MAX + 1];       /* key name */
    char version[CMK_AKV_VERSION_MAX + 1]; /* "" for a versionless identifier */
} cmk_akv_kid;

/* 1 if kid starts with https:// or http:// (case aside): the identifiers this provider
 * answers for (http:// only to refuse it with a clear message). */
int cmk_akv_kid_claims(const char *kid);

/* Parses kid. CMK_E_INVAL with a message naming the identifier and the fault (plain http://
 * refused, no /keys/, bad name, version, host or port, query or fragment present). */
CMK_MUST_CHECK cmk_err cmk_akv_kid_parse(const char *kid, cmk_akv_kid *out, cmk_errbuf *eb);

/* "<base>/keys/<name>[/<version>]" into out (cap bytes); version NULL or "" for the
 * versionless form. CMK_E_INVAL if it does not fit. */
CMK_MUST_CHECK cmk_err cmk_akv_kid_format(const cmk_akv_kid *k, const char *version, char *out,
                                          size_t cap, cmk_errbuf *eb);

#endif
