/* events.c — the store's key-event log. */
#include "core/events.h"

#include <stdlib.h>

#include "cmkstore.h"
#include "core/backend/select.h"
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

cmk_err cmk_store_events_read(const char *store, char *cursor, size_t cap,
                              int (*cb)(const char *event, size_t len, void *arg), void *arg)
{
    char canon[4096];
    cmk_errbuf eb = {0};
    cmk_backend *bk = NULL;
    cmk_err rc;

    if (!store || !cursor || cap < CMK_EVENTS_CURSOR_MAX || !cb)
        return cmk_set_last(CMK_E_INVAL, "cmk_store_events_read: bad arguments");
    rc = cmk_backend_open(store, CMK_BK_OPEN_READ, canon, sizeof(canon), &bk, &eb);
    if (rc == CMK_E_NOT_FOUND && !eb.msg[0])
        rc = cmk_errbuf_set(&eb, rc, "no store at %s", store);
    if (rc == CMK_OK) {
        rc = cmk_bk_log_read(bk, CMK_EVENTS_LOG, cursor, cap, cb, arg, &eb);
        if (rc == CMK_E_NOT_FOUND)
            rc = CMK_OK; /* no event yet */
    }
    cmk_bk_close(bk);
    return cmk_publish(&eb, rc);
}
