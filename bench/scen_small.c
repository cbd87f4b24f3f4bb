/*
 * scen_small.c — many small blobs (configs, manifests): durable puts per second at several
 * concurrencies and with batched commits, reads per second, against the durable small-file
 * ceiling of the same file system at the same concurrency.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/cmkbench.h"

typedef struct small_set {
    uint8_t *buf;
    size_t total;
    size_t *off, *len;
    unsigned count;
    char (*digest)[CMK_DIGEST_MAX];
} small_set;

/* Timed get passes per engine and mode: 4 per engine's set (A B B A A B B A over it). */
#define GET_PASSES_MAX 8
/* Timed put segments per engine and mode (A B B A A B B A between the engines). */
#define PUT_SEGS_MAX 8
_Static_assert(GET_PASSES_MAX <= ROW_PAIRED_MAX && PUT_SEGS_MAX <= ROW_PAIRED_MAX, "paired");

typedef struct small_mode {
    const char *name;
    int mix; /* 1: 1-64 KiB JSON documents; 0: 4 KiB */
    unsigned threads;
    unsigned batch; /* > 0: cmk_put_commit_many of this many puts */
} small_mode;

static const small_mode modes[] = {
    {"4k x1", 0, 1, 0},       {"4k x4", 0, 4, 0},       {"4k x16", 0, 16, 0},
    {"4k batch32", 0, 1, 32}, {"4k batch64", 0, 1, 64}, {"4k batch32 x4", 0, 4, 32},
    {"mix x1", 1, 1, 0},      {"mix x16", 1, 16, 0},    {"mix batch32 x4", 1, 4, 32},
};

static void set_make(small_set *s, unsigned count, int mix, uint64_t seed)
{
    s->count = count;
    s->off = calloc(count, sizeof(*s->off));
    s->len = calloc(count, sizeof(*s->len));
    s->digest = calloc(count, sizeof(*s->digest));
    if (!s->off || !s->len || !s->digest)
        bench_die("out of memory");
    s->total = 0;
    for (unsigned i = 0; i < count; i++) {
        s->len[i] = mix ? dg_small_size(seed, i) : 4096;
        s->off[i] = s->total;
        s->total += s->len[i];
    }
    s->buf = bench_alloc(s->total);
    for (unsigned i = 0; i < count; i++)
        dg_json(dg_mix(seed) + i, s->buf + s->off[i], s->len[i]);
}

static void set_free(small_set *s)
{
    bench_free(s->buf, s->total);
    free(s->off);
    free(s->len);
    free(s->digest);
    memset(s, 0, sizeof(*s));
}

typedef struct worker {
    cmk_store *s;
    small_set *set;
    unsigned first, count, batch;
    double *lat; /* microseconds per put (per batch member in batch mode) */
    int get;
    int failed;
} worker;

static int put_one(worker *w, unsigned i)
{
    cmk_put *p = NULL;
    cmk_err rc = cmk_put_begin(w->s, NULL, &p);

    if (rc == CMK_OK)
        rc = cmk_put_write(p, w->set->buf + w->set->off[i], w->set->len[i]);
    if (rc == CMK_OK)
        return cmk_put_commit(p, NULL, w->set->digest[i]) == CMK_OK ? 0 : -1;
    cmk_put_abort(p);
    return -1;
}

static int put_batch(worker *w, unsigned first, unsigned k)
{
    cmk_put *p[64] = {0};
    cmk_err res[64];
    int bad = 0;

    for (unsigned j = 0; j < k; j++) {
        if (cmk_put_begin(w->s, NULL, &p[j]) != CMK_OK ||
            cmk_put_write(p[j], w->set->buf + w->set->off[first + j], w->set->len[first + j]) !=
                CMK_OK) {
            bad = 1;
            break;
        }
    }
    if (bad) {
        for (unsigned j = 0; j < k; j++)
            cmk_put_abort(p[j]);
        return -1;
    }
    return cmk_put_commit_many(p, NULL, k, res, &w->set->digest[first]) == CMK_OK ? 0 : -1;
}

