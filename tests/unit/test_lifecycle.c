/* test_lifecycle.c — rotation (manual, automatic, background), revocation and restore for
 * each cause, the unreachable grace period, crash-safe rotation under SIGKILL, refusals,
 * identities in use, DEK rollover, events. Runs against the real local vault (RSA keys on
 * disk, access policies) and, for fault injection, the in-process test provider. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "core/base/jsonfile.h"
#include "core/keyring.h"
#include "tests/testkek.h"
#include "kek/vault/vault.h"

static char home[4096];
static const char *perms3[] = {"get", "wrapKey", "unwrapKey"};

/* ---- helpers ---- */

static cmk_store *open_home_store(const char *dir, const cmk_kek_provider *prov)
{
    cmk_store_opts so;
    cmk_store *s = NULL;
    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = prov;
    CHECK_OK(cmk_store_open(dir, &so, &s));
    return s;
}

static void put_n(cmk_store *s, int n, size_t size, uint64_t seed, char (*dg)[CMK_DIGEST_MAX])
{
    uint8_t *buf = malloc(size);
    for (int i = 0; i < n; i++) {
        cmk_put *p = NULL;
        test_fill_random(buf, size, seed + (uint64_t)i);
        CHECK_OK(cmk_put_begin(s, NULL, &p));
        CHECK_OK(cmk_put_write(p, buf, size));
        CHECK_OK(cmk_put_commit(p, NULL, dg[i]));
    }
    free(buf);
}

static int all_verify(cmk_store *s, char (*dg)[CMK_DIGEST_MAX], int n)
{
    int ok = 1;
    for (int i = 0; i < n; i++) {
        if (cmk_verify(s, dg[i], NULL) != CMK_OK) {
            fprintf(stderr, "verify %s: %s\n", dg[i], cmk_errmsg());
            ok = 0;
        }
    }
    return ok;
}

static char *new_key_version(const char *vault, const char *key, const char *kty)
{
    json_t *j = NULL;
    char *kid = NULL;
    CHECK_OK(cmk_vault_key_create(home, vault, key, kty, strcmp(kty, "EC") ? 2048 : 0, &j, NULL));
    if (j)
        kid = strdup(json_string_value(json_object_get(json_object_get(j, "key"), "kid")));
    json_decref(j);
    return kid;
}

/* Hash of every blob file's bytes and metadata that rotation must not touch. */
static uint64_t blobs_fingerprint_acc;
static int fp_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)f;
    if (flag != FTW_F || !strstr(p, "/blobs/"))
        return 0;
    size_t len;
    uint8_t *b = test_read_file(p, &len);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; b && i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    free(b);
    h ^=
        (uint64_t)st->st_mtim.tv_nsec ^ ((uint64_t)st->st_mtim.tv_sec << 20) ^ (uint64_t)st->st_ino;
    blobs_fingerprint_acc += h * 31 + len;
    return 0;
}

static uint64_t blobs_fingerprint(const char *dir)
{
    blobs_fingerprint_acc = 0;
    nftw(dir, fp_cb, 16, FTW_PHYS);
    return blobs_fingerprint_acc;
}

static int events_count(const char *dir, const char *type)
{
    char path[4200], pat[128];
    size_t len;
    snprintf(path, sizeof(path), "%s/events.log", dir);
    snprintf(pat, sizeof(pat), "\"event\":\"%s\"", type);
    char *t = (char *)test_read_file(path, &len);
    int n = 0;
    for (char *p = t; p && (p = strstr(p, pat)) != NULL; p++)
        n++;
    free(t);
    return n;
}

/* ---- the vault-backed fixture ---- */

static cmk_identity ident, ident2;
static char *kid_v1; /* versioned */

static void setup_vault(void)
{
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 7};
    snprintf(home, sizeof(home), "%s", test_tmpdir("home"));
    CHECK_OK(cmk_identity_create(home, "regid", &ident, NULL));
    CHECK_OK(cmk_identity_create(home, "otherid", &ident2, NULL));
    CHECK_OK(cmk_vault_create(home, "kv", &vo, NULL, NULL));
    CHECK_OK(cmk_vault_create(home, "kv2", &vo, NULL, NULL));
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident.principal_id, perms3, 3, NULL, NULL));
    CHECK_OK(cmk_vault_set_policy(home, "kv2", ident.principal_id, perms3, 3, NULL, NULL));
    kid_v1 = new_key_version("kv", "regkey", "RSA");
    REQUIRE(kid_v1);
}

static const char *create_store(const char *tag, const char *kid, char *out, size_t cap)
{
    cmk_create_opts co;
    snprintf(out, cap, "%s/store", test_tmpdir(tag));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "regid";
    co.key_id = kid;
    CHECK_OK(cmk_store_create(out, &co));
    return out;
}

