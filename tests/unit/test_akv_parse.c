/*
 * test_akv_parse.c — the akv provider's pure parts: key identifiers, the 401 challenge and
 * its resource-domain check, key bundles, operation results, token responses, error bodies,
 * the mapping of Key Vault replies to key-access errors, Retry-After, base64url, and the
 * token cache driven by a clock.
 */
#include <string.h>

#include "core/base/secmem.h"
#include "kek/akv/challenge.h"
#include "kek/akv/errmap.h"
#include "kek/akv/http.h"
#include "kek/akv/json.h"
#include "kek/akv/kid.h"
#include "kek/akv/token.h"
#include "tests/check.h"

static void test_kid(void)
{
    cmk_akv_kid k;
    cmk_errbuf eb = {0};
    char out[CMK_ID_MAX];

    CHECK_OK(cmk_akv_kid_parse("https://MyVault.vault.azure.net/keys/mykey", &k, &eb));
    CHECK(strcmp(k.host, "myvault.vault.azure.net") == 0);
    CHECK(strcmp(k.base, "https://myvault.vault.azure.net") == 0);
    CHECK(strcmp(k.name, "mykey") == 0 && k.version[0] == '\0' && k.port == 0);
    CHECK_OK(cmk_akv_kid_parse("https://myvault.vault.azure.net/keys/mykey/", &k, &eb));
    CHECK(k.version[0] == '\0');
    CHECK_OK(cmk_akv_kid_parse(
        "https://myvault.vault.azure.net/keys/my-key/0123456789abcdef0123456789ABCDEF", &k, &eb));
    CHECK(strcmp(k.version, "0123456789abcdef0123456789ABCDEF") == 0);
    CHECK_OK(cmk_akv_kid_parse("https://127.0.0.1:8443/keys/k1/abc", &k, &eb));
    CHECK(k.port == 8443 && strcmp(k.base, "https://127.0.0.1:8443") == 0);
    CHECK_OK(cmk_akv_kid_format(&k, NULL, out, sizeof(out), &eb));
    CHECK(strcmp(out, "https://127.0.0.1:8443/keys/k1") == 0);
    CHECK_OK(cmk_akv_kid_format(&k, "v2", out, sizeof(out), &eb));
    CHECK(strcmp(out, "https://127.0.0.1:8443/keys/k1/v2") == 0);
    CHECK_OK(cmk_akv_kid_parse("https://[::1]:9000/keys/k1", &k, &eb));
    CHECK(strcmp(k.base, "https://[::1]:9000") == 0);
    CHECK_OK(cmk_akv_kid_parse("https://h:443/keys/k1", &k, &eb));
    CHECK(strcmp(k.base, "https://h") == 0);

    /* Plain http is refused with a message saying so. */
    CHECK_RC(cmk_akv_kid_parse("http://myvault.vault.azure.net/keys/k", &k, &eb), CMK_E_INVAL);
    CHECK(strstr(eb.msg, "plain http://") != NULL);
    CHECK(cmk_akv_kid_claims("HTTP://x/keys/k") && cmk_akv_kid_claims("https://x/keys/k"));
    CHECK(!cmk_akv_kid_claims("local://v/keys/k") && !cmk_akv_kid_claims("pkcs11:token=a"));

    static const char *const bad[] = {
        "https://",
        "https://host",
        "https://host/",
        "https://host/keys",
        "https://host/keys/",
        "https://host/secrets/k",
        "https://host/keys/k/v/extra",
        "https://host/keys/k_1",
        "https://host/keys/k/v-1",
        "https://host/keys//v",
        "https://host:0/keys/k",
        "https://host:65536/keys/k",
        "https://host:/keys/k",
        "https://host:8a/keys/k",
        "https://user@host/keys/k",
        "https://host/keys/k?api-version=7.4",
        "https://host/keys/k#frag",
        "https://-host/keys/k",
        "https://[::1/keys/k",
        "https://ho st/keys/k",
        "ftp://host/keys/k",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cmk_errbuf_clear(&eb);
        CHECK_MSG(cmk_akv_kid_parse(bad[i], &k, &eb) == CMK_E_INVAL && eb.msg[0], "%s", bad[i]);
    }
    {
        char longname[200];
        memset(longname, 'a', sizeof(longname));
        snprintf(longname, sizeof(longname), "https://h/keys/%0128d", 0);
        CHECK_RC(cmk_akv_kid_parse(longname, &k, &eb), CMK_E_INVAL);
    }
}

