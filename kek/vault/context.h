/*
 * context.h — internal to kek/vault/: one vault located in a home, its vault.json, and its
 * lock.
 *
 * Concurrency: every mutation holds the vault's flock (<vault>/lock) and replaces metadata
 * files by atomic rename (cmk_json_save), so readers never take the lock: they see either
 * the old or the new file. A context is used by one thread.
 */
#ifndef CMK_VAULT_CONTEXT_H
#define CMK_VAULT_CONTEXT_H

#include <jansson.h>

#include "core/base/error.h"
#include "kek/identity/home.h"

typedef struct cmk_vctx {
    char home[CMK_PATH_MAX];
    char name[64];
    char dir[CMK_PATH_MAX];
    json_t *vj;  /* vault.json */
    int lockfd;  /* -1 unless the vault's lock is held */
    int located; /* the vault exists: operations on it are audited */
} cmk_vctx;

void cmk_vctx_init(cmk_vctx *c);
/* Releases the lock (if held) and vault.json; the context can be opened again. */
void cmk_vctx_close(cmk_vctx *c);

/* Locates vault `name` under home, takes its lock if lock is set, and loads vault.json.
 * CMK_E_NOT_FOUND (message naming vault and home), CMK_E_INVAL (bad name), CMK_E_CORRUPT,
 * CMK_E_BUSY (the vault kept being replaced while we waited for the lock). */
CMK_MUST_CHECK cmk_err cmk_vctx_open(cmk_vctx *c, const char *home, const char *name, int lock,
                                     cmk_errbuf *eb);

/* The pieces of cmk_vctx_open, for callers that fill c->home/name/dir themselves or lock
 * late (key creation generates the key before it locks). */
CMK_MUST_CHECK cmk_err cmk_vctx_lock(cmk_vctx *c, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_vctx_load(cmk_vctx *c, cmk_errbuf *eb);

/* Writes vault.json back (atomically); the caller holds the lock. */
CMK_MUST_CHECK cmk_err cmk_vctx_save(const cmk_vctx *c, cmk_errbuf *eb);

/* vault.json's "properties" (borrowed). */
json_t *cmk_vctx_props(const cmk_vctx *c);

int cmk_vctx_purge_protected(const cmk_vctx *c);
/* Soft-delete retention in days (a damaged value reads as the default). */
int cmk_vctx_retention(const cmk_vctx *c);

/* Non-zero if the vault is soft-deleted; *date / *purge (may be NULL) receive its dates. */
int cmk_vctx_deleted(const cmk_vctx *c, const char **date, const char **purge);
/* CMK_E_KEY_DELETED: the error of a key operation in a soft-deleted vault. */
CMK_MUST_CHECK cmk_err cmk_vctx_deleted_err(const cmk_vctx *c, cmk_errbuf *eb);

/* Purge protection: CMK_E_REFUSED naming `what` until purge_date has passed. */
CMK_MUST_CHECK cmk_err cmk_vctx_purge_allowed(const cmk_vctx *c, const char *what,
                                              const char *purge_date, cmk_errbuf *eb);

#endif
