/*
 * report.c — result rows, the verdicts, and the three outputs: a text table, JSON, and an SVG
 * plot of throughput against its ceiling (drawn by gnuplot).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h> /* NAN and isnan only: macros, no libm */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/cmkbench.h"

extern char **environ;

row *report_add(bench_ctx *c, const char *section, const char *name, const char *engine,
                const char *unit)
{
    row *r;

    if (c->nrows == c->caprows) {
        size_t ncap = c->caprows ? c->caprows * 2 : 64;
        row *n = realloc(c->rows, ncap * sizeof(*n));
        if (!n)
            bench_die("out of memory (rows)");
        c->rows = n;
        c->caprows = ncap;
    }
    r = &c->rows[c->nrows++];
    memset(r, 0, sizeof(*r));
    snprintf(r->section, sizeof(r->section), "%s", section);
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->engine, sizeof(r->engine), "%s", engine ? engine : "");
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    return r;
}

static double ratio_of(const row *r)
{
    return r->ref > 0 ? r->value / r->ref : 0;
}

void report_judge(row *r, double noise)
{
    double q = ratio_of(r);

    if (r->v == V_SKIPPED)
        return;
    if (r->goal <= 0 || r->ref <= 0) {
        r->v = V_NONE;
        return;
    }
    if (r->lower_better)
        r->v = q <= r->goal ? V_MET : (q <= r->goal + noise ? V_NOISE : V_MISSED);
    else
        r->v = q >= r->goal ? V_MET : (q >= r->goal - noise ? V_NOISE : V_MISSED);
}

void report_set(bench_ctx *c, const char *key, json_t *val)
{
    if (!c->json)
        c->json = json_object();
    if (val)
        json_object_set_new(c->json, key, val);
}

static const char *verdict_name(verdict v)
{
    switch (v) {
    case V_MET:
        return "MET";
    case V_MISSED:
        return "MISSED";
    case V_NOISE:
        return "~noise";
    case V_SKIPPED:
        return "skipped";
    case V_NONE:
        break;
    }
    return "";
}

/* ---- summary rows ---- */

static row *find_row(bench_ctx *c, const char *section, const char *name, const char *engine)
{
    for (size_t i = 0; i < c->nrows; i++)
        if (strcmp(c->rows[i].section, section) == 0 && strcmp(c->rows[i].name, name) == 0 &&
            strcmp(c->rows[i].engine, engine) == 0)
            return &c->rows[i];
    return NULL;
}

static void copy_target(bench_ctx *c, const char *what, const row *src)
{
    row copy, *t;

    if (!src)
        return;
    /* src points into the row array, which report_add may move. */
    copy = *src;
    t = report_add(c, "target", what, copy.engine, copy.unit);
    row keep = *t;
    *t = copy;
    memcpy(t->section, keep.section, sizeof(t->section));
    memcpy(t->name, keep.name, sizeof(t->name));
    t->extra = NULL;
    snprintf(t->note, sizeof(t->note), "from: %s %s%s", copy.section, copy.name,
             copy.out_of_reach
                 ? "; out of reach here: the CPU work alone is below the goal (see its note)"
                 : "");
}

void report_set_pairs(row *r, const double *v, unsigned n)
{
    if (n > ROW_PAIRED_MAX)
        n = ROW_PAIRED_MAX;
    memcpy(r->paired, v, n * sizeof(*v));
    r->npaired = (int)n;
}

/* One-sided sign test: the chance of at least k of n pairs falling on the same side when
 * neither engine is faster (each side 1/2). */
static double sign_p(int k, int n)
{
    double p = 0, c = 1; /* c = C(n, i) */

    for (int i = 0; i <= n; i++) {
        if (i >= k)
            p += c;
        c = c * (n - i) / (i + 1);
    }
    return p / (double)(1u << n);
}

