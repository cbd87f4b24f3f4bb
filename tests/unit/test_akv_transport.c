/*
 * test_akv_transport.c — the akv provider against a loopback HTTPS server in Key Vault's shape
 * (tests/unit/akv_server.py, python3 with a self-signed certificate made here by openssl):
 * TLS with the extra CA file and without it, the retry budget (counts of requests, never
 * durations: Retry-After 0, or a cap of 0), the 401 challenge and its resource-domain check,
 * tokens from IMDS (client_id of a user-assigned identity, none for [system]), a client secret
 * (environment and file) and workload identity, the token cache and its renewal when the
 * vault refuses a token, describe/wrap/unwrap round trips, and the mapping of 403, disabled,
 * deleted, missing, 429/5xx and a stopped vault to the key-access errors.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "cmkstore_admin.h"
#include "kek/akv/akv.h"
#include "kek/akv/http.h"
#include "kek/kek.h"
#include "tests/check.h"

static pid_t server_pid = -1;
static char dir[4096], ca[4200], base[64];
static int port;

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void start_server(void)
{
    char cmd[10000], portfile[4200], script[4200];
    const char *src = getenv("CMK_SOURCE_DIR");
    unsigned char *p;
    size_t n;

    REQUIRE(src != NULL);
    snprintf(dir, sizeof(dir), "%s", test_tmpdir("akv"));
    snprintf(ca, sizeof(ca), "%s/cert.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout '%s/key.pem' -out '%s/cert.pem' "
             ">/dev/null 2>&1",
             dir, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "FATAL: openssl could not make a test certificate (is openssl "
                        "installed?)\n");
        exit(1);
    }
    snprintf(script, sizeof(script), "%s/tests/unit/akv_server.py", src);
    server_pid = fork();
    REQUIRE(server_pid >= 0);
    if (server_pid == 0) {
        execlp("python3", "python3", script, dir, (char *)NULL);
        _exit(127);
    }
    atexit(stop_server);
    snprintf(portfile, sizeof(portfile), "%s/port", dir);
    /* Poll for the port file (bounded): the server writes it once it listens. */
    for (int i = 0; i < 600 && !(p = test_read_file(portfile, &n)); i++) {
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            fprintf(stderr, "FATAL: akv_server.py exited (python3 with the cryptography module "
                            "is needed)\n");
            server_pid = -1;
            exit(1);
        }
        sleep_ms(50);
    }
    REQUIRE(p != NULL);
    port = atoi((char *)p);
    free(p);
    REQUIRE(port > 0);
    snprintf(base, sizeof(base), "https://127.0.0.1:%d", port);
}

static cmk_akv_http *http_with(const char *cafile, unsigned attempts, unsigned cap_s,
                               unsigned budget_ms)
{
    cmk_akv_http_cfg cfg;
    cmk_akv_http *h = NULL;
    cmk_errbuf eb = {0};

    cmk_akv_http_cfg_default(&cfg);
    cfg.ca_file = cafile;
    cfg.max_attempts = attempts;
    cfg.retry_after_cap_s = cap_s;
    cfg.sleep_budget_ms = budget_ms;
    cfg.backoff_ms = 1;
    REQUIRE(cmk_akv_http_new(&cfg, &h, &eb) == CMK_OK);
    return h;
}

/* The control endpoint: POST body (or GET with NULL), the reply as JSON. */
static json_t *ctl(const char *body)
{
    static cmk_akv_http *h;
    char url[128];
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    cmk_akv_resp r;
    cmk_errbuf eb = {0};
    json_t *j;

    if (!h)
        h = http_with(ca, 1, 0, 0);
    snprintf(url, sizeof(url), "%s/_ctl", base);
    cmk_akv_req rq = {.method = body ? "POST" : "GET",
                      .url = url,
                      .headers = hdrs,
                      .body = body,
                      .bodylen = body ? strlen(body) : 0};
    REQUIRE(cmk_akv_http_do(h, &rq, "control", &r, &eb) == CMK_OK && r.status == 200);
    j = json_loadb(r.body, r.len, 0, NULL);
    cmk_akv_resp_free(&r);
    REQUIRE(j != NULL);
    return j;
}

