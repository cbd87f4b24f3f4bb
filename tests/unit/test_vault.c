/* test_vault.c — the local key vault against real RSA/EC keys on disk: key identifiers,
 * vaults, access policies, keys and versions, wrap/unwrap round trips for every size and both
 * OAEP variants, enable/disable, soft delete / recover / purge with and without purge
 * protection, the audit log, file modes, concurrency, and that no error message or audit
 * record ever carries key material. */
#define _GNU_SOURCE
#include <dirent.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check.h"
#include "core/base/fsutil.h"
#include "kek/identity/home.h"
#include "kek/identity/identity.h"
#include "core/base/jsonfile.h"
#include "kek/kek.h"
#include "kek/vault/vault.h"

static char home[4096];
static cmk_kek_provider *prov;
static cmk_identity ident; /* granted get, wrapKey, unwrapKey in every vault */
static const char *perms3[] = {"get", "wrapKey", "unwrapKey"};
static const cmk_vault_opts protect7 = {.purge_protection = 1, .retention_days = 7};
static const cmk_vault_opts plain7 = {.purge_protection = 0, .retention_days = 7};

/* Every message the vault produced, for the key-material check at the end. */
static char *msgs;
static size_t msgs_len;
static pthread_mutex_t msgs_mu = PTHREAD_MUTEX_INITIALIZER;

static void keep(const cmk_errbuf *eb)
{
    size_t n = strlen(eb->msg);
    if (!n)
        return;
    pthread_mutex_lock(&msgs_mu);
    char *p = realloc(msgs, msgs_len + n + 2);
    if (p) {
        msgs = p;
        memcpy(msgs + msgs_len, eb->msg, n);
        msgs_len += n;
        msgs[msgs_len++] = '\n';
        msgs[msgs_len] = '\0';
    }
    pthread_mutex_unlock(&msgs_mu);
}

/* Expects an error code from an internal call (which fills `eb` in the caller's scope). */
#define CHECK_E(expr, want)                                                                        \
    do {                                                                                           \
        cmk_errbuf_clear(&eb);                                                                     \
        cmk_err r_ = (expr);                                                                       \
        keep(&eb);                                                                                 \
        CHECK_MSG(r_ == (want), "%s -> %s (want %s): %s", #expr, cmk_errname(r_),                  \
                  cmk_errname(want), eb.msg);                                                      \
    } while (0)

#define HAS(s, sub) (strstr((s), (sub)) != NULL)

static const char *jstr(const json_t *j, const char *path1, const char *path2)
{
    const json_t *o = path2 ? json_object_get(j, path1) : j;
    return cmk_json_str(o, path2 ? path2 : path1);
}

static unsigned mode_of(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static unsigned mode_of(const char *fmt, ...)
{
    char p[4200];
    struct stat st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof(p), fmt, ap);
    va_end(ap);
    if (stat(p, &st) != 0)
        return 0;
    return (unsigned)(st.st_mode & 0777);
}

/* Creates a key (or version) and returns its versioned kid (static per call site: copy). */
static char *new_key(const char *vault, const char *name, const char *kty, unsigned size)
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    char *kid = NULL;
    CHECK_E(cmk_vault_key_create(home, vault, name, kty, size, &j, &eb), CMK_OK);
    if (j)
        kid = strdup(jstr(j, "key", "kid"));
    json_decref(j);
    return kid;
}

static cmk_err describe(const char *kid, const char *principal, cmk_key_desc *d, cmk_errbuf *eb)
{
    cmk_err rc = prov->describe(prov->self, kid, principal, d, eb);
    keep(eb);
    return rc;
}

/* Wraps 32 random bytes and unwraps them again; CMK_OK only if they come back. */
static cmk_err round_trip(const char *vkid, const char *principal, cmk_wrap_alg alg, cmk_errbuf *eb)
{
    unsigned char dek[32], wrapped[CMK_WRAPPED_MAX], back[64];
    size_t wl = 0, bl = sizeof(back);
    cmk_err rc;

    test_fill_random(dek, sizeof(dek), (uint64_t)rand());
    rc = prov->wrap(prov->self, vkid, principal, alg, dek, sizeof(dek), wrapped, &wl, eb);
    keep(eb);
    if (rc != CMK_OK)
        return rc;
    rc = prov->unwrap(prov->self, vkid, principal, alg, wrapped, wl, back, &bl, eb);
    keep(eb);
    if (rc != CMK_OK)
        return rc;
    if (bl != sizeof(dek) || memcmp(dek, back, bl) != 0)
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY, "round trip returned other bytes");
    return CMK_OK;
}

static cmk_err wrap_only(const char *vkid, const char *principal, cmk_wrap_alg alg,
                         unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    unsigned char dek[32];
    memset(dek, 0x5a, sizeof(dek));
    cmk_err rc = prov->wrap(prov->self, vkid, principal, alg, dek, sizeof(dek), out, outlen, eb);
    keep(eb);
    return rc;
}

static cmk_err unwrap_only(const char *vkid, const char *principal, cmk_wrap_alg alg,
                           const unsigned char *w, size_t wl, cmk_errbuf *eb)
{
    unsigned char back[64];
    size_t bl = sizeof(back);
    cmk_err rc = prov->unwrap(prov->self, vkid, principal, alg, w, wl, back, &bl, eb);
    keep(eb);
    return rc;
}

static void versionless_of(const char *vkid, char *out, size_t cap)
{
    snprintf(out, cap, "%s", vkid);
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
}

static void set_perms(const char *vault, const char *principal, const char **perms, size_t n)
{
    cmk_errbuf eb = {0};
    CHECK_E(cmk_vault_set_policy(home, vault, principal, perms, n, NULL, &eb), CMK_OK);
}

static void make_vault(const char *name, const cmk_vault_opts *o)
{
    cmk_errbuf eb = {0};
    CHECK_E(cmk_vault_create(home, name, o, NULL, &eb), CMK_OK);
    set_perms(name, ident.principal_id, perms3, 3);
}

/* ---- key identifiers ---- */

static void test_kid_parse(void)
{
    const char *v = "0123456789abcdef0123456789abcdef";
    char buf[300];
    cmk_vault_kid k;
    cmk_errbuf eb = {0};

    CHECK_E(cmk_vault_kid_parse("local://kv/keys/k1", &k, &eb), CMK_OK);
    CHECK(strcmp(k.vault, "kv") == 0 && strcmp(k.key, "k1") == 0 && k.version[0] == '\0');
    CHECK_E(cmk_vault_kid_parse("local://kv/keys/k1/", &k, &eb), CMK_OK);
    CHECK(strcmp(k.key, "k1") == 0 && k.version[0] == '\0');
    snprintf(buf, sizeof(buf), "local://kv/keys/k1/%s", v);
    CHECK_E(cmk_vault_kid_parse(buf, &k, &eb), CMK_OK);
    CHECK(strcmp(k.version, v) == 0);
    snprintf(buf, sizeof(buf), "LOCAL://kv/keys/k1/0123456789ABCDEF0123456789ABCDEF/");
    CHECK_E(cmk_vault_kid_parse(buf, &k, &eb), CMK_OK);
    CHECK(strcmp(k.version, v) == 0);

    const char *bad[] = {
        "",
        "local://",
        "local://kv",
        "local://kv/keys",
        "local://kv/keys/",
        "local://kv/key/k1",
        "local://kv/keys/k1/not-a-version",
        "local://kv/keys/k1/0123456789abcdef0123456789abcde",
        "local://kv/keys/k1/0123456789abcdef0123456789abcdef0",
        "local://kv/keys/k1/0123456789abcdef0123456789abcdef/x",
        "local://kv/keys/k1//",
        "local://-kv/keys/k1",
        "local://kv/keys/bad_name",
        "local://kv/keys/../k1",
        "https://kv.vault.azure.net/keys/k1",
        "kv/keys/k1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK_E(cmk_vault_kid_parse(bad[i], &k, &eb), CMK_E_INVAL);
        CHECK_MSG(HAS(eb.msg, "local://"), "'%s': message shows the expected form: %s", bad[i],
                  eb.msg);
    }
    CHECK_E(cmk_vault_kid_parse(NULL, &k, &eb), CMK_E_INVAL);
    char longkid[600];
    memset(longkid, 'a', sizeof(longkid) - 1);
    longkid[sizeof(longkid) - 1] = '\0';
    memcpy(longkid, "local://", 8);
    CHECK_E(cmk_vault_kid_parse(longkid, &k, &eb), CMK_E_INVAL);
    CHECK(strlen(eb.msg) < sizeof(eb.msg) - 1 || HAS(eb.msg, "local://"));

    CHECK_E(cmk_vault_kid_format(buf, sizeof(buf), "kv", "k1", NULL, &eb), CMK_OK);
    CHECK(strcmp(buf, "local://kv/keys/k1") == 0);
    CHECK_E(cmk_vault_kid_format(buf, sizeof(buf), "kv", "k1", "", &eb), CMK_OK);
    CHECK(strcmp(buf, "local://kv/keys/k1") == 0);
    CHECK_E(cmk_vault_kid_format(buf, sizeof(buf), "kv", "k1", v, &eb), CMK_OK);
    CHECK(strcmp(buf, "local://kv/keys/k1/0123456789abcdef0123456789abcdef") == 0);
    CHECK_E(cmk_vault_kid_format(buf, 10, "kv", "k1", v, &eb), CMK_E_INVAL);

    CHECK(prov->handles(prov->self, "local://kv/keys/k1"));
    CHECK(prov->handles(prov->self, "LOCAL://kv/keys/k1"));
    CHECK(!prov->handles(prov->self, "pkcs11:token=a;object=b"));
    CHECK(!prov->handles(prov->self, "test://vault/keys/k"));
}

