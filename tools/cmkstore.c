/*
 * cmkstore.c — entry point of the `cmkstore` command line: global options, dispatch to the
 * command tables of cmd_*.c, top-level and group help, `version`.
 *
 *   cmkstore [--home DIR] <group> <command> [options]
 *
 * Exit codes: see cli.h (and `cmkstore --help`).
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "tools/cli.h"
#include "core/format.h"

/* Defined by the server module when it is built (see cli.h). */
extern const cli_cmd cli_serve_cmds[] __attribute__((weak));
extern const cli_cmd cli_vault_serve_cmds[] __attribute__((weak));
/* cmd_events.c */
extern const cli_cmd cli_events_cmds[];
/* cmd_registry.c */
extern const cli_cmd cli_registry_cmds[];

static int run_version(const cli_cmd *cmd, cli_args *a);

static const cli_cmd misc_cmds[] = {
    {.path = "version",
     .summary = "Show the versions of cmkstore, its blob format and its libraries",
     .description = "Prints the version of cmkstore, of the blob container format it writes, and "
                    "of the libraries it was built with, as JSON.",
     .example = "cmkstore version",
     .run = run_version},
    {.path = NULL},
};

static const cli_group groups[] = {
    {"identity",
     "Manage user-assigned identities, and the identities assigned to a store (`identity "
     "assign|remove|show --store`). A store reaches its customer-managed key as an identity; "
     "a vault access policy names the identity's principalId (object id).",
     "cmkstore identity create --name myid"},
    {"vault",
     "Manage local key vaults: creation, soft delete and purge protection, access policies "
     "and the audit log of key use. Keys are managed with `cmkstore vault key`; `cmkstore "
     "vault serve` serves a vault over HTTPS in Key Vault's protocol to stores on other hosts.",
     "cmkstore vault create --name myvault --enable-purge-protection"},
    {"vault key",
     "Manage the RSA keys of a local vault and their versions. A key identifier with a "
     "version means manual rotation; without one, the store follows the latest version.",
     "cmkstore vault key create --vault-name myvault --name mykey"},
    {"encryption",
     "Show a store's encryption settings and key state, rotate its key-encryption key or its "
     "data key, check key access and automatic rotation now or continuously (`watch`), and "
     "change the lifecycle settings. A customer-managed key can only be enabled when a store "
     "is created, and can never be disabled. The store's event log: `cmkstore events`.",
     "cmkstore encryption show --store ./registry"},
    {"blob",
     "Put, get, inspect, verify and remove the blobs of a store. Blobs are addressed by their "
     "OCI digest (sha256:<hex>).",
     "cmkstore blob put --store ./registry layer.tar.gz"},
    {"registry",
     "Maintain a store served as a registry: garbage collection of the blobs no repository "
     "references, and usage (bytes per repository and in all).",
     "cmkstore registry gc --store ./registry --dry-run"},
};

#define NGROUPS (sizeof(groups) / sizeof(groups[0]))

static const char *const exit_code_text =
    "  0  success\n"
    "  1  other failure (I/O, out of memory, internal error)\n"
    "  2  usage error or invalid input (bad option or value, range outside the blob)\n"
    "  3  not found (blob, store, vault, identity)\n"
    "  4  integrity failure: stored data altered or corrupt, or content not matching its "
    "digest\n"
    "  5  key access: the key-encryption key is denied, disabled, deleted, missing or "
    "unreachable\n"
    "  6  refused: not allowed in this state (already exists, CMK enable/disable, key type "
    "not\n"
    "     supported, purge protection)\n";

/* Every command table, in the order of the help listing. */
static const cli_cmd *tables[13];
static size_t ntables;

static void collect_tables(void)
{
    tables[ntables++] = cli_store_cmds;
    tables[ntables++] = cli_identity_cmds;
    tables[ntables++] = cli_vault_cmds;
    if (cli_vault_serve_cmds)
        tables[ntables++] = cli_vault_serve_cmds;
    tables[ntables++] = cli_blob_cmds;
    tables[ntables++] = cli_events_cmds;
    tables[ntables++] = cli_registry_cmds;
    if (cli_serve_cmds)
        tables[ntables++] = cli_serve_cmds;
    tables[ntables++] = misc_cmds;
}

