/*
 * cmd_blob.c — `cmkstore blob put|get|stat|verify|rm|ls`.
 *
 * Data is streamed through 1 MiB buffers (one for put; up to four in flight for get, whose
 * writes overlap the decryption: blob_out.h): a blob of any size is never held in memory.
 * `blob get -o FILE` writes FILE.partial-<random> and renames it into place only after the
 * whole range was read and authenticated, so a failed or interrupted get leaves no FILE;
 * the fsync before the rename is made only with --fsync (a restore tool's output, like cp's,
 * is not durable by default). A FILE that is a device or a FIFO is written as a stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/blob_out.h"
#include "tools/cli.h"
#include "tools/serve/registry_meta.h"
#include "tools/serve/registry_gc.h"
#include "core/base/secmem.h"

#define IO_BUF (1u << 20)

enum { B_PUT, B_GET, B_STAT, B_VERIFY, B_RM, B_LS };

#define STORE_OPT                                                                                  \
    {                                                                                              \
        "store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."        \
    }

static const cli_opt put_opts[] = {
    STORE_OPT,
    {"digest", 0, CLI_STR, 0, "DIGEST",
     "Expected digest (sha256:<hex> or sha512:<hex>). If the content's digest differs, "
     "nothing is stored (exit 4)."},
    {"digest-algorithm", 0, CLI_STR, 0, "sha256|sha512",
     "Digest algorithm that addresses the blob (default: that of --digest, else sha256)."},
    CLI_OPT_END,
};

static const cli_opt get_opts[] = {
    STORE_OPT,
    {"output", 'o', CLI_STR, 0, "FILE",
     "Write to FILE (created 0600, or replaced) instead of stdout; \"-\" is stdout. FILE "
     "appears only when the whole range was read and authenticated."},
    {"range", 0, CLI_STR, 0, "START-END",
     "Only bytes START to END, inclusive, as in HTTP (bytes=START-END); START- reads to the "
     "end, -N the last N bytes. Only the chunks covering the range are decrypted."},
    {"fsync", 0, CLI_FLAG, 0, NULL,
     "Make FILE durable (fsync) before it gets its name. Without it FILE still appears "
     "whole or not at all to other processes, but a power loss soon after the get may "
     "leave it short or empty, as after cp."},
    CLI_OPT_END,
};

static const cli_opt digest_opts[] = {
    STORE_OPT,
    CLI_OPT_END,
};

static const cli_opt rm_opts[] = {
    STORE_OPT,
    {"force", 0, CLI_FLAG, 0, NULL,
     "Remove the blob even if registry repositories still reference it (their images then "
     "break), and without reading the registry's records."},
    CLI_OPT_END,
};

static const cli_opt ls_opts[] = {
    STORE_OPT,
    {"long", 'l', CLI_FLAG, 0, NULL,
     "Print each blob's header information (as `blob stat`) instead of its digest only."},
    CLI_OPT_END,
};

/* An operating-system failure, reported with the exit code of its errno. */
static int fail_sys(int errnum, const char *verb, const char *what)
{
    cmk_errbuf eb;

    cmk_errbuf_set(&eb, cmk_err_from_errno(errnum), "%s", strerror(errnum));
    return cli_fail(eb.code, &eb, CLI_HINT_NONE, "%s %s", verb, what);
}

static json_t *info_json(const cmk_blob_info *bi, int verified)
{
    json_t *j =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:o}", "digest", bi->digest, "size",
                  (json_int_t)bi->size, "storedSize", (json_int_t)bi->stored_size, "chunkSize",
                  (json_int_t)bi->chunk_size, "chunkCount", (json_int_t)bi->chunk_count, "dekId",
                  (json_int_t)bi->dek_id, "formatVersion", (int)bi->format_version, "modified",
                  cli_json_time(bi->mtime));

    if (j && verified && json_object_set_new(j, "verified", json_true()) != 0) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---- put ---- */

/* How long a pipe may stay empty before the put hands what it has sealed to the store. Not
 * at once: a fast writer empties a pipe between two of its writes all the time, and waiting
 * then for the chunks being sealed would take their overlap with reading away. */
#define PUT_LULL_MS 20

/* The input (a pipe, FIFO, socket or terminal) has nothing to read for PUT_LULL_MS. An error
 * of poll is left to the read that follows. */
