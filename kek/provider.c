/* provider.c — helpers the built-in KEK providers share (see provider.h). */
#include "kek/provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cmk_kek_provider_fill(cmk_kek_provider *p, const cmk_kek_provider *ops, void *self)
{
    *p = *ops;
    p->size = sizeof(*p);
    p->self = self;
}

cmk_err cmk_kek_provider_make(const cmk_kek_provider *ops, void *self, cmk_kek_provider **out,
                              cmk_errbuf *eb)
{
    cmk_kek_provider *p = malloc(sizeof(*p));

    *out = NULL;
    if (!p) {
        if (ops->release)
            ops->release(self);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the %s provider",
                              ops->name ? ops->name : "KEK");
    }
    cmk_kek_provider_fill(p, ops, self);
    *out = p;
    return CMK_OK;
}

void cmk_eb_append(cmk_errbuf *eb, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    if (!eb)
        return;
    n = strnlen(eb->msg, sizeof(eb->msg));
    if (n + 1 >= sizeof(eb->msg))
        return;
    va_start(ap, fmt);
    vsnprintf(eb->msg + n, sizeof(eb->msg) - n, fmt, ap);
    va_end(ap);
}

cmk_err cmk_eb_prefix(cmk_errbuf *eb, cmk_err code, const char *fmt, ...)
{
    char why[sizeof(eb->msg)];
    va_list ap;
    int n;

    if (!eb)
        return code;
    memcpy(why, eb->msg, sizeof(why));
    why[sizeof(why) - 1] = '\0';
    va_start(ap, fmt);
    n = vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(eb->msg))
        snprintf(eb->msg + n, sizeof(eb->msg) - (size_t)n, ": %s", why);
    eb->code = code;
    return code;
}
