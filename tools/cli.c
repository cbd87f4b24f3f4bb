/* cli.c — option parsing, help, errors and JSON output shared by every command. */
#include "tools/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/base/jsonfile.h"

#define WRAP_COLS    100
#define USAGE_INDENT 7  /* strlen("Usage: ") */
#define OPT_COL      32 /* where option descriptions start */
/* getopt_long values: long-only options are numbered from OPT_BASE by their table index. */
#define OPT_BASE        256
#define OPT_HOME        (OPT_BASE + CLI_MAX_OPTS)
#define OPT_S3_ENDPOINT (OPT_HOME + 1)

static int opt_count(const cli_cmd *c)
{
    int n = 0;

    if (c->opts)
        while (c->opts[n].name)
            n++;
    return n;
}

static int opt_index(const cli_cmd *c, const char *name)
{
    int n = opt_count(c);

    for (int i = 0; i < n; i++)
        if (strcmp(c->opts[i].name, name) == 0)
            return i;
    /* A command asking for an option it does not declare is a bug in the command table. */
    fprintf(stderr, "cmkstore: internal error: command '%s' has no option --%s\n", c->path, name);
    abort();
}

/* ---- help ---- */

/* Word-wraps p; the cursor is at column col (0: start of a line, which gets the indent). */
static void wrap_at(FILE *f, const char *p, int indent, int col)
{
    int line_start = 1; /* no word on the current line yet */

    while (*p) {
        if (*p == '\n') {
            fputc('\n', f);
            col = 0;
            line_start = 1;
            p++;
            continue;
        }
        if (*p == ' ') {
            p++;
            continue;
        }
        int w = (int)strcspn(p, " \n");
        if (!line_start && col + 1 + w > WRAP_COLS) {
            fputc('\n', f);
            col = 0;
            line_start = 1;
        }
        if (col == 0) {
            fprintf(f, "%*s", indent, "");
            col = indent;
        }
        if (!line_start) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, (size_t)w, f);
        col += w;
        line_start = 0;
        p += w;
    }
    if (col > 0)
        fputc('\n', f);
}

void cli_print_wrapped(FILE *f, const char *text, int indent)
{
    wrap_at(f, text, indent, 0);
}

static void print_indented(FILE *f, const char *text, int indent)
{
    while (*text) {
        size_t n = strcspn(text, "\n");
        fprintf(f, "%*s%.*s\n", indent, "", (int)n, text);
        text += n;
        if (*text == '\n')
            text++;
    }
}

static void opt_synopsis(const cli_opt *o, char *buf, size_t cap)
{
    switch (o->kind) {
    case CLI_FLAG:
        snprintf(buf, cap, "--%s", o->name);
        break;
    case CLI_BOOL_OPT:
        snprintf(buf, cap, "--%s [true|false]", o->name);
        break;
    case CLI_LIST:
        snprintf(buf, cap, "--%s %s [%s...]", o->name, o->metavar, o->metavar);
        break;
    default:
        snprintf(buf, cap, "--%s %s", o->name, o->metavar);
        break;
    }
}

static void usage_piece(FILE *f, int *col, const char *piece)
{
    int w = (int)strlen(piece);

    if (*col + 1 + w > WRAP_COLS) {
        fprintf(f, "\n%*s", USAGE_INDENT + (int)strlen("cmkstore"), "");
        *col = USAGE_INDENT + (int)strlen("cmkstore");
    }
    fputc(' ', f);
    fputs(piece, f);
    *col += 1 + w;
}

static void print_usage(const cli_cmd *c, FILE *f)
{
    char piece[200], bracketed[210];
    int n = opt_count(c);
    int col = (int)strlen("Usage: cmkstore");

    fputs("Usage: cmkstore", f);
    usage_piece(f, &col, c->path);
    for (int i = 0; i < n; i++) {
        opt_synopsis(&c->opts[i], piece, sizeof(piece));
        if (c->opts[i].required) {
            usage_piece(f, &col, piece);
        } else {
            snprintf(bracketed, sizeof(bracketed), "[%s]", piece);
            usage_piece(f, &col, bracketed);
        }
    }
    if (c->pos_usage)
        usage_piece(f, &col, c->pos_usage);
    fputc('\n', f);
}