static int get_one(worker *w, unsigned i)
{
    uint8_t buf[64 << 10];
    cmk_get *g = NULL;
    size_t got, total = 0;

    if (cmk_get_open(w->s, w->set->digest[i], 0, CMK_TO_END, &g) != CMK_OK)
        return -1;
    for (;;) {
        if (cmk_get_read(g, buf, sizeof(buf), &got) != CMK_OK) {
            cmk_get_close(g);
            return -1;
        }
        if (got == 0)
            break;
        total += got;
    }
    cmk_get_close(g);
    return total == w->set->len[i] ? 0 : -1;
}

static void *worker_run(void *arg)
{
    worker *w = arg;
    unsigned i = 0;

    while (i < w->count) {
        unsigned k = w->batch ? w->batch : 1;
        double t0 = bench_now();
        int rc;

        if (k > w->count - i)
            k = w->count - i;
        if (w->get)
            rc = get_one(w, w->first + i);
        else if (w->batch)
            rc = put_batch(w, w->first + i, k);
        else
            rc = put_one(w, w->first + i);
        if (rc != 0) {
            w->failed = 1;
            bench_log("small blob %s failed: %s", w->get ? "get" : "put", cmk_errmsg());
            return NULL;
        }
        double us = (bench_now() - t0) * 1e6;
        for (unsigned j = 0; j < k; j++)
            w->lat[w->first + i + j] = us;
        i += k;
    }
    return NULL;
}

/* Runs every blob of the set through `threads` workers; returns wall seconds or -1. */
static double run_workers(cmk_store *s, small_set *set, unsigned threads, unsigned batch, int get,
                          double *lat, bench_usage *usage)
{
    pthread_t th[64];
    worker w[64];
    unsigned started = 0;
    bench_usage a, b;
    int failed = 0;

    if (threads > 64)
        threads = 64;
    bench_usage_get(&a);
    for (unsigned t = 0; t < threads; t++) {
        unsigned per = set->count / threads;
        w[t] = (worker){s,     set, t * per, t == threads - 1 ? set->count - t * per : per,
                        batch, lat, get,     0};
        if (pthread_create(&th[t], NULL, worker_run, &w[t]) != 0)
            break;
        started++;
    }
    for (unsigned t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
        failed |= w[t].failed;
    }
    bench_usage_get(&b);
    bench_usage_diff(&a, &b, usage);
    return (failed || started != threads) ? -1 : usage->wall;
}

static const ceil_small *ceiling_for(const bench_ctx *c, unsigned threads)
{
    for (unsigned i = 0; i < c->nsmall_ceil; i++)
        if (c->small_ceil[i].threads == threads)
            return &c->small_ceil[i];
    return NULL;
}

static void fill_row(row *r, const small_set *set, double secs, const bench_usage *u, double *lat)
{
    double p50 = bench_percentile(lat, set->count, 50);
    double p99 = bench_percentile(lat, set->count, 99);

    r->value = r->vmin = r->vmax = set->count / secs;
    r->n = 1;
    r->cores = u->cpu / u->wall;
    r->bg = bench_usage_bg(u);
    r->flt_per_mb = (double)u->minflt / ((double)set->total / MB);
    r->extra =
        json_pack("{s:i, s:I, s:f, s:f, s:f, s:f, s:I}", "blobs", (int)set->count, "bytes",
                  (json_int_t)set->total, "seconds", secs, "MBps", (double)set->total / secs / MB,
                  "p50_us", p50, "p99_us", p99, "minor_faults", (json_int_t)u->minflt);
    snprintf(r->note, sizeof(r->note), "%.1f MB/s, latency p50 %.0f us p99 %.0f us",
             (double)set->total / secs / MB, p50, p99);
}

void run_small_ceilings(bench_ctx *c)
{
    static const unsigned ct[] = {1, 4, 16};
    char name[64];

    env_setup(c);
    for (unsigned i = 0; i < 3 && c->nsmall_ceil < 4; i++) {
        ceil_small cs;
        bench_log("ceilings: durable 4 KiB files, %u thread(s)", ct[i]);
        if (ceil_small_files(c->root, 4096, c->o.small_count, ct[i], &cs) != 0) {
            bench_log("small-file ceiling with %u threads failed", ct[i]);
            continue;
        }
        c->small_ceil[c->nsmall_ceil++] = cs;
        snprintf(name, sizeof(name), "durable 4 KiB file x%u", ct[i]);
        row *r = report_add(c, "ceiling", name, "", "files/s");
        r->value = r->vmin = r->vmax = cs.files_per_s;
        r->n = 1;
        snprintf(r->note, sizeof(r->note),
                 "O_TMPFILE+write+fsync+linkat+dir fsync; p50 %.0f us p99 %.0f us", cs.p50_us,
                 cs.p99_us);
    }
}

