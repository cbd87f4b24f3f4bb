/* select.c — a store name to its storage backend (select.h). */
#define _GNU_SOURCE
#include "core/backend/select.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/backend/local.h"
#include "core/backend/s3.h"
#include "core/backend/s3_conf.h"

int cmk_backend_name_is_remote(const char *name)
{
    return cmk_s3_is_name(name);
}

cmk_err cmk_backend_open(const char *name, unsigned flags, char *canon, size_t cap,
                         cmk_backend **out, cmk_errbuf *eb)
{
    char real[PATH_MAX];

    *out = NULL;
    if (cmk_s3_is_name(name))
        return cmk_backend_s3_open(name, !(flags & CMK_BK_OPEN_READ), canon, cap, out, eb);
    if (!name || realpath(name, real) == NULL)
        return cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "no store at %s", name ? name : "(null)");
    if ((size_t)snprintf(canon, cap, "%s", real) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "store path too long");
    return cmk_backend_local_open(canon, out, eb);
}

cmk_err cmk_backend_target(const char *name, char *canon, size_t cap, cmk_errbuf *eb)
{
    if (cmk_s3_is_name(name))
        return cmk_backend_s3_target(name, canon, cap, eb);
    return cmk_backend_local_target(name, canon, cap, eb);
}

cmk_err cmk_backend_create(const char *canon, cmk_backend **out, cmk_errbuf *eb)
{
    if (cmk_s3_is_name(canon))
        return cmk_backend_s3_create(canon, out, eb);
    return cmk_backend_local_create(canon, out, eb);
}

cmk_err cmk_backend_publish(cmk_backend *b, cmk_errbuf *eb)
{
    if (cmk_backend_is_s3(b))
        return cmk_backend_s3_publish(b, eb);
    return cmk_backend_local_publish(b, eb);
}