static void print_opt_line(FILE *f, int short_name, const char *left, const char *help,
                           int required)
{
    char lbuf[240], text[1024];
    int col;

    if (short_name)
        snprintf(lbuf, sizeof(lbuf), "  -%c, %s", short_name, left);
    else
        snprintf(lbuf, sizeof(lbuf), "      %s", left);
    fputs(lbuf, f);
    col = (int)strlen(lbuf);
    if (col > OPT_COL - 2) {
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", OPT_COL - col, "");
    snprintf(text, sizeof(text), "%s%s", required ? "Required. " : "", help ? help : "");
    wrap_at(f, text, OPT_COL, OPT_COL);
}

void cli_print_help(const cli_cmd *c, FILE *f)
{
    char piece[200];
    int n = opt_count(c), has_store = 0;

    print_usage(c, f);
    fputc('\n', f);
    cli_print_wrapped(f, c->description ? c->description : c->summary, 0);
    fputs("\nOptions:\n", f);
    for (int i = 0; i < n; i++) {
        opt_synopsis(&c->opts[i], piece, sizeof(piece));
        print_opt_line(f, c->opts[i].short_name, piece, c->opts[i].help, c->opts[i].required);
    }
    for (int i = 0; i < n; i++)
        has_store |= strcmp(c->opts[i].name, "store") == 0;
    if (has_store)
        print_opt_line(f, 0, "--s3-endpoint URL",
                       "Endpoint of the object store for a store named s3://BUCKET[/PREFIX] "
                       "(default: $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL). Region and "
                       "credentials: $AWS_REGION, $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, "
                       "$AWS_SESSION_TOKEN; $AWS_CA_BUNDLE; $CMKSTORE_S3_ADDRESSING=path|virtual; "
                       "$CMKSTORE_S3_ORPHAN_GRACE=SECONDS (abandoned uploads aborted at open, "
                       "and unlinked data objects swept by `registry gc`, once this old; "
                       "default 86400).",
                       0);
    print_opt_line(f, 0, "--home DIR",
                   "Home of the local vaults and identities (default: $CMKSTORE_HOME, else "
                   "~/.cmkstore).",
                   0);
    print_opt_line(f, 'h', "--help", "Show this help and exit.", 0);
    if (c->example) {
        fputs("\nExample:\n", f);
        print_indented(f, c->example, 2);
    }
}

int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;

    fputs("cmkstore: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cmd)
        fprintf(stderr, "Try 'cmkstore %s --help'.\n", cmd->path);
    else
        fputs("Try 'cmkstore --help'.\n", stderr);
    return CLI_EXIT_USAGE;
}

/* ---- values ---- */

static int parse_bool(const char *v, uint64_t *out)
{
    if (strcasecmp(v, "true") == 0)
        *out = 1;
    else if (strcasecmp(v, "false") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

static int parse_uint(const char *v, uint64_t *out, const char **end_out)
{
    unsigned long long x;
    char *end;

    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno != 0)
        return -1;
    *out = x;
    if (end_out)
        *end_out = end;
    else if (*end)
        return -1;
    return 0;
}

/* "1048576", "1M", "256K", "1MiB", "64kb", "1G". */
static int parse_size(const char *v, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
                 {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}};
    const char *end;
    uint64_t x;

    if (parse_uint(v, &x, &end) != 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (x > (UINT64_MAX >> units[i].shift))
                return -1;
            *out = x << units[i].shift;
            return 0;
        }
    }
    return -1;
}

static int store_value(const cli_cmd *cmd, cli_args *a, int idx, const char *v)
{
    const cli_opt *o = &cmd->opts[idx];

    if (o->kind != CLI_LIST && a->set[idx])
        return cli_usage_error(cmd, "option --%s is given more than once", o->name);
    a->set[idx] = 1;
    a->val[idx] = v;
    switch (o->kind) {
    case CLI_FLAG:
        a->num[idx] = 1;
        break;
    case CLI_STR:
        if (!*v)
            return cli_usage_error(cmd, "option --%s needs a non-empty value", o->name);
        break;
    case CLI_LIST:
        if (a->nlist[idx] >= CLI_MAX_LIST)
            return cli_usage_error(cmd, "too many values for --%s", o->name);
        a->list[idx][a->nlist[idx]++] = v;
        break;
    case CLI_BOOL:
    case CLI_BOOL_OPT:
        if (!v)
            a->num[idx] = 1;
        else if (parse_bool(v, &a->num[idx]) != 0)
            return cli_usage_error(cmd, "option --%s takes true or false, not '%s'", o->name, v);
        break;
    case CLI_UINT:
        if (parse_uint(v, &a->num[idx], NULL) != 0)
            return cli_usage_error(cmd, "option --%s takes a non-negative integer, not '%s'",
                                   o->name, v);
        break;
    case CLI_SIZE:
        if (parse_size(v, &a->num[idx]) != 0)
            return cli_usage_error(cmd,
                                   "option --%s takes a size in bytes (suffixes K, M, G), not "
                                   "'%s'",
                                   o->name, v);
        break;
    }
    return CLI_RUN;
}

