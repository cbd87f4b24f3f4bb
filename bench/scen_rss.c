/*
 * scen_rss.c — peak memory of a big put and get. Each runs in a forked child that streams
 * the blob through a 1 MiB buffer (generated on the fly, never held whole); the parent reads
 * the child's peak RSS from wait4's rusage. Memory must stay proportional to chunk size x
 * queue depth, not to the blob: the target is < 64 MiB for 4 GiB.
 *
 * A forked child starts with the parent's resident pages mapped, and the kernel counts them
 * in its peak; the parent therefore drops its big buffers first (everything large in
 * cmkbench is mmap'd and unmapped when done) and the baseline at fork is reported.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/cmkbench.h"

#define BUFSZ (1u << 20)
/* The child's own generator pool: small, and counted in its RSS like any caller buffer. */
#define CHILD_POOL (4u << 20)

typedef struct child_msg {
    int ok;
    double seconds;
    long hwm_kib; /* VmHWM the child saw itself, after resetting it at start */
    char digest[CMK_DIGEST_MAX];
    char err[256];
} child_msg;

static long status_kib(const char *field)
{
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    FILE *f = fopen("/proc/self/status", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static void reset_hwm(void)
{
    /* "5" resets the peak RSS to the current RSS (proc(5), clear_refs). */
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) {
            /* Older kernels: the peak then includes everything since fork. */
        }
        close(fd);
    }
}

static void child_work(bench_ctx *c, const char *store, int get, const char *digest, uint64_t size,
                       child_msg *m)
{
    uint8_t *buf;
    cmk_store *s = NULL;
    double t0;

    reset_hwm();
    buf = bench_alloc(BUFSZ);
    if (env_store_open(c, store, c->o.threads, NULL, &s) != CMK_OK) {
        snprintf(m->err, sizeof(m->err), "open: %s", cmk_errmsg());
        return;
    }
    t0 = bench_now();
    if (!get) {
        cmk_put *p = NULL;
        cmk_err rc;
        if (dg_init(CHILD_POOL) != 0) {
            snprintf(m->err, sizeof(m->err), "generator pool");
            cmk_store_close(s);
            return;
        }
        rc = cmk_put_begin(s, NULL, &p);
        for (uint64_t off = 0; rc == CMK_OK && off < size; off += BUFSZ) {
            size_t len = size - off < BUFSZ ? (size_t)(size - off) : BUFSZ;
            dg_fill(DG_TAR, 4242, off, buf, len);
            rc = cmk_put_write(p, buf, len);
        }
        if (rc == CMK_OK)
            rc = cmk_put_commit(p, NULL, m->digest);
        else
            cmk_put_abort(p);
        m->ok = rc == CMK_OK;
        if (rc != CMK_OK)
            snprintf(m->err, sizeof(m->err), "put: %s", cmk_errmsg());
    } else {
        int64_t got = bench_get_all(s, digest, buf, BUFSZ);
        m->ok = got == (int64_t)size;
        if (!m->ok)
            snprintf(m->err, sizeof(m->err), "get returned %lld bytes", (long long)got);
        snprintf(m->digest, sizeof(m->digest), "%s", digest);
    }
    m->seconds = bench_now() - t0;
    cmk_store_close(s);
    m->hwm_kib = status_kib("VmHWM");
}

/* Runs one measurement in a child; returns its peak RSS (KiB) from wait4, or -1. */
static long measure(bench_ctx *c, const char *store, int get, const char *digest, uint64_t size,
                    child_msg *m)
{
    struct rusage ru;
    int fds[2], status = 0;
    pid_t pid;

    memset(m, 0, sizeof(*m));
    fflush(NULL);
    if (pipe(fds) != 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        child_msg cm;
        memset(&cm, 0, sizeof(cm));
        close(fds[0]);
        child_work(c, store, get, digest, size, &cm);
        if (write(fds[1], &cm, sizeof(cm)) != (ssize_t)sizeof(cm))
            _exit(3);
        _exit(cm.ok ? 0 : 2);
    }
    close(fds[1]);
    ssize_t r;
    do {
        r = read(fds[0], m, sizeof(*m));
    } while (r < 0 && errno == EINTR);
    close(fds[0]);
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR)
            return -1;
    if (r != (ssize_t)sizeof(*m) || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !m->ok) {
        bench_log("RSS child failed: %s", r == (ssize_t)sizeof(*m) ? m->err : "no report");
        return -1;
    }
    return ru.ru_maxrss;
}

void run_rss(bench_ctx *c)
{
    char store[4096], name[64], digest[CMK_DIGEST_MAX];
    uint64_t size = c->o.rss_size;
    long base, peak;
    child_msg m;
    row *r;

    env_store_create(c, "rss", c->o.chunk, store);
    /* Lean parent: the child inherits (and is charged for) whatever is resident here. */
    dg_release();
    base = bench_rss_kib();
    for (int get = 0; get <= 1; get++) {
        bench_log("rss: %s of %llu MiB in a child process", get ? "get" : "put",
                  (unsigned long long)(size >> 20));
        peak = measure(c, store, get, digest, size, &m);
        if (peak < 0) {
            snprintf(name, sizeof(name), "%s %llu MiB peak RSS", get ? "get" : "put",
                     (unsigned long long)(size >> 20));
            r = report_add(c, "rss", name, "auto", "MiB");
            r->v = V_SKIPPED;
            snprintf(r->note, sizeof(r->note), "child failed: %s", m.err);
            if (!get)
                break;
            continue;
        }
        if (!get)
            snprintf(digest, sizeof(digest), "%s", m.digest);
        snprintf(name, sizeof(name), "%s %llu MiB peak RSS", get ? "get" : "put",
                 (unsigned long long)(size >> 20));
        r = report_add(c, "rss", name, "auto", "MiB");
        r->value = r->vmin = r->vmax = (double)peak / 1024.0;
        r->n = 1;
        snprintf(r->ref_name, sizeof(r->ref_name), "under 64 MiB");
        r->ref = 64;
        r->goal = 1.0;
        r->lower_better = 1;
        snprintf(r->note, sizeof(r->note),
                 "wait4 ru_maxrss; %.1f MiB inherited at fork, child VmHWM after reset %.1f "
                 "MiB; %.0f MB/s",
                 (double)base / 1024.0, (double)m.hwm_kib / 1024.0, (double)size / m.seconds / MB);
        r->extra = json_pack("{s:I, s:f, s:f, s:f, s:I}", "bytes", (json_int_t)size,
                             "parent_rss_at_fork_MiB", (double)base / 1024.0,
                             "child_vmhwm_after_reset_MiB", (double)m.hwm_kib / 1024.0, "seconds",
                             m.seconds, "ru_maxrss_KiB", (json_int_t)peak);
        report_judge(r, 0);
        bench_log("rss: %s peak %.1f MiB (baseline %.1f MiB), %.0f MB/s", get ? "get" : "put",
                  (double)peak / 1024.0, (double)base / 1024.0, (double)size / m.seconds / MB);
    }
    if (!c->o.keep)
        bench_rmtree(store);
}
