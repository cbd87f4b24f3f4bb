/*
 * cmd_vault.c — `cmkstore vault ...` and `cmkstore vault key ...`: the local key vault's
 * management commands (like `az keyvault` and `az keyvault key`). They are the operator's:
 * the vault audits them but does not check them against access policies.
 */
#include <string.h>

#include "tools/cli.h"

enum {
    V_CREATE,
    V_SHOW,
    V_LIST,
    V_DELETE,
    V_RECOVER,
    V_PURGE,
    V_SET_POLICY,
    V_DELETE_POLICY,
    V_AUDIT,
    K_CREATE,
    K_SHOW,
    K_LIST,
    K_LIST_VERSIONS,
    K_LIST_DELETED,
    K_DELETE,
    K_RECOVER,
    K_PURGE,
    K_SET_ATTRIBUTES,
};

#define VAULT_NAME_HELP "Name of the vault: 1-63 letters, digits and '-'."

static const cli_opt vault_opts[] = {
    {"name", 'n', CLI_STR, 1, "VAULT", VAULT_NAME_HELP},
    CLI_OPT_END,
};

static const cli_opt vault_create_opts[] = {
    {"name", 'n', CLI_STR, 1, "VAULT", VAULT_NAME_HELP},
    {"enable-purge-protection", 0, CLI_BOOL_OPT, 0, NULL,
     "Refuse to purge deleted keys (and the deleted vault) until their retention period "
     "ends. Once enabled it cannot be turned off."},
    {"retention-days", 0, CLI_UINT, 0, "DAYS",
     "Days a deleted key or vault is kept recoverable, 7 to 90 (default 90)."},
    {"hsm-token", 0, CLI_STR, 0, "LABEL",
     "Make the vault HSM-backed: label of the PKCS#11 token in which `vault key create --kty "
     "RSA-HSM` generates key pairs (sensitive, non-extractable: the private key never leaves "
     "the token). Checked now: the module must load, the token be present and the PIN log in. "
     "See kek/HSM.md."},
    {"hsm-module", 0, CLI_STR, 0, "PATH",
     "PKCS#11 module (shared library) of the token, e.g. /usr/lib/softhsm/libsofthsm2.so "
     "(default: $CMKSTORE_PKCS11_MODULE, else \"module\" in <home>/pkcs11.json). Recorded "
     "in the vault."},
    {"hsm-pin-file", 0, CLI_STR, 0, "FILE",
     "File holding the token's user PIN (one trailing newline ignored; keep it 0600). Its "
     "path is recorded, never the PIN. Default: the PIN is found at each use from "
     "$CMKSTORE_PKCS11_PIN_FILE, $CMKSTORE_PKCS11_PIN or \"pinFile\" in <home>/pkcs11.json."},
    CLI_OPT_END,
};

static const cli_opt set_policy_opts[] = {
    {"name", 'n', CLI_STR, 1, "VAULT", VAULT_NAME_HELP},
    {"object-id", 0, CLI_STR, 1, "PRINCIPAL",
     "principalId (object id) of the identity to grant permissions to."},
    {"key-permissions", 0, CLI_LIST, 1, "PERM",
     "Key permissions, space-separated: get, list, create, update, import, delete, recover, "
     "backup, restore, purge, decrypt, encrypt, unwrapKey, wrapKey, verify, sign, rotate, all. "
     "A store needs get, unwrapKey and wrapKey. Replaces the principal's previous key "
     "permissions."},
    CLI_OPT_END,
};

static const cli_opt delete_policy_opts[] = {
    {"name", 'n', CLI_STR, 1, "VAULT", VAULT_NAME_HELP},
    {"object-id", 0, CLI_STR, 1, "PRINCIPAL", "principalId (object id) whose policy to remove."},
    CLI_OPT_END,
};

static const cli_opt key_vault_opts[] = {
    {"vault-name", 0, CLI_STR, 1, "VAULT", "Name of the vault."},
    CLI_OPT_END,
};

static const cli_opt key_opts[] = {
    {"vault-name", 0, CLI_STR, 1, "VAULT", "Name of the vault."},
    {"name", 'n', CLI_STR, 1, "KEY", "Name of the key."},
    CLI_OPT_END,
};

