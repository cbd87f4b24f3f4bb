/*
 * cmd_identity.c — `cmkstore identity create|show|delete|list` (like `az identity`) and the
 * identities assigned to a store: `identity assign|remove --store`, `identity show --store`
 * (like `az acr identity assign|remove|show`).
 */
#include <string.h>

#include "tools/cli.h"

enum { ID_CREATE, ID_SHOW, ID_DELETE, ID_LIST, ID_ASSIGN, ID_REMOVE };

static const cli_opt create_opts[] = {
    {"name", 'n', CLI_STR, 1, "NAME", "Name of the identity: 1-63 letters, digits and '-'."},
    CLI_OPT_END,
};

static const cli_opt ref_opts[] = {
    {"name", 'n', CLI_STR, 1, "REF",
     "The identity: its name, resource id, principalId or clientId."},
    CLI_OPT_END,
};

static const cli_opt show_opts[] = {
    {"name", 'n', CLI_STR, 0, "REF",
     "The identity: its name, resource id, principalId or clientId."},
    {"store", 0, CLI_STR, 0, "DIR",
     "Instead of --name: show the identities assigned to this store."},
    CLI_OPT_END,
};

static const cli_opt assign_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"system", 0, CLI_FLAG, 0, NULL, "The store's system-assigned identity."},
    {"identities", 0, CLI_LIST, 0, "ID",
     "User-assigned identities: name, resource id, principalId or clientId (one or more)."},
    CLI_OPT_END,
};

/* ---- identities of a store ---- */

/* The identities assigned to the store, shaped like `az acr identity show`, plus the one
 * encryption uses. */
static int print_store_identities(const cli_args *a, cmk_store *s)
{
    cmk_store_identity ids[CLI_MAX_LIST + 2];
    cmk_encryption_info ei;
    char home[CMK_PATH_MAX];
    cmk_identity sys;
    cmk_errbuf eb = {0};
    json_t *users = json_object(), *j, *sys_principal = json_null(), *tenant = json_null();
    size_t n = 0;
    int have_sys = 0, have_user = 0;
    cmk_err rc;

    rc = cmk_store_identities(s, ids, sizeof(ids) / sizeof(ids[0]), &n);
    if (rc == CMK_OK)
        rc = cmk_store_encryption(s, &ei);
    if (rc != CMK_OK) {
        json_decref(users);
        return cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the identities of %s",
                        cmk_store_dir(s));
    }
    if (n > sizeof(ids) / sizeof(ids[0]))
        n = sizeof(ids) / sizeof(ids[0]);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ids[i].kind, "SystemAssigned") == 0) {
            have_sys = 1;
            json_decref(sys_principal);
            sys_principal = json_string(ids[i].principal);
        } else {
            have_user = 1;
            json_object_set_new(users, ids[i].id,
                                json_pack("{s:s, s:s}", "clientId", ids[i].client, "principalId",
                                          ids[i].principal));
        }
    }
    if (have_sys && cli_home(a, 0, home, &eb) == CMK_OK &&
        cmk_identity_get_system(home, cmk_store_id(s), &sys, &eb) == CMK_OK) {
        json_decref(tenant);
        tenant = json_string(sys.tenant_id);
    }
    j = json_pack("{s:s, s:o, s:o, s:o, s:{s:s, s:s, s:o}}", "type",
                  have_sys && have_user ? "SystemAssigned, UserAssigned"
                  : have_sys            ? "SystemAssigned"
                  : have_user           ? "UserAssigned"
                                        : "None",
                  "principalId", sys_principal, "tenantId", tenant, "userAssignedIdentities",
                  have_user ? users : (json_decref(users), json_null()), "encryptionIdentity",
                  "type", ei.identity_kind, "principalId", ei.identity_principal, "clientId",
                  strcmp(ei.identity_kind, "UserAssigned") == 0 ? cli_json_str_or_null(ei.identity)
                                                                : json_null());
    return cli_print_json(j);
}

/* After the library found no identity for a reference (its message names the reference). */
static void not_found_hint(void)
{
    cli_hint("`cmkstore identity list` shows the identities (name, principalId, clientId); "
             "create one with `cmkstore identity create --name NAME`.");
}

/* Resolves each --identities reference, so that a remove that would be refused for one of
 * them is refused before any is removed. */
