/* test_vault_serve_parts.c — the pure parts of `cmkstore vault serve`: the URL map
 * (tools/serve/vault_route.c: every endpoint, trailing slashes, case of the operation words,
 * bad names and versions, methods), api-version values, base64url (http_util.c: known
 * vectors, no padding, refusals, bounds), tokens (vault_token.c: issue and verify, expiry,
 * a token of another secret, any altered byte, truncation) and the REST shapes and error
 * mapping (vault_rest.c). */
#include <stdio.h>
#include <string.h>

#include "core/base/b64url.h"
#include "tests/check.h"
#include "tools/serve/http_util.h"
#include "tools/serve/vault_rest.h"
#include "tools/serve/vault_route.h"
#include "tools/serve/vault_token.h"

#define V32 "0123456789abcdef0123456789abcdef"

struct routed {
    const char *method, *path;
    enum vault_route_status st;
    enum vault_rt rt;
    const char *name, *version;
};

static const struct routed cases[] = {
    {"GET", "/keys/k", VROUTE_OK, VRT_KEY, "k", ""},
    {"GET", "/keys/k/", VROUTE_OK, VRT_KEY, "k", ""},
    {"GET", "/keys/my-Key-1/" V32, VROUTE_OK, VRT_KEY, "my-Key-1", V32},
    {"GET", "/keys/k/" V32 "/", VROUTE_OK, VRT_KEY, "k", V32},
    {"GET", "/keys/k/0123456789ABCDEF0123456789ABCDEF", VROUTE_OK, VRT_KEY, "k", V32},
    {"GET", "/keys/k/versions", VROUTE_OK, VRT_VERSIONS, "k", ""},
    {"GET", "/keys/k/versions/", VROUTE_OK, VRT_VERSIONS, "k", ""},
    {"POST", "/keys/k/" V32 "/wrapkey", VROUTE_OK, VRT_WRAP, "k", V32},
    {"POST", "/keys/k/" V32 "/unwrapKey", VROUTE_OK, VRT_UNWRAP, "k", V32},
    {"POST", "/keys/k//wrapkey", VROUTE_OK, VRT_WRAP, "k", ""},
    {"GET", "/deletedkeys/k", VROUTE_OK, VRT_DELETED, "k", ""},
    {"GET", "/deletedkeys/k/", VROUTE_OK, VRT_DELETED, "k", ""},
    {"GET", "/metadata/identity/oauth2/token", VROUTE_OK, VRT_TOKEN, "", ""},
    {"GET", "/metadata/identity/oauth2/token/", VROUTE_OK, VRT_TOKEN, "", ""},
    {"POST", "/cmkstore/test/throttle", VROUTE_OK, VRT_THROTTLE, "", ""},
    {"POST", "/cmkstore/test/expire-tokens", VROUTE_OK, VRT_EXPIRE, "", ""},
    {"DELETE", "/keys/k", VROUTE_BAD_METHOD, VRT_KEY, "k", ""},
    {"GET", "/keys/k/" V32 "/wrapkey", VROUTE_BAD_METHOD, VRT_WRAP, "k", V32},
    {"POST", "/metadata/identity/oauth2/token", VROUTE_BAD_METHOD, VRT_TOKEN, "", ""},
    {"GET", "/keys/bad_name", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"GET", "/keys/k/0123", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"GET", "/keys/k/" V32 "0", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"GET", "/keys/k/g123456789abcdef0123456789abcdef", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"POST", "/keys/k/nothex/wrapkey", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"GET", "/deletedkeys/a.b", VROUTE_BAD_NAME, 0, NULL, NULL},
    {"GET", "/keys/", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "/keys", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "/keys/k//", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"POST", "/keys/k/" V32 "/sign", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"POST", "/keys/k/" V32 "/wrapkey/x", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "/secrets/s", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "/deletedkeys/", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "", VROUTE_UNKNOWN, 0, NULL, NULL},
    {"GET", "/metadata/identity/oauth2/token//", VROUTE_UNKNOWN, 0, NULL, NULL},
};

