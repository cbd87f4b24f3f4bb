/*
 * cmd_events.c — `cmkstore events`: prints a store's event log (events.log, JSON lines:
 * store.created, key.rotated, key.accessLost, key.accessRestored, operation.refused, ...).
 *
 * The log is read as a file: no key access is needed, so it can be read while the key is
 * revoked, which is when it matters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"

static const cli_opt events_opts[] = {
    {"store", 0, CLI_STR, 1, "DIR", "The store: its directory, or s3://BUCKET[/PREFIX]."},
    {"type", 0, CLI_STR, 0, "PREFIX",
     "Only events whose type starts with PREFIX (key.rotated, key., operation.refused...)."},
    {"follow", 'f', CLI_FLAG, 0, NULL,
     "Keep printing events as they are appended, until interrupted (SIGINT or SIGTERM)."},
    CLI_OPT_END,
};

static volatile sig_atomic_t events_stop;

static void on_signal(int sig)
{
    (void)sig;
    events_stop = 1;
}

/* Prints one complete line if it passes the --type filter. A line that is not a JSON object
 * (a log damaged by hand) is printed as it is: the log is the record, not ours to hide. */
static int emit(const char *line, size_t len, const char *prefix)
{
    if (prefix) {
        json_t *j = json_loadb(line, len, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "event"));
        int keep = type && strncmp(type, prefix, strlen(prefix)) == 0;
        json_decref(j);
        if (!keep)
            return 0;
    }
    if (fwrite(line, 1, len, stdout) != len || fputc('\n', stdout) == EOF)
        return -1;
    return 0;
}

/* Reads what fd has from its offset on, printing complete lines; a partial last line stays
 * in *buf for the next call (a writer appends whole lines, but one may be read mid-write). */
static int drain(int fd, char **buf, size_t *len, size_t *cap, const char *prefix)
{
    char chunk[65536];
    ssize_t r;

    while ((r = read(fd, chunk, sizeof(chunk))) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (*len + (size_t)r > *cap) {
            size_t ncap = (*cap ? *cap * 2 : 65536) + (size_t)r;
            char *nb = realloc(*buf, ncap);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = ncap;
        }
        memcpy(*buf + *len, chunk, (size_t)r);
        *len += (size_t)r;
        size_t start = 0;
        for (size_t i = 0; i < *len; i++) {
            if ((*buf)[i] != '\n')
                continue;
            if (i > start && emit(*buf + start, i - start, prefix) != 0)
                return -1;
            start = i + 1;
        }
        memmove(*buf, *buf + start, *len - start);
        *len -= start;
    }
    return fflush(stdout) == 0 ? 0 : -1;
}

struct remote_ctx {
    const char *prefix;
    int failed;
};

static int remote_line(const char *line, size_t len, void *arg)
{
    struct remote_ctx *c = arg;

    if (emit(line, len, c->prefix) != 0) {
        c->failed = 1;
        return 1;
    }
    return 0;
}

/* A store in object storage: the events are objects, read through the library (one listing
 * per poll; --follow polls every second). */
static int run_remote(const char *store, const char *prefix, int follow)
{
    char cursor[CMK_EVENTS_CURSOR_MAX] = "";
    struct remote_ctx c = {prefix, 0};
    struct timespec nap = {1, 0};
    struct sigaction sa;

    if (follow) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    for (;;) {
        cmk_err rc = cmk_store_events_read(store, cursor, sizeof(cursor), remote_line, &c);
        if (c.failed || fflush(stdout) != 0) {
            fprintf(stderr, "cmkstore: error: cannot print the events: %s\n", strerror(errno));
            return CLI_EXIT_FAILURE;
        }
        if (rc == CMK_E_NOT_FOUND) {
            int ex = cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the events of %s", store);
            cli_hint("create one with `cmkstore create --store %s`", store);
            return ex;
        }
        if (rc != CMK_OK)
            return cli_fail(rc, NULL, CLI_HINT_NONE, "cannot read the events of %s", store);
        if (!follow || events_stop)
            return CLI_EXIT_OK;
        nanosleep(&nap, NULL);
        if (events_stop)
            return CLI_EXIT_OK;
    }
}

static int run_events(const cli_cmd *cmd, cli_args *a)
{
    const char *dir = cli_get(a, "store"), *prefix = cli_get(a, "type");
    int follow = cli_isset(a, "follow"), fd = -1, ex = CLI_EXIT_OK;
    char path[4200], *buf = NULL;
    size_t len = 0, cap = 0;
    struct timespec nap = {0, 200 * 1000 * 1000};
    struct sigaction sa;
    struct stat st;

    (void)cmd;
    if (strncmp(dir, "s3://", 5) == 0)
        return run_remote(dir, prefix, follow);
    snprintf(path, sizeof(path), "%s/store.json", dir);
    if (stat(path, &st) != 0) {
        fprintf(stderr,
                "cmkstore: error: no store at %s (no store.json); create one with `cmkstore "
                "create --store %s`\n",
                dir, dir);
        return CLI_EXIT_NOT_FOUND;
    }
    if (follow) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    snprintf(path, sizeof(path), "%s/events.log", dir);
    for (;;) {
        if (fd < 0) {
            /* A store's files are data: a link planted as events.log is not followed. */
            fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
            if (fd < 0 && errno == ELOOP) {
                fprintf(stderr,
                        "cmkstore: error: %s is a symbolic link or lies behind one: refused "
                        "(cmkstore never follows links inside a store)\n",
                        path);
                ex = CLI_EXIT_REFUSED;
                break;
            }
            if (fd < 0 && errno != ENOENT) {
                fprintf(stderr, "cmkstore: error: cannot read %s: %s\n", path, strerror(errno));
                ex = CLI_EXIT_FAILURE;
                break;
            }
        }
        if (fd >= 0 && drain(fd, &buf, &len, &cap, prefix) != 0) {
            fprintf(stderr, "cmkstore: error: cannot print %s: %s\n", path, strerror(errno));
            ex = CLI_EXIT_FAILURE;
            break;
        }
        if (!follow || events_stop)
            break;
        nanosleep(&nap, NULL);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return ex;
}

const cli_cmd cli_events_cmds[] = {
    {.path = "events",
     .summary = "Print a store's key and lifecycle events (events.log)",
     .description =
         "Prints the store's event log, one JSON object per line, oldest first: "
         "store.created, key.rotated (from and to key versions, trigger manual or automatic), "
         "key.rotationFailed, key.accessLost and key.accessRestored (key, identity, reason), "
         "key.unreachable, dek.rotated, identity.assigned, identity.removed, policy.updated "
         "and operation.refused (operation, reason). Each has \"time\" and \"event\". Key "
         "access lost and restored are recorded by a process that holds the store open when "
         "its key check sees the change (a server, or `cmkstore encryption watch`); a "
         "short-lived command that finds the key revoked at open fails with exit 5 instead. "
         "Needs no key access. With --follow, keeps printing new events until interrupted.",
     .opts = events_opts,
     .example = "cmkstore events --store ./registry\n"
                "cmkstore events --store ./registry --type key. --follow",
     .run = run_events},
    {.path = NULL},
};
