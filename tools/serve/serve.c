/*
 * serve.c — `cmkstore serve`: options, the embedded default (identity, vault, key and store
 * made on first run), the HTTP daemon (libmicrohttpd, one thread per connection), signals
 * and graceful shutdown. `cmkstore serve-passwd` is in serve_passwd.c.
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread and taken by the main thread with
 * sigtimedwait, which also paces the housekeeping (idle uploads, key-state metrics) once a
 * second. On the first signal the server stops accepting, refuses new requests on open
 * connections with 503, lets requests in flight finish until --shutdown-timeout, then stops;
 * uploads not completed by then are aborted whole. A second signal skips the wait.
 */
#include "tools/serve/serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/serve/http_auth.h"
#include "tools/serve/http_conn.h"
#include "tools/serve/http_listen.h"
#include "tools/serve/http_daemon.h"
#include "tools/serve/http_metrics.h"
#include "tools/serve/http_util.h"
#include "cmkstore_admin.h"
#include "tools/serve/registry.h"

/* The embedded default's resources (first run only; later runs reuse them). */
#define DEF_IDENTITY "registry-identity"
#define DEF_VAULT    "registry-vault"
#define DEF_KEY      "registry-key"
#define DEF_KEY_SIZE 3072
#define DEF_STORE    "registry"
#define DEF_LISTEN   "127.0.0.1:5000"

#define DEF_MAX_CONNECTIONS   512
#define DEF_CONN_TIMEOUT      300
#define DEF_SHUTDOWN_TIMEOUT  30
#define DEF_CONN_PER_IP       32
#define DEF_HEADER_TIMEOUT    15
#define DEF_UPLOAD_SAVE_AFTER 10
#define MHD_MEMORY_LIMIT      (256u << 10)

