/*
 * home.h — internal: the cmkstore home, the directory that holds local vaults and identities
 * (cmk_home_resolve and cmk_home_tenant are in cmkstore_admin.h).
 *
 * Layout:  <home>/tenant            the home's tenant id (a UUID, made on first use)
 *          <home>/identities/       user-assigned identities, <name>.json
 *          <home>/identities/system/  system-assigned identities, <store-id>.json
 *          <home>/vaults/<vault>/   local key vaults (see vault.h)
 * Everything is created 0700 / 0600.
 */
#ifndef CMK_HOME_H
#define CMK_HOME_H

#include "cmkstore_admin.h"
#include "core/base/error.h"

/* Checks a resource name (vault, key, identity): 1..63 chars of [A-Za-z0-9-], not starting
 * with '-'. CMK_E_INVAL with a message naming `what` otherwise. */
CMK_MUST_CHECK cmk_err cmk_name_check(const char *name, const char *what, cmk_errbuf *eb);

/* 1 if s is a UUID (8-4-4-4-12 hex digits): lowercase only, or either case if any_case.
 * NULL is not. */
int cmk_is_uuid(const char *s, int any_case);

#endif
