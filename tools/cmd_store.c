/*
 * cmd_store.c — `cmkstore create` and `cmkstore encryption ...` (like `az acr create
 * --identity --key-encryption-key` and `az acr encryption show`).
 *
 * The seeds' rule: a customer-managed key (CMK) can only be enabled when a store is created
 * and can never be disabled. So there is no command that changes a store's encryption
 * status: `encryption enable|disable` exist only to refuse, with the reason.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tools/cli.h"
#include "core/format.h"
#include "core/base/jsonfile.h"

enum { ENC_SHOW, ENC_ROTATE, ENC_CHECK, ENC_ENABLE, ENC_DISABLE, ENC_UPDATE, ENC_ROTATE_DEK };

/* Limits of the key-lifecycle settings (the library accepts the same). */
#define MAX_INTERVAL_S 86400u

static const cli_opt create_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR",
     "Directory of the new store; it must not exist or must be empty. Or s3://BUCKET[/PREFIX]: "
     "a bucket (that exists) or a prefix in it holding nothing yet."},
    {"identity", 0, CLI_STR, 0, "ID",
     "User-assigned identity that reaches the key: its name, resource id, principalId or "
     "clientId. Goes with --key-encryption-key."},
    {"key-encryption-key", 0, CLI_STR, 0, "KID",
     "Customer-managed key: local://VAULT/keys/NAME/VERSION (this version until rotated by "
     "hand) or local://VAULT/keys/NAME (follows the latest version: automatic rotation); "
     "for a key in Azure Key Vault (or `cmkstore vault serve`), "
     "https://VAULT-HOST/keys/NAME[/VERSION], the same way; "
     "for a key in a PKCS#11 token, pkcs11:token=T;object=L[;id=%..] (see kek/HSM.md). "
     "RSA or RSA-HSM keys only. Without it the store uses a store-managed key and the CMK "
     "status is disabled, for good."},
    {"config", 0, CLI_STR, 0, "FILE.json",
     "Encryption settings as JSON, in the shape of an ARM template's properties.encryption: "
     "{\"status\": \"enabled\", \"keyVaultProperties\": {\"identity\": ID, \"keyIdentifier\": "
     "KID}}, alone, inside {\"encryption\": ...} or {\"properties\": {\"encryption\": ...}}, or "
     "a whole ARM template with a Microsoft.ContainerRegistry/registries resource. "
     "\"status\": \"disabled\" means a store-managed key."},
    {"parameters", 0, CLI_LIST, 0, "NAME=VALUE",
     "Values for [parameters('NAME')] in an ARM template given with --config (else the "
     "parameters' defaultValue)."},
    {"chunk-size", 0, CLI_SIZE, 0, "BYTES",
     "Plaintext bytes per sealed chunk: a power of two from 64K to 16M (default 1M)."},
    {"rotation-check-interval", 0, CLI_UINT, 0, "SECONDS",
     "With a versionless key identifier: how often a long-running process (or `encryption "
     "watch`) looks for a new key version; 1 to 86400 (default 3600)."},
    {"key-check-interval", 0, CLI_UINT, 0, "SECONDS",
     "How often a long-running process re-checks access to its key; 1 to 86400 (default 60)."},
    {"unreachable-grace", 0, CLI_UINT, 0, "SECONDS",
     "How long cached data keys keep serving while the vault does not answer (never after a "
     "denial); 1 to 86400 (default 300)."},
    {"dek-rollover-blobs", 0, CLI_STR, 0, "N|never",
     "Start a new data key after every N blobs written by one process (default: never)."},
    CLI_AKV_OPTS,
    CLI_OPT_END,
};

static const cli_opt update_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"rotation-check-interval", 0, CLI_UINT, 0, "SECONDS",
     "How often to look for a new version of a versionless key: 1 to 86400."},
    {"key-check-interval", 0, CLI_UINT, 0, "SECONDS",
     "How often a long-running process re-checks access to the key: 1 to 86400."},
    {"unreachable-grace", 0, CLI_UINT, 0, "SECONDS",
     "How long cached data keys keep serving while the vault does not answer: 1 to 86400."},
    {"dek-rollover-blobs", 0, CLI_STR, 0, "N|never",
     "Start a new data key after every N blobs written by one process (1 to 4294967294), or "
     "never."},
    CLI_OPT_END,
};

static const cli_opt watch_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"duration", 0, CLI_UINT, 0, "SECONDS",
     "Stop after this many seconds (default: run until interrupted)."},
    CLI_OPT_END,
};

static const cli_opt store_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    CLI_OPT_END,
};

