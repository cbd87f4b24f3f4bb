/* events.c — the store's key-event log. */
#include "core/events.h"

#include <stdlib.h>

#include "core/base/jsonfile.h"

cmk_err cmk_events_append(cmk_backend *bk, const char *type, json_t *fields, cmk_errbuf *eb)
{
    char ts[32], *line = NULL;
    json_t *rec = fields ? fields : json_object();
    size_t n = 0;
    cmk_err rc;

    if (!rec)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (event)");
    cmk_iso8601((time_t)cmk_now(), ts);
    json_object_set_new(rec, "time", json_string(ts));
    json_object_set_new(rec, "event", json_string(type));
    line = cmk_json_dump_line(rec, 0, &n);
    rc = line ? cmk_bk_log_append(bk, CMK_EVENTS_LOG, line, n, eb)
              : cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot serialise a log record");
    free(line);
    json_decref(rec);
    return rc;
}
