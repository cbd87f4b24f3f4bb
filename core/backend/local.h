/*
 * local.h — the local backend: a store directory on a local file system, laid out as it has
 * always been (format v1):
 *
 *   store.json, keyring.json   records (replaced whole: temporary, fsync, rename, fsync dir)
 *   meta/<xx>/<key>            records of the "meta" namespace ("meta/<key>")
 *   events.log                 the append-only event log
 *   lock, meta/lock            the cross-process locks (flock)
 *   tmp/                       unpublished blob files; blobs/<alg>/<xx>/<hex> the blobs
 *
 * Everything in it is opened relative to the directory's fd and never through a symbolic
 * link: the store's files are data that whoever can write the directory controls.
 */
#ifndef CMK_BACKEND_LOCAL_H
#define CMK_BACKEND_LOCAL_H

#include "core/backend/backend.h"

/* Opens the store directory dir (an absolute, resolved path): CMK_E_NOT_FOUND if it holds no
 * store.json (not a store), CMK_E_REFUSED if one of the store's own entries is a symbolic
 * link, CMK_E_CORRUPT if tmp/ cannot be opened. Then removes what crashed writers left:
 * unlocked files in tmp/ and record temporaries beside store.json and keyring.json.
 * *out is closed with cmk_bk_close. */
cmk_err cmk_backend_local_open(const char *dir, cmk_backend **out, cmk_errbuf *eb);

/* Lays a new store out in dir (an existing, empty directory only this process writes: the
 * store's staging directory): tmp/, meta/ and every blobs/<alg>/<xx>/, durably, and opens
 * it. The records (store.json first) are written through *out. */
cmk_err cmk_backend_local_create(const char *dir, cmk_backend **out, cmk_errbuf *eb);

#endif