static const cli_opt rotate_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"key-encryption-key", 0, CLI_STR, 1, "KID",
     "The new key: another version, another key, or a key in another vault. Versioned: manual "
     "rotation from now on; versionless: automatic rotation."},
    {"identity", 0, CLI_STR, 0, "ID|[system]",
     "Identity to reach the new key with (an identity assigned to the store, or [system] for "
     "its system-assigned one). Default: keep the current one."},
    CLI_OPT_END,
};

static const cli_opt check_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"no-rotate", 0, CLI_FLAG, 0, NULL,
     "Only check access to the key; do not look for a newer key version."},
    CLI_OPT_END,
};

/* ---- --config ---- */

/* Member lookup ignoring case: ARM is case-insensitive ("KeyIdentifier" in the seed). */
static json_t *get_ci(const json_t *obj, const char *key)
{
    const char *k;
    json_t *v;

    if (!json_is_object(obj))
        return NULL;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (strcasecmp(k, key) == 0)
            return v;
    }
    return NULL;
}

/* Value of template parameter `name`: --parameters NAME=VALUE, else its defaultValue. */
static cmk_err template_param(const json_t *tpl, const cli_args *a, const char *name, size_t len,
                              const char **out, cmk_errbuf *eb)
{
    const char *const *params;
    size_t n = cli_list(a, "parameters", &params);
    char key[128];
    const char *def;

    for (size_t i = 0; i < n; i++) {
        if (strncmp(params[i], name, len) == 0 && params[i][len] == '=') {
            *out = params[i] + len + 1;
            return CMK_OK;
        }
    }
    snprintf(key, sizeof(key), "%.*s", (int)len, name);
    def = json_string_value(get_ci(get_ci(get_ci(tpl, "parameters"), key), "defaultValue"));
    if (def && *def) {
        *out = def;
        return CMK_OK;
    }
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "template parameter '%s' has no value: pass --parameters %s=VALUE", key,
                          key);
}

/* Evaluates the few ARM expressions a CMK template uses: [parameters('NAME')], and for the
 * identity the seed's [reference(resourceId('Microsoft.ManagedIdentity/
 * userAssignedIdentities', parameters('NAME')), ...).clientId], which names the identity
 * NAME. Other strings are literals ("[[" escapes a leading '['). */
static cmk_err eval_value(const json_t *tpl, const cli_args *a, const char *field, const char *in,
                          char out[CMK_ID_MAX], cmk_errbuf *eb)
{
    static const char param_fn[] = "parameters('";
    size_t n = strlen(in);
    const char *val = in, *p, *q;
    cmk_err rc;

    if (n >= 2 && in[0] == '[' && in[1] == '[') {
        val = in + 1;
    } else if (n >= 2 && in[0] == '[' && in[n - 1] == ']') {
        p = strstr(in, param_fn);
        q = p ? strchr(p + strlen(param_fn), '\'') : NULL;
        int whole = p == in + 1 && q && strcmp(q, "')]") == 0;
        int ident = p && q && strcmp(field, "identity") == 0 &&
                    strstr(in, "Microsoft.ManagedIdentity/userAssignedIdentities") != NULL;
        if (!whole && !ident)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "%s: template expression %s is not supported (only "
                                  "[parameters('NAME')] and a reference to a user-assigned "
                                  "identity are evaluated): put the literal value",
                                  field, in);
        p += strlen(param_fn);
        rc = template_param(tpl, a, p, (size_t)(q - p), &val, eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (!*val || strlen(val) >= CMK_ID_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s must be a non-empty string shorter than %d",
                              field, CMK_ID_MAX);
    memcpy(out, val, strlen(val) + 1);
    return CMK_OK;
}

/* Finds the encryption object: alone, {"encryption"}, {"properties": {"encryption"}}, or the
 * registry resource of an ARM template. */
static cmk_err find_encryption(const json_t *root, json_t **enc, cmk_errbuf *eb)
{
    json_t *res = get_ci(root, "resources"), *found = NULL, *v, *node = (json_t *)root;
    size_t i;

    if (json_is_array(res)) {
        json_array_foreach(res, i, v)
        {
            const char *type = json_string_value(get_ci(v, "type"));
            if (type && strcasecmp(type, "Microsoft.ContainerRegistry/registries") == 0) {
                if (found)
                    return cmk_errbuf_set(eb, CMK_E_INVAL,
                                          "the template has more than one "
                                          "Microsoft.ContainerRegistry/registries resource; one "
                                          "store is created from one");
                found = v;
            }
        }
        if (!found)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "the template has no Microsoft.ContainerRegistry/registries "
                                  "resource");
        node = get_ci(found, "properties");
        if (!get_ci(node, "encryption"))
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "the registry resource has no properties.encryption");
    }
    if (get_ci(node, "properties") && get_ci(get_ci(node, "properties"), "encryption"))
        node = get_ci(node, "properties");
    if (get_ci(node, "encryption"))
        node = get_ci(node, "encryption");
    else if (!get_ci(node, "status") && !get_ci(node, "keyVaultProperties"))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no encryption settings found: expected {\"status\": "
                              "\"enabled\", \"keyVaultProperties\": {\"identity\": ..., "
                              "\"keyIdentifier\": ...}}, optionally inside {\"encryption\": "
                              "...}, {\"properties\": {\"encryption\": ...}} or an ARM template");
    if (!json_is_object(node))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "encryption settings must be a JSON object");
    *enc = node;
    return CMK_OK;
}

