/* test_blobseal.c — the sealing protocol: chunk nonce and AAD checked against an AAD built
 * here by hand from format.h, the last flag and position bound in, the record check, the
 * index tag and trailer, spills, key commitment and metadata records. */
#include <stdlib.h>
#include <string.h>

#include "core/blobseal.h"
#include "core/base/bytes.h"
#include "tests/check.h"

#define CS 65536u

static uint8_t dek[CMK_DEK_LEN], dek2[CMK_DEK_LEN];

static void new_blob(cmk_fmt_header *h, uint8_t header[CMK_FMT_HEADER_SIZE], cmk_blobkey *k)
{
    memset(h, 0, sizeof(*h));
    h->version = CMK_FMT_VERSION;
    h->aead = CMK_AEAD_AES256GCM;
    h->kdf = CMK_KDF_HKDF_SHA256;
    h->comp = CMK_COMP_ZSTD;
    h->digest_alg = 1;
    h->chunk_size = CS;
    h->dek_id = 3;
    h->index_offset = CMK_FMT_HEADER_SIZE; /* an empty blob until the caller says more */
    test_fill_random(h->salt, sizeof(h->salt), 11);
    REQUIRE(cmk_blobseal_key_new(dek, h, header, k, NULL) == CMK_OK);
}

static void test_keys(void)
{
    cmk_fmt_header h, back;
    uint8_t header[CMK_FMT_HEADER_SIZE];
    cmk_blobkey k, k2;

    new_blob(&h, header, &k);
    CHECK(memcmp(h.commitment, k.commit, CMK_COMMIT_LEN) == 0);
    CHECK(memcmp(header + 56, k.commit, CMK_COMMIT_LEN) == 0);
    CHECK_OK(cmk_fmt_header_decode(header, sizeof(header), &back, NULL));
    CHECK_OK(cmk_blobseal_key_open(dek, &back, &k2, NULL));
    CHECK(memcmp(k2.key, k.key, CMK_KEY_LEN) == 0);
    /* Another DEK, or another context (the DEK id), does not open it. */
    CHECK_RC(cmk_blobseal_key_open(dek2, &back, &k2, NULL), CMK_E_INTEGRITY);
    back.dek_id = 4;
    CHECK_RC(cmk_blobseal_key_open(dek, &back, &k2, NULL), CMK_E_INTEGRITY);
}

