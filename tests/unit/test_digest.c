/* test_digest.c — OCI digest parsing and computation. */
#include <string.h>

#include "tests/check.h"
#include "core/digest.h"

static void test_known(void)
{
    cmk_digest d;
    uint8_t raw[64];
    char s[CMK_DIGEST_MAX];

    CHECK_OK(cmk_digest_init(&d, CMK_DIGEST_SHA256, NULL));
    CHECK_OK(cmk_digest_update(&d, "ab", 2, NULL));
    CHECK_OK(cmk_digest_update(&d, "c", 1, NULL));
    CHECK_OK(cmk_digest_final(&d, raw, NULL));
    cmk_digest_free(&d);
    cmk_digest_format(CMK_DIGEST_SHA256, raw, s);
    CHECK(strcmp(s, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
          0);
    CHECK_OK(cmk_digest_init(&d, CMK_DIGEST_SHA512, NULL));
    CHECK_OK(cmk_digest_final(&d, raw, NULL));
    cmk_digest_free(&d);
    cmk_digest_format(CMK_DIGEST_SHA512, raw, s);
    CHECK(strncmp(s, "sha512:cf83e1357eefb8bdf1542850d66d8007", 39) == 0);
}

static void test_parse(void)
{
    uint8_t raw[64];
    int alg = 0;
    const char *good = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const char *bad[] = {
        "",
        "sha256",
        ":abc",
        "sha256:",
        "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015add",
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha512:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
    };
    CHECK_OK(cmk_digest_parse(good, &alg, raw, NULL));
    CHECK(alg == CMK_DIGEST_SHA256 && raw[0] == 0xba && raw[31] == 0xad);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        cmk_errbuf eb = {0};
        CHECK_RC(cmk_digest_parse(bad[i], &alg, raw, &eb), CMK_E_INVAL);
        CHECK_MSG(eb.msg[0] != '\0', "no message for '%s'", bad[i]);
    }
    CHECK(cmk_digest_alg_from_name(NULL) == CMK_DIGEST_SHA256);
    CHECK(cmk_digest_alg_from_name("sha1") == 0);
}

int main(void)
{
    test_known();
    test_parse();
    return check_summary();
}