/* Adds the row of one mode and engine, filled from one timing; *idx remembers it. */
static row *mode_row(bench_ctx *c, size_t *idx, const char *op, const char *mode, const char *eng,
                     const small_set *set, double secs, const bench_usage *u, double *lat)
{
    char name[64];
    row *r;

    snprintf(name, sizeof(name), "%s %s", op, mode);
    r = report_add(c, "small", name, eng, "blobs/s");
    *idx = c->nrows - 1;
    fill_row(r, set, secs, u, lat);
    return r;
}

/* The get passes of one mode, per engine. */
typedef struct get_tally {
    double v[2][GET_PASSES_MAX];
    unsigned n[2];
} get_tally;

/* Folds one timed get pass into its engine's row: the first pass makes the row (latencies
 * from it); the value is the median of the passes so far, the range their min..max. */
static void get_fold(bench_ctx *c, size_t *idx, get_tally *gt, unsigned e, const small_mode *md,
                     const char *eng, const small_set *set, double secs, const bench_usage *u,
                     double *lat)
{
    double v = set->count / secs, sorted[GET_PASSES_MAX];
    unsigned n;
    row *r;

    if (gt->n[e] == GET_PASSES_MAX)
        return;
    gt->v[e][gt->n[e]++] = v;
    if (*idx == SIZE_MAX) {
        (void)mode_row(c, idx, "get", md->name, eng, set, secs, u, lat);
        return;
    }
    n = gt->n[e];
    memcpy(sorted, gt->v[e], n * sizeof(*sorted));
    r = &c->rows[*idx];
    r->value = bench_median(sorted, n); /* sorts */
    r->vmin = sorted[0];
    r->vmax = sorted[n - 1];
    r->n = (int)n;
    report_set_pairs(r, gt->v[e], n);
}

/* Warm gets of the set engine e just wrote, timed on both engines over the same blobs in
 * A B B A A B B A order (A: the engine that wrote them). A get pass of a few thousand small blobs
 * lasts 0.1-0.3 s, short enough that one pass per engine, each over different blobs right
 * after its own puts, measured 0.69..1.24x between engines whose small gets make the same
 * system calls (bench/RESULTS.md). The other engine's handle is warmed with an untimed pass
 * first, as the writer's is by the puts. h[] stays open (the caller closes it). */
static void get_passes(bench_ctx *c, const small_mode *md, unsigned e, cmk_store *const h[2],
                       small_set *set, double *lat, size_t get_idx[2], get_tally *gt)
{
    unsigned o = c->o.nengines == 2 ? 1 - e : e;
    bench_usage u;

    if (o != e && h[o])
        (void)run_workers(h[o], set, md->threads, 0, 1, lat, &u);
    for (unsigned k = 0; k < 8; k++) {
        unsigned x = (k % 4 == 0 || k % 4 == 3) ? e : o;
        double secs;

        if (!h[x])
            continue;
        secs = run_workers(h[x], set, md->threads, 0, 1, lat, &u);
        if (secs <= 0)
            continue;
        bench_log("small get %s [%s] pass %u: %.0f blobs/s", md->name, c->o.engines[x], k + 1,
                  set->count / secs);
        get_fold(c, &get_idx[x], gt, x, md, c->o.engines[x], set, secs, &u, lat);
    }
}

/* Adds the pass count and values to the get rows' notes. */
static void get_note(bench_ctx *c, const size_t get_idx[2], const get_tally *gt)
{
    for (unsigned e = 0; e < 2; e++) {
        row *r;
        size_t l;

        if (get_idx[e] == SIZE_MAX)
            continue;
        r = &c->rows[get_idx[e]];
        l = strlen(r->note);
        l += (size_t)snprintf(r->note + l, sizeof(r->note) - l,
                              "; median of %u passes (A B B A on the same blobs):", gt->n[e]);
        for (unsigned i = 0; i < gt->n[e] && l < sizeof(r->note); i++)
            l += (size_t)snprintf(r->note + l, sizeof(r->note) - l, " %.0f", gt->v[e][i]);
    }
}