/* ---- vaults ---- */

static void test_vault_mgmt(void)
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    char tenant[37];

    CHECK_E(cmk_vault_create(home, "mv", &protect7, &j, &eb), CMK_OK);
    REQUIRE(j);
    CHECK(strcmp(jstr(j, "name", NULL), "mv") == 0);
    CHECK(strcmp(jstr(j, "id", NULL), "/cmkstore/vaults/mv") == 0);
    json_t *props = json_object_get(j, "properties");
    CHECK(strcmp(cmk_json_str(props, "vaultUri"), "local://mv/") == 0);
    CHECK(json_is_true(json_object_get(props, "enablePurgeProtection")));
    CHECK(json_is_true(json_object_get(props, "enableSoftDelete")));
    CHECK(cmk_json_int(props, "softDeleteRetentionInDays", 0) == 7);
    CHECK(json_is_array(json_object_get(props, "accessPolicies")) &&
          json_array_size(json_object_get(props, "accessPolicies")) == 0);
    CHECK_E(cmk_home_tenant(home, tenant, &eb), CMK_OK);
    CHECK(strcmp(cmk_json_str(props, "tenantId"), tenant) == 0);
    json_decref(j);
    j = NULL;

    /* Defaults: 90 days, no purge protection. */
    CHECK_E(cmk_vault_create(home, "mv2", NULL, &j, &eb), CMK_OK);
    props = json_object_get(j, "properties");
    CHECK(cmk_json_int(props, "softDeleteRetentionInDays", 0) == 90);
    CHECK(json_is_false(json_object_get(props, "enablePurgeProtection")));
    json_decref(j);
    j = NULL;

    CHECK_E(cmk_vault_create(home, "mv", &protect7, &j, &eb), CMK_E_EXISTS);
    CHECK(j == NULL && HAS(eb.msg, "mv") && HAS(eb.msg, "exists"));
    cmk_vault_opts bad = {.retention_days = 3};
    CHECK_E(cmk_vault_create(home, "r3", &bad, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "retention"));
    bad.retention_days = 91;
    CHECK_E(cmk_vault_create(home, "r91", &bad, NULL, &eb), CMK_E_INVAL);
    CHECK(!cmk_exists(strcat(strcpy((char[4200]){0}, home), "/vaults/r91")));
    CHECK_E(cmk_vault_create(home, "bad name", NULL, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "vault name"));
    CHECK_E(cmk_vault_create(home, "-x", NULL, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_create(home, "../x", NULL, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_create(home, NULL, NULL, NULL, &eb), CMK_E_INVAL);

    CHECK_E(cmk_vault_show(home, "mv", &j, &eb), CMK_OK);
    CHECK(j && strcmp(jstr(j, "name", NULL), "mv") == 0);
    json_decref(j);
    j = NULL;
    CHECK_E(cmk_vault_show(home, "nosuch", &j, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, "nosuch") && HAS(eb.msg, "not found"));
    CHECK(!cmk_exists(strcat(strcpy((char[4200]){0}, home), "/vaults/nosuch")));
    CHECK_E(cmk_vault_show(home, "mv", NULL, &eb), CMK_OK);

    CHECK_E(cmk_vault_list(home, &j, &eb), CMK_OK);
    CHECK(json_array_size(j) >= 2);
    int found = 0, sorted = 1;
    for (size_t i = 0; i < json_array_size(j); i++) {
        const char *n = jstr(json_array_get(j, i), "name", NULL);
        found += strcmp(n, "mv") == 0 || strcmp(n, "mv2") == 0;
        if (i && strcmp(jstr(json_array_get(j, i - 1), "name", NULL), n) >= 0)
            sorted = 0;
    }
    CHECK(found == 2 && sorted);
    json_decref(j);
    j = NULL;
    /* An empty home lists nothing. */
    CHECK_E(cmk_vault_list(test_tmpdir("emptyhome"), &j, &eb), CMK_OK);
    CHECK(json_is_array(j) && json_array_size(j) == 0);
    json_decref(j);

    /* Modes: directories 0700, files 0600. */
    CHECK(mode_of("%s/vaults%s", home, "") == 0700);
    CHECK(mode_of("%s/vaults/%s", home, "mv") == 0700);
    CHECK(mode_of("%s/vaults/%s/keys", home, "mv") == 0700);
    CHECK(mode_of("%s/vaults/%s/vault.json", home, "mv") == 0600);
    CHECK(mode_of("%s/vaults/%s/lock", home, "mv") == 0600);
    CHECK(mode_of("%s/vaults/%s/audit.log", home, "mv") == 0600);
    CHECK(mode_of("%s/tenant%s", home, "") == 0600);
    /* No staging leftovers. */
    char vd[4200];
    snprintf(vd, sizeof(vd), "%s/vaults", home);
    DIR *d = opendir(vd);
    int dots = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        dots += de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (d)
        closedir(d);
    CHECK(dots == 0);
}

static void test_policies(void)
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    const char *all[] = {"all"};
    const char *mixed[] = {"WRAPKEY", "get", "get", "unwrapkey"};
    const char *bogus[] = {"get", "bogus"};
    const char *nullp[] = {NULL};
    char upper[37];

    CHECK_E(cmk_vault_create(home, "pv", &protect7, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_set_policy(home, "pv", "not-a-uuid", perms3, 3, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "principalId"));
    CHECK_E(cmk_vault_set_policy(home, "pv", NULL, perms3, 3, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_set_policy(home, "pv", ident.principal_id, bogus, 2, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "bogus") && HAS(eb.msg, "wrapKey") && HAS(eb.msg, "all"));
    CHECK_E(cmk_vault_set_policy(home, "pv", ident.principal_id, perms3, 0, NULL, &eb),
            CMK_E_INVAL);
    CHECK_E(cmk_vault_set_policy(home, "pv", ident.principal_id, nullp, 1, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_set_policy(home, "nosuch", ident.principal_id, perms3, 3, NULL, &eb),
            CMK_E_NOT_FOUND);

    CHECK_E(cmk_vault_set_policy(home, "pv", ident.principal_id, all, 1, &j, &eb), CMK_OK);
    json_t *pols = json_object_get(json_object_get(j, "properties"), "accessPolicies");
    CHECK(json_array_size(pols) == 1);
    json_t *p0 = json_array_get(pols, 0);
    CHECK(strcmp(cmk_json_str(p0, "objectId"), ident.principal_id) == 0);
    CHECK(strcmp(cmk_json_str(p0, "tenantId"), ident.tenant_id) == 0);
    CHECK(json_array_size(json_object_get(json_object_get(p0, "permissions"), "keys")) == 17);
    json_decref(j);
    j = NULL;

    /* Replaces, canonicalises names, drops duplicates; object ids compare case-blind. */
    for (int i = 0; i < 37; i++)
        upper[i] = (char)(ident.principal_id[i] >= 'a' && ident.principal_id[i] <= 'f'
                              ? ident.principal_id[i] - 'a' + 'A'
                              : ident.principal_id[i]);
    CHECK_E(cmk_vault_set_policy(home, "pv", upper, mixed, 4, &j, &eb), CMK_OK);
    pols = json_object_get(json_object_get(j, "properties"), "accessPolicies");
    CHECK(json_array_size(pols) == 1);
    json_t *keys = json_object_get(json_object_get(json_array_get(pols, 0), "permissions"), "keys");
    CHECK(json_array_size(keys) == 3);
    char joined[256] = "";
    for (size_t i = 0; i < json_array_size(keys); i++) {
        strcat(joined, json_string_value(json_array_get(keys, i)));
        strcat(joined, " ");
    }
    CHECK_MSG(strcmp(joined, "get unwrapKey wrapKey ") == 0, "keys: %s", joined);
    json_decref(j);
    j = NULL;

    CHECK_E(cmk_vault_delete_policy(home, "pv", ident.principal_id, &j, &eb), CMK_OK);
    CHECK(json_array_size(json_object_get(json_object_get(j, "properties"), "accessPolicies")) ==
          0);
    json_decref(j);
    CHECK_E(cmk_vault_delete_policy(home, "pv", ident.principal_id, NULL, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, ident.principal_id));
    CHECK_E(cmk_vault_delete_policy(home, "pv", "x", NULL, &eb), CMK_E_INVAL);
}

/* ---- RSA keys ---- */

/* base64url of the modulus of the private key in pem_path, for comparison with the JWK. */
static char *pem_modulus_b64(const char *pem_path, int *is_pkcs8)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t len = 0;
    unsigned char *text = test_read_file(pem_path, &len);
    char *out = NULL;
    if (!text)
        return NULL;
    *is_pkcs8 = strncmp((char *)text, "-----BEGIN PRIVATE KEY-----", 27) == 0;
    BIO *b = BIO_new_mem_buf(text, (int)len);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIGNUM *n = NULL;
    if (k && EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n) == 1) {
        int nb = BN_num_bytes(n);
        unsigned char *buf = malloc((size_t)nb);
        BN_bn2bin(n, buf);
        out = malloc((size_t)nb * 2 + 4);
        size_t o = 0;
        int i = 0;
        for (; i + 2 < nb; i += 3) {
            unsigned v = (unsigned)buf[i] << 16 | (unsigned)buf[i + 1] << 8 | buf[i + 2];
            out[o++] = a[v >> 18 & 63];
            out[o++] = a[v >> 12 & 63];
            out[o++] = a[v >> 6 & 63];
            out[o++] = a[v & 63];
        }
        if (nb - i == 1) {
            out[o++] = a[buf[i] >> 2];
            out[o++] = a[(buf[i] & 3) << 4];
        } else if (nb - i == 2) {
            out[o++] = a[buf[i] >> 2];
            out[o++] = a[((buf[i] & 3) << 4) | buf[i + 1] >> 4];
            out[o++] = a[(buf[i + 1] & 15) << 2];
        }
        out[o] = '\0';
        free(buf);
    }
    BN_free(n);
    EVP_PKEY_free(k);
    BIO_free(b);
    free(text);
    return out;
}

static void check_rsa_key(const char *vault, const char *name, unsigned bits)
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    cmk_key_desc d;
    char pem[4200];

    CHECK_E(cmk_vault_key_create(home, vault, name, "RSA", bits, &j, &eb), CMK_OK);
    REQUIRE(j);
    const char *kid = jstr(j, "key", "kid");
    json_t *key = json_object_get(j, "key");
    char want[200];
    snprintf(want, sizeof(want), "local://%s/keys/%s/", vault, name);
    CHECK(strncmp(kid, want, strlen(want)) == 0 && strlen(kid) == strlen(want) + 32);
    const char *ver = kid + strlen(want);
    CHECK(strspn(ver, "0123456789abcdef") == 32);
    CHECK(strcmp(cmk_json_str(key, "kty"), "RSA") == 0);
    CHECK(strcmp(cmk_json_str(key, "e"), "AQAB") == 0);
    /* base64url without padding of bits/8 bytes */
    CHECK(strlen(cmk_json_str(key, "n")) == (bits / 8 * 4 + 2) / 3);
    CHECK(!HAS(cmk_json_str(key, "n"), "=") && !HAS(cmk_json_str(key, "n"), "+") &&
          !HAS(cmk_json_str(key, "n"), "/"));
    const char *priv[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
    for (size_t i = 0; i < sizeof(priv) / sizeof(*priv); i++)
        CHECK(json_object_get(key, priv[i]) == NULL);
    json_t *ops = json_object_get(key, "keyOps");
    int wk = 0, uk = 0;
    for (size_t i = 0; i < json_array_size(ops); i++) {
        wk += strcmp(json_string_value(json_array_get(ops, i)), "wrapKey") == 0;
        uk += strcmp(json_string_value(json_array_get(ops, i)), "unwrapKey") == 0;
    }
    CHECK(wk == 1 && uk == 1);
    json_t *attr = json_object_get(j, "attributes");
    CHECK(json_is_true(json_object_get(attr, "enabled")));
    CHECK(json_is_false(json_object_get(attr, "exportable")));
    CHECK(strcmp(cmk_json_str(attr, "recoveryLevel"), "Recoverable") == 0);
    CHECK(cmk_parse_iso8601(cmk_json_str(attr, "created")) != (time_t)-1);
    CHECK(cmk_parse_iso8601(cmk_json_str(attr, "updated")) != (time_t)-1);
    CHECK(json_is_null(json_object_get(j, "tags")));
    char *dumped = json_dumps(j, 0);
    CHECK(!HAS(dumped, "PRIVATE"));
    free(dumped);

    /* The PEM on disk is PKCS#8, 0600, and is the private half of the published modulus. */
    snprintf(pem, sizeof(pem), "%s/vaults/%s/keys/%s/%s.pem", home, vault, name, ver);
    int pkcs8 = 0;
    char *nb64 = pem_modulus_b64(pem, &pkcs8);
    CHECK(pkcs8);
    CHECK(nb64 && strcmp(nb64, cmk_json_str(key, "n")) == 0);
    free(nb64);
    CHECK(mode_of("%s%s", pem, "") == 0600);
    CHECK(mode_of("%s/vaults/%s", home, vault) == 0700);
    snprintf(pem, sizeof(pem), "%s/vaults/%s/keys/%s", home, vault, name);
    CHECK(mode_of("%s%s", pem, "") == 0700);
    CHECK(mode_of("%s/key.json%s", pem, "") == 0600);

    /* Describe, then round trips with both algorithms, versioned. */
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, kid) == 0 && d.requested_versioned == 1);
    CHECK(strcmp(d.version, ver) == 0 && d.kty == CMK_KTY_RSA && d.bits == bits && d.enabled);
    CHECK(d.wrap_algs == ((1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP)));
    CHECK(strncmp(d.versionless, kid, strlen(d.versionless)) == 0 &&
          strlen(d.versionless) == strlen(want) - 1);
    CHECK_E(round_trip(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    CHECK_E(round_trip(kid, ident.principal_id, CMK_WRAP_RSA_OAEP, &eb), CMK_OK);

    /* Wrapped size, algorithm binding, tampering, bad lengths. */
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_OK);
    CHECK(wl == bits / 8);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP, w, wl, &eb), CMK_E_INTEGRITY);
    w[wl / 2] ^= 1;
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_INTEGRITY);
    w[wl / 2] ^= 1;
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl - 1, &eb),
            CMK_E_INTEGRITY);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_NONE, w, wl, &eb), CMK_E_UNSUPPORTED);
    /* Too small an output buffer for the DEK. */
    unsigned char small[8];
    size_t sl = sizeof(small);
    CHECK_E(prov->unwrap(prov->self, kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, small,
                         &sl, &eb),
            CMK_E_INVAL);
    CHECK(sl == 0);
    unsigned char big[600];
    memset(big, 1, sizeof(big));
    CHECK_E(prov->wrap(prov->self, kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, big,
                       bits / 8 - 65, w, &wl, &eb),
            CMK_E_INVAL);
    CHECK(wl == 0);
    CHECK_E(
        prov->wrap(prov->self, kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, big, 0, w, &wl, &eb),
        CMK_E_INVAL);
    CHECK_E(prov->wrap(prov->self, kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, big,
                       bits / 8 - 66, w, &wl, &eb),
            CMK_OK);
    /* wrap and unwrap need a versioned identifier. */
    char vl[300];
    versionless_of(kid, vl, sizeof(vl));
    CHECK_E(wrap_only(vl, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "versioned"));
    json_decref(j);
}

