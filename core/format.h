/*
 * format.h — the blob container, format version 1. Pure encode/decode: no I/O, no keys, so
 * the parsers can be fuzzed on their own. All integers little-endian.
 *
 * File = header (192 bytes) | chunk record 0 .. n-1 | sealed index | index trailer
 *
 * Header:
 *    0  magic "CMKSBLOB"            8
 *    8  format version (1)          u16
 *   10  header length (192)         u16
 *   12  aead (1 = AES-256-GCM)      u8
 *   13  kdf (1 = HKDF-SHA256)       u8
 *   14  comp (1 = zstd)             u8
 *   15  digest alg (1 sha256, 2 sha512) u8
 *   16  chunk size                  u32   (64 KiB .. 16 MiB, power of two)
 *   20  DEK id                      u32
 *   24  salt                        32
 *   56  key commitment              32
 *   -- bytes [0, 88) are the "static header": bound into every chunk's AAD --
 *   88  plaintext size              u64
 *   96  chunk count                 u64   (= ceil(size / chunk size))
 *  104  index offset                u64   (end of the last chunk record)
 *  112  digest of the plaintext     64    (sha256 uses 32, the rest zero)
 *  176  reserved, zero              8
 *  184  xxh3-64 of bytes [0, 184)   u64   (torn/corrupt vs. tampered, for messages)
 *
 * Chunk record i (16-byte header, ciphertext, tag):
 *    0  flags (1 zstd, 2 last)      u8
 *    1  reserved, zero              3
 *    4  stored length               u32   (ciphertext bytes)
 *    8  plain length                u32
 *   12  check: low 32 bits of xxh3-64 over bytes [0,12) of this header, the ciphertext
 *       and the tag                 u32
 *   16  ciphertext, then 16-byte GCM tag.
 *   AAD = static header (88) || i (u64) || record header bytes [0, 12).
 *   Nonce = (0, i). The AAD binds the blob (via salt + commitment), position, lengths,
 *   flags and the last marker: reordering, swapping, truncating or extending is detected.
 *
 * Index: n entries of 16 bytes (record offset u64, stored length u32, flags u8, zero 3),
 * sealed with nonce (1, 0) and AAD = header bytes [0, 184) (so size, count, digest and
 * index offset are authenticated even for an empty blob); then the 16-byte tag; then the
 * trailer: xxh3-64 of (sealed entries || tag).
 */
#ifndef CMK_FORMAT_H
#define CMK_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

#define CMK_FMT_MAGIC              "CMKSBLOB"
#define CMK_FMT_VERSION            1
#define CMK_FMT_HEADER_SIZE        192
#define CMK_FMT_STATIC_SIZE        88
#define CMK_FMT_HEADER_AAD_SIZE    184
#define CMK_FMT_CHUNK_HDR_SIZE     16
#define CMK_FMT_CHUNK_AAD_SIZE     (CMK_FMT_STATIC_SIZE + 8 + 12)
#define CMK_FMT_TAG_SIZE           16
#define CMK_FMT_INDEX_ENTRY_SIZE   16
#define CMK_FMT_INDEX_TRAILER_SIZE 8

#define CMK_FMT_CHUNK_MIN     (64u << 10)
#define CMK_FMT_CHUNK_MAX     (16u << 20)
#define CMK_FMT_CHUNK_DEFAULT (1u << 20)

enum { CMK_AEAD_AES256GCM = 1 };
enum { CMK_KDF_HKDF_SHA256 = 1 };
enum { CMK_COMP_ZSTD = 1 };

#define CMK_CHUNK_ZSTD 0x01u
#define CMK_CHUNK_LAST 0x02u

typedef struct cmk_fmt_header {
    uint16_t version;
    uint8_t aead, kdf, comp, digest_alg;
    uint32_t chunk_size;
    uint32_t dek_id;
    uint8_t salt[32];
    uint8_t commitment[32];
    uint64_t plain_size;
    uint64_t chunk_count;
    uint64_t index_offset;
    uint8_t digest[64];
} cmk_fmt_header;

typedef struct cmk_fmt_chunk {
    uint8_t flags;
    uint32_t stored_len;
    uint32_t plain_len;
    uint32_t check;
} cmk_fmt_chunk;