/* Reads --config into identity/kid; *cmk receives 0 for "status": "disabled". */
static cmk_err load_config(const cli_args *a, const char *file, char identity[CMK_ID_MAX],
                           char kid[CMK_ID_MAX], int *cmk, cmk_errbuf *eb)
{
    json_t *root = NULL, *enc = NULL, *kvp, *jid, *jkid;
    const char *status;
    cmk_err rc;

    rc = cmk_json_load(file, &root, eb);
    if (rc == CMK_E_CORRUPT) /* a user's file that does not parse is invalid input */
        rc = eb->code = CMK_E_INVAL;
    if (rc != CMK_OK)
        goto out;
    rc = find_encryption(root, &enc, eb);
    if (rc != CMK_OK)
        goto out;
    kvp = get_ci(enc, "keyVaultProperties");
    jid = get_ci(kvp, "identity");
    jkid = get_ci(kvp, "keyIdentifier");
    status = json_string_value(get_ci(enc, "status"));
    if (get_ci(enc, "status") && !status) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "\"status\" must be \"enabled\" or \"disabled\"");
        goto out;
    }
    if (status && strcasecmp(status, "enabled") != 0 && strcasecmp(status, "disabled") != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "\"status\" must be \"enabled\" or \"disabled\", not \"%s\"", status);
        goto out;
    }
    *cmk = status ? strcasecmp(status, "enabled") == 0 : jkid != NULL;
    if (!*cmk) {
        /* Conflicting settings are refused rather than guessed. */
        if (json_string_length(jkid) > 0 || json_string_length(jid) > 0)
            rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                                "\"status\" is \"disabled\" but keyVaultProperties names a key "
                                "or identity: set \"status\": \"enabled\" for a "
                                "customer-managed key, or remove keyVaultProperties");
        goto out;
    }
    if (!json_is_string(jid) || !json_is_string(jkid)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "a customer-managed key needs keyVaultProperties.identity and "
                            "keyVaultProperties.keyIdentifier (strings)");
        goto out;
    }
    rc = eval_value(root, a, "identity", json_string_value(jid), identity, eb);
    if (rc == CMK_OK)
        rc = eval_value(root, a, "keyIdentifier", json_string_value(jkid), kid, eb);
out:
    json_decref(root);
    return rc;
}

/* ---- JSON of the encryption settings ---- */

static json_t *kvp_json(const cmk_encryption_info *ei)
{
    if (!ei->cmk_enabled)
        return json_null();
    return json_pack("{s:s, s:s, s:s, s:b, s:o}", "identity", ei->identity, "keyIdentifier",
                     ei->key_identifier, "versionedKeyIdentifier", ei->versioned_key_identifier,
                     "keyRotationEnabled", ei->key_rotation_enabled, "lastKeyRotationTimestamp",
                     cli_json_time(ei->last_key_rotation));
}

/* The identity the store reaches its key with (the system one for a store-managed key). */
static json_t *key_identity_json(const cmk_encryption_info *ei)
{
    int user = strcmp(ei->identity_kind, "UserAssigned") == 0;

    return json_pack("{s:s, s:s, s:o}", "type", ei->identity_kind, "principalId",
                     ei->identity_principal, "clientId",
                     user ? cli_json_str_or_null(ei->identity) : json_null());
}

/* Identities of a new store, shaped like `az acr create` prints them. */
static json_t *store_identity_json(const cli_args *a, const char *store_id,
                                   const cmk_encryption_info *ei)
{
    char home[CMK_PATH_MAX];
    cmk_identity sys, user;
    cmk_errbuf eb = {0};
    int have_sys = 0;
    cmk_err rc;

    rc = cli_home(a, 0, home, &eb);
    if (rc != CMK_OK)
        home[0] = '\0';
    else
        rc = cmk_identity_get_system(home, store_id, &sys, &eb);
    if (rc == CMK_OK)
        have_sys = 1;
    else
        fprintf(stderr, "cmkstore: warning: cannot read the store's system-assigned identity: %s\n",
                eb.msg);
    if (home[0] && ei->cmk_enabled && strcmp(ei->identity_kind, "UserAssigned") == 0 &&
        cmk_identity_get(home, ei->identity_principal, &user, &eb) == CMK_OK)
        return json_pack(
            "{s:s, s:o, s:o, s:{s:{s:s, s:s}}}", "type", "SystemAssigned, UserAssigned",
            "principalId", have_sys ? json_string(sys.principal_id) : json_null(), "tenantId",
            have_sys ? json_string(sys.tenant_id) : json_null(), "userAssignedIdentities", user.id,
            "clientId", user.client_id, "principalId", user.principal_id);
    return json_pack("{s:s, s:o, s:o}", "type", "SystemAssigned", "principalId",
                     have_sys ? json_string(sys.principal_id) : json_null(), "tenantId",
                     have_sys ? json_string(sys.tenant_id) : json_null());
}