static void test_challenge(void)
{
    cmk_akv_challenge c;
    cmk_errbuf eb = {0};

    CHECK_OK(cmk_akv_challenge_parse(
        "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af\", "
        "resource=\"https://vault.azure.net\"",
        &c, &eb));
    CHECK(strcmp(c.authority, "https://login.microsoftonline.com") == 0);
    CHECK(strcmp(c.tenant, "72f988bf-86f1-41af") == 0);
    CHECK(strcmp(c.resource, "https://vault.azure.net") == 0);
    CHECK(strcmp(c.scope, "https://vault.azure.net/.default") == 0);
    CHECK(cmk_akv_challenge_domain_ok(&c, "myvault.vault.azure.net"));
    CHECK(!cmk_akv_challenge_domain_ok(&c, "myvault.vault.azure.net.evil.com"));
    CHECK(!cmk_akv_challenge_domain_ok(&c, "evilvault.azure.net"));
    CHECK(!cmk_akv_challenge_domain_ok(&c, "127.0.0.1"));

    /* scope instead of resource, authorization_uri, unquoted values, odd spacing, case. */
    CHECK_OK(cmk_akv_challenge_parse("bearer  scope=\"https://vault.azure.net/.default\" ,"
                                     "authorization_uri=https://login.example/tenant-1/x",
                                     &c, &eb));
    CHECK(strcmp(c.resource, "https://vault.azure.net") == 0 && strcmp(c.tenant, "tenant-1") == 0);
    CHECK_OK(cmk_akv_challenge_parse("Bearer resource=\"https://127.0.0.1:8443/\"", &c, &eb));
    CHECK(strcmp(c.resource, "https://127.0.0.1:8443") == 0 && c.tenant[0] == '\0');
    CHECK(cmk_akv_challenge_domain_ok(&c, "127.0.0.1"));
    CHECK(!cmk_akv_challenge_domain_ok(&c, "127.0.0.2"));
    /* A one-label resource host is no parent domain of anything. */
    CHECK_OK(cmk_akv_challenge_parse("Bearer resource=\"https://net\"", &c, &eb));
    CHECK(!cmk_akv_challenge_domain_ok(&c, "vault.net"));

    static const char *const bad[] = {
        "",
        "Basic realm=\"x\"",
        "Bearer",
        "Bearer authorization=\"https://login/t\"",
        "Bearer resource=\"http://vault.azure.net\"",
        "Bearer resource=\"https://vault.azure.net",
        "Bearer resource",
        "Bearer =x",
        "Bearerresource=\"https://vault.azure.net\"",
        "Bearer resource=\"https://vault.azure.net\", authorization=\"http://login/t\"",
        "Bearer resource=\"https://vault\x01.azure.net\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cmk_errbuf_clear(&eb);
        CHECK_MSG(cmk_akv_challenge_parse(bad[i], &c, &eb) == CMK_E_INVAL && eb.msg[0], "%s",
                  bad[i]);
    }
    CHECK_RC(cmk_akv_challenge_parse(NULL, &c, &eb), CMK_E_INVAL);
}

/* A 2048-bit modulus (top bit set) and a 3072-bit one with a leading zero byte, base64url. */
static void modulus(char *out, size_t bits, int leading_zero)
{
    unsigned char n[400];
    size_t len = bits / 8, off = 0;

    if (leading_zero)
        n[off++] = 0;
    memset(n + off, 0xA5, len);
    n[off] = 0xC1;
    cmk_akv_b64url_encode(n, len + off, out);
}

