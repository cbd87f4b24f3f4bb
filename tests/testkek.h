/*
 * testkek.h — an in-process KEK provider for tests: real RSA-2048 keys (OpenSSL), several
 * versions, and switches that make it deny, disable, lose or fail to reach the key, so
 * store behaviour can be tested without a vault. Identifiers: test://vault/keys/k[/vN].
 * Thread-safe.
 */
#ifndef CMK_TESTKEK_H
#define CMK_TESTKEK_H

#include "cmkstore_kek.h"

typedef struct test_kek test_kek;

/* Makes a provider with one key version ("v1"). The returned provider's self is the
 * test_kek. identity_wrap: wrapping is XOR with a constant, so a test can plant a chosen
 * DEK in a keyring (known-answer vectors). */
test_kek *test_kek_new(int identity_wrap);
void test_kek_free(test_kek *t);
const cmk_kek_provider *test_kek_provider(test_kek *t);
/* Adds a version (v2, v3, ...); returns its number. */
int test_kek_add_version(test_kek *t);
/* Fault switches (0 = normal, else the cmk_err to return from every call). */
void test_kek_fail(test_kek *t, cmk_err code);
/* Counters of successful calls. */
unsigned test_kek_wraps(const test_kek *t);
unsigned test_kek_unwraps(const test_kek *t);
/* Identity wrapping of a DEK, for planting: out must hold 64 bytes. */
void test_kek_identity_wrap(const unsigned char dek[32], unsigned char out[64]);

#endif
