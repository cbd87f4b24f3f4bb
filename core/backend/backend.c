/* backend.c — the engine's side of the backend seam: record name rules and size-checked
 * dispatch to the backend's ops. */
#define _GNU_SOURCE
#include "core/backend/backend.h"

#include <string.h>

static cmk_err unsupported(const cmk_backend *b, const char *op, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "the %s storage backend has no %s operation",
                          b->ops->name ? b->ops->name : "(unnamed)", op);
}

/* A call of op `member` if the backend has it, else CMK_E_UNSUPPORTED. */
#define BK_CALL(b, member, eb, ...)                                                                \
    (CMK_BK_HAS(b, member) ? (b)->ops->member((b), __VA_ARGS__) : unsupported((b), #member, (eb)))

static int name_part_ok(const char *p, size_t n, size_t min)
{
    if (n < min || p[0] == '.' || memmem(p, n, ".tmp-", 5) != NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

cmk_err cmk_bk_rec_name_check(const char *name, cmk_errbuf *eb)
{
    size_t n = name ? strlen(name) : 0;
    const char *slash = n ? strchr(name, '/') : NULL;
    int ok = n > 0 && n <= CMK_REC_NAME_MAX;

    if (ok && slash)
        ok = name_part_ok(name, (size_t)(slash - name), 1) &&
             name_part_ok(slash + 1, n - (size_t)(slash - name) - 1, 2);
    else if (ok)
        ok = name_part_ok(name, n, 1);
    if (ok)
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "bad record name '%.300s' (want NAME or NAMESPACE/KEY of letters, "
                          "digits, '.', '_' and '-', at most %d bytes)",
                          name ? name : "(null)", CMK_REC_NAME_MAX);
}

void cmk_bk_close(cmk_backend *b)
{
    if (b && CMK_BK_HAS(b, close))
        b->ops->close(b);
}

cmk_err cmk_bk_blobs_open(cmk_backend *b, cmk_pool *pool, uint64_t direct_after,
                          atomic_int *direct_state, cmk_bk_blobs **out, cmk_errbuf *eb)
{
    *out = NULL;
    return BK_CALL(b, blobs_open, eb, pool, direct_after, direct_state, out, eb);
}

cmk_err cmk_bk_rec_get(cmk_backend *b, const char *name, size_t max, void **data, size_t *len,
                       cmk_rec_ver *ver, cmk_errbuf *eb)
{
    cmk_err rc = cmk_bk_rec_name_check(name, eb);

    return rc != CMK_OK ? rc : BK_CALL(b, rec_get, eb, name, max, data, len, ver, eb);
}

cmk_err cmk_bk_rec_put(cmk_backend *b, const char *name, const void *data, size_t len,
                       const cmk_rec_ver *expect, cmk_rec_ver *newver, cmk_errbuf *eb)
{
    cmk_err rc = cmk_bk_rec_name_check(name, eb);

    /* Records are never empty: an object store marks a deleted one with an empty object. */
    if (rc == CMK_OK && len == 0)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "record %s: an empty record", name);
    return rc != CMK_OK ? rc : BK_CALL(b, rec_put, eb, name, data, len, expect, newver, eb);
}

cmk_err cmk_bk_rec_delete(cmk_backend *b, const char *name, const cmk_rec_ver *expect,
                          cmk_errbuf *eb)
{
    cmk_err rc = cmk_bk_rec_name_check(name, eb);

    return rc != CMK_OK ? rc : BK_CALL(b, rec_delete, eb, name, expect, eb);
}

cmk_err cmk_bk_rec_list(cmk_backend *b, const char *prefix, int (*cb)(const char *name, void *arg),
                        void *arg, cmk_errbuf *eb)
{
    const char *slash = prefix ? strchr(prefix, '/') : NULL;

    /* The contract (backend.h), checked once for every backend: "ns/" or "ns/name-prefix". */
    if (!slash || slash == prefix || strchr(slash + 1, '/'))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "a record listing names a namespace (\"meta/\"), not '%.300s'",
                              prefix ? prefix : "(null)");
    return BK_CALL(b, rec_list, eb, prefix, cb, arg, eb);
}

cmk_err cmk_bk_log_append(cmk_backend *b, const char *log, const char *line, size_t len,
                          cmk_errbuf *eb)
{
    return BK_CALL(b, log_append, eb, log, line, len, eb);
}

cmk_err cmk_bk_acquire(cmk_backend *b, const char *name, unsigned flags, cmk_bk_lock **out,
                       cmk_errbuf *eb)
{
    *out = NULL;
    if (!(b->ops->caps & CMK_BK_LOCK) || !CMK_BK_HAS(b, lock))
        return CMK_OK;
    return b->ops->lock(b, name, flags, out, eb);
}

void cmk_bk_release(cmk_backend *b, cmk_bk_lock *l)
{
    if (l && CMK_BK_HAS(b, unlock))
        b->ops->unlock(l);
}

cmk_err cmk_bk_log_read(cmk_backend *b, const char *log, char *cursor, size_t cap,
                        int (*cb)(const char *line, size_t len, void *arg), void *arg,
                        cmk_errbuf *eb)
{
    return BK_CALL(b, log_read, eb, log, cursor, cap, cb, arg, eb);
}

cmk_err cmk_bk_sweep(cmk_backend *b, unsigned flags, cmk_bk_sweep_stats *out, cmk_errbuf *eb)
{
    memset(out, 0, sizeof(*out));
    if (!CMK_BK_HAS(b, sweep))
        return CMK_OK;
    return b->ops->sweep(b, flags, out, eb);
}
