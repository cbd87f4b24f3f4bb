/*
 * s3.h — the S3 backend: a store in a bucket of an S3-compatible object store, under
 * "s3://BUCKET[/PREFIX]" (endpoint, region and credentials: core/backend/s3_conf.h).
 *
 * What lies where below the prefix:
 *   store.json, keyring.json     records, each one object, replaced with If-Match: <ETag>
 *   meta/<key>                   records of the "meta" namespace
 *   events/<UTC time>-<rand>     the event log: one object per event, names in time order
 *   blobs/<alg>/<hex>            a published blob: the container itself (a blob of one
 *                                part), or a link object naming its data object
 *   data/<16 hex>                a container uploaded in parts, reached through its link
 *   probe                        written at the first open; every writable open checks on it
 *                                that conditional writes are honoured
 *
 * There is no cross-process lock (caps lacks CMK_BK_LOCK): every writer of a record
 * replaces only the version it read (CMK_E_BUSY otherwise), so any number of processes on
 * any number of hosts share a store. An endpoint that does not honour conditional writes
 * is refused at open.
 */
#ifndef CMK_BACKEND_S3_H
#define CMK_BACKEND_S3_H

#include "core/backend/backend.h"

/* Opens the store `name` ("s3://BUCKET[/PREFIX]"): CMK_E_NOT_FOUND if it holds no
 * store.json, CMK_E_REFUSED if the endpoint does not honour conditional writes (checked if
 * probe), CMK_E_IO if it cannot be reached (after retries), CMK_E_INVAL if probe and
 * CMKSTORE_S3_ORPHAN_GRACE is not a number of seconds. With probe, the multipart uploads under
 * data/ started more than that grace ago (default 24 h) are aborted (best effort: writers that
 * died mid-put). canon (cap bytes) receives the canonical name. */
CMK_MUST_CHECK cmk_err cmk_backend_s3_open(const char *name, int probe, char *canon, size_t cap,
                                           cmk_backend **out, cmk_errbuf *eb);

/* Checks that `name` can take a new store and gives its canonical name: CMK_E_REFUSED if a
 * store is there already, CMK_E_EXISTS if the prefix holds other objects. */
CMK_MUST_CHECK cmk_err cmk_backend_s3_target(const char *name, char *canon, size_t cap,
                                             cmk_errbuf *eb);
/* Starts a new store at `name` (from cmk_backend_s3_target): records written through *out
 * are created only if absent; store.json is held back until cmk_backend_s3_publish writes
 * it (only if absent: CMK_E_EXISTS if another store got there first), which makes the store
 * exist. Closing it unpublished deletes what it wrote. */
CMK_MUST_CHECK cmk_err cmk_backend_s3_create(const char *name, cmk_backend **out, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_backend_s3_publish(cmk_backend *b, cmk_errbuf *eb);

/* 1 if b is an S3 backend. */
int cmk_backend_is_s3(const cmk_backend *b);

#endif