/* ---- manual rotation ---- */

static void test_manual_rotation(void)
{
    char dir[4096], dg[20][CMK_DIGEST_MAX];
    cmk_encryption_info ei;
    cmk_store *s;

    create_store("manual", kid_v1, dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(ei.key_rotation_enabled == 0 && ei.last_key_rotation == 0);
    CHECK(strcmp(ei.versioned_key_identifier, kid_v1) == 0);
    put_n(s, 20, 70000, 100, dg);
    CHECK_OK(cmk_store_rotate_dek(s, NULL));
    put_n(s, 1, 1000, 900, &dg[19]);
    uint64_t before = blobs_fingerprint(dir);

    /* Rotate to a new version of the same key. */
    char *kid_v2 = new_key_version("kv", "regkey", "RSA");
    CHECK_OK(cmk_store_rotate_key(s, kid_v2, NULL));
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(strcmp(ei.versioned_key_identifier, kid_v2) == 0);
    CHECK(strcmp(ei.key_identifier, kid_v2) == 0);
    CHECK(ei.key_rotation_enabled == 0 && ei.last_key_rotation > 0);
    CHECK(ei.dek_count == 2);
    CHECK(all_verify(s, dg, 20));
    CHECK(blobs_fingerprint(dir) == before);
    cmk_store_close(s);

    /* The keyring names the new version for every DEK; the old version can be disabled and
     * a new process still reads everything. */
    cmk_keyring kr;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dfd >= 0);
    CHECK_OK(cmk_keyring_load(dfd, dir, &kr, NULL));
    close(dfd);
    for (size_t i = 0; i < kr.ndeks; i++)
        CHECK(strcmp(kr.deks[i].kid, kid_v2) == 0);
    cmk_keyring_free(&kr);
    const char *v1 = strrchr(kid_v1, '/') + 1;
    CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "regkey", v1, 0, NULL, NULL));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK(all_verify(s, dg, 20));

    /* Rotate to another key in another vault, versionless: automatic rotation turns on. */
    char *other = new_key_version("kv2", "k2", "RSA");
    CHECK_OK(cmk_store_rotate_key(s, "local://kv2/keys/k2", NULL));
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(ei.key_rotation_enabled == 1);
    CHECK(strcmp(ei.key_identifier, "local://kv2/keys/k2") == 0);
    CHECK(strcmp(ei.versioned_key_identifier, other) == 0);
    CHECK(all_verify(s, dg, 20));
    CHECK(blobs_fingerprint(dir) == before);
    CHECK(events_count(dir, "key.rotated") == 2);
    cmk_store_close(s);
    CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "regkey", v1, 1, NULL, NULL));
    free(kid_v2);
    free(other);
}

/* ---- refusals change nothing ---- */