static int refs_ok(const cli_args *a, const char *const *refs, size_t n, int *in_use,
                   const char *principal_in_use)
{
    char home[CMK_PATH_MAX];
    cmk_errbuf eb = {0};
    cmk_identity id;
    cmk_err rc;

    *in_use = -1;
    rc = cli_home(a, 0, home, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use the cmkstore home");
    for (size_t i = 0; i < n; i++) {
        rc = cmk_identity_get(home, refs[i], &id, &eb);
        if (rc != CMK_OK) {
            int ex = cli_fail(rc, &eb, CLI_HINT_NONE, "identity '%s'", refs[i]);

            if (rc == CMK_E_NOT_FOUND)
                not_found_hint();
            return ex;
        }
        if (strcmp(id.principal_id, principal_in_use) == 0 && *in_use < 0)
            *in_use = (int)i;
    }
    return CLI_EXIT_OK;
}

/* After the library refused to remove the identity encryption uses: how to go on. */
static void in_use_hint(cmk_store *s, const cmk_encryption_info *ei)
{
    int sys = strcmp(ei->identity_kind, "SystemAssigned") == 0;

    cli_hint("assign it again if it was lost (`cmkstore identity assign --store %s %s%s`), or "
             "rotate the key to another identity first (`cmkstore encryption rotate-key --store "
             "%s --key-encryption-key KID --identity OTHER`), then remove it.",
             cmk_store_dir(s), sys ? "--system" : "--identities ",
             sys ? "" : ei->identity_principal, cmk_store_dir(s));
}

static int run_store_identity(const cli_cmd *cmd, cli_args *a)
{
    const char *const *refs = NULL;
    size_t n = cli_list(a, "identities", &refs);
    int sys = cli_isset(a, "system"), assign = cmd->op == ID_ASSIGN, in_use = -1, ex;
    cmk_encryption_info ei;
    cmk_store *s = NULL;
    cmk_err rc;

    if (sys == (n > 0))
        return cli_usage_error(cmd, "give either --system or --identities ID... (one of them)");
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    if (!assign && !sys) {
        rc = cmk_store_encryption(s, &ei);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the encryption settings");
            goto out;
        }
        ex = refs_ok(a, refs, n, &in_use, ei.identity_principal);
        if (ex != CLI_EXIT_OK)
            goto out;
        if (in_use >= 0) {
            /* The library refuses it (and records the refusal); nothing else is removed. */
            rc = cmk_store_identity_remove(s, refs[in_use]);
            ex = cli_fail(rc == CMK_OK ? CMK_E_REFUSED : rc, NULL, CLI_HINT_NONE,
                          "cannot remove identity '%s' from %s", refs[in_use], cmk_store_dir(s));
            in_use_hint(s, &ei);
            goto out;
        }
    }
    for (size_t i = 0; i < (sys ? 1 : n); i++) {
        const char *ref = sys ? "[system]" : refs[i];
        rc = assign ? cmk_store_identity_assign(s, ref) : cmk_store_identity_remove(s, ref);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot %s identity '%s' %s %s",
                          assign ? "assign" : "remove", sys ? "system-assigned" : ref,
                          assign ? "to" : "from", cmk_store_dir(s));
            if (!assign && rc == CMK_E_REFUSED && cmk_store_encryption(s, &ei) == CMK_OK)
                in_use_hint(s, &ei);
            else if (assign && rc == CMK_E_NOT_FOUND)
                not_found_hint();
            goto out;
        }
    }
    ex = print_store_identities(a, s);
out:
    cmk_store_close(s);
    return ex;
}

/* ---- identities of the home ---- */

static int run_identity(const cli_cmd *cmd, cli_args *a)
{
    static const char *const verb[] = {"cannot create", "cannot show", "cannot delete",
                                       "cannot list"};
    const char *ref = cmd->op == ID_LIST ? NULL : cli_get(a, "name");
    char home[CMK_PATH_MAX];
    cmk_errbuf eb = {0};
    cmk_identity id;
    json_t *j = NULL;
    cmk_err rc;
    int ex;

    if (cmd->op == ID_SHOW) {
        if (cli_isset(a, "store") == cli_isset(a, "name"))
            return cli_usage_error(cmd, "give either --name REF (an identity) or --store DIR "
                                        "(the identities of a store)");
        if (cli_isset(a, "store")) {
            cmk_store *s = NULL;
            ex = cli_open_store(a, &s);
            if (ex == CLI_EXIT_OK)
                ex = print_store_identities(a, s);
            cmk_store_close(s);
            return ex;
        }
    }
    rc = cli_home(a, cmd->op == ID_CREATE, home, &eb);
    if (rc != CMK_OK)
        return cli_fail(rc, &eb, CLI_HINT_NONE, "cannot use the cmkstore home");
    switch (cmd->op) {
    case ID_CREATE:
        rc = cmk_identity_create(home, ref, &id, &eb);
        break;
    case ID_SHOW:
        rc = cmk_identity_get(home, ref, &id, &eb);
        break;
    case ID_DELETE:
        rc = cmk_identity_delete(home, ref, &eb);
        break;
    default:
        rc = cmk_identity_list(home, &j, &eb);
        break;
    }
    if (rc != CMK_OK) {
        json_decref(j);
        if (!ref)
            return cli_fail(rc, &eb, CLI_HINT_NONE, "%s identities", verb[cmd->op]);
        ex = cli_fail(rc, &eb, CLI_HINT_NONE, "%s identity '%s'", verb[cmd->op], ref);
        /* The library states the fault; what to run next is the command line's. */
        if (cmd->op == ID_CREATE && rc == CMK_E_EXISTS)
            cli_hint("use it, or delete it first with `cmkstore identity delete --name %s`.", ref);
        else if (rc == CMK_E_NOT_FOUND)
            not_found_hint();
        return ex;
    }
    if (cmd->op == ID_CREATE || cmd->op == ID_SHOW)
        j = cmk_identity_json(&id);
    else if (cmd->op == ID_DELETE)
        return CLI_EXIT_OK;
    return cli_print_json(j);
}