static void test_rsa_keys(void)
{
    make_vault("rv", &protect7);
    check_rsa_key("rv", "k2048", 2048);
    check_rsa_key("rv", "k3072", 3072);
    check_rsa_key("rv", "k4096", 4096); /* the one 4096-bit key of this program */
    cmk_errbuf eb = {0};
    CHECK_E(cmk_vault_key_create(home, "rv", "k1024", "RSA", 1024, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "2048"));
    CHECK_E(cmk_vault_key_create(home, "rv", "kx", "DSA", 0, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_key_create(home, "rv", "kx", "oct", 0, NULL, &eb), CMK_E_UNSUPPORTED);
    CHECK_E(cmk_vault_key_create(home, "rv", "bad_name", "RSA", 0, NULL, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "key name"));
    CHECK_E(cmk_vault_key_create(home, "nosuch", "k", "RSA", 0, NULL, &eb), CMK_E_NOT_FOUND);
    /* Default type and size. */
    json_t *j = NULL;
    CHECK_E(cmk_vault_key_create(home, "rv", "kdef", NULL, 0, &j, &eb), CMK_OK);
    CHECK(j && strcmp(jstr(j, "key", "kty"), "RSA") == 0 &&
          strlen(jstr(j, "key", "n")) == (256 * 4 + 2) / 3);
    json_decref(j);
}

/* ---- versions ---- */

static void test_versions(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    json_t *j = NULL;
    char vl[300];

    char *v1 = new_key("rv", "rot", "RSA", 2048);
    REQUIRE(v1);
    versionless_of(v1, vl, sizeof(vl));
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v1) == 0 && d.requested_versioned == 0);
    char *v2 = new_key("rv", "rot", "RSA", 2048);
    REQUIRE(v2);
    CHECK(strcmp(v1, v2) != 0);
    char vl2[300];
    versionless_of(v2, vl2, sizeof(vl2));
    CHECK(strcmp(vl, vl2) == 0);
    /* The versionless identifier follows the newest version. */
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v2) == 0 && strcmp(d.versionless, vl) == 0 && !d.requested_versioned);
    char vls[310];
    snprintf(vls, sizeof(vls), "%s/", vl);
    CHECK_E(describe(vls, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v2) == 0);
    CHECK_E(describe(v1, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v1) == 0 && d.requested_versioned == 1);
    char *v3 = new_key("rv", "rot", "RSA", 3072); /* a version may have another size */
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v3) == 0 && d.bits == 3072);

    /* Both old versions still work; a DEK wrapped by one does not open with another. */
    CHECK_E(round_trip(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    CHECK_E(round_trip(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;
    CHECK_E(wrap_only(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_OK);
    CHECK_E(unwrap_only(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_INTEGRITY);

    /* Management views. */
    CHECK_E(cmk_vault_key_show(home, "rv", "rot", NULL, &j, &eb), CMK_OK);
    CHECK(j && strcmp(jstr(j, "key", "kid"), v3) == 0);
    json_decref(j);
    CHECK_E(cmk_vault_key_show(home, "rv", "rot", strrchr(v1, '/') + 1, &j, &eb), CMK_OK);
    CHECK(j && strcmp(jstr(j, "key", "kid"), v1) == 0);
    json_decref(j);
    CHECK_E(cmk_vault_key_show(home, "rv", "rot", "nope", &j, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_key_show(home, "rv", "rot", "0123456789abcdef0123456789abcdef", &j, &eb),
            CMK_E_NOT_FOUND);
    CHECK_E(cmk_vault_key_show(home, "rv", "nokey", NULL, &j, &eb), CMK_E_NOT_FOUND);
    CHECK(HAS(eb.msg, "nokey") && HAS(eb.msg, "rv"));
    CHECK_E(cmk_vault_key_list_versions(home, "rv", "rot", &j, &eb), CMK_OK);
    CHECK(json_array_size(j) == 3);
    CHECK(strcmp(jstr(json_array_get(j, 0), "kid", NULL), v1) == 0);
    CHECK(strcmp(jstr(json_array_get(j, 1), "kid", NULL), v2) == 0);
    CHECK(strcmp(jstr(json_array_get(j, 2), "kid", NULL), v3) == 0);
    json_decref(j);
    CHECK_E(cmk_vault_key_list(home, "rv", &j, &eb), CMK_OK);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(j); i++)
        if (strcmp(jstr(json_array_get(j, i), "name", NULL), "rot") == 0)
            seen += strcmp(jstr(json_array_get(j, i), "kid", NULL), vl) == 0;
    CHECK(seen == 1);
    json_decref(j);
    free(v1);
    free(v2);
    free(v3);
}

/* ---- access policies enforced by the provider ---- */

static void test_access(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    cmk_identity other, gone, sys;
    const char *get_wrap[] = {"get", "wrapKey"};
    const char *get_unwrap[] = {"get", "unwrapKey"};
    const char *wrap_unwrap[] = {"wrapKey", "unwrapKey"};
    const char *all[] = {"all"};
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;

    make_vault("av", &protect7);
    char *kid = new_key("av", "ak", "RSA", 2048);
    REQUIRE(kid);
    CHECK_E(cmk_identity_create(home, "other", &other, &eb), CMK_OK);

    /* No policy at all. */
    CHECK_E(describe(kid, other.principal_id, &d, &eb), CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, other.principal_id) && HAS(eb.msg, "'other'") && HAS(eb.msg, kid) &&
          HAS(eb.msg, "no access policy in vault 'av'") && HAS(eb.msg, "get"));
    CHECK(d.kid[0] == '\0');

    /* get + unwrapKey but no wrapKey. */
    set_perms("av", other.principal_id, get_unwrap, 2);
    CHECK_E(describe(kid, other.principal_id, &d, &eb), CMK_OK);
    CHECK_E(wrap_only(kid, other.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb),
            CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "'wrapKey'") && HAS(eb.msg, other.principal_id) && HAS(eb.msg, kid));
    CHECK_MSG(HAS(eb.msg, "access policy of vault 'av'"), "%s", eb.msg);
    CHECK(wl == 0);
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_OK);
    CHECK_E(unwrap_only(kid, other.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb), CMK_OK);

    /* get + wrapKey but no unwrapKey. */
    set_perms("av", other.principal_id, get_wrap, 2);
    CHECK_E(unwrap_only(kid, other.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "'unwrapKey'"));
    /* No get. */
    set_perms("av", other.principal_id, wrap_unwrap, 2);
    CHECK_E(describe(kid, other.principal_id, &d, &eb), CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "'get'"));
    CHECK_E(round_trip(kid, other.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    /* "all". */
    set_perms("av", other.principal_id, all, 1);
    CHECK_E(describe(kid, other.principal_id, &d, &eb), CMK_OK);
    CHECK_E(round_trip(kid, other.principal_id, CMK_WRAP_RSA_OAEP, &eb), CMK_OK);

    /* delete-policy denies at once; set again allows again. */
    CHECK_E(cmk_vault_delete_policy(home, "av", ident.principal_id, NULL, &eb), CMK_OK);
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_E_KEY_DENIED);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "no access policy"));
    set_perms("av", ident.principal_id, perms3, 3);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb), CMK_OK);

    /* A policy in one vault grants nothing in another. */
    CHECK_E(cmk_vault_create(home, "av2", &protect7, NULL, &eb), CMK_OK);
    char *kid2 = new_key("av2", "ak", "RSA", 2048);
    CHECK_E(describe(kid2, ident.principal_id, &d, &eb), CMK_E_KEY_DENIED);

    /* Unknown principals and no principal. */
    CHECK_E(describe(kid, "00000000-0000-4000-8000-000000000000", &d, &eb), CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "does not exist"));
    CHECK_E(describe(kid, NULL, &d, &eb), CMK_E_KEY_DENIED);
    CHECK_E(describe(kid, "", &d, &eb), CMK_E_KEY_DENIED);
    /* A client id or name is not a principal. */
    CHECK_E(describe(kid, ident.client_id, &d, &eb), CMK_E_KEY_DENIED);
    CHECK_E(describe(kid, ident.name, &d, &eb), CMK_E_KEY_DENIED);

    /* A deleted identity's policy stays but grants nothing. */
    CHECK_E(cmk_identity_create(home, "gone", &gone, &eb), CMK_OK);
    set_perms("av", gone.principal_id, perms3, 3);
    CHECK_E(round_trip(kid, gone.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    CHECK_E(cmk_identity_delete(home, "gone", &eb), CMK_OK);
    CHECK_E(describe(kid, gone.principal_id, &d, &eb), CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, gone.principal_id) && HAS(eb.msg, "does not exist"));
    CHECK_E(wrap_only(kid, gone.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb),
            CMK_E_KEY_DENIED);

    /* System-assigned identities are principals too. */
    CHECK_E(cmk_identity_create_system(home, "5e1f0000-0000-4000-8000-000000000001", &sys, &eb),
            CMK_OK);
    CHECK_E(describe(kid, sys.principal_id, &d, &eb), CMK_E_KEY_DENIED);
    set_perms("av", sys.principal_id, perms3, 3);
    CHECK_E(round_trip(kid, sys.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    free(kid);
    free(kid2);
}

/* ---- enable / disable ---- */

static void test_enable_disable(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    json_t *j = NULL;
    char vl[300];
    unsigned char w1[CMK_WRAPPED_MAX], w2[CMK_WRAPPED_MAX], scratch[CMK_WRAPPED_MAX];
    size_t l1 = 0, l2 = 0, sl = 1;

    char *v1 = new_key("rv", "tog", "RSA", 2048);
    char *v2 = new_key("rv", "tog", "RSA", 2048);
    REQUIRE(v1 && v2);
    versionless_of(v1, vl, sizeof(vl));
    const char *ver1 = strrchr(v1, '/') + 1, *ver2 = strrchr(v2, '/') + 1;
    CHECK_E(wrap_only(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w1, &l1, &eb), CMK_OK);
    CHECK_E(wrap_only(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w2, &l2, &eb), CMK_OK);

    /* The whole key: every version. */
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", NULL, 0, &j, &eb), CMK_OK);
    CHECK(j && json_is_false(json_object_get(json_object_get(j, "attributes"), "enabled")));
    json_decref(j);
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_E_KEY_DISABLED);
    CHECK(HAS(eb.msg, "is disabled") && HAS(eb.msg, "'tog'") && HAS(eb.msg, "vault 'rv'"));
    CHECK_E(unwrap_only(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w1, l1, &eb),
            CMK_E_KEY_DISABLED);
    CHECK(HAS(eb.msg, v1));
    CHECK_E(unwrap_only(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w2, l2, &eb),
            CMK_E_KEY_DISABLED);
    CHECK_E(wrap_only(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, scratch, &sl, &eb),
            CMK_E_KEY_DISABLED);
    CHECK(sl == 0);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", NULL, 1, NULL, &eb), CMK_OK);
    CHECK_E(unwrap_only(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w1, l1, &eb), CMK_OK);

    /* One version only. */
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", ver1, 0, &j, &eb), CMK_OK);
    CHECK(j && strcmp(jstr(j, "key", "kid"), v1) == 0 &&
          json_is_false(json_object_get(json_object_get(j, "attributes"), "enabled")));
    json_decref(j);
    CHECK_E(unwrap_only(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w1, l1, &eb),
            CMK_E_KEY_DISABLED);
    CHECK(HAS(eb.msg, "is disabled") && HAS(eb.msg, "version") && HAS(eb.msg, ver1));
    CHECK_E(describe(v1, ident.principal_id, &d, &eb), CMK_E_KEY_DISABLED);
    CHECK_E(unwrap_only(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w2, l2, &eb), CMK_OK);
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, v2) == 0);
    CHECK_E(cmk_vault_key_show(home, "rv", "tog", ver1, &j, &eb), CMK_OK);
    CHECK(json_is_false(json_object_get(json_object_get(j, "attributes"), "enabled")));
    json_decref(j);
    /* The latest version disabled: the versionless id resolves to it and is disabled. */
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", ver2, 0, NULL, &eb), CMK_OK);
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_E_KEY_DISABLED);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", ver1, 1, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", ver2, 1, NULL, &eb), CMK_OK);
    CHECK_E(round_trip(v1, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    CHECK_E(round_trip(v2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);

    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", "zz", 0, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "tog", "0123456789abcdef0123456789abcdef", 0,
                                      NULL, &eb),
            CMK_E_NOT_FOUND);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "nokey", NULL, 0, NULL, &eb), CMK_E_NOT_FOUND);
    free(v1);
    free(v2);
}