static int input_lull(int fd)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r;

    do
        r = poll(&pf, 1, PUT_LULL_MS);
    while (r < 0 && errno == EINTR);
    return r == 0;
}

static int run_put(const cli_cmd *cmd, cli_args *a)
{
    const char *src = a->pos[0], *expect = cli_get(a, "digest");
    const char *alg = cli_get(a, "digest-algorithm");
    const char *src_name = strcmp(src, "-") == 0 ? "standard input" : src;
    char digest[CMK_DIGEST_MAX];
    unsigned char *buf = NULL;
    cmk_store *s = NULL;
    cmk_put *p = NULL;
    int fd = -1, ex, stream;
    struct stat st;
    cmk_err rc;

    (void)cmd;
    if (!alg && expect && strncmp(expect, "sha512:", 7) == 0)
        alg = "sha512";
    fd = strcmp(src, "-") == 0 ? STDIN_FILENO : open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail_sys(errno, "cannot open", src);
    /* Input that can pause (a pipe, a FIFO whose writer stops without closing it): the put's
     * chunks are handed to the store by this thread when it writes, so before waiting for
     * more input it hands over what is sealed. Else an s3:// put fed 20 MB and paused could
     * keep up to seven chunks (the slots in flight) and not start its upload while paused. */
    stream = fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode);
    buf = malloc(IO_BUF);
    if (!buf) {
        ex = fail_sys(ENOMEM, "cannot allocate", "the I/O buffer");
        goto out;
    }
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        goto out;
    rc = cmk_put_begin(s, alg, &p);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot start storing %s", src_name);
        goto out;
    }
    for (;;) {
        ssize_t n;
        if (stream && input_lull(fd) && (rc = cmk_put_drain(p)) != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot store %s", src_name);
            goto out;
        }
        n = read(fd, buf, IO_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ex = fail_sys(errno, "cannot read", src_name);
            goto out;
        }
        if (n == 0)
            break;
        rc = cmk_put_write(p, buf, (size_t)n);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot store %s", src_name);
            goto out;
        }
    }
    rc = cmk_put_commit(p, expect, digest);
    p = NULL; /* commit frees the handle whatever happens */
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot store %s", src_name);
        goto out;
    }
    ex = printf("%s\n", digest) < 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
out:
    cmk_put_abort(p);
    cmk_store_close(s);
    free(buf);
    if (fd > STDIN_FILENO)
        close(fd);
    return ex;
}

/* ---- get ---- */

/* The partial output file, removed if a signal ends the process mid-get. */
static char partial_path[4200];
static volatile sig_atomic_t partial_armed;

static void on_fatal_signal(int sig)
{
    if (partial_armed)
        unlink(partial_path);
    /* SA_RESETHAND restored the default action: die of the same signal. */
    raise(sig);
}

static int arm_partial_cleanup(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return -1;
    return 0;
}

/* "START-END", "START-", "-N" (last N bytes), optionally prefixed "bytes=". */
static int parse_range(const char *r, uint64_t *off, uint64_t *len, uint64_t *suffix)
{
    unsigned long long a, b;
    char *end;

    if (strncasecmp(r, "bytes=", 6) == 0)
        r += 6;
    *suffix = 0;
    if (r[0] == '-') {
        if (r[1] < '0' || r[1] > '9')
            return -1;
        errno = 0;
        b = strtoull(r + 1, &end, 10);
        if (errno || *end || b == 0)
            return -1;
        *suffix = b;
        return 0;
    }
    if (r[0] < '0' || r[0] > '9')
        return -1;
    errno = 0;
    a = strtoull(r, &end, 10);
    if (errno || *end != '-')
        return -1;
    *off = a;
    r = end + 1;
    if (!*r) {
        *len = CMK_TO_END;
        return 0;
    }
    if (r[0] < '0' || r[0] > '9')
        return -1;
    b = strtoull(r, &end, 10);
    if (errno || *end || b < a)
        return -1;
    *len = b - a >= UINT64_MAX - 1 ? CMK_TO_END : b - a + 1;
    return 0;
}

