/* util.c — helpers shared by the cmkbench modules (see bench.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

static double t_start;

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_sys_busy(void)
{
    unsigned long long v[10] = {0};
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (!f)
        return -1;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8 || hz <= 0)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
}

double bench_usage_bg(const bench_usage *u)
{
    double bg;

    if (u->wall <= 0 || u->sysbusy < 0)
        return 0;
    bg = (u->sysbusy - u->cpu) / u->wall;
    return bg > 0 ? bg : 0;
}

double bench_wait_quiet(double max_s)
{
    double t0 = bench_now(), bg = 0;

    for (;;) {
        bench_usage a, b, d;
        bench_usage_get(&a);
        sleep(3);
        bench_usage_get(&b);
        bench_usage_diff(&a, &b, &d);
        bg = bench_usage_bg(&d);
        if (bg < 0.1 || bench_now() - t0 >= max_s)
            return bg;
        bench_log("waiting for a quiet machine: other processes use %.2f cores", bg);
    }
}

void bench_usage_get(bench_usage *u)
{
    struct rusage ru;

    memset(u, 0, sizeof(*u));
    u->wall = bench_now();
    u->sysbusy = bench_sys_busy();
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    u->cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    u->minflt = ru.ru_minflt;
    u->majflt = ru.ru_majflt;
    u->vcsw = ru.ru_nvcsw;
    u->ivcsw = ru.ru_nivcsw;
}

void bench_usage_add(bench_usage *sum, const bench_usage *u)
{
    sum->wall += u->wall;
    sum->cpu += u->cpu;
    sum->sysbusy = (sum->sysbusy < 0 || u->sysbusy < 0) ? -1 : sum->sysbusy + u->sysbusy;
    sum->minflt += u->minflt;
    sum->majflt += u->majflt;
    sum->vcsw += u->vcsw;
    sum->ivcsw += u->ivcsw;
}

void bench_usage_diff(const bench_usage *a, const bench_usage *b, bench_usage *out)
{
    out->wall = b->wall - a->wall;
    out->cpu = b->cpu - a->cpu;
    out->sysbusy = (a->sysbusy < 0 || b->sysbusy < 0) ? -1 : b->sysbusy - a->sysbusy;
    out->minflt = b->minflt - a->minflt;
    out->majflt = b->majflt - a->majflt;
    out->vcsw = b->vcsw - a->vcsw;
    out->ivcsw = b->ivcsw - a->ivcsw;
}

void *bench_alloc(size_t n)
{
    void *p;

    if (n == 0)
        n = 1;
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_die("cannot map %zu bytes: %s", n, strerror(errno));
    /* Huge pages make preparing big inputs several times cheaper where page faults are slow
     * (VMs); the store never sees this memory except as its caller's buffer. */
    if (n >= (4u << 20))
        (void)madvise(p, n, MADV_HUGEPAGE);
    return p;
}

void bench_free(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

static __attribute__((format(printf, 2, 0))) void vlog(const char *prefix, const char *fmt,
                                                       va_list ap)
{
    if (t_start == 0)
        t_start = bench_now();
    fprintf(stderr, "[%7.1fs] %s", bench_now() - t_start, prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void bench_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("cmkbench: error: ", fmt, ap);
    va_end(ap);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    double idx, frac;
    size_t lo;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    idx = p / 100.0 * (double)(n - 1);
    lo = (size_t)idx;
    frac = idx - (double)lo;
    if (lo + 1 >= n)
        return v[n - 1];
    return v[lo] + frac * (v[lo + 1] - v[lo]);
}

double bench_median(double *v, size_t n)
{
    return bench_percentile(v, n, 50);
}

double bench_min(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

double bench_max(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(p) != 0 && errno != ENOENT)
        fprintf(stderr, "cmkbench: cannot remove %s: %s\n", p, strerror(errno));
    return 0;
}

int bench_rmtree(const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

long bench_rss_kib(void)
{
    long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2)
        pages_rss = -1;
    fclose(f);
    return pages_rss < 0 ? -1 : pages_rss * (sysconf(_SC_PAGESIZE) / 1024);
}

void bench_cleanup(cmk_err rc)
{
    if (rc != CMK_OK)
        bench_log("cleanup failed (the figures stand): %s: %s", cmk_errname(rc), cmk_errmsg());
}
