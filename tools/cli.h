/*
 * cli.h — shared machinery of the `cmkstore` command line: the command table, option parsing
 * (getopt_long, driven by each command's option table), help, error reporting, exit codes and
 * JSON output.
 *
 * Exit codes (also printed by `cmkstore --help` and documented in the README):
 *   0  success
 *   1  other failure: I/O, out of memory, internal error
 *   2  usage error or invalid input (CMK_E_INVAL, CMK_E_RANGE)
 *   3  not found (CMK_E_NOT_FOUND): blob, store, vault, identity
 *   4  integrity failure (CMK_E_INTEGRITY, CMK_E_CORRUPT, CMK_E_DIGEST)
 *   5  key access (cmk_err_is_key_access): denied, disabled, deleted, key not found,
 *      vault unreachable
 *   6  refused (CMK_E_REFUSED, CMK_E_KEY_UNSUPPORTED, CMK_E_EXISTS)
 *
 * Output: JSON documents on stdout (2-space indent, sorted keys, like az), blob data on
 * stdout for `blob get`; messages and errors on stderr.
 *
 * Adding commands: each cmd_*.c file defines a table (cli_<group>_cmds, terminated by an
 * entry whose path is NULL) listed in cmkstore.c. A server module (serve*.c) adds its
 * commands by defining `const cli_cmd cli_serve_cmds[]`; the reference is weak, so the CLI
 * links with or without it.
 */
#ifndef CMK_CLI_H
#define CMK_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cmkstore.h"
#include "cmkstore_kek.h"
#include "cmkstore_admin.h"

enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_NOT_FOUND = 3,
    CLI_EXIT_INTEGRITY = 4,
    CLI_EXIT_KEY_ACCESS = 5,
    CLI_EXIT_REFUSED = 6,
};

/* Returned by cli_parse when the command should run. */
#define CLI_RUN (-1)

typedef enum cli_opt_kind {
    CLI_FLAG,     /* no value */
    CLI_STR,      /* one non-empty value */
    CLI_LIST,     /* one or more values after one flag, az style: --perms get wrapKey */
    CLI_BOOL,     /* true | false */
    CLI_BOOL_OPT, /* alone means true; may be followed by true | false */
    CLI_UINT,     /* decimal, non-negative */
    CLI_SIZE,     /* bytes, with an optional K, M or G suffix (binary multiples) */
} cli_opt_kind;

typedef struct cli_opt {
    const char *name; /* long name without "--"; NULL ends a table */
    int short_name;   /* 0: none */
    cli_opt_kind kind;
    int required;
    const char *metavar;
    const char *help;
} cli_opt;

/* Ends an option table. */
#define CLI_OPT_END                                                                                \
    {                                                                                              \
        NULL, 0, CLI_FLAG, 0, NULL, NULL                                                           \
    }

#define CLI_MAX_OPTS 48
#define CLI_MAX_LIST 32
#define CLI_MAX_POS  4

typedef struct cli_cmd cli_cmd;

typedef struct cli_args {
    const cli_cmd *cmd;
    const char *home; /* --home (global or given to the command), or NULL */
    const char *val[CLI_MAX_OPTS];
    uint64_t num[CLI_MAX_OPTS]; /* value of CLI_UINT, CLI_SIZE and the boolean kinds */
    unsigned char set[CLI_MAX_OPTS];
    const char *list[CLI_MAX_OPTS][CLI_MAX_LIST];
    size_t nlist[CLI_MAX_OPTS];
    const char *pos[CLI_MAX_POS];
    int npos;
} cli_args;

struct cli_cmd {
    const char *path;        /* words after "cmkstore": "vault key create"; NULL ends a table */
    const char *summary;     /* one line for command lists */
    const char *description; /* for --help; word-wrapped, '\n' breaks the line */
    const cli_opt *opts;     /* table ending with CLI_OPT_END; may be NULL */
    const char *pos_usage;   /* positional arguments for the usage line, NULL if none */
    int min_pos, max_pos;
    const char *example; /* one or more lines */
    int (*run)(const cli_cmd *cmd, cli_args *a);
    int op;  /* selects the operation in table-driven run functions */
    int raw; /* 1: arguments are not parsed (only --help is honoured) */
};