static void test_refusals(void)
{
    char dir[4096], path[4200], dg[1][CMK_DIGEST_MAX];
    size_t l1, l2;
    cmk_store *s;

    create_store("refuse", "local://kv/keys/regkey", dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    put_n(s, 1, 5000, 7, dg);
    snprintf(path, sizeof(path), "%s/keyring.json", dir);
    uint8_t *kr_before = test_read_file(path, &l1);

    char *ec = new_key_version("kv", "eckey", "EC");
    REQUIRE(ec);
    CHECK_RC(cmk_store_rotate_key(s, ec, NULL), CMK_E_KEY_UNSUPPORTED);
    CHECK(strstr(cmk_errmsg(), "RSA") != NULL);
    /* An identity that is not assigned, then one that lacks permissions. */
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "otherid"), CMK_E_REFUSED);
    CHECK(strstr(cmk_errmsg(), "not assigned to the store") != NULL);
    CHECK_OK(cmk_store_identity_assign(s, "otherid"));
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "otherid"), CMK_E_KEY_DENIED);
    const char *wrap_only[] = {"get", "wrapKey"};
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident2.principal_id, wrap_only, 2, NULL, NULL));
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "otherid"), CMK_E_KEY_DENIED);
    CHECK(strstr(cmk_errmsg(), "unwrapKey") != NULL);
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/nokey", NULL), CMK_E_KEY_NOT_FOUND);
    CHECK_RC(cmk_store_rotate_key(s, "not-a-key-id", NULL), CMK_E_KEY_NOT_FOUND);
    /* The identity in use cannot be removed. */
    CHECK_RC(cmk_store_identity_remove(s, "regid"), CMK_E_REFUSED);
    CHECK(strstr(cmk_errmsg(), "rotate") != NULL && strstr(cmk_errmsg(), "assign") != NULL);
    uint8_t *kr_after = test_read_file(path, &l2);
    CHECK(l1 == l2 && memcmp(kr_before, kr_after, l1) == 0);
    CHECK(all_verify(s, dg, 1));
    CHECK(events_count(dir, "operation.refused") >= 5);

    /* With permissions, rotating to the other identity works, and then the first identity
     * may be removed. */
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident2.principal_id, perms3, 3, NULL, NULL));
    CHECK_OK(cmk_store_rotate_key(s, "local://kv/keys/regkey", ident2.client_id));
    CHECK_OK(cmk_store_identity_remove(s, "regid"));
    CHECK_RC(cmk_store_identity_remove(s, "otherid"), CMK_E_REFUSED);
    cmk_store_identity ids[4];
    size_t n = 0;
    CHECK_OK(cmk_store_identities(s, ids, 4, &n));
    CHECK(n == 2); /* system + otherid */
    int used = 0;
    for (size_t i = 0; i < n && i < 4; i++)
        used += ids[i].used_for_encryption && strcmp(ids[i].principal, ident2.principal_id) == 0;
    CHECK(used == 1);

    /* [system]: refused until enabled and granted, then works. */
    CHECK_OK(cmk_store_identity_remove(s, "[system]"));
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "[system]"), CMK_E_REFUSED);
    CHECK_OK(cmk_store_identity_assign(s, "[system]"));
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "[system]"), CMK_E_KEY_DENIED);
    cmk_identity sys;
    CHECK_OK(cmk_identity_get_system(home, cmk_store_id(s), &sys, NULL));
    CHECK_OK(cmk_vault_set_policy(home, "kv", sys.principal_id, perms3, 3, NULL, NULL));
    CHECK_OK(cmk_store_rotate_key(s, "local://kv/keys/regkey", "[system]"));
    cmk_encryption_info ei;
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(strcmp(ei.identity_kind, "SystemAssigned") == 0);
    CHECK(all_verify(s, dg, 1));
    free(kr_before);
    free(kr_after);
    free(ec);
    cmk_store_close(s);

    /* A store-managed store cannot rotate to (enable) a customer key. */
    char d2[4200];
    cmk_create_opts co;
    snprintf(d2, sizeof(d2), "%s/smk", test_tmpdir("smk"));
    cmk_create_opts_init(&co);
    co.home = home;
    CHECK_OK(cmk_store_create(d2, &co));
    s = open_home_store(d2, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(ei.cmk_enabled == 0 && ei.key_accessible == 1);
    CHECK_RC(cmk_store_rotate_key(s, "local://kv/keys/regkey", "regid"), CMK_E_REFUSED);
    CHECK(strstr(cmk_errmsg(), "only be enabled when a store is created") != NULL);
    put_n(s, 1, 3000, 8, dg);
    CHECK(all_verify(s, dg, 1));
    cmk_store_close(s);
}

/* ---- automatic rotation ---- */

