/* events.c — the store's key-event log. */
#include "core/events.h"

#include "core/base/jsonfile.h"

cmk_err cmk_events_append(int dirfd, const char *store_dir, const char *type, json_t *fields,
                          cmk_errbuf *eb)
{
    char ts[32];
    json_t *rec = fields ? fields : json_object();
    cmk_err rc;

    if (!rec)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (event)");
    cmk_iso8601((time_t)cmk_now(), ts);
    json_object_set_new(rec, "time", json_string(ts));
    json_object_set_new(rec, "event", json_string(type));
    rc = cmk_json_append_line_at(dirfd, store_dir, "events.log", rec, eb);
    json_decref(rec);
    return rc;
}