static const cli_opt serve_opts[] = {
    {"store", 0, CLI_STR, 0, "DIR",
     "The store to serve (made with `cmkstore create`): its directory, or s3://BUCKET[/PREFIX], "
     "which any number of servers may serve at once. Default: the embedded default store "
     "under the home, created with its identity, vault and key on first run."},
    {"listen", 0, CLI_STR, 0, "ADDR:PORT",
     "Address to listen on (default " DEF_LISTEN "); an IPv6 address goes in brackets. Port 0 "
     "picks a free port (printed)."},
    {"key-check-interval", 0, CLI_UINT, 0, "S",
     "Seconds between key access checks, 1 to 86400 (saved in the store). Revocation and "
     "restore take effect within this interval."},
    {"rotation-check-interval", 0, CLI_UINT, 0, "S",
     "Seconds between checks for a newer key version (versionless key ids), 1 to 86400 (saved "
     "in the store)."},
    {"htpasswd", 0, CLI_STR, 0, "FILE",
     "Require HTTP Basic authentication against FILE (lines from `cmkstore serve-passwd`; mode "
     "0600 required)."},
    {"token-file", 0, CLI_STR, 0, "FILE",
     "Accept `Authorization: Bearer <token>` for the tokens in FILE, one per line, at least 16 "
     "characters (mode 0600 required)."},
    {"access", 0, CLI_STR, 0, "FILE",
     "Per-repository access for the --htpasswd users (and static tokens): lines `group NAME "
     "USER...`, `allow USER|@GROUP|* PATTERN pull,push,delete` (PATTERN: a repository name "
     "where * matches within a path component and ** across), `catalog USER|@GROUP|*...`. "
     "Only what a line allows is allowed: others get 403 DENIED. A mount needs pull on its "
     "source. See tools/SERVE.md."},
    {"auth-token-realm", 0, CLI_STR, 0, "URL",
     "Docker registry token authentication: the token issuer's URL that 401 challenges send "
     "clients to (`Bearer realm=URL,service=...,scope=...`). Needs --auth-token-service, "
     "--auth-token-issuer and --auth-token-certs; excludes --htpasswd and --token-file."},
    {"auth-token-service", 0, CLI_STR, 0, "NAME",
     "This registry's service name: the audience (aud) tokens must name."},
    {"auth-token-issuer", 0, CLI_STR, 0, "NAME", "The issuer (iss) tokens must name."},
    {"auth-token-certs", 0, CLI_STR, 0, "FILE",
     "PEM certificates and/or public keys of the token issuer: a token's RS256 or ES256 "
     "signature must verify with one of them (kid, x5c and jku in tokens are not trusted)."},
    {"tls-cert", 0, CLI_STR, 0, "FILE",
     "Serve HTTPS with this PEM certificate chain (leaf first; with --tls-key). TLS 1.2 and 1.3 "
     "only (libmicrohttpd's GnuTLS). SIGHUP reloads both files without a restart: new "
     "connections get the new certificate, open ones finish on the old one."},
    {"tls-key", 0, CLI_STR, 0, "FILE",
     "The certificate's PEM private key (mode 0600 or stricter, required)."},
    {"max-manifest-size", 0, CLI_SIZE, 0, "BYTES",
     "Largest manifest accepted (default 4M; at most 64M)."},
    {"max-blob-size", 0, CLI_SIZE, 0, "BYTES",
     "Largest blob accepted in one upload (default: no limit); beyond, 413 SIZE_INVALID and "
     "the upload is discarded."},
    {"cache-size", 0, CLI_SIZE, 0, "BYTES",
     "Keep up to BYTES of decrypted blobs in memory (least recently used go first; a blob "
     "larger than half of it is never kept) so that clients pulling the same layer are "
     "answered without reading and decrypting it again. Every read still passes the key "
     "check first, and losing key access empties the cache. Default 0: no cache."},
    {"cache-send", 0, CLI_STR, 0, "auto|sendfile|copy",
     "How --cache-size hits are sent: sendfile (no copy in the server: best for clients on "
     "other machines), copy (through a buffer of the server's: on loopback it costs the "
     "machine less CPU in all, as the client's copy is then warm), or auto (default: copy to "
     "loopback clients, sendfile to the others)."},
    {"max-uploads", 0, CLI_UINT, 0, "N",
     "Upload sessions open at once (default 256); beyond, 429 TOOMANYREQUESTS."},
    {"upload-timeout", 0, CLI_UINT, 0, "S",
     "Idle upload sessions are aborted after S seconds (default 3600). Sessions open at "
     "shutdown are saved in the store and resumed after a restart; saved ones idle longer "
     "than S are dropped at the next start."},
    {"upload-save-after", 0, CLI_STR, 0, "S|off",
     "Save an upload session in the store once it has had no request for S seconds since it "
     "last received bytes (default 10; 0: at the next housekeeping second), as at shutdown: "
     "after a crash (SIGKILL, power loss) the session is restored with what it had at its "
     "last save. A push that completes within S seconds is never saved. off: sessions are "
     "saved at shutdown only."},
    {"instance", 0, CLI_STR, 0, "NAME",
     "This front-end's name in the upload sessions it saves (default: the host name and "
     "the address listened on). At start, a front-end restores only the sessions its own "
     "name saved: give each front-end on a store its own stable name (a restart with "
     "--listen ADDR:0 gets a new address, so it needs --instance to resume its sessions)."},
    {"upload-memory", 0, CLI_SIZE, 0, "BYTES",
     "Chunk buffers that uploads in flight may hold together (default 1G, at least 16M); "
     "beyond, 503 with Retry-After. Idle upload sessions hold none."},
    {"max-connections", 0, CLI_UINT, 0, "N",
     "Client connections at once (default 512); up to N more get 503 with Retry-After."},
    {"connection-timeout", 0, CLI_UINT, 0, "S",
     "Idle connections are closed after S seconds (default 300)."},
    {"max-connections-per-ip", 0, CLI_UINT, 0, "N",
     "Connections at once from one client address, an IPv6 /64 counting as one (default 32; "
     "0: no limit). Beyond, a connection's first request gets 429 TOOMANYREQUESTS and it is "
     "closed; beyond twice N, connections are closed unanswered."},
    {"header-timeout", 0, CLI_UINT, 0, "S",
     "Connections that have not authenticated yet (without --htpasswd/--token-file: not sent "
     "complete request headers yet) are closed after S idle seconds (default 15; at most "
     "--connection-timeout)."},
    {"max-password-checks", 0, CLI_UINT, 0, "N",
     "Basic password checks (PBKDF2, CPU-bound) running at once (default 2); the others "
     "wait."},
    {"auth-failure-limit", 0, CLI_UINT, 0, "N",
     "Failed password checks in a row from one address (4 x N for one user name, from any "
     "address) before the backoff (default 5)."},
    {"auth-backoff", 0, CLI_UINT, 0, "S",
     "Past the failure limit, password checks from that address / for that user are refused "
     "with 429 and Retry-After until S seconds after the last failure (default 10). "
     "Credentials already verified are not refused."},
    {"shutdown-timeout", 0, CLI_UINT, 0, "S",
     "On SIGTERM/SIGINT, how long requests in flight may take to finish (default 30)."},
    {"read-only", 0, CLI_FLAG, 0, NULL,
     "Maintenance mode: pulls work; pushes, mounts and deletes get 405 UNSUPPORTED."},
    {"quota-repo", 0, CLI_SIZE, 0, "BYTES",
     "Bytes one repository may hold (its distinct blobs and manifests; K, M, G suffixes). "
     "An upload or manifest that would pass it gets 403 DENIED before its body is stored."},
    {"quota-total", 0, CLI_SIZE, 0, "BYTES",
     "Bytes the whole store may hold (its distinct blobs, as pushed); beyond, 403 DENIED."},
    {"gc-interval", 0, CLI_UINT, 0, "S",
     "Run a garbage collection (as `cmkstore registry gc`) every S seconds, 1 to 604800 "
     "(default: never). Safe with pushes in flight and with other front-ends on the store."},
    {"gc-grace", 0, CLI_UINT, 0, "S",
     "The periodic collection's grace period: blobs written and links made less than S "
     "seconds ago survive (default 3600)."},
    {"quiet", 'q', CLI_FLAG, 0, NULL, "Do not log requests."},
    CLI_AKV_OPTS,
    CLI_OPT_END,
};

/* ---- the embedded default ---- */

