/* test_vault_access.c — a principal's key use for another party (cmk_vault_access_*,
 * kek/vault/provider.c), compared with the local KEK provider a store uses: for the same
 * principal and key, get / wrap / unwrap succeed or fail with the same error in every state
 * (no policy, a permission missing, an unknown principal, key or version disabled, key or
 * vault soft-deleted, no such key or version), list needs "list", a deleted key is found by
 * access_deleted and a live one is not, wraps interoperate with the provider's, and every
 * call leaves one audit record under the principal. */
#include <string.h>

#include "tests/check.h"
#include "kek/kek.h"
#include "kek/vault/vault.h"

#define CHECK_E(expr, want)                                                                        \
    do {                                                                                           \
        cmk_err e_ = (expr);                                                                       \
        CHECK_MSG(e_ == (want), "%s -> %s (want %s): %s", #expr, cmk_errname(e_),                  \
                  cmk_errname(want), eb.msg);                                                      \
    } while (0)

static const char *home;
static cmk_errbuf eb;

static size_t audit_count(const char *vault, const char *principal, const char *op)
{
    json_t *a = NULL, *r;
    size_t i, n = 0;

    if (cmk_vault_audit(home, vault, &a, &eb) != CMK_OK)
        return 0;
    json_array_foreach(a, i, r)
    {
        const char *id = json_string_value(json_object_get(r, "identity"));
        const char *o = json_string_value(json_object_get(r, "operation"));
        n += id && o && strcmp(id, principal) == 0 && strcmp(o, op) == 0;
    }
    json_decref(a);
    return n;
}

/* get through the access handle and describe through the provider agree on kid. */
static void same_get(cmk_vault_access *acc, cmk_kek_provider *p, const char *kid,
                     const char *principal, cmk_err want, const char *what)
{
    cmk_key_desc d;
    json_t *j = NULL;
    cmk_err a = cmk_vault_access_get(acc, kid, principal, &j, &eb);
    cmk_err b = p->describe(p->self, kid, principal, &d, NULL);

    CHECK_MSG(a == want && b == want, "%s: access %s, provider %s, want %s (%s)", what,
              cmk_errname(a), cmk_errname(b), cmk_errname(want), eb.msg);
    CHECK(a != CMK_OK || (j && json_is_object(json_object_get(j, "key"))));
    CHECK(a == CMK_OK || j == NULL);
    json_decref(j);
}

