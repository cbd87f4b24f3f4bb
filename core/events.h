/*
 * events.h — the store's own key-event log, events.log (JSON lines, 0600): creation,
 * rotations (from and to versions), key access lost and restored, refused operations.
 * The vault keeps its own audit log of every KEK use; this one is the store's side.
 */
#ifndef CMK_EVENTS_H
#define CMK_EVENTS_H

#include <jansson.h>

#include "core/backend/backend.h"
#include "core/base/error.h"

#define CMK_EVENTS_LOG "events.log"

/* Appends {"time": ISO-8601, "event": type, ...fields} as one line to the store's event log
 * through its backend. fields is consumed (json_decref'd), may be NULL. */
CMK_MUST_CHECK cmk_err cmk_events_append(cmk_backend *bk, const char *type, json_t *fields,
                                         cmk_errbuf *eb);

#endif
