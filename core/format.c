/* format.c — container v1 encode/decode (pure functions, fuzzed by tests/fuzz). */
#include "core/format.h"

#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "core/base/bytes.h"
#include "core/digest.h"

uint64_t cmk_fmt_xxh3(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

int cmk_fmt_chunk_size_ok(uint64_t n)
{
    return n >= CMK_FMT_CHUNK_MIN && n <= CMK_FMT_CHUNK_MAX && (n & (n - 1)) == 0;
}

uint32_t cmk_fmt_stored_max(uint32_t chunk_size)
{
    /* ZSTD_compressBound(n) = n + n/256 + small; the writer only keeps compressed output
     * when it is smaller than the input, so this bound is generous. */
    return chunk_size + (chunk_size >> 8) + 1024;
}

void cmk_fmt_header_encode(const cmk_fmt_header *h, uint8_t out[CMK_FMT_HEADER_SIZE])
{
    memset(out, 0, CMK_FMT_HEADER_SIZE);
    memcpy(out, CMK_FMT_MAGIC, 8);
    cmk_st16(out + 8, h->version);
    cmk_st16(out + 10, CMK_FMT_HEADER_SIZE);
    out[12] = h->aead;
    out[13] = h->kdf;
    out[14] = h->comp;
    out[15] = h->digest_alg;
    cmk_st32(out + 16, h->chunk_size);
    cmk_st32(out + 20, h->dek_id);
    memcpy(out + 24, h->salt, 32);
    memcpy(out + 56, h->commitment, 32);
    cmk_st64(out + 88, h->plain_size);
    cmk_st64(out + 96, h->chunk_count);
    cmk_st64(out + 104, h->index_offset);
    memcpy(out + 112, h->digest, cmk_digest_len(h->digest_alg));
    cmk_st64(out + 184, cmk_fmt_xxh3(out, CMK_FMT_HEADER_AAD_SIZE));
}

static int all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

uint64_t cmk_fmt_index_size(uint64_t chunk_count)
{
    return chunk_count * CMK_FMT_INDEX_ENTRY_SIZE + CMK_FMT_TAG_SIZE + CMK_FMT_INDEX_TRAILER_SIZE;
}

uint64_t cmk_fmt_file_size(const cmk_fmt_header *h)
{
    return h->index_offset + cmk_fmt_index_size(h->chunk_count);
}

cmk_err cmk_fmt_header_decode(const uint8_t *buf, size_t len, cmk_fmt_header *h, cmk_errbuf *eb)
{
    uint64_t want_count, max_rec, min_off, max_off;
    size_t dlen;

    memset(h, 0, sizeof(*h));
    if (len < CMK_FMT_HEADER_SIZE)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "blob header truncated (%zu of %d bytes)", len,
                              CMK_FMT_HEADER_SIZE);
    if (memcmp(buf, CMK_FMT_MAGIC, 8) != 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "not a cmkstore blob (bad magic)");
    h->version = cmk_ld16(buf + 8);
    /* The checksum comes first: a flipped version byte is damage, not a newer format. A
     * newer format is recognised by a header that is intact as far as v1 can tell. */
    if (cmk_ld64(buf + 184) != cmk_fmt_xxh3(buf, CMK_FMT_HEADER_AAD_SIZE))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "blob header checksum mismatch (torn write or media error)");
    if (h->version != CMK_FMT_VERSION)
        return cmk_errbuf_set(eb, h->version > CMK_FMT_VERSION ? CMK_E_UNSUPPORTED : CMK_E_CORRUPT,
                              "blob format version %u is not supported (this build reads %d)",
                              h->version, CMK_FMT_VERSION);
    if (cmk_ld16(buf + 10) != CMK_FMT_HEADER_SIZE)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "bad blob header length %u", cmk_ld16(buf + 10));
    h->aead = buf[12];
    h->kdf = buf[13];
    h->comp = buf[14];
    h->digest_alg = buf[15];
    if (h->aead != CMK_AEAD_AES256GCM || h->kdf != CMK_KDF_HKDF_SHA256 || h->comp != CMK_COMP_ZSTD)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "unknown algorithm ids %u/%u/%u in blob",
                              h->aead, h->kdf, h->comp);
    dlen = cmk_digest_len(h->digest_alg);
    if (dlen == 0)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "unknown digest algorithm %u in blob",
                              h->digest_alg);
    h->chunk_size = cmk_ld32(buf + 16);
    if (!cmk_fmt_chunk_size_ok(h->chunk_size))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "bad chunk size %u in blob header", h->chunk_size);
    h->dek_id = cmk_ld32(buf + 20);
    if (h->dek_id == 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "bad DEK id 0 in blob header");
    memcpy(h->salt, buf + 24, 32);
    memcpy(h->commitment, buf + 56, 32);
    h->plain_size = cmk_ld64(buf + 88);
    h->chunk_count = cmk_ld64(buf + 96);
    h->index_offset = cmk_ld64(buf + 104);
    memcpy(h->digest, buf + 112, 64);
    if (!all_zero(buf + 112 + dlen, 64 - dlen) || !all_zero(buf + 176, 8))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "non-zero padding in blob header");
    /* 2^50 bytes is far beyond any blob and keeps the arithmetic below overflow-free. */
    if (h->plain_size > (1ull << 50))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "implausible blob size in header");
    want_count = (h->plain_size + h->chunk_size - 1) / h->chunk_size;
    if (h->chunk_count != want_count)
        return cmk_errbuf_set(
            eb, CMK_E_CORRUPT, "chunk count %llu does not match size %llu in blob header",
            (unsigned long long)h->chunk_count, (unsigned long long)h->plain_size);
    max_rec = cmk_fmt_record_max(h->chunk_size);
    min_off = CMK_FMT_HEADER_SIZE + h->chunk_count * cmk_fmt_record_len(0);
    max_off = CMK_FMT_HEADER_SIZE + h->chunk_count * max_rec;
    if (h->index_offset < min_off || h->index_offset > max_off)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index offset out of range in blob header");
    return CMK_OK;
}