/* A group of commands ("vault key") with its help text. */
typedef struct cli_group {
    const char *path;
    const char *description;
    const char *example;
} cli_group;

extern const cli_cmd cli_identity_cmds[];
extern const cli_cmd cli_vault_cmds[];
extern const cli_cmd cli_store_cmds[];
extern const cli_cmd cli_blob_cmds[];

/* ---- parsing and help ---- */

/* Parses the command's arguments (argv[0] is the command's last word). Returns CLI_RUN when
 * the command should run, else an exit code (0 after printing --help). */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a);
void cli_print_help(const cli_cmd *cmd, FILE *f);
/* Prints "cmkstore: error: <msg>" and a pointer to --help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints text word-wrapped to 100 columns, each line indented by indent spaces. */
void cli_print_wrapped(FILE *f, const char *text, int indent);

/* Option values by long name (the name must be declared by the command). */
const char *cli_get(const cli_args *a, const char *name);
int cli_isset(const cli_args *a, const char *name);
uint64_t cli_num(const cli_args *a, const char *name, uint64_t def);
size_t cli_list(const cli_args *a, const char *name, const char *const **out);

/* ---- errors ---- */

int cli_exit_code(cmk_err e);
/* Hints after the error line. */
#define CLI_HINT_NONE  0
#define CLI_HINT_STORE 1 /* key-access and integrity hints, for commands that use a store */
/* Prints "cmkstore: error: <what>: <detail>", detail being eb->msg if eb has one, else
 * cmk_errmsg(), else cmk_strerror(rc); then hints. Returns the exit code of rc. */
int cli_fail(cmk_err rc, const cmk_errbuf *eb, int hints, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prints "hint: ..." on stderr. */
void cli_hint(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For a key the vault refused as deleted (key or vault) or disabled: prints the hint that
 * names the command restoring it; nothing for another rc. The library's message names the
 * vault, key and version; the hint only says which command to run. */
void cli_key_hint(cmk_err rc);

/* ---- shared helpers ---- */

/* The options of commands that may reach a key in Azure Key Vault (create, serve). */
#define CLI_AKV_OPTS                                                                               \
    {"ca-file",                                                                                    \
     0,                                                                                            \
     CLI_STR,                                                                                      \
     0,                                                                                            \
     "FILE",                                                                                       \
     "Extra CA certificates (PEM) to trust, besides the system's, for a key in Azure Key Vault "   \
     "(https:// key identifier) and its token endpoint: a private endpoint, or the certificate "   \
     "of a local vault served over HTTPS. Default: $CMKSTORE_CA_FILE (which other commands "       \
     "read)."},                                                                                    \
    {                                                                                              \
        "client-secret-file", 0, CLI_STR, 0, "FILE",                                               \
            "Reach Azure Key Vault as the application $AZURE_CLIENT_ID (tenant $AZURE_TENANT_ID) " \
            "with the client secret in FILE instead of $AZURE_CLIENT_SECRET or a managed "         \
            "identity. "                                                                           \
            "Default: $CMKSTORE_AZURE_CLIENT_SECRET_FILE."                                         \
    }
/* Applies CLI_AKV_OPTS: checks the files are readable and hands them to the key providers
 * (CMKSTORE_CA_FILE, CMKSTORE_AZURE_CLIENT_SECRET_FILE). Returns CLI_RUN or an exit code. */
int cli_apply_akv_opts(const cli_cmd *cmd, const cli_args *a);

/* Resolves the home (--home, else $CMKSTORE_HOME, else ~/.cmkstore); create: make it. */
cmk_err cli_home(const cli_args *a, int create, char out[CMK_PATH_MAX], cmk_errbuf *eb);
/* Opens the store named by --store. Returns CLI_EXIT_OK or an exit code (error printed). */
int cli_open_store(const cli_args *a, cmk_store **out);

/* Prints j (pretty, sorted keys) and a newline on stdout, then releases j. NULL means an
 * allocation failed. Returns an exit code. */
int cli_print_json(json_t *j);
/* Prints every element of a JSON array as one compact line; releases arr. */
int cli_print_json_lines(json_t *arr);
/* ISO 8601 string, or JSON null for 0. */
json_t *cli_json_time(int64_t t);
/* JSON string, or null for NULL or "". */
json_t *cli_json_str_or_null(const char *s);

#endif
