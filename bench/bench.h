/*
 * bench.h — helpers shared by the cmkbench modules: clocks, resource usage, big buffers,
 * progress output, files.
 */
#ifndef CMKBENCH_BENCH_H
#define CMKBENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore.h"

#define MiB (1024ull * 1024ull)
/* Rates are reported in decimal units (MB/s = 10^6 bytes/s), as disks and targets are. */
#define MB 1e6

/* Monotonic seconds. */
double bench_now(void);

/* Resource usage of the whole process (all threads). */
typedef struct bench_usage {
    double wall, cpu; /* seconds: monotonic clock, user + system */
    double sysbusy;   /* seconds of busy CPU machine-wide (/proc/stat), all processes */
    long minflt, majflt;
    long vcsw, ivcsw;
} bench_usage;

void bench_usage_get(bench_usage *u);
/* Busy CPU seconds of the whole machine so far (/proc/stat); -1 if unknown. */
double bench_sys_busy(void);
/* Cores' worth of CPU other processes used during u (machine busy minus ours). */
double bench_usage_bg(const bench_usage *u);
/* Waits up to max_s seconds for the machine to be quiet (other processes using less than
 * 0.1 core over 3 s); returns the background load seen last (cores). */
double bench_wait_quiet(double max_s);
/* b - a, field by field. */
void bench_usage_diff(const bench_usage *a, const bench_usage *b, bench_usage *out);
/* sum += u, field by field (sysbusy stays -1 once either is unknown). */
void bench_usage_add(bench_usage *sum, const bench_usage *u);

/* Page-aligned anonymous memory, released with bench_free (munmap), so a phase that is done
 * gives its memory back and a forked RSS measurement starts lean. Exits on failure. */
void *bench_alloc(size_t n);
void bench_free(void *p, size_t n);

/* Progress lines on stderr, prefixed with the elapsed time. */
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the message and exits with status 1. */
/* A cleanup step whose failure does not void the measurement: logged, not fatal. */
void bench_cleanup(cmk_err rc);
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Median / min / max of n values (n >= 1; the array is sorted in place). */
double bench_median(double *v, size_t n);
double bench_min(const double *v, size_t n);
double bench_max(const double *v, size_t n);
/* Percentile p (0..100) of n values, sorted in place. */
double bench_percentile(double *v, size_t n, double p);

/* Removes a directory tree (nftw). 0 or -1. */
int bench_rmtree(const char *path);
/* Current resident set size of this process in KiB (from /proc/self/statm). */
long bench_rss_kib(void);

#endif
