/*
 * cmkbench.h — the benchmark's shared state: options, the store environment (home, vault,
 * identity, key), measured ceilings and the result rows every scenario adds to.
 */
#ifndef CMKBENCH_H
#define CMKBENCH_H

#include <jansson.h>
#include <stdint.h>

#include "bench/bench.h"
#include "bench/ceilings.h"
#include "cmkstore.h"
#include "bench/datagen.h"

typedef struct bench_opts {
    const char *dir;  /* parent of the run's data directory */
    uint64_t size;    /* bytes per big-blob data shape */
    uint64_t sample;  /* bytes the CPU ceilings are measured on */
    unsigned reps;    /* repetitions of each big-blob measurement */
    unsigned threads; /* store worker threads (0: online cores) */
    unsigned depth;   /* chunks in flight per stream (0: the store's default) */
    uint32_t chunk;   /* chunk size of the main stores */
    const char *engines[2];
    unsigned nengines;
    const char *file;  /* extra file to benchmark (put/get) */
    const char *store; /* --store s3://BUCKET[/PREFIX]: the object-store run (scen_s3.c) */
    const char *json_out, *txt_out, *svg_out;
    uint64_t rss_size;    /* bytes of the peak-RSS put/get */
    unsigned small_count; /* small blobs per small-blob run */
    unsigned rot_blobs[3];
    uint64_t rot_bytes; /* total plaintext of the largest rotation store */
    uint64_t sweep_size;
    int quick, keep, no_cold;
    double wait_quiet; /* seconds to wait for a quiet machine before starting */
    char cmdline[2048];
} bench_opts;

/* One measured figure, with what it is judged against. */
typedef enum verdict { V_NONE = 0, V_MET, V_MISSED, V_NOISE, V_SKIPPED } verdict;

#define ROW_PAIRED_MAX 8

typedef struct row {
    char section[16]; /* put, get, small, sweep, rotation, open, rss, ... */
    char name[64];
    char engine[8];
    char unit[12]; /* "MB/s", "blobs/s", "ms", "MiB" */
    double value, vmin, vmax;
    int n;             /* repetitions behind value (median) */
    double cores;      /* CPU seconds per wall second during the measurement */
    double flt_per_mb; /* minor page faults per MB of plaintext */
    double bg;         /* cores used by everything else meanwhile (other processes, kernel
                          writeback): a noisy neighbour shows here */
    char ref_name[48];
    double ref;       /* what the target is judged against (ceiling, bound or target) */
    double ceiling;   /* the machine ceiling for the plot (may differ from ref); 0: none */
    double goal;      /* required value/ref (or value/target); 0: informational */
    int lower_better; /* for latencies and memory */
    int out_of_reach; /* the CPU work alone measured below goal x ref: the target cannot be met */
    verdict v;
    char note[512];
    json_t *extra; /* owned */
    /* Timings taken in step with the other engine's row of the same name (its k-th beside
     * this k-th, in alternating order): the io_uring / sync comparison pairs them. */
    double paired[ROW_PAIRED_MAX];
    int npaired;
} row;

typedef struct bench_ctx {
    bench_opts o;
    char root[4096]; /* <dir>/cmkbench.XXXXXX: everything this run writes */
    char home[4096];
    char identity[CMK_ID_MAX];
    char vkid[CMK_ID_MAX];
    char vault[64];
    int env_ready;
    unsigned cores;
    int can_drop;

    ceil_mem mem;
    int have_mem;
    ceil_disk disk;
    int have_disk;
    ceil_small small_ceil[4];
    unsigned nsmall_ceil;

    row *rows;
    size_t nrows, caprows;
    json_t *json; /* extra sections: meta, ceilings, datasets */
    double t0;
} bench_ctx;

/* ---- environment (env.c) ---- */
/* Creates <dir>/cmkbench.XXXXXX with a home, a local vault, an identity with get / wrapKey /
 * unwrapKey on an RSA-2048 key. Dies on failure. */
