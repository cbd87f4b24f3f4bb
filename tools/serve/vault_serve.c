/*
 * vault_serve.c — `cmkstore vault serve`: one local vault over HTTPS with the Key Vault REST
 * subset a store (the akv provider) and the Azure SDKs use, and an IMDS-shaped managed-
 * identity token endpoint for the home's identities (see tools/SERVE.md, "vault serve").
 *
 * Every key operation goes through the vault's own access functions (cmk_vault_access_*,
 * cmkstore_admin.h): access policies, enabled and deleted state and the audit log are
 * exactly the local provider's. This file only authenticates (tokens of vault_token.h),
 * speaks the wire shapes (vault_rest.h) and serves (libmicrohttpd, TLS by http_tls.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/base/b64url.h"
#include "tools/cli.h"
#include "tools/serve/http_listen.h"
#include "tools/serve/http_tls.h"
#include "tools/serve/http_util.h"
#include "tools/serve/vault_rest.h"
#include "tools/serve/vault_route.h"
#include "tools/serve/vault_token.h"

#define DEF_LISTEN         "127.0.0.1:8443"
#define DEF_TOKEN_LIFETIME 3600
#define MAX_TOKEN_LIFETIME 86400
#define BODY_MAX           (64u << 10) /* a wrap request is < 1 KiB */
#define MAX_ALLOW          16
#define KV_RESOURCE        "https://vault.azure.net"

static const cli_opt serve_opts[] = {
    {"name", 'n', CLI_STR, 1, "VAULT",
     "The local vault to serve (one vault per server, as one "
     "Key Vault per host name)."},
    {"listen", 0, CLI_STR, 0, "ADDR:PORT",
     "Address to listen on (default " DEF_LISTEN "); an IPv6 address goes in brackets. Port 0 "
     "picks a free port (printed)."},
    {"tls-cert", 0, CLI_STR, 0, "FILE",
     "PEM certificate chain to serve (leaf first), with --tls-key. Default: a self-signed "
     "certificate generated into <home>/tls/vault-serve.crt on first run (its SHA-256 "
     "fingerprint is printed); clients trust that file as their CA."},
    {"tls-key", 0, CLI_STR, 0, "FILE",
     "PEM private key of --tls-cert (mode 0600 required). Default: <home>/tls/vault-serve.key."},
    {"tls-san", 0, CLI_LIST, 0, "NAME",
     "Extra host names or IP addresses for the generated certificate (it always names "
     "localhost, 127.0.0.1, ::1 and this host's name). Only used when it is generated: remove "
     "<home>/tls/vault-serve.* to make a new one."},
    {"token-allow", 0, CLI_LIST, 0, "ADDR[/BITS]",
     "Client addresses (or networks) the token endpoint answers, like a VM's IMDS answers only "
     "its VM (default: loopback only). Anyone who reaches the endpoint gets tokens for the "
     "home's identities: list only the hosts whose stores use this vault. Key requests are "
     "answered from anywhere, with a valid token."},
    {"default-identity", 0, CLI_STR, 0, "IDENTITY",
     "Identity (name, clientId or principalId) whose token a request naming no identity gets "
     "(an Azure VM's system-assigned identity). Default: such requests are refused."},
    {"token-lifetime", 0, CLI_UINT, 0, "S",
     "Seconds an issued token is valid, 1 to 86400 (default 3600). Short lifetimes make "
     "clients refresh: for tests."},
    {"throttle", 0, CLI_UINT, 0, "N",
     "Answer the first N authenticated key requests with 429 and Retry-After: 0 (Key Vault's "
     "throttling), for tests of clients' retries."},
    {"test-hooks", 0, CLI_FLAG, 0, NULL,
     "Enable the test endpoints (loopback clients only): POST /cmkstore/test/throttle?count=N "
     "(the next N authenticated key requests get 429 with Retry-After: 0) and POST "
     "/cmkstore/test/expire-tokens (every token issued so far is refused as expired from now "
     "on, so clients must renew theirs). Not for production."},
    {"quiet", 'q', CLI_FLAG, 0, NULL, "Do not log requests."},
    CLI_OPT_END,
};

/* A network the token endpoint answers. */
typedef struct allow_net {
    int family;
    unsigned char addr[16];
    unsigned bits;
} allow_net;

