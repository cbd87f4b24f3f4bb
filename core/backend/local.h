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
CMK_MUST_CHECK cmk_err cmk_backend_local_open(const char *dir, cmk_backend **out, cmk_errbuf *eb);

/* ---- a new store (local_create.c) ----
 * cmk_backend_local_target, then cmk_backend_local_create, the records written through the
 * handle, cmk_backend_local_publish: the store appears in its directory at once and whole,
 * and a crash or a failure on the way leaves no half-made store. */

/* Resolves dir_in for a new store into out (absolute; the directory may not exist yet, its
 * parent must: CMK_E_NOT_FOUND) and checks it can take one: CMK_E_REFUSED if a store is
 * there already (nothing is changed), CMK_E_EXISTS if it is not empty. */
CMK_MUST_CHECK cmk_err cmk_backend_local_target(const char *dir_in, char *out, size_t cap,
                                                cmk_errbuf *eb);
/* Stages a new store for dir (from cmk_backend_local_target) beside it,
 * "<dir>.creating-<16 hex>", laid out (tmp/, meta/, every blobs/<alg>/<xx>/) and opened
 * into *out. Closing it before cmk_backend_local_publish removes it. */
CMK_MUST_CHECK cmk_err cmk_backend_local_create(const char *dir, cmk_backend **out, cmk_errbuf *eb);
/* Makes the staged store durable and moves it into its directory (CMK_E_EXISTS if another
 * one got there first); the handle then names the store there. */
CMK_MUST_CHECK cmk_err cmk_backend_local_publish(cmk_backend *b, cmk_errbuf *eb);

#endif