/* A plain argument right after a list option (or a bare boolean option) belongs to it. */
static int absorb(const cli_cmd *cmd, cli_args *a, int idx, const char *v, int *pending)
{
    const cli_opt *o = &cmd->opts[idx];
    uint64_t b;

    if (o->kind == CLI_LIST && a->nlist[idx] < CLI_MAX_LIST) {
        a->list[idx][a->nlist[idx]++] = v;
        return 1;
    }
    if (o->kind == CLI_BOOL_OPT && parse_bool(v, &b) == 0) {
        a->num[idx] = b;
        a->val[idx] = v;
        *pending = -1;
        return 1;
    }
    return 0;
}

static int short_index(const cli_cmd *cmd, int c)
{
    int n = opt_count(cmd);

    for (int i = 0; i < n; i++)
        if (cmd->opts[i].short_name == c)
            return i;
    return -1;
}

static int add_positional(const cli_cmd *cmd, cli_args *a, const char *v)
{
    if (a->npos >= cmd->max_pos || a->npos >= CLI_MAX_POS)
        return cli_usage_error(cmd, "unexpected argument '%s'", v);
    a->pos[a->npos++] = v;
    return CLI_RUN;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a)
{
    struct option lo[CLI_MAX_OPTS + 4];
    char optstring[3 * CLI_MAX_OPTS + 8];
    size_t k = 0;
    int n = opt_count(cmd), pending = -1, c, rc;

    a->cmd = cmd;
    /* --help wins over any other problem on the line. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            cli_print_help(cmd, stdout);
            return CLI_EXIT_OK;
        }
    }
    if (cmd->raw)
        return CLI_RUN;
    if (n > CLI_MAX_OPTS) {
        fprintf(stderr, "cmkstore: internal error: too many options for '%s'\n", cmd->path);
        abort();
    }
    /* '-': plain arguments come back in order (code 1), so values after a list option can be
     * told from positionals; ':': a missing value is reported as ':'. */
    optstring[k++] = '-';
    optstring[k++] = ':';
    optstring[k++] = 'h';
    for (int i = 0; i < n; i++) {
        lo[i].name = cmd->opts[i].name;
        lo[i].has_arg = cmd->opts[i].kind == CLI_FLAG       ? no_argument
                        : cmd->opts[i].kind == CLI_BOOL_OPT ? optional_argument
                                                            : required_argument;
        lo[i].flag = NULL;
        lo[i].val = OPT_BASE + i;
        if (cmd->opts[i].short_name) {
            optstring[k++] = (char)cmd->opts[i].short_name;
            if (lo[i].has_arg == required_argument)
                optstring[k++] = ':';
        }
    }
    optstring[k] = '\0';
    lo[n] = (struct option){"home", required_argument, NULL, OPT_HOME};
    lo[n + 1] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n + 2] = (struct option){"s3-endpoint", required_argument, NULL, OPT_S3_ENDPOINT};
    lo[n + 3] = (struct option){NULL, 0, NULL, 0};

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, optstring, lo, NULL)) != -1) {
        int idx;

        if (c == 1) {
            if (pending >= 0 && absorb(cmd, a, pending, optarg, &pending))
                continue;
            pending = -1;
            rc = add_positional(cmd, a, optarg);
            if (rc != CLI_RUN)
                return rc;
            continue;
        }
        pending = -1;
        if (c == '?') {
            if (optopt >= OPT_BASE && optopt < OPT_BASE + n)
                return cli_usage_error(cmd, "option --%s takes no value",
                                       cmd->opts[optopt - OPT_BASE].name);
            if (optopt > 0 && optopt < OPT_BASE)
                return cli_usage_error(cmd, "unknown option '-%c'", optopt);
            return cli_usage_error(cmd, "unknown or ambiguous option '%s'", argv[optind - 1]);
        }
        if (c == ':') {
            if (optopt >= OPT_BASE && optopt < OPT_BASE + n)
                return cli_usage_error(cmd, "option --%s needs a value",
                                       cmd->opts[optopt - OPT_BASE].name);
            if (optopt == OPT_HOME)
                return cli_usage_error(cmd, "option --home needs a value");
            if (optopt == OPT_S3_ENDPOINT)
                return cli_usage_error(cmd, "option --s3-endpoint needs a value");
            return cli_usage_error(cmd, "option -%c needs a value", optopt);
        }
        if (c == 'h')
            continue; /* handled above */
        if (c == OPT_HOME) {
            a->home = optarg;
            continue;
        }
        if (c == OPT_S3_ENDPOINT) {
            /* The library takes the endpoint the way the AWS tools do, from the environment
             * (core/backend/s3_conf.h); the option overrides it for this process. */
            if (setenv("AWS_ENDPOINT_URL_S3", optarg, 1) != 0)
                return cli_usage_error(cmd, "cannot set the S3 endpoint");
            continue;
        }
        idx = c >= OPT_BASE ? c - OPT_BASE : short_index(cmd, c);
        if (idx < 0 || idx >= n)
            return cli_usage_error(cmd, "unknown option '-%c'", c);
        rc = store_value(cmd, a, idx, optarg);
        if (rc != CLI_RUN)
            return rc;
        if (cmd->opts[idx].kind == CLI_LIST || (cmd->opts[idx].kind == CLI_BOOL_OPT && !optarg))
            pending = idx;
    }
    for (; optind < argc; optind++) { /* after "--" */
        rc = add_positional(cmd, a, argv[optind]);
        if (rc != CLI_RUN)
            return rc;
    }
    for (int i = 0; i < n; i++)
        if (cmd->opts[i].required && !a->set[i])
            return cli_usage_error(cmd, "missing required option --%s", cmd->opts[i].name);
    if (a->npos < cmd->min_pos)
        return cli_usage_error(cmd, "missing argument: %s",
                               cmd->pos_usage ? cmd->pos_usage : "(argument)");
    return CLI_RUN;
}