static void test_key_bundle(void)
{
    char n2048[600], n3072[600], body[4096];
    cmk_akv_key k;
    cmk_errbuf eb = {0};

    modulus(n2048, 2048, 0);
    modulus(n3072, 3072, 1);
    snprintf(body, sizeof(body),
             "{\"key\":{\"kid\":\"https://v.vault.azure.net/keys/k/0123abcd\",\"kty\":\"RSA-HSM\","
             "\"n\":\"%s\",\"e\":\"AQAB\",\"key_ops\":[\"encrypt\",\"wrapKey\",\"unwrapKey\"]},"
             "\"attributes\":{\"enabled\":true,\"nbf\":1600000000,\"exp\":\"1900000000\"}}",
             n2048);
    CHECK_OK(cmk_akv_key_parse(body, strlen(body), &k, &eb));
    CHECK(k.kty == CMK_KTY_RSA_HSM && k.bits == 2048 && k.enabled == 1);
    CHECK(k.ops == (CMK_AKV_OP_WRAP | CMK_AKV_OP_UNWRAP));
    CHECK(strcmp(k.version, "0123abcd") == 0 && k.nbf == 1600000000 && k.exp == 1900000000);
    snprintf(
        body, sizeof(body),
        "{\"key\":{\"kid\":\"https://v/keys/k/v2\",\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\","
        "\"key_ops\":[\"unwrapKey\"]},\"attributes\":{\"enabled\":false}}",
        n3072);
    CHECK_OK(cmk_akv_key_parse(body, strlen(body), &k, &eb));
    CHECK(k.kty == CMK_KTY_RSA && k.bits == 3072 && k.enabled == 0 && k.ops == CMK_AKV_OP_UNWRAP);
    /* EC and oct keys parse (the store refuses them by type). */
    const char *ec = "{\"key\":{\"kid\":\"https://v/keys/e/1\",\"kty\":\"EC\",\"crv\":\"P-256\"}}";
    CHECK_OK(cmk_akv_key_parse(ec, strlen(ec), &k, &eb));
    CHECK(k.kty == CMK_KTY_EC && k.bits == 0 && k.enabled == 1);
    const char *oct = "{\"key\":{\"kid\":\"https://v/keys/o/1\",\"kty\":\"oct-HSM\"}}";
    CHECK_OK(cmk_akv_key_parse(oct, strlen(oct), &k, &eb));
    CHECK(k.kty == CMK_KTY_OCT);

    static const char *const bad[] = {
        "",
        "[]",
        "{}",
        "{\"key\":{\"kty\":\"RSA\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/1\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/\",\"kty\":\"EC\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/1\",\"kty\":\"RSA\",\"e\":\"AQAB\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/1\",\"kty\":\"RSA\",\"n\":\"AAAA\",\"e\":\"AQAB\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/1\",\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}}",
        "{\"key\":{\"kid\":\"https://v/keys/k/a.b\",\"kty\":\"EC\"}}",
        "{\"key\":{\"kid\":\"x\",\"kid\":\"y\",\"kty\":\"EC\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cmk_errbuf_clear(&eb);
        CHECK_MSG(cmk_akv_key_parse(bad[i], strlen(bad[i]), &k, &eb) == CMK_E_INVAL && eb.msg[0],
                  "%s", bad[i]);
    }
}

