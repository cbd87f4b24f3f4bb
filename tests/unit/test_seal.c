/* test_seal.c — key derivation (against an independent HKDF), commitment, AES-256-GCM
 * (against the GCM specification's test vectors), tamper detection. */
#include <string.h>

#include "tests/check.h"
#include "core/base/secmem.h"
#include "core/seal.h"

static void hexeq(const uint8_t *got, const char *want_hex, const char *what)
{
    char h[129];
    cmk_hex(h, got, strlen(want_hex) / 2);
    CHECK_MSG(strcmp(h, want_hex) == 0, "%s: got %s want %s", what, h, want_hex);
}

static void test_derive_kat(void)
{
    uint8_t dek[32], salt[32];
    cmk_blobkey k;
    cmk_kdf_context c = {1, 1, 1, 1, 1, 65536, 1};

    for (int i = 0; i < 32; i++) {
        dek[i] = (uint8_t)i;
        salt[i] = (uint8_t)(32 + i);
    }
    CHECK_OK(cmk_derive_blobkey(dek, salt, &c, &k, NULL));
    /* Computed with Python's hmac module (RFC 5869 by hand), not with OpenSSL. */
    hexeq(k.key, "401760e97a2773f09eb43c923cab5b7bc8c3f2fabaf933d64b34ae29cab130b1", "blob key");
    hexeq(k.commit, "9e26851162e0724978dad97a18ea88a103696a53cdd5a1d6898da9e4ea21c897",
          "commitment");

    /* Every context field changes both outputs. */
    cmk_kdf_context variants[] = {{2, 1, 1, 1, 1, 65536, 1},
                                  {1, 1, 1, 1, 2, 65536, 1},
                                  {1, 1, 1, 1, 1, 131072, 1},
                                  {1, 1, 1, 1, 1, 65536, 2}};
    for (size_t v = 0; v < sizeof(variants) / sizeof(*variants); v++) {
        cmk_blobkey k2;
        CHECK_OK(cmk_derive_blobkey(dek, salt, &variants[v], &k2, NULL));
        CHECK(memcmp(k2.key, k.key, 32) != 0);
        CHECK(memcmp(k2.commit, k.commit, 32) != 0);
    }
    salt[0] ^= 1;
    cmk_blobkey k3;
    CHECK_OK(cmk_derive_blobkey(dek, salt, &c, &k3, NULL));
    CHECK(memcmp(k3.key, k.key, 32) != 0);
    CHECK_RC(cmk_check_commitment(&k3, k.commit, NULL), CMK_E_INTEGRITY);
    CHECK_OK(cmk_check_commitment(&k, k.commit, NULL));
}

static void test_gcm_spec_vectors(void)
{
    /* McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13 and 14:
     * AES-256, all-zero key and IV. */
    uint8_t key[32] = {0}, nonce[12] = {0}, in[16] = {0}, out[16], tag[16];

    CHECK_OK(cmk_gcm_seal(key, nonce, NULL, 0, NULL, 0, NULL, tag, NULL));
    hexeq(tag, "530f8afbc74536b9a963b4f1c4cb738b", "GCM TC13 tag");
    CHECK_OK(cmk_gcm_seal(key, nonce, NULL, 0, in, 16, out, tag, NULL));
    hexeq(out, "cea7403d4d606b6e074ec5d3baf39d18", "GCM TC14 ciphertext");
    hexeq(tag, "d0d1c8a799996bf0265b98b5d48ab919", "GCM TC14 tag");
    uint8_t back[16];
    CHECK_OK(cmk_gcm_open(key, nonce, NULL, 0, out, 16, tag, back, NULL));
    CHECK(memcmp(back, in, 16) == 0);
}

static void test_gcm_tamper(void)
{
    uint8_t key[32], nonce[12], aad[40], msg[1000], ct[1000], back[1000], tag[16];

    test_fill_random(key, sizeof(key), 1);
    test_fill_random(aad, sizeof(aad), 2);
    test_fill_random(msg, sizeof(msg), 3);
    cmk_nonce(nonce, CMK_NONCE_CHUNK, 7);
    CHECK_OK(cmk_gcm_seal(key, nonce, aad, sizeof(aad), msg, sizeof(msg), ct, tag, NULL));
    CHECK(memcmp(ct, msg, sizeof(msg)) != 0);
    CHECK_OK(cmk_gcm_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, back, NULL));
    CHECK(memcmp(back, msg, sizeof(msg)) == 0);
    /* Any flipped bit of ciphertext, tag, AAD or nonce fails authentication. */
    for (size_t i = 0; i < sizeof(ct); i += 37) {
        ct[i] ^= 0x10;
        CHECK_RC(cmk_gcm_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, back, NULL),
                 CMK_E_INTEGRITY);
        ct[i] ^= 0x10;
    }
    for (size_t i = 0; i < 16; i++) {
        tag[i] ^= 1;
        CHECK_RC(cmk_gcm_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, back, NULL),
                 CMK_E_INTEGRITY);
        tag[i] ^= 1;
    }
    aad[39] ^= 0x80;
    CHECK_RC(cmk_gcm_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, back, NULL),
             CMK_E_INTEGRITY);
    aad[39] ^= 0x80;
    uint8_t nonce2[12];
    cmk_nonce(nonce2, CMK_NONCE_CHUNK, 8);
    CHECK_RC(cmk_gcm_open(key, nonce2, aad, sizeof(aad), ct, sizeof(ct), tag, back, NULL),
             CMK_E_INTEGRITY);
    /* In place. */
    memcpy(back, msg, sizeof(msg));
    CHECK_OK(cmk_gcm_seal(key, nonce, aad, sizeof(aad), back, sizeof(back), back, tag, NULL));
    CHECK(memcmp(back, ct, sizeof(ct)) == 0);
    CHECK_OK(cmk_gcm_open(key, nonce, aad, sizeof(aad), back, sizeof(back), tag, back, NULL));
    CHECK(memcmp(back, msg, sizeof(msg)) == 0);
}

static void test_nonce(void)
{
    uint8_t n[12];
    cmk_nonce(n, CMK_NONCE_INDEX, 0x0102030405060708ull);
    hexeq(n, "000000010102030405060708", "nonce layout");
}

static void test_secmem(void)
{
    uint8_t *p = cmk_secalloc(100);
    REQUIRE(p != NULL);
    for (int i = 0; i < 100; i++)
        CHECK(p[i] == 0);
    memset(p, 0xaa, 100);
    cmk_secfree(p);
    CHECK(cmk_secalloc(0) == NULL);
    char u[37];
    CHECK_OK(cmk_uuid4(u, NULL));
    CHECK(strlen(u) == 36 && u[14] == '4' && u[8] == '-');
    uint8_t b[4];
    CHECK(cmk_unhex(b, 4, "0aFf10zz") == -1);
    CHECK(cmk_unhex(b, 4, "0aFf1020") == 0 && b[1] == 0xff);
}

int main(void)
{
    test_derive_kat();
    test_gcm_spec_vectors();
    test_gcm_tamper();
    test_nonce();
    test_secmem();
    return check_summary();
}
