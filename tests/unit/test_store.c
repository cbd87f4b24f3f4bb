/* test_store.c — the store through its public API: round trips, ranges, metadata, digest
 * refusal, tamper detection, crash safety, no plaintext at rest, concurrency, key loss.
 * Uses the in-process RSA test provider (tests/testkek.c) so these tests do not depend on
 * the local vault; the vault is exercised end to end by the CLI tests. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/base/bytes.h"
#include "tests/check.h"
#include "core/format.h"
#include "core/base/fsutil.h"
#include "kek/identity/identity.h"
#include "tests/testkek.h"

#define CHUNK (64u << 10)

static test_kek *tk;
static char home[4096];

static cmk_store *open_store(const char *dir, const char *io)
{
    cmk_store_opts so;
    cmk_store *s = NULL;

    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = test_kek_provider(tk);
    so.io_engine = io;
    CHECK_OK(cmk_store_open(dir, &so, &s));
    return s;
}

/* Creates a store under a fresh temp dir; returns its path (static per call site). */
static const char *new_store(const char *tag, uint32_t chunk, char *out, size_t cap)
{
    cmk_create_opts co;

    snprintf(out, cap, "%s/store", test_tmpdir(tag));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "tester";
    co.key_id = "test://vault/keys/k";
    co.kek_provider = test_kek_provider(tk);
    co.chunk_size = chunk;
    CHECK_OK(cmk_store_create(out, &co));
    return out;
}

static cmk_err put_buf(cmk_store *s, const uint8_t *buf, size_t n, size_t piece, const char *expect,
                       char digest[CMK_DIGEST_MAX])
{
    cmk_put *p = NULL;
    cmk_err rc = cmk_put_begin(s, NULL, &p);
    if (rc != CMK_OK)
        return rc;
    for (size_t off = 0; off < n;) {
        size_t k = n - off < piece ? n - off : piece;
        rc = cmk_put_write(p, buf + off, k);
        if (rc != CMK_OK) {
            cmk_put_abort(p);
            return rc;
        }
        off += k;
    }
    return cmk_put_commit(p, expect, digest);
}

/* Reads [off, off+len) and compares; returns 1 if equal. */
static int get_equals(cmk_store *s, const char *digest, const uint8_t *want, uint64_t off,
                      uint64_t len, size_t piece)
{
    cmk_get *g = NULL;
    uint8_t *buf = malloc(piece ? piece : 1);
    uint64_t pos = 0;
    int ok = 1;

    if (cmk_get_open(s, digest, off, len, &g) != CMK_OK) {
        fprintf(stderr, "get_open: %s\n", cmk_errmsg());
        free(buf);
        return 0;
    }
    for (;;) {
        size_t n = 0;
        if (cmk_get_read(g, buf, piece, &n) != CMK_OK) {
            fprintf(stderr, "get_read: %s\n", cmk_errmsg());
            ok = 0;
            break;
        }
        if (n == 0)
            break;
        if (pos + n > len || memcmp(buf, want + off + pos, n) != 0) {
            ok = 0;
            break;
        }
        pos += n;
    }
    if (pos != len)
        ok = 0;
    cmk_get_close(g);
    free(buf);
    return ok;
}

