/*
 * common.h — internal to kek/vault/: the small helpers every vault file uses (version
 * strings, times, building JSON answers, listing and removing directories). No state:
 * thread-safe.
 */
#ifndef CMK_VAULT_COMMON_H
#define CMK_VAULT_COMMON_H

#include <jansson.h>

#include "core/base/error.h"

#define CMK_VAULT_VERSION_HEX   32         /* a version: 32 lowercase hex digits */
#define CMK_VAULT_OPERATOR      "operator" /* the identity management operations are audited as */
#define CMK_VAULT_KID_SHOW      "%.200s"   /* key identifiers come from callers: bound them */
#define CMK_VAULT_RETENTION_DEF 90         /* soft-delete retention, days */
#define CMK_VAULT_RETENTION_MIN 7
#define CMK_VAULT_RETENTION_MAX 90

/* Internal functions accept a NULL errbuf from callers but need its message (audit reasons),
 * so public entry points substitute a local one. */
#define CMK_VAULT_EB_ENSURE(eb, local)                                                             \
    do {                                                                                           \
        if (!(eb))                                                                                 \
            (eb) = &(local);                                                                       \
        cmk_errbuf_clear(eb);                                                                      \
    } while (0)

/* 1 if s is a version string (32 lowercase hex digits). */
int cmk_vault_is_version(const char *s);

/* CMK_E_INVAL naming version unless it is NULL, "" or a version string. */
CMK_MUST_CHECK cmk_err cmk_vault_check_version_arg(const char *version, cmk_errbuf *eb);

/* The current time, ISO 8601 UTC. */
void cmk_vault_now_iso(char out[32]);

/* A soft deletion now: its date and its scheduled purge date (retention days later). */
void cmk_vault_deletion_dates(int retention, char date[32], char purge[32]);

/* Sets key of obj, taking ownership of val (which may be NULL after a failed allocation);
 * -1 on failure so that callers can chain with |. */
int cmk_vault_jset(json_t *obj, const char *key, json_t *val);

/* A JSON string, or null for NULL or "". NULL only when out of memory. */
json_t *cmk_vault_jstr(const char *s);

/* CMK_E_NOMEM "out of memory building the vault's answer". */
CMK_MUST_CHECK cmk_err cmk_vault_nomem(cmk_errbuf *eb);

/* Hands j to *out if out is not NULL, else releases it. */
void cmk_vault_give(json_t **out, json_t *j);

/* A deep copy of j into *out (if out is not NULL). */
CMK_MUST_CHECK cmk_err cmk_vault_copy_out(json_t **out, const json_t *j, cmk_errbuf *eb);

/* Called for each valid entry name of a directory. Returns CMK_OK to go on (appending *item
 * to the answer if it set it), anything else to stop with that error. */
typedef cmk_err (*cmk_vault_name_fn)(const char *name, void *arg, json_t **item, cmk_errbuf *eb);

/* Calls fn for every entry of dir that is a valid `what` name (staging and purge leftovers
 * start with '.' and are skipped; a missing dir has none). If out is not NULL it receives
 * the items, sorted by their "name" (the caller owns the array). */
CMK_MUST_CHECK cmk_err cmk_vault_each_name(const char *dir, const char *what, cmk_vault_name_fn fn,
                                           void *arg, json_t **out, cmk_errbuf *eb);

/* Removes dir (a vault or key directory) for good: renames it to parent/.purged-<random>
 * first, so that it disappears at once for every reader, then syncs parent and removes the
 * tree. *moved (may be NULL) is set once the rename is done. */
CMK_MUST_CHECK cmk_err cmk_vault_bury(const char *dir, const char *parent, const char *what,
                                      int *moved, cmk_errbuf *eb);

#endif