/* ---- create ---- */

static int check_u32(const cli_cmd *cmd, const cli_args *a, const char *name, uint32_t *out)
{
    uint64_t v = cli_num(a, name, 0);

    if (v > UINT32_MAX)
        return cli_usage_error(cmd, "--%s is too large", name);
    *out = (uint32_t)v;
    return CLI_RUN;
}

/* An interval option: if given, 1 s .. 1 day (0 would mean "default" or "unchanged" to the
 * library, which is not what a user who types 0 asks for). Unset: *out = 0. */
static int check_interval(const cli_cmd *cmd, const cli_args *a, const char *name, uint32_t *out)
{
    uint64_t v = cli_num(a, name, 0);

    *out = 0;
    if (!cli_isset(a, name))
        return CLI_RUN;
    if (v < 1 || v > MAX_INTERVAL_S)
        return cli_usage_error(cmd, "--%s must be from 1 to %u seconds (1 day), not %llu", name,
                               MAX_INTERVAL_S, (unsigned long long)v);
    *out = (uint32_t)v;
    return CLI_RUN;
}

/* --dek-rollover-blobs N|never: *out = N, UINT32_MAX for never, 0 if not given. */
static int check_rollover(const cli_cmd *cmd, const cli_args *a, uint32_t *out)
{
    const char *v = cli_get(a, "dek-rollover-blobs");
    unsigned long long n;
    char *end;

    *out = 0;
    if (!v)
        return CLI_RUN;
    if (strcmp(v, "never") == 0) {
        *out = UINT32_MAX;
        return CLI_RUN;
    }
    errno = 0;
    n = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end || errno || n < 1 || n >= UINT32_MAX)
        return cli_usage_error(cmd,
                               "--dek-rollover-blobs must be a number of blobs from 1 to %u, "
                               "or never, not '%s'",
                               UINT32_MAX - 1, v);
    *out = (uint32_t)n;
    return CLI_RUN;
}