/* The timed put segments of one mode and engine. */
typedef struct put_segs {
    double rate[PUT_SEGS_MAX]; /* blobs/s of each segment */
    double secs;               /* all segments */
    bench_usage u;             /* summed over the segments */
} put_segs;

/* 8 segments when each still gives every thread a full batch (or one blob), else 2 (the
 * CTest smoke's tiny sets): A B B A in both cases. */
static unsigned seg_count(unsigned n, const small_mode *md)
{
    unsigned per = md->threads * (md->batch ? md->batch : 1);

    return n / PUT_SEGS_MAX >= per ? PUT_SEGS_MAX : 2;
}

/* Puts segment k of nseg of the set on engine e's handle; 0, or -1 when a put failed. */
static int seg_run(bench_ctx *c, const small_mode *md, unsigned e, cmk_store *h, small_set *set,
                   unsigned k, unsigned nseg, double *lat, put_segs *ps)
{
    unsigned base = set->count / nseg * k;
    unsigned n = k == nseg - 1 ? set->count - base : set->count / nseg;
    small_set view = {set->buf, 0, set->off + base, set->len + base, n, set->digest + base};
    bench_usage u;
    double secs;

    for (unsigned i = 0; i < n; i++)
        view.total += view.len[i];
    sync(); /* what earlier segments left for writeback is not this segment's cost */
    secs = run_workers(h, &view, md->threads, md->batch, 0, lat + base, &u);
    if (secs <= 0) {
        bench_log("small %s [%s] segment %u failed", md->name, c->o.engines[e], k + 1);
        return -1;
    }
    ps->rate[k] = n / secs;
    ps->secs += secs;
    bench_usage_add(&ps->u, &u);
    bench_log("small %s [%s] segment %u/%u: %.0f blobs/s", md->name, c->o.engines[e], k + 1, nseg,
              ps->rate[k]);
    return 0;
}

/* The put row of one mode and engine: the median of the segments' rates, their range, each
 * of them and the rate over all segments in the note; latencies over every blob. */
static void put_row(bench_ctx *c, const small_mode *md, const char *eng, const small_set *set,
                    double *lat, const put_segs *ps, unsigned nseg)
{
    const ceil_small *cs = ceiling_for(c, md->threads);
    double sorted[PUT_SEGS_MAX];
    size_t idx, l;
    row *r;

    r = mode_row(c, &idx, "put", md->name, eng, set, ps->secs, &ps->u, lat);
    memcpy(sorted, ps->rate, nseg * sizeof(*sorted));
    report_set_pairs(r, ps->rate, nseg);
    r->value = bench_median(sorted, nseg); /* sorts */
    r->vmin = sorted[0];
    r->vmax = sorted[nseg - 1];
    r->n = (int)nseg;
    if (r->extra)
        json_object_set_new(r->extra, "overall_per_s", json_real(set->count / ps->secs));
    l = strlen(r->note);
    l += (size_t)snprintf(r->note + l, sizeof(r->note) - l,
                          "; median of %u segments (engines alternating A B B A):", nseg);
    for (unsigned k = 0; k < nseg && l < sizeof(r->note); k++)
        l += (size_t)snprintf(r->note + l, sizeof(r->note) - l, " %.0f", ps->rate[k]);
    if (l < sizeof(r->note))
        l += (size_t)snprintf(r->note + l, sizeof(r->note) - l, "; %.0f/s over all",
                              set->count / ps->secs);
    if (!md->mix) {
        snprintf(r->ref_name, sizeof(r->ref_name), "target 3000/s");
        r->ref = 3000;
        r->goal = 1.0;
        report_judge(r, 0);
        if (cs && r->extra)
            json_object_set_new(r->extra, "file_ceiling_per_s", json_real(cs->files_per_s));
        if (cs && l < sizeof(r->note))
            snprintf(r->note + l, sizeof(r->note) - l, "; %.0f%% of durable-file x%u",
                     100.0 * r->value / cs->files_per_s, md->threads);
    } else if (cs) {
        snprintf(r->ref_name, sizeof(r->ref_name), "4 KiB file x%u", md->threads);
        r->ref = cs->files_per_s;
    }
}

