/* test_format.c — container v1 header, chunk record and index encoding/validation. */
#include <string.h>

#include "core/base/bytes.h"
#include "tests/check.h"
#include "core/format.h"

static cmk_fmt_header sample(uint64_t size)
{
    cmk_fmt_header h;
    memset(&h, 0, sizeof(h));
    h.version = 1;
    h.aead = h.kdf = h.comp = 1;
    h.digest_alg = 1;
    h.chunk_size = 65536;
    h.dek_id = 3;
    test_fill_random(h.salt, 32, 1);
    test_fill_random(h.commitment, 32, 2);
    test_fill_random(h.digest, 32, 3);
    h.plain_size = size;
    h.chunk_count = (size + 65535) / 65536;
    h.index_offset = CMK_FMT_HEADER_SIZE + h.chunk_count * (16 + 65536 + 16);
    return h;
}

static void test_header_roundtrip(void)
{
    cmk_fmt_header h = sample(200000), d;
    uint8_t buf[CMK_FMT_HEADER_SIZE];

    cmk_fmt_header_encode(&h, buf);
    CHECK(memcmp(buf, "CMKSBLOB", 8) == 0);
    CHECK(cmk_ld16(buf + 10) == 192);
    CHECK_OK(cmk_fmt_header_decode(buf, sizeof(buf), &d, NULL));
    CHECK(d.plain_size == 200000 && d.chunk_count == 4 && d.dek_id == 3);
    CHECK(memcmp(d.salt, h.salt, 32) == 0 && memcmp(d.digest, h.digest, 32) == 0);
    CHECK(cmk_fmt_file_size(&d) == h.index_offset + 4 * 16 + 16 + 8);
    CHECK_RC(cmk_fmt_header_decode(buf, 191, &d, NULL), CMK_E_CORRUPT);

    /* Every single-bit flip anywhere in the header is caught by the checksum. */
    int caught = 0;
    for (int i = 0; i < CMK_FMT_HEADER_SIZE; i++) {
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1 << b);
            caught += cmk_fmt_header_decode(buf, sizeof(buf), &d, NULL) != CMK_OK;
            buf[i] ^= (uint8_t)(1 << b);
        }
    }
    CHECK(caught == CMK_FMT_HEADER_SIZE * 8);
}

/* Re-encodes a header with a field changed and a recomputed checksum, so the semantic
 * validation (not the checksum) must catch it. */
static cmk_err decode_with(cmk_fmt_header h, void (*mut)(uint8_t *))
{
    uint8_t buf[CMK_FMT_HEADER_SIZE];
    cmk_fmt_header d;
    cmk_errbuf eb = {0};
    cmk_fmt_header_encode(&h, buf);
    mut(buf);
    cmk_st64(buf + 184, cmk_fmt_xxh3(buf, 184));
    cmk_err rc = cmk_fmt_header_decode(buf, sizeof(buf), &d, &eb);
    if (rc != CMK_OK)
        CHECK(eb.msg[0] != 0);
    return rc;
}

static void m_version(uint8_t *b)
{
    cmk_st16(b + 8, 2);
}
static void m_version0(uint8_t *b)
{
    cmk_st16(b + 8, 0);
}
static void m_hlen(uint8_t *b)
{
    cmk_st16(b + 10, 200);
}
static void m_aead(uint8_t *b)
{
    b[12] = 9;
}
static void m_digest(uint8_t *b)
{
    b[15] = 7;
}
static void m_chunk(uint8_t *b)
{
    cmk_st32(b + 16, 65537);
}
static void m_chunk_small(uint8_t *b)
{
    cmk_st32(b + 16, 32768);
}
static void m_dek0(uint8_t *b)
{
    cmk_st32(b + 20, 0);
}
static void m_count(uint8_t *b)
{
    cmk_st64(b + 96, cmk_ld64(b + 96) + 1);
}
static void m_size_huge(uint8_t *b)
{
    cmk_st64(b + 88, UINT64_MAX);
}
static void m_idx_low(uint8_t *b)
{
    cmk_st64(b + 104, 10);
}
static void m_idx_high(uint8_t *b)
{
    cmk_st64(b + 104, UINT64_MAX / 2);
}
static void m_pad(uint8_t *b)
{
    b[150] = 1;
}
static void m_reserved(uint8_t *b)
{
    b[180] = 1;
}

static void test_header_validation(void)
{
    cmk_fmt_header h = sample(200000);
    CHECK_RC(decode_with(h, m_version), CMK_E_UNSUPPORTED);
    CHECK_RC(decode_with(h, m_version0), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_hlen), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_aead), CMK_E_UNSUPPORTED);
    CHECK_RC(decode_with(h, m_digest), CMK_E_UNSUPPORTED);
    CHECK_RC(decode_with(h, m_chunk), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_chunk_small), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_dek0), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_count), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_size_huge), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_idx_low), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_idx_high), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_pad), CMK_E_CORRUPT);
    CHECK_RC(decode_with(h, m_reserved), CMK_E_CORRUPT);
    /* An empty blob: zero chunks, index right after the header. */
    cmk_fmt_header e = sample(0);
    e.index_offset = CMK_FMT_HEADER_SIZE;
    uint8_t buf[CMK_FMT_HEADER_SIZE];
    cmk_fmt_header d;
    cmk_fmt_header_encode(&e, buf);
    CHECK_OK(cmk_fmt_header_decode(buf, sizeof(buf), &d, NULL));
    CHECK(d.chunk_count == 0);
    CHECK(cmk_fmt_chunk_size_ok(1u << 16) && cmk_fmt_chunk_size_ok(1u << 24));
    CHECK(!cmk_fmt_chunk_size_ok(1u << 25) && !cmk_fmt_chunk_size_ok(0) &&
          !cmk_fmt_chunk_size_ok(3u << 16));
}

