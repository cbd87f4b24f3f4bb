/* blobseal.c — the sealing protocol of format v1 (see blobseal.h and format.h). */
#include "core/blobseal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/bytes.h"
#include "core/compress.h"
#include "core/base/secmem.h"

/* ---- blob key ---- */

static cmk_err derive(const uint8_t dek[CMK_DEK_LEN], const cmk_fmt_header *h, cmk_blobkey *out,
                      cmk_errbuf *eb)
{
    cmk_kdf_context kc = {h->version,    h->aead,       h->kdf,   h->comp,
                          h->digest_alg, h->chunk_size, h->dek_id};

    return cmk_derive_blobkey(dek, h->salt, &kc, out, eb);
}

cmk_err cmk_blobseal_key_new(const uint8_t dek[CMK_DEK_LEN], cmk_fmt_header *h,
                             uint8_t header[CMK_FMT_HEADER_SIZE], cmk_blobkey *out, cmk_errbuf *eb)
{
    cmk_err rc = derive(dek, h, out, eb);

    if (rc != CMK_OK)
        return rc;
    memcpy(h->commitment, out->commit, CMK_COMMIT_LEN);
    cmk_fmt_header_encode(h, header);
    return CMK_OK;
}

cmk_err cmk_blobseal_key_open(const uint8_t dek[CMK_DEK_LEN], const cmk_fmt_header *h,
                              cmk_blobkey *out, cmk_errbuf *eb)
{
    cmk_err rc = derive(dek, h, out, eb);

    return rc == CMK_OK ? cmk_check_commitment(out, h->commitment, eb) : rc;
}

/* ---- chunks ---- */

/* Nonce and AAD of chunk `index` whose record header (first 12 bytes final) is rec. */
static void chunk_params(const uint8_t header[CMK_FMT_HEADER_SIZE], uint64_t index,
                         const uint8_t *rec, uint8_t nonce[CMK_NONCE_LEN],
                         uint8_t aad[CMK_FMT_CHUNK_AAD_SIZE])
{
    cmk_fmt_chunk_aad(header, index, rec, aad);
    cmk_nonce(nonce, CMK_NONCE_CHUNK, index);
}

cmk_err cmk_blobseal_chunk(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                           uint64_t index, int last, int try_zstd, const uint8_t *plain,
                           uint32_t plain_len, uint8_t *rec, size_t rec_cap, uint32_t *rec_len,
                           cmk_errbuf *eb)
{
    uint8_t *payload = rec + CMK_FMT_CHUNK_HDR_SIZE;
    uint8_t aad[CMK_FMT_CHUNK_AAD_SIZE], nonce[CMK_NONCE_LEN];
    const uint8_t *src = plain;
    cmk_fmt_chunk c = {0};
    size_t clen = 0;
    int compressed = 0;
    uint8_t *tag;
    cmk_err rc;

    if (rec_cap < cmk_fmt_record_len(plain_len))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "record buffer too small for chunk %llu",
                              (unsigned long long)index);
    if (try_zstd) {
        rc = cmk_compress_chunk(plain, plain_len, payload,
                                rec_cap - CMK_FMT_CHUNK_HDR_SIZE - CMK_FMT_TAG_SIZE, &clen,
                                &compressed, eb);
        if (rc != CMK_OK)
            return rc;
    }
    c.flags = (uint8_t)((compressed ? CMK_CHUNK_ZSTD : 0) | (last ? CMK_CHUNK_LAST : 0));
    c.plain_len = plain_len;
    c.stored_len = compressed ? (uint32_t)clen : plain_len;
    if (compressed)
        src = payload; /* encrypt the compressed bytes in place */
    cmk_fmt_chunk_encode(&c, rec);
    chunk_params(header, index, rec, nonce, aad);
    tag = payload + c.stored_len;
    rc = cmk_gcm_seal(k->key, nonce, aad, sizeof(aad), src, c.stored_len, payload, tag, eb);
    if (rc != CMK_OK)
        return rc;
    /* The check covers the header's first 12 bytes, so it goes in last. */
    c.check = cmk_fmt_chunk_check(rec, payload, c.stored_len, tag);
    cmk_fmt_chunk_encode(&c, rec);
    *rec_len = (uint32_t)cmk_fmt_record_len(c.stored_len);
    return CMK_OK;
}