void run_small(bench_ctx *c)
{
    unsigned count = c->o.small_count;
    char store[4096];
    /* Latencies: of every blob of an engine's set, or of the warm-up. */
    double *lat[2] = {calloc(2 * (size_t)count, sizeof(double)),
                      calloc(2 * (size_t)count, sizeof(double))};

    if (!lat[0] || !lat[1])
        bench_die("out of memory");
    if (c->nsmall_ceil == 0)
        run_small_ceilings(c);
    env_store_create(c, "small", c->o.chunk, store);
    /* An untimed warm-up first: right after the big-blob phases the disk is still flushing
     * what they wrote, and the first timed run (always the first engine's, one thread) was
     * measured at 66-75% of the same engine's last run in two full runs. */
    {
        cmk_store *s = NULL;
        small_set set;
        bench_usage u;
        if (env_store_open(c, store, c->o.threads, c->o.engines[0], &s) == CMK_OK) {
            set_make(&set, count / 2 ? count / 2 : 1, 0, 999);
            sync();
            (void)run_workers(s, &set, 1, 1, 0, lat[0], &u);
            set_free(&set);
            cmk_store_close(s);
        }
    }
    for (size_t m = 0; m < sizeof(modes) / sizeof(*modes); m++) {
        size_t get_idx[2] = {SIZE_MAX, SIZE_MAX};
        get_tally gp = {0};
        cmk_store *h[2] = {NULL, NULL};
        small_set set[2];
        put_segs ps[2];
        unsigned nseg = seg_count(2 * count, &modes[m]);

        memset(set, 0, sizeof(set));
        memset(ps, 0, sizeof(ps));
        for (unsigned e = 0; e < c->o.nengines; e++) {
            if (env_store_open(c, store, c->o.threads, c->o.engines[e], &h[e]) != CMK_OK)
                continue;
            set_make(&set[e], 2 * count, modes[m].mix, 1000 + m * 10 + (uint64_t)e);
        }
        /* Both engines put into the same store, segment by segment, alternating A B B A
         * A B B A (A: the first engine for even modes, the second for odd ones). Durable
         * small puts wait on the disk's flushes, and this virtual disk's flush latency moves
         * by tens of percent over seconds: two runs of a few seconds per engine, A B B A,
         * measured 0.71-0.77x and 1.15x between engines making the same system calls. Each
         * segment here lasts 0.1-1 s, so the engines see the same disk. */
        for (unsigned k = 0; k < nseg; k++)
            for (unsigned i = 0; i < c->o.nengines; i++) {
                unsigned a = (unsigned)(m % 2), first = k % 2 == 0 ? a : 1 - a;
                unsigned e = c->o.nengines == 2 ? (i == 0 ? first : 1 - first) : 0;

                if (h[e] && seg_run(c, &modes[m], e, h[e], &set[e], k, nseg, lat[e], &ps[e]) != 0) {
                    cmk_store_close(h[e]);
                    h[e] = NULL;
                }
            }
        for (unsigned e = 0; e < c->o.nengines; e++)
            if (h[e])
                put_row(c, &modes[m], c->o.engines[e], &set[e], lat[e], &ps[e], nseg);
        /* Read back what was just written, warm, at the same concurrency, on both engines. */
        if (modes[m].batch == 0)
            for (unsigned i = 0; i < c->o.nengines; i++) {
                unsigned e = (unsigned)(m % 2) && c->o.nengines == 2 ? 1 - i : i;
                if (h[e])
                    get_passes(c, &modes[m], e, h, &set[e], lat[e], get_idx, &gp);
            }
        get_note(c, get_idx, &gp);
        for (unsigned e = 0; e < 2; e++) {
            cmk_store_close(h[e]);
            if (set[e].buf)
                set_free(&set[e]);
        }
    }
    free(lat[0]);
    free(lat[1]);
    /* The store's blobs are small; they go with the run directory. */
}