static int file_exists(const char *dir, const char *name)
{
    char p[CMK_PATH_MAX + 64];
    struct stat st;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* Creates identity, vault (purge protection), access policy, key and store under home,
 * unless the store exists. *created: 1 if this run made the store. */
static int ensure_default(const char *home, char store_dir[CMK_PATH_MAX], int *created)
{
    static const char *const perms[] = {"get", "wrapKey", "unwrapKey"};
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 0};
    char kid[CMK_ID_MAX];
    cmk_errbuf eb = {0};
    cmk_create_opts co;
    cmk_identity id;
    json_t *j = NULL;
    cmk_err rc;

    *created = 0;
    snprintf(store_dir, CMK_PATH_MAX, "%s/%s", home, DEF_STORE);
    if (file_exists(store_dir, "store.json"))
        return CLI_EXIT_OK;
    rc = cmk_identity_get(home, DEF_IDENTITY, &id, &eb);
    if (rc == CMK_E_NOT_FOUND) {
        eb.code = CMK_OK;
        eb.msg[0] = '\0';
        rc = cmk_identity_create(home, DEF_IDENTITY, &id, &eb);
    }
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot create the identity %s", DEF_IDENTITY);
    rc = cmk_vault_show(home, DEF_VAULT, NULL, &eb);
    if (rc == CMK_E_NOT_FOUND) {
        eb.code = CMK_OK;
        eb.msg[0] = '\0';
        rc = cmk_vault_create(home, DEF_VAULT, &vo, NULL, &eb);
    }
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot create the vault %s", DEF_VAULT);
    /* The policy is granted only while the store does not exist yet: on later runs an
     * operator's revocation must stand. */
    rc = cmk_vault_set_policy(home, DEF_VAULT, id.principal_id, perms, 3, NULL, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot set the access policy of %s", DEF_VAULT);
    rc = cmk_vault_key_show(home, DEF_VAULT, DEF_KEY, NULL, NULL, &eb);
    if (rc == CMK_E_NOT_FOUND) {
        eb.code = CMK_OK;
        eb.msg[0] = '\0';
        rc = cmk_vault_key_create(home, DEF_VAULT, DEF_KEY, "RSA", DEF_KEY_SIZE, &j, &eb);
        json_decref(j);
    }
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot create the key %s", DEF_KEY);
    rc = cmk_vault_kid_format(kid, sizeof(kid), DEF_VAULT, DEF_KEY, NULL, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot form the key identifier");
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = id.id;
    co.key_id = kid; /* versionless: automatic rotation */
    rc = cmk_store_create(store_dir, &co);
    if (rc != CMK_OK)
        return cli_fail(rc, NULL, CLI_HINT_STORE, "cannot create the store %s", store_dir);
    *created = 1;
    return CLI_EXIT_OK;
}

static void print_setup(cmk_store *s, const char *home, int embedded, int created)
{
    cmk_encryption_info ei;
    cmk_identity id;
    cmk_errbuf eb = {0};

    if (cmk_store_encryption(s, &ei) != CMK_OK)
        return;
    if (embedded)
        printf("%s the embedded default in %s:\n", created ? "Created" : "Using", home);
    else
        printf("Serving the store %s:\n", cmk_store_dir(s));
    if (ei.cmk_enabled && cmk_identity_get(home, ei.identity_principal, &id, &eb) == CMK_OK)
        printf("  identity     %s (%s, principalId %s)\n", id.name, ei.identity_kind,
               id.principal_id);
    else if (ei.cmk_enabled)
        printf("  identity     %s (%s)\n", ei.identity_principal, ei.identity_kind);
    if (embedded)
        printf("  vault        %s (purge protection; access policy get, wrapKey, unwrapKey for "
               "the identity)\n",
               DEF_VAULT);
    printf("  key          %s%s\n", ei.cmk_enabled ? ei.key_identifier : "(store-managed)",
           ei.key_rotation_enabled ? " (versionless: automatic rotation)" : "");
    if (ei.cmk_enabled)
        printf("  key version  %s\n", ei.versioned_key_identifier);
    printf("  store        %s\n", cmk_store_dir(s));
    printf("  encryption   customer-managed key %s, key %s, key check every %u s\n",
           ei.cmk_enabled ? "enabled" : "disabled",
           ei.key_accessible ? "accessible" : "NOT accessible", ei.key_check_interval_s);
    if (!ei.key_accessible)
        printf("  key error    %s\n", ei.key_error_msg);
}

/* ---- the daemon ---- */

static __attribute__((format(printf, 2, 0))) void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    /* Clients that try https first (skopeo without --tls-verify=false does) send a TLS
     * handshake, which libmicrohttpd reports with its whole HTML error page: say what it
     * most likely was instead. */
    if (strstr(msg, "HTTP response code is 400")) {
        fprintf(stderr, "cmkstore serve: http: malformed request, connection closed (a TLS "
                        "handshake sent to this plain-HTTP port looks like this)\n");
        return;
    }
    fprintf(stderr, "cmkstore serve: http: %s\n", msg);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;

    /* Upload sessions hold a temporary file each: allow as many descriptors as we may. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "cmkstore serve: warning: cannot raise the open-file limit\n");
    }
}

/* Waits up to timeout_s seconds for a signal of set (runs housekeeping meanwhile).
 * Returns the signal, or 0 at the timeout. */
static int wait_signal(const sigset_t *set, double timeout_s, registry *reg)
{
    struct timespec ts = {1, 0};
    double until = timeout_s > 0 ? (double)time(NULL) + timeout_s : 0;
    int sig;

    for (;;) {
        sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno != EAGAIN && errno != EINTR)
            return 0;
        if (reg)
            registry_tick(reg);
        if (until > 0 && (double)time(NULL) >= until)
            return 0;
    }
}

struct serve_cfg {
    struct sockaddr_storage addr;
    char host[256];
    unsigned port;
    uint64_t max_manifest, max_blob, upload_memory, cache;
    int cache_send;
    unsigned max_uploads, upload_timeout, max_conn, conn_timeout, shutdown_timeout;
    int upload_save_after; /* < 0: off */
    unsigned per_ip, header_timeout;
    http_auth_limits auth;
    uint32_t key_check, rotation_check;
    int quiet;
    int read_only;
    uint64_t quota_repo, quota_total;
    unsigned gc_interval;
    int64_t gc_grace;
};

static int read_cfg(const cli_args *a, struct serve_cfg *c)
{
    const cli_cmd *cmd = a->cmd;
    const char *listen = cli_get(a, "listen");
    uint64_t v;

    memset(c, 0, sizeof(*c));
    if (http_parse_listen(listen ? listen : DEF_LISTEN, &c->addr, c->host, sizeof(c->host),
                          &c->port) != 0)
        return cli_usage_error(cmd,
                               "--listen takes ADDR:PORT with a numeric address "
                               "(127.0.0.1:5000, [::1]:5000), not '%s'",
                               listen);
    c->max_manifest = cli_num(a, "max-manifest-size", 4u << 20);
    if (c->max_manifest < 1024 || c->max_manifest > (64u << 20))
        return cli_usage_error(cmd, "--max-manifest-size must be between 1K and 64M");
    c->max_blob = cli_num(a, "max-blob-size", 0);
    c->cache = cli_num(a, "cache-size", 0);
    if (c->cache > (64ull << 30))
        return cli_usage_error(cmd, "--cache-size must be at most 64G");
    c->cache_send = REG_CACHE_SEND_AUTO;
    if (cli_isset(a, "cache-send")) {
        const char *cs = cli_get(a, "cache-send");
        if (strcmp(cs, "sendfile") == 0)
            c->cache_send = REG_CACHE_SEND_SENDFILE;
        else if (strcmp(cs, "copy") == 0)
            c->cache_send = REG_CACHE_SEND_COPY;
        else if (strcmp(cs, "auto") != 0)
            return cli_usage_error(cmd, "--cache-send takes auto, sendfile or copy");
    }
    v = cli_num(a, "max-uploads", 256);
    if (v < 1 || v > 65536)
        return cli_usage_error(cmd, "--max-uploads must be between 1 and 65536");
    c->max_uploads = (unsigned)v;
    v = cli_num(a, "upload-timeout", 3600);
    if (v < 1 || v > 7 * 86400)
        return cli_usage_error(cmd, "--upload-timeout must be between 1 and 604800 seconds");
    c->upload_timeout = (unsigned)v;
    c->upload_save_after = DEF_UPLOAD_SAVE_AFTER;
    if (cli_isset(a, "upload-save-after")) {
        const char *sa = cli_get(a, "upload-save-after");
        if (strcmp(sa, "off") == 0) {
            c->upload_save_after = -1;
        } else if (http_parse_u64(sa, 86400, &v) == 0) {
            c->upload_save_after = (int)v;
        } else {
            return cli_usage_error(cmd,
                                   "--upload-save-after takes seconds (0 to 86400) or off, not "
                                   "'%s'",
                                   sa);
        }
    }
    if (cli_isset(a, "instance")) {
        const char *in = cli_get(a, "instance");
        size_t n = strlen(in);
        int ok = n >= 1 && n <= 128;
        for (size_t i = 0; ok && i < n; i++)
            ok = in[i] > ' ' && in[i] < 0x7f;
        if (!ok)
            return cli_usage_error(cmd, "--instance takes 1 to 128 printable characters "
                                        "without spaces");
    }
    c->upload_memory = cli_num(a, "upload-memory", 1u << 30);
    if (c->upload_memory < (16u << 20))
        return cli_usage_error(cmd, "--upload-memory must be at least 16M");
    v = cli_num(a, "max-connections", DEF_MAX_CONNECTIONS);
    if (v < 1 || v > 65536)
        return cli_usage_error(cmd, "--max-connections must be between 1 and 65536");
    c->max_conn = (unsigned)v;
    v = cli_num(a, "connection-timeout", DEF_CONN_TIMEOUT);
    if (v < 1 || v > 86400)
        return cli_usage_error(cmd, "--connection-timeout must be between 1 and 86400 seconds");
    c->conn_timeout = (unsigned)v;
    v = cli_num(a, "max-connections-per-ip", DEF_CONN_PER_IP);
    if (v > 65536)
        return cli_usage_error(cmd, "--max-connections-per-ip must be at most 65536");
    c->per_ip = (unsigned)v;
    v = cli_num(a, "header-timeout", DEF_HEADER_TIMEOUT);
    if (v < 1 || v > 86400)
        return cli_usage_error(cmd, "--header-timeout must be between 1 and 86400 seconds");
    c->header_timeout = v < c->conn_timeout ? (unsigned)v : c->conn_timeout;
    v = cli_num(a, "max-password-checks", HTTP_AUTH_DEFAULT_MAX_CHECKS);
    if (v < 1 || v > 1024)
        return cli_usage_error(cmd, "--max-password-checks must be between 1 and 1024");
    c->auth.max_checks = (unsigned)v;
    v = cli_num(a, "auth-failure-limit", HTTP_AUTH_DEFAULT_FAILURES);
    if (v < 1 || v > 1000)
        return cli_usage_error(cmd, "--auth-failure-limit must be between 1 and 1000");
    c->auth.failure_limit = (unsigned)v;
    v = cli_num(a, "auth-backoff", HTTP_AUTH_DEFAULT_BACKOFF);
    if (v < 1 || v > 3600)
        return cli_usage_error(cmd, "--auth-backoff must be between 1 and 3600 seconds");
    c->auth.backoff_s = (unsigned)v;
    v = cli_num(a, "shutdown-timeout", DEF_SHUTDOWN_TIMEOUT);
    if (v > 3600)
        return cli_usage_error(cmd, "--shutdown-timeout must be at most 3600 seconds");
    c->shutdown_timeout = (unsigned)v;
    v = cli_num(a, "key-check-interval", 0);
    if (cli_isset(a, "key-check-interval") && (v < 1 || v > 86400))
        return cli_usage_error(cmd, "--key-check-interval must be between 1 and 86400 seconds");
    c->key_check = (uint32_t)v;
    v = cli_num(a, "rotation-check-interval", 0);
    if (cli_isset(a, "rotation-check-interval") && (v < 1 || v > 86400))
        return cli_usage_error(cmd,
                               "--rotation-check-interval must be between 1 and 86400 seconds");
    c->rotation_check = (uint32_t)v;
    c->quiet = cli_isset(a, "quiet");
    c->read_only = cli_isset(a, "read-only");
    c->quota_repo = cli_num(a, "quota-repo", 0);
    c->quota_total = cli_num(a, "quota-total", 0);
    if ((cli_isset(a, "quota-repo") && c->quota_repo == 0) ||
        (cli_isset(a, "quota-total") && c->quota_total == 0))
        return cli_usage_error(cmd, "--quota-repo and --quota-total must be at least 1 byte");
    v = cli_num(a, "gc-interval", 0);
    if (cli_isset(a, "gc-interval") && (v < 1 || v > 7 * 86400))
        return cli_usage_error(cmd, "--gc-interval must be between 1 and 604800 seconds");
    c->gc_interval = (unsigned)v;
    v = cli_num(a, "gc-grace", 3600);
    if (v > 366u * 86400)
        return cli_usage_error(cmd, "--gc-grace must be at most 31622400 seconds (366 days)");
    c->gc_grace = (int64_t)v;
    return CLI_EXIT_OK;
}

/* Loads --htpasswd/--token-file, or the token authentication options, and --access. */
static int load_access_control(const cli_cmd *cmd, const cli_args *a, http_auth **auth,
                               http_token **token, reg_access **access)
{
    static const char *const tok_opts[] = {"auth-token-realm", "auth-token-service",
                                           "auth-token-issuer", "auth-token-certs"};
    char err[768];
    size_t ntok = 0;
    cmk_err rc;

    for (size_t i = 0; i < 4; i++)
        ntok += cli_isset(a, tok_opts[i]) ? 1 : 0;
    if (ntok && ntok < 4)
        return cli_usage_error(cmd, "token authentication needs --auth-token-realm, "
                                    "--auth-token-service, --auth-token-issuer and "
                                    "--auth-token-certs together");
    if (ntok && (cli_isset(a, "htpasswd") || cli_isset(a, "token-file")))
        return cli_usage_error(cmd, "token authentication (--auth-token-*) excludes --htpasswd "
                                    "and --token-file: the token issuer authenticates users");
    if (cli_isset(a, "access") && !cli_isset(a, "htpasswd") && !cli_isset(a, "token-file"))
        return cli_usage_error(cmd, "--access applies to the users of --htpasswd (or "
                                    "--token-file); with token authentication the tokens carry "
                                    "the access");
    if (ntok) {
        http_token_opts to = {.realm = cli_get(a, "auth-token-realm"),
                              .service = cli_get(a, "auth-token-service"),
                              .issuer = cli_get(a, "auth-token-issuer"),
                              .certs = cli_get(a, "auth-token-certs")};
        rc = http_token_load(&to, token, err, sizeof(err));
    } else {
        rc = http_auth_load(cli_get(a, "htpasswd"), cli_get(a, "token-file"), auth, err,
                            sizeof(err));
    }
    if (rc == CMK_OK && cli_isset(a, "access"))
        rc = reg_access_load(cli_get(a, "access"), access, err, sizeof(err));
    if (rc != CMK_OK) {
        fprintf(stderr, "cmkstore: error: %s\n", err);
        http_auth_free(*auth);
        http_token_free(*token);
        *auth = NULL;
        *token = NULL;
        return cli_exit_code(rc);
    }
    return CLI_EXIT_OK;
}

static int run_serve(const cli_cmd *cmd, cli_args *a)
{
    struct serve_cfg cfg;
    char home[CMK_PATH_MAX], store_dir[CMK_PATH_MAX];
    const char *dir = cli_get(a, "store");
    http_daemon *d = NULL;
    const char *scheme;
    http_metrics *metrics = NULL;
    http_conn *conns = NULL;
    http_auth *auth = NULL;
    http_token *token = NULL;
    reg_access *access = NULL;
    registry *reg = NULL;
    cmk_store *s = NULL;
    cmk_store_opts so;
    registry_opts ro;
    cmk_errbuf eb = {0};
    sigset_t set;
    struct sigaction ign, oldpipe;
    int ex, created = 0, sig, masked = 0, listen_fd;
    cmk_err rc;

    ex = read_cfg(a, &cfg);
    if (ex != CLI_EXIT_OK)
        return ex;
    if ((ex = cli_apply_akv_opts(cmd, a)) != CLI_RUN)
        return ex;
    ex = load_access_control(cmd, a, &auth, &token, &access);
    if (ex != CLI_EXIT_OK)
        return ex;
    /* Signals go to the main thread only: block them before any thread is started. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        ex = cli_fail(CMK_E_IO, NULL, CLI_HINT_NONE, "cannot block signals");
        goto out;
    }
    masked = 1;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGPIPE, &ign, &oldpipe) != 0) {
        ex = cli_fail(CMK_E_IO, NULL, CLI_HINT_NONE, "cannot ignore SIGPIPE");
        goto out;
    }
    raise_fd_limit();
    json_object_seed(0); /* before threads: jansson's hash seed is set once */

    rc = cli_home(a, !dir, home, &eb);
    if (rc != CMK_OK) {
        if (!dir) {
            ex = cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use the cmkstore home");
            goto out;
        }
        home[0] = '\0'; /* a store given explicitly may not need the home */
    }
    if (!dir) {
        ex = ensure_default(home, store_dir, &created);
        if (ex != CLI_EXIT_OK)
            goto out;
        dir = store_dir;
    }
    cmk_store_opts_init(&so);
    so.home = a->home;
    rc = cmk_store_open(dir, &so, &s);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot open the store %s", dir);
        goto out;
    }
    if (cfg.key_check || cfg.rotation_check) {
        rc = cmk_store_set_policy(s, cfg.rotation_check, cfg.key_check, 0, 0);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot set the key-check intervals");
            goto out;
        }
    }
    rc = cmk_store_start_background(s);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot start the key checks");
        goto out;
    }
    metrics = http_metrics_new();
    if (!metrics) {
        ex = cli_fail(CMK_E_NOMEM, NULL, CLI_HINT_NONE, "cannot start");
        goto out;
    }
    http_auth_set_limits(auth, &cfg.auth, metrics);
    conns = http_conn_new(cfg.per_ip, cfg.max_conn, cfg.conn_timeout, metrics);
    if (!conns) {
        ex = cli_fail(CMK_E_NOMEM, NULL, CLI_HINT_NONE, "cannot start");
        goto out;
    }
    memset(&ro, 0, sizeof(ro));
    ro.store = s;
    ro.conns = conns;
    ro.auth = auth;
    ro.token = token;
    ro.access = access;
    ro.metrics = metrics;
    ro.max_manifest = cfg.max_manifest;
    ro.max_blob = cfg.max_blob;
    ro.cache_bytes = cfg.cache;
    ro.cache_send = cfg.cache_send;
    ro.max_uploads = cfg.max_uploads;
    ro.upload_timeout_s = cfg.upload_timeout;
    ro.upload_save_after_s = cfg.upload_save_after;
    ro.upload_memory = cfg.upload_memory;
    ro.log_requests = !cfg.quiet;
    ro.read_only = cfg.read_only;
    ro.quota_repo = cfg.quota_repo;
    ro.quota_total = cfg.quota_total;
    ro.gc_interval_s = cfg.gc_interval;
    ro.gc_grace_s = cfg.gc_grace;
    rc = registry_new(&ro, &reg);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot start");
        goto out;
    }
    listen_fd = http_listen_open(&cfg.addr, &cfg.port);
    if (listen_fd < 0) {
        fprintf(stderr, "cmkstore: error: cannot listen on %s:%u: %s\n", cfg.host, cfg.port,
                strerror(errno));
        ex = CLI_EXIT_FAILURE;
        goto out;
    }
    {
        /* After the listen: the default instance name has the port, which may have been
         * picked just now (port 0). Before the daemon: no request sees a session missing. */
        char inst[512], hn[256] = "";
        unsigned restored = 0, expired = 0, others = 0;
        if (cli_isset(a, "instance")) {
            snprintf(inst, sizeof(inst), "%s", cli_get(a, "instance"));
        } else {
            if (gethostname(hn, sizeof(hn) - 1) != 0)
                snprintf(hn, sizeof(hn), "localhost");
            hn[sizeof(hn) - 1] = '\0';
            snprintf(inst, sizeof(inst), cfg.addr.ss_family == AF_INET6 ? "%s/[%s]:%u" : "%s/%s:%u",
                     hn, cfg.host, cfg.port);
        }
        rc = registry_restore_uploads(reg, inst, &restored, &expired, &others);
        if (rc != CMK_OK)
            fprintf(stderr,
                    "cmkstore serve: warning: cannot restore the saved upload sessions (%s); "
                    "they stay saved for the next start\n",
                    cmk_errmsg());
        else if (restored || expired || others)
            fprintf(stderr,
                    "cmkstore serve: %u upload session(s) restored from the last run, %u "
                    "expired (--upload-timeout) and dropped, %u of other instances left "
                    "alone\n",
                    restored, expired, others);
    }
    {
        /* The daemon-wide timeout is the header timeout: http_conn_trust lengthens it to
         * --connection-timeout for connections that have authenticated. */
        http_daemon_cfg dc = {
            .flags = cfg.addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0,
            .accept = http_conn_accept,
            .accept_cls = conns,
            .access = registry_access,
            .access_cls = reg,
            .completed = registry_completed,
            .completed_cls = reg,
            .notify = http_conn_notify,
            .notify_cls = conns,
            .logger = mhd_log,
            /* Room for the excess ones that the registry answers with 503. */
            .conn_limit = 2 * cfg.max_conn,
            .conn_timeout = cfg.header_timeout,
            .mem_limit = MHD_MEMORY_LIMIT,
            .tls_cert = cli_get(a, "tls-cert"),
            .tls_key = cli_get(a, "tls-key"),
        };
        char derr[600];
        rc = http_daemon_start(&dc, listen_fd, &d, derr, sizeof(derr));
        if (rc != CMK_OK) {
            fprintf(stderr, "cmkstore: error: %s:%u: %s\n", cfg.host, cfg.port, derr);
            ex = cli_exit_code(rc);
            goto out;
        }
    }
    if (http_daemon_port(d))
        cfg.port = http_daemon_port(d);
    scheme = http_daemon_is_tls(d) ? "https" : "http";

    print_setup(s, home, dir == store_dir, created);
    if (cfg.addr.ss_family == AF_INET6)
        printf("Listening on %s://[%s]:%u (OCI Distribution Spec v1.1; /metrics)\n", scheme,
               cfg.host, cfg.port);
    else
        printf("Listening on %s://%s:%u (OCI Distribution Spec v1.1; /metrics)\n", scheme, cfg.host,
               cfg.port);
    if (http_daemon_is_tls(d))
        printf("TLS: %s (SHA-256 %s); TLS 1.2 and 1.3; SIGHUP reloads it\n", cli_get(a, "tls-cert"),
               http_daemon_fingerprint(d));
    if (auth)
        printf("Authentication: %s%s%s\n", http_auth_has_basic(auth) ? "Basic (htpasswd)" : "",
               http_auth_has_basic(auth) && http_auth_has_bearer(auth) ? ", " : "",
               http_auth_has_bearer(auth) ? "Bearer (token file)" : "");
    if (access)
        printf("Access: %zu rule(s) from %s; anything else is denied\n", reg_access_rules(access),
               cli_get(a, "access"));
    if (token)
        printf("Authentication: Bearer tokens from %s (%zu trusted key(s))\n",
               http_token_realm(token), http_token_keys(token));
    if (cfg.read_only)
        printf("Read-only mode: pulls only (pushes and deletes get 405 UNSUPPORTED)\n");
    if (cfg.gc_interval)
        printf("Garbage collection every %u s (grace %lld s)\n", cfg.gc_interval,
               (long long)cfg.gc_grace);
    printf("Try: skopeo copy %s oci:./my-image:latest docker://%s%s%s:%u/demo/hello:1\n",
           http_daemon_is_tls(d) ? "--dest-cert-dir DIR-WITH-THE-CA.crt"
                                 : "--dest-tls-verify=false",
           cfg.addr.ss_family == AF_INET6 ? "[" : "", cfg.host,
           cfg.addr.ss_family == AF_INET6 ? "]" : "", cfg.port);
    if (!http_is_loopback(&cfg.addr) && !http_daemon_is_tls(d))
        fprintf(stderr, "cmkstore serve: warning: listening beyond loopback without TLS; put a "
                        "TLS-terminating proxy in front\n");
    if (fflush(stdout) != 0)
        fprintf(stderr, "cmkstore serve: warning: cannot write to standard output\n");

    /* SIGHUP reloads the certificate; retired daemons are stopped once idle. */
    for (;;) {
        sig = wait_signal(&set, 1, reg);
        if (sig == SIGHUP) {
            char rerr[600];
            if (!http_daemon_is_tls(d))
                fprintf(stderr, "cmkstore serve: SIGHUP: not serving TLS, nothing to reload\n");
            else if (http_daemon_reload(d, rerr, sizeof(rerr)) != CMK_OK)
                fprintf(stderr, "cmkstore serve: SIGHUP: the certificate was not reloaded: %s\n",
                        rerr);
            else
                fprintf(stderr, "cmkstore serve: SIGHUP: certificate reloaded (SHA-256 %s)\n",
                        http_daemon_fingerprint(d));
            continue;
        }
        if (sig != 0)
            break;
        http_daemon_reap(d, (double)cfg.conn_timeout + cfg.shutdown_timeout);
    }
    fprintf(stderr,
            "cmkstore serve: %s: shutting down (waiting up to %u s for %u request(s) in "
            "flight)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", cfg.shutdown_timeout, registry_inflight(reg));
    registry_drain(reg);
    http_daemon_quiesce(d);
    {
        double deadline = (double)time(NULL) + cfg.shutdown_timeout;
        while (registry_inflight(reg) > 0 && (double)time(NULL) < deadline) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            int g = sigtimedwait(&set, NULL, &ts);
            if (g == SIGINT || g == SIGTERM) {
                fprintf(stderr, "cmkstore serve: second signal: stopping now\n");
                break;
            }
        }
    }
    if (registry_inflight(reg) > 0)
        fprintf(stderr,
                "cmkstore serve: %u request(s) still in flight: aborted (uploads are "
                "discarded whole)\n",
                registry_inflight(reg));
    http_daemon_stop(d);
    d = NULL;
    {
        /* Open sessions are saved in the store: clients resume them after a restart. */
        unsigned open = registry_uploads(reg), saved = 0;
        rc = registry_suspend_uploads(reg, &saved);
        fprintf(stderr,
                "cmkstore serve: stopped; %u unfinished upload session(s) saved (resumable "
                "after a restart)%s\n",
                saved, rc != CMK_OK ? ", the others discarded" : "");
        if (rc != CMK_OK)
            fprintf(stderr, "cmkstore serve: %u session(s) could not be saved: %s\n", open - saved,
                    cmk_errmsg());
    }
    ex = CLI_EXIT_OK;