static void test_result_and_b64(void)
{
    unsigned char in[300], out[300];
    char enc[500], body[600];
    size_t n;
    cmk_errbuf eb = {0};

    for (size_t len = 0; len < 40; len++) {
        test_fill_random(in, len, len + 1);
        cmk_akv_b64url_encode(in, len, enc);
        CHECK(strchr(enc, '=') == NULL && strchr(enc, '+') == NULL && strchr(enc, '/') == NULL);
        CHECK(cmk_akv_b64url_decode(enc, strlen(enc), out, sizeof(out), &n) == 0 && n == len &&
              memcmp(in, out, len) == 0);
    }
    CHECK(cmk_akv_b64url_decode("AQAB", 4, out, sizeof(out), &n) == 0 && n == 3 && out[0] == 1 &&
          out[1] == 0 && out[2] == 1);
    CHECK(cmk_akv_b64url_decode("YQ==", 4, out, sizeof(out), &n) == 0 && n == 1 && out[0] == 'a');
    CHECK(cmk_akv_b64url_decode("Y", 1, out, sizeof(out), &n) != 0);
    CHECK(cmk_akv_b64url_decode("YW*i", 4, out, sizeof(out), &n) != 0);
    CHECK(cmk_akv_b64url_decode("YWJj", 4, out, 2, &n) != 0);

    test_fill_random(in, 256, 7);
    cmk_akv_b64url_encode(in, 256, enc);
    snprintf(body, sizeof(body), "{\"kid\":\"https://v/keys/k/1\",\"value\":\"%s\"}", enc);
    CHECK_OK(cmk_akv_result_parse(body, strlen(body), out, sizeof(out), &n, &eb));
    CHECK(n == 256 && memcmp(in, out, 256) == 0);
    CHECK_RC(cmk_akv_result_parse(body, strlen(body), out, 100, &n, &eb), CMK_E_INVAL);
    CHECK(n == 0);
    CHECK_RC(cmk_akv_result_parse("{\"kid\":\"x\"}", 11, out, sizeof(out), &n, &eb), CMK_E_INVAL);
    CHECK_RC(cmk_akv_result_parse("{\"value\":\"a b\"}", 15, out, sizeof(out), &n, &eb),
             CMK_E_INVAL);
    /* Padding alone decodes to nothing: no data key (found by fuzz_akv_parse). */
    CHECK_RC(cmk_akv_result_parse("{\"value\":\"========\"}", 20, out, sizeof(out), &n, &eb),
             CMK_E_INVAL);
    CHECK(n == 0);
}

static void test_token_parse(void)
{
    cmk_akv_token t;
    cmk_errbuf eb = {0};
    const char *imds = "{\"access_token\":\"eyJ0.abc.def\",\"expires_on\":\"1700003600\","
                       "\"expires_in\":\"3599\",\"token_type\":\"Bearer\","
                       "\"resource\":\"https://vault.azure.net\"}";
    const char *entra = "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"access_token\":\"tok\"}";

    CHECK_OK(cmk_akv_token_parse(imds, strlen(imds), 1700000000, &t, &eb));
    CHECK(t.expires_on == 1700003600 && strcmp(t.value, "eyJ0.abc.def") == 0 && t.len == 12);
    cmk_akv_token_clear(&t);
    CHECK(t.value == NULL);
    CHECK_OK(cmk_akv_token_parse(entra, strlen(entra), 1000, &t, &eb));
    CHECK(t.expires_on == 1000 + 3599);
    cmk_akv_token_clear(&t);

    static const char *const bad[] = {
        "",
        "{}",
        "{\"access_token\":\"\",\"expires_in\":10}",
        "{\"access_token\":\"a b\",\"expires_in\":10}",
        "{\"access_token\":\"abc\"}",
        "{\"access_token\":\"abc\",\"expires_in\":\"soon\"}",
        "{\"access_token\":\"abc\",\"expires_in\":10,\"token_type\":\"MAC\"}",
        "{\"access_token\":\"abc\",\"expires_on\":999}",
        "{\"access_token\":\"abc\",\"expires_in\":-5}",
        "{\"access_token\":42,\"expires_in\":10}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cmk_errbuf_clear(&eb);
        CHECK_MSG(cmk_akv_token_parse(bad[i], strlen(bad[i]), 1000, &t, &eb) == CMK_E_INVAL &&
                      eb.msg[0] && t.value == NULL,
                  "%s", bad[i]);
        /* The message never carries the token text. */
        CHECK(strstr(eb.msg, "abc") == NULL);
    }
}