static long stat_n(const char *name)
{
    json_t *j = ctl(NULL);
    long v = (long)json_integer_value(json_object_get(j, name));
    json_decref(j);
    return v;
}

static void reset(void)
{
    json_decref(ctl("{\"reset\": true, \"deny\": false, \"resource\": \"https://127.0.0.1\", "
                    "\"token_life\": 3600}"));
}

static void clear_env(void)
{
    static const char *const vars[] = {
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "CMKSTORE_AZURE_CREDENTIAL",
        "CMKSTORE_AZURE_CLIENT_SECRET_FILE",
        "CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION",
        "CMKSTORE_AKV_MAX_ATTEMPTS",
    };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("CMKSTORE_CA_FILE", ca, 1);
    setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", base, 1);
}

static cmk_kek_provider *provider(const char *home)
{
    cmk_kek_provider *p = NULL;
    cmk_errbuf eb = {0};

    REQUIRE(cmk_akv_provider_new(home, &p, &eb) == CMK_OK);
    return p;
}

static void kid(char *out, size_t cap, const char *name, const char *version)
{
    if (version)
        snprintf(out, cap, "%s/keys/%s/%s", base, name, version);
    else
        snprintf(out, cap, "%s/keys/%s", base, name);
}

/* No token, secret or assertion ever appears in a message. */
static int clean_msg(const char *m)
{
    return !strstr(m, "tok-") && !strstr(m, "s3cret") && !strstr(m, "assertion-ok");
}