void cmk_blobseal_entry(const uint8_t *rec, uint32_t rec_len, uint64_t offset,
                        uint8_t out[CMK_FMT_INDEX_ENTRY_SIZE])
{
    cmk_fmt_index_entry e = {.offset = offset,
                             .stored_len = rec_len - CMK_FMT_CHUNK_HDR_SIZE - CMK_FMT_TAG_SIZE,
                             .flags = rec[0]};

    cmk_fmt_index_entry_encode(&e, out);
}

cmk_err cmk_blobseal_chunk_parse(const cmk_fmt_header *h, const cmk_fmt_index_entry *e,
                                 uint64_t index, const uint8_t *rec, cmk_fmt_chunk *c,
                                 cmk_errbuf *eb)
{
    cmk_err rc = cmk_fmt_chunk_decode(rec, h, index, c, eb);

    if (rc != CMK_OK)
        return rc;
    if (c->stored_len != e->stored_len || c->flags != e->flags)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "chunk %llu does not match the blob index",
                              (unsigned long long)index);
    return CMK_OK;
}

int cmk_blobseal_check_ok(const uint8_t *rec, const cmk_fmt_chunk *c)
{
    const uint8_t *payload = rec + CMK_FMT_CHUNK_HDR_SIZE;

    return cmk_fmt_chunk_check(rec, payload, c->stored_len, payload + c->stored_len) == c->check;
}

cmk_err cmk_blobseal_chunk_open(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                                uint64_t index, uint8_t *rec, const cmk_fmt_chunk *c,
                                uint8_t *plain, const uint8_t **out, cmk_errbuf *eb)
{
    uint8_t aad[CMK_FMT_CHUNK_AAD_SIZE], nonce[CMK_NONCE_LEN];
    uint8_t *payload = rec + CMK_FMT_CHUNK_HDR_SIZE;
    cmk_err rc;

    chunk_params(header, index, rec, nonce, aad);
    /* Every chunk decrypts in place; a raw one is then delivered from there, a compressed
     * one is decompressed into plain. Either way nothing is released before the tag
     * verifies. */
    rc = cmk_gcm_open(k->key, nonce, aad, sizeof(aad), payload, c->stored_len,
                      payload + c->stored_len, payload, eb);
    if (rc != CMK_OK)
        return rc;
    if (c->flags & CMK_CHUNK_ZSTD) {
        rc = cmk_decompress_chunk(payload, c->stored_len, plain, c->plain_len, eb);
        if (rc != CMK_OK)
            return rc;
    }
    *out = (c->flags & CMK_CHUNK_ZSTD) ? plain : payload;
    return CMK_OK;
}

/* ---- index ---- */

cmk_err cmk_blobseal_index(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                           const uint8_t *entries, uint64_t n, uint8_t *out, cmk_errbuf *eb)
{
    size_t ilen = (size_t)(n * CMK_FMT_INDEX_ENTRY_SIZE);
    uint8_t nonce[CMK_NONCE_LEN];
    cmk_err rc;

    cmk_nonce(nonce, CMK_NONCE_INDEX, 0);
    rc = cmk_gcm_seal(k->key, nonce, header, CMK_FMT_HEADER_AAD_SIZE, entries, ilen, out,
                      out + ilen, eb);
    if (rc == CMK_OK)
        cmk_st64(out + ilen + CMK_FMT_TAG_SIZE, cmk_fmt_xxh3(out, ilen + CMK_FMT_TAG_SIZE));
    return rc;
}