static void test_error_map(void)
{
    cmk_akv_where w = {.op = "unwrapKey",
                       .host = "myvault.vault.azure.net",
                       .key = "k1",
                       .version = "0a1b",
                       .identity = "'id1' (client id c-1)"};
    cmk_akv_error e;
    cmk_errbuf eb = {0};
    const char *denied = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"The user, group or "
                         "application does not have keys unwrapKey permission\",\"innererror\":"
                         "{\"code\":\"AccessDenied\"}}}";
    const char *rbac = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Caller is not "
                       "authorized\",\"innererror\":{\"code\":\"ForbiddenByRbac\"}}}";
    const char *disabled = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Operation unwrapKey "
                           "is not allowed on a disabled key.\",\"innererror\":{\"code\":"
                           "\"KeyDisabled\"}}}";
    const char *nf = "{\"error\":{\"code\":\"KeyNotFound\",\"message\":\"A key with (name/id) k1 "
                     "was not found in this key vault.\"}}";
    const char *thr = "{\"error\":{\"code\":\"Throttled\",\"message\":\"Rate limit\x01\"}}";

    cmk_akv_error_parse(denied, strlen(denied), &e);
    CHECK(strcmp(e.code, "Forbidden") == 0 && strcmp(e.inner, "AccessDenied") == 0);
    CHECK_RC(cmk_akv_error_map(403, &e, &w, &eb), CMK_E_KEY_DENIED);
    CHECK(strstr(eb.msg, "myvault.vault.azure.net") && strstr(eb.msg, "'k1'") &&
          strstr(eb.msg, "0a1b") && strstr(eb.msg, "client id c-1") &&
          strstr(eb.msg, "AccessDenied"));
    cmk_akv_error_parse(rbac, strlen(rbac), &e);
    CHECK_RC(cmk_akv_error_map(403, &e, &w, &eb), CMK_E_KEY_DENIED);
    CHECK(strstr(eb.msg, "ForbiddenByRbac") != NULL);
    cmk_akv_error_parse(disabled, strlen(disabled), &e);
    CHECK_RC(cmk_akv_error_map(403, &e, &w, &eb), CMK_E_KEY_DISABLED);
    cmk_akv_error_parse(nf, strlen(nf), &e);
    CHECK_RC(cmk_akv_error_map(404, &e, &w, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(strstr(eb.msg, "KeyNotFound") != NULL);
    cmk_akv_error_parse(thr, strlen(thr), &e);
    CHECK(strchr(e.message, '\x01') == NULL);
    CHECK_RC(cmk_akv_error_map(429, &e, &w, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK_RC(cmk_akv_error_map(503, NULL, &w, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK_RC(cmk_akv_error_map(401, NULL, &w, &eb), CMK_E_KEY_DENIED);
    CHECK_RC(cmk_akv_error_map(400, NULL, &w, &eb), CMK_E_INTEGRITY);
    w.op = "get";
    CHECK_RC(cmk_akv_error_map(400, NULL, &w, &eb), CMK_E_INVAL);
    {
        const char *del = "{\"error\":{\"code\":\"Conflict\",\"innererror\":{\"code\":"
                          "\"ObjectIsDeletedButRecoverable\"}}}";
        cmk_akv_error_parse(del, strlen(del), &e);
    }
    CHECK_RC(cmk_akv_error_map(409, &e, &w, &eb), CMK_E_KEY_DELETED);
    CHECK_RC(cmk_akv_error_map(302, NULL, &w, &eb), CMK_E_KEY_UNREACHABLE);
    /* Entra ID's shape, and bodies that are not JSON. */
    {
        const char *entra =
            "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215\"}";
        cmk_akv_error_parse(entra, strlen(entra), &e);
    }
    CHECK(strcmp(e.code, "invalid_client") == 0 && strcmp(e.message, "AADSTS7000215") == 0);
    cmk_akv_error_parse("<html>", 6, &e);
    CHECK(e.code[0] == '\0' && e.message[0] == '\0');
    cmk_akv_error_parse(NULL, 0, &e);
    CHECK(e.code[0] == '\0');

    CHECK(cmk_akv_status_retryable(429) && cmk_akv_status_retryable(503) &&
          cmk_akv_status_retryable(500) && cmk_akv_status_retryable(408));
    CHECK(!cmk_akv_status_retryable(403) && !cmk_akv_status_retryable(404) &&
          !cmk_akv_status_retryable(501) && !cmk_akv_status_retryable(200));
}

static void test_retry_after(void)
{
    CHECK(cmk_akv_retry_after_parse("0", 0) == 0);
    CHECK(cmk_akv_retry_after_parse(" 17 ", 0) == 17);
    CHECK(cmk_akv_retry_after_parse("", 0) == -1);
    CHECK(cmk_akv_retry_after_parse(NULL, 0) == -1);
    CHECK(cmk_akv_retry_after_parse("5s", 0) == -1);
    CHECK(cmk_akv_retry_after_parse("-1", 0) == -1);
    CHECK(cmk_akv_retry_after_parse("99999999999999", 0) == -1);
    /* An HTTP date: seconds from now, never negative. */
    CHECK(cmk_akv_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470L) == 10);
    CHECK(cmk_akv_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490L) == 0);
    CHECK(cmk_akv_retry_after_parse("not a date", 0) == -1);
}

static cmk_akv_token mk(const char *v, int64_t exp)
{
    cmk_akv_token t = {0};
    t.value = cmk_secalloc(strlen(v) + 1);
    memcpy(t.value, v, strlen(v) + 1);
    t.len = strlen(v);
    t.expires_on = exp;
    return t;
}

static void test_token_cache(void)
{
    cmk_akv_tcache *c;
    cmk_akv_token t;
    cmk_errbuf eb = {0};
    char *v;

    REQUIRE(cmk_akv_tcache_new(&c, &eb) == CMK_OK);
    CHECK(cmk_akv_tcache_get(c, "a", 1000) == NULL);
    /* An hour-long token: used until 5 minutes before it expires. */
    t = mk("tok-a1", 1000 + 3600);
    CHECK_OK(cmk_akv_tcache_put(c, "a", &t, 1000, &eb));
    CHECK(t.value == NULL);
    v = cmk_akv_tcache_get(c, "a", 1000);
    CHECK(v && strcmp(v, "tok-a1") == 0);
    cmk_secfree(v);
    v = cmk_akv_tcache_get(c, "a", 1000 + 3600 - 301);
    CHECK(v != NULL);
    cmk_secfree(v);
    CHECK(cmk_akv_tcache_get(c, "a", 1000 + 3600 - 300) == NULL);
    /* Per identity: another key is another token. */
    CHECK(cmk_akv_tcache_get(c, "b", 1000) == NULL);
    t = mk("tok-b1", 1000 + 60);
    CHECK_OK(cmk_akv_tcache_put(c, "b", &t, 1000, &eb));
    /* A one-minute token is renewed at half its life. */
    v = cmk_akv_tcache_get(c, "b", 1029);
    CHECK(v && strcmp(v, "tok-b1") == 0);
    cmk_secfree(v);
    CHECK(cmk_akv_tcache_get(c, "b", 1030) == NULL);
    v = cmk_akv_tcache_get(c, "a", 1030);
    CHECK(v && strcmp(v, "tok-a1") == 0);
    cmk_secfree(v);
    CHECK(cmk_akv_tcache_size(c) == 2);
    /* Replacing and dropping. */
    t = mk("tok-a2", 5000);
    CHECK_OK(cmk_akv_tcache_put(c, "a", &t, 1000, &eb));
    CHECK(cmk_akv_tcache_size(c) == 2);
    v = cmk_akv_tcache_get(c, "a", 1000);
    CHECK(v && strcmp(v, "tok-a2") == 0);
    cmk_secfree(v);
    cmk_akv_tcache_drop(c, "a");
    CHECK(cmk_akv_tcache_get(c, "a", 1000) == NULL && cmk_akv_tcache_size(c) == 1);
    cmk_akv_tcache_drop(c, "nonexistent");
    /* A token issued already lapsed is never served. */
    t = mk("tok-c", 1000);
    CHECK_OK(cmk_akv_tcache_put(c, "c", &t, 1000, &eb));
    CHECK(cmk_akv_tcache_get(c, "c", 1000) == NULL);
    cmk_akv_tcache_free(c);
}

int main(void)
{
    test_kid();
    test_challenge();
    test_key_bundle();
    test_result_and_b64();
    test_token_parse();
    test_error_map();
    test_retry_after();
    test_token_cache();
    return check_summary();
}