static int run_create(const cli_cmd *cmd, cli_args *a)
{
    const char *dir = cli_get(a, "store"), *config = cli_get(a, "config");
    char identity[CMK_ID_MAX] = "", kid[CMK_ID_MAX] = "", base[256];
    const char *const *params;
    int cmk = cli_isset(a, "key-encryption-key"), ex;
    uint32_t rollover = 0;
    cmk_encryption_info ei;
    cmk_create_opts o;
    cmk_store *s = NULL;
    cmk_errbuf eb = {0};
    const char *slash;
    cmk_err rc;

    if ((ex = cli_apply_akv_opts(cmd, a)) != CLI_RUN)
        return ex;
    if (cli_isset(a, "identity") != cli_isset(a, "key-encryption-key"))
        return cli_usage_error(cmd, "--identity and --key-encryption-key go together: a "
                                    "customer-managed key needs both (neither: store-managed "
                                    "key)");
    if (config && cmk)
        return cli_usage_error(cmd, "--config replaces --identity and --key-encryption-key; "
                                    "give one or the other");
    if (!config && cli_list(a, "parameters", &params) > 0)
        return cli_usage_error(cmd, "--parameters only applies to a template given with --config");
    cmk_create_opts_init(&o);
    o.home = a->home;
    if ((ex = check_u32(cmd, a, "chunk-size", &o.chunk_size)) != CLI_RUN ||
        (ex = check_interval(cmd, a, "rotation-check-interval", &o.rotation_check_interval_s)) !=
            CLI_RUN ||
        (ex = check_interval(cmd, a, "key-check-interval", &o.key_check_interval_s)) != CLI_RUN ||
        (ex = check_interval(cmd, a, "unreachable-grace", &o.unreachable_grace_s)) != CLI_RUN ||
        (ex = check_rollover(cmd, a, &rollover)) != CLI_RUN)
        return ex;
    if (cli_isset(a, "chunk-size") && o.chunk_size == 0)
        return cli_usage_error(cmd, "--chunk-size must be a power of two from 64K to 16M");
    if (config) {
        rc = load_config(a, config, identity, kid, &cmk, &eb);
        if (rc != CMK_OK)
            return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use --config %s", config);
    } else if (cmk) {
        snprintf(identity, sizeof(identity), "%s", cli_get(a, "identity"));
        snprintf(kid, sizeof(kid), "%s", cli_get(a, "key-encryption-key"));
    }
    if (cmk) {
        o.identity = identity;
        o.key_id = kid;
    }
    rc = cmk_store_create(dir, &o);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot create a store in %s", dir);
        if (rc == CMK_E_KEY_DELETED || rc == CMK_E_KEY_DISABLED)
            cli_key_hint(rc);
        else if (cmk_err_is_key_access(rc) && rc != CMK_E_KEY_UNREACHABLE)
            cli_hint("grant the identity the key permissions a store needs: `cmkstore vault "
                     "set-policy --name VAULT --object-id <principalId> --key-permissions get "
                     "unwrapKey wrapKey`, and check that the key exists and is enabled.");
        else if (rc == CMK_E_NOT_FOUND && cmk)
            cli_hint("an identity is created with `cmkstore identity create --name NAME`; grant "
                     "it get, wrapKey and unwrapKey on the vault (`cmkstore vault set-policy`).");
        else if (rc == CMK_E_KEY_UNSUPPORTED)
            cli_hint("create an RSA key with `cmkstore vault key create --kty RSA`.");
        return ex;
    }
    /* Re-open to report what was made, exactly as `encryption show` will. */
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK) {
        fprintf(stderr, "cmkstore: note: the store was created in %s\n", dir);
        return ex;
    }
    if (rollover) {
        rc = cmk_store_set_policy(s, 0, 0, 0, rollover);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE,
                          "the store was created in %s, but its DEK rollover policy could not "
                          "be set (set it with `cmkstore encryption update`)",
                          dir);
            goto out;
        }
    }
    rc = cmk_store_encryption(s, &ei);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot read the encryption settings of %s", dir);
        goto out;
    }
    slash = strrchr(cmk_store_dir(s), '/');
    snprintf(base, sizeof(base), "%s", slash ? slash + 1 : cmk_store_dir(s));
    ex = cli_print_json(
        json_pack("{s:s, s:s, s:s, s:I, s:{s:s, s:o}, s:o}", "dir", cmk_store_dir(s), "id",
                  cmk_store_id(s), "name", base, "chunkSize",
                  (json_int_t)(o.chunk_size ? o.chunk_size : CMK_FMT_CHUNK_DEFAULT), "encryption",
                  "status", ei.cmk_enabled ? "enabled" : "disabled", "keyVaultProperties",
                  kvp_json(&ei), "identity", store_identity_json(a, cmk_store_id(s), &ei)));
out:
    cmk_store_close(s);
    return ex;
}

/* ---- encryption ---- */

/* The `encryption show` document (also printed after rotate-key and check). */
static json_t *show_json(cmk_store *s, const cmk_encryption_info *ei)
{
    return json_pack(
        "{s:s, s:o, s:o, s:{s:b, s:o, s:o, s:o, s:I}, s:s, s:i, s:I, s:I, s:I, s:I, s:o, s:s}",
        "status", ei->cmk_enabled ? "enabled" : "disabled", "keyVaultProperties", kvp_json(ei),
        "identity", key_identity_json(ei), "keyAccess", "accessible", ei->key_accessible, "error",
        ei->key_accessible ? json_null() : json_string(cmk_errname(ei->key_error)), "reason",
        ei->key_accessible ? json_null() : cli_json_str_or_null(ei->key_error_msg), "lastChecked",
        cli_json_time(ei->last_key_check), "unreachableSeconds",
        (json_int_t)ei->key_unreachable_since, "wrapAlgorithm", ei->wrap_algorithm, "dekCount",
        (int)ei->dek_count, "currentDekId", (json_int_t)ei->current_dek,
        "rotationCheckIntervalSeconds", (json_int_t)ei->rotation_check_interval_s,
        "keyCheckIntervalSeconds", (json_int_t)ei->key_check_interval_s, "unreachableGraceSeconds",
        (json_int_t)ei->unreachable_grace_s, "dekRolloverBlobs",
        ei->dek_rollover_blobs == UINT32_MAX ? json_null()
                                             : json_integer((json_int_t)ei->dek_rollover_blobs),
        "storeId", cmk_store_id(s));
}

/* What to run after the library refused an identity for rotate-key (its message says why). */
static void identity_hint(cmk_err rc, const char *store, const char *identity)
{
    if (!identity)
        return;
    if (rc == CMK_E_NOT_FOUND)
        cli_hint("create the identity with `cmkstore identity create --name NAME`, then assign "
                 "it to the store.");
    else if (rc == CMK_E_REFUSED && strcmp(identity, "[system]") == 0)
        cli_hint("run `cmkstore identity assign --store %s --system` first.", store);
    else if (rc == CMK_E_REFUSED)
        cli_hint("an identity encryption uses must be assigned to the store: `cmkstore identity "
                 "assign --store %s --identities %s`.",
                 store, identity);
}

