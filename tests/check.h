/*
 * check.h — the unit-test harness: assertions that record failures and keep going, and a
 * summary line CTest and CI can read ("N passed, N failed").
 */
#ifndef CMK_CHECK_H
#define CMK_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkstore.h"

extern int check_passed, check_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed++;                                                                        \
        } else {                                                                                   \
            check_failed++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            check_passed++;                                                                        \
        } else {                                                                                   \
            check_failed++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Expects a cmk_err; prints the code name and the thread's detail message on mismatch. */
#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        cmk_err check_rc_ = (expr);                                                                \
        if (check_rc_ == (want)) {                                                                 \
            check_passed++;                                                                        \
        } else {                                                                                   \
            check_failed++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s -> %s (want %s): %s\n", __FILE__, __LINE__, #expr,     \
                    cmk_errname(check_rc_), cmk_errname(want), cmk_errmsg());                      \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, CMK_OK)

/* Stops the test program when a precondition for the rest fails. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FATAL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, cmk_errmsg());    \
            check_failed++;                                                                        \
            exit(check_summary());                                                                 \
        }                                                                                          \
        check_passed++;                                                                            \
    } while (0)

/* Prints "<prog>: N passed, N failed" and returns the exit status. */
int check_summary(void);

/* ---- test utilities (tests/testutil.c) ---- */

/* Creates a fresh private directory for this test under $CMK_TEST_TMP (or /tmp) and returns
 * its path (static storage per call; caller copies). Removed by check_cleanup(). */
const char *test_tmpdir(const char *tag);
/* Removes every directory test_tmpdir made (unless CMK_TEST_KEEP is set). */
void check_cleanup(void);
/* Deterministic pseudo-random bytes (xorshift64*), for incompressible test data. */
void test_fill_random(void *buf, size_t n, uint64_t seed);
/* Deterministic compressible text-like bytes. */
void test_fill_text(void *buf, size_t n, uint64_t seed);
/* Path of a file under tests/vectors (from $CMK_TEST_VECTORS). */
const char *test_vector_path(const char *name);
/* Reads a whole file (malloc'd; NULL on failure). */
unsigned char *test_read_file(const char *path, size_t *len);
/* Writes a whole file; 0 on success. */
int test_write_file(const char *path, const void *buf, size_t len);
/* Entries of a directory other than "." and "..", hidden ones included; -1 if it cannot be
 * read. */
int test_dir_entries(const char *path);

/* Creates home/vault/identity/key and a CMK store for store-level tests. Fills kid
 * (versionless) and vkid (versioned), principal of the identity. Returns CMK_OK. */
cmk_err test_make_cmk_store(const char *home, const char *store_dir, int versionless,
                            char kid[CMK_ID_MAX], char vkid[CMK_ID_MAX], char principal[64]);

#endif