static const cli_opt key_create_opts[] = {
    {"vault-name", 0, CLI_STR, 1, "VAULT", "Name of the vault."},
    {"name", 'n', CLI_STR, 1, "KEY",
     "Name of the key: 1-63 letters, digits and '-'. If the key exists, a new version is "
     "created."},
    {"kty", 0, CLI_STR, 0, "RSA|RSA-HSM|EC",
     "Key type (default RSA). Stores accept only RSA and RSA-HSM keys."},
    {"size", 0, CLI_UINT, 0, "BITS", "RSA modulus size: 2048 (default), 3072 or 4096."},
    CLI_OPT_END,
};

static const cli_opt key_show_opts[] = {
    {"vault-name", 0, CLI_STR, 1, "VAULT", "Name of the vault."},
    {"name", 'n', CLI_STR, 1, "KEY", "Name of the key."},
    {"version", 0, CLI_STR, 0, "VERSION", "A specific version (default: the latest)."},
    CLI_OPT_END,
};

static const cli_opt key_set_attr_opts[] = {
    {"vault-name", 0, CLI_STR, 1, "VAULT", "Name of the vault."},
    {"name", 'n', CLI_STR, 1, "KEY", "Name of the key."},
    {"version", 0, CLI_STR, 0, "VERSION", "Only this version (default: the whole key)."},
    {"enabled", 0, CLI_BOOL, 1, "true|false",
     "Enable or disable. A store whose key is disabled can neither read nor write until it "
     "is enabled again."},
    CLI_OPT_END,
};

/* Which JSON a successful operation prints: a document, JSON lines, or nothing. */
enum { OUT_JSON, OUT_LINES, OUT_NONE };

static cmk_err vault_op(const cli_cmd *cmd, const cli_args *a, const char *home, json_t **j,
                        cmk_errbuf *eb)
{
    const char *const *perms;
    size_t nperms;
    cmk_vault_opts vo = {0};
    int is_key = cmd->op >= K_CREATE;
    const char *vault = is_key              ? cli_get(a, "vault-name")
                        : cmd->op == V_LIST ? NULL
                                            : cli_get(a, "name");
    const char *key =
        is_key && cmd->op != K_LIST && cmd->op != K_LIST_DELETED ? cli_get(a, "name") : NULL;

    switch (cmd->op) {
    case V_CREATE:
        vo.purge_protection = (int)cli_num(a, "enable-purge-protection", 0);
        vo.retention_days = (int)cli_num(a, "retention-days", 0);
        vo.hsm_token = cli_get(a, "hsm-token");
        vo.hsm_module = cli_get(a, "hsm-module");
        vo.hsm_pin_file = cli_get(a, "hsm-pin-file");
        return cmk_vault_create(home, vault, &vo, j, eb);
    case V_SHOW:
        return cmk_vault_show(home, vault, j, eb);
    case V_LIST:
        return cmk_vault_list(home, j, eb);
    case V_DELETE:
        return cmk_vault_delete(home, vault, eb);
    case V_RECOVER:
        return cmk_vault_recover(home, vault, j, eb);
    case V_PURGE:
        return cmk_vault_purge(home, vault, eb);
    case V_SET_POLICY:
        nperms = cli_list(a, "key-permissions", &perms);
        return cmk_vault_set_policy(home, vault, cli_get(a, "object-id"), perms, nperms, j, eb);
    case V_DELETE_POLICY:
        return cmk_vault_delete_policy(home, vault, cli_get(a, "object-id"), j, eb);
    case V_AUDIT:
        return cmk_vault_audit(home, vault, j, eb);
    case K_CREATE:
        return cmk_vault_key_create(home, vault, key, cli_get(a, "kty"),
                                    (unsigned)cli_num(a, "size", 0), j, eb);
    case K_SHOW:
        return cmk_vault_key_show(home, vault, key, cli_get(a, "version"), j, eb);
    case K_LIST:
        return cmk_vault_key_list(home, vault, j, eb);
    case K_LIST_VERSIONS:
        return cmk_vault_key_list_versions(home, vault, key, j, eb);
    case K_LIST_DELETED:
        return cmk_vault_key_list_deleted(home, vault, j, eb);
    case K_DELETE:
        return cmk_vault_key_delete(home, vault, key, j, eb);
    case K_RECOVER:
        return cmk_vault_key_recover(home, vault, key, j, eb);
    case K_PURGE:
        return cmk_vault_key_purge(home, vault, key, eb);
    default:
        return cmk_vault_key_set_enabled(home, vault, key, cli_get(a, "version"),
                                         (int)cli_num(a, "enabled", 1), j, eb);
    }
}

enum { VS_UNKNOWN, VS_MISSING, VS_LIVE, VS_DELETED };