out:
    http_daemon_stop(d);
    registry_free(reg);
    http_conn_free(conns);
    http_metrics_free(metrics);
    if (s)
        cmk_store_stop_background(s);
    cmk_store_close(s);
    http_auth_free(auth);
    http_token_free(token);
    reg_access_free(access);
    /* SIGINT and SIGTERM stay blocked: the process exits next, and a second signal sent
     * while it shuts down must not turn a clean exit into death by signal. */
    if (masked)
        sigaction(SIGPIPE, &oldpipe, NULL);
    return ex;
}

/* ---- serve-passwd ---- */

const cli_cmd cli_serve_cmds[] = {
    {.path = "serve",
     .summary = "Run an OCI registry whose storage is the encrypted store",
     .description =
         "Serves the OCI Distribution Spec v1.1 over HTTP/1.1: pulls (with Range), pushes "
         "(monolithic, chunked, cross-repository mounts), manifests, tags, referrers, catalog "
         "and deletes. Every blob and manifest is stored encrypted under the store's key; "
         "repository metadata is kept in the store as encrypted records.\n\nWith no --store, "
         "the embedded default is used: on first run it creates, under the home, an identity, "
         "a vault with purge protection, an access policy (get, wrapKey, unwrapKey), an RSA "
         "key and a store with the versionless key id (automatic rotation); later runs reuse "
         "them.\n\nKey rotation and revocation take effect while serving: while the key is "
         "revoked, requests that touch content get 503 with the reason, and service resumes "
         "when access is restored. One line per request is logged on stderr (never headers "
         "or credentials). GET /metrics gives Prometheus metrics. SIGTERM or SIGINT stop it "
         "gracefully (exit 0).\n\nAny number of servers may serve one store at once (front-ends "
         "behind a load balancer): tags, manifests and links are written by compare-and-swap, "
         "and each server adopts a rotation or revocation at its next key check. An upload "
         "session lives in the server that opened it: route its requests there. CLI commands, "
         "blob rm included, may run beside the servers.",
     .opts = serve_opts,
     .example = "cmkstore serve\n"
                "cmkstore serve --store ./registry --listen 127.0.0.1:5000 \\\n"
                "    --htpasswd ./htpasswd\n"
                "skopeo copy --dest-tls-verify=false oci:./image:latest \\\n"
                "    docker://127.0.0.1:5000/demo/hello:1",
     .run = run_serve},
    {.path = "serve-passwd",
     .summary = "Make an htpasswd line for `cmkstore serve --htpasswd`",
     .description = "Reads a password from standard input (one line) and prints "
                    "USER:$pbkdf2-sha256$<iterations>$<salt>$<hash> for the htpasswd file of "
                    "`cmkstore serve`. Keep that file private (mode 0600): serve refuses it "
                    "otherwise.",
     .opts = serve_passwd_opts,
     .pos_usage = "USER",
     .min_pos = 1,
     .max_pos = 1,
     .example = "printf '%s\\n' \"$PASSWORD\" | cmkstore serve-passwd alice >> htpasswd\n"
                "chmod 600 htpasswd",
     .run = serve_run_passwd},
    {.path = NULL},
};

static int run_cmd(const cli_cmd *cmd, int argc, char **argv)
{
    cli_args a;
    int rc;

    memset(&a, 0, sizeof(a));
    rc = cli_parse(cmd, argc, argv, &a);
    if (rc != CLI_RUN)
        return rc;
    return cmd->run(cmd, &a);
}

int cmd_serve(int argc, char **argv)
{
    return run_cmd(&cli_serve_cmds[0], argc, argv);
}

int cmd_serve_passwd(int argc, char **argv)
{
    return run_cmd(&cli_serve_cmds[1], argc, argv);
}
