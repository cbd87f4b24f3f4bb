/*
 * test_vectors.c — known-answer tests for the blob container format.
 *
 * A fixed DEK (00 01 .. 1f, id 1) and salt (20 21 .. 3f) sealing fixed plaintexts with 64 KiB
 * chunks must produce exactly the bytes in tests/vectors/v1-*.blob, and those files must
 * keep decrypting to the plaintexts. Any change to the format shows up here: bump the
 * format version, keep reading v1, and add vectors for the new version.
 *
 * Plaintexts (independent of the test helpers, so they never drift):
 *   empty  0 bytes
 *   small  "hello, registry! " repeated to 100 bytes
 *   multi  65536 bytes of "cmkstore layer text " repeated, then 65536 bytes of
 *          SHA-256 counter stream (block k = SHA-256("cmkstore-kat" || k as u32 LE)),
 *          then 1000 bytes of the phrase again: 3 chunks, compressed / raw / compressed.
 * Regenerate (only when deliberately adding vectors): CMK_WRITE_VECTORS=1.
 *
 * zstd does not promise identical compressed bytes across its versions, so the exact-bytes
 * check runs only with the zstd version recorded in tests/vectors/zstd-version (the reading
 * check always runs: every zstd decodes every valid frame).
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <zstd.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "core/base/jsonfile.h"
#include "core/seal.h"
#include "core/store_internal.h"
#include "tests/testkek.h"

static test_kek *tk;
static char home[4096];

static void phrase(uint8_t *out, size_t n, const char *p)
{
    size_t l = strlen(p);
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)p[i % l];
}

static void sha_stream(uint8_t *out, size_t n)
{
    for (uint32_t k = 0; (size_t)k * 32 < n; k++) {
        uint8_t in[16], h[32];
        memcpy(in, "cmkstore-kat", 12);
        in[12] = (uint8_t)k;
        in[13] = (uint8_t)(k >> 8);
        in[14] = (uint8_t)(k >> 16);
        in[15] = (uint8_t)(k >> 24);
        SHA256(in, 16, h);
        size_t m = n - (size_t)k * 32 < 32 ? n - (size_t)k * 32 : 32;
        memcpy(out + (size_t)k * 32, h, m);
    }
}

static size_t plaintext(const char *name, uint8_t *out)
{
    if (strcmp(name, "empty") == 0)
        return 0;
    if (strcmp(name, "small") == 0) {
        phrase(out, 100, "hello, registry! ");
        return 100;
    }
    phrase(out, 65536, "cmkstore layer text ");
    sha_stream(out + 65536, 65536);
    phrase(out + 131072, 1000, "cmkstore layer text ");
    return 132072;
}

/* Plants the fixed DEK in the store's keyring (identity wrapping). */
static void plant_dek(const char *dir)
{
    char path[4200];
    uint8_t dek[32], wrapped[64];
    char b64[128];
    json_t *j = NULL;

    for (int i = 0; i < 32; i++)
        dek[i] = (uint8_t)i;
    test_kek_identity_wrap(dek, wrapped);
    EVP_EncodeBlock((unsigned char *)b64, wrapped, 64);
    snprintf(path, sizeof(path), "%s/keyring.json", dir);
    CHECK_OK(cmk_json_load(path, &j, NULL));
    REQUIRE(j);
    json_object_set_new(json_array_get(json_object_get(j, "deks"), 0), "wrappedKey",
                        json_string(b64));
    CHECK_OK(cmk_json_save(path, j, 0600, NULL));
    json_decref(j);
}

static cmk_store *kat_store(const char *tag)
{
    char dir[4200];
    cmk_create_opts co;
    cmk_store_opts so;
    cmk_store *s = NULL;

    snprintf(dir, sizeof(dir), "%s/store", test_tmpdir(tag));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "kat";
    co.key_id = "test://vault/keys/k/v1";
    co.kek_provider = test_kek_provider(tk);
    co.chunk_size = 65536;
    CHECK_OK(cmk_store_create(dir, &co));
    plant_dek(dir);
    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = test_kek_provider(tk);
    CHECK_OK(cmk_store_open(dir, &so, &s));
    return s;
}