static void check_routes(void)
{
    char longname[200];
    vault_route r;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct routed *c = &cases[i];
        enum vault_route_status st = vault_route_match(c->method, c->path, &r);
        CHECK_MSG(st == c->st, "%s %s: status %d, want %d", c->method, c->path, st, c->st);
        if (c->name && st == c->st) {
            CHECK_MSG(r.rt == c->rt, "%s %s: rt %d", c->method, c->path, r.rt);
            CHECK_MSG(strcmp(r.name, c->name) == 0, "%s %s: name '%s'", c->method, c->path, r.name);
            CHECK_MSG(strcmp(r.version, c->version) == 0, "%s %s: version '%s'", c->method, c->path,
                      r.version);
        }
        if (st == VROUTE_BAD_METHOD)
            CHECK(r.allow && (strcmp(r.allow, "GET") == 0 || strcmp(r.allow, "POST") == 0));
    }
    memset(longname, 'a', sizeof(longname));
    memcpy(longname, "/keys/", 6);
    longname[6 + 127] = '\0';
    CHECK(vault_route_match("GET", longname, &r) == VROUTE_OK && strlen(r.name) == 127);
    longname[6 + 127] = 'a';
    longname[6 + 128] = '\0';
    CHECK(vault_route_match("GET", longname, &r) == VROUTE_BAD_NAME);
    CHECK(vault_route_match(NULL, "/keys/k", &r) == VROUTE_UNKNOWN);

    CHECK(vault_api_version_valid("7.4"));
    CHECK(vault_api_version_valid("2025-07-01"));
    CHECK(vault_api_version_valid("7.5-preview.1"));
    CHECK(!vault_api_version_valid(""));
    CHECK(!vault_api_version_valid(NULL));
    CHECK(!vault_api_version_valid("v7.4"));
    CHECK(!vault_api_version_valid("7.4;x"));
    CHECK(!vault_api_version_valid("123456789012345678901234567890123"));
}

static void check_b64url(void)
{
    static const struct {
        const char *plain, *enc;
    } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
             {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
    unsigned char bin[] = {0xfb, 0xff, 0xfe}, out[64];
    char enc[64];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = strlen(v[i].plain);
        CHECK(cmk_b64url_encode((const unsigned char *)v[i].plain, n, enc, sizeof(enc)) ==
              (long)strlen(v[i].enc));
        CHECK(strcmp(enc, v[i].enc) == 0);
        CHECK(cmk_b64url_decode(v[i].enc, strlen(v[i].enc), out, sizeof(out)) == (long)n);
        CHECK(memcmp(out, v[i].plain, n) == 0);
    }
    CHECK(cmk_b64url_encode(bin, 3, enc, sizeof(enc)) == 4 && strcmp(enc, "-__-") == 0);
    CHECK(cmk_b64url_decode("Zm8=", 4, out, sizeof(out)) == 2);   /* padding tolerated */
    CHECK(cmk_b64url_decode("+//+", 4, out, sizeof(out)) == -1);  /* not the url alphabet */
    CHECK(cmk_b64url_decode("Zm9vY", 5, out, sizeof(out)) == -1); /* 1 char left over */
    CHECK(cmk_b64url_decode("Zh", 2, out, sizeof(out)) == -1);    /* non-zero spare bits */
    CHECK(cmk_b64url_decode("Zm9vYmFy", 8, out, 5) == -1);        /* no room */
    CHECK(cmk_b64url_encode(bin, 3, enc, 4) == -1);               /* no room for the NUL */
}

static void check_tokens(void)
{
    unsigned char s1[32], s2[32];
    vault_tokens *t1, *t2;
    vault_token_claims cl;
    char tok[VAULT_TOKEN_MAX], bad[VAULT_TOKEN_MAX];
    const char *p = "11111111-2222-3333-4444-555555555555";
    const char *c = "66666666-7777-8888-9999-000000000000";

    memset(s1, 1, sizeof(s1));
    memset(s2, 2, sizeof(s2));
    t1 = vault_tokens_from_secret(s1);
    t2 = vault_tokens_from_secret(s2);
    CHECK(t1 && t2);
    if (!t1 || !t2)
        return;
    CHECK(vault_token_issue(t1, p, c, 1000, "https://vault.azure.net", tok, sizeof(tok)) == 0);
    CHECK(strncmp(tok, "cmkv1.", 6) == 0);
    CHECK(vault_token_verify(t1, tok, 999, &cl) == VAULT_TOKEN_OK);
    CHECK(strcmp(cl.principal, p) == 0 && strcmp(cl.client_id, c) == 0 && cl.exp == 1000);
    CHECK(strcmp(cl.resource, "https://vault.azure.net") == 0);
    CHECK(vault_token_verify(t1, tok, 1000, &cl) == VAULT_TOKEN_EXPIRED);
    CHECK(vault_token_verify(t2, tok, 999, &cl) == VAULT_TOKEN_BAD);
    CHECK(cl.principal[0] == '\0');
    /* Every single altered character is refused. */
    for (size_t i = 0; tok[i]; i++) {
        snprintf(bad, sizeof(bad), "%s", tok);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        CHECK_MSG(vault_token_verify(t1, bad, 999, &cl) == VAULT_TOKEN_BAD, "altered at %zu", i);
    }
    for (size_t n = 0; tok[n]; n++) {
        snprintf(bad, sizeof(bad), "%.*s", (int)n, tok);
        CHECK_MSG(vault_token_verify(t1, bad, 999, &cl) == VAULT_TOKEN_BAD, "cut at %zu", n);
    }
    CHECK(vault_token_verify(t1, NULL, 0, &cl) == VAULT_TOKEN_BAD);
    CHECK(vault_token_verify(t1, "", 0, &cl) == VAULT_TOKEN_BAD);
    CHECK(vault_token_issue(t1, "a|b", c, 1, "r", tok, sizeof(tok)) == -1);
    CHECK(vault_token_issue(t1, p, c, 1, "r", tok, 20) == -1);
    vault_tokens_free(t1);
    vault_tokens_free(t2);
}