static void test_tls_and_retries(void)
{
    char url[200];
    const char *hdrs[] = {"Content-Type: application/json", NULL};
    cmk_akv_resp r;
    cmk_errbuf eb = {0};
    cmk_akv_http *h;

    snprintf(url, sizeof(url), "%s/_ctl", base);
    cmk_akv_req get = {.method = "GET", .url = url};
    /* Without the CA file the self-signed server is refused, once (a certificate that does
     * not verify is not retried). */
    h = http_with(NULL, 4, 0, 1000);
    CHECK_RC(cmk_akv_http_do(h, &get, "vault 127.0.0.1", &r, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(r.attempts == 1 && strstr(eb.msg, "vault 127.0.0.1") && strstr(eb.msg, "certificate"));
    cmk_akv_http_free(h);
    /* A bad CA file is an error naming it. */
    {
        cmk_akv_http_cfg cfg;
        cmk_akv_http *bad = NULL;
        cmk_akv_http_cfg_default(&cfg);
        cfg.ca_file = "/nonexistent/ca.pem";
        CHECK_RC(cmk_akv_http_new(&cfg, &bad, &eb), CMK_E_INVAL);
        CHECK(strstr(eb.msg, "/nonexistent/ca.pem") != NULL && bad == NULL);
        cfg.ca_file = "/etc/hostname";
        CHECK_RC(cmk_akv_http_new(&cfg, &bad, &eb), CMK_E_INVAL);
        CHECK(strstr(eb.msg, "no PEM certificate") != NULL);
    }
    /* Plain http is refused by the transport itself. */
    {
        char hurl[200];
        h = http_with(ca, 4, 0, 1000);
        snprintf(hurl, sizeof(hurl), "http://127.0.0.1:%d/_ctl", port);
        cmk_akv_req rq = {.method = "GET", .url = hurl};
        CHECK_RC(cmk_akv_http_do(h, &rq, "vault", &r, &eb), CMK_E_KEY_UNREACHABLE);
        CHECK(r.attempts == 1);
        cmk_akv_http_free(h);
    }

    /* A proxy in the environment is used for the vault, never for the managed-identity
     * endpoint (allow_http requests). The proxy here is a port nothing listens on. */
    {
        int ps = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in pa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t pl = sizeof(pa);
        char proxy[64];
        REQUIRE(ps >= 0 && bind(ps, (struct sockaddr *)&pa, sizeof(pa)) == 0 &&
                getsockname(ps, (struct sockaddr *)&pa, &pl) == 0);
        snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", ntohs(pa.sin_port));
        close(ps);
        setenv("https_proxy", proxy, 1);
        unsetenv("no_proxy");
        unsetenv("NO_PROXY");
        h = http_with(ca, 1, 0, 0);
        cmk_akv_req imds = {.method = "GET", .url = url, .allow_http = 1};
        CHECK_OK(cmk_akv_http_do(h, &imds, "token endpoint", &r, &eb));
        CHECK(r.status == 200);
        cmk_akv_resp_free(&r);
        CHECK_RC(cmk_akv_http_do(h, &get, "vault", &r, &eb), CMK_E_KEY_UNREACHABLE);
        /* curl names the proxy's port it could not connect to */
        CHECK_MSG(strstr(eb.msg, strrchr(proxy, ':') + 1) != NULL, "%s", eb.msg);
        unsetenv("https_proxy");
        CHECK_OK(cmk_akv_http_do(h, &get, "vault", &r, &eb));
        cmk_akv_resp_free(&r);
        cmk_akv_http_free(h);
    }

    /* Retry budget: 429s with Retry-After 0 are retried up to 4 attempts in all. */
    h = http_with(ca, 4, 10, 20000);
    snprintf(url, sizeof(url), "%s/keys/k1?api-version=7.4", base);
    cmk_akv_req kv = {.method = "GET", .url = url, .headers = hdrs};
    reset();
    json_decref(ctl("{\"faults\": [{\"status\": 429, \"retry_after\": 0}, {\"status\": 503, "
                    "\"retry_after\": 0}, {\"status\": 500, \"retry_after\": \"0\"}]}"));
    CHECK_OK(cmk_akv_http_do(h, &kv, "vault", &r, &eb));
    CHECK(r.attempts == 4 && r.status == 401); /* through the faults to the challenge */
    CHECK(stat_n("vault") == 4);
    cmk_akv_resp_free(&r);
    /* ... and no more: the fifth would have succeeded. */
    reset();
    json_decref(ctl("{\"faults\": [{\"status\": 429, \"retry_after\": 0}, {\"status\": 429, "
                    "\"retry_after\": 0}, {\"status\": 429, \"retry_after\": 0}, {\"status\": 429, "
                    "\"retry_after\": 0}]}"));
    CHECK_OK(cmk_akv_http_do(h, &kv, "vault", &r, &eb));
    CHECK(r.attempts == 4 && r.status == 429 && stat_n("vault") == 4);
    cmk_akv_resp_free(&r);
    json_decref(ctl("{\"reset\": true}"));
    cmk_akv_http_free(h);
    /* A long Retry-After is capped (cap 0 here: no wait at all) ... */
    h = http_with(ca, 3, 0, 20000);
    json_decref(ctl("{\"faults\": [{\"status\": 503, \"retry_after\": 3600}, {\"status\": 503, "
                    "\"retry_after\": 3600}]}"));
    CHECK_OK(cmk_akv_http_do(h, &kv, "vault", &r, &eb));
    CHECK(r.attempts == 3 && r.status == 401);
    cmk_akv_resp_free(&r);
    cmk_akv_http_free(h);
    /* ... and waits beyond the sleep budget are not taken: one attempt, the 503 returned. */
    h = http_with(ca, 4, 10, 0);
    json_decref(ctl("{\"faults\": [{\"status\": 503, \"retry_after\": 1}]}"));
    CHECK_OK(cmk_akv_http_do(h, &kv, "vault", &r, &eb));
    CHECK(r.attempts == 1 && r.status == 503);
    cmk_akv_resp_free(&r);
    /* Statuses that are answers are not retried. */
    json_decref(ctl("{\"reset\": true, \"faults\": [{\"status\": 403, \"retry_after\": 0}]}"));
    CHECK_OK(cmk_akv_http_do(h, &kv, "vault", &r, &eb));
    CHECK(r.attempts == 1 && r.status == 403 && stat_n("vault") == 1);
    cmk_akv_resp_free(&r);
    cmk_akv_http_free(h);
}

static void test_provider_imds(const char *home, const char *principal, const char *client_id)
{
    char k[300], vk[300], vk1[300];
    unsigned char dek[32], w[CMK_WRAPPED_MAX], back[64];
    size_t wl, bl;
    cmk_key_desc d;
    cmk_errbuf eb = {0};
    cmk_kek_provider *p;
    json_t *st;

    clear_env();
    reset();
    p = provider(home);
    CHECK(p->handles(p->self, "https://v.vault.azure.net/keys/k") &&
          p->handles(p->self, "http://v/keys/k") && !p->handles(p->self, "local://v/keys/k"));
    kid(k, sizeof(k), "k1", NULL);
    /* [system]: the first request goes without a token, the challenge follows, then one IMDS
     * token without client_id. */
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(d.kty == CMK_KTY_RSA && d.bits == 2048 && d.enabled && !d.requested_versioned);
    CHECK(strcmp(d.versionless, k) == 0 && strncmp(d.kid, k, strlen(k)) == 0 &&
          strlen(d.kid) == strlen(k) + 33 && strcmp(d.kid + strlen(k) + 1, d.version) == 0);
    CHECK(d.wrap_algs == ((1u << CMK_WRAP_RSA_OAEP_256) | (1u << CMK_WRAP_RSA_OAEP)));
    st = ctl(NULL);
    CHECK(json_integer_value(json_object_get(st, "unauth")) == 1);
    CHECK(json_integer_value(json_object_get(st, "imds")) == 1);
    CHECK(json_is_null(json_object_get(st, "last_client_id")));
    CHECK(strcmp(json_string_value(json_object_get(st, "last_resource")), "https://127.0.0.1") ==
          0);
    json_decref(st);
    snprintf(vk, sizeof(vk), "%s", d.kid);
    /* Versioned: that version, manual rotation; the token comes from the cache. */
    CHECK_OK(p->describe(p->self, vk, "", &d, &eb));
    CHECK(d.requested_versioned && strcmp(d.kid, vk) == 0);
    CHECK(stat_n("imds") == 1 && stat_n("unauth") == 1);
    /* Wrap and unwrap round trips, both algorithms; the vault unwraps. */
    test_fill_random(dek, sizeof(dek), 3);
    static const cmk_wrap_alg algs[] = {CMK_WRAP_RSA_OAEP_256, CMK_WRAP_RSA_OAEP};
    for (size_t ai = 0; ai < 2; ai++) {
        cmk_wrap_alg alg = algs[ai];
        CHECK_OK(p->wrap(p->self, vk, "", alg, dek, sizeof(dek), w, &wl, &eb));
        CHECK(wl == 256);
        bl = sizeof(back);
        CHECK_OK(p->unwrap(p->self, vk, "", alg, w, wl, back, &bl, &eb));
        CHECK(bl == 32 && memcmp(back, dek, 32) == 0);
    }
    /* An altered wrapped key: integrity, not a key-access error. */
    w[10] ^= 1;
    bl = sizeof(back);
    CHECK_RC(p->unwrap(p->self, vk, "", CMK_WRAP_RSA_OAEP, w, wl, back, &bl, &eb), CMK_E_INTEGRITY);
    CHECK(bl == 0);
    /* A versionless kid cannot wrap. */
    CHECK_RC(p->wrap(p->self, k, "", CMK_WRAP_RSA_OAEP_256, dek, 32, w, &wl, &eb), CMK_E_INVAL);
    /* Automatic rotation: the versionless kid follows a new version; the old still works. */
    json_decref(ctl("{\"rotate\": \"k1\"}"));
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(strcmp(d.kid, vk) != 0 && !d.requested_versioned);
    snprintf(vk1, sizeof(vk1), "%s", vk);
    CHECK_OK(p->describe(p->self, vk1, "", &d, &eb));
    CHECK(strcmp(d.kid, vk1) == 0);

    /* The vault refuses the cached token (expired on its side): renewed once, transparently. */
    json_decref(ctl("{\"revoke_tokens\": true}"));
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("imds") == 2 && stat_n("bad_token") == 1);

    /* Errors. */
    json_decref(ctl("{\"deny\": true}"));
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DENIED);
    CHECK(strstr(eb.msg, "127.0.0.1") && strstr(eb.msg, "'k1'") && strstr(eb.msg, "AccessDenied") &&
          strstr(eb.msg, "[system]") && clean_msg(eb.msg));
    bl = sizeof(back);
    CHECK_RC(p->unwrap(p->self, vk, "", CMK_WRAP_RSA_OAEP_256, w, 256, back, &bl, &eb),
             CMK_E_KEY_DENIED);
    CHECK_MSG(strstr(eb.msg, vk + strlen(k) + 1) != NULL, "%s", eb.msg);
    json_decref(ctl("{\"deny\": false}"));
    kid(k, sizeof(k), "dis", NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DISABLED);
    CHECK(strstr(eb.msg, "disabled") && strstr(eb.msg, "'dis'"));
    kid(k, sizeof(k), "gone", NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DELETED);
    CHECK(strstr(eb.msg, "deleted") && strstr(eb.msg, "'gone'"));
    kid(k, sizeof(k), "nothere", NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_NOT_FOUND);
    CHECK(strstr(eb.msg, "KeyNotFound") && strstr(eb.msg, "'nothere'"));
    kid(k, sizeof(k), "k1", "0123456789abcdef0123456789abcdef");
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_NOT_FOUND);
    kid(k, sizeof(k), "ec1", NULL);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(d.kty == CMK_KTY_EC);
    CHECK_RC(cmk_kek_check_type(&d, k, &eb), CMK_E_KEY_UNSUPPORTED);
    kid(k, sizeof(k), "noops", NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_UNSUPPORTED);
    CHECK(strstr(eb.msg, "wrapKey") && strstr(eb.msg, "key_ops"));
    /* Throttling past the budget: unreachable, after exactly the attempts allowed. */
    kid(k, sizeof(k), "k1", NULL);
    json_decref(ctl("{\"reset\": true, \"faults\": [{\"status\": 429, \"retry_after\": 0}, "
                    "{\"status\": 429, \"retry_after\": 0}, {\"status\": 429, \"retry_after\": 0}, "
                    "{\"status\": 429, \"retry_after\": 0}]}"));
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(stat_n("vault") == 4 && strstr(eb.msg, "429"));
    /* A burst shorter than the budget is absorbed. */
    json_decref(ctl("{\"reset\": true, \"faults\": [{\"status\": 429, \"retry_after\": 0}, "
                    "{\"status\": 503, \"retry_after\": 0}]}"));
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("vault") == 3);
    /* The token endpoint throttling: retried too. */
    json_decref(ctl("{\"revoke_tokens\": true, \"reset\": true, \"faults\": [{\"status\": 429, "
                    "\"retry_after\": 0, \"target\": \"token\"}]}"));
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("imds") == 2);

    /* A user-assigned identity: its client id goes to IMDS, its own token is cached apart. */
    if (principal) {
        json_decref(ctl("{\"reset\": true}"));
        CHECK_OK(p->describe(p->self, k, principal, &d, &eb));
        st = ctl(NULL);
        CHECK(stat_n("imds") == 1);
        CHECK(json_string_value(json_object_get(st, "last_client_id")) &&
              strcmp(json_string_value(json_object_get(st, "last_client_id")), client_id) == 0);
        json_decref(st);
        CHECK_OK(p->describe(p->self, k, principal, &d, &eb));
        CHECK_OK(p->describe(p->self, k, "", &d, &eb));
        CHECK(stat_n("imds") == 1);
        /* A principal the home does not know: refused, naming it. */
        CHECK_RC(p->describe(p->self, k, "11111111-2222-4333-8444-555555555555", &d, &eb),
                 CMK_E_KEY_DENIED);
        CHECK(strstr(eb.msg, "11111111-2222-4333-8444-555555555555") != NULL);
    }
    cmk_kek_provider_free(p);

    /* A challenge naming a resource of another domain: no token is asked for or sent. */
    reset();
    json_decref(ctl("{\"resource\": \"https://vault.example.net\"}"));
    p = provider(home);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DENIED);
    CHECK(strstr(eb.msg, "https://vault.example.net") && strstr(eb.msg, "domain"));
    CHECK(stat_n("imds") == 0);
    cmk_kek_provider_free(p);
    /* ... unless verification is turned off (as for the SDKs' option). */
    setenv("CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", "1", 1);
    p = provider(home);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("imds") == 1);
    cmk_kek_provider_free(p);
    unsetenv("CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION");
    reset();
}