int main(void)
{
    const char *all[] = {"get", "list", "wrapKey", "unwrapKey"};
    const char *nolist[] = {"get", "wrapKey", "unwrapKey"};
    cmk_identity id, other;
    cmk_vault_access *acc = NULL;
    cmk_kek_provider *p = NULL;
    json_t *k = NULL, *j = NULL;
    char kid[CMK_ID_MAX], vkid[CMK_ID_MAX], ver[40];
    unsigned char dek[32], w[CMK_WRAPPED_MAX], out[64];
    size_t wl = 0, ol;

    home = test_tmpdir("vault_access");
    memset(dek, 0x5a, sizeof(dek));
    CHECK_E(cmk_identity_create(home, "app", &id, &eb), CMK_OK);
    CHECK_E(cmk_identity_create(home, "other", &other, &eb), CMK_OK);
    CHECK_E(cmk_vault_create(home, "v", NULL, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_set_policy(home, "v", id.principal_id, all, 4, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_set_policy(home, "v", other.principal_id, nolist, 3, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_create(home, "v", "k", NULL, 2048, &k, &eb), CMK_OK);
    snprintf(vkid, sizeof(vkid), "%s",
             json_string_value(json_object_get(json_object_get(k, "key"), "kid")));
    snprintf(ver, sizeof(ver), "%s", strrchr(vkid, '/') + 1);
    json_decref(k);
    snprintf(kid, sizeof(kid), "local://v/keys/k");
    CHECK_E(cmk_vault_access_open(home, &acc, &eb), CMK_OK);
    CHECK_E(cmk_vault_provider_new(home, &p, &eb), CMK_OK);
    if (!acc || !p)
        return check_summary();

    same_get(acc, p, kid, id.principal_id, CMK_OK, "versionless");
    same_get(acc, p, vkid, id.principal_id, CMK_OK, "versioned");
    same_get(acc, p, "local://v/keys/k/0123456789abcdef0123456789abcdef", id.principal_id,
             CMK_E_KEY_NOT_FOUND, "no such version");
    same_get(acc, p, "local://v/keys/nokey", id.principal_id, CMK_E_KEY_NOT_FOUND, "no key");
    same_get(acc, p, "local://novault/keys/k", id.principal_id, CMK_E_KEY_NOT_FOUND, "no vault");
    same_get(acc, p, kid, "00000000-0000-4000-8000-000000000000", CMK_E_KEY_DENIED,
             "unknown principal");

    /* list: "list" needed. */
    CHECK_E(cmk_vault_access_versions(acc, kid, id.principal_id, &j, &eb), CMK_OK);
    CHECK(json_array_size(j) == 1);
    json_decref(j);
    j = NULL;
    CHECK_E(cmk_vault_access_versions(acc, kid, other.principal_id, &j, &eb), CMK_E_KEY_DENIED);
    CHECK(j == NULL);
    CHECK(audit_count("v", other.principal_id, "listVersions") == 1);

    /* Wraps interoperate with the provider's, both ways, and are audited. */
    CHECK_E(cmk_vault_access_wrap(acc, vkid, id.principal_id, CMK_WRAP_RSA_OAEP_256, dek, 32, w,
                                  &wl, &eb),
            CMK_OK);
    ol = sizeof(out);
    CHECK_E(p->unwrap(p->self, vkid, id.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, out, &ol, &eb),
            CMK_OK);
    CHECK(ol == 32 && memcmp(out, dek, 32) == 0);
    CHECK_E(p->wrap(p->self, vkid, id.principal_id, CMK_WRAP_RSA_OAEP, dek, 32, w, &wl, &eb),
            CMK_OK);
    ol = sizeof(out);
    CHECK_E(cmk_vault_access_unwrap(acc, vkid, id.principal_id, CMK_WRAP_RSA_OAEP, w, wl, out, &ol,
                                    &eb),
            CMK_OK);
    CHECK(ol == 32 && memcmp(out, dek, 32) == 0);
    ol = sizeof(out);
    CHECK_E(cmk_vault_access_unwrap(acc, vkid, id.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, out,
                                    &ol, &eb),
            CMK_E_INTEGRITY);
    CHECK(ol == 0);
    CHECK_E(cmk_vault_access_wrap(acc, kid, id.principal_id, CMK_WRAP_RSA_OAEP_256, dek, 32, w, &wl,
                                  &eb),
            CMK_E_INVAL); /* a versionless identifier cannot wrap */
    CHECK(audit_count("v", id.principal_id, "unwrapKey") == 3);

    /* A permission removed: wrap denied for both. */
    {
        const char *getonly[] = {"get"};
        cmk_err a, b;
        CHECK_E(cmk_vault_set_policy(home, "v", id.principal_id, getonly, 1, NULL, &eb), CMK_OK);
        a = cmk_vault_access_wrap(acc, vkid, id.principal_id, CMK_WRAP_RSA_OAEP_256, dek, 32, w,
                                  &wl, &eb);
        b = p->wrap(p->self, vkid, id.principal_id, CMK_WRAP_RSA_OAEP_256, dek, 32, w, &wl, NULL);
        CHECK(a == CMK_E_KEY_DENIED && b == CMK_E_KEY_DENIED);
        CHECK_E(cmk_vault_set_policy(home, "v", id.principal_id, all, 4, NULL, &eb), CMK_OK);
    }
    /* Disabled version, disabled key. */
    CHECK_E(cmk_vault_key_set_enabled(home, "v", "k", ver, 0, NULL, &eb), CMK_OK);
    same_get(acc, p, vkid, id.principal_id, CMK_E_KEY_DISABLED, "version disabled");
    CHECK_E(cmk_vault_key_set_enabled(home, "v", "k", ver, 1, NULL, &eb), CMK_OK);
    same_get(acc, p, vkid, id.principal_id, CMK_OK, "version enabled again");
    CHECK_E(cmk_vault_key_set_enabled(home, "v", "k", NULL, 0, NULL, &eb), CMK_OK);
    same_get(acc, p, kid, id.principal_id, CMK_E_KEY_DISABLED, "key disabled");
    CHECK_E(cmk_vault_access_versions(acc, kid, id.principal_id, &j, &eb), CMK_OK);
    json_decref(j); /* disabled versions are listed */
    j = NULL;
    CHECK_E(cmk_vault_key_set_enabled(home, "v", "k", NULL, 1, NULL, &eb), CMK_OK);

    /* Soft-deleted key: refused as deleted; access_deleted finds it. */
    CHECK_E(cmk_vault_access_deleted(acc, kid, id.principal_id, &j, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_vault_key_delete(home, "v", "k", NULL, &eb), CMK_OK);
    same_get(acc, p, kid, id.principal_id, CMK_E_KEY_DELETED, "key deleted");
    CHECK_E(cmk_vault_access_deleted(acc, kid, id.principal_id, &j, &eb), CMK_OK);
    CHECK(j && json_is_string(json_object_get(j, "scheduledPurgeDate")));
    json_decref(j);
    j = NULL;
    CHECK_E(cmk_vault_access_deleted(acc, kid, "00000000-0000-4000-8000-000000000000", &j, &eb),
            CMK_E_KEY_DENIED);
    CHECK_E(cmk_vault_key_recover(home, "v", "k", NULL, &eb), CMK_OK);
    /* Soft-deleted vault. */
    CHECK_E(cmk_vault_delete(home, "v", &eb), CMK_OK);
    same_get(acc, p, kid, id.principal_id, CMK_E_KEY_DELETED, "vault deleted");
    CHECK_E(cmk_vault_access_deleted(acc, kid, id.principal_id, &j, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_recover(home, "v", NULL, &eb), CMK_OK);
    same_get(acc, p, kid, id.principal_id, CMK_OK, "recovered");
    CHECK(audit_count("v", id.principal_id, "getDeleted") >= 2);

    CHECK_E(cmk_vault_access_get(NULL, kid, id.principal_id, &j, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_access_open(home, NULL, &eb), CMK_E_INVAL);
    cmk_vault_access_close(acc);
    cmk_vault_access_close(NULL);
    cmk_kek_provider_free(p);
    return check_summary();
}
