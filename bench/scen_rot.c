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

#include "bench/cmkbench.h"

#define FILL_THREADS 4
#define OPENS        15
#define ROTATIONS    9

typedef struct filler {
    cmk_store *s;
    unsigned first, count; /* small blobs [first, first + count) of the store */
    unsigned nbig;         /* big blobs this thread writes first */
    uint64_t big_size, seed, bytes;
    int failed;
} filler;

#define FILL_BATCH 32

/* Streams one big random blob through a 1 MiB buffer. */
static int put_big(cmk_store *s, uint64_t seed, uint64_t size, uint8_t *buf)
{
    cmk_put *p = NULL;
    cmk_err rc = cmk_put_begin(s, NULL, &p);

    for (uint64_t off = 0; rc == CMK_OK && off < size; off += 1u << 20) {
        size_t len = size - off < (1u << 20) ? (size_t)(size - off) : (1u << 20);
        dg_fill(DG_RANDOM, seed, off, buf, len);
        rc = cmk_put_write(p, buf, len);
    }
    if (rc == CMK_OK)
        return cmk_put_commit(p, NULL, NULL) == CMK_OK ? 0 : -1;
    cmk_put_abort(p);
    return -1;
}

/* Big blobs first (they carry the store's bytes), then small registry documents (1-64 KiB)
 * committed FILL_BATCH at a time (they carry its blob count). */
static void *fill_run(void *arg)
{
    filler *f = arg;
    uint8_t *buf = bench_alloc(1u << 20), *small = bench_alloc(FILL_BATCH * (64u << 10));
    cmk_put *p[FILL_BATCH];
    cmk_err res[FILL_BATCH];

    for (unsigned k = 0; k < f->nbig && !f->failed; k++) {
        if (put_big(f->s, f->seed * 1000003u + 999000u + k, f->big_size, buf) != 0) {
            bench_log("rotation fill: big put failed: %s", cmk_errmsg());
            f->failed = 1;
        }
        f->bytes += f->big_size;
    }
    for (unsigned k = 0; k < f->count && !f->failed; k += FILL_BATCH) {
        unsigned nb = f->count - k < FILL_BATCH ? f->count - k : FILL_BATCH, got = 0;
        for (unsigned j = 0; j < nb; j++) {
            unsigned i = f->first + k + j;
            size_t len = dg_small_size(f->seed, i);
            uint8_t *d = small + (size_t)j * (64u << 10);
            dg_json(dg_mix(f->seed * 1000003u + i), d, len);
            if (cmk_put_begin(f->s, NULL, &p[j]) != CMK_OK)
                break;
            got++;
            if (cmk_put_write(p[j], d, len) != CMK_OK)
                break;
            f->bytes += len;
        }
        if (got < nb) {
            for (unsigned j = 0; j < got; j++)
                cmk_put_abort(p[j]);
            f->failed = 1;
            break;
        }
        if (cmk_put_commit_many(p, NULL, nb, res, NULL) != CMK_OK) {
            bench_log("rotation fill: batch commit failed: %s", cmk_errmsg());
            f->failed = 1;
        }
    }
    bench_free(buf, 1u << 20);
    bench_free(small, FILL_BATCH * (64u << 10));
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
        uint64_t want = c->o.rot_bytes * nblobs / c->o.rot_blobs[2];
        /* A few big layers carry the bytes, many small documents the count. */
        unsigned nbig = nblobs >= 10 ? (nblobs / 200 > 0 ? nblobs / 200 : 1) : 0;
        uint64_t small_est = (uint64_t)(nblobs - nbig) * (16u << 10);
        uint64_t big_size = nbig && want > small_est ? (want - small_est) / nbig : 0;
        unsigned nsmall;
        pthread_t th[FILL_THREADS];
        filler f[FILL_THREADS];
        unsigned started = 0;
        cmk_store *s = NULL;
        double t0, fill_s;
        int failed = 0;

        if (big_size == 0)
            nbig = 0;
        nsmall = nblobs - nbig;
        env_store_create(c, names[k], c->o.chunk, store[k]);
        if (env_store_open(c, store[k], 0, NULL, &s) != CMK_OK)
            bench_die("store open failed");
        bench_log("rotation: filling a store with %u blobs (%u of %llu MiB, %u small; ~%llu MiB)",
                  nblobs, nbig, (unsigned long long)(big_size >> 20), nsmall,
                  (unsigned long long)(want >> 20));
        t0 = bench_now();
        /* Thread 0 writes the big blobs, the others the small ones. */
        for (unsigned t = 0; t < FILL_THREADS; t++) {
            unsigned per = nsmall / (FILL_THREADS - 1);
            f[t] = (filler){.s = s, .seed = (uint64_t)k + 1};
            if (t == 0) {
                f[t].nbig = nbig;
                f[t].big_size = big_size;
            } else {
                f[t].first = (t - 1) * per;
                f[t].count = t == FILL_THREADS - 1 ? nsmall - (t - 1) * per : per;
            }
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
        snprintf(r->note, sizeof(r->note), "%.0f MB/s durable; %u big blobs + %u small in batches",
                 (double)bytes[k] / fill_s / MB, nbig, nsmall);
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
        bench_cleanup(cmk_store_encryption(st[k], &ei[k]));
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