static void test_roundtrips(const char *io)
{
    char dir[4096];
    size_t sizes[] = {0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 5u << 20};
    size_t maxn = 5u << 20;
    uint8_t *data = malloc(maxn);
    cmk_store *s;

    REQUIRE(data);
    new_store("rt", CHUNK, dir, sizeof(dir));
    s = open_store(dir, io);
    REQUIRE(s);
    for (int kind = 0; kind < 2; kind++) {
        if (kind)
            test_fill_text(data, maxn, 11);
        else
            test_fill_random(data, maxn, 12);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
            size_t n = sizes[i];
            char dg[CMK_DIGEST_MAX], dg2[CMK_DIGEST_MAX];
            cmk_blob_info info;

            /* Odd piece sizes cross chunk boundaries at every offset. */
            CHECK_OK(put_buf(s, data, n, 7777, NULL, dg));
            CHECK(get_equals(s, dg, data, 0, n, 65536));
            CHECK(get_equals(s, dg, data, 0, n, 1000));
            CHECK_OK(cmk_stat(s, dg, &info));
            CHECK(info.size == n && info.chunk_size == CHUNK &&
                  info.chunk_count == (n + CHUNK - 1) / CHUNK && info.dek_id == 1);
            CHECK_OK(cmk_verify(s, dg, NULL));
            /* The same content again: same digest, existing file kept. */
            CHECK_OK(put_buf(s, data, n, n ? n : 1, dg, dg2));
            CHECK(strcmp(dg, dg2) == 0);
            if (n > 10) {
                uint64_t ranges[][2] = {{0, 1},         {n - 1, 1}, {n / 2, n / 3},
                                        {CHUNK - 3, 7}, {1, n - 2}, {n / 3, CMK_TO_END},
                                        {n, 0}};
                for (size_t r = 0; r < sizeof(ranges) / sizeof(*ranges); r++) {
                    uint64_t off = ranges[r][0], len = ranges[r][1];
                    if (off + (len == CMK_TO_END ? 0 : len) > n)
                        continue;
                    uint64_t want = len == CMK_TO_END ? n - off : len;
                    CHECK_MSG(get_equals(s, dg, data, off, want, 4096), "range %llu+%llu of %zu",
                              (unsigned long long)off, (unsigned long long)want, n);
                }
                cmk_get *g = NULL;
                CHECK_RC(cmk_get_open(s, dg, n + 1, 1, &g), CMK_E_RANGE);
            }
        }
    }
    /* Compressible content really is stored smaller; random content is not inflated much. */
    char dt[CMK_DIGEST_MAX], dr[CMK_DIGEST_MAX];
    cmk_blob_info it, ir;
    test_fill_text(data, maxn, 5);
    CHECK_OK(put_buf(s, data, maxn, maxn, NULL, dt));
    test_fill_random(data, maxn, 6);
    CHECK_OK(put_buf(s, data, maxn, maxn, NULL, dr));
    CHECK_OK(cmk_stat(s, dt, &it));
    CHECK_OK(cmk_stat(s, dr, &ir));
    CHECK_MSG(it.stored_size < maxn / 2, "text stored in %llu", (unsigned long long)it.stored_size);
    CHECK(ir.stored_size < maxn + maxn / 100);
    cmk_store_close(s);
    free(data);
}

static int count_cb(const char *d, void *arg)
{
    (void)d;
    (*(int *)arg)++;
    return 0;
}