/* ---- soft delete, recover, purge ---- */

static void set_purge_date_past(const char *vault, const char *key)
{
    char path[4200];
    json_t *j = NULL;
    cmk_errbuf eb = {0};
    if (key)
        snprintf(path, sizeof(path), "%s/vaults/%s/keys/%s/key.json", home, vault, key);
    else
        snprintf(path, sizeof(path), "%s/vaults/%s/vault.json", home, vault);
    CHECK_E(cmk_json_load(path, &j, &eb), CMK_OK);
    json_t *o = key ? json_object_get(j, "deleted") : json_object_get(j, "properties");
    json_object_set_new(o, "scheduledPurgeDate", json_string("2001-01-01T00:00:00Z"));
    CHECK_E(cmk_json_save(path, j, 0600, &eb), CMK_OK);
    json_decref(j);
}

static void test_key_soft_delete(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    json_t *j = NULL;
    char vl[300], kdir[4200];
    unsigned char w[CMK_WRAPPED_MAX], scratch[CMK_WRAPPED_MAX];
    size_t wl = 0, sl = 0;

    /* Under purge protection. */
    char *kid = new_key("rv", "doomed", "RSA", 2048);
    REQUIRE(kid);
    versionless_of(kid, vl, sizeof(vl));
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_purge(home, "rv", "doomed", &eb), CMK_E_REFUSED);
    CHECK(HAS(eb.msg, "not deleted"));
    CHECK_E(cmk_vault_key_recover(home, "rv", "doomed", NULL, &eb), CMK_E_REFUSED);
    CHECK_E(cmk_vault_key_delete(home, "rv", "doomed", &j, &eb), CMK_OK);
    REQUIRE(j);
    const char *dd = jstr(j, "deletedDate", NULL), *sp = jstr(j, "scheduledPurgeDate", NULL);
    CHECK(dd && sp && cmk_parse_iso8601(sp) - cmk_parse_iso8601(dd) == 7 * 86400);
    CHECK(strcmp(jstr(j, "recoveryId", NULL), "local://rv/deletedkeys/doomed") == 0);
    char sched[40];
    snprintf(sched, sizeof(sched), "%s", sp);
    json_decref(j);

    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_E_KEY_DELETED);
    CHECK(HAS(eb.msg, "recover") && HAS(eb.msg, "doomed"));
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_DELETED);
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, scratch, &sl, &eb),
            CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_show(home, "rv", "doomed", NULL, &j, &eb), CMK_OK);
    CHECK(j && jstr(j, "deletedDate", NULL) && jstr(j, "recoveryId", NULL));
    json_decref(j);
    CHECK_E(cmk_vault_key_list(home, "rv", &j, &eb), CMK_OK);
    int listed = 0;
    for (size_t i = 0; i < json_array_size(j); i++)
        listed += strcmp(jstr(json_array_get(j, i), "name", NULL), "doomed") == 0;
    CHECK(listed == 0);
    json_decref(j);
    CHECK_E(cmk_vault_key_list_deleted(home, "rv", &j, &eb), CMK_OK);
    listed = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *e = json_array_get(j, i);
        if (strcmp(jstr(e, "name", NULL), "doomed") == 0)
            listed += strcmp(jstr(e, "scheduledPurgeDate", NULL), sched) == 0 &&
                      jstr(e, "recoveryId", NULL) != NULL;
    }
    CHECK(listed == 1);
    json_decref(j);
    CHECK_E(cmk_vault_key_list_versions(home, "rv", "doomed", &j, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_set_enabled(home, "rv", "doomed", NULL, 0, NULL, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_delete(home, "rv", "doomed", NULL, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_create(home, "rv", "doomed", "RSA", 2048, &j, &eb), CMK_E_EXISTS);
    CHECK(j == NULL && HAS(eb.msg, "recover or purge"));
    CHECK_E(cmk_vault_key_purge(home, "rv", "doomed", &eb), CMK_E_REFUSED);
    CHECK_MSG(HAS(eb.msg, "purge protection") && HAS(eb.msg, sched), "%s", eb.msg);
    snprintf(kdir, sizeof(kdir), "%s/vaults/rv/keys/doomed", home);
    CHECK(cmk_exists(kdir));

    CHECK_E(cmk_vault_key_recover(home, "rv", "doomed", &j, &eb), CMK_OK);
    CHECK(j && !json_object_get(j, "deletedDate") && strcmp(jstr(j, "key", "kid"), kid) == 0);
    json_decref(j);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb), CMK_OK);

    /* Purge protection lasts until the scheduled purge date, not beyond. */
    CHECK_E(cmk_vault_key_delete(home, "rv", "doomed", NULL, &eb), CMK_OK);
    set_purge_date_past("rv", "doomed");
    CHECK_E(cmk_vault_key_purge(home, "rv", "doomed", &eb), CMK_OK);
    CHECK(!cmk_exists(kdir));
    CHECK_E(describe(vl, ident.principal_id, &d, &eb), CMK_E_KEY_NOT_FOUND);

    /* Without purge protection: purge at once; the name can be used again. */
    make_vault("nv", &plain7);
    char *k2 = new_key("nv", "tmp", "RSA", 2048);
    REQUIRE(k2);
    CHECK_E(cmk_vault_key_show(home, "nv", "tmp", NULL, &j, &eb), CMK_OK);
    CHECK(strcmp(jstr(j, "attributes", "recoveryLevel"), "Recoverable+Purgeable") == 0);
    json_decref(j);
    CHECK_E(cmk_vault_key_purge(home, "nv", "tmp", &eb), CMK_E_REFUSED);
    CHECK_E(cmk_vault_key_delete(home, "nv", "tmp", NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_purge(home, "nv", "tmp", &eb), CMK_OK);
    CHECK_E(cmk_vault_key_purge(home, "nv", "tmp", &eb), CMK_E_NOT_FOUND);
    CHECK_E(unwrap_only(k2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_vault_key_recover(home, "nv", "tmp", NULL, &eb), CMK_E_NOT_FOUND);
    char *k3 = new_key("nv", "tmp", "RSA", 2048);
    REQUIRE(k3);
    CHECK(strcmp(k2, k3) != 0);
    CHECK_E(cmk_vault_key_list_versions(home, "nv", "tmp", &j, &eb), CMK_OK);
    CHECK(json_array_size(j) == 1);
    json_decref(j);
    /* No purge leftovers. */
    char keys[4200];
    snprintf(keys, sizeof(keys), "%s/vaults/nv/keys", home);
    DIR *dir = opendir(keys);
    int dots = 0;
    for (struct dirent *de; dir && (de = readdir(dir));)
        dots += de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (dir)
        closedir(dir);
    CHECK(dots == 0);
    free(kid);
    free(k2);
    free(k3);
}

static void test_vault_soft_delete(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    json_t *j = NULL;
    unsigned char w[CMK_WRAPPED_MAX], scratch[CMK_WRAPPED_MAX];
    size_t wl = 0, sl = 0;
    char vdir[4200];

    make_vault("dv", &protect7);
    char *kid = new_key("dv", "dk", "RSA", 2048);
    REQUIRE(kid);
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb), CMK_OK);
    CHECK_E(cmk_vault_purge(home, "dv", &eb), CMK_E_REFUSED);
    CHECK_E(cmk_vault_recover(home, "dv", NULL, &eb), CMK_E_REFUSED);
    CHECK_E(cmk_vault_delete(home, "dv", &eb), CMK_OK);
    CHECK_E(cmk_vault_delete(home, "dv", &eb), CMK_E_REFUSED);
    CHECK(HAS(eb.msg, "already deleted"));

    /* Every key operation names the deleted vault. */
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_E_KEY_DELETED);
    CHECK(HAS(eb.msg, "vault 'dv'") && HAS(eb.msg, "soft-deleted") && HAS(eb.msg, "recovered"));
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_DELETED);
    CHECK(HAS(eb.msg, "vault 'dv'"));
    CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, scratch, &sl, &eb),
            CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_create(home, "dv", "dk2", "RSA", 2048, NULL, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_show(home, "dv", "dk", NULL, NULL, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_key_list(home, "dv", NULL, &eb), CMK_E_KEY_DELETED);
    CHECK_E(cmk_vault_set_policy(home, "dv", ident.principal_id, perms3, 3, NULL, &eb),
            CMK_E_REFUSED);
    CHECK_E(cmk_vault_create(home, "dv", &protect7, NULL, &eb), CMK_E_EXISTS);
    CHECK(HAS(eb.msg, "soft-deleted"));
    /* Shown (and listed) with its deletion dates. */
    CHECK_E(cmk_vault_show(home, "dv", &j, &eb), CMK_OK);
    const char *sp = jstr(j, "properties", "scheduledPurgeDate");
    CHECK(jstr(j, "properties", "deletionDate") && sp);
    char sched[40];
    snprintf(sched, sizeof(sched), "%s", sp ? sp : "");
    json_decref(j);
    CHECK_E(cmk_vault_purge(home, "dv", &eb), CMK_E_REFUSED);
    CHECK_MSG(HAS(eb.msg, "purge protection") && HAS(eb.msg, sched), "%s", eb.msg);
    CHECK_E(cmk_vault_recover(home, "dv", &j, &eb), CMK_OK);
    CHECK(j && !jstr(j, "properties", "deletionDate"));
    json_decref(j);
    CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb), CMK_OK);

    /* Protected, but past the scheduled date: purge is allowed. */
    CHECK_E(cmk_vault_delete(home, "dv", &eb), CMK_OK);
    set_purge_date_past("dv", NULL);
    CHECK_E(cmk_vault_purge(home, "dv", &eb), CMK_OK);
    snprintf(vdir, sizeof(vdir), "%s/vaults/dv", home);
    CHECK(!cmk_exists(vdir));
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(HAS(eb.msg, "dv"));

    /* Unprotected: purge right after delete; then the name is free. */
    make_vault("dv2", &plain7);
    char *k2 = new_key("dv2", "dk", "RSA", 2048);
    CHECK_E(cmk_vault_delete(home, "dv2", &eb), CMK_OK);
    CHECK_E(cmk_vault_purge(home, "dv2", &eb), CMK_OK);
    CHECK_E(cmk_vault_show(home, "dv2", NULL, &eb), CMK_E_NOT_FOUND);
    CHECK_E(cmk_vault_purge(home, "dv2", &eb), CMK_E_NOT_FOUND);
    CHECK_E(unwrap_only(k2, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, wl, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_vault_create(home, "dv2", &plain7, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_list(home, "dv2", &j, &eb), CMK_OK);
    CHECK(json_array_size(j) == 0);
    json_decref(j);
    free(kid);
    free(k2);
}

/* ---- EC and RSA-HSM ---- */

static void test_ec_and_hsm(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    json_t *j = NULL;
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;
    const unsigned sizes[] = {256, 384, 521};
    const char *crv[] = {"P-256", "P-384", "P-521"};
    const size_t coord[] = {43, 64, 88}; /* base64url of 32, 48, 66 bytes */

    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "ec%u", sizes[i]);
        CHECK_E(cmk_vault_key_create(home, "rv", name, "EC", i == 0 ? 0 : sizes[i], &j, &eb),
                CMK_OK);
        REQUIRE(j);
        json_t *key = json_object_get(j, "key");
        CHECK(strcmp(cmk_json_str(key, "kty"), "EC") == 0);
        CHECK(strcmp(cmk_json_str(key, "crv"), crv[i]) == 0);
        CHECK(strlen(cmk_json_str(key, "x")) == coord[i] &&
              strlen(cmk_json_str(key, "y")) == coord[i]);
        CHECK(!json_object_get(key, "n") && !json_object_get(key, "d"));
        char *kid = strdup(cmk_json_str(key, "kid"));
        json_decref(j);
        CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_OK);
        CHECK(d.kty == CMK_KTY_EC && d.bits == sizes[i] && d.wrap_algs == 0);
        CHECK_E(wrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, &wl, &eb),
                CMK_E_KEY_UNSUPPORTED);
        CHECK(HAS(eb.msg, "only RSA and RSA-HSM"));
        memset(w, 0, 256);
        CHECK_E(unwrap_only(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, w, 256, &eb),
                CMK_E_KEY_UNSUPPORTED);
        free(kid);
    }
    CHECK_E(cmk_vault_key_create(home, "rv", "ecbad", "EC", 2048, NULL, &eb), CMK_E_INVAL);
    CHECK_E(cmk_vault_key_create(home, "rv", "echsm", "EC-HSM", 0, NULL, &eb), CMK_E_UNSUPPORTED);

    /* RSA-HSM needs an HSM-backed vault: refused, nothing written. */
    char kdir[4200];
    snprintf(kdir, sizeof(kdir), "%s/vaults/rv/keys/hsmkey", home);
    CHECK_E(cmk_vault_key_create(home, "rv", "hsmkey", "RSA-HSM", 2048, &j, &eb), CMK_E_REFUSED);
    CHECK(j == NULL);
    CHECK_MSG(HAS(eb.msg, "vault 'rv' is not HSM-backed") && HAS(eb.msg, "--hsm-token") &&
                  HAS(eb.msg, "kek/HSM.md"),
              "%s", eb.msg);
    CHECK(!cmk_exists(kdir));
    CHECK_E(cmk_vault_key_create(home, "rv", "hsmkey", "rsa-hsm", 0, NULL, &eb), CMK_E_REFUSED);
}