static int run_get(const cli_cmd *cmd, cli_args *a)
{
    const char *digest = a->pos[0], *out = cli_get(a, "output"), *range = cli_get(a, "range");
    uint64_t off = 0, len = CMK_TO_END, suffix = 0;
    int to_file = out && strcmp(out, "-") != 0, want_fsync = cli_isset(a, "fsync");
    const char *stream_name = "standard output";
    blob_out *bo = NULL;
    struct stat ost;
    char rnd[17];
    cmk_blob_info bi;
    cmk_errbuf eb = {0};
    cmk_store *s = NULL;
    cmk_get *g = NULL;
    int fd = -1, ex;
    cmk_err rc;

    if (range && parse_range(range, &off, &len, &suffix) != 0)
        return cli_usage_error(cmd,
                               "bad --range '%s': use START-END (END inclusive, END >= START), "
                               "START- or -N",
                               range);
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        goto out;
    if (suffix) {
        rc = cmk_stat(s, digest, &bi);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot read blob %s", digest);
            goto out;
        }
        off = bi.size > suffix ? bi.size - suffix : 0;
    }
    rc = cmk_get_open(s, digest, off, len, &g);
    if (rc != CMK_OK) {
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot read blob %s", digest);
        goto out;
    }
    fd = STDOUT_FILENO;
    if (to_file && stat(out, &ost) == 0 && !S_ISREG(ost.st_mode)) {
        /* A device, a FIFO or a socket (/dev/null, a named pipe): written as a stream. A
         * partial file renamed over it would replace the device node itself. */
        if (S_ISDIR(ost.st_mode)) {
            ex = fail_sys(EISDIR, "cannot write", out);
            goto out;
        }
        to_file = 0;
        fd = open(out, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            ex = fail_sys(errno, "cannot open", out);
            goto out;
        }
        stream_name = out;
    }
    if (to_file) {
        rc = cmk_random_hex(rnd, 8, &eb);
        if (rc == CMK_OK && snprintf(partial_path, sizeof(partial_path), "%s.partial-%s", out,
                                     rnd) >= (int)sizeof(partial_path))
            rc = cmk_errbuf_set(&eb, CMK_E_INVAL, "path too long");
        if (rc != CMK_OK) {
            ex = cli_fail(rc, &eb, CLI_HINT_NONE, "cannot write %s", out);
            goto out;
        }
        if (arm_partial_cleanup() != 0) {
            ex = fail_sys(errno, "cannot install signal handlers for", out);
            goto out;
        }
        /* Armed before the file exists: a signal can never leave it behind. */
        partial_armed = 1;
        fd = open(partial_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            partial_armed = 0;
            ex = fail_sys(errno, "cannot create", partial_path);
            goto out;
        }
    }
    /* The writes of one buffer overlap the decryption of the next (blob_out.h). */
    bo = blob_out_open(fd);
    if (!bo) {
        ex = fail_sys(errno, "cannot set up the output to", to_file ? out : stream_name);
        goto out;
    }
    for (;;) {
        unsigned char *p;
        size_t n, cap;

        if (!(p = blob_out_buf(bo, &cap))) {
            ex = fail_sys(errno, "cannot write", to_file ? partial_path : stream_name);
            goto out;
        }
        rc = cmk_get_read(g, p, cap, &n);
        if (rc != CMK_OK) {
            ex = cli_fail(rc, NULL, CLI_HINT_STORE, "cannot read blob %s", digest);
            goto out;
        }
        if (n == 0)
            break;
        if (blob_out_put(bo, n) != 0) {
            ex = fail_sys(errno, "cannot write", to_file ? partial_path : stream_name);
            goto out;
        }
    }
    if (blob_out_finish(bo) != 0) {
        ex = fail_sys(errno, "cannot write", to_file ? partial_path : stream_name);
        goto out;
    }
    if (to_file) {
        /* Asked to be durable before it gets its name: a crash then never shows FILE short. */
        if (want_fsync && fsync(fd) != 0) {
            ex = fail_sys(errno, "cannot write", partial_path);
            goto out;
        }
        if (close(fd) != 0) {
            fd = -1;
            ex = fail_sys(errno, "cannot write", partial_path);
            goto out;
        }
        fd = -1;
        if (rename(partial_path, out) != 0) {
            ex = fail_sys(errno, "cannot rename the output into", out);
            goto out;
        }
        partial_armed = 0;
    }
    ex = CLI_EXIT_OK;