typedef struct vsrv {
    char home[CMK_PATH_MAX];
    char vault[64];
    char tenant[37];
    char fallback_base[300]; /* https://<listen address>:<port>, for a request without Host */
    cmk_vault_access *acc;
    vault_tokens *tok;
    cmk_identity def_id;
    int has_def_id;
    unsigned lifetime;
    unsigned throttle; /* requests left to answer with 429 (atomic) */
    /* Test hook expire-tokens: tokens expiring at or before this are refused as expired, and
     * new ones expire after it (atomic). */
    int64_t min_exp;
    int test_hooks, quiet;
    allow_net allow[MAX_ALLOW];
    size_t nallow;
} vsrv;

/* One request: its body, bounded. */
typedef struct vreq {
    char *body;
    size_t len;
    int too_big;
} vreq;

/* ---- addresses ---- */

static int parse_net(const char *s, allow_net *n)
{
    char buf[80], *slash, *end;
    unsigned long bits;

    if (strlen(s) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", s);
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, buf, n->addr) == 1)
        n->family = AF_INET, n->bits = 32;
    else if (inet_pton(AF_INET6, buf, n->addr) == 1)
        n->family = AF_INET6, n->bits = 128;
    else
        return -1;
    if (slash) {
        errno = 0;
        bits = strtoul(slash + 1, &end, 10);
        if (!slash[1] || *end || errno || bits > n->bits)
            return -1;
        n->bits = (unsigned)bits;
    }
    return 0;
}

static int net_match(const allow_net *n, int family, const unsigned char *a)
{
    unsigned full = n->bits / 8, rest = n->bits % 8;

    if (n->family != family || memcmp(n->addr, a, full) != 0)
        return 0;
    return rest == 0 || ((n->addr[full] ^ a[full]) & (0xff00u >> rest) & 0xff) == 0;
}

/* The client's address (IPv4-mapped IPv6 as IPv4); 0 if it has none we know. */
static int client_addr(struct MHD_Connection *c, int *family, unsigned char a[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    if (sa && sa->sa_family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *family = AF_INET;
        return 1;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(a, v6->s6_addr + 12, 4);
            *family = AF_INET;
        } else {
            memcpy(a, v6->s6_addr, 16);
            *family = AF_INET6;
        }
        return 1;
    }
    return 0;
}

static int client_is_loopback(struct MHD_Connection *c)
{
    static const unsigned char v6lo[16] = {[15] = 1};
    unsigned char a[16];
    int fam;

    if (!client_addr(c, &fam, a))
        return 0;
    return fam == AF_INET ? a[0] == 127 : memcmp(a, v6lo, 16) == 0;
}

static int token_client_allowed(const vsrv *v, struct MHD_Connection *c)
{
    unsigned char a[16];
    int fam;

    if (v->nallow == 0)
        return client_is_loopback(c);
    if (!client_addr(c, &fam, a))
        return 0;
    for (size_t i = 0; i < v->nallow; i++)
        if (net_match(&v->allow[i], fam, a))
            return 1;
    return 0;
}

/* ---- replies ---- */

/* The status of the reply queued last on this thread (one thread per connection), for the
 * request log. */
static _Thread_local int last_status;

static void log_request(const vsrv *v, struct MHD_Connection *c, const char *method,
                        const char *url, int status, const char *who)
{
    char path[200], ts[32];
    unsigned char a[16];
    char addr[INET6_ADDRSTRLEN] = "-";
    int fam;

    if (v->quiet)
        return;
    if (client_addr(c, &fam, a))
        inet_ntop(fam, a, addr, sizeof(addr));
    http_log_safe(path, sizeof(path), url);
    http_time_iso(ts);
    /* Never headers, query strings or bodies: tokens and key material travel there. */
    fprintf(stderr, "%s vault serve: %s %s %s %d %s\n", ts, addr, method, path, status,
            who && *who ? who : "-");
}

/* Sends j (released) with status and an optional header pair. */
static enum MHD_Result reply_json(struct MHD_Connection *c, int status, json_t *j,
                                  const char *hname, const char *hvalue)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    struct MHD_Response *r;
    enum MHD_Result ok;

    json_decref(j);
    if (!text)
        text = strdup("{\"error\":{\"code\":\"InternalServerError\",\"message\":\"out of "
                      "memory\"}}"),
        status = 500;
    if (!text)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    last_status = status;
    ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *code,
                                   const char *inner, const char *msg)
{
    return reply_json(c, status, vault_rest_error(code, inner, msg), NULL, NULL);
}

/* 401 with the challenge that tells a client where to get a token and for what. */
static enum MHD_Result reply_challenge(const vsrv *v, struct MHD_Connection *c, const char *msg)
{
    char hdr[200];