static void one_vector(const char *name)
{
    static uint8_t pt[140000];
    uint8_t salt[32];
    char dg[CMK_DIGEST_MAX], vpath[4096], bpath[4200];
    size_t n = plaintext(name, pt), vlen = 0, blen = 0;
    cmk_store *s = kat_store(name);
    cmk_put *p = NULL;

    REQUIRE(s);
    for (int i = 0; i < 32; i++)
        salt[i] = (uint8_t)(32 + i);
    CHECK_OK(cmk_put_begin(s, NULL, &p));
    CHECK_OK(cmk_put_set_salt(p, salt));
    /* Odd pieces: the bytes must not depend on how the caller writes. */
    for (size_t off = 0; off < n; off += 333)
        CHECK_OK(cmk_put_write(p, pt + off, n - off < 333 ? n - off : 333));
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    snprintf(bpath, sizeof(bpath), "%s/blobs/sha256/%.2s/%s", cmk_store_dir(s), dg + 7, dg + 7);
    uint8_t *made = test_read_file(bpath, &blen);
    REQUIRE(made);

    snprintf(vpath, sizeof(vpath), "%s", test_vector_path(""));
    snprintf(vpath + strlen(vpath), sizeof(vpath) - strlen(vpath), "v1-%s.blob", name);
    uint8_t *want = test_read_file(vpath, &vlen);
    if (!want && getenv("CMK_WRITE_VECTORS")) {
        REQUIRE(test_write_file(vpath, made, blen) == 0);
        fprintf(stderr, "wrote %s (%zu bytes)\n", vpath, blen);
        want = test_read_file(vpath, &vlen);
    }
    CHECK_MSG(want != NULL, "missing vector %s", vpath);
    if (want) {
        size_t zl = 0;
        unsigned char *zv = test_read_file(test_vector_path("zstd-version"), &zl);
        unsigned recorded = zv ? (unsigned)strtoul((char *)zv, NULL, 10) : 0;
        free(zv);
        if (recorded == ZSTD_versionNumber())
            CHECK_MSG(vlen == blen && memcmp(want, made, blen) == 0,
                      "%s: sealed bytes differ from the checked-in vector (format changed?)", name);
        else
            fprintf(stderr,
                    "note: zstd %u differs from the vectors' zstd %u: exact-bytes "
                    "check skipped, reading checked\n",
                    ZSTD_versionNumber(), recorded);
        /* Reading: the checked-in file decrypts to the plaintext in a fresh store with the
         * same DEK. */
        cmk_store *s2 = kat_store("read");
        char p2[4200];
        snprintf(p2, sizeof(p2), "%s/blobs/sha256/%.2s/%s", cmk_store_dir(s2), dg + 7, dg + 7);
        REQUIRE(test_write_file(p2, want, vlen) == 0);
        cmk_get *g = NULL;
        static uint8_t back[140000];
        size_t got = 0, k = 0;
        CHECK_OK(cmk_get_open(s2, dg, 0, CMK_TO_END, &g));
        while (g && cmk_get_read(g, back + got, sizeof(back) - got, &k) == CMK_OK && k)
            got += k;
        cmk_get_close(g);
        CHECK(got == n && memcmp(back, pt, n) == 0);
        CHECK_OK(cmk_verify(s2, dg, NULL));
        cmk_store_close(s2);
    }
    free(want);
    free(made);
    cmk_store_close(s);
}

int main(void)
{
    cmk_identity id;

    tk = test_kek_new(1);
    REQUIRE(tk);
    snprintf(home, sizeof(home), "%s", test_tmpdir("home"));
    CHECK_OK(cmk_identity_create(home, "kat", &id, NULL));
    one_vector("empty");
    one_vector("small");
    one_vector("multi");
    test_kek_free(tk);
    return check_summary();
}
