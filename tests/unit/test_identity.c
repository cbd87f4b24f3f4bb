/* test_identity.c — the home (resolution, tenant, names) and managed identities: create,
 * look up by every reference form, system-assigned identities, delete, list, the JSON shape,
 * file modes, damaged files and concurrent creates. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check.h"
#include "core/base/fsutil.h"
#include "kek/identity/home.h"
#include "kek/identity/identity.h"
#include "core/base/jsonfile.h"

#define CHECK_E(expr, want)                                                                        \
    do {                                                                                           \
        cmk_errbuf_clear(&eb);                                                                     \
        cmk_err r_ = (expr);                                                                       \
        CHECK_MSG(r_ == (want), "%s -> %s (want %s): %s", #expr, cmk_errname(r_),                  \
                  cmk_errname(want), eb.msg);                                                      \
    } while (0)

#define HAS(s, sub) (strstr((s), (sub)) != NULL)

static char home[4096];

static unsigned mode_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static unsigned mode_of(const char *fmt, ...)
{
    char p[4200];
    struct stat st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof(p), fmt, ap);
    va_end(ap);
    return stat(p, &st) == 0 ? (unsigned)(st.st_mode & 0777) : 0;
}

static int is_uuid4(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!strchr("0123456789abcdef", s[i])) {
            return 0;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

/* ---- home ---- */

static void test_home(void)
{
    cmk_errbuf eb = {0};
    char out[CMK_PATH_MAX], cwd[PATH_MAX], t1[37], t2[37];
    const char *base = test_tmpdir("homes");
    char p[4200];

    /* Explicit, created with 0700, canonical absolute path. */
    snprintf(p, sizeof(p), "%s/a/b/", base);
    CHECK_E(cmk_home_resolve(p, 0, out, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, "does not exist") && HAS(eb.msg, "/a/b"));
    CHECK(!cmk_exists(p));
    CHECK_E(cmk_home_resolve(p, 1, out, &eb), CMK_OK);
    snprintf(p, sizeof(p), "%s/a/b", base);
    char real[PATH_MAX];
    CHECK(realpath(p, real) && strcmp(out, real) == 0);
    CHECK(mode_of("%s", out) == 0700);
    CHECK_E(cmk_home_resolve(p, 0, out, &eb), CMK_OK);

    /* Relative to the working directory. */
    REQUIRE(getcwd(cwd, sizeof(cwd)) != NULL);
    REQUIRE(chdir(base) == 0);
    CHECK_E(cmk_home_resolve("rel/h", 1, out, &eb), CMK_OK);
    snprintf(p, sizeof(p), "%s/rel/h", base);
    CHECK(realpath(p, real) && strcmp(out, real) == 0 && out[0] == '/');
    REQUIRE(chdir(cwd) == 0);

    /* $CMKSTORE_HOME, then $HOME/.cmkstore. */
    char *saved_ch = getenv("CMKSTORE_HOME") ? strdup(getenv("CMKSTORE_HOME")) : NULL;
    char *saved_h = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    snprintf(p, sizeof(p), "%s/envhome", base);
    setenv("CMKSTORE_HOME", p, 1);
    CHECK_E(cmk_home_resolve(NULL, 1, out, &eb), CMK_OK);
    CHECK(HAS(out, "/envhome"));
    CHECK_E(cmk_home_resolve("", 1, out, &eb), CMK_OK);
    CHECK(HAS(out, "/envhome"));
    unsetenv("CMKSTORE_HOME");
    setenv("HOME", base, 1);
    CHECK_E(cmk_home_resolve(NULL, 1, out, &eb), CMK_OK);
    CHECK(HAS(out, "/.cmkstore"));
    unsetenv("HOME");
    CHECK_E(cmk_home_resolve(NULL, 1, out, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "CMKSTORE_HOME"));
    if (saved_h)
        setenv("HOME", saved_h, 1);
    if (saved_ch)
        setenv("CMKSTORE_HOME", saved_ch, 1);
    free(saved_h);
    free(saved_ch);

    /* A file is not a home. */
    snprintf(p, sizeof(p), "%s/afile", base);
    REQUIRE(test_write_file(p, "x", 1) == 0);
    CHECK_E(cmk_home_resolve(p, 1, out, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "not a directory"));

    /* Tenant: made once, stable, 0600. */
    CHECK_E(cmk_home_tenant(home, t1, &eb), CMK_OK);
    CHECK(is_uuid4(t1));
    CHECK_E(cmk_home_tenant(home, t2, &eb), CMK_OK);
    CHECK(strcmp(t1, t2) == 0);
    CHECK(mode_of("%s/tenant", home) == 0600);
    /* A damaged tenant file is reported, not replaced. */
    snprintf(p, sizeof(p), "%s/badtenant", base);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/badtenant/tenant", base);
    REQUIRE(test_write_file(p, "garbage\n", 8) == 0);
    snprintf(p, sizeof(p), "%s/badtenant", base);
    CHECK_E(cmk_home_tenant(p, t2, &eb), CMK_E_CORRUPT);
}