static void test_metadata_and_refusals(void)
{
    char dir[4096], tmp[4200], dg[CMK_DIGEST_MAX], dg2[CMK_DIGEST_MAX];
    uint8_t data[5000];
    cmk_store *s;
    cmk_put *p = NULL;
    int n = 0;

    test_fill_text(data, sizeof(data), 3);
    new_store("meta", CHUNK, dir, sizeof(dir));
    s = open_store(dir, NULL);
    REQUIRE(s);
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);

    /* Wrong expected digest: refused, nothing published, nothing left behind. */
    const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    CHECK_RC(put_buf(s, data, sizeof(data), 1000, wrong, dg), CMK_E_DIGEST);
    CHECK(strstr(cmk_errmsg(), "does not match") != NULL);
    CHECK_OK(cmk_list(s, count_cb, &n));
    CHECK(n == 0);
    CHECK(test_dir_entries(tmp) == 0);
    CHECK_RC(put_buf(s, data, sizeof(data), 1000, "sha256:xyz", dg), CMK_E_INVAL);
    /* sha512 content under a sha256 put is a mismatch, not a silent rename. */
    CHECK_RC(put_buf(s, data, sizeof(data), 1000,
                     "sha512:00000000000000000000000000000000000000000000000000000000000000000000"
                     "000000000000000000000000000000000000000000000000000000000000",
                     dg),
             CMK_E_DIGEST);

    /* Abort publishes nothing. */
    CHECK_OK(cmk_put_begin(s, NULL, &p));
    CHECK_OK(cmk_put_write(p, data, sizeof(data)));
    CHECK(cmk_put_size(p) == sizeof(data));
    cmk_put_abort(p);
    n = 0;
    CHECK_OK(cmk_list(s, count_cb, &n));
    CHECK(n == 0);

    /* sha512 puts. */
    CHECK_OK(cmk_put_begin(s, "sha512", &p));
    CHECK_OK(cmk_put_write(p, data, sizeof(data)));
    CHECK_OK(cmk_put_commit(p, NULL, dg2));
    CHECK(strncmp(dg2, "sha512:", 7) == 0 && strlen(dg2) == 7 + 128);
    CHECK(get_equals(s, dg2, data, 0, sizeof(data), 512));
    CHECK_RC(cmk_put_begin(s, "md5", &p), CMK_E_INVAL);

    CHECK_OK(put_buf(s, data, sizeof(data), 100, NULL, dg));
    n = 0;
    CHECK_OK(cmk_list(s, count_cb, &n));
    CHECK(n == 2);
    CHECK_OK(cmk_delete(s, dg));
    CHECK_RC(cmk_delete(s, dg), CMK_E_NOT_FOUND);
    CHECK_RC(cmk_stat(s, dg, NULL), CMK_E_NOT_FOUND);
    CHECK(strstr(cmk_errmsg(), "not in the store") != NULL);
    cmk_get *g = NULL;
    CHECK_RC(cmk_get_open(s, "sha256:nothex", 0, CMK_TO_END, &g), CMK_E_INVAL);

    cmk_encryption_info ei;
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(ei.cmk_enabled == 1 && ei.key_rotation_enabled == 1 && ei.key_accessible == 1);
    CHECK(strcmp(ei.key_identifier, "test://vault/keys/k") == 0);
    CHECK(strcmp(ei.versioned_key_identifier, "test://vault/keys/k/v1") == 0);
    CHECK(strcmp(ei.wrap_algorithm, "RSA-OAEP-256") == 0);
    CHECK(strcmp(ei.identity_kind, "UserAssigned") == 0);
    cmk_store_close(s);

    /* Refusals at create: existing store, bad chunk size, identity without key. */
    cmk_create_opts co;
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "tester";
    co.key_id = "test://vault/keys/k";
    co.kek_provider = test_kek_provider(tk);
    CHECK_RC(cmk_store_create(dir, &co), CMK_E_REFUSED);
    CHECK(strstr(cmk_errmsg(), "already exists") != NULL);
    char d2[4200];
    snprintf(d2, sizeof(d2), "%s/other", test_tmpdir("refuse"));
    co.chunk_size = 12345;
    CHECK_RC(cmk_store_create(d2, &co), CMK_E_INVAL);
    co.chunk_size = 0;
    co.key_id = NULL;
    CHECK_RC(cmk_store_create(d2, &co), CMK_E_INVAL);
    co.key_id = "test://vault/keys/k";
    co.identity = "nobody";
    CHECK_RC(cmk_store_create(d2, &co), CMK_E_NOT_FOUND);
    co.identity = "[system]";
    CHECK_RC(cmk_store_create(d2, &co), CMK_E_REFUSED);
    co.identity = "tester";
    co.key_id = "test://vault/keys/k/v9";
    CHECK_RC(cmk_store_create(d2, &co), CMK_E_KEY_NOT_FOUND);
    CHECK(!cmk_exists(d2));
    cmk_store *none = NULL;
    CHECK_RC(cmk_store_open(d2, NULL, &none), CMK_E_NOT_FOUND);
    CHECK(none == NULL);
}

/* ---- tamper ---- */

static char tamper_path[4096];

static int find_blob_file(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)f;
    if (flag == FTW_F && strstr(p, "/blobs/") && S_ISREG(st->st_mode)) {
        snprintf(tamper_path, sizeof(tamper_path), "%s", p);
        return 1;
    }
    return 0;
}

/* Reads the whole blob; returns the error, and checks every byte delivered before it is
 * correct. */
static cmk_err read_all_checked(cmk_store *s, const char *dg, const uint8_t *want, size_t n,
                                int *wrong)
{
    cmk_get *g = NULL;
    uint8_t buf[8192];
    size_t pos = 0, k;
    cmk_err rc = cmk_get_open(s, dg, 0, CMK_TO_END, &g);

    *wrong = 0;
    if (rc != CMK_OK)
        return rc;
    for (;;) {
        rc = cmk_get_read(g, buf, sizeof(buf), &k);
        if (rc != CMK_OK || k == 0)
            break;
        if (pos + k > n || memcmp(buf, want + pos, k) != 0)
            *wrong = 1;
        pos += k;
    }
    if (rc == CMK_OK && pos != n)
        *wrong = 1;
    cmk_get_close(g);
    return rc;
}

static int is_integrity(cmk_err rc)
{
    return rc == CMK_E_INTEGRITY || rc == CMK_E_CORRUPT;
}