static size_t word_count(const char *path)
{
    size_t n = 1;

    for (; *path; path++)
        n += *path == ' ';
    return n;
}

/* Number of leading words of path equal to argv[0..argc); stops at the first mismatch. */
static size_t match_words(const char *path, int argc, char **argv)
{
    size_t n = 0;

    while (*path && (int)n < argc) {
        size_t w = strcspn(path, " ");
        if (strlen(argv[n]) != w || strncmp(path, argv[n], w) != 0)
            break;
        n++;
        path += w;
        if (*path == ' ')
            path++;
        else
            return n;
    }
    return n;
}

static void list_commands(FILE *f, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0;

    for (size_t t = 0; t < ntables; t++) {
        for (const cli_cmd *c = tables[t]; c->path; c++) {
            if (prefix && (strncmp(c->path, prefix, plen) != 0 || c->path[plen] != ' '))
                continue;
            fprintf(f, "  %-28s %s\n", prefix ? c->path + plen + 1 : c->path, c->summary);
        }
    }
}

static void print_top_help(FILE *f)
{
    fputs("Usage: cmkstore [--home DIR] [--pkcs11-module PATH] <group> <command> [options]\n"
          "       cmkstore <group> [<command>] --help\n\n",
          f);
    cli_print_wrapped(f,
                      "Stores container-registry blobs (image layers, configs, manifests) "
                      "encrypted at rest: every blob is sealed with AES-256-GCM under data keys "
                      "that are wrapped by a customer-managed RSA key held in a key vault. The "
                      "workflow follows Azure Container Registry's customer-managed keys: create "
                      "an identity and a vault, grant the identity get, unwrapKey and wrapKey, "
                      "create a key, then create the store with the identity and the key.",
                      0);
    fputs("\nCommands:\n", f);
    list_commands(f, NULL);
    fputs(
        "\nGlobal options:\n"
        "  --home DIR     Home of the local vaults and identities (default: $CMKSTORE_HOME,\n"
        "                 else ~/.cmkstore). Also accepted after the command.\n"
        "  --pkcs11-module PATH\n"
        "                 The PKCS#11 module for pkcs11: keys (as $CMKSTORE_PKCS11_MODULE, which\n"
        "                 it overrides). A module-path in a key identifier is never loaded: it\n"
        "                 must name this module (see kek/HSM.md).\n"
        "  -h, --help     Show help (for a command: `cmkstore <command> --help`).\n"
        "  --version      Same as `cmkstore version`.\n"
        "\nOutput: JSON on stdout for show, create and list commands; messages and errors on\n"
        "stderr. Secrets are never taken from the command line nor printed.\n"
        "\nExit codes:\n",
        f);
    fputs(exit_code_text, f);
    fputs("\nExample:\n"
          "  cmkstore identity create --name myid\n"
          "  cmkstore vault create --name myvault --enable-purge-protection\n"
          "  cmkstore vault set-policy --name myvault --object-id <principalId> \\\n"
          "      --key-permissions get unwrapKey wrapKey\n"
          "  cmkstore vault key create --vault-name myvault --name mykey\n"
          "  cmkstore create --store ./registry --identity myid \\\n"
          "      --key-encryption-key local://myvault/keys/mykey\n"
          "  cmkstore encryption show --store ./registry\n",
          f);
}

static const cli_group *find_group(const char *path)
{
    for (size_t i = 0; i < NGROUPS; i++)
        if (strcmp(groups[i].path, path) == 0)
            return &groups[i];
    return NULL;
}

static void print_group_help(const cli_group *g, FILE *f)
{
    fprintf(f, "Usage: cmkstore %s <command> [options]\n\n", g->path);
    cli_print_wrapped(f, g->description, 0);
    fputs("\nCommands:\n", f);
    list_commands(f, g->path);
    fprintf(f, "\nExample:\n  %s\n\nRun 'cmkstore %s <command> --help' for a command's options.\n",
            g->example, g->path);
}