out:
    blob_out_free(bo); /* before the fd closes: no write is left in flight on it */
    if (fd > STDOUT_FILENO)
        close(fd);
    if (partial_armed) {
        unlink(partial_path);
        partial_armed = 0;
    }
    cmk_get_close(g);
    cmk_store_close(s);
    return ex;
}

/* ---- stat, verify ---- */

static int run_digest_op(const cli_cmd *cmd, cli_args *a)
{
    const char *digest = a->pos[0];
    cmk_blob_info bi;
    cmk_store *s = NULL;
    cmk_err rc;
    int ex;

    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    rc = cmd->op == B_STAT ? cmk_stat(s, digest, &bi) : cmk_verify(s, digest, &bi);
    if (rc != CMK_OK)
        ex = cli_fail(rc, NULL, CLI_HINT_STORE, "%s %s", cmd->path, digest);
    else
        ex = cli_print_json(info_json(&bi, cmd->op == B_VERIFY));
    cmk_store_close(s);
    return ex;
}

/* ---- rm ---- */

/* Names at most 8 of repos (a JSON array of strings) in out: "a, b and 3 more". */
static void name_repos(const json_t *repos, char *out, size_t cap)
{
    size_t i, n = json_array_size(repos), len = 0;
    json_t *v;

    out[0] = '\0';
    json_array_foreach(repos, i, v)
    {
        if (i == 8) {
            snprintf(out + len, cap - len, " and %zu more", n - i);
            return;
        }
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? ", " : "", json_string_value(v));
        if (len >= cap)
            return;
    }
}

static int run_rm(const cli_cmd *cmd, cli_args *a)
{
    const char *digest = a->pos[0];
    char names[700];
    json_t *repos = NULL;
    cmk_errbuf eb = {0};
    cmk_store *s = NULL;
    int ex;
    cmk_err rc;

    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    /* Through the collection protocol (registry_gc.h): a server linking the blob meanwhile
     * either is seen by the check or wins (the rm fails busy). */
    rc = rgc_remove_blob(s, digest, cli_isset(a, "force"), &repos, &eb);
    if (rc == CMK_E_REFUSED && repos) {
        name_repos(repos, names, sizeof(names));
        cmk_errbuf_set(&eb, CMK_E_REFUSED,
                       "registry repositories still reference it: %s. Removing it would "
                       "break their images; delete it through the registry (DELETE of "
                       "the manifests and blob links, then `cmkstore registry gc`), or pass "
                       "--force",
                       names);
    }
    if (rc != CMK_OK)
        ex = cli_fail(rc, &eb, rc == CMK_E_REFUSED ? CLI_HINT_NONE : CLI_HINT_STORE, "%s %s",
                      cmd->path, digest);
    json_decref(repos);
    cmk_store_close(s);
    return ex;
}

/* ---- ls ---- */

typedef struct digest_list {
    char **v;
    size_t n, cap;
    int oom;
} digest_list;

