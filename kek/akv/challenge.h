/*
 * challenge.h — internal: the Key Vault 401 challenge, the WWW-Authenticate header
 *   Bearer authorization="https://login.microsoftonline.com/<tenant>",
 * resource="https://vault.azure.net" (also authorization_uri=...,
 * scope="https://vault.azure.net/.default"). It tells a client which tenant issues tokens for the
 * vault and for which resource. Pure functions over network input.
 */
#ifndef CMK_AKV_CHALLENGE_H
#define CMK_AKV_CHALLENGE_H

#include "core/base/error.h"

typedef struct cmk_akv_challenge {
    char authority[256]; /* scheme://host of the authorization URI ("" if none given) */
    char tenant[128];    /* its first path element ("" if none) */
    char resource[256];  /* the resource, without a trailing "/.default" or "/" */
    char scope[300];     /* resource + "/.default": what a client-credential token asks for */
} cmk_akv_challenge;

/* Parses a WWW-Authenticate value. CMK_E_INVAL (message says why) if it is not a Bearer
 * challenge naming a resource or scope, or a value is malformed or too long. */
CMK_MUST_CHECK cmk_err cmk_akv_challenge_parse(const char *header, cmk_akv_challenge *out,
                                               cmk_errbuf *eb);

/* 1 if the challenge's resource may be trusted for a vault at vault_host (lowercase host):
 * the resource's host is the vault's host or a parent domain of it (vault.azure.net for
 * myvault.vault.azure.net), so a vault cannot send a client's token to another service. */
int cmk_akv_challenge_domain_ok(const cmk_akv_challenge *c, const char *vault_host);

#endif