static int run_version(const cli_cmd *cmd, cli_args *a)
{
    (void)cmd;
    (void)a;
    return cli_print_json(
        json_pack("{s:s, s:i, s:{s:s, s:s, s:s}}", "cmkstore", CMKSTORE_VERSION_STRING,
                  "blobFormatVersion", CMK_FMT_VERSION, "libraries", "jansson", JANSSON_VERSION,
                  "openssl", OpenSSL_version(OPENSSL_VERSION), "zstd", ZSTD_versionString()));
}

/* Handles words that name a group but no command: help, or a usage error. */
static int group_or_unknown(int argc, char **argv)
{
    char path[64] = "";
    const cli_group *g = NULL, *cand;
    int used = 0, help = 0;

    /* The longest run of leading words that names a group. */
    for (int i = 0; i < argc && i < 3 && argv[i][0] != '-'; i++) {
        size_t len = strlen(path);
        snprintf(path + len, sizeof(path) - len, "%s%s", len ? " " : "", argv[i]);
        cand = find_group(path);
        if (cand) {
            g = cand;
            used = i + 1;
        }
    }
    for (int i = used; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            help = 1;
    if (!g)
        return cli_usage_error(NULL, "unknown command '%s'", argv[0]);
    if (help) {
        print_group_help(g, stdout);
        return CLI_EXIT_OK;
    }
    if (used < argc)
        fprintf(stderr, "cmkstore: error: unknown command '%s %s'\n\n", g->path, argv[used]);
    else
        fprintf(stderr, "cmkstore: error: missing command after '%s'\n\n", g->path);
    print_group_help(g, stderr);
    return CLI_EXIT_USAGE;
}

static int dispatch(int argc, char **argv, const char *home)
{
    const cli_cmd *best = NULL;
    size_t best_words = 0;
    cli_args a;
    int rc;

    for (size_t t = 0; t < ntables; t++) {
        for (const cli_cmd *c = tables[t]; c->path; c++) {
            size_t w = word_count(c->path);
            if (w > best_words && match_words(c->path, argc, argv) == w) {
                best = c;
                best_words = w;
            }
        }
    }
    if (!best)
        return group_or_unknown(argc, argv);
    memset(&a, 0, sizeof(a));
    a.home = home;
    /* The command sees its last word as argv[0], as getopt expects. */
    rc = cli_parse(best, argc - (int)best_words + 1, argv + best_words - 1, &a);
    if (rc != CLI_RUN)
        return rc;
    return best->run(best, &a);
}

int main(int argc, char **argv)
{
    const char *home = NULL;
    int i = 1, rc;

    collect_tables();
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--home") == 0) {
            if (i + 1 >= argc)
                return cli_usage_error(NULL, "option --home needs a value");
            home = argv[i + 1];
            i += 2;
        } else if (strncmp(argv[i], "--home=", 7) == 0) {
            home = argv[i] + 7;
            i++;
        } else if (strcmp(argv[i], "--pkcs11-module") == 0 ||
                   strncmp(argv[i], "--pkcs11-module=", 16) == 0) {
            /* Operator configuration, like the variable it sets (read by kek/pkcs11.c). */
            const char *m = argv[i][15] == '=' ? argv[i] + 16 : i + 1 < argc ? argv[i + 1] : "";
            if (!*m)
                return cli_usage_error(NULL, "option --pkcs11-module needs a path");
            if (setenv("CMKSTORE_PKCS11_MODULE", m, 1) != 0)
                return cli_usage_error(NULL, "cannot set the PKCS#11 module");
            i += argv[i][15] == '=' ? 1 : 2;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            print_top_help(stdout);
            return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
        } else if (strcmp(argv[i], "--version") == 0) {
            return run_version(NULL, NULL);
        } else {
            return cli_usage_error(NULL, "unknown option '%s'", argv[i]);
        }
    }
    if (home && !*home)
        return cli_usage_error(NULL, "option --home needs a non-empty value");
    if (i >= argc) {
        print_top_help(stderr);
        return CLI_EXIT_USAGE;
    }
    rc = dispatch(argc - i, argv + i, home);
    /* Output that could not be written is a failure even if the command itself succeeded. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cmkstore: error: cannot write to standard output\n");
        if (rc == CLI_EXIT_OK)
            rc = CLI_EXIT_FAILURE;
    }
    return rc;
}