static void test_automatic_rotation(void)
{
    char dir[4096], dg[3][CMK_DIGEST_MAX];
    cmk_encryption_info ei;
    cmk_store *s;
    int rotated = 0;

    char *k1 = new_key_version("kv", "autokey", "RSA");
    create_store("auto", "local://kv/keys/autokey", dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    put_n(s, 3, 100000, 50, dg);
    CHECK_OK(cmk_store_check_key(s, 1, &rotated));
    CHECK(rotated == 0);
    char *k2 = new_key_version("kv", "autokey", "RSA");
    /* force < 0: an access check only, even where the rotation check is due. */
    CHECK_OK(cmk_store_set_policy(s, 1, 0, 0, 0));
    sleep(1);
    CHECK_OK(cmk_store_check_key(s, -1, &rotated));
    CHECK(rotated == 0);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(strcmp(ei.versioned_key_identifier, k1) == 0);
    CHECK_OK(cmk_store_check_key(s, 1, &rotated));
    CHECK(rotated == 1);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(strcmp(ei.versioned_key_identifier, k2) == 0 && ei.key_rotation_enabled == 1);
    CHECK(strcmp(ei.key_identifier, "local://kv/keys/autokey") == 0);
    CHECK(all_verify(s, dg, 3));

    /* Background thread with a 1 s interval follows the next version by itself. */
    CHECK_OK(cmk_store_set_policy(s, 1, 1, 0, 0));
    CHECK_OK(cmk_store_start_background(s));
    char *k3 = new_key_version("kv", "autokey", "RSA");
    int followed = 0;
    for (int i = 0; i < 300 && !followed; i++) { /* up to 30 s: never needed in practice */
        usleep(100000);
        /* Reads go on while the background thread rotates. */
        CHECK_OK(cmk_verify(s, dg[i % 3], NULL));
        CHECK_OK(cmk_store_encryption(s, &ei));
        followed = strcmp(ei.versioned_key_identifier, k3) == 0;
    }
    CHECK_MSG(followed, "background rotation did not follow %s", k3);
    CHECK(all_verify(s, dg, 3));
    cmk_store_stop_background(s);
    cmk_store_close(s);
    /* A new process sees the rotated keyring. */
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(strcmp(ei.versioned_key_identifier, k3) == 0);
    CHECK(ei.rotation_check_interval_s == 1 && ei.key_check_interval_s == 1);
    CHECK(all_verify(s, dg, 3));
    cmk_store_close(s);
    CHECK(events_count(dir, "key.rotated") == 2);
    free(k1);
    free(k2);
    free(k3);
}

/* ---- revocation and restore, each cause, with the real vault ---- */

static void expect_revoked(cmk_store *s, const char *dg, cmk_err want)
{
    cmk_get *g = NULL;
    cmk_put *p = NULL;
    cmk_encryption_info ei;

    CHECK_RC(cmk_store_check_key(s, 0, NULL), want);
    CHECK_RC(cmk_get_open(s, dg, 0, CMK_TO_END, &g), want);
    CHECK(strstr(cmk_errmsg(), "local://kv/keys/revkey/") != NULL);
    CHECK(strstr(cmk_errmsg(), ident.principal_id) != NULL);
    CHECK_RC(cmk_put_begin(s, NULL, &p), want);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(!ei.key_accessible && ei.key_error == want && ei.key_error_msg[0]);
}

static void test_revocation(void)
{
    char dir[4096], dg[2][CMK_DIGEST_MAX];
    cmk_store *s;

    char *k = new_key_version("kv", "revkey", "RSA");
    create_store("revoke", "local://kv/keys/revkey", dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    put_n(s, 2, 200000, 70, dg);

    /* 1. delete-policy, then set it again. */
    CHECK_OK(cmk_vault_delete_policy(home, "kv", ident.principal_id, NULL, NULL));
    expect_revoked(s, dg[0], CMK_E_KEY_DENIED);
    cmk_store *fresh = open_home_store(dir, NULL); /* a new process notices at open */
    REQUIRE(fresh);
    cmk_get *g = NULL;
    CHECK_RC(cmk_get_open(fresh, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_DENIED);
    cmk_store_close(fresh);
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident.principal_id, perms3, 3, NULL, NULL));
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));

    /* 2. disable the key, then enable it. */
    CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "revkey", NULL, 0, NULL, NULL));
    expect_revoked(s, dg[1], CMK_E_KEY_DISABLED);
    CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "revkey", NULL, 1, NULL, NULL));
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));

    /* 3. delete the key (soft), then recover it. */
    CHECK_OK(cmk_vault_key_delete(home, "kv", "revkey", NULL, NULL));
    expect_revoked(s, dg[0], CMK_E_KEY_DELETED);
    CHECK_RC(cmk_vault_key_purge(home, "kv", "revkey", NULL), CMK_E_REFUSED);
    CHECK_OK(cmk_vault_key_recover(home, "kv", "revkey", NULL, NULL));
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));

    /* 4. removing only unwrapKey is noticed too (the check unwraps). */
    const char *no_unwrap[] = {"get", "wrapKey"};
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident.principal_id, no_unwrap, 2, NULL, NULL));
    expect_revoked(s, dg[0], CMK_E_KEY_DENIED);
    CHECK_OK(cmk_vault_set_policy(home, "kv", ident.principal_id, perms3, 3, NULL, NULL));
    CHECK_OK(cmk_store_check_key(s, 0, NULL));

    /* 5. the vault deleted and recovered. */
    CHECK_OK(cmk_vault_delete(home, "kv", NULL));
    expect_revoked(s, dg[1], CMK_E_KEY_DELETED);
    CHECK_OK(cmk_vault_recover(home, "kv", NULL, NULL));
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));

    CHECK(events_count(dir, "key.accessLost") == 5);
    CHECK(events_count(dir, "key.accessRestored") == 5);
    cmk_store_close(s);

    /* A long-running process with the background thread (key-check interval 1 s) notices
     * each cause by itself: gets and puts fail with the key-access error naming the key and
     * the identity; after the restore they work again, without a reopen. */
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_set_policy(s, 0, 1, 0, 0));
    CHECK_OK(cmk_store_start_background(s));
    static const struct {
        const char *name;
        cmk_err want;
    } causes[] = {{"delete-policy", CMK_E_KEY_DENIED},
                  {"disable key", CMK_E_KEY_DISABLED},
                  {"delete key", CMK_E_KEY_DELETED}};
    for (size_t c = 0; c < sizeof(causes) / sizeof(causes[0]); c++) {
        cmk_encryption_info ei;
        cmk_put *p = NULL;
        int lost = 0, back = 0;
        switch (c) {
        case 0:
            CHECK_OK(cmk_vault_delete_policy(home, "kv", ident.principal_id, NULL, NULL));
            break;
        case 1:
            CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "revkey", NULL, 0, NULL, NULL));
            break;
        default:
            CHECK_OK(cmk_vault_key_delete(home, "kv", "revkey", NULL, NULL));
            break;
        }
        /* Poll up to 20 s; the interval is 1 s. */
        for (int i = 0; i < 200 && !lost; i++) {
            usleep(100000);
            CHECK_OK(cmk_store_encryption(s, &ei));
            lost = !ei.key_accessible;
        }
        CHECK_MSG(lost, "background check did not notice: %s", causes[c].name);
        CHECK_MSG(ei.key_error == causes[c].want, "%s: %s", causes[c].name,
                  cmk_errname(ei.key_error));
        CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), causes[c].want);
        CHECK(strstr(cmk_errmsg(), "local://kv/keys/revkey/") != NULL);
        CHECK(strstr(cmk_errmsg(), ident.principal_id) != NULL);
        CHECK_RC(cmk_verify(s, dg[1], NULL), causes[c].want);
        CHECK_RC(cmk_put_begin(s, NULL, &p), causes[c].want);
        switch (c) {
        case 0:
            CHECK_OK(cmk_vault_set_policy(home, "kv", ident.principal_id, perms3, 3, NULL, NULL));
            break;
        case 1:
            CHECK_OK(cmk_vault_key_set_enabled(home, "kv", "revkey", NULL, 1, NULL, NULL));
            break;
        default:
            CHECK_OK(cmk_vault_key_recover(home, "kv", "revkey", NULL, NULL));
            break;
        }
        for (int i = 0; i < 200 && !back; i++) {
            usleep(100000);
            CHECK_OK(cmk_store_encryption(s, &ei));
            back = ei.key_accessible;
        }
        CHECK_MSG(back, "background check did not notice the restore: %s", causes[c].name);
        CHECK(all_verify(s, dg, 2));
        char extra[1][CMK_DIGEST_MAX];
        put_n(s, 1, 1000, 600 + c, extra);
        CHECK_OK(cmk_verify(s, extra[0], NULL));
    }
    CHECK(events_count(dir, "key.accessLost") == 8);
    CHECK(events_count(dir, "key.accessRestored") == 8);
    cmk_store_close(s);
    free(k);
}

