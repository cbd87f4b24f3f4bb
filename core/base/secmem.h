/*
 * secmem.h — memory for secrets and randomness.
 *
 * Secrets (DEKs, per-blob keys) live in page-backed allocations that are locked in RAM where
 * the limits allow (mlock), excluded from core dumps (MADV_DONTDUMP) and zeroized
 * (OPENSSL_cleanse) before they are released.
 */
#ifndef CMK_SECMEM_H
#define CMK_SECMEM_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

/* Allocates n zeroed bytes of secret memory; NULL on failure. */
void *cmk_secalloc(size_t n);
/* Zeroizes and releases memory from cmk_secalloc. NULL is a no-op. */
void cmk_secfree(void *p);
/* Zeroizes n bytes (cannot be optimised away). */
void cmk_cleanse(void *p, size_t n);

/* Fills buf with n bytes from the OS CSPRNG (via OpenSSL RAND_bytes). */
CMK_MUST_CHECK cmk_err cmk_random(void *buf, size_t n, cmk_errbuf *eb);

/* Writes a random RFC 4122 version-4 UUID ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") into
 * out[37]. */
CMK_MUST_CHECK cmk_err cmk_uuid4(char out[37], cmk_errbuf *eb);

/* Writes n random bytes as 2n lowercase hex characters plus NUL into out[2n+1]. */
CMK_MUST_CHECK cmk_err cmk_random_hex(char *out, size_t nbytes, cmk_errbuf *eb);

/* Lowercase hex encoding of n bytes into out[2n+1]. */
void cmk_hex(char *out, const uint8_t *in, size_t n);
/* Decodes exactly 2n hex chars (either case) into out[n]; -1 on a bad character/length. */
int cmk_unhex(uint8_t *out, size_t n, const char *in);

#endif