    snprintf(hdr, sizeof(hdr),
             "Bearer authorization=\"https://login.microsoftonline.com/%s\", "
             "resource=\"" KV_RESOURCE "\"",
             v->tenant);
    return reply_json(c, 401, vault_rest_error("Unauthorized", NULL, msg), "WWW-Authenticate", hdr);
}

/* The client's name for this server, for key identifiers: https://<Host>. */
static void base_url(const vsrv *v, struct MHD_Connection *c, char *out, size_t cap)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    size_t n = h ? strlen(h) : 0;

    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']'))
            n = 0;
    }
    if (n == 0 || n > 255)
        snprintf(out, cap, "%s", v->fallback_base);
    else
        snprintf(out, cap, "https://%s", h);
}

/* ---- the token endpoint ---- */

static const char *arg(struct MHD_Connection *c, const char *name)
{
    const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);

    return s && *s ? s : NULL;
}

static enum MHD_Result imds_error(struct MHD_Connection *c, int status, const char *error,
                                  const char *desc)
{
    return reply_json(c, status, json_pack("{s:s, s:s}", "error", error, "error_description", desc),
                      NULL, NULL);
}

static enum MHD_Result serve_token(vsrv *v, struct MHD_Connection *c, char *who, size_t whocap)
{
    const char *md = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Metadata");
    const char *resource = arg(c, "resource"), *cid = arg(c, "client_id");
    const char *oid = arg(c, "object_id") ? arg(c, "object_id") : arg(c, "principal_id");
    const char *rid = arg(c, "mi_res_id") ? arg(c, "mi_res_id") : arg(c, "msi_res_id");
    char token[VAULT_TOKEN_MAX], expbuf[24], inbuf[24];
    cmk_identity id;
    cmk_errbuf eb = {0};
    int64_t now = (int64_t)time(NULL), exp = now + v->lifetime;
    int64_t floor_exp = __atomic_load_n(&v->min_exp, __ATOMIC_SEQ_CST);
    enum MHD_Result ok;

    if (!token_client_allowed(v, c))
        return imds_error(c, 403, "forbidden",
                          "this client address may not get tokens here (vault serve "
                          "--token-allow)");
    if (!md || strcasecmp(md, "true") != 0)
        return imds_error(c, 400, "invalid_request", "Required metadata header not specified");
    if (!resource)
        return imds_error(c, 400, "invalid_request",
                          "Required query variable 'resource' is missing");
    if (strlen(resource) >= VAULT_RESOURCE_MAX || strchr(resource, '|'))
        return imds_error(c, 400, "invalid_request", "bad resource");
    if (cid || oid || rid) {
        const char *ref = cid ? cid : oid ? oid : rid;
        if (cmk_identity_get(v->home, ref, &id, &eb) != CMK_OK ||
            (cid && strcasecmp(id.client_id, cid) != 0) ||
            (!cid && oid && strcasecmp(id.principal_id, oid) != 0) ||
            (!cid && !oid && strcmp(id.id, rid) != 0))
            return imds_error(c, 400, "invalid_request", "Identity not found");
    } else if (v->has_def_id) {
        id = v->def_id;
    } else {
        return imds_error(c, 400, "invalid_request",
                          "Identity not found: name one with client_id (this server has no "
                          "default identity)");
    }
    snprintf(who, whocap, "%s", id.name);
    if (exp <= floor_exp)
        exp = floor_exp + 1;
    if (vault_token_issue(v->tok, id.principal_id, id.client_id, exp, resource, token,
                          sizeof(token)) != 0)
        return imds_error(c, 500, "internal_error", "cannot issue a token");
    snprintf(expbuf, sizeof(expbuf), "%" PRId64, exp);
    snprintf(inbuf, sizeof(inbuf), "%u", v->lifetime);
    ok = reply_json(c, 200,
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "access_token", token,
                              "client_id", id.client_id, "expires_in", inbuf, "expires_on", expbuf,
                              "ext_expires_in", inbuf, "not_before", expbuf, "resource", resource,
                              "token_type", "Bearer"),
                    NULL, NULL);
    OPENSSL_cleanse(token, sizeof(token));
    return ok;
}

/* ---- key endpoints ---- */

/* The resource a token for the vault names: Key Vault's, with or without a trailing slash. */
static int resource_ok(const char *r)
{
    size_t n = strlen(KV_RESOURCE);

    return strncmp(r, KV_RESOURCE, n) == 0 && (r[n] == '\0' || (r[n] == '/' && r[n + 1] == '\0'));
}

