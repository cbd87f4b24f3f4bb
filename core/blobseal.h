/*
 * blobseal.h — the sealing protocol of format v1, in one place: what a nonce is, what each
 * AAD holds, where the last-chunk flag, the record check, the index tag and trailer go, and
 * how a metadata record is sealed. put.c, get.c and meta.c call it; seal.c underneath keeps
 * the primitives (HKDF, AES-256-GCM) and format.c the byte layout (format.h describes it).
 *
 *   blob key       cmk_blobseal_key_new (writer: commitment into the header) and
 *                  cmk_blobseal_key_open (reader: commitment checked), from the header's salt
 *                  and KDF context (seal.h).
 *   chunk i        nonce (CMK_NONCE_CHUNK, i); AAD = static header [0, 88) || i (u64) ||
 *                  record header [0, 12), which holds the zstd and last flags and the lengths.
 *   index          nonce (CMK_NONCE_INDEX, 0); AAD = header [0, 184); then tag, then trailer
 *                  xxh3-64(sealed entries || tag).
 *   spill          an unfinished chunk of a parked put, never published: nonce
 *                  (CMK_NONCE_SPILL, seq) with seq counted per spill of the blob; AAD as the
 *                  index's (the header as known at begin).
 *   meta record    see meta.c for the layout: key = HKDF(DEK, salt, "cmkstore v1 meta key" ||
 *                  DEK id), nonce 0 (every write draws a fresh salt, so the key is never
 *                  reused), AAD = record header [0, 48) || the record's name hash.
 *
 * Every function is pure apart from its output buffers and safe to call from many threads
 * at once. Keys are the caller's (secret memory); plaintext the caller passes is never
 * copied anywhere but the output buffers named. Errors: CMK_E_INTEGRITY (a tag or the key
 * commitment fails: tampered, moved or another store's), CMK_E_CORRUPT (a checksum or the
 * structure: torn write, media error), CMK_E_CRYPTO, CMK_E_NOMEM, CMK_E_INVAL.
 */
#ifndef CMK_BLOBSEAL_H
#define CMK_BLOBSEAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/format.h"
#include "core/seal.h"

/* ---- blob key ---- */

/* Writer: derives the blob key of h (its salt, algorithm ids, chunk size and DEK id), puts
 * the commitment into h and encodes h into header. */
CMK_MUST_CHECK cmk_err cmk_blobseal_key_new(const uint8_t dek[CMK_DEK_LEN], cmk_fmt_header *h,
                                            uint8_t header[CMK_FMT_HEADER_SIZE], cmk_blobkey *out,
                                            cmk_errbuf *eb);
/* Reader: derives the blob key of a decoded header and checks its commitment first
 * (CMK_E_INTEGRITY if it belongs to another key). */
CMK_MUST_CHECK cmk_err cmk_blobseal_key_open(const uint8_t dek[CMK_DEK_LEN],
                                             const cmk_fmt_header *h, cmk_blobkey *out,
                                             cmk_errbuf *eb);

/* ---- chunks ---- */

/* Seals chunk `index` into rec (rec_cap bytes, at least cmk_fmt_record_max of the plaintext
 * buffer's capacity): record header, payload (zstd-compressed if try_zstd and it pays,
 * else raw), GCM tag, the record's check. plain is not modified. *rec_len receives the
 * record's length. header: the encoded header (its static part is final from begin). */
CMK_MUST_CHECK cmk_err cmk_blobseal_chunk(const cmk_blobkey *k,
                                          const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t index,
                                          int last, int try_zstd, const uint8_t *plain,
                                          uint32_t plain_len, uint8_t *rec, size_t rec_cap,
                                          uint32_t *rec_len, cmk_errbuf *eb);

/* The index entry of a sealed record (from its header) written at file offset `offset`. */
void cmk_blobseal_entry(const uint8_t *rec, uint32_t rec_len, uint64_t offset,
                        uint8_t out[CMK_FMT_INDEX_ENTRY_SIZE]);

/* Decodes record `index`'s header (rec: the record as read, e->stored_len payload bytes and
 * the tag after its header) and checks it against the blob's header and index entry. */
CMK_MUST_CHECK cmk_err cmk_blobseal_chunk_parse(const cmk_fmt_header *h,
                                                const cmk_fmt_index_entry *e, uint64_t index,
                                                const uint8_t *rec, cmk_fmt_chunk *c,
                                                cmk_errbuf *eb);
