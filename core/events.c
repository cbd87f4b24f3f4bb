/* events.c — the store's key-event log. */
#include "events.h"

#include "fsutil.h"
#include "jsonfile.h"

cmk_err cmk_events_append(const char *store_dir, const char *type, json_t *fields, cmk_errbuf *eb)
{
    char path[4096], ts[32];
    json_t *rec = fields ? fields : json_object();
    cmk_err rc;

    if (!rec)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (event)");
    rc = cmk_path(path, sizeof(path), eb, "%s/events.log", store_dir);
    if (rc != CMK_OK)
        goto out;
    cmk_iso8601((time_t)cmk_now(), ts);
    json_object_set_new(rec, "time", json_string(ts));
    json_object_set_new(rec, "event", json_string(type));
    rc = cmk_json_append_line(path, rec, eb);
out:
    json_decref(rec);
    return rc;
}