/* Fills the engine row e comparing io_uring's row u with sync's row s. Paired timings (taken
 * in step, alternating) are compared pair by pair: the ratio is the median of the pairs'
 * ratios, and io_uring is slower (MISSED) when a sign test says so at 5% (so many pairs
 * below 1.0 that chance does not explain them) and by 3% or more, the margin a single run
 * is given below. A median below 1.0 without both is "~noise": with 20 paired rows per run,
 * 7 of 8 pairs below 1.0 at 0.98-0.99x came up in rows where both engines make the same
 * system calls, on a different row when the engines' order was swapped (bench/RESULTS.md).
 * Otherwise (a few repetitions, not in step) ranges that overlap cannot be told apart:
 * "~noise". */
static void engine_compare(row *e, const row *u, const row *s)
{
    int np = u->npaired == s->npaired ? u->npaired : 0;
    size_t l;

    snprintf(e->ref_name, sizeof(e->ref_name), "sync");
    e->ref = 1;
    e->goal = 1;
    l = (size_t)snprintf(e->note, sizeof(e->note), "io_uring %.0f vs sync %.0f %s", u->value,
                         s->value, u->unit);
    if (np >= 5) {
        double q[ROW_PAIRED_MAX];
        int below = 0;

        for (int k = 0; k < np; k++) {
            q[k] = s->paired[k] > 0 ? u->paired[k] / s->paired[k] : 0;
            below += q[k] < 1.0;
        }
        e->value = bench_median(q, (size_t)np); /* sorts */
        e->vmin = q[0];
        e->vmax = q[np - 1];
        e->n = np;
        report_judge(e, 0);
        if (e->v == V_MISSED && (sign_p(below, np) >= 0.05 || e->value >= 0.97))
            e->v = V_NOISE;
        snprintf(e->note + l, sizeof(e->note) - l,
                 "; median of %d pairs taken in step; io_uring slower in %d (sign test p=%.3f)", np,
                 below, sign_p(below, np));
        return;
    }
    e->value = u->value / s->value;
    e->vmin = u->vmin / s->vmax;
    e->vmax = u->vmax / s->vmin;
    e->n = u->n < s->n ? u->n : s->n;
    report_judge(e, 0);
    if (e->v == V_MISSED && (e->n > 1 ? u->vmax >= s->vmin : e->value >= 0.97))
        e->v = V_NOISE;
}

void run_summary(bench_ctx *c)
{
    size_t n0 = c->nrows;
    unsigned met = 0, noise = 0, missed = 0;

    /* io_uring against sync, scenario by scenario (engine_compare). */
    if (c->o.nengines == 2) {
        for (size_t i = 0; i < n0; i++) {
            row *u = &c->rows[i], *s;
            if (strcmp(u->engine, "uring") != 0 || u->v == V_SKIPPED || u->value <= 0)
                continue;
            if (strcmp(u->section, "put") && strcmp(u->section, "get") &&
                strcmp(u->section, "small"))
                continue;
            s = find_row(c, u->section, u->name, "sync");
            if (!s || s->value <= 0 || s->v == V_SKIPPED)
                continue;
            char name[64];
            snprintf(name, sizeof(name), "%s %s", u->section, u->name);
            row us = *u, ss = *s; /* report_add may move the array */
            row *e = report_add(c, "engine", name, "", "x");
            engine_compare(e, &us, &ss);
            met += e->v == V_MET;
            noise += e->v == V_NOISE;
            missed += e->v == V_MISSED;
        }
    }

    /* The targets, gathered. */
    copy_target(c, "put compressible >= 85% CPU bound", find_row(c, "put", "put tar", "uring"));
    copy_target(c, "put incompressible >= 85% write+fsync",
                find_row(c, "put", "put random", "uring"));
    copy_target(c, "get warm compressible >= 1.5 GB/s",
                find_row(c, "get", "get warm tar", "uring"));
    copy_target(c, "get warm incompressible >= 2 GB/s",
                find_row(c, "get", "get warm random", "uring"));
    {
        row *best = NULL;
        for (size_t i = 0; i < c->nrows; i++) {
            row *r = &c->rows[i];
            if (strcmp(r->section, "small") == 0 && strncmp(r->name, "put 4k", 6) == 0 &&
                (!best || r->value > best->value))
                best = r;
        }
        if (best) {
            char what[64];
            snprintf(what, sizeof(what), "4 KiB durable puts >= 3000/s (best: %s)", best->name + 4);
            copy_target(c, what, best);
        }
    }
    if (met + noise + missed > 0) {
        row *t = report_add(c, "target", "io_uring >= sync in every scenario", "", "of");
        t->value = met;
        t->ref = met + noise + missed;
        t->n = 1;
        t->v = missed ? V_MISSED : (noise ? V_NOISE : V_MET);
        snprintf(t->note, sizeof(t->note), "%u met, %u within noise, %u missed (see ENGINE)", met,
                 noise, missed);
    }
    for (size_t i = 0; i < c->nrows; i++)
        if (strcmp(c->rows[i].section, "rotation") == 0 && c->rows[i].goal > 0) {
            copy_target(c, "rotation 5k blobs within 2x of 1 blob", &c->rows[i]);
            break;
        }
    for (size_t i = 0; i < c->nrows; i++)
        if (strcmp(c->rows[i].section, "rss") == 0) {
            char what[64];
            snprintf(what, sizeof(what), "%s < 64 MiB", c->rows[i].name);
            copy_target(c, what, &c->rows[i]);
        }
}