/* The state of vault `name` of home (VS_UNKNOWN when it cannot be read), and in *hsm whether
 * it is HSM-backed: a hint then points at the vault or at the key, as the fault is. */
static int vault_state(const char *home, const char *name, int *hsm)
{
    json_t *vj = NULL, *props;
    cmk_err rc;
    int st;

    *hsm = 0;
    if (!name)
        return VS_UNKNOWN;
    rc = cmk_vault_show(home, name, &vj, NULL);
    if (rc != CMK_OK)
        return rc == CMK_E_NOT_FOUND ? VS_MISSING : VS_UNKNOWN;
    props = json_object_get(vj, "properties");
    st = json_object_get(props, "deletionDate") ? VS_DELETED : VS_LIVE;
    *hsm = json_object_get(props, "hsm") != NULL;
    json_decref(vj);
    return st;
}

/* 1 if the refused command was `vault key create --kty RSA-HSM` in a software vault. */
static int rsa_hsm_in_software(const cli_cmd *cmd, const cli_args *a, int st, int hsm)
{
    const char *kty = cmd->op == K_CREATE ? cli_get(a, "kty") : NULL;

    return st == VS_LIVE && !hsm && kty && strcmp(kty, "RSA-HSM") == 0;
}

/* What to run next after the vault refused a command: the library's message states the
 * fault, the command line names the commands (keyed on the command and the error). */
static void vault_hint(const cli_cmd *cmd, const cli_args *a, const char *home, cmk_err rc)
{
    int is_key = cmd->op >= K_CREATE;
    const char *v = is_key ? cli_get(a, "vault-name") : cli_get(a, "name");
    const char *k = is_key ? cli_get(a, "name") : NULL;
    int hsm, st = vault_state(home, v, &hsm);

    if (rc == CMK_E_NOT_FOUND && st == VS_MISSING && cmd->op != V_CREATE)
        cli_hint("`cmkstore vault list` shows the vaults; create this one with `cmkstore vault "
                 "create --name %s`.",
                 v);
    else if (rc == CMK_E_KEY_DELETED && st == VS_DELETED)
        cli_hint("recover the vault with `cmkstore vault recover --name %s`.", v);
    else if (rc == CMK_E_REFUSED && rsa_hsm_in_software(cmd, a, st, hsm))
        cli_hint("create an HSM-backed vault for RSA-HSM keys (`cmkstore vault create --name NAME "
                 "--hsm-token LABEL --hsm-module PATH --hsm-pin-file FILE`, see kek/HSM.md), or "
                 "create an RSA key here: `cmkstore vault key create --vault-name %s --name %s "
                 "--kty RSA`.",
                 v, k);
    else if (rc == CMK_E_EXISTS && cmd->op == V_CREATE)
        cli_hint("`cmkstore vault show --name %s` shows it; a soft-deleted vault is recovered "
                 "with `cmkstore vault recover --name %s` or removed with `cmkstore vault purge "
                 "--name %s`.",
                 v, v, v);
    else if (rc == CMK_E_REFUSED && cmd->op == V_PURGE)
        cli_hint("only a soft-deleted vault is purged (`cmkstore vault delete --name %s` "
                 "first); under purge protection it can only be recovered (`cmkstore vault "
                 "recover --name %s`) until its scheduled purge date.",
                 v, v);
    else if (rc == CMK_E_REFUSED && (cmd->op == V_SET_POLICY || cmd->op == V_DELETE_POLICY))
        cli_hint("recover the vault first: `cmkstore vault recover --name %s`.", v);
    else if (rc == CMK_E_INVAL && (cmd->op == V_SET_POLICY || cmd->op == V_DELETE_POLICY))
        cli_hint("`cmkstore identity show --name NAME` prints an identity's principalId.");
    else if (!k)
        return;
    else if (rc == CMK_E_EXISTS && cmd->op == K_CREATE)
        cli_hint("recover it (`cmkstore vault key recover --vault-name %s --name %s`) or purge "
                 "it (`cmkstore vault key purge --vault-name %s --name %s`) first.",
                 v, k, v, k);
    else if (rc == CMK_E_REFUSED && cmd->op == K_PURGE)
        cli_hint("only a soft-deleted key is purged (`cmkstore vault key delete --vault-name %s "
                 "--name %s` first); under purge protection it can only be recovered (`cmkstore "
                 "vault key recover --vault-name %s --name %s`) until its scheduled purge date.",
                 v, k, v, k);
    else if (rc == CMK_E_KEY_DELETED && st != VS_DELETED)
        cli_hint("recover the key with `cmkstore vault key recover --vault-name %s --name %s`.", v,
                 k);
    else if (rc == CMK_E_NOT_FOUND && cmd->op != K_CREATE && st != VS_DELETED)
        cli_hint("`cmkstore vault key list --vault-name %s` lists the keys (`list-versions` a "
                 "key's versions); create one with `cmkstore vault key create --vault-name %s "
                 "--name %s`.",
                 v, v, k);
}