/* ---- unreachable vault: grace, then fail closed ---- */

static void test_unreachable_grace(void)
{
    test_kek *tk = test_kek_new(0);
    char dir[4096], dg[1][CMK_DIGEST_MAX];
    cmk_create_opts co;
    cmk_store *s;
    cmk_get *g = NULL;

    REQUIRE(tk);
    snprintf(dir, sizeof(dir), "%s/store", test_tmpdir("grace"));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "regid";
    co.key_id = "test://vault/keys/k";
    co.kek_provider = test_kek_provider(tk);
    co.unreachable_grace_s = 1;
    CHECK_OK(cmk_store_create(dir, &co));
    s = open_home_store(dir, test_kek_provider(tk));
    REQUIRE(s);
    put_n(s, 1, 5000, 3, dg);
    test_kek_fail(tk, CMK_E_KEY_UNREACHABLE);
    /* Within the grace period: the check reports the fault but service goes on. */
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_UNREACHABLE);
    CHECK(all_verify(s, dg, 1));
    sleep(2);
    /* Past it: fail closed. */
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_UNREACHABLE);
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_UNREACHABLE);
    CHECK(strstr(cmk_errmsg(), "grace") != NULL);
    test_kek_fail(tk, CMK_OK);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 1));
    /* A denial never coasts. */
    test_kek_fail(tk, CMK_E_KEY_DENIED);
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_DENIED);
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_DENIED);
    test_kek_fail(tk, CMK_OK);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    /* Rotation cost: one wrap and one test unwrap per DEK, whatever the store holds. */
    CHECK(test_kek_add_version(tk) == 2);
    unsigned w0 = test_kek_wraps(tk), u0 = test_kek_unwraps(tk);
    CHECK_OK(cmk_store_rotate_key(s, "test://vault/keys/k/v2", NULL));
    CHECK(test_kek_wraps(tk) - w0 == 1);
    CHECK(test_kek_unwraps(tk) - u0 == 1);
    cmk_store_close(s);
    test_kek_free(tk);
}

/* ---- key checks fail closed on every fault ---- */

typedef struct fault_file {
    char path[4200];
    unsigned char *saved;
    size_t len;
} fault_file;