static void test_not_found(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;

    CHECK_E(describe("local://novault/keys/k", ident.principal_id, &d, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(HAS(eb.msg, "novault"));
    CHECK_E(describe("local://rv/keys/nokey", ident.principal_id, &d, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(HAS(eb.msg, "nokey"));
    CHECK_E(describe("local://rv/keys/k2048/0123456789abcdef0123456789abcdef", ident.principal_id,
                     &d, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK(HAS(eb.msg, "version"));
    CHECK_E(wrap_only("local://rv/keys/nokey/0123456789abcdef0123456789abcdef", ident.principal_id,
                      CMK_WRAP_RSA_OAEP_256, w, &wl, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(describe("local://rv/keys", ident.principal_id, &d, &eb), CMK_E_INVAL);
    CHECK(HAS(eb.msg, "local://"));
    CHECK_E(describe("local://rv/keys/k2048/not-a-version", ident.principal_id, &d, &eb),
            CMK_E_INVAL);
    /* Authorisation comes before the key lookup: an unknown principal learns nothing. */
    CHECK_E(describe("local://rv/keys/nokey", "00000000-0000-4000-8000-000000000000", &d, &eb),
            CMK_E_KEY_DENIED);
}

/* ---- audit ---- */

static int audit_has(json_t *log, const char *identity, const char *op, const char *result,
                     const char *key)
{
    int n = 0;
    for (size_t i = 0; i < json_array_size(log); i++) {
        json_t *r = json_array_get(log, i);
        const char *id = cmk_json_str(r, "identity"), *o = cmk_json_str(r, "operation");
        const char *res = cmk_json_str(r, "result"), *k = cmk_json_str(r, "key");
        if (id && o && res && strcmp(id, identity) == 0 && strcmp(o, op) == 0 &&
            strcmp(res, result) == 0 && (!key || (k && strcmp(k, key) == 0)))
            n++;
    }
    return n;
}

static void test_audit(void)
{
    cmk_errbuf eb = {0};
    json_t *log = NULL;
    cmk_identity aud;
    const char *get_only[] = {"get"};
    unsigned char w[CMK_WRAPPED_MAX];
    size_t wl = 0;
    cmk_key_desc d;

    make_vault("audv", &protect7);
    char *kid = new_key("audv", "ak", "RSA", 2048);
    REQUIRE(kid);
    CHECK_E(cmk_identity_create(home, "auditor", &aud, &eb), CMK_OK);
    set_perms("audv", aud.principal_id, get_only, 1);
    CHECK_E(round_trip(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_OK);
    CHECK_E(describe(kid, aud.principal_id, &d, &eb), CMK_OK);
    CHECK_E(wrap_only(kid, aud.principal_id, CMK_WRAP_RSA_OAEP, w, &wl, &eb), CMK_E_KEY_DENIED);
    CHECK_E(cmk_vault_key_purge(home, "audv", "ak", &eb), CMK_E_REFUSED);

    CHECK_E(cmk_vault_audit(home, "audv", &log, &eb), CMK_OK);
    REQUIRE(json_is_array(log));
    CHECK(audit_has(log, "operator", "vaultCreate", "allowed", NULL) == 1);
    CHECK(audit_has(log, "operator", "setPolicy", "allowed", NULL) == 2);
    CHECK(audit_has(log, "operator", "create", "allowed", "ak") == 1);
    CHECK(audit_has(log, ident.principal_id, "wrapKey", "allowed", "ak") == 1);
    CHECK(audit_has(log, ident.principal_id, "unwrapKey", "allowed", "ak") == 1);
    CHECK(audit_has(log, aud.principal_id, "get", "allowed", "ak") == 1);
    CHECK(audit_has(log, aud.principal_id, "wrapKey", "denied", "ak") == 1);
    CHECK(audit_has(log, "operator", "purge", "denied", "ak") == 1);
    const char *ver = strrchr(kid, '/') + 1;
    for (size_t i = 0; i < json_array_size(log); i++) {
        json_t *r = json_array_get(log, i);
        CHECK(cmk_parse_iso8601(cmk_json_str(r, "time")) != (time_t)-1);
        CHECK(strcmp(cmk_json_str(r, "vault"), "audv") == 0);
        CHECK(json_object_get(r, "key") && json_object_get(r, "version"));
        const char *op = cmk_json_str(r, "operation");
        if (strcmp(op, "wrapKey") == 0 || strcmp(op, "unwrapKey") == 0 || strcmp(op, "get") == 0)
            CHECK(strcmp(cmk_json_str(r, "version"), ver) == 0);
        if (strcmp(op, "wrapKey") == 0 && strcmp(cmk_json_str(r, "result"), "denied") == 0) {
            CHECK(HAS(cmk_json_str(r, "reason"), "'wrapKey'"));
            CHECK(strcmp(cmk_json_str(r, "error"), "CMK_E_KEY_DENIED") == 0);
            CHECK(strcmp(cmk_json_str(r, "algorithm"), "RSA-OAEP") == 0);
        }
        if (strcmp(cmk_json_str(r, "result"), "allowed") == 0)
            CHECK(!json_object_get(r, "reason"));
    }
    json_decref(log);
    CHECK(mode_of("%s/vaults/%s/audit.log", home, "audv") == 0600);
    CHECK_E(cmk_vault_audit(home, "nosuch", &log, &eb), CMK_E_NOT_FOUND);

    /* A torn last line (crash mid-append) is skipped, not fatal. */
    char path[4200];
    snprintf(path, sizeof(path), "%s/vaults/audv/audit.log", home);
    FILE *f = fopen(path, "a");
    fputs("{\"time\":\"2026-", f);
    fclose(f);
    CHECK_E(cmk_vault_audit(home, "audv", &log, &eb), CMK_OK);
    CHECK(json_array_size(log) > 5);
    json_decref(log);
    free(kid);
}

/* ---- concurrency ---- */

static char *conc_kid;
static int conc_fail;

static void *wrapper(void *arg)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    (void)arg;
    for (int i = 0; i < 15; i++) {
        cmk_wrap_alg alg = i % 2 ? CMK_WRAP_RSA_OAEP : CMK_WRAP_RSA_OAEP_256;
        if (round_trip(conc_kid, ident.principal_id, alg, &eb) != CMK_OK) {
            fprintf(stderr, "concurrent round trip: %s\n", eb.msg);
            __atomic_add_fetch(&conc_fail, 1, __ATOMIC_RELAXED);
        }
        char vl[300];
        versionless_of(conc_kid, vl, sizeof(vl));
        if (describe(vl, ident.principal_id, &d, &eb) != CMK_OK) {
            fprintf(stderr, "concurrent describe: %s\n", eb.msg);
            __atomic_add_fetch(&conc_fail, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static int race_ok, race_exists;

static void *racer(void *arg)
{
    cmk_errbuf eb = {0};
    (void)arg;
    cmk_err rc = cmk_vault_create(home, "racev", NULL, NULL, &eb);
    if (rc == CMK_OK)
        __atomic_add_fetch(&race_ok, 1, __ATOMIC_RELAXED);
    else if (rc == CMK_E_EXISTS)
        __atomic_add_fetch(&race_exists, 1, __ATOMIC_RELAXED);
    else
        fprintf(stderr, "racer: %s\n", eb.msg);
    return NULL;
}

static void test_concurrency(void)
{
    cmk_errbuf eb = {0};
    pthread_t t[4];
    const char *getp[] = {"get"};
    json_t *j = NULL;

    make_vault("cv", &protect7);
    conc_kid = new_key("cv", "ck", "RSA", 2048);
    REQUIRE(conc_kid);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, wrapper, NULL);
    /* Writers at the same time: new versions and policy changes for someone else. */
    char *v2 = new_key("cv", "ck", "RSA", 2048);
    for (int i = 0; i < 5; i++) {
        char pid[64];
        snprintf(pid, sizeof(pid), "0000000%d-0000-4000-8000-000000000000", i);
        set_perms("cv", pid, getp, 1);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(conc_fail == 0);
    CHECK_E(cmk_vault_show(home, "cv", &j, &eb), CMK_OK);
    CHECK(json_array_size(json_object_get(json_object_get(j, "properties"), "accessPolicies")) ==
          6);
    json_decref(j);
    CHECK_E(cmk_vault_audit(home, "cv", &j, &eb), CMK_OK);
    CHECK(audit_has(j, ident.principal_id, "unwrapKey", "allowed", "ck") == 4 * 15);
    json_decref(j);

    /* Concurrent creates of one vault: one wins. */
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, racer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(race_ok == 1 && race_exists == 3);
    free(conc_kid);
    free(v2);
}

/* ---- no key material anywhere it should not be ---- */

static int scan_pems(const char *dir, int *npem, int *leaks, const char *hay)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    for (struct dirent *de; (de = readdir(d));) {
        char p[4200];
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            scan_pems(p, npem, leaks, hay);
            continue;
        }
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".pem") != 0)
            continue;
        (*npem)++;
        char *text = (char *)test_read_file(p, NULL);
        /* Every base64 line of the body: any 20 characters of it would be a leak. */
        for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
            if (line[0] == '-' || strlen(line) < 20)
                continue;
            char probe[21];
            memcpy(probe, line, 20);
            probe[20] = '\0';
            if (strstr(hay, probe))
                (*leaks)++;
        }
        free(text);
    }
    closedir(d);
    return 0;
}

static void test_no_key_material(void)
{
    char vaults[4200];
    int npem = 0, leaks = 0;
    cmk_errbuf eb = {0};
    json_t *all = json_array(), *j = NULL, *names = NULL;

    /* Everything the vault says: error messages, audit logs, management JSON. */
    CHECK_E(cmk_vault_list(home, &names, &eb), CMK_OK);
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *v = jstr(json_array_get(names, i), "name", NULL);
        if (cmk_vault_audit(home, v, &j, NULL) == CMK_OK)
            json_array_append_new(all, j);
        if (cmk_vault_key_list(home, v, &j, NULL) == CMK_OK)
            json_array_append_new(all, j);
    }
    json_decref(names);
    char *dump = json_dumps(all, 0);
    size_t hl = msgs_len + strlen(dump) + 2;
    char *hay = malloc(hl);
    snprintf(hay, hl, "%s\n%s", msgs ? msgs : "", dump);
    snprintf(vaults, sizeof(vaults), "%s/vaults", home);
    scan_pems(vaults, &npem, &leaks, hay);
    CHECK_MSG(npem >= 15, "found %d PEM files", npem);
    CHECK_MSG(leaks == 0, "%d PEM body fragments appear in messages or output", leaks);
    CHECK(!HAS(hay, "PRIVATE KEY"));
    CHECK_MSG(msgs_len > 2000, "collected %zu bytes of messages", msgs_len);
    free(hay);
    free(dump);
    json_decref(all);
}

/* ---- several processes ---- */

static void test_processes(void)
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    const char *getp[] = {"get"};
    pid_t pids[6];

    make_vault("mpv", &protect7);
    char *first = new_key("mpv", "mp", "RSA", 2048);
    REQUIRE(first);
    fflush(NULL);
    for (int i = 0; i < 6; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            cmk_errbuf ceb = {0};
            int bad = 0;
            if (i < 3) {
                /* Writers of key.json... */
                for (int k = 0; k < 2; k++)
                    bad |=
                        cmk_vault_key_create(home, "mpv", "mp", "RSA", 2048, NULL, &ceb) != CMK_OK;
            } else {
                /* ...of vault.json, and readers that must never see a torn file. */
                char pid[64];
                snprintf(pid, sizeof(pid), "0000000%d-0000-4000-8000-00000000000%d", i, i);
                bad |= cmk_vault_set_policy(home, "mpv", pid, getp, 1, NULL, &ceb) != CMK_OK;
                for (int k = 0; k < 4; k++)
                    bad |= round_trip(first, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &ceb) !=
                           CMK_OK;
            }
            if (bad)
                fprintf(stderr, "child %d: %s\n", i, ceb.msg);
            _exit(bad);
        }
    }
    int failed = 0;
    for (int i = 0; i < 6; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    CHECK(failed == 0);
    /* No update was lost: 1 + 3 x 2 versions, 1 + 3 policies, all distinct. */
    CHECK_E(cmk_vault_key_list_versions(home, "mpv", "mp", &j, &eb), CMK_OK);
    CHECK_MSG(json_array_size(j) == 7, "%zu versions", json_array_size(j));
    for (size_t a = 0; a < json_array_size(j); a++)
        for (size_t b = a + 1; b < json_array_size(j); b++)
            CHECK(strcmp(jstr(json_array_get(j, a), "kid", NULL),
                         jstr(json_array_get(j, b), "kid", NULL)) != 0);
    json_decref(j);
    CHECK_E(cmk_vault_show(home, "mpv", &j, &eb), CMK_OK);
    CHECK(json_array_size(json_object_get(json_object_get(j, "properties"), "accessPolicies")) ==
          4);
    json_decref(j);
    free(first);
}

/* ---- damaged or missing private keys ---- */

static void test_damaged_files(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    char pem[4200], kj[4200];

    char *kid = new_key("rv", "fragile", "RSA", 2048);
    REQUIRE(kid);
    snprintf(pem, sizeof(pem), "%s/vaults/rv/keys/fragile/%s.pem", home, strrchr(kid, '/') + 1);
    REQUIRE(test_write_file(pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n", 33) == 0);
    CHECK_E(round_trip(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_E_CORRUPT);
    CHECK(HAS(eb.msg, "damaged") && HAS(eb.msg, kid));
    CHECK(unlink(pem) == 0);
    CHECK_E(round_trip(kid, ident.principal_id, CMK_WRAP_RSA_OAEP_256, &eb), CMK_E_KEY_NOT_FOUND);
    /* describe needs only metadata */
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_OK);
    snprintf(kj, sizeof(kj), "%s/vaults/rv/keys/fragile/key.json", home);
    REQUIRE(test_write_file(kj, "{\"versions\": 3}", 15) == 0);
    CHECK_E(describe(kid, ident.principal_id, &d, &eb), CMK_E_CORRUPT);
    CHECK(HAS(eb.msg, "key.json"));
    CHECK_E(cmk_vault_key_show(home, "rv", "fragile", NULL, NULL, &eb), CMK_E_CORRUPT);
    free(kid);
}

int main(void)
{
    cmk_errbuf eb = {0};

    snprintf(home, sizeof(home), "%s", test_tmpdir("vault"));
    CHECK_E(cmk_vault_provider_new(home, &prov, &eb), CMK_OK);
    REQUIRE(prov);
    CHECK(strcmp(prov->name, "local-vault") == 0);
    CHECK_E(cmk_vault_provider_new(NULL, &(cmk_kek_provider *){NULL}, &eb), CMK_E_INVAL);
    CHECK_E(cmk_identity_create(home, "vaultuser", &ident, &eb), CMK_OK);

    test_kid_parse();
    test_vault_mgmt();
    test_policies();
    test_rsa_keys();
    test_versions();
    test_access();
    test_enable_disable();
    test_key_soft_delete();
    test_vault_soft_delete();
    test_ec_and_hsm();
    test_not_found();
    test_audit();
    test_concurrency();
    test_processes();
    test_damaged_files();
    test_no_key_material();

    cmk_kek_provider_free(prov);
    free(msgs);
    return check_summary();
}