static void test_chunks(void)
{
    cmk_fmt_header h = sample(150000); /* 3 chunks: 65536, 65536, 18928 */
    cmk_fmt_chunk c = {.flags = CMK_CHUNK_ZSTD,
                       .stored_len = 1000,
                       .plain_len = 65536,
                       .check = 0xdeadbeef},
                  d;
    uint8_t rec[16];

    cmk_fmt_chunk_encode(&c, rec);
    CHECK_OK(cmk_fmt_chunk_decode(rec, &h, 0, &d, NULL));
    CHECK(d.check == 0xdeadbeef && d.stored_len == 1000);
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL), CMK_E_CORRUPT); /* not last */
    c.flags = CMK_CHUNK_LAST;
    c.plain_len = c.stored_len = 150000 - 2 * 65536;
    cmk_fmt_chunk_encode(&c, rec);
    CHECK_OK(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL));
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 1, &d, NULL), CMK_E_CORRUPT);
    rec[1] = 1; /* reserved */
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL), CMK_E_CORRUPT);
    c.flags = 0x80;
    cmk_fmt_chunk_encode(&c, rec);
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL), CMK_E_CORRUPT);
    c.flags = CMK_CHUNK_LAST;
    c.stored_len = 5; /* raw but shorter than plain */
    cmk_fmt_chunk_encode(&c, rec);
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL), CMK_E_CORRUPT);
    c.flags = CMK_CHUNK_LAST | CMK_CHUNK_ZSTD;
    c.stored_len = cmk_fmt_stored_max(65536) + 1;
    cmk_fmt_chunk_encode(&c, rec);
    CHECK_RC(cmk_fmt_chunk_decode(rec, &h, 2, &d, NULL), CMK_E_CORRUPT);
    CHECK(cmk_fmt_plain_len(&h, 0) == 65536 && cmk_fmt_plain_len(&h, 2) == 150000 - 131072);

    /* AAD: static header || index || record header[0..12). */
    uint8_t hb[CMK_FMT_HEADER_SIZE], aad[CMK_FMT_CHUNK_AAD_SIZE], aad2[CMK_FMT_CHUNK_AAD_SIZE];
    cmk_fmt_header_encode(&h, hb);
    cmk_fmt_chunk_aad(hb, 1, rec, aad);
    cmk_fmt_chunk_aad(hb, 2, rec, aad2);
    CHECK(memcmp(aad, hb, 88) == 0 && memcmp(aad, aad2, sizeof(aad)) != 0);
    uint8_t tag[16] = {0}, ct[4] = {1, 2, 3, 4};
    uint32_t k1 = cmk_fmt_chunk_check(rec, ct, 4, tag);
    ct[3] ^= 1;
    CHECK(cmk_fmt_chunk_check(rec, ct, 4, tag) != k1);
}

static void test_index(void)
{
    cmk_fmt_header h = sample(150000);
    uint32_t stored[3] = {1000, 65536, 150000 - 131072};
    uint8_t flags[3] = {CMK_CHUNK_ZSTD, 0, CMK_CHUNK_LAST};
    uint8_t buf[48];
    cmk_fmt_index_entry e[3];
    uint64_t off = CMK_FMT_HEADER_SIZE;

    for (int i = 0; i < 3; i++) {
        cmk_fmt_index_entry x = {off, stored[i], flags[i]};
        cmk_fmt_index_entry_encode(&x, buf + 16 * i);
        off += 16 + stored[i] + 16;
    }
    h.index_offset = off;
    CHECK_OK(cmk_fmt_index_decode(buf, 48, &h, e, NULL));
    CHECK(e[1].offset == CMK_FMT_HEADER_SIZE + 16 + 1000 + 16);
    CHECK_RC(cmk_fmt_index_decode(buf, 32, &h, e, NULL), CMK_E_CORRUPT);
    buf[16] ^= 1; /* offset of entry 1 */
    CHECK_RC(cmk_fmt_index_decode(buf, 48, &h, e, NULL), CMK_E_CORRUPT);
    buf[16] ^= 1;
    buf[16 + 12] = CMK_CHUNK_LAST; /* last marker on a middle entry */
    CHECK_RC(cmk_fmt_index_decode(buf, 48, &h, e, NULL), CMK_E_CORRUPT);
    buf[16 + 12] = 0;
    h.index_offset += 1;
    CHECK_RC(cmk_fmt_index_decode(buf, 48, &h, e, NULL), CMK_E_CORRUPT);
}

int main(void)
{
    test_header_roundtrip();
    test_header_validation();
    test_chunks();
    test_index();
    return check_summary();
}
