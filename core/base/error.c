/* error.c — error codes, messages and the per-thread detail slot. */
#include "core/base/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *text;
} err_table[CMK_E__COUNT] = {
    [CMK_OK] = {"CMK_OK", "success"},
    [CMK_E_INVAL] = {"CMK_E_INVAL", "invalid argument"},
    [CMK_E_NOMEM] = {"CMK_E_NOMEM", "out of memory"},
    [CMK_E_IO] = {"CMK_E_IO", "I/O error"},
    [CMK_E_NOT_FOUND] = {"CMK_E_NOT_FOUND", "not found"},
    [CMK_E_EXISTS] = {"CMK_E_EXISTS", "already exists"},
    [CMK_E_INTEGRITY] = {"CMK_E_INTEGRITY", "integrity check failed (authentication)"},
    [CMK_E_CORRUPT] = {"CMK_E_CORRUPT", "integrity check failed (corrupt or torn data)"},
    [CMK_E_DIGEST] = {"CMK_E_DIGEST", "digest mismatch"},
    [CMK_E_KEY_DENIED] = {"CMK_E_KEY_DENIED", "key access denied"},
    [CMK_E_KEY_DISABLED] = {"CMK_E_KEY_DISABLED", "key disabled"},
    [CMK_E_KEY_DELETED] = {"CMK_E_KEY_DELETED", "key deleted"},
    [CMK_E_KEY_NOT_FOUND] = {"CMK_E_KEY_NOT_FOUND", "key not found"},
    [CMK_E_KEY_UNREACHABLE] = {"CMK_E_KEY_UNREACHABLE", "key vault unreachable"},
    [CMK_E_KEY_UNSUPPORTED] = {"CMK_E_KEY_UNSUPPORTED", "key type not supported"},
    [CMK_E_REFUSED] = {"CMK_E_REFUSED", "operation refused"},
    [CMK_E_UNSUPPORTED] = {"CMK_E_UNSUPPORTED", "unsupported format or algorithm"},
    [CMK_E_CRYPTO] = {"CMK_E_CRYPTO", "cryptographic library failure"},
    [CMK_E_RANGE] = {"CMK_E_RANGE", "range not satisfiable"},
    [CMK_E_BUSY] = {"CMK_E_BUSY", "resource busy"},
    [CMK_E_NOSPACE] = {"CMK_E_NOSPACE", "no space left on the store's file system"},
};

static _Thread_local char last_msg[1024];

const char *cmk_strerror(cmk_err e)
{
    if ((unsigned)e >= CMK_E__COUNT)
        return "unknown error";
    return err_table[e].text;
}

const char *cmk_errname(cmk_err e)
{
    if ((unsigned)e >= CMK_E__COUNT)
        return "CMK_E_UNKNOWN";
    return err_table[e].name;
}

const char *cmk_errmsg(void)
{
    return last_msg;
}

int cmk_err_is_key_access(cmk_err e)
{
    return e == CMK_E_KEY_DENIED || e == CMK_E_KEY_DISABLED || e == CMK_E_KEY_DELETED ||
           e == CMK_E_KEY_NOT_FOUND || e == CMK_E_KEY_UNREACHABLE;
}

static __attribute__((format(printf, 3, 0))) void vset(cmk_errbuf *eb, cmk_err code,
                                                       const char *fmt, va_list ap)
{
    eb->code = code;
    vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
}

cmk_err cmk_errbuf_set(cmk_errbuf *eb, cmk_err code, const char *fmt, ...)
{
    va_list ap;

    if (!eb)
        return code;
    va_start(ap, fmt);
    vset(eb, code, fmt, ap);
    va_end(ap);
    return code;
}

cmk_err cmk_errbuf_sys(cmk_errbuf *eb, cmk_err code, int errnum, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    /* A file operation that failed for want of space says so in its code, wherever it was
     * made: callers (a registry answering 507) can tell a full disk from a broken one. */
    if (code == CMK_E_IO && cmk_err_from_errno(errnum) == CMK_E_NOSPACE)
        code = CMK_E_NOSPACE;
    if (!eb)
        return code;
    va_start(ap, fmt);
    vset(eb, code, fmt, ap);
    va_end(ap);
    n = strlen(eb->msg);
    if (n < sizeof(eb->msg))
        snprintf(eb->msg + n, sizeof(eb->msg) - n, ": %s", strerror(errnum));
    return code;
}

cmk_err cmk_publish(cmk_errbuf *eb, cmk_err rc)
{
    if (rc == CMK_OK)
        return CMK_OK;
    if (eb && eb->code != CMK_OK) {
        memcpy(last_msg, eb->msg, sizeof(last_msg));
        last_msg[sizeof(last_msg) - 1] = '\0';
        return rc;
    }
    snprintf(last_msg, sizeof(last_msg), "%s", cmk_strerror(rc));
    return rc;
}

cmk_err cmk_set_last(cmk_err code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
    va_end(ap);
    return code;
}

cmk_err cmk_err_from_errno(int errnum)
{
    switch (errnum) {
    case ENOENT:
    case ENOTDIR:
        return CMK_E_NOT_FOUND;
    case ENOMEM:
        return CMK_E_NOMEM;
    case EEXIST:
    case ENOTEMPTY:
        return CMK_E_EXISTS;
    case EWOULDBLOCK:
        return CMK_E_BUSY;
    case ENOSPC:
    case EDQUOT:
        return CMK_E_NOSPACE;
    default:
        return CMK_E_IO;
    }
}