static void check_rest(void)
{
    json_t *az = json_pack(
        "{s:{s:s, s:s, s:[s,s], s:s, s:s}, s:{s:b, s:s, s:s, s:s, s:i, s:n, s:n}, s:s, s:s}", "key",
        "kid", "local://v/keys/k/" V32, "kty", "RSA", "keyOps", "wrapKey", "unwrapKey", "n", "AQAB",
        "e", "AQAB", "attributes", "enabled", 1, "created", "2024-05-01T12:00:00Z", "updated",
        "2024-05-01T12:00:01Z", "recoveryLevel", "Recoverable", "recoverableDays", 90, "expires",
        "notBefore", "deletedDate", "2024-05-02T00:00:00Z", "scheduledPurgeDate",
        "2024-08-01T00:00:00Z");
    json_t *r = vault_rest_key(az, "https://h:1"), *d, *e, *list, *l;
    char kid[64];

    CHECK(r != NULL);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(r, "key"), "kid")),
                 "https://h:1/keys/k/" V32) == 0);
    CHECK(json_array_size(json_object_get(json_object_get(r, "key"), "key_ops")) == 2);
    CHECK(json_integer_value(json_object_get(json_object_get(r, "attributes"), "created")) ==
          1714564800);
    CHECK(json_object_get(json_object_get(r, "attributes"), "exp") == NULL);
    CHECK(json_is_true(json_object_get(json_object_get(r, "attributes"), "enabled")));
    d = vault_rest_deleted(az, "https://h:1", "k");
    CHECK(d && strcmp(json_string_value(json_object_get(d, "recoveryId")),
                      "https://h:1/deletedkeys/k") == 0);
    CHECK(d && json_integer_value(json_object_get(d, "deletedDate")) == 1714608000);
    list = json_pack("[{s:s, s:o}]", "kid", "local://v/keys/k/" V32, "attributes",
                     json_deep_copy(json_object_get(az, "attributes")));
    l = vault_rest_versions(list, "https://h:1");
    CHECK(l && json_array_size(json_object_get(l, "value")) == 1 &&
          json_is_null(json_object_get(l, "nextLink")));
    e = vault_rest_error("Forbidden", "AccessDenied", "no");
    CHECK(e && strcmp(json_string_value(json_object_get(
                          json_object_get(json_object_get(e, "error"), "innererror"), "code")),
                      "AccessDenied") == 0);
    CHECK(vault_rest_map(CMK_E_KEY_DENIED).status == 403);
    CHECK(strcmp(vault_rest_map(CMK_E_KEY_DISABLED).inner, "KeyDisabled") == 0);
    CHECK(vault_rest_map(CMK_E_KEY_NOT_FOUND).status == 404);
    CHECK(vault_rest_map(CMK_E_KEY_DELETED).status == 404);
    CHECK(vault_rest_map(CMK_E_INTEGRITY).status == 400);
    CHECK(vault_rest_map(CMK_E_KEY_UNREACHABLE).status == 500);
    CHECK(vault_rest_kid("local://v/keys/k", "https://h", kid, sizeof(kid)) == 0 &&
          strcmp(kid, "https://h/keys/k") == 0);
    CHECK(vault_rest_kid("local://v/k", "https://h", kid, sizeof(kid)) == -1);
    CHECK(vault_rest_kid("local://v/keys/k", "https://h", kid, 8) == -1);
    json_decref(az);
    json_decref(r);
    json_decref(d);
    json_decref(e);
    json_decref(list);
    json_decref(l);
}

int main(void)
{
    check_routes();
    check_b64url();
    check_tokens();
    check_rest();
    return check_summary();
}