/* 1 if the record's stored check matches its bytes (c from cmk_blobseal_chunk_parse). */
int cmk_blobseal_check_ok(const uint8_t *rec, const cmk_fmt_chunk *c);
/* Authenticates and decrypts record `index` in place; a compressed chunk is decompressed
 * into plain (c->plain_len bytes of room). *out receives the plaintext: plain, or the
 * payload inside rec for a raw chunk. Nothing is written to plain before the tag verifies.
 * CMK_E_INTEGRITY: the tag failed (rec then holds garbage; the caller tells a torn record
 * from a forged one with cmk_blobseal_check_ok over the record read again). */
CMK_MUST_CHECK cmk_err cmk_blobseal_chunk_open(const cmk_blobkey *k,
                                               const uint8_t header[CMK_FMT_HEADER_SIZE],
                                               uint64_t index, uint8_t *rec, const cmk_fmt_chunk *c,
                                               uint8_t *plain, const uint8_t **out, cmk_errbuf *eb);

/* ---- index ---- */

/* Seals n encoded index entries into out (cmk_fmt_index_size(n) bytes): ciphertext, tag,
 * trailer. header: the final encoded header (size, count, offset and digest filled in). */
CMK_MUST_CHECK cmk_err cmk_blobseal_index(const cmk_blobkey *k,
                                          const uint8_t header[CMK_FMT_HEADER_SIZE],
                                          const uint8_t *entries, uint64_t n, uint8_t *out,
                                          cmk_errbuf *eb);
/* Checks the trailer of buf (cmk_fmt_index_size(h->chunk_count) bytes as read), decrypts it
 * in place and decodes and validates the entries (h->chunk_count of them). */
CMK_MUST_CHECK cmk_err cmk_blobseal_index_open(const cmk_blobkey *k,
                                               const uint8_t header[CMK_FMT_HEADER_SIZE],
                                               const cmk_fmt_header *h, uint8_t *buf,
                                               cmk_fmt_index_entry *entries, cmk_errbuf *eb);

/* ---- spill (a parked put's unfinished chunk) ---- */

/* Seals n bytes of plain into out (n + CMK_TAG_LEN bytes): ciphertext, then tag. */
CMK_MUST_CHECK cmk_err cmk_blobseal_spill(const cmk_blobkey *k,
                                          const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t seq,
                                          const uint8_t *plain, uint32_t n, uint8_t *out,
                                          cmk_errbuf *eb);
/* Opens what cmk_blobseal_spill sealed under the same seq into plain (n bytes). */
CMK_MUST_CHECK cmk_err cmk_blobseal_unspill(const cmk_blobkey *k,
                                            const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t seq,
                                            const uint8_t *in, uint32_t n, uint8_t *plain,
                                            cmk_errbuf *eb);

/* ---- metadata records ---- */

#define CMK_META_MAGIC    "CMKSMETA"
#define CMK_META_HDR      48
#define CMK_META_OVERHEAD (CMK_META_HDR + CMK_TAG_LEN + 8)
#define CMK_META_NAME_MAX 1024

/* The name hash of record `name`: HMAC-SHA256 under HKDF(dek1, "cmkstore v1 meta names"),
 * dek1 being the store's first DEK (never dropped, so the hash is stable). */
CMK_MUST_CHECK cmk_err cmk_blobseal_meta_name(const uint8_t dek1[CMK_DEK_LEN], const char *name,
                                              uint8_t hash[32], cmk_errbuf *eb);
/* Seals (name, value) under dek (id dek_id) bound to hash; *out (malloc'd, *outlen bytes)
 * receives the whole record. */
CMK_MUST_CHECK cmk_err cmk_blobseal_meta_seal(const uint8_t dek[CMK_DEK_LEN], uint32_t dek_id,
                                              const uint8_t hash[32], const char *name,
                                              const void *val, size_t len, uint8_t **out,
                                              size_t *outlen, cmk_errbuf *eb);
/* Checks a record's magic, checksum and version; *dek_id receives the DEK it is sealed
 * under (fetch it, then cmk_blobseal_meta_open). */
CMK_MUST_CHECK cmk_err cmk_blobseal_meta_peek(const uint8_t *buf, size_t len, uint32_t *dek_id,
                                              cmk_errbuf *eb);
/* Opens a record checked by cmk_blobseal_meta_peek. *plain (malloc'd, the caller frees it)
 * holds the plaintext; name and val point into it. */
CMK_MUST_CHECK cmk_err cmk_blobseal_meta_open(const uint8_t dek[CMK_DEK_LEN], const uint8_t *buf,
                                              size_t len, const uint8_t hash[32], uint8_t **plain,
                                              const char **name, size_t *namelen,
                                              const uint8_t **val, size_t *vallen, cmk_errbuf *eb);

#endif