cmk_err cmk_blobseal_index_open(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                                const cmk_fmt_header *h, uint8_t *buf, cmk_fmt_index_entry *entries,
                                cmk_errbuf *eb)
{
    size_t ilen = (size_t)(h->chunk_count * CMK_FMT_INDEX_ENTRY_SIZE);
    uint8_t nonce[CMK_NONCE_LEN];
    cmk_err rc;

    if (cmk_ld64(buf + ilen + CMK_FMT_TAG_SIZE) != cmk_fmt_xxh3(buf, ilen + CMK_FMT_TAG_SIZE))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                              "blob index checksum mismatch (torn write or media error)");
    cmk_nonce(nonce, CMK_NONCE_INDEX, 0);
    rc = cmk_gcm_open(k->key, nonce, header, CMK_FMT_HEADER_AAD_SIZE, buf, ilen, buf + ilen, buf,
                      eb);
    if (rc == CMK_E_INTEGRITY)
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                              "blob header or index failed authentication (tampered)");
    if (rc != CMK_OK)
        return rc;
    return cmk_fmt_index_decode(buf, ilen, h, entries, eb);
}

/* ---- spill ---- */

cmk_err cmk_blobseal_spill(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                           uint64_t seq, const uint8_t *plain, uint32_t n, uint8_t *out,
                           cmk_errbuf *eb)
{
    uint8_t nonce[CMK_NONCE_LEN];

    cmk_nonce(nonce, CMK_NONCE_SPILL, seq);
    return cmk_gcm_seal(k->key, nonce, header, CMK_FMT_HEADER_AAD_SIZE, plain, n, out, out + n, eb);
}

cmk_err cmk_blobseal_unspill(const cmk_blobkey *k, const uint8_t header[CMK_FMT_HEADER_SIZE],
                             uint64_t seq, const uint8_t *in, uint32_t n, uint8_t *plain,
                             cmk_errbuf *eb)
{
    uint8_t nonce[CMK_NONCE_LEN];

    cmk_nonce(nonce, CMK_NONCE_SPILL, seq);
    return cmk_gcm_open(k->key, nonce, header, CMK_FMT_HEADER_AAD_SIZE, in, n, in + n, plain, eb);
}

/* ---- metadata records ---- */

/* Frees a heap buffer that may hold plaintext (NULL: nothing). */
static void wipe_free(uint8_t *p, size_t n)
{
    if (p)
        cmk_cleanse(p, n);
    free(p);
}

cmk_err cmk_blobseal_meta_name(const uint8_t dek1[CMK_DEK_LEN], const char *name, uint8_t hash[32],
                               cmk_errbuf *eb)
{
    static const uint8_t zero_salt[CMK_SALT_LEN];
    uint8_t *nk = cmk_secalloc(32);
    size_t outlen = 0;
    cmk_err rc;

    if (!nk)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    rc = cmk_hkdf(dek1, CMK_DEK_LEN, zero_salt, sizeof(zero_salt), "cmkstore v1 meta names", NULL,
                  0, nk, 32, eb);
    if (rc == CMK_OK && !EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, nk, 32,
                                   (const unsigned char *)name, strlen(name), hash, 32, &outlen))
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "HMAC failed");
    cmk_secfree(nk);
    return rc;
}

/* The record key of a DEK and salt, and the AAD of a record header bound to its name hash.
 * The nonce is all zero: the key is fresh per record (fresh salt per write). */
static cmk_err meta_params(const uint8_t dek[CMK_DEK_LEN], const uint8_t *hdr,
                           const uint8_t hash[32], uint8_t *key, uint8_t aad[CMK_META_HDR + 32],
                           cmk_errbuf *eb)
{
    memcpy(aad, hdr, CMK_META_HDR);
    memcpy(aad + CMK_META_HDR, hash, 32);
    return cmk_hkdf(dek, CMK_DEK_LEN, hdr + 16, CMK_SALT_LEN, "cmkstore v1 meta key", hdr + 12, 4,
                    key, CMK_KEY_LEN, eb);
}

