/*
 * local_internal.h — the local backend's state, shared by its files (core/backend/local*.c).
 * Not for the engine: it goes through backend.h.
 */
#ifndef CMK_BACKEND_LOCAL_INTERNAL_H
#define CMK_BACKEND_LOCAL_INTERNAL_H

#include "core/backend/backend.h"

typedef struct cmk_local_bk {
    cmk_backend base;  /* first: a cmk_backend * is a cmk_local_bk * */
    char dir[4096];    /* the store directory, for messages */
    int dirfd;         /* the store directory, opened once at open */
    int tmpfd;         /* <dir>/tmp */
    int staged;        /* a new store's staging directory, removed at close unless published */
    char target[4096]; /* staged: where publish moves it */
} cmk_local_bk;

static inline cmk_local_bk *cmk_local_of(cmk_backend *b)
{
    return (cmk_local_bk *)b;
}

/* Opens the directory rel below the store ("" for the store directory itself) as a new open
 * file description and takes an exclusive flock on it (waiting, or CMK_E_BUSY at once);
 * *out is the fd, closed to release. Conditional record writes are checked and made under
 * the lock of their directory, and record temporaries exist only under it. A new
 * description each time, so threads of one process exclude each other too. */
CMK_MUST_CHECK cmk_err cmk_local_dir_lock(cmk_local_bk *l, const char *rel, int wait, int *out,
                                          cmk_errbuf *eb);

/* A handle on the directory dir (absolute), opened; no checks (local.c). */
CMK_MUST_CHECK cmk_err cmk_local_new(const char *dir, cmk_local_bk **out, cmk_errbuf *eb);
/* Opens <dir>/tmp into l->tmpfd: CMK_E_REFUSED if it is a link, else CMK_E_CORRUPT. */
CMK_MUST_CHECK cmk_err cmk_local_open_tmp(cmk_local_bk *l, cmk_errbuf *eb);

/* The ops table (local_rec.c) and the ops of local.c it names; contracts in backend.h. */
extern const cmk_backend_ops cmk_local_ops;
void cmk_local_close(cmk_backend *b);
CMK_MUST_CHECK cmk_err cmk_local_blobs_open_op(cmk_backend *b, cmk_pool *pool,
                                               uint64_t direct_after, atomic_int *direct_state,
                                               cmk_bk_blobs **out, cmk_errbuf *eb);

#endif
