/* test_put_park.c — puts held between writes, as a registry's upload sessions are: a parked put
 * holds no chunk buffers and no I/O engine, its unfinished chunk survives in a small buffer or
 * sealed in its temporary file, and the blob comes out the same on both engines, buffered or
 * direct; the store's engine cache is bounded and trim gives everything back; a put fails as
 * soon as the store loses key access, even if access is back by its next write; a put drained
 * before each wait for input (cmk_put_drain) comes out the same. Uses the
 * in-process test KEK provider. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "tests/testkek.h"

static char home[4096];
static test_kek *tk;

static cmk_store *open_store(const char *dir, const char *engine, const char *write_mode)
{
    cmk_store_opts so;
    cmk_store *s = NULL;

    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = test_kek_provider(tk);
    so.io_engine = engine;
    so.write_mode = write_mode;
    CHECK_MSG(cmk_store_open(dir, &so, &s) == CMK_OK, "open (%s): %s", engine, cmk_errmsg());
    return s;
}

static void new_store(const char *tag, char *out, size_t cap)
{
    cmk_create_opts co;

    snprintf(out, cap, "%s/store", test_tmpdir(tag));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "tester";
    co.key_id = "test://vault/keys/k";
    co.kek_provider = test_kek_provider(tk);
    CHECK_OK(cmk_store_create(out, &co));
}

/* Engines in use (not cached) by the store's streams. */
static unsigned engines_in_use(cmk_store *s)
{
    cmk_store_resources r;

    cmk_store_resources_get(s, &r);
    return r.io_open - r.io_cached;
}

static int same_blob(cmk_store *s, const char *digest, const unsigned char *want, size_t n)
{
    unsigned char *got = malloc(n + 1);
    size_t total = 0, k;
    cmk_get *g = NULL;
    int same;

    REQUIRE(got);
    if (cmk_get_open(s, digest, 0, CMK_TO_END, &g) != CMK_OK) {
        printf("# get %s: %s\n", digest, cmk_errmsg());
        free(got);
        return 0;
    }
    while (cmk_get_read(g, got + total, n + 1 - total, &k) == CMK_OK && k > 0)
        total += k;
    cmk_get_close(g);
    same = total == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

/* Writes data in the given pieces, parking after each, and commits. Pieces cover: a first
 * chunk in its small buffer, a tail that spills, a tail of exactly one chunk, several chunks
 * at once, and a commit right after a park. */
static void t_roundtrip(const char *engine, const char *mode, int text)
{
    static const size_t pieces[] = {1,       70000,   978575, 1572864, 3000000,
                                    1048576, 1048576, 200000, 524288};
    size_t n = 0, off = 0;
    char dir[4096], tag[64], dg[CMK_DIGEST_MAX];
    unsigned char *data;
    cmk_store *s;
    cmk_put *p = NULL;

    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
        n += pieces[i];
    data = malloc(n);
    REQUIRE(data);
    if (text)
        test_fill_text(data, n, 5);
    else
        test_fill_random(data, n, 5);
    snprintf(tag, sizeof(tag), "park-%s-%s-%d", engine, mode, text);
    new_store(tag, dir, sizeof(dir));
    s = open_store(dir, engine, mode);
    REQUIRE(s);
    CHECK_OK(cmk_put_begin(s, NULL, &p));
    CHECK_OK(cmk_put_park(p));
    CHECK_OK(cmk_put_park(p)); /* twice is once */
    CHECK_MSG(engines_in_use(s) == 0, "%s/%s: a parked empty put holds an engine", engine, mode);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        CHECK_OK(cmk_put_write(p, data + off, pieces[i]));
        off += pieces[i];
        CHECK_MSG(cmk_put_park(p) == CMK_OK, "%s/%s: park after %zu bytes: %s", engine, mode, off,
                  cmk_errmsg());
        CHECK_MSG(engines_in_use(s) == 0, "%s/%s: parked after %zu bytes, an engine is held",
                  engine, mode, off);
    }
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    CHECK_MSG(same_blob(s, dg, data, n), "%s/%s (%s): the blob written with parks differs", engine,
              mode, text ? "text" : "random");
    CHECK_OK(cmk_verify(s, dg, NULL));
    cmk_store_close(s);
    free(data);
}

