/*
 * provider.h — what the built-in KEK providers (local vault, PKCS#11) and test providers
 * share: one way of making a cmk_kek_provider from a constant table of operations, and
 * adding context to a message a lower layer wrote.
 *
 * A provider type keeps one `static const cmk_kek_provider` holding its name and functions
 * (CMK_KEK_PROVIDER_OPS; self NULL, size 0); a constructor copies it with
 * cmk_kek_provider_fill or cmk_kek_provider_make, which set size (the ABI field) and self.
 */
#ifndef CMK_KEK_PROVIDER_H
#define CMK_KEK_PROVIDER_H

#include "cmkstore_kek.h"
#include "core/base/error.h"

/* The constant operations table of a provider type whose functions are named
 * <prefix>_handles, <prefix>_describe, <prefix>_wrap, <prefix>_unwrap and <prefix>_release. */
#define CMK_KEK_PROVIDER_OPS(name_, prefix)                                                        \
    {                                                                                              \
        .name = (name_), .handles = prefix##_handles, .describe = prefix##_describe,               \
        .wrap = prefix##_wrap, .unwrap = prefix##_unwrap, .release = prefix##_release              \
    }

/* *p becomes a copy of *ops with p->self = self and p->size = sizeof(cmk_kek_provider). */
void cmk_kek_provider_fill(cmk_kek_provider *p, const cmk_kek_provider *ops, void *self);

/* A heap copy of *ops serving self, for cmk_kek_provider_free (kek/kek.h). self is handed
 * over either way: if the allocation fails (CMK_E_NOMEM, *out NULL) it is released with
 * ops->release. */
CMK_MUST_CHECK cmk_err cmk_kek_provider_make(const cmk_kek_provider *ops, void *self,
                                             cmk_kek_provider **out, cmk_errbuf *eb);

/* Appends printf-style text to eb->msg (cut to fit), keeping eb->code. eb may be NULL. */
void cmk_eb_append(cmk_errbuf *eb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets eb to code and "<prefix>: <the message eb held>", prefix printf-style; returns code.
 * For a provider adding what it was doing to a lower layer's message. eb may be NULL. */
CMK_MUST_CHECK cmk_err cmk_eb_prefix(cmk_errbuf *eb, cmk_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
