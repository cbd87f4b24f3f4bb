/*
 * open.c — the library's public entry points that need the built-in key providers:
 * creating and opening a store. The engine (core/) knows only the KEK interface; this is the
 * one place that hands it the local vaults, identities and PKCS#11 tokens of a cmkstore home
 * (kek/builtin.h). A program with a key environment of its own would call the engine's
 * cmk_store_create_with / cmk_store_open_with in the same way.
 */
#include "cmkstore.h"
#include "core/base/error.h"
#include "core/store_internal.h"
#include "kek/builtin.h"

cmk_err cmk_store_create(const char *dir, const cmk_create_opts *o)
{
    cmk_errbuf eb = {0};

    return cmk_publish(&eb, cmk_store_create_with(dir, o, &cmk_builtin_keyenv, &eb));
}

cmk_err cmk_store_open(const char *dir, const cmk_store_opts *opts, cmk_store **out)
{
    cmk_errbuf eb = {0};

    if (!out)
        return cmk_set_last(CMK_E_INVAL, "cmk_store_open: NULL out");
    return cmk_publish(&eb, cmk_store_open_with(dir, opts, &cmk_builtin_keyenv, out, &eb));
}