/* ---- text ---- */

static const char *section_title(const char *s)
{
    static const struct {
        const char *key, *title;
    } t[] = {
        {"ceiling", "CEILINGS (one thread unless noted; MB = 10^6 bytes)"},
        {"put", "PUT (one blob per put, 1 MiB writes, commit = fsync + publish)"},
        {"get", "GET (whole blob, 1 MiB reads)"},
        {"small", "SMALL BLOBS (durable puts; xN = N client threads)"},
        {"sweep", "SWEEP (chunk size x worker threads; engine auto)"},
        {"rotation", "ROTATION (rotate-key to a new key version; median)"},
        {"open", "STORE OPEN (cmk_store_open + close; median)"},
        {"rss", "PEAK RSS (forked child; wait4 ru_maxrss)"},
        {"engine", "ENGINE (io_uring / sync; ranges are min..max over repetitions)"},
        {"s3", "S3 STORE (--store s3://; raw = the same bytes PUT/GET to the same bucket with "
               "the same S3 client, rounds alternating; ratio = store / raw)"},
        {"target", "TARGETS (issue 4; with --store s3://, issue 23)"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(*t); i++)
        if (strcmp(t[i].key, s) == 0)
            return t[i].title;
    return s;
}

static void fmt_num(char *out, size_t cap, double v)
{
    double a = v < 0 ? -v : v;

    if (v == 0)
        snprintf(out, cap, "-");
    else if (a >= 100)
        snprintf(out, cap, "%.0f", v);
    else if (a >= 10)
        snprintf(out, cap, "%.1f", v);
    else
        snprintf(out, cap, "%.2f", v);
}

static void print_row(FILE *f, const row *r)
{
    char val[32], lo[32], hi[32], range[48] = "", ref[32] = "", ratio[16] = "", cores[16] = "",
                                  flt[16] = "", bg[16] = "";

    fmt_num(val, sizeof(val), r->value);
    if (r->n > 1) {
        fmt_num(lo, sizeof(lo), r->vmin);
        fmt_num(hi, sizeof(hi), r->vmax);
        snprintf(range, sizeof(range), "[%s..%s]", lo, hi);
    }
    if (r->ref > 0) {
        fmt_num(ref, sizeof(ref), r->ref);
        snprintf(ratio, sizeof(ratio), "%.0f%%", 100.0 * ratio_of(r));
    }
    if (r->cores > 0)
        snprintf(cores, sizeof(cores), "%.2f", r->cores);
    if (r->flt_per_mb > 0)
        snprintf(flt, sizeof(flt), "%.0f", r->flt_per_mb);
    if (r->cores > 0)
        snprintf(bg, sizeof(bg), "%.2f", r->bg);
    fprintf(f, "  %-40s %-5s %8s %-7s %-15s %5s %5s %6s  %-20s %7s %6s  %-7s %s\n", r->name,
            r->engine, r->v == V_SKIPPED ? "-" : val, r->unit, range, cores, bg, flt, r->ref_name,
            ref, ratio, verdict_name(r->v), r->note);
}

void report_print(bench_ctx *c, FILE *f)
{
    static const char *order[] = {"ceiling", "put", "get",    "small", "sweep", "rotation",
                                  "open",    "rss", "engine", "s3",    "target"};
    json_t *meta = c->json ? json_object_get(c->json, "meta") : NULL;

    fprintf(f, "cmkbench %s — %s\n", CMKSTORE_VERSION_STRING,
            meta ? json_string_value(json_object_get(meta, "machine")) : "");
    if (meta) {
        fprintf(f, "data: %s\nrun:  %s\n", json_string_value(json_object_get(meta, "data")),
                json_string_value(json_object_get(meta, "command")));
        fprintf(f, "when: %s, %.0f s; other processes used %.2f cores on average meanwhile\n",
                json_string_value(json_object_get(meta, "date")),
                json_real_value(json_object_get(meta, "elapsed_s")),
                json_real_value(json_object_get(meta, "background_cores_mean")));
        if (json_object_get(meta, "loadavg_start"))
            fprintf(f, "load average (1/5/15 min): %s at the start, %s at the end\n",
                    json_string_value(json_object_get(meta, "loadavg_start")),
                    json_string_value(json_object_get(meta, "loadavg_end"))
                        ? json_string_value(json_object_get(meta, "loadavg_end"))
                        : "?");
    }
    for (size_t k = 0; k < sizeof(order) / sizeof(*order); k++) {
        int any = 0;
        for (size_t i = 0; i < c->nrows; i++) {
            const row *r = &c->rows[i];
            if (strcmp(r->section, order[k]) != 0)
                continue;
            if (!any) {
                fprintf(f, "\n%s\n", section_title(order[k]));
                fprintf(f, "  %-40s %-5s %8s %-7s %-15s %5s %5s %6s  %-20s %7s %6s  %-7s %s\n",
                        "measurement", "eng", "value", "unit", "range", "cores", "bg", "flt/MB",
                        "judged against", "ref", "ratio", "verdict", "note");
                any = 1;
            }
            print_row(f, r);
        }
    }
    fprintf(f, "\ncores = CPU seconds per wall second of cmkbench (all threads); bg = cores "
               "used meanwhile by everything else\n(other processes, kernel writeback): a busy "
               "neighbour shows there; flt/MB = minor page faults per MB.\n");
}

/* ---- JSON ---- */

static json_t *row_json(const row *r)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:i, s:f, s:f, s:s, s:f, s:f, "
                          "s:f, s:s, s:s}",
                          "section", r->section, "name", r->name, "engine", r->engine, "unit",
                          r->unit, "value", r->value, "min", r->vmin, "max", r->vmax, "reps", r->n,
                          "cores", r->cores, "faults_per_MB", r->flt_per_mb, "judged_against",
                          r->ref_name, "ref", r->ref, "ratio", ratio_of(r), "goal", r->goal,
                          "verdict", verdict_name(r->v), "note", r->note);
    if (j && r->cores > 0)
        json_object_set_new(j, "background_cores", json_real(r->bg));
    if (j && r->ceiling > 0)
        json_object_set_new(j, "ceiling", json_real(r->ceiling));
    if (j && r->extra)
        json_object_set(j, "detail", r->extra);
    if (j && r->npaired > 0) {
        json_t *a = json_array();
        for (int k = 0; k < r->npaired; k++)
            json_array_append_new(a, json_real(r->paired[k]));
        json_object_set_new(j, "paired", a);
    }
    return j;
}