static void test_tamper(void)
{
    char dir[4096], dg[CMK_DIGEST_MAX], dg2[CMK_DIGEST_MAX];
    size_t n = 3 * CHUNK + 1000, flen;
    uint8_t *data = malloc(n), *orig;
    cmk_store *s;
    int wrong, failures = 0, detected = 0;

    REQUIRE(data);
    test_fill_random(data, 2 * CHUNK, 21);               /* chunks 0, 1: raw */
    test_fill_text(data + 2 * CHUNK, n - 2 * CHUNK, 22); /* chunks 2, 3: compressed */
    new_store("tamper", CHUNK, dir, sizeof(dir));
    s = open_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(put_buf(s, data, n, n, NULL, dg));
    tamper_path[0] = 0;
    nftw(dir, find_blob_file, 16, FTW_PHYS);
    REQUIRE(tamper_path[0]);
    orig = test_read_file(tamper_path, &flen);
    REQUIRE(orig);

    /* Single-byte flips: every header and index byte, every chunk-record header byte, tags,
     * and a stride through the payloads. */
    for (size_t i = 0; i < flen; i++) {
        int interesting = i < CMK_FMT_HEADER_SIZE || i >= flen - (4 * 16 + 24) || i % 211 == 0;
        for (size_t c = 0, off = CMK_FMT_HEADER_SIZE; c < 4 && !interesting; c++)
            interesting = i >= off && i < off + 16;
        if (!interesting)
            continue;
        orig[i] ^= 0x01;
        REQUIRE(test_write_file(tamper_path, orig, flen) == 0);
        cmk_err rc = read_all_checked(s, dg, data, n, &wrong);
        cmk_err vr = cmk_verify(s, dg, NULL);
        /* Chunk 0's xxh3 check field is the one byte range no tag covers: a get, which
         * computes the check only when a tag fails, still delivers the authentic content;
         * verify, a scrub, reports the damage. */
        int check_field = i >= CMK_FMT_HEADER_SIZE + 12 && i < CMK_FMT_HEADER_SIZE + 16;
        int get_ok = check_field ? rc == CMK_OK : is_integrity(rc);
        int verify_ok = check_field ? vr == CMK_E_CORRUPT : is_integrity(vr);
        detected++;
        if (!get_ok || !verify_ok || wrong) {
            failures++;
            if (failures < 5)
                fprintf(stderr, "flip at %zu: get %s verify %s wrong %d\n", i, cmk_errname(rc),
                        cmk_errname(vr), wrong);
        }
        orig[i] ^= 0x01;
    }
    CHECK_MSG(failures == 0, "%d of %d flips not detected", failures, detected);
    CHECK(detected > 600);

    /* Truncation at many lengths, and extension. */
    failures = 0;
    for (size_t cut = 0; cut < flen; cut += flen / 37 + 1) {
        REQUIRE(test_write_file(tamper_path, orig, cut) == 0);
        cmk_err rc = read_all_checked(s, dg, data, n, &wrong);
        failures += !is_integrity(rc) || wrong;
    }
    uint8_t *ext = malloc(flen + 10);
    memcpy(ext, orig, flen);
    memset(ext + flen, 0, 10);
    REQUIRE(test_write_file(tamper_path, ext, flen + 10) == 0);
    failures += !is_integrity(read_all_checked(s, dg, data, n, &wrong));
    free(ext);
    CHECK_MSG(failures == 0, "%d truncations/extensions not detected", failures);

    /* Swap chunk records 0 and 1 (both raw, same length): authentication fails at 0. */
    size_t rec = 16 + CHUNK + 16;
    uint8_t *sw = malloc(flen);
    memcpy(sw, orig, flen);
    memcpy(sw + CMK_FMT_HEADER_SIZE, orig + CMK_FMT_HEADER_SIZE + rec, rec);
    memcpy(sw + CMK_FMT_HEADER_SIZE + rec, orig + CMK_FMT_HEADER_SIZE, rec);
    REQUIRE(test_write_file(tamper_path, sw, flen) == 0);
    CHECK_RC(read_all_checked(s, dg, data, n, &wrong), CMK_E_INTEGRITY);
    CHECK(!wrong);
    CHECK_RC(cmk_verify(s, dg, NULL), CMK_E_INTEGRITY);
    free(sw);

    /* Corrupt or forged: a get computes a record's check only once its tag has failed, over
     * the record read again (a compressed chunk is decrypted in place). A flipped ciphertext
     * byte is corruption, in a raw chunk (0) and a compressed one (2); the same flip with
     * the check recomputed over it is forgery. */
    for (int ci = 0; ci < 4; ci++) {
        size_t at = CMK_FMT_HEADER_SIZE; /* record 0, or record 2 (stored length at +4) */
        uint8_t *bad = malloc(flen);
        REQUIRE(bad);
        for (int k = 0; k < (ci & 2); k++)
            at += cmk_fmt_record_len(cmk_ld32(orig + at + 4));
        uint32_t slen = cmk_ld32(orig + at + 4);
        uint8_t *ct = bad + at + CMK_FMT_CHUNK_HDR_SIZE;
        memcpy(bad, orig, flen);
        ct[slen / 2] ^= 0x10;
        if (ci & 1) /* the check (at +12) recomputed over the flipped record */
            cmk_st32(bad + at + 12, cmk_fmt_chunk_check(bad + at, ct, slen, ct + slen));
        REQUIRE(test_write_file(tamper_path, bad, flen) == 0);
        cmk_err want = (ci & 1) ? CMK_E_INTEGRITY : CMK_E_CORRUPT;
        CHECK_RC(read_all_checked(s, dg, data, n, &wrong), want);
        CHECK(strstr(cmk_errmsg(), (ci & 1) ? "failed authentication" : "checksum mismatch"));
        CHECK(!wrong);
        CHECK_RC(cmk_verify(s, dg, NULL), want);
        free(bad);
    }
    REQUIRE(test_write_file(tamper_path, orig, flen) == 0);
    CHECK_OK(cmk_verify(s, dg, NULL));

    /* Swap two blobs' files. */
    char path2[4096];
    test_fill_random(data, 1000, 99);
    CHECK_OK(put_buf(s, data, 1000, 1000, NULL, dg2));
    snprintf(path2, sizeof(path2), "%s", tamper_path);
    char *slash = strrchr(path2, '/');
    /* path of dg2: blobs/sha256/<xx>/<hex> */
    snprintf(path2, sizeof(path2), "%s/blobs/sha256/%.2s/%s", dir, dg2 + 7, dg2 + 7);
    (void)slash;
    size_t l2;
    uint8_t *other = test_read_file(path2, &l2);
    REQUIRE(other);
    REQUIRE(test_write_file(path2, orig, flen) == 0);
    CHECK_RC(cmk_stat(s, dg2, NULL), CMK_E_INTEGRITY);
    CHECK(strstr(cmk_errmsg(), "another blob") != NULL);
    REQUIRE(test_write_file(path2, other, l2) == 0);
    CHECK_OK(cmk_verify(s, dg2, NULL));

    /* A file from another store (another DEK) under the right name. */
    char dir2[4096], dg3[CMK_DIGEST_MAX];
    new_store("tamper2", CHUNK, dir2, sizeof(dir2));
    cmk_store *s2 = open_store(dir2, NULL);
    REQUIRE(s2);
    test_fill_random(data, n, 21);
    test_fill_text(data + 2 * CHUNK, n - 2 * CHUNK, 22);
    CHECK_OK(put_buf(s2, data, n, n, NULL, dg3));
    CHECK(strcmp(dg3, dg) == 0);
    char p3[4096];
    snprintf(p3, sizeof(p3), "%s/blobs/sha256/%.2s/%s", dir2, dg3 + 7, dg3 + 7);
    size_t l3;
    uint8_t *foreign = test_read_file(p3, &l3);
    REQUIRE(foreign);
    REQUIRE(test_write_file(tamper_path, foreign, l3) == 0);
    CHECK_RC(cmk_stat(s, dg, NULL), CMK_E_INTEGRITY);
    free(foreign);
    cmk_store_close(s2);
    free(other);
    free(orig);
    free(data);
    cmk_store_close(s);
}

