/*
 * jsonfile.h — JSON documents on disk (jansson): bounded load, atomic save, JSON-lines logs,
 * timestamps. Used for store.json, the keyring, vault metadata, identities and logs.
 */
#ifndef CMK_JSONFILE_H
#define CMK_JSONFILE_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/base/error.h"

/* Loads a JSON object from path (at most 4 MiB). CMK_E_NOT_FOUND if absent, CMK_E_CORRUPT
 * with line and column if it does not parse or is not an object. The caller owns *out. */
CMK_MUST_CHECK cmk_err cmk_json_load(const char *path, json_t **out, cmk_errbuf *eb);
/* Parses a JSON object from a string (same errors, `what` names it in messages). */
CMK_MUST_CHECK cmk_err cmk_json_parse(const char *text, size_t len, const char *what, json_t **out,
                                      cmk_errbuf *eb);
/* obj as text ending in a newline, keys sorted: pretty (2-space indent, as the saved
 * files) or compact (as log lines). malloc'd (NULL: out of memory); *n is its length. */
char *cmk_json_dump_line(const json_t *obj, int pretty, size_t *n);
/* Saves obj to path atomically and durably with mode (pretty-printed, sorted keys). */
CMK_MUST_CHECK cmk_err cmk_json_save(const char *path, const json_t *obj, mode_t mode,
                                     cmk_errbuf *eb);
/* Appends obj as one compact line to a JSON-lines log (created 0600), then fsyncs it. */
CMK_MUST_CHECK cmk_err cmk_json_append_line(const char *path, const json_t *obj, cmk_errbuf *eb);

/* The same, for the file rel inside the directory dirfd (named dir in messages), never
 * through a symbolic link (see cmk_openat_nofollow in fsutil.h): for the store's files. */
CMK_MUST_CHECK cmk_err cmk_json_load_at(int dirfd, const char *dir, const char *rel, json_t **out,
                                        cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_json_save_at(int dirfd, const char *dir, const char *rel,
                                        const json_t *obj, mode_t mode, cmk_errbuf *eb);

/* String member or NULL if absent / not a string. */
const char *cmk_json_str(const json_t *obj, const char *key);
/* Integer member or def. */
int64_t cmk_json_int(const json_t *obj, const char *key, int64_t def);
/* Boolean member (true/false) or def. */
int cmk_json_bool(const json_t *obj, const char *key, int def);

/* "2026-11-22T19:14:03Z" (UTC) into out[32]. */
void cmk_iso8601(time_t t, char out[32]);
/* Parses the format above; -1 on error. */
time_t cmk_parse_iso8601(const char *s);

/* Current time: wall clock seconds (for records) and monotonic seconds (for intervals). */
int64_t cmk_now(void);
double cmk_monotonic(void);

#endif