uint32_t cmk_fmt_plain_len(const cmk_fmt_header *h, uint64_t index)
{
    uint64_t start = index * h->chunk_size;
    uint64_t rest = h->plain_size > start ? h->plain_size - start : 0;
    return (uint32_t)(rest < h->chunk_size ? rest : h->chunk_size);
}

void cmk_fmt_chunk_encode(const cmk_fmt_chunk *c, uint8_t out[CMK_FMT_CHUNK_HDR_SIZE])
{
    out[0] = c->flags;
    out[1] = out[2] = out[3] = 0;
    cmk_st32(out + 4, c->stored_len);
    cmk_st32(out + 8, c->plain_len);
    cmk_st32(out + 12, c->check);
}

cmk_err cmk_fmt_chunk_decode(const uint8_t buf[CMK_FMT_CHUNK_HDR_SIZE], const cmk_fmt_header *h,
                             uint64_t index, cmk_fmt_chunk *c, cmk_errbuf *eb)
{
    int last = index + 1 == h->chunk_count;

    c->flags = buf[0];
    c->stored_len = cmk_ld32(buf + 4);
    c->plain_len = cmk_ld32(buf + 8);
    c->check = cmk_ld32(buf + 12);
    if ((c->flags & ~(CMK_CHUNK_ZSTD | CMK_CHUNK_LAST)) || buf[1] || buf[2] || buf[3])
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu: bad flags",
                              (unsigned long long)index);
    if (!!(c->flags & CMK_CHUNK_LAST) != last)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu: last-chunk marker misplaced",
                              (unsigned long long)index);
    if (c->plain_len != cmk_fmt_plain_len(h, index) || c->plain_len == 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu: plain length %u, expected %u",
                              (unsigned long long)index, c->plain_len, cmk_fmt_plain_len(h, index));
    if (c->flags & CMK_CHUNK_ZSTD) {
        if (c->stored_len == 0 || c->stored_len > cmk_fmt_stored_max(h->chunk_size))
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu: bad stored length",
                                  (unsigned long long)index);
    } else if (c->stored_len != c->plain_len) {
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu: raw chunk length mismatch",
                              (unsigned long long)index);
    }
    return CMK_OK;
}

uint32_t cmk_fmt_chunk_check(const uint8_t hdr[CMK_FMT_CHUNK_HDR_SIZE], const uint8_t *ct,
                             size_t ctlen, const uint8_t tag[CMK_FMT_TAG_SIZE])
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 12);
    if (ctlen)
        XXH3_64bits_update(&st, ct, ctlen);
    XXH3_64bits_update(&st, tag, CMK_FMT_TAG_SIZE);
    return (uint32_t)XXH3_64bits_digest(&st);
}

void cmk_fmt_chunk_aad(const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t index,
                       const uint8_t rec[CMK_FMT_CHUNK_HDR_SIZE],
                       uint8_t aad[CMK_FMT_CHUNK_AAD_SIZE])
{
    memcpy(aad, header, CMK_FMT_STATIC_SIZE);
    cmk_st64(aad + CMK_FMT_STATIC_SIZE, index);
    memcpy(aad + CMK_FMT_STATIC_SIZE + 8, rec, 12);
}

void cmk_fmt_index_entry_encode(const cmk_fmt_index_entry *e, uint8_t out[CMK_FMT_INDEX_ENTRY_SIZE])
{
    cmk_st64(out, e->offset);
    cmk_st32(out + 8, e->stored_len);
    out[12] = e->flags;
    out[13] = out[14] = out[15] = 0;
}

cmk_err cmk_fmt_index_decode(const uint8_t *buf, size_t len, const cmk_fmt_header *h,
                             cmk_fmt_index_entry *entries, cmk_errbuf *eb)
{
    uint64_t off = CMK_FMT_HEADER_SIZE;
    uint32_t smax = cmk_fmt_stored_max(h->chunk_size);

    if (len != h->chunk_count * CMK_FMT_INDEX_ENTRY_SIZE)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index length mismatch");
    for (uint64_t i = 0; i < h->chunk_count; i++) {
        const uint8_t *p = buf + i * CMK_FMT_INDEX_ENTRY_SIZE;
        cmk_fmt_index_entry *e = &entries[i];
        int last = i + 1 == h->chunk_count;
        uint32_t plain = cmk_fmt_plain_len(h, i);

        e->offset = cmk_ld64(p);
        e->stored_len = cmk_ld32(p + 8);
        e->flags = p[12];
        if (p[13] || p[14] || p[15] || (e->flags & ~(CMK_CHUNK_ZSTD | CMK_CHUNK_LAST)) ||
            !!(e->flags & CMK_CHUNK_LAST) != last)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index entry %llu: bad flags",
                                  (unsigned long long)i);
        if (e->offset != off)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index entry %llu: offset not contiguous",
                                  (unsigned long long)i);
        if ((e->flags & CMK_CHUNK_ZSTD) ? (e->stored_len == 0 || e->stored_len > smax)
                                        : e->stored_len != plain)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index entry %llu: bad stored length",
                                  (unsigned long long)i);
        off += cmk_fmt_record_len(e->stored_len);
    }
    if (off != h->index_offset)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "index does not end at the index offset");
    return CMK_OK;
}