static int collect_digest(const char *digest, void *arg)
{
    digest_list *l = arg;
    char *copy;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            l->oom = 1;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    copy = strdup(digest);
    if (!copy) {
        l->oom = 1;
        return 1;
    }
    l->v[l->n++] = copy;
    return 0;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static int run_ls(const cli_cmd *cmd, cli_args *a)
{
    int longfmt = (int)cli_num(a, "long", 0), ex;
    digest_list l = {0};
    cmk_err rc, first = CMK_OK;
    cmk_blob_info bi;
    cmk_store *s = NULL;
    json_t *arr = NULL, *item;

    (void)cmd;
    ex = cli_open_store(a, &s);
    if (ex != CLI_EXIT_OK)
        return ex;
    rc = cmk_list(s, collect_digest, &l);
    if (rc != CMK_OK || l.oom) {
        ex = l.oom ? fail_sys(ENOMEM, "cannot list", cli_get(a, "store"))
                   : cli_fail(rc, NULL, CLI_HINT_STORE, "cannot list %s", cli_get(a, "store"));
        goto out;
    }
    if (l.n > 1)
        qsort(l.v, l.n, sizeof(*l.v), cmp_str);
    arr = json_array();
    for (size_t i = 0; arr && i < l.n; i++) {
        if (!longfmt) {
            item = json_string(l.v[i]);
        } else if ((rc = cmk_stat(s, l.v[i], &bi)) == CMK_OK) {
            item = info_json(&bi, 0);
        } else {
            /* One bad blob does not hide the others; the exit code still reports it. */
            cli_fail(rc, NULL, CLI_HINT_STORE, "blob stat %s", l.v[i]);
            if (first == CMK_OK)
                first = rc;
            item = json_pack("{s:s, s:s, s:s}", "digest", l.v[i], "error", cmk_errname(rc),
                             "reason", cmk_errmsg());
        }
        if (!item || json_array_append_new(arr, item) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    ex = cli_print_json(arr);
    if (ex == CLI_EXIT_OK && first != CMK_OK)
        ex = cli_exit_code(first);
out:
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    cmk_store_close(s);
    return ex;
}

const cli_cmd cli_blob_cmds[] = {
    {.path = "blob put",
     .summary = "Store a blob from a file or stdin; prints its digest",
     .description = "Streams FILE (or standard input for \"-\") into the store, compressing and "
                    "sealing it chunk by chunk, and prints the blob's digest. The blob becomes "
                    "visible atomically when complete; an interrupted put leaves nothing. "
                    "Putting a blob that is already stored checks the stored copy: an intact "
                    "one is kept, a damaged one is replaced by the new copy.",
     .opts = put_opts,
     .pos_usage = "FILE|-",
     .min_pos = 1,
     .max_pos = 1,
     .example = "cmkstore blob put --store ./registry layer.tar.gz\n"
                "curl -s URL | cmkstore blob put --store ./registry --digest sha256:<hex> -",
     .run = run_put,
     .op = B_PUT},
    {.path = "blob get",
     .summary = "Read a blob (or a byte range of it) to stdout or a file",
     .description = "Decrypts and writes the blob, or the byte range asked for, to standard "
                    "output or FILE. Every byte written has been authenticated; a damaged blob "
                    "fails with exit 4 (with -o nothing is written at all).",
     .opts = get_opts,
     .pos_usage = "DIGEST",
     .min_pos = 1,
     .max_pos = 1,
     .example = "cmkstore blob get --store ./registry sha256:<hex> -o layer.tar.gz\n"
                "cmkstore blob get --store ./registry sha256:<hex> --range 0-1023 | xxd | head",
     .run = run_get,
     .op = B_GET},
    {.path = "blob stat",
     .summary = "Show a blob's size and layout",
     .description = "Prints the blob's authenticated header information as JSON (size, stored "
                    "size, chunk size and count, data key id, format version) without "
                    "decrypting its chunks.",
     .opts = digest_opts,
     .pos_usage = "DIGEST",
     .min_pos = 1,
     .max_pos = 1,
     .example = "cmkstore blob stat --store ./registry sha256:<hex>",
     .run = run_digest_op,
     .op = B_STAT},
    {.path = "blob verify",
     .summary = "Decrypt every chunk and check the digest",
     .description = "Authenticates and decrypts every chunk of the blob and recomputes its "
                    "digest. Exit 0 if intact, 4 if it was damaged or altered.",
     .opts = digest_opts,
     .pos_usage = "DIGEST",
     .min_pos = 1,
     .max_pos = 1,
     .example = "cmkstore blob verify --store ./registry sha256:<hex>",
     .run = run_digest_op,
     .op = B_VERIFY},
    {.path = "blob rm",
     .summary = "Remove a blob",
     .description = "Removes the blob from the store (durably). A blob that registry "
                    "repositories still reference (a link, a manifest, or a manifest naming "
                    "it) is not removed: the command fails with exit 6 and names those "
                    "repositories, unless --force is given. Safe beside running `cmkstore "
                    "serve` front-ends: it goes through the garbage collector's protocol (a "
                    "push linking the blob meanwhile wins), and fails busy (exit 1) while "
                    "`cmkstore registry gc` runs.",
     .opts = rm_opts,
     .pos_usage = "DIGEST",
     .min_pos = 1,
     .max_pos = 1,
     .example = "cmkstore blob rm --store ./registry sha256:<hex>",
     .run = run_rm,
     .op = B_RM},
    {.path = "blob ls",
     .summary = "List the blobs of a store",
     .description = "Prints the digests of the store's blobs as a sorted JSON array (with "
                    "--long, their header information). Nothing is decrypted without --long.",
     .opts = ls_opts,
     .example = "cmkstore blob ls --store ./registry",
     .run = run_ls,
     .op = B_LS},
    {.path = NULL},
};