/* Seals chunk i of n, opens it back, checks the bytes against the layout of format.h. */
static void round_trip(int compressible, uint64_t index, int last)
{
    cmk_fmt_header h;
    uint8_t header[CMK_FMT_HEADER_SIZE], aad[CMK_FMT_CHUNK_AAD_SIZE], nonce[CMK_NONCE_LEN];
    uint8_t tag[CMK_TAG_LEN];
    size_t cap = (size_t)cmk_fmt_record_max(CS);
    uint8_t *plain = malloc(CS), *rec = malloc(cap), *out = malloc(CS), *ct = malloc(cap);
    const uint8_t *got = NULL;
    cmk_blobkey k;
    cmk_fmt_chunk c;
    cmk_fmt_index_entry e;
    uint8_t ent[CMK_FMT_INDEX_ENTRY_SIZE];
    uint32_t plen = last ? 1000 : CS, rlen = 0;

    REQUIRE(plain && rec && out && ct);
    new_blob(&h, header, &k);
    h.plain_size = index * CS + plen;
    h.chunk_count = index + 1 + (last ? 0 : 1);
    if (!last)
        h.plain_size += 5;
    (compressible ? test_fill_text : test_fill_random)(plain, plen, index + 1);
    CHECK_OK(cmk_blobseal_chunk(&k, header, index, last, 1, plain, plen, rec, cap, &rlen, NULL));
    CHECK(!!(rec[0] & CMK_CHUNK_ZSTD) == compressible);
    CHECK(!!(rec[0] & CMK_CHUNK_LAST) == last);
    CHECK(cmk_ld32(rec + 8) == plen);
    CHECK(rlen == cmk_fmt_record_len(cmk_ld32(rec + 4)));
    if (!compressible) {
        /* Independently: nonce = 0 (BE u32) || index (BE u64); AAD = static header ||
         * index (LE u64) || record header [0, 12). */
        memset(nonce, 0, 4);
        cmk_st64be(nonce + 4, index);
        memcpy(aad, header, 88);
        cmk_st64(aad + 88, index);
        memcpy(aad + 96, rec, 12);
        CHECK_OK(cmk_gcm_seal(k.key, nonce, aad, sizeof(aad), plain, plen, ct, tag, NULL));
        CHECK(memcmp(ct, rec + 16, plen) == 0);
        CHECK(memcmp(tag, rec + 16 + plen, CMK_TAG_LEN) == 0);
    }
    cmk_blobseal_entry(rec, rlen, 4096, ent);
    e.offset = cmk_ld64(ent);
    e.stored_len = cmk_ld32(ent + 8);
    e.flags = ent[12];
    CHECK(e.offset == 4096 && e.stored_len == rlen - 32 && e.flags == rec[0]);
    CHECK_OK(cmk_blobseal_chunk_parse(&h, &e, index, rec, &c, NULL));
    CHECK(cmk_blobseal_check_ok(rec, &c));
    memcpy(ct, rec, rlen); /* kept for the tamper cases */
    CHECK_OK(cmk_blobseal_chunk_open(&k, header, index, rec, &c, out, &got, NULL));
    CHECK(got && memcmp(got, plain, plen) == 0);
    /* Another position does not open it (the index is in the nonce and the AAD). */
    memcpy(rec, ct, rlen);
    CHECK_RC(cmk_blobseal_chunk_open(&k, header, index + 1, rec, &c, out, &got, NULL),
             CMK_E_INTEGRITY);
    /* A flipped last flag fails the tag (the record header is in the AAD). */
    memcpy(rec, ct, rlen);
    rec[0] ^= CMK_CHUNK_LAST;
    c.flags = rec[0];
    CHECK_RC(cmk_blobseal_chunk_open(&k, header, index, rec, &c, out, &got, NULL), CMK_E_INTEGRITY);
    /* The index entry must agree with the record. */
    memcpy(rec, ct, rlen);
    e.flags ^= CMK_CHUNK_ZSTD;
    CHECK_RC(cmk_blobseal_chunk_parse(&h, &e, index, rec, &c, NULL), CMK_E_CORRUPT);
    /* A flipped ciphertext byte breaks the check (torn) and the tag. */
    e.flags ^= CMK_CHUNK_ZSTD;
    rec[20] ^= 0x40;
    CHECK_OK(cmk_blobseal_chunk_parse(&h, &e, index, rec, &c, NULL));
    CHECK(!cmk_blobseal_check_ok(rec, &c));
    CHECK_RC(cmk_blobseal_chunk_open(&k, header, index, rec, &c, out, &got, NULL), CMK_E_INTEGRITY);
    /* Too small a record buffer is refused, not overrun. */
    CHECK_RC(
        cmk_blobseal_chunk(&k, header, index, last, 0, plain, plen, rec, plen + 31, &rlen, NULL),
        CMK_E_INVAL);
    free(plain);
    free(rec);
    free(out);
    free(ct);
}

static void test_index(void)
{
    cmk_fmt_header h, back;
    uint8_t header[CMK_FMT_HEADER_SIZE], ent[3 * CMK_FMT_INDEX_ENTRY_SIZE];
    uint8_t buf[3 * CMK_FMT_INDEX_ENTRY_SIZE + CMK_TAG_LEN + 8], copy[sizeof(buf)];
    cmk_fmt_index_entry e[3];
    uint64_t off = CMK_FMT_HEADER_SIZE;
    cmk_blobkey k;

    new_blob(&h, header, &k);
    h.plain_size = 2 * CS + 10;
    h.chunk_count = 3;
    for (int i = 0; i < 3; i++) {
        uint32_t stored = i == 2 ? 10 : CS;
        uint8_t rec[CMK_FMT_CHUNK_HDR_SIZE] = {(uint8_t)(i == 2 ? CMK_CHUNK_LAST : 0)};
        cmk_blobseal_entry(rec, (uint32_t)cmk_fmt_record_len(stored), off,
                           ent + i * CMK_FMT_INDEX_ENTRY_SIZE);
        off += cmk_fmt_record_len(stored);
    }
    h.index_offset = off;
    cmk_fmt_header_encode(&h, header);
    REQUIRE(cmk_fmt_index_size(3) == sizeof(buf));
    CHECK_OK(cmk_blobseal_index(&k, header, ent, 3, buf, NULL));
    CHECK(cmk_ld64(buf + sizeof(buf) - 8) == cmk_fmt_xxh3(buf, sizeof(buf) - 8));
    CHECK_OK(cmk_fmt_header_decode(header, sizeof(header), &back, NULL));
    memcpy(copy, buf, sizeof(buf));
    CHECK_OK(cmk_blobseal_index_open(&k, header, &back, copy, e, NULL));
    CHECK(e[0].offset == CMK_FMT_HEADER_SIZE && e[2].stored_len == 10 &&
          e[2].flags == CMK_CHUNK_LAST);
    /* A damaged trailer is corruption; a damaged entry with a matching trailer is not
     * authentic; so is another header (its size, digest, ... are in the AAD). */
    memcpy(copy, buf, sizeof(buf));
    copy[sizeof(buf) - 1] ^= 1;
    CHECK_RC(cmk_blobseal_index_open(&k, header, &back, copy, e, NULL), CMK_E_CORRUPT);
    memcpy(copy, buf, sizeof(buf));
    copy[3] ^= 1;
    cmk_st64(copy + sizeof(buf) - 8, cmk_fmt_xxh3(copy, sizeof(buf) - 8));
    CHECK_RC(cmk_blobseal_index_open(&k, header, &back, copy, e, NULL), CMK_E_INTEGRITY);
    memcpy(copy, buf, sizeof(buf));
    header[112] ^= 1;
    CHECK_RC(cmk_blobseal_index_open(&k, header, &back, copy, e, NULL), CMK_E_INTEGRITY);
}