/* ---- crash safety ---- */

static void child_put_and_die(const char *dir, int stage, size_t n)
{
    uint8_t *data = malloc(n);
    cmk_store *s = NULL;
    cmk_put *p = NULL;
    char dg[CMK_DIGEST_MAX];
    cmk_store_opts so;

    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = test_kek_provider(tk);
    test_fill_random(data, n, 77);
    if (cmk_store_open(dir, &so, &s) != CMK_OK || cmk_put_begin(s, NULL, &p) != CMK_OK)
        _exit(3);
    if (stage == 0)
        raise(SIGKILL);
    if (cmk_put_write(p, data, n / 2) != CMK_OK)
        _exit(4);
    if (stage == 1)
        raise(SIGKILL);
    if (cmk_put_write(p, data + n / 2, n - n / 2) != CMK_OK)
        _exit(4);
    if (stage == 2)
        raise(SIGKILL);
    if (cmk_put_commit(p, NULL, dg) != CMK_OK)
        _exit(5);
    raise(SIGKILL); /* stage 3: after commit */
    _exit(6);
}

static void test_crash(void)
{
    char dir[4096], tmp[4200];
    size_t n = 10 * CHUNK + 5;
    uint8_t *data = malloc(n);

    REQUIRE(data);
    test_fill_random(data, n, 77);
    new_store("crash", CHUNK, dir, sizeof(dir));
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    for (int stage = 0; stage <= 3; stage++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            child_put_and_die(dir, stage, n);
        int st;
        waitpid(pid, &st, 0);
        CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "stage %d child status %d", stage,
                  st);
        cmk_store *s = open_store(dir, NULL);
        REQUIRE(s);
        int count = 0;
        CHECK_OK(cmk_list(s, count_cb, &count));
        CHECK_MSG(count == (stage == 3), "stage %d: %d blobs visible", stage, count);
        if (count == 1) {
            char dg[CMK_DIGEST_MAX];
            cmk_put *p = NULL;
            CHECK_OK(cmk_put_begin(s, NULL, &p));
            CHECK_OK(cmk_put_write(p, data, n));
            CHECK_OK(cmk_put_commit(p, NULL, dg));
            CHECK_OK(cmk_verify(s, dg, NULL));
            CHECK(get_equals(s, dg, data, 0, n, 100000));
        }
        CHECK(test_dir_entries(tmp) == 0);
        cmk_store_close(s);
    }
    free(data);
}

