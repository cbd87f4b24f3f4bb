/*
 * fuzz_registry_names.c — libFuzzer target, differential: the registry's checks of the
 * repository names, tags and digests that clients put in URLs (tools/serve/registry_meta.c) against
 * the distribution spec's own regular expressions, run by the C library's regex engine.
 *
 * Properties checked on every input (cut at its first NUL, as a URL component is):
 *  - registry_name_valid accepts exactly the names the spec's expression matches, up to
 *    REG_NAME_MAX characters;
 *  - registry_tag_valid accepts exactly [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127};
 *  - registry_digest_valid accepts exactly sha256:<64> and sha512:<128> lowercase hex, and
 *    everything it accepts the store's digest parser accepts too (no unchecked digest
 *    reaches a blob path).
 * Seeds: tests/fuzz/corpus/fuzz_registry_names/.
 */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "tests/fuzz/fuzz.h"
#include "tools/serve/registry_meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char NAME_RE[] = "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
                              "(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*$";
static const char TAG_RE[] = "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$";
static const char DIGEST_RE[] = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$";

static regex_t name_re, tag_re, digest_re;

static void compile_once(void)
{
    static int done;

    if (done)
        return;
    if (regcomp(&name_re, NAME_RE, REG_EXTENDED | REG_NOSUB) != 0 ||
        regcomp(&tag_re, TAG_RE, REG_EXTENDED | REG_NOSUB) != 0 ||
        regcomp(&digest_re, DIGEST_RE, REG_EXTENDED | REG_NOSUB) != 0)
        abort();
    done = 1;
}

static int matches(const regex_t *re, const char *s)
{
    return regexec(re, s, 0, NULL, 0) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[400];
    uint8_t raw[CMK_DIGEST_RAW_MAX];
    int alg;

    compile_once();
    fuzz_cstr(in, sizeof(in), data, size);
    if (registry_name_valid(in) != (strlen(in) <= REG_NAME_MAX && matches(&name_re, in)))
        abort();
    if (registry_tag_valid(in) != matches(&tag_re, in))
        abort();
    if (registry_digest_valid(in) != matches(&digest_re, in))
        abort();
    if (registry_digest_valid(in) && cmk_digest_parse(in, &alg, raw, NULL) != CMK_OK)
        abort();
    return 0;
}