static void test_spill(void)
{
    cmk_fmt_header h;
    uint8_t header[CMK_FMT_HEADER_SIZE], plain[3000], sealed[3000 + CMK_TAG_LEN], back[3000];
    cmk_blobkey k;

    new_blob(&h, header, &k);
    test_fill_random(plain, sizeof(plain), 5);
    CHECK_OK(cmk_blobseal_spill(&k, header, 7, plain, sizeof(plain), sealed, NULL));
    CHECK(memcmp(sealed, plain, sizeof(plain)) != 0);
    CHECK_OK(cmk_blobseal_unspill(&k, header, 7, sealed, sizeof(plain), back, NULL));
    CHECK(memcmp(back, plain, sizeof(plain)) == 0);
    /* Another spill's counter, or a chunk nonce, does not open it. */
    CHECK_RC(cmk_blobseal_unspill(&k, header, 6, sealed, sizeof(plain), back, NULL),
             CMK_E_INTEGRITY);
}

static void test_meta(void)
{
    uint8_t h1[32], h2[32], *rec = NULL, *plain = NULL;
    const char *name;
    const uint8_t *val;
    size_t len = 0, nl, vl;
    uint32_t id = 0;

    CHECK_OK(cmk_blobseal_meta_name(dek, "repo/a", h1, NULL));
    CHECK_OK(cmk_blobseal_meta_name(dek, "repo/b", h2, NULL));
    CHECK(memcmp(h1, h2, 32) != 0);
    CHECK_OK(cmk_blobseal_meta_seal(dek, 9, h1, "repo/a", "value", 5, &rec, &len, NULL));
    REQUIRE(rec && len == CMK_META_OVERHEAD + 4 + 6 + 5);
    CHECK(memcmp(rec, CMK_META_MAGIC, 8) == 0);
    CHECK_OK(cmk_blobseal_meta_peek(rec, len, &id, NULL));
    CHECK(id == 9);
    CHECK_OK(cmk_blobseal_meta_open(dek, rec, len, h1, &plain, &name, &nl, &val, &vl, NULL));
    CHECK(plain && nl == 6 && memcmp(name, "repo/a", 6) == 0 && vl == 5 &&
          memcmp(val, "value", 5) == 0);
    free(plain);
    /* Moved under another name, or opened with another DEK: not authentic. */
    CHECK_RC(cmk_blobseal_meta_open(dek, rec, len, h2, &plain, &name, &nl, &val, &vl, NULL),
             CMK_E_INTEGRITY);
    CHECK_RC(cmk_blobseal_meta_open(dek2, rec, len, h1, &plain, &name, &nl, &val, &vl, NULL),
             CMK_E_INTEGRITY);
    CHECK(plain == NULL);
    rec[30] ^= 1;
    CHECK_RC(cmk_blobseal_meta_peek(rec, len, &id, NULL), CMK_E_CORRUPT);
    free(rec);
}

int main(void)
{
    test_fill_random(dek, sizeof(dek), 1);
    test_fill_random(dek2, sizeof(dek2), 2);
    test_keys();
    round_trip(0, 0, 1);
    round_trip(1, 0, 1);
    round_trip(0, 5, 0);
    round_trip(1, 5, 0);
    test_index();
    test_spill();
    test_meta();
    return check_summary();
}
