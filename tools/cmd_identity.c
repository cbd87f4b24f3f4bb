/* cmd_identity.c — `cmkstore identity create|show|delete|list` (like `az identity`). */
#include "cli.h"
#include "identity.h"

enum { ID_CREATE, ID_SHOW, ID_DELETE, ID_LIST };

static const cli_opt create_opts[] = {
    {"name", 'n', CLI_STR, 1, "NAME", "Name of the identity: 1-63 letters, digits and '-'."},
    CLI_OPT_END,
};

static const cli_opt ref_opts[] = {
    {"name", 'n', CLI_STR, 1, "REF",
     "The identity: its name, resource id, principalId or clientId."},
    CLI_OPT_END,
};

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
        if (ref)
            return cli_fail(rc, &eb, CLI_HINT_NONE, "%s identity '%s'", verb[cmd->op], ref);
        return cli_fail(rc, &eb, CLI_HINT_NONE, "%s identities", verb[cmd->op]);
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
     .summary = "Show an identity",
     .description = "Prints an identity (user- or system-assigned) as JSON: clientId, id, name, "
                    "principalId, tenantId, type.",
     .opts = ref_opts,
     .example = "cmkstore identity show --name myid",
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
     .description = "Prints the user-assigned identities of the home as a JSON array.",
     .example = "cmkstore identity list",
     .run = run_identity,
     .op = ID_LIST},
    {.path = NULL},
};