/* A parked put holds no chunk buffers: with the store's cache trimmed, the pool keeps
 * nothing while 24 puts, each 2.5 MiB into its blob, wait. */
static void t_idle_memory(void)
{
    size_t n = (5u << 20) / 2;
    unsigned char *data = malloc(n);
    char dir[4096];
    cmk_put *p[24];
    cmk_store_resources r;
    cmk_store *s;

    REQUIRE(data);
    test_fill_random(data, n, 6);
    new_store("park-mem", dir, sizeof(dir));
    s = open_store(dir, "uring", NULL);
    REQUIRE(s);
    for (int i = 0; i < 24; i++) {
        CHECK_OK(cmk_put_begin(s, NULL, &p[i]));
        CHECK_OK(cmk_put_write(p[i], data, n));
        CHECK_OK(cmk_put_park(p[i]));
    }
    cmk_store_trim(s);
    cmk_store_resources_get(s, &r);
    CHECK_MSG(r.io_open == 0 && r.buf_cached == 0,
              "24 parked puts, trimmed: %u engines open, %zu bytes of buffers cached", r.io_open,
              r.buf_cached);
    for (int i = 0; i < 24; i++)
        cmk_put_abort(p[i]);
    cmk_store_close(s);
    free(data);
}

/* The engine cache is bounded: 40 streams at once leave at most 16 engines behind, and trim
 * frees those. (Before: every engine ever made stayed open.) */
static void t_engine_cache(void)
{
    char dir[4096];
    cmk_put *p[40];
    cmk_store_resources r;
    cmk_store *s;

    new_store("park-rings", dir, sizeof(dir));
    s = open_store(dir, "uring", NULL);
    REQUIRE(s);
    for (int i = 0; i < 40; i++)
        CHECK_OK(cmk_put_begin(s, NULL, &p[i]));
    cmk_store_resources_get(s, &r);
    CHECK_MSG(r.io_open == 40, "40 puts open: %u engines", r.io_open);
    for (int i = 0; i < 40; i++)
        cmk_put_abort(p[i]);
    cmk_store_resources_get(s, &r);
    CHECK_MSG(r.io_open <= 16 && r.io_open == r.io_cached,
              "40 puts aborted: %u engines open, %u cached (at most 16)", r.io_open, r.io_cached);
    cmk_store_trim(s);
    cmk_store_resources_get(s, &r);
    CHECK_MSG(r.io_open == 0, "trimmed: %u engines open", r.io_open);
    cmk_store_close(s);
}

/* Key access lost while a put is open: its next write fails with the key error at once, and
 * still fails once access is back; a put begun after the restore works. */
static void t_access_loss(void)
{
    size_t n = 3u << 20;
    unsigned char *data = malloc(n);
    char dir[4096], dg[CMK_DIGEST_MAX];
    cmk_store_resources r0, r1;
    cmk_put *a = NULL, *b = NULL, *c = NULL;
    cmk_store *s;

    REQUIRE(data);
    test_fill_random(data, n, 7);
    new_store("park-loss", dir, sizeof(dir));
    s = open_store(dir, NULL, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_put_begin(s, NULL, &a));
    CHECK_OK(cmk_put_write(a, data, n / 2));
    CHECK_OK(cmk_put_begin(s, NULL, &b));
    CHECK_OK(cmk_put_write(b, data, n / 2));
    CHECK_OK(cmk_put_park(b));
    cmk_store_resources_get(s, &r0);
    test_kek_fail(tk, CMK_E_KEY_DENIED);
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_DENIED);
    cmk_store_resources_get(s, &r1);
    CHECK(r1.access_generation > r0.access_generation);
    CHECK_RC(cmk_put_write(a, data + n / 2, n / 2), CMK_E_KEY_DENIED); /* streaming */
    CHECK_RC(cmk_put_write(b, "", 0), CMK_E_KEY_DENIED);               /* parked */
    test_kek_fail(tk, CMK_OK);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK_RC(cmk_put_write(a, data, 1), CMK_E_KEY_DENIED);
    CHECK_RC(cmk_put_commit(b, NULL, dg), CMK_E_KEY_DENIED);
    cmk_put_abort(a);
    CHECK_OK(cmk_put_begin(s, NULL, &c));
    CHECK_OK(cmk_put_write(c, data, n));
    CHECK_OK(cmk_put_commit(c, NULL, dg));
    CHECK(same_blob(s, dg, data, n));
    cmk_store_close(s);
    free(data);
}

