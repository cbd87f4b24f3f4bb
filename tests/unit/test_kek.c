/* test_kek.c — the KEK dispatcher: provider order (caller's first, then the local vault),
 * dispatch of describe / wrap / unwrap to the real local vault, unknown schemes, the type
 * check that refuses EC and symmetric keys, algorithm choice, names, and threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "core/base/jsonfile.h"
#include "kek/builtin.h"
#include "kek/kek.h"
#include "kek/vault/vault.h"

#define CHECK_E(expr, want)                                                                        \
    do {                                                                                           \
        cmk_errbuf_clear(&eb);                                                                     \
        cmk_err r_ = (expr);                                                                       \
        CHECK_MSG(r_ == (want), "%s -> %s (want %s): %s", #expr, cmk_errname(r_),                  \
                  cmk_errname(want), eb.msg);                                                      \
    } while (0)

#define HAS(s, sub) (strstr((s), (sub)) != NULL)

static char home[4096];
static cmk_identity ident;

/* ---- a fake provider that claims local://special/... and counts its calls ---- */

struct fake {
    int calls;
    int released;
    cmk_err fail;    /* returned from every call when set */
    int silent;      /* fail without a message */
    size_t wrap_len; /* 0: 16 */
};

static int f_handles(void *self, const char *kid)
{
    (void)self;
    return strncmp(kid, "local://special/", 16) == 0 || strncmp(kid, "fake:", 5) == 0;
}

static cmk_err f_fail(struct fake *f, cmk_errbuf *eb)
{
    if (f->silent)
        return f->fail;
    return cmk_errbuf_set(eb, f->fail, "fake says %s", cmk_errname(f->fail));
}

static cmk_err f_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                          cmk_errbuf *eb)
{
    struct fake *f = self;
    (void)principal;
    f->calls++;
    if (f->fail)
        return f_fail(f, eb);
    memset(out, 0, sizeof(*out));
    snprintf(out->kid, sizeof(out->kid), "%s", kid);
    out->kty = CMK_KTY_RSA_HSM;
    out->bits = 3072;
    out->enabled = 1;
    out->wrap_algs = 1u << CMK_WRAP_RSA_OAEP;
    return CMK_OK;
}

static cmk_err f_wrap(void *self, const char *kid, const char *principal, cmk_wrap_alg alg,
                      const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                      cmk_errbuf *eb)
{
    struct fake *f = self;
    (void)kid;
    (void)principal;
    (void)alg;
    f->calls++;
    if (f->fail)
        return f_fail(f, eb);
    *outlen = f->wrap_len ? f->wrap_len : keylen;
    if (*outlen <= CMK_WRAPPED_MAX)
        for (size_t i = 0; i < keylen && i < *outlen; i++)
            out[i] = dek[i] ^ 0xa5;
    return CMK_OK;
}

static cmk_err f_unwrap(void *self, const char *kid, const char *principal, cmk_wrap_alg alg,
                        const unsigned char *w, size_t wl, unsigned char *dek, size_t *keylen,
                        cmk_errbuf *eb)
{
    struct fake *f = self;
    (void)kid;
    (void)principal;
    (void)alg;
    f->calls++;
    if (f->fail) {
        if (*keylen >= 4)
            memset(dek, 0x77, 4); /* a failing provider that left bytes behind */
        *keylen = 4;
        return f_fail(f, eb);
    }
    if (wl > *keylen)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "small buffer");
    for (size_t i = 0; i < wl; i++)
        dek[i] = w[i] ^ 0xa5;
    *keylen = wl;
    return CMK_OK;
}

static void f_release(void *self)
{
    ((struct fake *)self)->released++;
}

static cmk_kek_provider fake_provider(struct fake *f)
{
    cmk_kek_provider p = {.size = sizeof(cmk_kek_provider),
                          .name = "fake",
                          .self = f,
                          .handles = f_handles,
                          .describe = f_describe,
                          .wrap = f_wrap,
                          .unwrap = f_unwrap,
                          .release = f_release};
    return p;
}