const cli_cmd cli_identity_cmds[] = {
    {.path = "identity create",
     .summary = "Create a user-assigned identity",
     .description = "Creates a user-assigned identity in the home. Note its principalId: a vault "
                    "access policy grants key permissions to it (`cmkstore vault set-policy "
                    "--object-id`). A store created with `--identity` reaches its key as this "
                    "identity.",
     .opts = create_opts,
     .example = "cmkstore identity create --name myid",
     .run = run_identity,
     .op = ID_CREATE},
    {.path = "identity show",
     .summary = "Show an identity, or the identities assigned to a store",
     .description =
         "With --name: prints an identity (user- or system-assigned) as JSON: clientId, id, "
         "name, principalId, tenantId, type.\n\nWith --store: prints the identities assigned "
         "to the store, like `az acr identity show`: type, principalId and tenantId of the "
         "store's system-assigned identity (null if it is not enabled), "
         "userAssignedIdentities (resource id -> clientId, principalId), and "
         "encryptionIdentity, the identity the store reaches its key-encryption key as. Grant "
         "a principalId key access with `cmkstore vault set-policy --object-id`.",
     .opts = show_opts,
     .example = "cmkstore identity show --name myid\n"
                "cmkstore identity show --store ./registry",
     .run = run_identity,
     .op = ID_SHOW},
    {.path = "identity delete",
     .summary = "Delete a user-assigned identity",
     .description = "Deletes a user-assigned identity. Access policies naming its principalId "
                    "stay in the vaults but grant nothing any more.",
     .opts = ref_opts,
     .example = "cmkstore identity delete --name myid",
     .run = run_identity,
     .op = ID_DELETE},
    {.path = "identity list",
     .summary = "List the user-assigned identities",
     .description = "Prints the user-assigned identities of the home as a JSON array. The "
                    "identities of a store: `cmkstore identity show --store DIR`.",
     .example = "cmkstore identity list",
     .run = run_identity,
     .op = ID_LIST},
    {.path = "identity assign",
     .summary = "Assign identities to a store (system-assigned or user-assigned)",
     .description =
         "Assigns identities to the store, like `az acr identity assign`: --system enables the "
         "store's system-assigned identity, --identities adds user-assigned ones. An identity "
         "must be assigned before the key can be rotated to it (`cmkstore encryption "
         "rotate-key --identity ID|[system]`). Assigning one that is already assigned changes "
         "nothing. Prints the store's identities (as `identity show --store`), with the "
         "system-assigned principalId to grant key access to.",
     .opts = assign_opts,
     .example = "cmkstore identity assign --store ./registry --system\n"
                "cmkstore identity assign --store ./registry --identities otherid",
     .run = run_store_identity,
     .op = ID_ASSIGN},
    {.path = "identity remove",
     .summary = "Remove identities from a store",
     .description =
         "Removes identities from the store, like `az acr identity remove`. Removing the "
         "identity that encryption uses is refused (exit 6) and changes nothing: assign it "
         "again if it was lost, or first rotate the key to another identity (`cmkstore "
         "encryption rotate-key --store DIR --key-encryption-key KID --identity OTHER`), then "
         "remove it. With several --identities, nothing is removed if one is refused. Prints "
         "the store's identities.",
     .opts = assign_opts,
     .example = "cmkstore identity remove --store ./registry --identities oldid\n"
                "cmkstore identity remove --store ./registry --system",
     .run = run_store_identity,
     .op = ID_REMOVE},
    {.path = NULL},
};
