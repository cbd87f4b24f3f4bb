/* test_compress.c — per-chunk zstd with raw fallback and the incompressibility probe. */
#include <string.h>

#include "tests/check.h"
#include "core/compress.h"

static void roundtrip(const uint8_t *in, size_t n, int expect_compressed)
{
    size_t cap = cmk_compress_bound(n), clen = 0;
    uint8_t *c = malloc(cap), *back = malloc(n + 1);
    int compressed = -1;

    REQUIRE(c && back);
    CHECK_OK(cmk_compress_chunk(in, n, c, cap, &clen, &compressed, NULL));
    CHECK_MSG(compressed == expect_compressed, "n=%zu compressed=%d", n, compressed);
    if (compressed) {
        CHECK(clen < n - n / 16);
        CHECK_OK(cmk_decompress_chunk(c, clen, back, n, NULL));
        CHECK(memcmp(back, in, n) == 0);
        /* Wrong expected size and corrupt frames are refused. */
        CHECK_RC(cmk_decompress_chunk(c, clen, back, n - 1, NULL), CMK_E_CORRUPT);
        c[clen / 2] ^= 0xff;
        cmk_err rc = cmk_decompress_chunk(c, clen, back, n, NULL);
        CHECK(rc == CMK_E_CORRUPT || (rc == CMK_OK && memcmp(back, in, n) != 0));
        CHECK_RC(cmk_decompress_chunk(c, 3, back, n, NULL), CMK_E_CORRUPT);
    }
    free(c);
    free(back);
}

int main(void)
{
    size_t n = 1u << 20;
    uint8_t *buf = malloc(n);
    cmk_compress_stats before, after;

    REQUIRE(buf);
    test_fill_text(buf, n, 1);
    roundtrip(buf, n, 1);
    roundtrip(buf, 1000, 1);
    test_fill_random(buf, n, 2);
    cmk_compress_stats_get(&before);
    roundtrip(buf, n, 0);
    cmk_compress_stats_get(&after);
    /* A random 1 MiB chunk is rejected by the sample probe, without a full attempt. */
    CHECK(after.probe_raw == before.probe_raw + 1);
    CHECK(after.full_raw == before.full_raw);
    /* Small random chunks skip the probe and fail the full attempt. */
    roundtrip(buf, 4096, 0);
    cmk_compress_stats_get(&after);
    CHECK(after.full_raw == before.full_raw + 1);
    /* Half random, half text in the same chunk: still worth compressing overall? The probe
     * looks at the middle; either outcome must round-trip. */
    test_fill_text(buf, n / 2, 3);
    size_t clen;
    int comp;
    uint8_t *c = malloc(cmk_compress_bound(n));
    CHECK_OK(cmk_compress_chunk(buf, n, c, cmk_compress_bound(n), &clen, &comp, NULL));
    free(c);
    memset(buf, 0, n);
    roundtrip(buf, n, 1);
    free(buf);
    return check_summary();
}