static void ff_save(fault_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ff_save(fault_file *f, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(f->path, sizeof(f->path), fmt, ap);
    va_end(ap);
    f->saved = test_read_file(f->path, &f->len);
    REQUIRE(f->saved);
}

static void ff_write(const fault_file *f, const void *buf, size_t len)
{
    CHECK(test_write_file(f->path, buf, len) == 0);
}

static void ff_restore(fault_file *f)
{
    ff_write(f, f->saved, f->len);
}

/* A fault that is not a denial: the check reports it as unreachable naming the cause, the
 * store coasts on its DEKs (grace 1 h) and records the start once; when the grace is cut to
 * 1 s, a later check fails closed; the repair restores service at the next check. */
static void expect_coast_then_close(cmk_store *s, const char *dir, char (*dg)[CMK_DIGEST_MAX],
                                    const char *what, cmk_err cause, void (*repair)(void *),
                                    void *arg)
{
    cmk_encryption_info ei;
    cmk_get *g = NULL;
    int u0 = events_count(dir, "key.unreachable"), l0 = events_count(dir, "key.accessLost");
    int closed = 0;

    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_UNREACHABLE);
    CHECK_MSG(strstr(cmk_errmsg(), cmk_errname(cause)) != NULL, "%s: %s", what, cmk_errmsg());
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK_MSG(ei.key_accessible && ei.key_check_error == cause, "%s: accessible %d, %s", what,
              ei.key_accessible, cmk_errname(ei.key_check_error));
    CHECK(all_verify(s, dg, 2));
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_UNREACHABLE);
    CHECK_MSG(events_count(dir, "key.unreachable") == u0 + 1, "%s: key.unreachable once", what);
    CHECK(events_count(dir, "key.accessLost") == l0);
    CHECK_OK(cmk_store_set_policy(s, 0, 0, 1, 0));
    for (int i = 0; i < 100 && !closed; i++) { /* up to 10 s past a 1 s grace */
        usleep(100000);
        if (cmk_store_check_key(s, 0, NULL) != CMK_OK) {
            /* expected once the grace is over: the state is read below */
        }
        CHECK_OK(cmk_store_encryption(s, &ei));
        closed = !ei.key_accessible;
    }
    CHECK_MSG(closed, "%s: still open at the end of the grace", what);
    CHECK(ei.key_error == CMK_E_KEY_UNREACHABLE && ei.key_check_error == cause);
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_UNREACHABLE);
    CHECK(events_count(dir, "key.accessLost") == l0 + 1);
    CHECK_OK(cmk_store_set_policy(s, 0, 0, 3600, 0));
    repair(arg);
    CHECK_MSG(cmk_store_check_key(s, 0, NULL) == CMK_OK, "%s: after repair: %s", what,
              cmk_errmsg());
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(ei.key_accessible && ei.key_check_error == CMK_OK);
    CHECK(all_verify(s, dg, 2));
}

static void restore_ff(void *arg)
{
    ff_restore(arg);
}

static void rename_back(void *arg)
{
    char **p = arg;
    CHECK(rename(p[1], p[0]) == 0);
}

