/*
 * scen_sweep.c — put and get throughput across chunk sizes (64 KiB .. 16 MiB) and worker
 * thread counts, on the compressible and the incompressible data.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench/cmkbench.h"

#define WSIZE (1u << 20)

static void sweep_one(bench_ctx *c, const char *store, const char *label, uint8_t *data, size_t n,
                      uint32_t chunk, unsigned threads, uint8_t *scratch, uint64_t seed)
{
    char name[64], dg[CMK_DIGEST_MAX];
    bench_usage a, b, dp, dgt;
    cmk_store *s = NULL;
    uint64_t x = dg_mix(seed);
    row *r;

    if (env_store_open(c, store, threads, NULL, &s) != CMK_OK)
        return;
    memcpy(data, &x, 8);
    sync();
    bench_usage_get(&a);
    if (bench_put_buf(s, data, n, WSIZE, dg, NULL) != 0) {
        cmk_store_close(s);
        return;
    }
    bench_usage_get(&b);
    bench_usage_diff(&a, &b, &dp);
    (void)bench_get_all(s, dg, scratch, WSIZE); /* warm: the put wrote with O_DIRECT */
    bench_usage_get(&a);
    int64_t got = bench_get_all(s, dg, scratch, WSIZE);
    bench_usage_get(&b);
    bench_usage_diff(&a, &b, &dgt);
    bench_cleanup(cmk_delete(s, dg));
    cmk_store_close(s);

    snprintf(name, sizeof(name), "put %s %uK x%u", label, chunk >> 10, threads);
    r = report_add(c, "sweep", name, "auto", "MB/s");
    r->value = r->vmin = r->vmax = (double)n / dp.wall / MB;
    r->n = 1;
    r->cores = dp.cpu / dp.wall;
    r->bg = bench_usage_bg(&dp);
    r->flt_per_mb = (double)dp.minflt / ((double)n / MB);
    r->extra = json_pack("{s:s, s:s, s:i, s:i}", "op", "put", "data", label, "chunk_KiB",
                         (int)(chunk >> 10), "threads", (int)threads);
    if (got == (int64_t)n) {
        snprintf(name, sizeof(name), "get %s %uK x%u", label, chunk >> 10, threads);
        r = report_add(c, "sweep", name, "auto", "MB/s");
        r->value = r->vmin = r->vmax = (double)n / dgt.wall / MB;
        r->n = 1;
        r->cores = dgt.cpu / dgt.wall;
        r->bg = bench_usage_bg(&dgt);
        r->flt_per_mb = (double)dgt.minflt / ((double)n / MB);
        r->extra = json_pack("{s:s, s:s, s:i, s:i}", "op", "get", "data", label, "chunk_KiB",
                             (int)(chunk >> 10), "threads", (int)threads);
    }
    bench_log("sweep %s chunk %u KiB x%u: put %.0f MB/s, get %.0f MB/s", label, chunk >> 10,
              threads, (double)n / dp.wall / MB, (double)n / dgt.wall / MB);
}

void run_sweep(bench_ctx *c, uint8_t *tar, uint8_t *rnd, size_t n)
{
    static const uint32_t chunks[] = {64u << 10, 256u << 10, 1u << 20, 4u << 20, 16u << 20};
    static const unsigned threads[] = {1, 2, 4};
    uint8_t *scratch = bench_alloc(WSIZE);
    char store[4096], name[64];
    uint64_t seed = 77;

    memset(scratch, 0, WSIZE);
    for (size_t k = 0; k < sizeof(chunks) / sizeof(*chunks); k++) {
        snprintf(name, sizeof(name), "sweep-%uk", chunks[k] >> 10);
        env_store_create(c, name, chunks[k], store);
        for (size_t t = 0; t < sizeof(threads) / sizeof(*threads); t++)
            sweep_one(c, store, "tar", tar, n, chunks[k], threads[t], scratch, seed++);
        if (rnd)
            sweep_one(c, store, "random", rnd, n, chunks[k], c->cores, scratch, seed++);
    }
    bench_free(scratch, WSIZE);
}