const char *cli_get(const cli_args *a, const char *name)
{
    int i = opt_index(a->cmd, name);

    return a->set[i] ? a->val[i] : NULL;
}

int cli_isset(const cli_args *a, const char *name)
{
    return a->set[opt_index(a->cmd, name)];
}

uint64_t cli_num(const cli_args *a, const char *name, uint64_t def)
{
    int i = opt_index(a->cmd, name);

    return a->set[i] ? a->num[i] : def;
}

size_t cli_list(const cli_args *a, const char *name, const char *const **out)
{
    int i = opt_index(a->cmd, name);

    *out = a->list[i];
    return a->nlist[i];
}

/* ---- errors ---- */

int cli_exit_code(cmk_err e)
{
    switch (e) {
    case CMK_OK:
        return CLI_EXIT_OK;
    case CMK_E_INVAL:
    case CMK_E_RANGE:
        return CLI_EXIT_USAGE;
    case CMK_E_NOT_FOUND:
        return CLI_EXIT_NOT_FOUND;
    case CMK_E_INTEGRITY:
    case CMK_E_CORRUPT:
    case CMK_E_DIGEST:
        return CLI_EXIT_INTEGRITY;
    case CMK_E_REFUSED:
    case CMK_E_KEY_UNSUPPORTED:
    case CMK_E_EXISTS:
        return CLI_EXIT_REFUSED;
    default:
        return cmk_err_is_key_access(e) ? CLI_EXIT_KEY_ACCESS : CLI_EXIT_FAILURE;
    }
}