/* ---- no plaintext at rest, file modes ---- */

static const uint8_t *needle;
static size_t needle_len;
static int found, bad_modes;

static int scan_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)f;
    if (flag == FTW_D && (st->st_mode & 0077))
        bad_modes++;
    if (flag != FTW_F)
        return 0;
    if (st->st_mode & 0077)
        bad_modes++;
    size_t len;
    uint8_t *buf = test_read_file(p, &len);
    if (buf && len >= needle_len && memmem(buf, len, needle, needle_len)) {
        fprintf(stderr, "plaintext found in %s\n", p);
        found++;
    }
    free(buf);
    return 0;
}

static void test_no_plaintext(void)
{
    char dir[4096], dg[CMK_DIGEST_MAX];
    static const char marker[] = "TOP-SECRET-LAYER-CONTENT-cmkstore-marker-4711";
    size_t n = 3 * CHUNK;
    uint8_t *data = malloc(n);
    cmk_store *s;

    REQUIRE(data);
    new_store("plain", CHUNK, dir, sizeof(dir));
    s = open_store(dir, NULL);
    REQUIRE(s);
    for (size_t i = 0; i + sizeof(marker) <= n; i += sizeof(marker))
        memcpy(data + i, marker, sizeof(marker) - 1);
    CHECK_OK(put_buf(s, data, n, n, NULL, dg));
    CHECK_OK(put_buf(s, (const uint8_t *)marker, sizeof(marker) - 1, 64, NULL, dg));
    uint8_t *rnd = malloc(n);
    test_fill_random(rnd, n, 5150);
    CHECK_OK(put_buf(s, rnd, n, n, NULL, dg));
    cmk_store_close(s);

    needle = (const uint8_t *)marker;
    needle_len = 16;
    found = bad_modes = 0;
    nftw(dir, scan_cb, 16, FTW_PHYS);
    CHECK(found == 0);
    CHECK_MSG(bad_modes == 0, "%d files or directories are group/world accessible", bad_modes);
    /* 32-byte windows of the random blob. */
    for (size_t off = 0; off + 32 <= n; off += n / 7) {
        needle = rnd + off;
        needle_len = 32;
        nftw(dir, scan_cb, 16, FTW_PHYS);
    }
    CHECK(found == 0);
    free(rnd);
    free(data);
}