/* Authenticates the request: 1 with the claims, or 0 after answering 401. */
static int authenticate(const vsrv *v, struct MHD_Connection *c, vault_token_claims *cl,
                        enum MHD_Result *ok)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    enum vault_token_result r;

    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        *ok = reply_challenge(v, c, "AKV10000: Request is missing a Bearer or PoP token.");
        return 0;
    }
    r = vault_token_verify(v->tok, h + 7, (int64_t)time(NULL), cl);
    if (r == VAULT_TOKEN_OK && cl->exp <= __atomic_load_n(&v->min_exp, __ATOMIC_SEQ_CST))
        r = VAULT_TOKEN_EXPIRED;
    if (r == VAULT_TOKEN_EXPIRED) {
        *ok = reply_challenge(v, c, "AKV10032: The token has expired: get a new one.");
        return 0;
    }
    if (r != VAULT_TOKEN_OK || !resource_ok(cl->resource)) {
        *ok = reply_challenge(v, c,
                              "AKV10022: Invalid token (not issued by this vault's token "
                              "endpoint for " KV_RESOURCE ").");
        return 0;
    }
    return 1;
}

static enum MHD_Result key_error(struct MHD_Connection *c, cmk_err rc, const cmk_errbuf *eb)
{
    vault_rest_status s = vault_rest_map(rc);

    return reply_error(c, s.status, s.code, s.inner, eb->msg[0] ? eb->msg : cmk_strerror(rc));
}

/* Parses {"alg": ..., "value": <base64url>} into alg and buf. 0, or -1 after answering. */
static int parse_wrap_body(struct MHD_Connection *c, const vreq *q, cmk_wrap_alg *alg,
                           unsigned char *buf, size_t cap, size_t *len, enum MHD_Result *ok)
{
    json_error_t je;
    json_t *j = q->too_big ? NULL : json_loadb(q->body ? q->body : "", q->len, 0, &je);
    const char *a = json_string_value(json_object_get(j, "alg"));
    const char *val = json_string_value(json_object_get(j, "value"));
    long n;

    if (!j || !a || !val) {
        json_decref(j);
        *ok = reply_error(c, 400, "BadParameter", NULL,
                          "the body must be JSON {\"alg\": ..., \"value\": <base64url>}");
        return -1;
    }
    *alg = cmk_wrap_alg_from_name(a);
    if (*alg != CMK_WRAP_RSA_OAEP_256 && *alg != CMK_WRAP_RSA_OAEP) {
        json_decref(j);
        *ok = reply_error(c, 400, "BadParameter", NULL,
                          "algorithm not supported by this vault: use RSA-OAEP-256 or RSA-OAEP");
        return -1;
    }
    n = cmk_b64url_decode(val, strlen(val), buf, cap);
    json_decref(j);
    if (n <= 0) {
        *ok =
            reply_error(c, 400, "BadParameter", NULL, "value is not base64url of 1 to 1024 bytes");
        return -1;
    }
    *len = (size_t)n;
    return 0;
}

static enum MHD_Result serve_wrap(vsrv *v, struct MHD_Connection *c, const vault_route *rt,
                                  const vreq *q, const char *principal, const char *base)
{
    unsigned char in[CMK_WRAPPED_MAX], out[CMK_WRAPPED_MAX];
    char kid[CMK_ID_MAX], rkid[2048], enc[2 * CMK_WRAPPED_MAX];
    size_t inlen = 0, outlen = sizeof(out);
    cmk_wrap_alg alg;
    cmk_errbuf eb = {0};
    json_t *shown = NULL;
    enum MHD_Result ok;
    cmk_err rc;
    const char *version = rt->version;

    if (parse_wrap_body(c, q, &alg, in, sizeof(in), &inlen, &ok) != 0)
        return ok;
    if (!version[0]) {
        /* /keys/<name>//wrapkey: the latest version, found by a "get" under the principal
         * (checked and audited like the wrap that follows). */
        rc = cmk_vault_kid_format(kid, sizeof(kid), v->vault, rt->name, NULL, &eb);
        if (rc == CMK_OK)
            rc = cmk_vault_access_get(v->acc, kid, principal, &shown, &eb);
        if (rc != CMK_OK) {
            OPENSSL_cleanse(in, sizeof(in));
            return key_error(c, rc, &eb);
        }
        version = json_string_value(json_object_get(json_object_get(shown, "key"), "kid"));
        version = version ? strrchr(version, '/') : NULL;
        version = version ? version + 1 : "";
    }
    rc = cmk_vault_kid_format(kid, sizeof(kid), v->vault, rt->name, version, &eb);
    if (rc == CMK_OK)
        rc = rt->rt == VRT_WRAP
                 ? cmk_vault_access_wrap(v->acc, kid, principal, alg, in, inlen, out, &outlen, &eb)
                 : cmk_vault_access_unwrap(v->acc, kid, principal, alg, in, inlen, out, &outlen,
                                           &eb);
    json_decref(shown);
    OPENSSL_cleanse(in, sizeof(in));
    if (rc != CMK_OK) {
        OPENSSL_cleanse(out, sizeof(out));
        return key_error(c, rc, &eb);
    }
    if (cmk_b64url_encode(out, outlen, enc, sizeof(enc)) < 0 ||
        vault_rest_kid(kid, base, rkid, sizeof(rkid)) != 0) {
        OPENSSL_cleanse(out, sizeof(out));
        return reply_error(c, 500, "InternalServerError", NULL, "cannot encode the answer");
    }
    OPENSSL_cleanse(out, sizeof(out));
    ok = reply_json(c, 200, json_pack("{s:s, s:s}", "kid", rkid, "value", enc), NULL, NULL);
    OPENSSL_cleanse(enc, sizeof(enc));
    return ok;
}

