/*
 * seal.h — the cryptography of a blob: per-blob key derivation with key commitment, and
 * AES-256-GCM over chunks and the index.
 *
 *   PRK        = HKDF-Extract(salt = blob salt (32 random bytes), IKM = DEK)
 *   blob key   = HKDF-Expand(PRK, "cmkstore v1 blob key"   || context, 32)
 *   commitment = HKDF-Expand(PRK, "cmkstore v1 commitment" || context, 32)
 *   context    = format version (u16) || aead id || kdf id || comp id || digest id ||
 *                chunk size (u32) || DEK id (u32)            (little-endian)
 *
 * The commitment is stored in the header and compared (constant time) before any chunk is
 * decrypted, so a header opens under exactly one key (as in the AWS Encryption SDK's
 * committing suites): nobody can craft a file that decrypts differently under two DEKs.
 * Nonces are (domain u32 BE || counter u64 BE): domain 0 for chunk i, 1 for the index.
 * They never repeat because every blob key is used for one blob only.
 */
#ifndef CMK_SEAL_H
#define CMK_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

#define CMK_DEK_LEN    32
#define CMK_KEY_LEN    32
#define CMK_SALT_LEN   32
#define CMK_COMMIT_LEN 32
#define CMK_TAG_LEN    16
#define CMK_NONCE_LEN  12

/* SPILL: a parked put's unfinished chunk in the blob sink's scratch, never published. How
 * each domain's nonce and AAD are built is blobseal.h's. */
enum { CMK_NONCE_CHUNK = 0, CMK_NONCE_INDEX = 1, CMK_NONCE_SPILL = 2 };

/* Derived per-blob secrets; allocate with cmk_secalloc. */
typedef struct cmk_blobkey {
    uint8_t key[CMK_KEY_LEN];
    uint8_t commit[CMK_COMMIT_LEN];
} cmk_blobkey;

typedef struct cmk_kdf_context {
    uint16_t version;
    uint8_t aead, kdf, comp, digest_alg;
    uint32_t chunk_size;
    uint32_t dek_id;
} cmk_kdf_context;

CMK_MUST_CHECK cmk_err cmk_derive_blobkey(const uint8_t dek[CMK_DEK_LEN],
                                          const uint8_t salt[CMK_SALT_LEN],
                                          const cmk_kdf_context *ctx, cmk_blobkey *out,
                                          cmk_errbuf *eb);

/* Generic HKDF-SHA256 (extract and expand): info = label || ctx. */
CMK_MUST_CHECK cmk_err cmk_hkdf(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt,
                                size_t saltlen, const char *label, const uint8_t *ctx,
                                size_t ctxlen, uint8_t *out, size_t outlen, cmk_errbuf *eb);

/* Constant-time comparison of a stored commitment with the derived one; CMK_E_INTEGRITY if
 * they differ. */
CMK_MUST_CHECK cmk_err cmk_check_commitment(const cmk_blobkey *k,
                                            const uint8_t stored[CMK_COMMIT_LEN], cmk_errbuf *eb);

void cmk_nonce(uint8_t out[CMK_NONCE_LEN], uint32_t domain, uint64_t counter);

/* One-shot AES-256-GCM. in and out may be the same buffer (in-place). Safe to call from
 * many threads at once (each call uses its own cipher context). open returns
 * CMK_E_INTEGRITY if the tag does not verify; out then holds garbage the caller must not
 * release. */
CMK_MUST_CHECK cmk_err cmk_gcm_seal(const uint8_t key[CMK_KEY_LEN],
                                    const uint8_t nonce[CMK_NONCE_LEN], const uint8_t *aad,
                                    size_t aadlen, const uint8_t *in, size_t len, uint8_t *out,
                                    uint8_t tag[CMK_TAG_LEN], cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_gcm_open(const uint8_t key[CMK_KEY_LEN],
                                    const uint8_t nonce[CMK_NONCE_LEN], const uint8_t *aad,
                                    size_t aadlen, const uint8_t *in, size_t len,
                                    const uint8_t tag[CMK_TAG_LEN], uint8_t *out, cmk_errbuf *eb);

#endif
