/*
 * select.h — which storage backend a store name means: "s3://BUCKET[/PREFIX]" is a store in
 * object storage (core/backend/s3.h), anything else a directory (core/backend/local.h). The
 * engine opens and creates stores through these and names no backend itself.
 */
#ifndef CMK_BACKEND_SELECT_H
#define CMK_BACKEND_SELECT_H

#include "core/backend/backend.h"

/* 1 if name is a store in object storage (no directory, no local path checks). */
int cmk_backend_name_is_remote(const char *name);

/* open flags */
#define CMK_BK_OPEN_READ 1u /* only to read (the event log): no probe of conditional writes */

/* Opens the store `name`: canon (cap bytes) receives its canonical name (an absolute,
 * resolved directory, or "s3://bucket[/prefix]"). CMK_E_NOT_FOUND if there is no store. */
CMK_MUST_CHECK cmk_err cmk_backend_open(const char *name, unsigned flags, char *canon, size_t cap,
                                        cmk_backend **out, cmk_errbuf *eb);

/* A new store: cmk_backend_target checks `name` can take one and gives its canonical name;
 * cmk_backend_create stages it there; records are written through the handle;
 * cmk_backend_publish makes it exist, whole. Closing an unpublished handle leaves nothing. */
CMK_MUST_CHECK cmk_err cmk_backend_target(const char *name, char *canon, size_t cap,
                                          cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_backend_create(const char *canon, cmk_backend **out, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_backend_publish(cmk_backend *b, cmk_errbuf *eb);

#endif