static int run_encryption(const cli_cmd *cmd, cli_args *a)
{
    uint32_t rot_s = 0, key_s = 0, grace_s = 0, rollover = 0, new_dek = 0;
    cmk_encryption_info ei;
    cmk_store *s = NULL;
    json_t *j;
    int rotated = 0, ex;
    cmk_err rc = CMK_OK;

    if (cmd->op == ENC_UPDATE) {
        /* Every value is checked before the store is touched: bad input changes nothing. */
        if ((ex = check_interval(cmd, a, "rotation-check-interval", &rot_s)) != CLI_RUN ||
            (ex = check_interval(cmd, a, "key-check-interval", &key_s)) != CLI_RUN ||
            (ex = check_interval(cmd, a, "unreachable-grace", &grace_s)) != CLI_RUN ||
            (ex = check_rollover(cmd, a, &rollover)) != CLI_RUN)
            return ex;
        if (!rot_s && !key_s && !grace_s && !rollover)
            return cli_usage_error(cmd, "nothing to update: give at least one of "
                                        "--rotation-check-interval, --key-check-interval, "
                                        "--unreachable-grace, --dek-rollover-blobs");
    }
    /* Opening works while the key is revoked: the store reports why it cannot use it. */
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    if (cmd->op == ENC_UPDATE) {
        rc = cmk_store_set_policy(s, rot_s, key_s, grace_s, rollover);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot update the key settings of %s",
                          cli_get(a, "store"));
            goto out;
        }
    } else if (cmd->op == ENC_ROTATE_DEK) {
        rc = cmk_store_rotate_dek(s, &new_dek);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot start a new data key in %s",
                          cli_get(a, "store"));
            goto out;
        }
    }
    if (cmd->op == ENC_ROTATE) {
        rc = cmk_store_rotate_key(s, cli_get(a, "key-encryption-key"), cli_get(a, "identity"));
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot rotate the key of %s to %s",
                          cli_get(a, "store"), cli_get(a, "key-encryption-key"));
            if (rc == CMK_E_KEY_UNSUPPORTED)
                cli_hint("create an RSA key with `cmkstore vault key create --kty RSA`.");
            else if (rc == CMK_E_KEY_DELETED || rc == CMK_E_KEY_DISABLED)
                cli_key_hint(rc);
            else if (cmk_err_is_key_access(rc))
                cli_hint("nothing was changed. The identity needs get, unwrapKey and wrapKey on "
                         "both the current and the new key (`cmkstore vault set-policy`).");
            else
                identity_hint(rc, cli_get(a, "store"), cli_get(a, "identity"));
            goto out;
        }
    } else if (cmd->op == ENC_CHECK) {
        rc = cmk_store_check_key(s, cli_isset(a, "no-rotate") ? -1 : 1, &rotated);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "key check of %s", cli_get(a, "store"));
            goto out;
        }
    }
    rc = cmk_store_encryption(s, &ei);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the encryption settings of %s",
                      cli_get(a, "store"));
        goto out;
    }
    j = show_json(s, &ei);
    if (j && cmd->op == ENC_CHECK && json_object_set_new(j, "rotated", json_boolean(rotated))) {
        json_decref(j);
        j = NULL;
    }
    if (j && cmd->op == ENC_ROTATE_DEK &&
        json_object_set_new(j, "newDekId", json_integer((json_int_t)new_dek))) {
        json_decref(j);
        j = NULL;
    }
    ex = cli_print_json(j);
out:
    cmk_store_close(s);
    return ex;
}

/* ---- encryption watch ---- */

static volatile sig_atomic_t watch_stop;

static void on_watch_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

/* One line of `encryption watch`: the state a change is judged by. */
static json_t *watch_line(const cmk_encryption_info *ei)
{
    return json_pack(
        "{s:o, s:s, s:b, s:o, s:o, s:I}", "time", cli_json_time(time(NULL)),
        "versionedKeyIdentifier", ei->versioned_key_identifier, "keyAccessible", ei->key_accessible,
        "error", ei->key_accessible ? json_null() : json_string(cmk_errname(ei->key_error)),
        "reason", ei->key_accessible ? json_null() : cli_json_str_or_null(ei->key_error_msg),
        "dekCount", (json_int_t)ei->dek_count);
}