/* ---- tests ---- */

static void test_names(void)
{
    CHECK(strcmp(cmk_kty_name(CMK_KTY_RSA), "RSA") == 0);
    CHECK(strcmp(cmk_kty_name(CMK_KTY_RSA_HSM), "RSA-HSM") == 0);
    CHECK(strcmp(cmk_kty_name(CMK_KTY_EC), "EC") == 0);
    CHECK(strcmp(cmk_kty_name(CMK_KTY_OCT), "oct") == 0);
    CHECK(cmk_kty_name(CMK_KTY_UNKNOWN) != NULL && cmk_kty_name((cmk_kty)99) != NULL);
    CHECK(strcmp(cmk_wrap_alg_name(CMK_WRAP_RSA_OAEP_256), "RSA-OAEP-256") == 0);
    CHECK(strcmp(cmk_wrap_alg_name(CMK_WRAP_RSA_OAEP), "RSA-OAEP") == 0);
    CHECK(cmk_wrap_alg_name(CMK_WRAP_NONE) != NULL && cmk_wrap_alg_name((cmk_wrap_alg)9));
    CHECK(cmk_wrap_alg_from_name("RSA-OAEP-256") == CMK_WRAP_RSA_OAEP_256);
    CHECK(cmk_wrap_alg_from_name("RSA-OAEP") == CMK_WRAP_RSA_OAEP);
    CHECK(cmk_wrap_alg_from_name("rsa-oaep-256") == CMK_WRAP_RSA_OAEP_256);
    CHECK(cmk_wrap_alg_from_name("RSA1_5") == CMK_WRAP_NONE);
    CHECK(cmk_wrap_alg_from_name("") == CMK_WRAP_NONE);
    CHECK(cmk_wrap_alg_from_name(NULL) == CMK_WRAP_NONE);
    for (int a = CMK_WRAP_RSA_OAEP_256; a <= CMK_WRAP_RSA_OAEP; a++)
        CHECK(cmk_wrap_alg_from_name(cmk_wrap_alg_name((cmk_wrap_alg)a)) == (cmk_wrap_alg)a);
}

static void test_check_type_and_alg(void)
{
    cmk_errbuf eb = {0};
    cmk_key_desc d;

    memset(&d, 0, sizeof(d));
    snprintf(d.kid, sizeof(d.kid), "local://v/keys/k/0123456789abcdef0123456789abcdef");
    d.kty = CMK_KTY_RSA;
    d.bits = 2048;
    d.wrap_algs = (1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP);
    CHECK_E(cmk_kek_check_type(&d, "local://v/keys/k", &eb), CMK_OK);
    CHECK(cmk_kek_pick_alg(&d) == CMK_WRAP_RSA_OAEP_256);
    d.kty = CMK_KTY_RSA_HSM;
    d.wrap_algs = 1u << CMK_WRAP_RSA_OAEP;
    CHECK_E(cmk_kek_check_type(&d, NULL, &eb), CMK_OK);
    CHECK(cmk_kek_pick_alg(&d) == CMK_WRAP_RSA_OAEP);

    d.kty = CMK_KTY_EC;
    d.bits = 256;
    CHECK_E(cmk_kek_check_type(&d, "local://v/keys/ec", &eb), CMK_E_KEY_UNSUPPORTED);
    CHECK_MSG(HAS(eb.msg, "key local://v/keys/ec is EC: only RSA and RSA-HSM keys are supported"),
              "%s", eb.msg);
    d.kty = CMK_KTY_OCT;
    CHECK_E(cmk_kek_check_type(&d, NULL, &eb), CMK_E_KEY_UNSUPPORTED);
    CHECK(HAS(eb.msg, "is oct") && HAS(eb.msg, d.kid));
    d.kty = CMK_KTY_UNKNOWN;
    CHECK_E(cmk_kek_check_type(&d, NULL, &eb), CMK_E_KEY_UNSUPPORTED);
    d.kty = CMK_KTY_RSA;
    d.bits = 1024;
    CHECK_E(cmk_kek_check_type(&d, NULL, &eb), CMK_E_KEY_UNSUPPORTED);
    CHECK(HAS(eb.msg, "2048"));
    d.bits = 4096;
    d.wrap_algs = 0;
    CHECK(cmk_kek_pick_alg(&d) == CMK_WRAP_NONE);
    CHECK_E(cmk_kek_check_type(&d, NULL, &eb), CMK_E_KEY_UNSUPPORTED);
}