static void test_fault_checks(void)
{
    char dir[4096], dg[2][CMK_DIGEST_MAX], vdir[4200], moved[4200];
    fault_file vj, kj, pem, kr;
    cmk_encryption_info ei;
    cmk_vault_opts vo = {.retention_days = 7};
    uint64_t checks;
    cmk_get *g = NULL;
    cmk_store *s;

    CHECK_OK(cmk_vault_create(home, "fv", &vo, NULL, NULL));
    CHECK_OK(cmk_vault_set_policy(home, "fv", ident.principal_id, perms3, 3, NULL, NULL));
    char *k = new_key_version("fv", "fkey", "RSA");
    REQUIRE(k);
    create_store("faults", k, dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_set_policy(s, 0, 0, 3600, 0));
    put_n(s, 2, 90000, 40, dg);
    snprintf(vdir, sizeof(vdir), "%s/vaults/fv", home);
    ff_save(&vj, "%s/vaults/%s/vault.json", home, "fv");
    ff_save(&kj, "%s/vaults/fv/keys/%s/key.json", home, "fkey");
    ff_save(&pem, "%s/vaults/fv/keys/fkey/%s.pem", home, strrchr(k, '/') + 1);
    ff_save(&kr, "%s/%s", dir, "keyring.json");

    CHECK_OK(cmk_store_encryption(s, &ei));
    checks = ei.key_checks;
    ff_write(&vj, "{", 1);
    expect_coast_then_close(s, dir, dg, "vault.json = {", CMK_E_CORRUPT, restore_ff, &vj);
    ff_write(&kj, "{", 1);
    expect_coast_then_close(s, dir, dg, "key.json = {", CMK_E_CORRUPT, restore_ff, &kj);
    ff_write(&pem, pem.saved, pem.len / 3);
    expect_coast_then_close(s, dir, dg, "PEM truncated", CMK_E_CORRUPT, restore_ff, &pem);
    unsigned char *plus = malloc(kr.len + 1);
    REQUIRE(plus);
    memcpy(plus, kr.saved, kr.len);
    plus[kr.len] = 'x';
    ff_write(&kr, plus, kr.len + 1);
    expect_coast_then_close(s, dir, dg, "keyring + 1 byte", CMK_E_CORRUPT, restore_ff, &kr);
    CHECK(unlink(kr.path) == 0);
    expect_coast_then_close(s, dir, dg, "keyring missing", CMK_E_NOT_FOUND, restore_ff, &kr);
    /* Every check counted, whatever its outcome. */
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK_MSG(ei.key_checks >= checks + 5 * 4, "%llu checks", (unsigned long long)ei.key_checks);

    /* Denials close at once: a vanished vault, and a policy deleted while the keyring is
     * damaged (the check still asks the vault with the keyring it holds). */
    snprintf(moved, sizeof(moved), "%s.moved", vdir);
    CHECK(rename(vdir, moved) == 0);
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_NOT_FOUND);
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_NOT_FOUND);
    char *pair[2] = {vdir, moved};
    rename_back(pair);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));
    int u0 = events_count(dir, "key.unreachable");
    ff_write(&kr, plus, kr.len + 1);
    CHECK_OK(cmk_vault_delete_policy(home, "fv", ident.principal_id, NULL, NULL));
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_DENIED);
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_DENIED);
    CHECK(events_count(dir, "key.unreachable") == u0);
    CHECK_OK(cmk_vault_set_policy(home, "fv", ident.principal_id, perms3, 3, NULL, NULL));
    CHECK_RC(cmk_store_check_key(s, 0, NULL), CMK_E_KEY_UNREACHABLE); /* keyring still bad */
    CHECK_RC(cmk_get_open(s, dg[0], 0, CMK_TO_END, &g), CMK_E_KEY_UNREACHABLE);
    ff_restore(&kr);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));
    cmk_store_close(s);

    /* A process that opens the store while the vault is damaged opens it failed closed
     * (exit 5 / 503 rather than a refusal to start) and recovers at its first good check. */
    ff_write(&vj, "{", 1);
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK_OK(cmk_store_encryption(s, &ei));
    CHECK(!ei.key_accessible && ei.key_error == CMK_E_KEY_UNREACHABLE &&
          ei.key_check_error == CMK_E_CORRUPT);
    CHECK_RC(cmk_get_open(s, dg[1], 0, CMK_TO_END, &g), CMK_E_KEY_UNREACHABLE);
    ff_restore(&vj);
    CHECK_OK(cmk_store_check_key(s, 0, NULL));
    CHECK(all_verify(s, dg, 2));
    cmk_store_close(s);
    free(plus);
    free(vj.saved);
    free(kj.saved);
    free(pem.saved);
    free(kr.saved);
    free(k);
}

/* ---- DEK rollover ---- */