/* cmk_put_drain, what a caller does before it waits for more input: between writes of any
 * size (and twice in a row) the blob comes out the same; a parked put stays parked (no
 * engine taken back); an empty put drains; a failed put returns its error; NULL is refused. */
static void t_drain(const char *engine, const char *mode)
{
    static const size_t pieces[] = {1, 70000, 978575, 3145728, 1048576, 1, 524288};
    size_t n = 0, off = 0;
    char dir[4096], tag[64], dg[CMK_DIGEST_MAX];
    unsigned char *data;
    cmk_store *s;
    cmk_put *p = NULL, *q = NULL;

    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
        n += pieces[i];
    data = malloc(n);
    REQUIRE(data);
    test_fill_random(data, n, 8);
    snprintf(tag, sizeof(tag), "drain-%s-%s", engine, mode);
    new_store(tag, dir, sizeof(dir));
    s = open_store(dir, engine, mode);
    REQUIRE(s);
    CHECK_RC(cmk_put_drain(NULL), CMK_E_INVAL);
    CHECK_OK(cmk_put_begin(s, NULL, &p));
    CHECK_OK(cmk_put_drain(p)); /* nothing written yet */
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        CHECK_OK(cmk_put_write(p, data + off, pieces[i]));
        off += pieces[i];
        CHECK_MSG(cmk_put_drain(p) == CMK_OK, "%s/%s: drain after %zu bytes: %s", engine, mode, off,
                  cmk_errmsg());
        if (i == 3) {
            CHECK_OK(cmk_put_drain(p)); /* twice is once */
            CHECK_OK(cmk_put_park(p));
            CHECK_OK(cmk_put_drain(p));
            CHECK_MSG(engines_in_use(s) == 0, "%s/%s: a drained parked put took an engine", engine,
                      mode);
        }
    }
    CHECK_OK(cmk_put_commit(p, NULL, dg));
    CHECK_MSG(same_blob(s, dg, data, n), "%s/%s: the blob written with drains differs", engine,
              mode);
    CHECK_OK(cmk_verify(s, dg, NULL));
    /* A put that failed (key access lost) returns its error from drain too. */
    CHECK_OK(cmk_put_begin(s, NULL, &q));
    CHECK_OK(cmk_put_write(q, data, 2u << 20));
    test_kek_fail(tk, CMK_E_KEY_DENIED);
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_DENIED);
    CHECK_RC(cmk_put_drain(q), CMK_E_KEY_DENIED);
    test_kek_fail(tk, CMK_OK);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK_RC(cmk_put_drain(q), CMK_E_KEY_DENIED);
    cmk_put_abort(q);
    cmk_store_close(s);
    free(data);
}

int main(void)
{
    cmk_identity id;
    cmk_errbuf eb = {0};

    tk = test_kek_new(0);
    REQUIRE(tk);
    snprintf(home, sizeof(home), "%s", test_tmpdir("park-home"));
    CHECK_OK(cmk_identity_create(home, "tester", &id, &eb));
    t_roundtrip("sync", "buffered", 0);
    t_roundtrip("sync", "buffered", 1);
    t_roundtrip("uring", "buffered", 1);
    t_roundtrip("uring", "direct", 0);
    t_roundtrip("uring", "direct", 1);
    t_idle_memory();
    t_engine_cache();
    t_access_loss();
    t_drain("sync", "buffered");
    t_drain("uring", "direct");
    test_kek_free(tk);
    return check_summary();
}