static void test_provider_entra(void)
{
    char k[300], f[4300];
    cmk_key_desc d;
    cmk_errbuf eb = {0};
    cmk_kek_provider *p;
    json_t *st;

    kid(k, sizeof(k), "k1", NULL);
    /* Client secret from the environment, at AZURE_AUTHORITY_HOST/<tenant>/oauth2/v2.0/token. */
    clear_env();
    reset();
    setenv("AZURE_CLIENT_ID", "app-1", 1);
    setenv("AZURE_TENANT_ID", "tenant-9", 1);
    setenv("AZURE_CLIENT_SECRET", "s3cret-value", 1);
    setenv("AZURE_AUTHORITY_HOST", base, 1);
    p = provider(NULL);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    st = ctl(NULL);
    CHECK(json_integer_value(json_object_get(st, "entra")) == 1 &&
          json_integer_value(json_object_get(st, "imds")) == 0);
    CHECK(strcmp(json_string_value(json_object_get(st, "last_tenant")), "tenant-9") == 0);
    CHECK(strcmp(json_string_value(json_object_get(st, "last_client_id")), "app-1") == 0);
    json_decref(st);
    cmk_kek_provider_free(p);
    /* A wrong secret: denied, the message names the client and not the secret. */
    setenv("AZURE_CLIENT_SECRET", "wrong-s3cret", 1);
    p = provider(NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DENIED);
    CHECK(strstr(eb.msg, "app-1") && strstr(eb.msg, "invalid_client") && clean_msg(eb.msg) &&
          !strstr(eb.msg, "wrong-"));
    cmk_kek_provider_free(p);
    /* The secret from a file (--client-secret-file); the tenant from the challenge. */
    unsetenv("AZURE_CLIENT_SECRET");
    unsetenv("AZURE_TENANT_ID");
    snprintf(f, sizeof(f), "%s/secret", dir);
    REQUIRE(test_write_file(f, "s3cret-value\n", 13) == 0);
    setenv("CMKSTORE_AZURE_CLIENT_SECRET_FILE", f, 1);
    reset();
    p = provider(NULL);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    st = ctl(NULL);
    CHECK(strcmp(json_string_value(json_object_get(st, "last_tenant")), "tenant-x") == 0);
    json_decref(st);
    cmk_kek_provider_free(p);
    /* Workload identity first when its three variables are set. */
    setenv("AZURE_TENANT_ID", "tenant-9", 1);
    snprintf(f, sizeof(f), "%s/assertion", dir);
    REQUIRE(test_write_file(f, "assertion-ok", 12) == 0);
    setenv("AZURE_FEDERATED_TOKEN_FILE", f, 1);
    reset();
    p = provider(NULL);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("entra") == 1);
    cmk_kek_provider_free(p);
    REQUIRE(test_write_file(f, "assertion-bad", 13) == 0);
    p = provider(NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_DENIED);
    CHECK(clean_msg(eb.msg) && strstr(eb.msg, "workload identity"));
    cmk_kek_provider_free(p);
    /* CMKSTORE_AZURE_CREDENTIAL picks a source; a source lacking its settings is refused. */
    setenv("CMKSTORE_AZURE_CREDENTIAL", "managed", 1);
    reset();
    p = provider(NULL);
    CHECK_OK(p->describe(p->self, k, "", &d, &eb));
    CHECK(stat_n("imds") == 1 && stat_n("entra") == 0);
    /* AZURE_CLIENT_ID names the host's user-assigned identity for IMDS. */
    st = ctl(NULL);
    CHECK(json_string_value(json_object_get(st, "last_client_id")) &&
          strcmp(json_string_value(json_object_get(st, "last_client_id")), "app-1") == 0);
    json_decref(st);
    cmk_kek_provider_free(p);
    clear_env();
    setenv("CMKSTORE_AZURE_CREDENTIAL", "secret", 1);
    p = provider(NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_INVAL);
    CHECK(strstr(eb.msg, "CMKSTORE_AZURE_CREDENTIAL") != NULL);
    cmk_kek_provider_free(p);
    clear_env();
}