static void test_local_dispatch(void)
{
    cmk_errbuf eb = {0};
    cmk_kek *k = NULL;
    cmk_key_desc d;
    json_t *j = NULL;
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    unsigned char dek[32], w[CMK_WRAPPED_MAX], back[64];
    size_t wl = 0, bl;

    CHECK_E(cmk_vault_create(home, "kv", NULL, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_set_policy(home, "kv", ident.principal_id, perms, 3, NULL, &eb), CMK_OK);
    CHECK_E(cmk_vault_key_create(home, "kv", "rsa", "RSA", 2048, &j, &eb), CMK_OK);
    char *vkid = strdup(cmk_json_str(json_object_get(j, "key"), "kid"));
    json_decref(j);
    CHECK_E(cmk_vault_key_create(home, "kv", "ec", "EC", 256, &j, &eb), CMK_OK);
    char *eckid = strdup(cmk_json_str(json_object_get(j, "key"), "kid"));
    json_decref(j);

    CHECK_E(cmk_kek_open(home, NULL, &k, &eb), CMK_OK);
    REQUIRE(k);
    CHECK_E(cmk_kek_describe(k, "local://kv/keys/rsa", ident.principal_id, &d, &eb), CMK_OK);
    CHECK(strcmp(d.kid, vkid) == 0 && d.requested_versioned == 0 && d.kty == CMK_KTY_RSA);
    CHECK_E(cmk_kek_check_type(&d, "local://kv/keys/rsa", &eb), CMK_OK);
    cmk_wrap_alg alg = cmk_kek_pick_alg(&d);
    CHECK(alg == CMK_WRAP_RSA_OAEP_256);
    test_fill_random(dek, sizeof(dek), 42);
    CHECK_E(cmk_kek_wrap(k, d.kid, ident.principal_id, alg, dek, sizeof(dek), w, &wl, &eb), CMK_OK);
    CHECK(wl == 256);
    bl = sizeof(back);
    CHECK_E(cmk_kek_unwrap(k, d.kid, ident.principal_id, alg, w, wl, back, &bl, &eb), CMK_OK);
    CHECK(bl == 32 && memcmp(back, dek, 32) == 0);
    bl = sizeof(back);
    CHECK_E(cmk_kek_unwrap(k, d.kid, ident.principal_id, CMK_WRAP_RSA_OAEP, w, wl, back, &bl, &eb),
            CMK_E_INTEGRITY);
    CHECK(bl == 0);

    /* The seed's EC refusal: described fine, refused by the type check. */
    CHECK_E(cmk_kek_describe(k, eckid, ident.principal_id, &d, &eb), CMK_OK);
    CHECK(d.kty == CMK_KTY_EC);
    CHECK_E(cmk_kek_check_type(&d, eckid, &eb), CMK_E_KEY_UNSUPPORTED);
    CHECK(HAS(eb.msg, "only RSA and RSA-HSM") && HAS(eb.msg, eckid));

    /* Errors pass through with the vault's message. */
    CHECK_E(
        cmk_kek_describe(k, "local://kv/keys/rsa", "00000000-0000-4000-8000-000000000000", &d, &eb),
        CMK_E_KEY_DENIED);
    CHECK(HAS(eb.msg, "00000000-0000-4000-8000-000000000000"));
    CHECK_E(cmk_kek_describe(k, "local://kv/keys/nokey", ident.principal_id, &d, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_kek_describe(k, "local://kv/keys", ident.principal_id, &d, &eb), CMK_E_INVAL);

    /* Identifiers no provider serves. */
    CHECK_E(cmk_kek_describe(k, "not-a-key-id", ident.principal_id, &d, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(HAS(eb.msg, "no provider serves") && HAS(eb.msg, "not-a-key-id") &&
          HAS(eb.msg, "local://"));
    CHECK_E(cmk_kek_wrap(k, "ftp://x.vault.azure.net/keys/k/1", ident.principal_id, alg, dek, 32, w,
                         &wl, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK(wl == 0);
    /* A Key Vault identifier over plain http is refused before anything is sent. */
    CHECK_E(cmk_kek_wrap(k, "http://x.vault.azure.net/keys/k/1", ident.principal_id, alg, dek, 32,
                         w, &wl, &eb),
            CMK_E_INVAL);
    CHECK(HAS(eb.msg, "plain http://") && wl == 0);
    bl = sizeof(back);
    CHECK_E(cmk_kek_unwrap(k, "fake:x", ident.principal_id, alg, w, 256, back, &bl, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_kek_describe(k, NULL, ident.principal_id, &d, &eb), CMK_E_INVAL);
    CHECK_E(cmk_kek_describe(k, "", ident.principal_id, &d, &eb), CMK_E_INVAL);
    cmk_kek_close(k);
    cmk_kek_close(NULL);
    free(vkid);
    free(eckid);
}

static void test_extra_first(void)
{
    cmk_errbuf eb = {0};
    struct fake f = {0};
    cmk_kek_provider fp = fake_provider(&f);
    cmk_kek *k = NULL;
    cmk_key_desc d;
    unsigned char dek[32], w[CMK_WRAPPED_MAX], back[64];
    size_t wl = 0, bl;

    CHECK_E(cmk_kek_open(home, &fp, &k, &eb), CMK_OK);
    REQUIRE(k);
    /* The caller's provider is asked first, even for local:// identifiers it claims. */
    CHECK_E(cmk_kek_describe(k, "local://special/keys/k", "p", &d, &eb), CMK_OK);
    CHECK(f.calls == 1 && d.kty == CMK_KTY_RSA_HSM);
    CHECK(cmk_kek_pick_alg(&d) == CMK_WRAP_RSA_OAEP);
    memset(dek, 3, sizeof(dek));
    CHECK_E(cmk_kek_wrap(k, "fake:k", "p", CMK_WRAP_RSA_OAEP, dek, 32, w, &wl, &eb), CMK_OK);
    bl = sizeof(back);
    CHECK_E(cmk_kek_unwrap(k, "fake:k", "p", CMK_WRAP_RSA_OAEP, w, wl, back, &bl, &eb), CMK_OK);
    CHECK(bl == 32 && memcmp(back, dek, 32) == 0 && f.calls == 3);
    /* Others still reach the local vault. */
    CHECK_E(cmk_kek_describe(k, "local://kv/keys/rsa", ident.principal_id, &d, &eb), CMK_OK);
    CHECK(f.calls == 3 && d.kty == CMK_KTY_RSA);

    /* A provider error keeps its code and message; a silent one gets a message. */
    f.fail = CMK_E_KEY_UNREACHABLE;
    CHECK_E(cmk_kek_describe(k, "fake:k", "p", &d, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(HAS(eb.msg, "fake says"));
    f.silent = 1;
    CHECK_E(cmk_kek_describe(k, "fake:k", "p", &d, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(HAS(eb.msg, "fake") && HAS(eb.msg, "fake:k") && eb.code == CMK_E_KEY_UNREACHABLE);
    /* A failing unwrap never leaves bytes with the caller. */
    memset(back, 0, sizeof(back));
    bl = sizeof(back);
    CHECK_E(cmk_kek_unwrap(k, "fake:k", "p", CMK_WRAP_RSA_OAEP, w, wl, back, &bl, &eb),
            CMK_E_KEY_UNREACHABLE);
    CHECK(bl == 0 && back[0] == 0);
    f.fail = CMK_OK;
    f.silent = 0;
    /* A provider that breaks the output bound is caught. */
    f.wrap_len = CMK_WRAPPED_MAX + 1;
    CHECK_E(cmk_kek_wrap(k, "fake:k", "p", CMK_WRAP_RSA_OAEP, dek, 32, w, &wl, &eb), CMK_E_CRYPTO);
    CHECK(wl == 0);
    cmk_kek_close(k);
    /* Borrowed: the set does not release the caller's provider. */
    CHECK(f.released == 0);

    /* No home: only the caller's provider. */
    CHECK_E(cmk_kek_open(NULL, &fp, &k, &eb), CMK_OK);
    f.wrap_len = 0;
    CHECK_E(cmk_kek_describe(k, "local://kv/keys/rsa", ident.principal_id, &d, &eb),
            CMK_E_KEY_NOT_FOUND);
    CHECK_E(cmk_kek_describe(k, "fake:k", "p", &d, &eb), CMK_OK);
    cmk_kek_close(k);
}

static void test_provider_free(void)
{
    struct fake *f = calloc(1, sizeof(*f));
    cmk_kek_provider *p = calloc(1, sizeof(*p));
    REQUIRE(f && p);
    *p = fake_provider(f);
    cmk_kek_provider_free(p);
    CHECK(f->released == 1);
    free(f);
    cmk_kek_provider_free(NULL);
    p = calloc(1, sizeof(*p)); /* no release function */
    cmk_kek_provider_free(p);
}

/* ---- threads through one dispatcher ---- */

static cmk_kek *shared;
static char shared_kid[CMK_ID_MAX];
static int thread_fail;

static void *worker(void *arg)
{
    cmk_errbuf eb = {0};
    unsigned char dek[32], w[CMK_WRAPPED_MAX], back[64];
    size_t wl, bl;
    cmk_key_desc d;

    for (int i = 0; i < 10; i++) {
        test_fill_random(dek, sizeof(dek), (uint64_t)(intptr_t)arg * 100 + (uint64_t)i);
        cmk_wrap_alg alg = i & 1 ? CMK_WRAP_RSA_OAEP : CMK_WRAP_RSA_OAEP_256;
        bl = sizeof(back);
        if (cmk_kek_describe(shared, "local://kv/keys/rsa", ident.principal_id, &d, &eb) !=
                CMK_OK ||
            cmk_kek_wrap(shared, shared_kid, ident.principal_id, alg, dek, 32, w, &wl, &eb) !=
                CMK_OK ||
            cmk_kek_unwrap(shared, shared_kid, ident.principal_id, alg, w, wl, back, &bl, &eb) !=
                CMK_OK ||
            bl != 32 || memcmp(back, dek, 32) != 0) {
            fprintf(stderr, "worker: %s\n", eb.msg);
            __atomic_add_fetch(&thread_fail, 1, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    cmk_errbuf eb = {0};
    pthread_t t[4];
    cmk_key_desc d;

    CHECK_E(cmk_kek_open(home, NULL, &shared, &eb), CMK_OK);
    CHECK_E(cmk_kek_describe(shared, "local://kv/keys/rsa", ident.principal_id, &d, &eb), CMK_OK);
    snprintf(shared_kid, sizeof(shared_kid), "%s", d.kid);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(thread_fail == 0);
    cmk_kek_close(shared);
}

int main(void)
{
    cmk_errbuf eb = {0};

    snprintf(home, sizeof(home), "%s", test_tmpdir("kekhome"));
    CHECK_E(cmk_identity_create(home, "kekuser", &ident, &eb), CMK_OK);
    test_names();
    test_check_type_and_alg();
    test_local_dispatch();
    test_extra_first();
    test_provider_free();
    test_threads();
    return check_summary();
}