void cli_hint(const char *fmt, ...)
{
    va_list ap;

    fputs("hint: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_key_hint(cmk_err rc)
{
    if (rc == CMK_E_KEY_DELETED)
        cli_hint("the key-encryption key (or its vault) is deleted, not lost: recover it with "
                 "`cmkstore vault key recover --vault-name VAULT --name KEY` (a deleted vault with "
                 "`cmkstore vault recover --name VAULT`). `cmkstore encryption show --store DIR` "
                 "names the key.");
    else if (rc == CMK_E_KEY_DISABLED)
        cli_hint("the key-encryption key (or the version in use) is disabled, not lost: enable "
                 "it with `cmkstore vault key set-attributes --vault-name VAULT --name KEY "
                 "--enabled true` (`--version VERSION` for one version). `cmkstore encryption "
                 "show --store DIR` names the key.");
}

static void store_hint(cmk_err rc)
{
    if (rc == CMK_E_KEY_UNREACHABLE)
        cli_hint("the key vault did not answer; nothing was lost. Retry when it is reachable; "
                 "`cmkstore encryption show --store DIR` shows the key state.");
    else if (rc == CMK_E_KEY_DELETED || rc == CMK_E_KEY_DISABLED)
        cli_key_hint(rc);
    else if (cmk_err_is_key_access(rc))
        cli_hint("the store cannot use its key-encryption key. Check that the vault's access "
                 "policy grants the store's identity get, wrapKey and unwrapKey (`cmkstore "
                 "vault set-policy`), that the key is enabled (`cmkstore vault key "
                 "set-attributes --enabled true`) and not deleted (`cmkstore vault key "
                 "recover`). `cmkstore encryption show --store DIR` names the key and identity.");
    else if (rc == CMK_E_DIGEST)
        cli_hint("the content does not match the expected digest; nothing was stored.");
    else if (rc == CMK_E_INTEGRITY || rc == CMK_E_CORRUPT)
        cli_hint("the stored data is damaged or was altered; no unauthenticated data was "
                 "output. Push the blob again from a good copy (`cmkstore blob put`, or a "
                 "registry push): a push replaces a damaged blob.");
}

int cli_fail(cmk_err rc, const cmk_errbuf *eb, int hints, const char *fmt, ...)
{
    const char *detail = eb ? eb->msg : cmk_errmsg();
    va_list ap;

    if (!detail || !*detail)
        detail = cmk_strerror(rc);
    fputs("cmkstore: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", detail);
    if (hints & CLI_HINT_STORE)
        store_hint(rc);
    return cli_exit_code(rc);
}

/* ---- shared helpers ---- */

cmk_err cli_home(const cli_args *a, int create, char out[CMK_PATH_MAX], cmk_errbuf *eb)
{
    return cmk_home_resolve(a->home, create, out, eb);
}

int cli_apply_akv_opts(const cli_cmd *cmd, const cli_args *a)
{
    static const struct {
        const char *opt, *env;
    } map[] = {{"ca-file", "CMKSTORE_CA_FILE"},
               {"client-secret-file", "CMKSTORE_AZURE_CLIENT_SECRET_FILE"}};

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const char *v = cli_get(a, map[i].opt);
        if (!v)
            continue;
        if (!*v || access(v, R_OK) != 0)
            return cli_usage_error(cmd, "--%s %s: %s", map[i].opt, v,
                                   *v ? strerror(errno) : "empty path");
        /* Operator configuration, read by the Azure Key Vault provider (kek/akv/). */
        if (setenv(map[i].env, v, 1) != 0)
            return cli_usage_error(cmd, "cannot apply --%s", map[i].opt);
    }
    return CLI_RUN;
}

int cli_open_store(const cli_args *a, cmk_store **out)
{
    const char *dir = cli_get(a, "store");
    cmk_store_opts o;
    cmk_err rc;

    cmk_store_opts_init(&o);
    o.home = a->home;
    rc = cmk_store_open(dir, &o, out);
    /* Opening reads no blob: damage found here is in a store file, and the message says
     * which and how to restore it (the store hint would blame a blob). */
    if (rc == CMK_E_NOT_FOUND) {
        const char *shown = dir ? dir : "DIR";
        int ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot open the store %s", shown);
        cli_hint("create one with `cmkstore create --store %s`", shown);
        return ex;
    }
    if (rc != CMK_OK)
        return cli_fail(
            rc, NULL, rc == CMK_E_CORRUPT || rc == CMK_E_INTEGRITY ? CLI_HINT_NONE : CLI_HINT_STORE,
            "cannot open the store %s", dir);
    return CLI_EXIT_OK;
}

static int stdout_failed(void)
{
    fprintf(stderr, "cmkstore: error: cannot write to standard output: %s\n", strerror(errno));
    return CLI_EXIT_FAILURE;
}

int cli_print_json(json_t *j)
{
    int rc;

    if (!j) {
        fputs("cmkstore: error: out of memory\n", stderr);
        return CLI_EXIT_FAILURE;
    }
    rc = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(j);
    if (rc != 0 || fputc('\n', stdout) == EOF)
        return stdout_failed();
    return CLI_EXIT_OK;
}

int cli_print_json_lines(json_t *arr)
{
    size_t i;
    json_t *v;
    int ex = CLI_EXIT_OK;

    if (!arr) {
        fputs("cmkstore: error: out of memory\n", stderr);
        return CLI_EXIT_FAILURE;
    }
    json_array_foreach(arr, i, v)
    {
        if (json_dumpf(v, stdout, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) != 0 ||
            fputc('\n', stdout) == EOF) {
            ex = stdout_failed();
            break;
        }
    }
    json_decref(arr);
    return ex;
}

json_t *cli_json_time(int64_t t)
{
    char buf[32];

    if (t == 0)
        return json_null();
    cmk_iso8601((time_t)t, buf);
    return json_string(buf);
}

json_t *cli_json_str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}