static int run_vault(const cli_cmd *cmd, cli_args *a)
{
    int is_key = cmd->op >= K_CREATE;
    int out = cmd->op == V_AUDIT                                                ? OUT_LINES
              : cmd->op == V_DELETE || cmd->op == V_PURGE || cmd->op == K_PURGE ? OUT_NONE
                                                                                : OUT_JSON;
    char home[CMK_PATH_MAX];
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    uint64_t days;
    cmk_err rc;

    if (cmd->op == V_CREATE) {
        days = cli_num(a, "retention-days", 90);
        if (days < 7 || days > 90)
            return cli_usage_error(cmd, "--retention-days must be from 7 to 90, not %llu",
                                   (unsigned long long)days);
    }
    rc = cli_home(a, cmd->op == V_CREATE || cmd->op == K_CREATE, home, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use the cmkstore home");
    rc = vault_op(cmd, a, home, &j, &eb);
    if (rc != CMK_OK) {
        int ex;

        json_decref(j);
        /* "vault key set-attributes" -> "cannot vault key set-attributes": name the command
         * and what it acted on. */
        if (is_key && cmd->op != K_LIST && cmd->op != K_LIST_DELETED)
            ex = cli_fail(rc, &eb, CLI_HINT_NONE, "%s: key '%s' in vault '%s'", cmd->path,
                          cli_get(a, "name"), cli_get(a, "vault-name"));
        else if (cmd->op == V_LIST)
            ex = cli_fail(rc, &eb, CLI_HINT_NONE, "%s", cmd->path);
        else
            ex = cli_fail(rc, &eb, CLI_HINT_NONE, "%s: vault '%s'", cmd->path,
                          is_key ? cli_get(a, "vault-name") : cli_get(a, "name"));
        vault_hint(cmd, a, home, rc);
        return ex;
    }
    if (out == OUT_NONE) {
        json_decref(j);
        return CLI_EXIT_OK;
    }
    return out == OUT_LINES ? cli_print_json_lines(j) : cli_print_json(j);
}

#define VAULT_CMD(p, sum, desc, o, ex, code)                                                       \
    {                                                                                              \
        .path = p, .summary = sum, .description = desc, .opts = o, .example = ex,                  \
        .run = run_vault, .op = code                                                               \
    }

const cli_cmd cli_vault_cmds[] = {
    VAULT_CMD("vault create", "Create a local key vault",
              "Creates a local key vault in the home. Soft delete is always on (deleted keys "
              "stay recoverable for the retention period); enable purge protection so a deleted "
              "key cannot be purged early and the data it protects lost by accident.\n\nThe "
              "local vault guards against misconfiguration, not against a process that can read "
              "its files; use an HSM (PKCS#11) for keys that must not be readable: with "
              "--hsm-token the vault is HSM-backed and its RSA-HSM keys are generated and used "
              "inside the token, while the vault's access policies, enable/disable, soft delete "
              "and audit log apply as usual (kek/HSM.md).",
              vault_create_opts,
              "cmkstore vault create --name myvault --enable-purge-protection\n"
              "cmkstore vault create --name hsmvault --hsm-token mytoken \\\n"
              "    --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-pin-file ~/.token.pin",
              V_CREATE),
    VAULT_CMD("vault show", "Show a vault", "Prints a vault, with its access policies, as JSON.",
              vault_opts, "cmkstore vault show --name myvault", V_SHOW),
    VAULT_CMD("vault list", "List the vaults", "Prints the vaults of the home as a JSON array.",
              NULL, "cmkstore vault list", V_LIST),
    VAULT_CMD("vault delete", "Soft-delete a vault",
              "Soft-deletes a vault: every key in it becomes unusable (stores using them fail "
              "with a key-access error) until `cmkstore vault recover`.",
              vault_opts, "cmkstore vault delete --name myvault", V_DELETE),
    VAULT_CMD("vault recover", "Recover a soft-deleted vault",
              "Recovers a soft-deleted vault and its keys.", vault_opts,
              "cmkstore vault recover --name myvault", V_RECOVER),
    VAULT_CMD("vault purge", "Purge a soft-deleted vault (permanently)",
              "Permanently removes a soft-deleted vault and its keys: data encrypted under them "
              "can never be read again. Refused (exit 6) under purge protection until the "
              "retention period ends.",
              vault_opts, "cmkstore vault purge --name myvault", V_PURGE),
    VAULT_CMD("vault set-policy", "Grant key permissions to a principal",
              "Sets the key permissions of a principal (the principalId of an identity) in the "
              "vault's access policy, replacing its previous key permissions. A store's "
              "identity needs get, unwrapKey and wrapKey.",
              set_policy_opts,
              "cmkstore vault set-policy --name myvault --object-id <principalId> \\\n"
              "    --key-permissions get unwrapKey wrapKey",
              V_SET_POLICY),
    VAULT_CMD("vault delete-policy", "Remove a principal's access policy",
              "Removes a principal's access policy. A store using that identity loses access to "
              "its key at once: every read and write fails until access is granted again "
              "(nothing is lost).",
              delete_policy_opts,
              "cmkstore vault delete-policy --name myvault --object-id <principalId>",
              V_DELETE_POLICY),
    VAULT_CMD("vault audit", "Print the vault's audit log",
              "Prints the vault's audit log as JSON lines, oldest first: every key operation "
              "(get, wrapKey, unwrapKey, management), allowed or denied, with its identity, key "
              "version and time.",
              vault_opts, "cmkstore vault audit --name myvault", V_AUDIT),
    VAULT_CMD("vault key create", "Create a key or a new version of it",
              "Creates an RSA key in the vault, or a new version of an existing key (which a "
              "store configured with the versionless key identifier picks up automatically). "
              "Prints the key as JSON; key.kid is the versioned key identifier; drop the last "
              "path element for the versionless one.\n\n--kty RSA-HSM (HSM-backed vaults "
              "only) generates the version as a key pair in the vault's PKCS#11 token: the "
              "version is the pair's CKA_ID, hsm.keyUri its pkcs11: identifier.",
              key_create_opts,
              "cmkstore vault key create --vault-name myvault --name mykey\n"
              "cmkstore vault key create --vault-name hsmvault --name mykey --kty RSA-HSM",
              K_CREATE),
    VAULT_CMD("vault key show", "Show a key (public part only)",
              "Prints a key version (default: the latest) as JSON. Private key material is "
              "never printed.",
              key_show_opts, "cmkstore vault key show --vault-name myvault --name mykey", K_SHOW),
    VAULT_CMD("vault key list", "List the keys of a vault",
              "Prints the keys of a vault as a JSON array.", key_vault_opts,
              "cmkstore vault key list --vault-name myvault", K_LIST),
    VAULT_CMD("vault key list-versions", "List the versions of a key",
              "Prints the versions of a key as a JSON array.", key_opts,
              "cmkstore vault key list-versions --vault-name myvault --name mykey",
              K_LIST_VERSIONS),
    VAULT_CMD("vault key list-deleted", "List the soft-deleted keys of a vault",
              "Prints the soft-deleted keys of a vault, with their scheduled purge dates, as a "
              "JSON array.",
              key_vault_opts, "cmkstore vault key list-deleted --vault-name myvault",
              K_LIST_DELETED),
    VAULT_CMD("vault key delete", "Soft-delete a key",
              "Soft-deletes a key (every version): stores using it fail with a key-access error "
              "until `cmkstore vault key recover`.",
              key_opts, "cmkstore vault key delete --vault-name myvault --name mykey", K_DELETE),
    VAULT_CMD("vault key recover", "Recover a soft-deleted key",
              "Recovers a soft-deleted key; stores using it regain access.", key_opts,
              "cmkstore vault key recover --vault-name myvault --name mykey", K_RECOVER),
    VAULT_CMD("vault key purge", "Purge a soft-deleted key (permanently)",
              "Permanently removes a soft-deleted key: data encrypted under it can never be "
              "read again. Refused (exit 6) under purge protection until the retention period "
              "ends.",
              key_opts, "cmkstore vault key purge --vault-name myvault --name mykey", K_PURGE),
    VAULT_CMD("vault key set-attributes", "Enable or disable a key or key version",
              "Enables or disables a key (every version) or one version of it.", key_set_attr_opts,
              "cmkstore vault key set-attributes --vault-name myvault --name mykey --enabled false",
              K_SET_ATTRIBUTES),
    {.path = NULL},
};