void env_setup(bench_ctx *c);
/* Removes the run directory (unless --keep). */
void env_teardown(bench_ctx *c);
/* Creates store <root>/<name> with the customer-managed key; path receives its directory. */
void env_store_create(bench_ctx *c, const char *name, uint32_t chunk, char path[4096]);
/* Opens a store; engine "uring", "sync" or NULL (auto). Returns the cmk_err. */
cmk_err env_store_open(bench_ctx *c, const char *path, unsigned threads, const char *engine,
                       cmk_store **out);
/* Makes a new version of the key; vkid receives its versioned identifier. */
void env_new_key_version(bench_ctx *c, char vkid[CMK_ID_MAX]);

/* ---- results (report.c) ---- */
row *report_add(bench_ctx *c, const char *section, const char *name, const char *engine,
                const char *unit);
/* Sets the verdict of r from value, ref and goal (noise: within `noise` below the goal). */
void report_judge(row *r, double noise);
/* Gives r the rates v[0..n) taken in step with the other engine's row of the same name (its
 * k-th beside this k-th), so the io_uring / sync comparison pairs them; at most
 * ROW_PAIRED_MAX are kept. */
void report_set_pairs(row *r, const double *v, unsigned n);
void report_print(bench_ctx *c, FILE *f);
/* Writes JSON, text and SVG as configured; returns 0 or -1. */
int report_write(bench_ctx *c);
void report_free(bench_ctx *c);
/* The ceilings and data sets as JSON, kept in c->json. */
void report_set(bench_ctx *c, const char *key, json_t *val);

/* ---- scenarios ---- */
/* Memory and sequential disk ceilings (the disk on n bytes of `bytes`). */
void run_ceilings_common(bench_ctx *c, const uint8_t *bytes, size_t n);
/* CPU ceilings on one data set, added as rows; out may be NULL. */
void run_cpu_ceilings(bench_ctx *c, const char *label, const uint8_t *data, size_t n,
                      ceil_cpu *out);
/* Put and get throughput of one data set (buffer of n bytes, writable: the first bytes are
 * stamped per repetition so every put is a new blob). */
void run_bigblob(bench_ctx *c, const char *label, uint8_t *data, size_t n, int do_put, int do_get);
void run_small(bench_ctx *c);
/* The durable 4 KiB file ceilings at 1, 4 and 16 threads. */
void run_small_ceilings(bench_ctx *c);
void run_sweep(bench_ctx *c, uint8_t *tar, uint8_t *rnd, size_t n);
void run_rotation(bench_ctx *c);
void run_rss(bench_ctx *c);
/* The run on an S3 store (--store s3://...): put/get, 4 KiB and CPU ceilings against raw
 * PUT/GET of the same bytes to the same bucket; cmd is all, ceilings, put, get or small
 * (dies for the others), shape the data set of put/get ("tar" or "random"). */
void run_s3(bench_ctx *c, const char *cmd, const char *shape);
/* Cross-scenario verdicts (io_uring vs sync, target summary). */
void run_summary(bench_ctx *c);

/* Puts n bytes from buf in writes of wsize; digest receives the digest; *commit_s (may be
 * NULL) the seconds cmk_put_commit took (the tail the pipeline does not overlap: last chunks,
 * fsync, publish). 0 or -1 (the error is logged). */
int bench_put_buf(cmk_store *s, const uint8_t *buf, size_t n, size_t wsize,
                  char digest[CMK_DIGEST_MAX], double *commit_s);
/* Reads the whole blob in reads of rsize into a scratch buffer; bytes read or -1. */
int64_t bench_get_all(cmk_store *s, const char *digest, uint8_t *scratch, size_t rsize);
/* A data set of n bytes of `shape` from `seed`, generated in memory (bench_alloc'd: the
 * caller bench_frees it). */
uint8_t *bench_gen_data(dg_shape shape, uint64_t seed, size_t n);

#endif
