/*
 * fuzz_access.c — libFuzzer target for the access file parser and its pattern matcher
 * (tools/serve/registry_access.c). Input: an access file; its first line, when it is
 * "#? NAME", also names a repository to check every statement against.
 *
 * Properties checked on every input:
 *  - a parsed file answers lookups for a few users and the repository, granting only the
 *    action bits that exist;
 *  - the matcher agrees with itself on a literal pattern (a name matches itself, "**"
 *    matches everything, "*" matches exactly the names without '/').
 * Seeds: tests/fuzz/corpus/fuzz_access/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tools/serve/registry_access.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const users[] = {"", "alice", "bob", "@devs", "*"};
    char name[REG_NAME_MAX + 1] = "demo/app", err[512];
    reg_access *a = NULL;
    const char *text = (const char *)data;

    if (size > 3 && memcmp(text, "#? ", 3) == 0) {
        const char *nl = memchr(text, '\n', size);
        size_t n = (nl ? (size_t)(nl - text) : size) - 3;
        fuzz_cstr(name, sizeof(name), data + 3, n);
    }
    if (!reg_access_match(name, name) && !strchr(name, '*'))
        abort();
    if (!reg_access_match("**", name))
        abort();
    if (reg_access_match("*", name) != (strchr(name, '/') == NULL))
        abort();
    if (reg_access_parse(text, size, &a, err, sizeof(err)) != CMK_OK) {
        if (a || !memchr(err, '\0', sizeof(err)))
            abort();
        return 0;
    }
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        if (reg_access_granted(a, users[i], name) & ~(JWT_ACT_PULL | JWT_ACT_PUSH | JWT_ACT_DELETE))
            abort();
        (void)reg_access_catalog(a, users[i]);
    }
    reg_access_free(a);
    return 0;
}
