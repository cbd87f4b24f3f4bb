/*
 * scen_rot.c — key rotation time and store open latency against store size (1, 1k, 5k
 * blobs). A rotation rewraps the DEKs only, so its time must not grow with what the store
 * holds: the target is t(5k blobs, ~2 GiB) within 2x of t(1 blob).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmkbench.h"

#define FILL_THREADS 4
#define OPENS        15
#define ROTATIONS    9

typedef struct filler {
    cmk_store *s;
    unsigned first, count;
    uint64_t avg, seed, bytes;
    int failed;
} filler;

static uint64_t blob_size(uint64_t avg, uint64_t seed, unsigned i)
{
    return avg / 2 + dg_mix(seed * 1000003u + i) % (avg ? avg : 1);
}

static void *fill_run(void *arg)
{
    filler *f = arg;
    size_t cap = (size_t)(f->avg / 2 + f->avg + 16);
    uint8_t *buf = bench_alloc(cap);
    char dg[CMK_DIGEST_MAX];

    for (unsigned k = 0; k < f->count; k++) {
        unsigned i = f->first + k;
        size_t len = (size_t)blob_size(f->avg, f->seed, i);
        dg_fill(DG_RANDOM, f->seed * 1000003u + i, 0, buf, len);
        if (bench_put_buf(f->s, buf, len, 1u << 20, dg, NULL) != 0) {
            f->failed = 1;
            break;
        }
        f->bytes += len;
    }
    bench_free(buf, cap);
    return NULL;
}

static double ms_since(double t0)
{
    return (bench_now() - t0) * 1e3;
}

void run_rotation(bench_ctx *c)
{
    static const char *names[3] = {"rot-a", "rot-b", "rot-c"};
    char vk[2][CMK_ID_MAX], store[3][4096], name[96];
    double open_ms[3][OPENS], rot_ms[3][ROTATIONS], cold_open[3] = {0, 0, 0};
    double rot_med[3] = {0, 0, 0};
    uint64_t bytes[3] = {0, 0, 0};
    uint64_t avg = c->o.rot_bytes / (c->o.rot_blobs[2] ? c->o.rot_blobs[2] : 1);
    cmk_store *st[3] = {NULL, NULL, NULL};
    cmk_encryption_info ei[3];
    row *r;

    env_setup(c);
    bench_log("rotation: making two more key versions");
    env_new_key_version(c, vk[0]);
    env_new_key_version(c, vk[1]);

    /* Fill the three stores first; every timing below then interleaves them, so that a
     * disturbance (another process's fsyncs, writeback) hits all sizes alike. */
    for (int k = 0; k < 3; k++) {
        unsigned nblobs = c->o.rot_blobs[k];
        pthread_t th[FILL_THREADS];
        filler f[FILL_THREADS];
        unsigned started = 0;
        cmk_store *s = NULL;
        double t0, fill_s;
        int failed = 0;

        env_store_create(c, names[k], c->o.chunk, store[k]);
        if (env_store_open(c, store[k], 0, NULL, &s) != CMK_OK)
            bench_die("store open failed");
        bench_log("rotation: filling a store with %u blobs (~%llu MiB)", nblobs,
                  (unsigned long long)(avg * nblobs >> 20));
        t0 = bench_now();
        for (unsigned t = 0; t < FILL_THREADS; t++) {
            unsigned per = nblobs / FILL_THREADS;
            f[t] = (filler){s,   t * per,         t == FILL_THREADS - 1 ? nblobs - t * per : per,
                            avg, (uint64_t)k + 1, 0,
                            0};
            if (pthread_create(&th[t], NULL, fill_run, &f[t]) != 0)
                break;
            started++;
        }
        for (unsigned t = 0; t < started; t++) {
            pthread_join(th[t], NULL);
            failed |= f[t].failed;
            bytes[k] += f[t].bytes;
        }
        fill_s = bench_now() - t0;
        cmk_store_close(s);
        if (failed || started != FILL_THREADS)
            bench_die("rotation: filling %s failed", store[k]);
        snprintf(name, sizeof(name), "fill %u blobs, %llu MiB (x%u threads)", nblobs,
                 (unsigned long long)(bytes[k] >> 20), FILL_THREADS);
        r = report_add(c, "rotation", name, "auto", "blobs/s");
        r->value = r->vmin = r->vmax = nblobs / fill_s;
        r->n = 1;
        snprintf(r->note, sizeof(r->note), "%.0f MB/s durable, mean blob %llu KiB",
                 (double)bytes[k] / fill_s / MB, (unsigned long long)(avg >> 10));
    }
    sync();

    /* Open latency: cold once each (page cache dropped), then warm, interleaved. */
    for (int k = 0; k < 3; k++) {
        cmk_store *s = NULL;
        if (!c->can_drop || c->o.no_cold || bench_drop_caches() != 0)
            break;
        double t0 = bench_now();
        if (env_store_open(c, store[k], 0, NULL, &s) == CMK_OK) {
            cold_open[k] = ms_since(t0);
            cmk_store_close(s);
        }
    }
    for (int i = 0; i < OPENS; i++)
        for (int k = 0; k < 3; k++) {
            cmk_store *s = NULL;
            double t0 = bench_now();
            if (env_store_open(c, store[k], 0, NULL, &s) != CMK_OK)
                bench_die("store open failed");
            open_ms[k][i] = ms_since(t0);
            cmk_store_close(s);
        }

    /* Rotations alternate between two new key versions, store after store. */
    for (int k = 0; k < 3; k++)
        if (env_store_open(c, store[k], 0, NULL, &st[k]) != CMK_OK)
            bench_die("store open failed");
    for (int i = 0; i < ROTATIONS; i++)
        for (int k = 0; k < 3; k++) {
            double t0 = bench_now();
            cmk_err rc = cmk_store_rotate_key(st[k], vk[i % 2], NULL);
            rot_ms[k][i] = ms_since(t0);
            if (rc != CMK_OK)
                bench_die("rotate-key: %s: %s", cmk_errname(rc), cmk_errmsg());
        }
    for (int k = 0; k < 3; k++) {
        memset(&ei[k], 0, sizeof(ei[k]));
        (void)cmk_store_encryption(st[k], &ei[k]);
        cmk_store_close(st[k]);
    }

    for (int k = 0; k < 3; k++) {
        unsigned nblobs = c->o.rot_blobs[k];
        double open_med;

        snprintf(name, sizeof(name), "store open, %u blobs", nblobs);
        r = report_add(c, "open", name, "auto", "ms");
        r->vmin = bench_min(open_ms[k], OPENS);
        r->vmax = bench_max(open_ms[k], OPENS);
        r->value = open_med = bench_median(open_ms[k], OPENS);
        r->n = OPENS;
        r->lower_better = 1;
        if (cold_open[k] > 0)
            snprintf(r->note, sizeof(r->note), "cold (page cache dropped): %.1f ms", cold_open[k]);
        r->extra = json_pack("{s:i, s:I, s:f}", "blobs", (int)nblobs, "bytes", (json_int_t)bytes[k],
                             "cold_ms", cold_open[k]);

        snprintf(name, sizeof(name), "rotate-key, %u blobs (%llu MiB)", nblobs,
                 (unsigned long long)(bytes[k] >> 20));
        r = report_add(c, "rotation", name, "auto", "ms");
        r->vmin = bench_min(rot_ms[k], ROTATIONS);
        r->vmax = bench_max(rot_ms[k], ROTATIONS);
        r->value = rot_med[k] = bench_median(rot_ms[k], ROTATIONS);
        r->n = ROTATIONS;
        r->lower_better = 1;
        snprintf(r->note, sizeof(r->note), "%u DEK(s) rewrapped (%s)", ei[k].dek_count,
                 ei[k].wrap_algorithm);
        r->extra = json_pack("{s:i, s:I, s:i}", "blobs", (int)nblobs, "bytes", (json_int_t)bytes[k],
                             "deks", (int)ei[k].dek_count);
        bench_log("rotation: %u blobs: open %.1f ms, rotate %.1f ms (%u DEKs)", nblobs, open_med,
                  rot_med[k], ei[k].dek_count);
        /* Only the figures are needed from here on. */
        if (!c->o.keep)
            bench_rmtree(store[k]);
    }
    if (rot_med[0] > 0 && rot_med[2] > 0) {
        snprintf(name, sizeof(name), "rotation %u blobs / %u blob(s)", c->o.rot_blobs[2],
                 c->o.rot_blobs[0]);
        r = report_add(c, "rotation", name, "auto", "x");
        r->value = r->vmin = r->vmax = rot_med[2] / rot_med[0];
        r->n = 1;
        snprintf(r->ref_name, sizeof(r->ref_name), "at most 2x");
        r->ref = 2;
        r->goal = 1.0;
        r->lower_better = 1;
        report_judge(r, 0);
    }
}