cmk_err cmk_blobseal_meta_seal(const uint8_t dek[CMK_DEK_LEN], uint32_t dek_id,
                               const uint8_t hash[32], const char *name, const void *val,
                               size_t len, uint8_t **out, size_t *outlen, cmk_errbuf *eb)
{
    uint8_t aad[CMK_META_HDR + 32], nonce[CMK_NONCE_LEN] = {0};
    size_t nl = strlen(name), ptlen = 4 + nl + len, total = ptlen + CMK_META_OVERHEAD;
    uint8_t *key = cmk_secalloc(CMK_KEY_LEN), *buf = malloc(total);
    cmk_err rc;

    *out = NULL;
    if (!key || !buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    memset(buf, 0, CMK_META_HDR);
    memcpy(buf, CMK_META_MAGIC, 8);
    cmk_st16(buf + 8, 1);
    cmk_st32(buf + 12, dek_id);
    rc = cmk_random(buf + 16, CMK_SALT_LEN, eb);
    if (rc == CMK_OK)
        rc = meta_params(dek, buf, hash, key, aad, eb);
    if (rc != CMK_OK)
        goto out;
    /* Plaintext is assembled in place, then encrypted in place. */
    cmk_st32(buf + CMK_META_HDR, (uint32_t)nl);
    memcpy(buf + CMK_META_HDR + 4, name, nl);
    if (len)
        memcpy(buf + CMK_META_HDR + 4 + nl, val, len);
    rc = cmk_gcm_seal(key, nonce, aad, sizeof(aad), buf + CMK_META_HDR, ptlen, buf + CMK_META_HDR,
                      buf + CMK_META_HDR + ptlen, eb);
    if (rc != CMK_OK)
        goto out;
    cmk_st64(buf + total - 8, cmk_fmt_xxh3(buf, total - 8));
    *out = buf;
    *outlen = total;
    buf = NULL;
out:
    wipe_free(buf, total);
    cmk_secfree(key);
    return rc;
}

cmk_err cmk_blobseal_meta_peek(const uint8_t *buf, size_t len, uint32_t *dek_id, cmk_errbuf *eb)
{
    if (len < CMK_META_OVERHEAD + 4 || memcmp(buf, CMK_META_MAGIC, 8) != 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "not a metadata record");
    if (cmk_ld64(buf + len - 8) != cmk_fmt_xxh3(buf, len - 8))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "metadata record checksum mismatch");
    if (cmk_ld16(buf + 8) != 1 || cmk_ld16(buf + 10) != 0)
        return cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "metadata record version %u unsupported",
                              cmk_ld16(buf + 8));
    *dek_id = cmk_ld32(buf + 12);
    return CMK_OK;
}

cmk_err cmk_blobseal_meta_open(const uint8_t dek[CMK_DEK_LEN], const uint8_t *buf, size_t len,
                               const uint8_t hash[32], uint8_t **plain, const char **name,
                               size_t *namelen, const uint8_t **val, size_t *vallen, cmk_errbuf *eb)
{
    uint8_t aad[CMK_META_HDR + 32], nonce[CMK_NONCE_LEN] = {0};
    size_t ctlen = len - CMK_META_OVERHEAD;
    uint8_t *key = cmk_secalloc(CMK_KEY_LEN), *pt = malloc(ctlen + 1);
    uint32_t nl;
    cmk_err rc;

    *plain = NULL;
    if (!key || !pt) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    rc = meta_params(dek, buf, hash, key, aad, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_gcm_open(key, nonce, aad, sizeof(aad), buf + CMK_META_HDR, ctlen,
                      buf + CMK_META_HDR + ctlen, pt, eb);
    if (rc == CMK_E_INTEGRITY)
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "metadata record failed authentication (tampered or moved)");
    if (rc != CMK_OK)
        goto out;
    nl = cmk_ld32(pt);
    if (nl == 0 || nl > CMK_META_NAME_MAX || (size_t)nl + 4 > ctlen) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "metadata record has a bad name length");
        goto out;
    }
    *name = (const char *)pt + 4;
    *namelen = nl;
    *val = pt + 4 + nl;
    *vallen = ctlen - 4 - nl;
    *plain = pt;
    pt = NULL;
out:
    wipe_free(pt, ctlen);
    cmk_secfree(key);
    return rc;
}