static enum MHD_Result serve_key(vsrv *v, struct MHD_Connection *c, const vault_route *rt,
                                 const vreq *q, const vault_token_claims *cl)
{
    char kid[CMK_ID_MAX], base[300];
    const char *av = arg(c, "api-version");
    cmk_errbuf eb = {0};
    json_t *az = NULL, *out = NULL;
    cmk_err rc;

    if (!av || !vault_api_version_valid(av))
        return reply_error(c, 400, "BadParameter", NULL,
                           av ? "The api-version parameter is not valid."
                              : "The api-version parameter is missing.");
    if (strlen(rt->name) > 63) /* a local vault's key names are shorter than Key Vault's */
        return reply_error(c, 404, "KeyNotFound", NULL, "no key of that name in this vault");
    if (__atomic_load_n(&v->throttle, __ATOMIC_SEQ_CST) > 0) {
        unsigned left = __atomic_load_n(&v->throttle, __ATOMIC_SEQ_CST);
        while (left > 0 && !__atomic_compare_exchange_n(&v->throttle, &left, left - 1, 0,
                                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
        if (left > 0)
            return reply_json(c, 429,
                              vault_rest_error("Throttled", NULL,
                                               "Request was not processed because too many "
                                               "requests were received (test throttling)."),
                              "Retry-After", "0");
    }
    base_url(v, c, base, sizeof(base));
    if (rt->rt == VRT_WRAP || rt->rt == VRT_UNWRAP)
        return serve_wrap(v, c, rt, q, cl->principal, base);
    rc = cmk_vault_kid_format(kid, sizeof(kid), v->vault, rt->name,
                              rt->rt == VRT_KEY ? rt->version : NULL, &eb);
    if (rc == CMK_OK) {
        if (rt->rt == VRT_KEY)
            rc = cmk_vault_access_get(v->acc, kid, cl->principal, &az, &eb);
        else if (rt->rt == VRT_VERSIONS)
            rc = cmk_vault_access_versions(v->acc, kid, cl->principal, &az, &eb);
        else
            rc = cmk_vault_access_deleted(v->acc, kid, cl->principal, &az, &eb);
    }
    if (rc != CMK_OK)
        return key_error(c, rc, &eb);
    out = rt->rt == VRT_KEY        ? vault_rest_key(az, base)
          : rt->rt == VRT_VERSIONS ? vault_rest_versions(az, base)
                                   : vault_rest_deleted(az, base, rt->name);
    json_decref(az);
    return reply_json(c, out ? 200 : 500, out, NULL, NULL);
}

static enum MHD_Result serve_throttle_hook(vsrv *v, struct MHD_Connection *c)
{
    const char *n = arg(c, "count");
    uint64_t count;

    if (!v->test_hooks || !client_is_loopback(c))
        return reply_error(c, 404, "NotFound", NULL, "no such endpoint");
    if (!n || http_parse_u64(n, 1000000, &count) != 0)
        return reply_error(c, 400, "BadParameter", NULL, "count=N (0 to 1000000) is needed");
    __atomic_store_n(&v->throttle, (unsigned)count, __ATOMIC_SEQ_CST);
    return reply_json(c, 200, json_pack("{s:I}", "throttle", (json_int_t)count), NULL, NULL);
}

static enum MHD_Result serve_expire_hook(vsrv *v, struct MHD_Connection *c)
{
    int64_t until = (int64_t)time(NULL) + v->lifetime;

    if (!v->test_hooks || !client_is_loopback(c))
        return reply_error(c, 404, "NotFound", NULL, "no such endpoint");
    /* Every token issued so far expires by now + lifetime. */
    __atomic_store_n(&v->min_exp, until, __ATOMIC_SEQ_CST);
    return reply_json(c, 200, json_pack("{s:I}", "expiredThrough", (json_int_t)until), NULL, NULL);
}

/* ---- the daemon ---- */

static enum MHD_Result vault_access_cb(void *cls, struct MHD_Connection *c, const char *url,
                                       const char *method, const char *version, const char *upload,
                                       size_t *upload_size, void **con_cls)
{
    vsrv *v = cls;
    vreq *q = *con_cls;
    vault_route rt;
    vault_token_claims cl;
    enum vault_route_status st;
    enum MHD_Result ok = MHD_YES;
    char who[160] = "";

    (void)version;
    if (!q) {
        if (!(q = calloc(1, sizeof(*q))))
            return MHD_NO;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!q->too_big && q->len + *upload_size <= BODY_MAX) {
            char *nb = realloc(q->body, q->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            q->body = nb;
            memcpy(q->body + q->len, upload, *upload_size);
            q->len += *upload_size;
        } else {
            q->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    st = vault_route_match(method, url, &rt);
    last_status = 0;
    if (st == VROUTE_UNKNOWN) {
        ok = reply_error(c, 404, "NotFound", NULL, "no such endpoint in this vault");
    } else if (st == VROUTE_BAD_METHOD) {
        ok = reply_json(c, 405, vault_rest_error("MethodNotAllowed", NULL, "method not allowed"),
                        "Allow", rt.allow);
    } else if (st == VROUTE_BAD_NAME) {
        ok = reply_error(c, 400, "BadParameter", NULL,
                         "the key name (1-127 letters, digits and '-') or version (32 hex "
                         "digits) in the path is not valid");
    } else if (rt.rt == VRT_TOKEN) {
        ok = serve_token(v, c, who, sizeof(who));
    } else if (rt.rt == VRT_THROTTLE) {
        ok = serve_throttle_hook(v, c);
    } else if (rt.rt == VRT_EXPIRE) {
        ok = serve_expire_hook(v, c);
    } else if (authenticate(v, c, &cl, &ok)) {
        snprintf(who, sizeof(who), "principal=%s", cl.principal);
        ok = serve_key(v, c, &rt, q, &cl);
    } else {
        snprintf(who, sizeof(who), "unauthenticated");
    }
    log_request(v, c, method, url, last_status, who);
    return ok;
}

static void vault_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    vreq *q = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (q) {
        if (q->body)
            OPENSSL_cleanse(q->body, q->len);
        free(q->body);
        free(q);
    }
    *con_cls = NULL;
}

static __attribute__((format(printf, 2, 0))) void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    fprintf(stderr, "cmkstore vault serve: https: %s\n", msg);
}

/* Reads the options into v (home and vault resolved, identity found, networks parsed).
 * Returns CLI_RUN or an exit code (error printed). */
static int read_opts(const cli_cmd *cmd, cli_args *a, vsrv *v)
{
    const char *const *list = NULL;
    const char *def = cli_get(a, "default-identity");
    cmk_errbuf eb = {0};
    json_t *vj = NULL;
    uint64_t lt = cli_num(a, "token-lifetime", DEF_TOKEN_LIFETIME);
    size_t n = cli_list(a, "token-allow", &list);
    cmk_err rc;

    if (lt < 1 || lt > MAX_TOKEN_LIFETIME)
        return cli_usage_error(cmd, "--token-lifetime must be 1 to %u seconds", MAX_TOKEN_LIFETIME);
    v->lifetime = (unsigned)lt;
    if (cli_num(a, "throttle", 0) > 1000000)
        return cli_usage_error(cmd, "--throttle takes at most 1000000");
    v->throttle = (unsigned)cli_num(a, "throttle", 0);
    v->test_hooks = cli_isset(a, "test-hooks");
    v->quiet = cli_isset(a, "quiet");
    if (n > MAX_ALLOW)
        return cli_usage_error(cmd, "--token-allow takes at most %d networks", MAX_ALLOW);
    for (size_t i = 0; i < n; i++)
        if (parse_net(list[i], &v->allow[v->nallow++]) != 0)
            return cli_usage_error(cmd,
                                   "--token-allow %s: expected an IP address or network "
                                   "(10.0.0.0/8, fd00::/8)",
                                   list[i]);
    rc = cli_home(a, 0, v->home, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use the home");
    snprintf(v->vault, sizeof(v->vault), "%s", cli_get(a, "name"));
    rc = cmk_vault_show(v->home, v->vault, &vj, &eb);
    if (rc == CMK_OK &&
        json_is_object(json_object_get(json_object_get(vj, "properties"), "deleted")))
        fprintf(stderr,
                "cmkstore vault serve: warning: vault '%s' is soft-deleted: its keys "
                "are refused until it is recovered\n",
                v->vault);
    json_decref(vj);
    if (rc != CMK_OK) {
        int ex = cli_fail(rc, &eb, CLI_HINT_NONE, "cannot serve vault '%s'", v->vault);
        if (rc == CMK_E_NOT_FOUND)
            cli_hint("`cmkstore vault list` shows the vaults; create one with `cmkstore vault "
                     "create --name %s`.",
                     v->vault);
        return ex;
    }
    rc = cmk_home_tenant(v->home, v->tenant, &eb);
    if (rc == CMK_OK && def) {
        rc = cmk_identity_get(v->home, def, &v->def_id, &eb);
        v->has_def_id = rc == CMK_OK;
    }
    if (rc != CMK_OK) {
        int ex = cli_fail(rc, &eb, CLI_HINT_NONE, "cannot serve vault '%s'", v->vault);
        if (rc == CMK_E_NOT_FOUND)
            cli_hint("`cmkstore identity list` shows the identities.");
        return ex;
    }
    return CLI_RUN;
}

static int run_vault_serve(const cli_cmd *cmd, cli_args *a)
{
    const char *listen = cli_get(a, "listen");
    const char *const *sans = NULL;
    size_t nsans = cli_list(a, "tls-san", &sans);
    struct sockaddr_storage addr;
    char host[256], err[512];
    unsigned port = 0;
    struct MHD_Daemon *d = NULL;
    http_tls tls;
    vsrv *v = calloc(1, sizeof(*v));
    cmk_errbuf eb = {0};
    sigset_t set;
    struct sigaction ign, oldpipe;
    int ex, fd = -1, sig = 0;
    cmk_err rc;

    memset(&tls, 0, sizeof(tls));
    if (!v)
        return cli_fail(CMK_E_NOMEM, NULL, CLI_HINT_NONE, "cannot start");
    ex = read_opts(cmd, a, v);
    if (ex != CLI_RUN)
        goto out;
    if (http_parse_listen(listen ? listen : DEF_LISTEN, &addr, host, sizeof(host), &port) != 0) {
        ex = cli_usage_error(cmd, "--listen %s: expected ADDR:PORT with a numeric address", listen);
        goto out;
    }
    rc = vault_tokens_open(v->home, &v->tok, err, sizeof(err));
    if (rc == CMK_OK)
        rc = http_tls_load(&tls, cli_get(a, "tls-cert"), cli_get(a, "tls-key"), v->home,
                           "vault-serve", sans, nsans, err, sizeof(err));
    if (rc != CMK_OK) {
        fprintf(stderr, "cmkstore: error: cannot start: %s\n", err);
        ex = cli_exit_code(rc);
        goto out;
    }
    rc = cmk_vault_access_open(v->home, &v->acc, &eb);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, &eb, CLI_HINT_NONE, "cannot start");
        goto out;
    }
    /* Signals are taken synchronously by the main thread; connection threads inherit the
     * mask. A client gone mid-reply must not kill the server. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &oldpipe);
    fd = http_listen_open(&addr, &port);
    if (fd < 0) {
        fprintf(stderr, "cmkstore: error: cannot listen on %s:%u: %s\n", host, port,
                strerror(errno));
        ex = CLI_EXIT_FAILURE;
        goto out;
    }
    snprintf(v->fallback_base, sizeof(v->fallback_base),
             addr.ss_family == AF_INET6 ? "https://[%s]:%u" : "https://%s:%u", host, port);
    errno = 0;
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_TLS |
                             (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
                         0, NULL, NULL, vault_access_cb, v, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                         NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
                         vault_completed, v, MHD_OPTION_HTTPS_MEM_CERT, tls.cert_pem,
                         MHD_OPTION_HTTPS_MEM_KEY, tls.key_pem, MHD_OPTION_HTTPS_PRIORITIES,
                         HTTP_TLS_PRIORITIES, MHD_OPTION_CONNECTION_LIMIT, 256u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)(256u << 10), MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cmkstore: error: cannot start the HTTPS server on %s:%u%s%s\n", host, port,
                errno ? ": " : "", errno ? strerror(errno) : "");
        ex = CLI_EXIT_FAILURE;
        goto out;
    }
    printf("Vault '%s' of %s\n", v->vault, v->home);
    printf("TLS certificate %s%s\n  SHA-256 fingerprint %s\n", tls.cert_path,
           tls.generated ? " (self-signed, generated now)" : "", tls.fingerprint);
    printf("Key identifiers: %s/keys/<name>[/<version>] (Key Vault REST, api-version 7.4)\n",
           v->fallback_base);
    printf("Token endpoint: %s/metadata/identity/oauth2/token (IMDS-shaped; clients: %s)\n",
           v->fallback_base, v->nallow ? "--token-allow" : "loopback only");
    if (v->throttle || v->test_hooks)
        printf("Test throttling: %u request(s) first%s\n", v->throttle,
               v->test_hooks ? "; test hooks /cmkstore/test/throttle and /expire-tokens enabled"
                             : "");
    printf("Listening on %s\n", v->fallback_base);
    if (fflush(stdout) != 0)
        fprintf(stderr, "cmkstore vault serve: warning: cannot write to standard output\n");
    while (sig <= 0) {
        sig = sigwaitinfo(&set, NULL);
        if (sig < 0 && errno != EINTR)
            break;
    }
    fprintf(stderr, "cmkstore vault serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    MHD_stop_daemon(d);
    d = NULL;
    ex = CLI_EXIT_OK;
out:
    if (d)
        MHD_stop_daemon(d);
    http_tls_free(&tls);
    if (v) {
        cmk_vault_access_close(v->acc);
        vault_tokens_free(v->tok);
        free(v);
    }
    return ex;
}

const cli_cmd cli_vault_serve_cmds[] = {
    {.path = "vault serve",
     .summary = "Serve a local vault over HTTPS with the Key Vault protocol",
     .description =
         "Serves one local vault over HTTPS (TLS 1.2+) with the subset of the Azure Key Vault "
         "REST API (api-version 7.4 and later) a store and the Azure SDKs use: GET "
         "/keys/<name>[/<version>], GET /keys/<name>/versions, POST "
         "/keys/<name>/<version>/wrapkey and /unwrapkey (RSA-OAEP-256, RSA-OAEP), GET "
         "/deletedkeys/<name>. Stores on other hosts use the key as "
         "https://<host>:<port>/keys/<name>[/<version>] with an identity of this home.\n\n"
         "Requests need a bearer token: without one the answer is 401 with Key Vault's "
         "challenge (WWW-Authenticate: Bearer authorization=\"https://login.microsoftonline.com/"
         "<tenant>\", resource=\"https://vault.azure.net\"). Tokens come from the managed-"
         "identity endpoint GET /metadata/identity/oauth2/token?api-version=2018-02-01&"
         "resource=https://vault.azure.net[&client_id=<clientId>] with the header Metadata: "
         "true (Azure's IMDS shape), for the home's identities; they are signed with a secret "
         "in <home>/vault-serve/token.key and never logged.\n\nAccess policies, enabled and "
         "deleted state and the audit log apply exactly as to a store on this host: `vault "
         "delete-policy` here cuts a remote store off at its next call (403). Errors have Key "
         "Vault's shape {\"error\": {\"code\", \"message\", \"innererror\"}}: 403 "
         "Forbidden/AccessDenied or KeyDisabled, 404 KeyNotFound, 429 Throttled.\n\nOne line "
         "per request is logged on stderr (client, method, path, status, principal; never "
         "headers, tokens or key material). SIGTERM or SIGINT stop it (exit 0).",
     .opts = serve_opts,
     .example = "cmkstore vault serve --name myvault --listen 0.0.0.0:8443 \\\n"
                "    --tls-san vault.example.internal --token-allow 10.0.0.0/24\n"
                "curl --cacert ~/.cmkstore/tls/vault-serve.crt -H 'Metadata: true' \\\n"
                "    'https://vault.example.internal:8443/metadata/identity/oauth2/token?"
                "api-version=2018-02-01&resource=https://vault.azure.net&client_id=<clientId>'",
     .run = run_vault_serve},
    {.path = NULL},
};