static void test_names(void)
{
    cmk_errbuf eb = {0};
    char n63[64], n64[65];

    memset(n63, 'a', 63);
    n63[63] = '\0';
    memset(n64, 'a', 64);
    n64[64] = '\0';
    const char *good[] = {"a", "A-1", "my-vault", "0abc", n63};
    const char *bad[] = {"", "-a", "a b", "a_b", "a.b", "a/b", "..", "é", n64, "bad name!"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        CHECK_E(cmk_name_check(good[i], "vault", &eb), CMK_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK_E(cmk_name_check(bad[i], "vault", &eb), CMK_E_INVAL);
        CHECK(HAS(eb.msg, "vault name") && HAS(eb.msg, "1-63"));
    }
    CHECK_E(cmk_name_check(NULL, "key", &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "key name"));
    char huge[3000];
    memset(huge, 'x', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    CHECK_E(cmk_name_check(huge, "identity", &eb), CMK_E_INVAL);
    CHECK(strlen(eb.msg) < 300);
}

/* ---- identities ---- */

static void test_create_get(void)
{
    cmk_errbuf eb = {0};
    cmk_identity id, got, second;
    char tenant[37];

    CHECK_E(cmk_identity_create(home, "myid", &id, &eb), CMK_OK);
    CHECK(strcmp(id.type, "UserAssigned") == 0 && strcmp(id.name, "myid") == 0);
    CHECK(strcmp(id.id, "/cmkstore/userAssignedIdentities/myid") == 0);
    CHECK(is_uuid4(id.principal_id) && is_uuid4(id.client_id));
    CHECK(strcmp(id.principal_id, id.client_id) != 0);
    CHECK_E(cmk_home_tenant(home, tenant, &eb), CMK_OK);
    CHECK(strcmp(id.tenant_id, tenant) == 0);
    CHECK(id.store_id[0] == '\0' && cmk_parse_iso8601(id.created) != (time_t)-1);
    CHECK(mode_of("%s/identities", home) == 0700);
    CHECK(mode_of("%s/identities/myid.json", home) == 0600);

    CHECK_E(cmk_identity_create(home, "myid", &got, &eb), CMK_E_EXISTS);
    CHECK(HAS(eb.msg, "myid") && HAS(eb.msg, "exists"));
    CHECK_E(cmk_identity_create(home, "bad name!", &got, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "identity name"));
    CHECK_E(cmk_identity_create(home, "", &got, &eb), CMK_E_INVAL);
    CHECK_E(cmk_identity_create(home, NULL, &got, &eb), CMK_E_INVAL);
    CHECK_E(cmk_identity_create(home, "../evil", &got, &eb), CMK_E_INVAL);

    /* Every reference form finds it. */
    const char *refs[] = {"myid", id.id, id.principal_id, id.client_id};
    for (size_t i = 0; i < 4; i++) {
        memset(&got, 0, sizeof(got));
        CHECK_E(cmk_identity_get(home, refs[i], &got, &eb), CMK_OK);
        CHECK_MSG(memcmp(&got, &id, sizeof(id)) == 0, "lookup by %s", refs[i]);
    }
    char upper[37];
    for (int i = 0; i < 37; i++)
        upper[i] = (char)(id.principal_id[i] >= 'a' && id.principal_id[i] <= 'f'
                              ? id.principal_id[i] - 'a' + 'A'
                              : id.principal_id[i]);
    CHECK_E(cmk_identity_get(home, upper, &got, &eb), CMK_OK);
    CHECK(strcmp(got.name, "myid") == 0);
    CHECK_E(cmk_identity_get(home, "nosuchid", &got, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, "nosuchid") && HAS(eb.msg, "not found"));
    CHECK_E(cmk_identity_get(home, "00000000-0000-4000-8000-000000000000", &got, &eb),
            CMK_E_NOT_FOUND);
    CHECK_E(cmk_identity_get(home, "", &got, &eb), CMK_E_INVAL);
    CHECK_E(cmk_identity_get(home, NULL, &got, &eb), CMK_E_INVAL);

    /* By principal only. */
    CHECK_E(cmk_identity_get_by_principal(home, id.principal_id, &got, &eb), CMK_OK);
    CHECK(strcmp(got.name, "myid") == 0);
    CHECK_E(cmk_identity_get_by_principal(home, id.client_id, &got, &eb), CMK_E_NOT_FOUND);
    CHECK_E(cmk_identity_get_by_principal(home, "myid", &got, &eb), CMK_E_NOT_FOUND);
    CHECK(cmk_identity_principal_exists(home, id.principal_id));
    CHECK(!cmk_identity_principal_exists(home, id.client_id));
    CHECK(!cmk_identity_principal_exists(home, NULL));
    CHECK(!cmk_identity_principal_exists(home, ""));

    /* Every identity gets its own ids. */
    CHECK_E(cmk_identity_create(home, "second", &second, &eb), CMK_OK);
    CHECK(strcmp(second.principal_id, id.principal_id) != 0 &&
          strcmp(second.client_id, id.client_id) != 0);
    CHECK(strcmp(second.tenant_id, id.tenant_id) == 0);

    /* The JSON of `az identity create`. */
    json_t *j = cmk_identity_json(&id);
    REQUIRE(j);
    CHECK(strcmp(cmk_json_str(j, "clientId"), id.client_id) == 0);
    CHECK(strcmp(cmk_json_str(j, "principalId"), id.principal_id) == 0);
    CHECK(strcmp(cmk_json_str(j, "id"), id.id) == 0);
    CHECK(strcmp(cmk_json_str(j, "name"), "myid") == 0);
    CHECK(strcmp(cmk_json_str(j, "tenantId"), id.tenant_id) == 0);
    CHECK(strcmp(cmk_json_str(j, "type"), "cmkstore/userAssignedIdentities") == 0);
    CHECK(cmk_json_str(j, "created") != NULL);
    json_decref(j);
}

static void test_system(void)
{
    cmk_errbuf eb = {0};
    cmk_identity s1, s2, got;
    const char *store = "0b7c1e2d-3f40-4a5b-8c6d-7e8f90a1b2c3";

    CHECK_E(cmk_identity_get_system(home, store, &got, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, store));
    CHECK_E(cmk_identity_create_system(home, store, &s1, &eb), CMK_OK);
    CHECK(strcmp(s1.type, "SystemAssigned") == 0 && strcmp(s1.store_id, store) == 0);
    CHECK(strncmp(s1.name, "system-", 7) == 0 && strcmp(s1.name + 7, store) == 0);
    char want[200];
    snprintf(want, sizeof(want), "/cmkstore/stores/%s/systemAssignedIdentity", store);
    CHECK(strcmp(s1.id, want) == 0);
    CHECK(is_uuid4(s1.principal_id));
    CHECK(mode_of("%s/identities/system", home) == 0700);
    CHECK(mode_of("%s/identities/system/%s.json", home, store) == 0600);
    /* Idempotent. */
    CHECK_E(cmk_identity_create_system(home, store, &s2, &eb), CMK_OK);
    CHECK(memcmp(&s1, &s2, sizeof(s1)) == 0);
    CHECK_E(cmk_identity_get_system(home, store, &got, &eb), CMK_OK);
    CHECK(memcmp(&s1, &got, sizeof(s1)) == 0);
    /* Found by principal, client id, resource id and name; not listed with the users. */
    CHECK_E(cmk_identity_get(home, s1.principal_id, &got, &eb), CMK_OK);
    CHECK(strcmp(got.type, "SystemAssigned") == 0);
    CHECK_E(cmk_identity_get(home, s1.client_id, &got, &eb), CMK_OK);
    CHECK_E(cmk_identity_get(home, s1.id, &got, &eb), CMK_OK);
    CHECK_E(cmk_identity_get(home, s1.name, &got, &eb), CMK_OK);
    CHECK(cmk_identity_principal_exists(home, s1.principal_id));
    json_t *j = cmk_identity_json(&s1);
    CHECK(strcmp(cmk_json_str(j, "type"), "SystemAssigned") == 0);
    CHECK(strcmp(cmk_json_str(j, "storeId"), store) == 0);
    json_decref(j);
    CHECK_E(cmk_identity_list(home, &j, &eb), CMK_OK);
    for (size_t i = 0; i < json_array_size(j); i++)
        CHECK(strcmp(cmk_json_str(json_array_get(j, i), "principalId"), s1.principal_id) != 0);
    json_decref(j);
    /* Only with its store. */
    CHECK_E(cmk_identity_delete(home, s1.principal_id, &eb), CMK_E_REFUSED);
    CHECK(HAS(eb.msg, store));
    CHECK_E(cmk_identity_delete_system(home, store, &eb), CMK_OK);
    CHECK_E(cmk_identity_delete_system(home, store, &eb), CMK_E_NOT_FOUND);
    CHECK(!cmk_identity_principal_exists(home, s1.principal_id));
    CHECK_E(cmk_identity_create_system(home, "bad id", &s2, &eb), CMK_E_INVAL);
    CHECK_E(cmk_identity_create_system(home, "../x", &s2, &eb), CMK_E_INVAL);
}

static void test_delete_list(void)
{
    cmk_errbuf eb = {0};
    cmk_identity a, b, got;
    json_t *j = NULL;

    CHECK_E(cmk_identity_create(home, "zeta", &a, &eb), CMK_OK);
    CHECK_E(cmk_identity_create(home, "alpha", &b, &eb), CMK_OK);
    CHECK_E(cmk_identity_list(home, &j, &eb), CMK_OK);
    REQUIRE(json_is_array(j));
    int sorted = 1, seen = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        const char *n = cmk_json_str(json_array_get(j, i), "name");
        seen += strcmp(n, "zeta") == 0 || strcmp(n, "alpha") == 0;
        if (i && strcmp(cmk_json_str(json_array_get(j, i - 1), "name"), n) >= 0)
            sorted = 0;
        CHECK(strcmp(cmk_json_str(json_array_get(j, i), "type"),
                     "cmkstore/userAssignedIdentities") == 0);
    }
    CHECK(seen == 2 && sorted);
    json_decref(j);

    /* Delete by principal id; by client id; by resource id. */
    CHECK_E(cmk_identity_delete(home, a.principal_id, &eb), CMK_OK);
    CHECK_E(cmk_identity_get(home, "zeta", &got, &eb), CMK_E_NOT_FOUND);
    CHECK(!cmk_identity_principal_exists(home, a.principal_id));
    CHECK_E(cmk_identity_delete(home, "zeta", &eb), CMK_E_NOT_FOUND);
    CHECK_E(cmk_identity_delete(home, b.client_id, &eb), CMK_OK);
    CHECK_E(cmk_identity_create(home, "alpha", &got, &eb), CMK_OK);
    CHECK(strcmp(got.principal_id, b.principal_id) != 0); /* a new principal */
    CHECK_E(cmk_identity_delete(home, got.id, &eb), CMK_OK);

    /* An empty home lists nothing. */
    CHECK_E(cmk_identity_list(test_tmpdir("emptyid"), &j, &eb), CMK_OK);
    CHECK(json_is_array(j) && json_array_size(j) == 0);
    json_decref(j);
}

static void test_damaged(void)
{
    cmk_errbuf eb = {0};
    cmk_identity id, got, fine;
    char p[4200];

    CHECK_E(cmk_identity_create(home, "dmg", &id, &eb), CMK_OK);
    CHECK_E(cmk_identity_create(home, "fine", &fine, &eb), CMK_OK);
    snprintf(p, sizeof(p), "%s/identities/dmg.json", home);
    REQUIRE(test_write_file(p, "{\"name\": \"dmg\"}", 15) == 0);
    CHECK_E(cmk_identity_get(home, "dmg", &got, &eb), CMK_E_CORRUPT);
    CHECK(HAS(eb.msg, "dmg.json") && HAS(eb.msg, "damaged"));
    REQUIRE(test_write_file(p, "not json", 8) == 0);
    CHECK_E(cmk_identity_get(home, "dmg", &got, &eb), CMK_E_CORRUPT);
    /* One damaged file does not hide the others from scans. */
    CHECK_E(cmk_identity_get(home, fine.principal_id, &got, &eb), CMK_OK);
    CHECK(strcmp(got.name, "fine") == 0);
    /* The reference may live in the output. */
    CHECK_E(cmk_identity_get(home, got.client_id, &got, &eb), CMK_OK);
    CHECK(strcmp(got.name, "fine") == 0);
    CHECK(!cmk_identity_principal_exists(home, id.principal_id));
    /* Leftovers of interrupted writes are ignored. */
    snprintf(p, sizeof(p), "%s/identities/x.json.new-0011223344556677", home);
    REQUIRE(test_write_file(p, "{}", 2) == 0);
    json_t *j = NULL;
    CHECK_E(cmk_identity_list(home, &j, &eb), CMK_OK);
    for (size_t i = 0; i < json_array_size(j); i++)
        CHECK(strcmp(cmk_json_str(json_array_get(j, i), "name"), "dmg") != 0);
    json_decref(j);
}

/* ---- concurrency ---- */

static int ok_count, exists_count;
static cmk_identity winners[8];

static void *creator(void *arg)
{
    cmk_errbuf eb = {0};
    int i = (int)(intptr_t)arg;
    cmk_err rc = cmk_identity_create(home, "racer", &winners[i], &eb);
    if (rc == CMK_OK)
        __atomic_add_fetch(&ok_count, 1, __ATOMIC_RELAXED);
    else if (rc == CMK_E_EXISTS)
        __atomic_add_fetch(&exists_count, 1, __ATOMIC_RELAXED);
    else
        fprintf(stderr, "creator: %s\n", eb.msg);
    return NULL;
}

static cmk_identity sys_out[8];

static void *sys_creator(void *arg)
{
    cmk_errbuf eb = {0};
    int i = (int)(intptr_t)arg;
    if (cmk_identity_create_system(home, "1a2b3c4d-0000-4000-8000-000000000000", &sys_out[i],
                                   &eb) != CMK_OK)
        fprintf(stderr, "sys creator: %s\n", eb.msg);
    return NULL;
}

static void test_concurrent(void)
{
    pthread_t t[8];
    cmk_errbuf eb = {0};
    cmk_identity got;

    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, creator, (void *)(intptr_t)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK(ok_count == 1 && exists_count == 7);
    CHECK_E(cmk_identity_get(home, "racer", &got, &eb), CMK_OK);
    int match = 0;
    for (int i = 0; i < 8; i++)
        match += strcmp(winners[i].principal_id, got.principal_id) == 0;
    CHECK(match == 1); /* the winner's identity is the one on disk */

    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, sys_creator, (void *)(intptr_t)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    for (int i = 1; i < 8; i++)
        CHECK(strcmp(sys_out[i].principal_id, sys_out[0].principal_id) == 0 &&
              is_uuid4(sys_out[0].principal_id));
}

int main(void)
{
    snprintf(home, sizeof(home), "%s", test_tmpdir("idhome"));
    test_home();
    test_names();
    test_create_get();
    test_system();
    test_delete_list();
    test_damaged();
    test_concurrent();
    return check_summary();
}