/* ---- concurrency ---- */

struct worker {
    cmk_store *s;
    int id;
    int errors;
    char digests[12][CMK_DIGEST_MAX];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 12; i++) {
        size_t n = (size_t)(w->id * 7919 + i * 104729) % (3 * CHUNK) + 1;
        uint8_t *buf = malloc(n);
        if (i % 2)
            test_fill_text(buf, n, (uint64_t)(w->id * 100 + i));
        else
            test_fill_random(buf, n, (uint64_t)(w->id * 100 + i));
        if (put_buf(w->s, buf, n, 3000, NULL, w->digests[i]) != CMK_OK ||
            !get_equals(w->s, w->digests[i], buf, 0, n, 5000))
            w->errors++;
        /* Everyone also writes one shared blob. */
        char dg[CMK_DIGEST_MAX];
        uint8_t shared[20000];
        test_fill_random(shared, sizeof(shared), 4242);
        if (put_buf(w->s, shared, sizeof(shared), 999, NULL, dg) != CMK_OK ||
            !get_equals(w->s, dg, shared, 0, sizeof(shared), 777))
            w->errors++;
        free(buf);
    }
    return NULL;
}

static void test_concurrency(void)
{
    char dir[4096];
    struct worker w[8];
    pthread_t th[8];
    cmk_store *s;

    new_store("conc", CHUNK, dir, sizeof(dir));
    s = open_store(dir, NULL);
    REQUIRE(s);
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){.s = s, .id = i + 1};
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(w[i].errors == 0, "worker %d: %d errors", i, w[i].errors);
        for (int k = 0; k < 12; k++)
            CHECK_OK(cmk_verify(s, w[i].digests[k], NULL));
    }
    int n = 0;
    CHECK_OK(cmk_list(s, count_cb, &n));
    CHECK(n == 8 * 12 + 1);
    cmk_store_close(s);
}

/* ---- key loss at open ---- */

static void test_key_loss(void)
{
    char dir[4096], dg[CMK_DIGEST_MAX];
    uint8_t data[3000];
    cmk_store *s;
    cmk_encryption_info ei;
    cmk_put *p = NULL;
    cmk_get *g = NULL;

    test_fill_text(data, sizeof(data), 8);
    new_store("keyloss", CHUNK, dir, sizeof(dir));
    s = open_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(put_buf(s, data, sizeof(data), 1000, NULL, dg));
    cmk_store_close(s);

    cmk_err causes[] = {CMK_E_KEY_DENIED, CMK_E_KEY_DISABLED, CMK_E_KEY_DELETED,
                        CMK_E_KEY_NOT_FOUND};
    for (size_t i = 0; i < sizeof(causes) / sizeof(*causes); i++) {
        test_kek_fail(tk, causes[i]);
        s = open_store(dir, NULL);
        REQUIRE(s); /* opens, so the status can be shown */
        CHECK_RC(cmk_get_open(s, dg, 0, CMK_TO_END, &g), causes[i]);
        CHECK(strstr(cmk_errmsg(), "test://vault/keys/k/v1") != NULL);
        CHECK(strstr(cmk_errmsg(), "identity") != NULL);
        CHECK_RC(cmk_put_begin(s, NULL, &p), causes[i]);
        CHECK_RC(cmk_delete(s, dg), causes[i]);
        CHECK_OK(cmk_store_encryption(s, &ei));
        CHECK(ei.key_accessible == 0 && ei.key_error == causes[i]);
        cmk_store_close(s);
    }
    test_kek_fail(tk, CMK_OK);
    s = open_store(dir, NULL);
    REQUIRE(s);
    CHECK(get_equals(s, dg, data, 0, sizeof(data), 4096));
    cmk_store_close(s);
}

int main(void)
{
    cmk_identity id;
    cmk_errbuf eb = {0};

    tk = test_kek_new(0);
    REQUIRE(tk);
    snprintf(home, sizeof(home), "%s", test_tmpdir("home"));
    CHECK_OK(cmk_identity_create(home, "tester", &id, &eb));
    test_roundtrips(NULL);
    test_roundtrips("sync");
    test_metadata_and_refusals();
    test_tamper();
    test_crash();
    test_no_plaintext();
    test_concurrency();
    test_key_loss();
    test_kek_free(tk);
    return check_summary();
}