static int print_line(json_t *j)
{
    json_t *arr = json_array();

    if (!j || !arr || json_array_append_new(arr, j) != 0) {
        json_decref(arr);
        fputs("cmkstore: error: out of memory\n", stderr);
        return CLI_EXIT_FAILURE;
    }
    /* cli_print_json_lines releases arr; a line is flushed so a reader sees it at once. */
    int ex = cli_print_json_lines(arr);
    if (ex == CLI_EXIT_OK && fflush(stdout) != 0)
        ex = CLI_EXIT_FAILURE;
    return ex;
}

/* Keeps the store open with the background key checker running: the long-running process
 * that makes automatic rotation and revocation happen for stores otherwise used only by
 * short-lived commands. Prints a JSON line at start and at every change of key version, key
 * access or DEK count. */
static int run_watch(const cli_cmd *cmd, cli_args *a)
{
    uint64_t duration = cli_num(a, "duration", 0);
    cmk_encryption_info ei, last;
    struct sigaction sa;
    struct timespec t0, now, nap = {0, 100 * 1000 * 1000};
    cmk_store *s = NULL;
    int ex;
    cmk_err rc;

    (void)cmd;
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_watch_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* Check once now, so the first line reflects the vault's current state; before the
     * background thread starts, so the two checks never run at once. */
    if (cmk_store_check_key(s, 0, NULL) != CMK_OK) {
        /* the first line printed below reports the failure */
    }
    rc = cmk_store_start_background(s);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot start the key checker");
        goto out;
    }
    memset(&last, 0, sizeof(last));
    last.dek_count = UINT32_MAX;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!watch_stop) {
        rc = cmk_store_encryption(s, &ei);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the encryption state");
            goto out;
        }
        if (ei.key_accessible != last.key_accessible || ei.key_error != last.key_error ||
            ei.dek_count != last.dek_count ||
            strcmp(ei.versioned_key_identifier, last.versioned_key_identifier) != 0) {
            ex = print_line(watch_line(&ei));
            if (ex != CLI_EXIT_OK)
                goto out;
            last = ei;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (duration && (uint64_t)(now.tv_sec - t0.tv_sec) >= duration)
            break;
        nanosleep(&nap, NULL);
    }
out:
    cmk_store_close(s); /* stops the checker, zeroizes the data keys */
    return ex;
}

static int run_encryption_refuse(const cli_cmd *cmd, cli_args *a)
{
    (void)a;
    fprintf(stderr,
            "cmkstore: error: %s: refused: a customer-managed key can only be enabled when a "
            "store is created (`cmkstore create --store DIR --identity ID --key-encryption-key "
            "KID`), and once enabled it can never be disabled. Nothing was changed.\n",
            cmd->path);
    cli_hint("to change encryption settings, create a new store with the settings you want and "
             "copy the blobs into it (`cmkstore blob get ... | cmkstore blob put --store NEW "
             "-`).");
    return CLI_EXIT_REFUSED;
}

