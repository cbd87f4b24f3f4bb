/*
 * digest.h — OCI content digests ("sha256:<64 hex>", "sha512:<128 hex>").
 *
 * Parsing follows the OCI image spec: algorithm, ':', lowercase hex of exactly the
 * algorithm's length. The store computes the digest of the plaintext while it streams.
 */
#ifndef CMK_DIGEST_H
#define CMK_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

enum { CMK_DIGEST_SHA256 = 1, CMK_DIGEST_SHA512 = 2 };

#define CMK_DIGEST_RAW_MAX 64

typedef struct cmk_digest {
    void *md; /* EVP_MD_CTX */
    int alg;
} cmk_digest;

/* "sha256" -> CMK_DIGEST_SHA256 ...; 0 if unknown. NULL means sha256. */
int cmk_digest_alg_from_name(const char *name);
const char *cmk_digest_alg_name(int alg);
/* Raw length of alg's digest (32 / 64); 0 if unknown. */
size_t cmk_digest_len(int alg);

CMK_MUST_CHECK cmk_err cmk_digest_init(cmk_digest *d, int alg, cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_digest_update(cmk_digest *d, const void *buf, size_t n, cmk_errbuf *eb);
/* Writes cmk_digest_len(alg) bytes to raw. */
CMK_MUST_CHECK cmk_err cmk_digest_final(cmk_digest *d, uint8_t raw[CMK_DIGEST_RAW_MAX],
                                        cmk_errbuf *eb);
void cmk_digest_free(cmk_digest *d);

/* Parses an OCI digest. Pure. CMK_E_INVAL with a message saying what is wrong. */
CMK_MUST_CHECK cmk_err cmk_digest_parse(const char *s, int *alg, uint8_t raw[CMK_DIGEST_RAW_MAX],
                                        cmk_errbuf *eb);
/* Formats alg + raw as "alg:hex" into out. */
void cmk_digest_format(int alg, const uint8_t *raw, char out[CMK_DIGEST_MAX]);

#endif