static void test_unreachable(void)
{
    char k[300];
    cmk_key_desc d;
    cmk_errbuf eb = {0};
    cmk_kek_provider *p;
    int s = socket(AF_INET, SOCK_STREAM, 0), free_port;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);

    /* A port nothing listens on: bound then closed. */
    REQUIRE(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            getsockname(s, (struct sockaddr *)&a, &al) == 0);
    free_port = ntohs(a.sin_port);
    close(s);
    clear_env();
    setenv("CMKSTORE_AKV_MAX_ATTEMPTS", "2", 1);
    p = provider(NULL);
    snprintf(k, sizeof(k), "https://127.0.0.1:%d/keys/k1", free_port);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(strstr(eb.msg, "did not answer after 2 attempts") && strstr(eb.msg, "'k1'"));
    cmk_kek_provider_free(p);
    /* Wrong CA: the vault's certificate is refused. */
    clear_env();
    setenv("CMKSTORE_CA_FILE", "/etc/ssl/certs/ca-certificates.crt", 1);
    p = provider(NULL);
    kid(k, sizeof(k), "k1", NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_KEY_UNREACHABLE);
    CHECK(strstr(eb.msg, "certificate") != NULL);
    cmk_kek_provider_free(p);
    /* A CA file that does not exist: the provider says so at first use. */
    setenv("CMKSTORE_CA_FILE", "/nonexistent/ca.pem", 1);
    p = provider(NULL);
    CHECK_RC(p->describe(p->self, k, "", &d, &eb), CMK_E_INVAL);
    CHECK(strstr(eb.msg, "/nonexistent/ca.pem") != NULL);
    cmk_kek_provider_free(p);
    clear_env();
}

int main(void)
{
    char home[4200];
    cmk_identity id;
    cmk_errbuf eb = {0};

    start_server();
    snprintf(home, sizeof(home), "%s", test_tmpdir("akvhome"));
    REQUIRE(cmk_identity_create(home, "app-id", &id, &eb) == CMK_OK);
    test_tls_and_retries();
    test_provider_imds(home, id.principal_id, id.client_id);
    test_provider_entra();
    test_unreachable();
    stop_server();
    check_cleanup();
    return check_summary();
}