typedef struct cmk_fmt_index_entry {
    uint64_t offset;
    uint32_t stored_len;
    uint8_t flags;
} cmk_fmt_index_entry;

/* 1 if n is a valid chunk size. */
int cmk_fmt_chunk_size_ok(uint64_t n);
/* Largest stored length a chunk of chunk_size plaintext may have (zstd bound). */
uint32_t cmk_fmt_stored_max(uint32_t chunk_size);

/* Bytes one chunk record takes in the file: its header, stored_len bytes of payload and the
 * tag. In 64 bits, as stored_len may come from the file. */
static inline uint64_t cmk_fmt_record_len(uint64_t stored_len)
{
    return CMK_FMT_CHUNK_HDR_SIZE + stored_len + CMK_FMT_TAG_SIZE;
}

/* Bytes the largest record of a chunk of chunk_size plaintext takes: what a buffer that
 * holds any one record of such chunks needs. */
static inline uint64_t cmk_fmt_record_max(uint32_t chunk_size)
{
    return cmk_fmt_record_len(cmk_fmt_stored_max(chunk_size));
}

void cmk_fmt_header_encode(const cmk_fmt_header *h, uint8_t out[CMK_FMT_HEADER_SIZE]);
/* Decodes and validates a header: magic, version, algorithm ids, sizes, counts, zero
 * padding, checksum. CMK_E_CORRUPT (with what is wrong) or CMK_E_UNSUPPORTED (newer
 * version / unknown algorithm). */
CMK_MUST_CHECK cmk_err cmk_fmt_header_decode(const uint8_t *buf, size_t len, cmk_fmt_header *h,
                                             cmk_errbuf *eb);
/* Size the whole file must have. */
uint64_t cmk_fmt_file_size(const cmk_fmt_header *h);
/* Size of the sealed index (entries + tag + trailer). */
uint64_t cmk_fmt_index_size(uint64_t chunk_count);

void cmk_fmt_chunk_encode(const cmk_fmt_chunk *c, uint8_t out[CMK_FMT_CHUNK_HDR_SIZE]);
/* Decodes a record header and checks it against the header's chunk size and the position
 * (last or not, expected plain length). Does not verify `check` (needs the payload). */
CMK_MUST_CHECK cmk_err cmk_fmt_chunk_decode(const uint8_t buf[CMK_FMT_CHUNK_HDR_SIZE],
                                            const cmk_fmt_header *h, uint64_t index,
                                            cmk_fmt_chunk *c, cmk_errbuf *eb);
/* The check value over a record header (its first 12 bytes), ciphertext and tag. */
uint32_t cmk_fmt_chunk_check(const uint8_t hdr[CMK_FMT_CHUNK_HDR_SIZE], const uint8_t *ct,
                             size_t ctlen, const uint8_t tag[CMK_FMT_TAG_SIZE]);
/* Builds the AAD of chunk `index` from the encoded header and record header. */
void cmk_fmt_chunk_aad(const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t index,
                       const uint8_t rec[CMK_FMT_CHUNK_HDR_SIZE],
                       uint8_t aad[CMK_FMT_CHUNK_AAD_SIZE]);

/* Plain length of chunk `index` (chunk size, or the remainder for the last). */
uint32_t cmk_fmt_plain_len(const cmk_fmt_header *h, uint64_t index);

void cmk_fmt_index_entry_encode(const cmk_fmt_index_entry *e,
                                uint8_t out[CMK_FMT_INDEX_ENTRY_SIZE]);
/* Decodes the (decrypted) index and validates it against the header: contiguous offsets
 * starting right after the header, stored lengths within bounds, the last flag on the last
 * entry only, ending exactly at index_offset. entries must hold h->chunk_count. */
CMK_MUST_CHECK cmk_err cmk_fmt_index_decode(const uint8_t *buf, size_t len, const cmk_fmt_header *h,
                                            cmk_fmt_index_entry *entries, cmk_errbuf *eb);

/* xxh3-64 used for the checksums. */
uint64_t cmk_fmt_xxh3(const void *p, size_t n);

#endif