const cli_cmd cli_store_cmds[] = {
    {.path = "create",
     .summary = "Create a store (with a customer-managed key, or a store-managed one)",
     .description =
         "Creates an encrypted store. With --identity and --key-encryption-key (or --config) "
         "its data keys are wrapped by your customer-managed key; the identity must have get, "
         "unwrapKey and wrapKey on the key, which is checked before anything is written. "
         "Without them the store uses a store-managed key (CMK status \"disabled\").\n\nThe "
         "choice is final: a customer-managed key can only be enabled at creation and never "
         "disabled. Prints the new store as JSON, with the principalId of its system-assigned "
         "identity.",
     .opts = create_opts,
     .example = "cmkstore create --store ./registry --identity myid \\\n"
                "    --key-encryption-key local://myvault/keys/mykey\n"
                "cmkstore create --store ./registry2 --config CMKtemplate.json \\\n"
                "    --parameters identity_name=myid kek_id=local://myvault/keys/mykey",
     .run = run_create},
    {.path = "encryption show",
     .summary = "Show a store's encryption settings and key state",
     .description =
         "Prints the store's encryption as JSON: status (\"enabled\" for a customer-managed "
         "key), keyVaultProperties (identity, keyIdentifier, versionedKeyIdentifier, "
         "keyRotationEnabled, lastKeyRotationTimestamp), the identity the key is reached as, "
         "keyAccess (whether the key is usable now and, if not, the error and the reason, "
         "naming the key and the identity), the data-key count and the lifecycle settings. "
         "Works while access to the key is revoked (exit 0). The identities assigned to the "
         "store, with the system-assigned principalId: `cmkstore identity show --store DIR`.",
     .opts = store_opts,
     .example = "cmkstore encryption show --store ./registry",
     .run = run_encryption,
     .op = ENC_SHOW},
    {.path = "encryption rotate-key",
     .summary = "Rewrap the store's data keys under another key or key version",
     .description =
         "Rewraps every data key of the store under the given key (a new version, another key, "
         "or a key in another vault), as `az acr encryption rotate-key` does. The new key is "
         "adopted only after a test wrap and unwrap with it succeed; no blob is read or "
         "rewritten. A versionless key identifier turns automatic rotation on, a versioned one "
         "turns it off. Refused (exit 6) on a store without a customer-managed key. Prints the "
         "new encryption settings.",
     .opts = rotate_opts,
     .example = "cmkstore encryption rotate-key --store ./registry \\\n"
                "    --key-encryption-key local://myvault/keys/mykey/<new-version> --identity myid",
     .run = run_encryption,
     .op = ENC_ROTATE},
    {.path = "encryption check",
     .summary = "Run the key check and the automatic-rotation check now",
     .description =
         "Confirms that the store's identity can still use its key (exit 5 with "
         "the reason if not) and, with a versionless key identifier, rotates to the "
         "latest key version if it is newer, whatever the rotation-check interval. "
         "Prints the encryption settings with \"rotated\": true|false. Short-lived commands "
         "do not rotate by themselves: run this (e.g. from cron) or keep `cmkstore "
         "encryption watch` running.",
     .opts = check_opts,
     .example = "cmkstore encryption check --store ./registry\n"
                "cmkstore encryption check --store ./registry --no-rotate",
     .run = run_encryption,
     .op = ENC_CHECK},
    {.path = "encryption update",
     .summary = "Change a store's key-check, rotation-check, grace and DEK rollover settings",
     .description =
         "Changes the key-lifecycle settings kept in the store's store.json: how often a "
         "long-running process looks for a new version of a versionless key "
         "(--rotation-check-interval) and re-checks access to the key (--key-check-interval), "
         "how long cached data keys keep serving while the vault does not answer "
         "(--unreachable-grace; never after a denial), and after how many blobs a new data key "
         "is started (--dek-rollover-blobs). Intervals are 1 to 86400 seconds; a value out of "
         "range is a usage error (exit 2) and changes nothing. Long-running processes pick up "
         "the new values when they next open the store. Prints the encryption settings.",
     .opts = update_opts,
     .example = "cmkstore encryption update --store ./registry --rotation-check-interval 60 \\\n"
                "    --key-check-interval 10\n"
                "cmkstore encryption update --store ./registry --dek-rollover-blobs 10000",
     .run = run_encryption,
     .op = ENC_UPDATE},
    {.path = "encryption rotate-dek",
     .summary = "Start a new data key (DEK) for new writes",
     .description =
         "Generates a new data key, wraps it with the store's key-encryption key and makes it "
         "the one new blobs are sealed with. Blobs already stored keep the data key they were "
         "written with (no blob is rewritten); every data key stays in the keyring. Needs "
         "access to the key (exit 5 otherwise). Prints the encryption settings with "
         "\"newDekId\".",
     .opts = store_opts,
     .example = "cmkstore encryption rotate-dek --store ./registry",
     .run = run_encryption,
     .op = ENC_ROTATE_DEK},
    {.path = "encryption watch",
     .summary = "Keep a store's key checked: automatic rotation and revocation, in the foreground",
     .description =
         "Opens the store and runs its background key checker, as a long-running server "
         "does: every key-check interval it confirms access to the key (zeroizing the data "
         "keys it holds when access is lost, restoring them when it is back), and with a "
         "versionless key identifier it rotates to a new key version within the "
         "rotation-check interval. Prints one JSON line at start and one at every change "
         "(versionedKeyIdentifier, keyAccessible with error and reason, dekCount). Runs until "
         "SIGINT or SIGTERM, or for --duration seconds. The store's events.log records what "
         "happened (`cmkstore events`).",
     .opts = watch_opts,
     .example = "cmkstore encryption watch --store ./registry\n"
                "cmkstore encryption watch --store ./registry --duration 3600",
     .run = run_watch},
    {.path = "encryption enable",
     .summary = "Refused: CMK can only be enabled when a store is created",
     .description = "Always refused (exit 6): a customer-managed key can only be enabled when "
                    "a store is created, with `cmkstore create --identity ID "
                    "--key-encryption-key KID`.",
     .example = "cmkstore create --store ./registry --identity myid --key-encryption-key KID",
     .pos_usage = "[options]",
     .run = run_encryption_refuse,
     .op = ENC_ENABLE,
     .raw = 1},
    {.path = "encryption disable",
     .summary = "Refused: CMK can never be disabled",
     .description = "Always refused (exit 6): once a store has a customer-managed key, it "
                    "cannot be disabled.",
     .example = "cmkstore encryption show --store ./registry",
     .pos_usage = "[options]",
     .run = run_encryption_refuse,
     .op = ENC_DISABLE,
     .raw = 1},
    {.path = NULL},
};