static void test_dek_rollover(void)
{
    char dir[4096], dg[8][CMK_DIGEST_MAX];
    cmk_blob_info bi;
    cmk_store *s;
    uint32_t id = 0;

    create_store("dek", kid_v1, dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    put_n(s, 1, 1000, 1, dg);
    CHECK_OK(cmk_store_rotate_dek(s, &id));
    CHECK(id == 2);
    put_n(s, 1, 1000, 2, &dg[1]);
    CHECK_OK(cmk_stat(s, dg[0], &bi));
    CHECK(bi.dek_id == 1);
    CHECK_OK(cmk_stat(s, dg[1], &bi));
    CHECK(bi.dek_id == 2);
    /* Policy: a new DEK after every 3 blobs. */
    CHECK_OK(cmk_store_set_policy(s, 0, 0, 0, 3));
    put_n(s, 6, 1000, 10, &dg[2]);
    CHECK_OK(cmk_stat(s, dg[7], &bi));
    CHECK_MSG(bi.dek_id == 4, "dek %u after 6 blobs with rollover 3", bi.dek_id);
    CHECK(all_verify(s, dg, 8));
    CHECK(events_count(dir, "dek.rotated") == 3);
    cmk_store_close(s);
    /* Another handle (another process) reads blobs under DEKs it had not loaded. */
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    CHECK(all_verify(s, dg, 8));
    cmk_store_close(s);
}

/* ---- cross-handle: one rotates, the other picks it up ---- */

static void test_cross_handle(void)
{
    char dir[4096], dg[2][CMK_DIGEST_MAX];
    cmk_encryption_info ei;

    create_store("cross", kid_v1, dir, sizeof(dir));
    cmk_store *a = open_home_store(dir, NULL), *b = open_home_store(dir, NULL);
    REQUIRE(a && b);
    char *v = new_key_version("kv", "regkey", "RSA");
    CHECK_OK(cmk_store_rotate_key(a, v, NULL));
    CHECK_OK(cmk_store_rotate_dek(a, NULL));
    put_n(a, 1, 3000, 5, dg);
    /* b reads a blob sealed with a DEK it never loaded: reloads the keyring. */
    CHECK_OK(cmk_verify(b, dg[0], NULL));
    CHECK_OK(cmk_store_check_key(b, 0, NULL));
    CHECK_OK(cmk_store_encryption(b, &ei));
    CHECK(strcmp(ei.versioned_key_identifier, v) == 0 && ei.dek_count == 2);
    put_n(b, 1, 3000, 6, &dg[1]);
    CHECK(all_verify(a, dg, 2));
    cmk_store_close(a);
    cmk_store_close(b);
    free(v);
}

/* ---- settings written by one handle keep another's identity change ---- */

static int has_identity(cmk_store *s, const char *principal)
{
    cmk_store_identity ids[8];
    size_t n = 0;
    int found = 0;

    CHECK_OK(cmk_store_identities(s, ids, 8, &n));
    for (size_t i = 0; i < n && i < 8; i++)
        found |= strcmp(ids[i].principal, principal) == 0;
    return found;
}

static void test_policy_keeps_identity(void)
{
    char dir[4096];

    create_store("policy", kid_v1, dir, sizeof(dir));
    /* Two handles stand for two processes: b loaded store.json before a changed it. */
    cmk_store *a = open_home_store(dir, NULL), *b = open_home_store(dir, NULL);
    REQUIRE(a && b);
    CHECK_OK(cmk_store_identity_assign(a, "otherid"));
    CHECK_OK(cmk_store_set_policy(b, 0, 45, 0, 0));
    cmk_store *c = open_home_store(dir, NULL);
    REQUIRE(c);
    CHECK_MSG(has_identity(c, ident2.principal_id),
              "set_policy on a stale handle reverted an identity assigned by another");
    cmk_encryption_info ei;
    CHECK_OK(cmk_store_encryption(c, &ei));
    CHECK(ei.key_check_interval_s == 45);
    cmk_store_close(a);
    cmk_store_close(b);
    cmk_store_close(c);
}

/* ---- SIGKILL during rotation ---- */

static void test_crash_rotation(void)
{
    char dir[4096], dg[5][CMK_DIGEST_MAX];
    cmk_store *s;
    const int rounds = 40;

    char *k = new_key_version("kv", "crashkey", "RSA");
    create_store("crashrot", "local://kv/keys/crashkey", dir, sizeof(dir));
    s = open_home_store(dir, NULL);
    REQUIRE(s);
    put_n(s, 5, 150000, 300, dg);
    for (int d = 0; d < 3; d++)
        CHECK_OK(cmk_store_rotate_dek(s, NULL));
    cmk_store_close(s);
    /* Several versions to rotate between. */
    char *vers[3] = {new_key_version("kv", "crashkey", "RSA"),
                     new_key_version("kv", "crashkey", "RSA"), k};
    srand(12345);
    int bad = 0;
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            cmk_store *cs = open_home_store(dir, NULL);
            /* Rotates until killed. */
            if (cs)
                for (unsigned i = 0;; i++)
                    if (cmk_store_rotate_key(cs, vers[i % 3], NULL) != CMK_OK) {
                        /* a rotation may lose the race to the parent's: go on */
                    }
            _exit(1);
        }
        usleep((useconds_t)(1000 + rand() % 60000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        s = open_home_store(dir, NULL);
        if (!s) {
            bad++;
            continue;
        }
        cmk_encryption_info ei;
        CHECK_OK(cmk_store_encryption(s, &ei));
        int named = 0;
        for (int v = 0; v < 3; v++)
            named |= strcmp(ei.versioned_key_identifier, vers[v]) == 0;
        if (!ei.key_accessible || !named || !all_verify(s, dg, 5))
            bad++;
        cmk_store_close(s);
    }
    CHECK_MSG(bad == 0, "%d of %d killed rotations left a bad store", bad, rounds);
    /* Temporaries of killed keyring writes are swept at the next open. */
    s = open_home_store(dir, NULL);
    cmk_store_close(s);
    DIR *dd = opendir(dir);
    struct dirent *de;
    int stray = 0;
    while (dd && (de = readdir(dd)) != NULL)
        stray += strncmp(de->d_name, "keyring.json.tmp", 16) == 0;
    if (dd)
        closedir(dd);
    CHECK_MSG(stray == 0, "%d keyring temporaries left", stray);
    free(vers[0]);
    free(vers[1]);
    free(k);
}

int main(void)
{
    setup_vault();
    test_manual_rotation();
    test_refusals();
    test_automatic_rotation();
    test_revocation();
    test_unreachable_grace();
    test_fault_checks();
    test_dek_rollover();
    test_cross_handle();
    test_policy_keeps_identity();
    test_crash_rotation();
    free(kid_v1);
    return check_summary();
}