static int write_json(bench_ctx *c, const char *path)
{
    json_t *root = json_object(), *rows = json_array();
    int rc;

    if (!root || !rows)
        return -1;
    if (c->json)
        json_object_update(root, c->json);
    for (size_t i = 0; i < c->nrows; i++)
        json_array_append_new(rows, row_json(&c->rows[i]));
    json_object_set_new(root, "rows", rows);
    rc = json_dump_file(root, path, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
    json_decref(root);
    return rc == 0 ? 0 : -1;
}

/* ---- SVG via gnuplot ---- */

static double rowval(bench_ctx *c, const char *section, const char *name, const char *engine)
{
    row *r = find_row(c, section, name, engine);
    return r && r->v != V_SKIPPED ? r->value : NAN;
}

static void dat_num(FILE *f, double v)
{
    if (isnan(v) || v <= 0)
        fprintf(f, " NaN");
    else
        fprintf(f, " %.1f", v);
}

static int write_plot_data(bench_ctx *c, const char *dir)
{
    static const uint32_t chunks[] = {64, 256, 1024, 4096, 16384};
    char path[4096], name[96];
    FILE *f;

    /* Panel 1: big blobs, io_uring and sync against the ceiling, target as a point. */
    snprintf(path, sizeof(path), "%s/big.dat", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    for (size_t i = 0; i < c->nrows; i++) {
        row *r = &c->rows[i];
        if ((strcmp(r->section, "put") && strcmp(r->section, "get")) ||
            strcmp(r->engine, c->o.engines[0]) != 0)
            continue;
        fprintf(f, "\"%s\"", r->name);
        dat_num(f, rowval(c, r->section, r->name, "uring"));
        dat_num(f, rowval(c, r->section, r->name, "sync"));
        dat_num(f, r->ceiling);
        dat_num(f, r->goal > 0 ? r->ref * r->goal : NAN);
        fprintf(f, "\n");
    }
    fclose(f);

    /* Panel 2: the sweep, one line per operation/data/threads. */
    snprintf(path, sizeof(path), "%s/sweep.dat", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f, "chunk put-tar-x1 put-tar-x2 put-tar-x4 get-tar-x1 get-tar-x2 get-tar-x4 "
               "put-random get-random\n");
    for (size_t k = 0; k < sizeof(chunks) / sizeof(*chunks); k++) {
        fprintf(f, "%u", chunks[k]);
        for (int op = 0; op < 2; op++)
            for (unsigned t = 1; t <= 4; t *= 2) {
                snprintf(name, sizeof(name), "%s tar %uK x%u", op ? "get" : "put", chunks[k], t);
                dat_num(f, rowval(c, "sweep", name, "auto"));
            }
        for (int op = 0; op < 2; op++) {
            snprintf(name, sizeof(name), "%s random %uK x%u", op ? "get" : "put", chunks[k],
                     c->cores);
            dat_num(f, rowval(c, "sweep", name, "auto"));
        }
        fprintf(f, "\n");
    }
    fclose(f);

    /* Panel 3: small blobs per second. */
    snprintf(path, sizeof(path), "%s/small.dat", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    for (size_t i = 0; i < c->nrows; i++) {
        row *r = &c->rows[i];
        if (strcmp(r->section, "small") || strcmp(r->engine, c->o.engines[0]) != 0)
            continue;
        fprintf(f, "\"%s\"", r->name);
        dat_num(f, rowval(c, "small", r->name, "uring"));
        dat_num(f, rowval(c, "small", r->name, "sync"));
        dat_num(f, strncmp(r->name, "put", 3) == 0 && r->ref_name[0] == '4' ? r->ref : NAN);
        fprintf(f, "\n");
    }
    fclose(f);
    return 0;
}

static const char plot_script[] =
    "set terminal svg size 1200,1500 dynamic font 'sans,11' background '#ffffff'\n"
    "set output OUT\n"
    "set termoption noenhanced\n"
    "set multiplot layout 3,1 title TITLE\n"
    "set grid ytics\n"
    "set key outside right top\n"
    "set style data histograms\n"
    "set style histogram clustered gap 1\n"
    "set style fill solid 0.85 border -1\n"
    "set ylabel 'MB/s (10^6 B/s)'\n"
    "set xtics rotate by -20 scale 0\n"
    "set yrange [0:*]\n"
    "set title 'Big blobs: throughput against its ceiling (points: target)'\n"
    "plot DIR.'/big.dat' using 2:xtic(1) title 'io_uring' lc rgb '#1f77b4', \\\n"
    "     '' using 3 title 'sync' lc rgb '#aec7e8', \\\n"
    "     '' using 4 title 'ceiling (CPU bound / write+fsync / cold read)' lc rgb '#bbbbbb', \\\n"
    "     '' using 0:5 with points pt 7 ps 1.3 lc rgb '#d62728' title 'target'\n"
    "unset style\n"
    "set style data linespoints\n"
    "set logscale x 2\n"
    "set xtics rotate by 0 scale 1\n"
    "set xlabel 'chunk size (KiB)'\n"
    "set key outside right\n"
    "set title 'Chunk size x worker threads (engine auto)'\n"
    "plot for [i=2:9] DIR.'/sweep.dat' using 1:i title columnheader(i) lw 2\n"
    "unset logscale x\n"
    "unset xlabel\n"
    "set key outside right top\n"
    "set style data histograms\n"
    "set style histogram clustered gap 1\n"
    "set style fill solid 0.85 border -1\n"
    "set xtics rotate by -20 scale 0\n"
    "set ylabel 'blobs/s'\n"
    "set yrange [0:YSMALL]\n"
    "set title 'Small blobs (durable puts, warm gets); dashed: 3000 puts/s target'\n"
    "set arrow 1 from graph 0, first 3000 to graph 1, first 3000 nohead dt 2 lc rgb '#d62728'\n"
    "plot DIR.'/small.dat' using 2:xtic(1) title 'io_uring' lc rgb '#1f77b4', \\\n"
    "     '' using 3 title 'sync' lc rgb '#aec7e8', \\\n"
    "     '' using 4 title 'durable 4 KiB file ceiling' lc rgb '#bbbbbb'\n"
    "unset multiplot\n";

/* ---- SVG written directly (no gnuplot) ---- */

static void svg_text(FILE *f, double x, double y, const char *anchor, const char *fill,
                     const char *txt)
{
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='%s' fill='%s'>", x, y, anchor, fill);
    for (const char *p = txt; *p; p++) {
        if (*p == '<')
            fputs("&lt;", f);
        else if (*p == '>')
            fputs("&gt;", f);
        else if (*p == '&')
            fputs("&amp;", f);
        else if (*p == '\'')
            fputs("&apos;", f);
        else
            fputc(*p, f);
    }
    fputs("</text>\n", f);
}

/* One panel of horizontal bars: each selected row of the first engine with its second-engine
 * twin, the ceiling behind them in grey and the target as a red tick. Returns the height. */
static double svg_panel(FILE *f, bench_ctx *c, double y0, const char *title, const char *unit,
                        int (*pick)(const row *), double target_line)
{
    const double left = 330, width = 620, bar = 9;
    double vmax = target_line, y = y0 + 40;
    char buf[128];
    int any = 0;

    for (size_t i = 0; i < c->nrows; i++) {
        row *r = &c->rows[i];
        if (!pick(r) || r->v == V_SKIPPED)
            continue;
        any = 1;
        vmax = r->value > vmax ? r->value : vmax;
        vmax = r->ceiling > vmax ? r->ceiling : vmax;
        vmax = r->goal > 0 && r->ref * r->goal > vmax ? r->ref * r->goal : vmax;
    }
    if (!any || vmax <= 0)
        return 0;
    fprintf(f, "<g font-family='sans-serif' font-size='12'>\n");
    svg_text(f, 20, y0 + 20, "start", "#000", title);
    for (size_t i = 0; i < c->nrows; i++) {
        row *r = &c->rows[i];
        if (!pick(r) || strcmp(r->engine, c->o.engines[0]) != 0)
            continue;
        row *twin = c->o.nengines > 1 ? find_row(c, r->section, r->name, c->o.engines[1]) : NULL;
        svg_text(f, left - 8, y + 12, "end", "#000", r->name);
        if (r->ceiling > 0)
            fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='#dddddd'/>\n",
                    left, y - 1, width * r->ceiling / vmax, 2 * bar + 4);
        const row *pair[2] = {r, twin};
        for (int k = 0; k < 2; k++) {
            const row *q = pair[k];
            if (!q || q->v == V_SKIPPED || q->value <= 0)
                continue;
            fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s'/>\n", left,
                    y + 1 + k * (bar + 1), width * q->value / vmax, bar, k ? "#aec7e8" : "#1f77b4");
            snprintf(buf, sizeof(buf), "%.0f %s (%s)", q->value, unit, q->engine);
            svg_text(f, left + width * q->value / vmax + 4, y + 9 + k * (bar + 1), "start", "#333",
                     buf);
        }
        if (r->goal > 0 && r->ref > 0 && !r->lower_better)
            fprintf(f,
                    "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#d62728' "
                    "stroke-width='2'/>\n",
                    left + width * r->ref * r->goal / vmax, left + width * r->ref * r->goal / vmax,
                    y - 3, y + 2 * bar + 5);
        y += 2 * bar + 12;
    }
    if (target_line > 0)
        fprintf(f,
                "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#d62728' "
                "stroke-dasharray='4,3'/>\n",
                left + width * target_line / vmax, left + width * target_line / vmax, y0 + 34, y);
    fprintf(f, "</g>\n");
    return y - y0 + 10;
}

static int pick_big(const row *r)
{
    return !strcmp(r->section, "put") || !strcmp(r->section, "get");
}

static int pick_small(const row *r)
{
    return !strcmp(r->section, "small");
}

static int write_svg_direct(bench_ctx *c, const char *out)
{
    json_t *meta = c->json ? json_object_get(c->json, "meta") : NULL;
    char *body = NULL;
    size_t blen = 0;
    FILE *m = open_memstream(&body, &blen), *f;
    double h = 60;

    if (!m)
        return -1;
    h += svg_panel(m, c, h,
                   "Big blobs: throughput (dark: first engine, light: second) against its ceiling "
                   "(grey); red: target",
                   "MB/s", pick_big, 0);
    h += svg_panel(m, c, h, "Small blobs per second (durable puts, warm gets); dashed: 3000/s",
                   "blobs/s", pick_small, 3000);
    if (fclose(m) != 0) {
        free(body);
        return -1;
    }
    f = fopen(out, "w");
    if (!f) {
        free(body);
        return -1;
    }
    fprintf(f,
            "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
            "width='1200' height='%.0f' viewBox='0 0 1200 %.0f'>\n<rect width='100%%' "
            "height='100%%' fill='#ffffff'/>\n",
            h + 20, h + 20);
    fprintf(f, "<g font-family='sans-serif' font-size='14'>\n");
    svg_text(f, 20, 30, "start", "#000",
             meta ? json_string_value(json_object_get(meta, "machine")) : "cmkbench");
    fprintf(f, "</g>\n");
    fwrite(body, 1, blen, f);
    fputs("</svg>\n", f);
    free(body);
    return fclose(f) == 0 ? 0 : -1;
}

/* gnuplot draws the full plot (with the sweep); without it the bars are written directly.
 * CMKBENCH_NO_GNUPLOT=1 forces the direct SVG. */
static int write_svg_gnuplot(bench_ctx *c, const char *out);

static int write_svg(bench_ctx *c, const char *out)
{
    const char *no = getenv("CMKBENCH_NO_GNUPLOT");

    if (!(no && *no && strcmp(no, "0") != 0) && write_svg_gnuplot(c, out) == 0)
        return 0;
    return write_svg_direct(c, out);
}

static int write_svg_gnuplot(bench_ctx *c, const char *out)
{
    char dir[] = "/tmp/cmkbench-plot.XXXXXX", script[4096], title[512], abs_out[4096];
    char *argv[] = {"gnuplot", script, NULL};
    json_t *meta = c->json ? json_object_get(c->json, "meta") : NULL;
    pid_t pid;
    int status = 0, rc = -1;
    FILE *f;

    if (!mkdtemp(dir))
        return -1;
    if (out[0] != '/') {
        char cwd[2048];
        if (!getcwd(cwd, sizeof(cwd)))
            goto out;
        snprintf(abs_out, sizeof(abs_out), "%s/%s", cwd, out);
    } else {
        snprintf(abs_out, sizeof(abs_out), "%s", out);
    }
    if (write_plot_data(c, dir) != 0)
        goto out;
    snprintf(title, sizeof(title), "cmkbench — %s",
             meta ? json_string_value(json_object_get(meta, "machine")) : "");
    for (char *p = title; *p; p++)
        if (*p == '\'' || *p == '"')
            *p = ' ';
    snprintf(script, sizeof(script), "%s/plot.gp", dir);
    if (!(f = fopen(script, "w")))
        goto out;
    /* The small-blob panel must reach the 3000/s line even when every bar is below it. */
    double ysmall = 3300;
    for (size_t i = 0; i < c->nrows; i++)
        if (!strcmp(c->rows[i].section, "small") && c->rows[i].value * 1.1 > ysmall)
            ysmall = c->rows[i].value * 1.1;
    fprintf(f, "OUT = '%s'\nDIR = '%s'\nTITLE = '%s'\nYSMALL = %.0f\n%s", abs_out, dir, title,
            ysmall, plot_script);
    if (fclose(f) != 0)
        goto out;
    if (posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ) != 0) {
        bench_log("gnuplot not found: writing the SVG directly (bars only, no sweep plot)");
        goto out;
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        bench_log("gnuplot failed (status %d): writing the SVG directly", status);
        goto out;
    }
    rc = 0;
out:
    bench_rmtree(dir);
    return rc;
}

int report_write(bench_ctx *c)
{
    int rc = 0;

    if (c->o.json_out) {
        if (write_json(c, c->o.json_out) != 0) {
            bench_log("cannot write %s", c->o.json_out);
            rc = -1;
        } else {
            bench_log("wrote %s", c->o.json_out);
        }
    }
    if (c->o.txt_out) {
        FILE *f = fopen(c->o.txt_out, "w");
        if (!f) {
            bench_log("cannot write %s: %s", c->o.txt_out, strerror(errno));
            rc = -1;
        } else {
            report_print(c, f);
            if (fclose(f) != 0)
                rc = -1;
            bench_log("wrote %s", c->o.txt_out);
        }
    }
    if (c->o.svg_out) {
        if (write_svg(c, c->o.svg_out) != 0)
            rc = -1;
        else
            bench_log("wrote %s", c->o.svg_out);
    }
    return rc;
}

void report_free(bench_ctx *c)
{
    for (size_t i = 0; i < c->nrows; i++)
        json_decref(c->rows[i].extra);
    free(c->rows);
    c->rows = NULL;
    c->nrows = c->caprows = 0;
    json_decref(c->json);
    c->json = NULL;
}
