/*
 * scen_s3.c — cmkbench --store s3://BUCKET[/PREFIX]: the store on an S3-compatible object
 * store, measured against the same bytes PUT and GET raw to the same bucket in the same run.
 *
 * The raw ceiling goes through the backend's own S3 client (core/backend/s3_http: libcurl,
 * its SigV4 signing, the same x-amz-content-sha256 rule, the same pool of kept-alive
 * connections), so the ratio is what the store adds (sealing, compression, its requests) and
 * not a difference between two HTTP clients. Raw and store rounds alternate, so a neighbour
 * or the gateway warming up weighs on both sides alike; the ratios are of medians.
 *
 *   big     put / get of one blob of --size-mb per data set (random: incompressible; tar:
 *           compressible) against one raw PUT / one raw GET of the same bytes. The store
 *           uploads in parts, several in flight; the raw PUT is one request, as a client
 *           without multipart would send it.
 *   4 KiB   --small distinct 4 KiB blobs (random and JSON) put by 1 and 8 threads, then read
 *           back, against raw PUTs / GETs of the same bytes by as many threads: puts/s and
 *           gets/s.
 *   CPU     SHA-256, zstd-1 and AES-256-GCM on the same data sets (run_cpu_ceilings).
 *
 * Everything the run writes lies below PREFIX/cmkbench-<hex>/ (a store named .../store, raw
 * objects below .../raw/) and is deleted at the end unless --keep. The local-disk scenarios
 * (disk ceilings, io_uring against sync, chunk sweep, rotation, peak RSS, cold reads) have no
 * meaning on an object store: they are reported as skipped.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/cmkbench.h"
#include "core/backend/s3_blob.h"
#include "core/backend/s3_conf.h"
#include "core/backend/s3_http.h"
#include "core/backend/s3_xml.h"

#define S3_MAXREPS 16
#define WSIZE      (1u << 20)
#define SMALL_LEN  4096u
/* Timed segments per side of a 4 KiB measurement (A B B A A B B A between raw and store). */
#define SMALL_SEGS 4
/* The parallel raw reference: a multipart PUT of PAR_PART parts, PAR_UP at a time, and ranged
 * GETs of PAR_RANGE bytes, PAR_READ at a time: the shape of the store's own requests, taken
 * from its constants (core/backend/s3_blob.h). Informational: the targets are judged against
 * the plain PUT / GET, which is what a client of the object store without multipart gets. */
#define PAR_PART        S3_PART
#define PAR_RANGE       S3_GET_MAX
#define PAR_UP          S3_UP_MAX
#define PAR_READ        S3_READERS
#define PAR_THREADS_MAX 64
_Static_assert(PAR_UP <= PAR_THREADS_MAX && PAR_READ <= PAR_THREADS_MAX, "threads");
#define PAR_PARTS_MAX 10000

typedef struct s3run {
    cmk_s3_http *h;  /* raw requests; keys below the user's prefix */
    char run[40];    /* cmkbench-<hex>: every object of the run lies below it */
    char name[1200]; /* s3://bucket[/prefix] */
    char store[1300];
    int store_made;
    cmk_store *s; /* the run's store, opened once */
} s3run;

static row *s3_row(bench_ctx *c, const char *name, const char *engine, const char *unit,
                   const double *v, unsigned n)
{
    row *r = report_add(c, "s3", name, engine, unit);
    double tmp[S3_MAXREPS * 2];

    if (n == 0) {
        r->v = V_SKIPPED;
        return r;
    }
    memcpy(tmp, v, sizeof(double) * n);
    r->value = bench_median(tmp, n);
    r->vmin = bench_min(v, n);
    r->vmax = bench_max(v, n);
    r->n = (int)n;
    return r;
}

/* A target row (section "target") with src's figures. */
static void s3_target(bench_ctx *c, const char *what, const char *src_name)
{
    row copy, *t;
    size_t i;

    for (i = 0; i < c->nrows; i++)
        if (!strcmp(c->rows[i].section, "s3") && !strcmp(c->rows[i].name, src_name))
            break;
    if (i == c->nrows)
        return;
    copy = c->rows[i]; /* report_add may move the array */
    copy.extra = NULL;
    t = report_add(c, "target", what, copy.engine, copy.unit);
    {
        char sec[sizeof(t->section)], nm[sizeof(t->name)];
        memcpy(sec, t->section, sizeof(sec));
        memcpy(nm, t->name, sizeof(nm));
        *t = copy;
        memcpy(t->section, sec, sizeof(sec));
        memcpy(t->name, nm, sizeof(nm));
    }
    snprintf(t->note, sizeof(t->note), "from: s3 %s%s", src_name,
             copy.out_of_reach
                 ? "; out of reach here: the CPU work alone is below the goal (see its note)"
                 : "");
}

static void raw_key(const s3run *x, const char *what, char *out, size_t cap)
{
    snprintf(out, cap, "%s/raw/%s", x->run, what);
}

static cmk_err raw_put(s3run *x, const char *key, const void *buf, size_t n, cmk_errbuf *eb)
{
    cmk_s3_req r = {.method = "PUT", .key = key, .body = buf, .body_len = n};
    cmk_err rc = cmk_s3_http_do(x->h, &r, eb);
    cmk_s3_req_done(&r);
    return rc;
}

/* GETs key into buf (cap bytes); *got receives the length. */
static cmk_err raw_get(s3run *x, const char *key, void *buf, size_t cap, size_t *got,
                       cmk_errbuf *eb)
{
    cmk_s3_req r = {.method = "GET", .key = key, .dst = buf, .dst_cap = cap};
    cmk_err rc = cmk_s3_http_do(x->h, &r, eb);
    *got = r.resp_len;
    cmk_s3_req_done(&r);
    return rc;
}

static void raw_delete(s3run *x, const char *key)
{
    cmk_errbuf eb = {0};
    cmk_s3_req r = {.method = "DELETE", .key = key};
    if (cmk_s3_http_do(x->h, &r, &eb) != CMK_OK)
        bench_log("s3: could not delete %s: %s", key, eb.msg);
    cmk_s3_req_done(&r);
}

/* ---- the parallel raw reference ---- */

typedef struct par_job {
    s3run *x;
    const char *key;
    uint8_t *buf; /* the bytes to PUT, or where a GET puts them */
    size_t n, step;
    unsigned count;
    atomic_uint next;
    int get;
    const char *upload_q; /* the escaped upload id (PUT) */
    char (*etag)[128];
    atomic_int failed;
    char err[256];
    pthread_mutex_t mu;
} par_job;

static void *par_worker(void *arg)
{
    par_job *j = arg;

    for (;;) {
        unsigned i = atomic_fetch_add(&j->next, 1);
        cmk_errbuf eb = {0};
        char query[1800];
        cmk_err rc;
        if (i >= j->count || atomic_load(&j->failed))
            break;
        size_t off = (size_t)i * j->step, len = j->n - off < j->step ? j->n - off : j->step;
        if (j->get) {
            cmk_s3_req r = {.method = "GET",
                            .key = j->key,
                            .range_off = off,
                            .range_len = len,
                            .dst = j->buf + off,
                            .dst_cap = len};
            rc = cmk_s3_http_do(j->x->h, &r, &eb);
            if (rc == CMK_OK && r.resp_len != len)
                rc = cmk_errbuf_set(&eb, CMK_E_IO, "short ranged GET");
            cmk_s3_req_done(&r);
        } else {
            cmk_s3_req r = {.method = "PUT", .key = j->key, .body = j->buf + off, .body_len = len};
            snprintf(query, sizeof(query), "partNumber=%u&uploadId=%s", i + 1, j->upload_q);
            r.query = query;
            rc = cmk_s3_http_do(j->x->h, &r, &eb);
            if (rc == CMK_OK && !r.etag[0])
                rc = cmk_errbuf_set(&eb, CMK_E_IO, "part %u: no ETag", i + 1);
            if (rc == CMK_OK)
                snprintf(j->etag[i], sizeof(j->etag[i]), "%s", r.etag);
            cmk_s3_req_done(&r);
        }
        if (rc != CMK_OK) {
            pthread_mutex_lock(&j->mu);
            snprintf(j->err, sizeof(j->err), "%s", eb.msg);
            pthread_mutex_unlock(&j->mu);
            atomic_store(&j->failed, 1);
        }
    }
    return NULL;
}

static void par_run(par_job *j)
{
    pthread_t t[PAR_THREADS_MAX];
    unsigned most = j->get ? PAR_READ : PAR_UP, nt = j->count < most ? j->count : most;

    atomic_init(&j->next, 0);
    atomic_init(&j->failed, 0);
    pthread_mutex_init(&j->mu, NULL);
    for (unsigned k = 0; k < nt; k++)
        if (pthread_create(&t[k], NULL, par_worker, j) != 0)
            bench_die("pthread_create failed");
    for (unsigned k = 0; k < nt; k++)
        pthread_join(t[k], NULL);
    pthread_mutex_destroy(&j->mu);
}

/* A multipart upload of buf in PAR_PART parts, PAR_UP at a time. Dies on failure. */
static void raw_put_parallel(s3run *x, const char *key, uint8_t *buf, size_t n)
{
    par_job j = {.x = x, .key = key, .buf = buf, .n = n, .step = PAR_PART};
    char id[CMK_S3_UPLOAD_ID_MAX], eid[3 * CMK_S3_UPLOAD_ID_MAX],
        query[3 * CMK_S3_UPLOAD_ID_MAX + 16];
    cmk_errbuf eb = {0};
    cmk_s3_req r = {.method = "POST", .key = key, .query = "uploads="};
    size_t cap, len = 0;
    char *xml;
    cmk_err rc;

    j.count = (unsigned)((n + PAR_PART - 1) / PAR_PART);
    if (j.count == 0 || j.count > PAR_PARTS_MAX)
        bench_die("raw multipart PUT: %u parts", j.count);
    rc = cmk_s3_http_do(x->h, &r, &eb);
    if (rc == CMK_OK)
        rc = cmk_s3_xml_upload_id(r.resp ? r.resp : "", r.resp_len, id, sizeof(id), &eb);
    cmk_s3_req_done(&r);
    if (rc != CMK_OK)
        bench_die("raw multipart PUT: start: %s", eb.msg);
    if (cmk_s3_query_escape(id, eid, sizeof(eid)) < 0)
        bench_die("raw multipart PUT: upload id too long");
    j.upload_q = eid;
    j.etag = calloc(j.count, sizeof(*j.etag));
    cap = 64 + (size_t)j.count * 200;
    xml = malloc(cap);
    if (!j.etag || !xml)
        bench_die("out of memory");
    par_run(&j);
    snprintf(query, sizeof(query), "uploadId=%s", eid);
    if (atomic_load(&j.failed)) {
        cmk_s3_req a = {.method = "DELETE", .key = key, .query = query};
        if (cmk_s3_http_do(x->h, &a, &eb) != CMK_OK)
            bench_log("raw multipart PUT: abort: %s", eb.msg);
        cmk_s3_req_done(&a);
        bench_die("raw multipart PUT: %s", j.err);
    }
    len += (size_t)snprintf(xml + len, cap - len, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < j.count; i++)
        len += (size_t)snprintf(xml + len, cap - len,
                                "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>",
                                i + 1, j.etag[i]);
    len += (size_t)snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
    {
        cmk_s3_req cpl = {
            .method = "POST", .key = key, .query = query, .body = xml, .body_len = len};
        rc = cmk_s3_http_do(x->h, &cpl, &eb);
        /* S3 may answer 200 with an error document. */
        if (rc == CMK_OK && cpl.resp && strstr(cpl.resp, "<Error>"))
            rc = cmk_errbuf_set(&eb, CMK_E_IO, "the completion answered an error");
        cmk_s3_req_done(&cpl);
    }
    free(xml);
    free(j.etag);
    if (rc != CMK_OK)
        bench_die("raw multipart PUT: complete: %s", eb.msg);
}

/* GETs the n bytes of key into buf as PAR_RANGE ranges, PAR_READ at a time. */
static void raw_get_parallel(s3run *x, const char *key, uint8_t *buf, size_t n)
{
    par_job j = {.x = x, .key = key, .buf = buf, .n = n, .step = PAR_RANGE, .get = 1};

    j.count = (unsigned)((n + PAR_RANGE - 1) / PAR_RANGE);
    par_run(&j);
    if (atomic_load(&j.failed))
        bench_die("raw ranged GET: %s", j.err);
}

/* ---- cleanup: every object below the run's prefix ---- */

typedef struct keylist {
    char (*k)[CMK_S3_KEY_MAX];
    size_t n, cap;
} keylist;

static int collect(const cmk_s3_obj *o, void *arg)
{
    keylist *l = arg;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        void *p = realloc(l->k, nc * sizeof(*l->k));
        if (!p)
            return 1;
        l->k = p;
        l->cap = nc;
    }
    snprintf(l->k[l->n++], CMK_S3_KEY_MAX, "%s", o->key);
    return 0;
}

/* Lists the first page below the run's prefix and deletes it, until nothing is left (no
 * continuation token needed: deleted keys leave the listing). */
static void s3_cleanup(s3run *x)
{
    const cmk_s3_conf *cf = cmk_s3_http_conf(x->h);
    size_t plen = strlen(cf->prefix);
    char full[CMK_S3_KEY_MAX], esc[3 * CMK_S3_KEY_MAX], query[3 * CMK_S3_KEY_MAX + 64];
    size_t deleted = 0;

    snprintf(full, sizeof(full), "%s%s/", cf->prefix, x->run);
    if (cmk_s3_query_escape(full, esc, sizeof(esc)) < 0)
        return;
    snprintf(query, sizeof(query), "list-type=2&prefix=%s", esc);
    for (int round = 0; round < 1000; round++) {
        cmk_errbuf eb = {0};
        cmk_s3_req r = {.method = "GET", .query = query, .max = 8u << 20};
        keylist l = {0};
        int truncated = 0, stopped = 0;
        char next[1024];
        cmk_err rc = cmk_s3_http_do(x->h, &r, &eb);
        if (rc == CMK_OK)
            rc = cmk_s3_xml_list(r.resp, r.resp_len, collect, &l, &truncated, next, sizeof(next),
                                 &stopped, &eb);
        cmk_s3_req_done(&r);
        if (rc != CMK_OK || stopped) {
            bench_log("s3: listing %s for the cleanup failed: %s", full,
                      stopped ? "out of memory" : eb.msg);
            free(l.k);
            return;
        }
        for (size_t i = 0; i < l.n; i++)
            if (strncmp(l.k[i], cf->prefix, plen) == 0) {
                raw_delete(x, l.k[i] + plen);
                deleted++;
            }
        free(l.k);
        if (l.n == 0)
            break;
    }
    bench_log("s3: deleted the run's %zu objects below %s/%s", deleted, x->name, x->run);
}

/* ---- setup ---- */

static void s3_setup(bench_ctx *c, s3run *x)
{
    cmk_s3_conf cf;
    cmk_errbuf eb = {0};
    struct timespec ts;
    cmk_err rc;

    rc = cmk_s3_conf_load(c->o.store, &cf, &eb);
    if (rc != CMK_OK)
        bench_die("--store %s: %s", c->o.store, eb.msg);
    rc = cmk_s3_http_new(&cf, &x->h, &eb);
    cmk_s3_conf_wipe(&cf);
    if (rc != CMK_OK)
        bench_die("S3 client: %s", eb.msg);
    cmk_s3_conf_name(cmk_s3_http_conf(x->h), x->name, sizeof(x->name));
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(
        x->run, sizeof(x->run), "cmkbench-%012llx",
        (unsigned long long)(dg_mix(((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
                                    ((uint64_t)getpid() << 32)) &
                             0xffffffffffffull));
    snprintf(x->store, sizeof(x->store), "%s/%s/store", x->name, x->run);
    /* The bucket: made if absent (an existing one of ours answers 200 or 409). */
    {
        cmk_s3_req r = {.method = "PUT"};
        rc = cmk_s3_http_do(x->h, &r, &eb);
        if (rc != CMK_OK && strcmp(r.code, "BucketAlreadyOwnedByYou") != 0 &&
            strcmp(r.code, "BucketAlreadyExists") != 0)
            bench_log("s3: creating the bucket failed (%s); using it as it is", eb.msg);
        cmk_s3_req_done(&r);
    }
    bench_log("s3: store %s, raw objects below %s/%s/raw/", x->store, x->name, x->run);
}

static void s3_store(bench_ctx *c, s3run *x)
{
    cmk_create_opts co;
    cmk_err rc;

    if (x->s)
        return;
    env_setup(c);
    if (!x->store_made) {
        cmk_create_opts_init(&co);
        co.home = c->home;
        co.identity = c->identity;
        co.key_id = c->vkid;
        co.chunk_size = c->o.chunk;
        rc = cmk_store_create(x->store, &co);
        if (rc != CMK_OK)
            bench_die("store create %s: %s: %s", x->store, cmk_errname(rc), cmk_errmsg());
        x->store_made = 1;
    }
    if (env_store_open(c, x->store, c->o.threads, NULL, &x->s) != CMK_OK)
        bench_die("cannot open %s", x->store);
}

/* ---- big blobs ---- */

typedef struct timed {
    double v[S3_MAXREPS];
    unsigned n;
    bench_usage u;
} timed;

static void timed_add(timed *t, double bytes, const bench_usage *u)
{
    if (t->n < S3_MAXREPS)
        t->v[t->n++] = bytes / u->wall / MB;
    bench_usage_add(&t->u, u);
}

/* Ends a timed step begun with bench_usage_get(a): its rate and usage into t. */
static void timed_end(timed *t, double bytes, const bench_usage *a)
{
    bench_usage b, d;

    bench_usage_get(&b);
    bench_usage_diff(a, &b, &d);
    timed_add(t, bytes, &d);
}

static row *timed_row(bench_ctx *c, const char *name, const char *engine, timed *t)
{
    row *r = s3_row(c, name, engine, "MB/s", t->v, t->n);
    r->cores = t->u.wall > 0 ? t->u.cpu / t->u.wall : 0;
    r->bg = bench_usage_bg(&t->u);
    return r;
}

/* stream_MBps: one put stream's CPU work on these bytes (the ceilings), 0 if unknown. */
static void big(bench_ctx *c, s3run *x, const char *label, uint8_t *data, size_t n,
                int compressible, double stream_MBps)
{
    unsigned reps = c->o.reps < S3_MAXREPS ? c->o.reps : S3_MAXREPS;
    uint8_t *scratch = bench_alloc(n);
    timed rp = {0}, rg = {0}, sp = {0}, sg = {0}, pp = {0}, pg = {0};
    char key[CMK_S3_KEY_MAX], name[64], what[96];
    uint8_t saved[16];
    row *r;

    s3_store(c, x);
    memcpy(saved, data, sizeof(saved));
    raw_key(x, label, key, sizeof(key));
    bench_log("s3 %s: %u round(s) of raw PUT/GET and store put/get of %zu MiB", label, reps,
              n >> 20);
    for (unsigned rep = 0; rep < reps; rep++) {
        char digest[CMK_DIGEST_MAX];
        cmk_errbuf eb = {0};
        bench_usage a;
        size_t got = 0;

        /* A new blob every round, the same bytes on both sides. */
        uint64_t stamp[2] = {dg_mix((uint64_t)(c->t0 * 1e6)), rep};
        memcpy(data, stamp, sizeof(stamp));
        for (int side = 0; side < 2; side++) {
            int raw = (side == 0) == (rep % 2 == 0); /* raw first on even rounds */
            if (raw) {
                bench_usage_get(&a);
                if (raw_put(x, key, data, n, &eb) != CMK_OK)
                    bench_die("raw PUT: %s", eb.msg);
                timed_end(&rp, (double)n, &a);
                bench_usage_get(&a);
                if (raw_get(x, key, scratch, n, &got, &eb) != CMK_OK || got != n)
                    bench_die("raw GET: %s", got != n ? "short object" : eb.msg);
                timed_end(&rg, (double)n, &a);
                if (memcmp(scratch, data, n) != 0)
                    bench_die("raw GET returned other bytes than were PUT");
                raw_delete(x, key);
                /* The same bytes again, in requests shaped as the store's. */
                bench_usage_get(&a);
                raw_put_parallel(x, key, data, n);
                timed_end(&pp, (double)n, &a);
                memset(scratch, 0, n);
                bench_usage_get(&a);
                raw_get_parallel(x, key, scratch, n);
                timed_end(&pg, (double)n, &a);
                if (memcmp(scratch, data, n) != 0)
                    bench_die("raw ranged GETs returned other bytes than were PUT");
                raw_delete(x, key);
            } else {
                bench_usage_get(&a);
                if (bench_put_buf(x->s, data, n, WSIZE, digest, NULL) != 0)
                    bench_die("store put failed");
                timed_end(&sp, (double)n, &a);
                bench_usage_get(&a);
                int64_t g = bench_get_all(x->s, digest, scratch, WSIZE);
                timed_end(&sg, (double)n, &a);
                if (g != (int64_t)n)
                    bench_die("store get returned %lld bytes of %zu", (long long)g, n);
                if (cmk_delete(x->s, digest) != CMK_OK)
                    bench_log("store delete: %s", cmk_errmsg());
            }
        }
        bench_log("  round %u: raw PUT %.0f GET %.0f, parallel PUT %.0f GET %.0f, store put %.0f "
                  "get %.0f MB/s",
                  rep + 1, rp.v[rp.n - 1], rg.v[rg.n - 1], pp.v[pp.n - 1], pg.v[pg.n - 1],
                  sp.v[sp.n - 1], sg.v[sg.n - 1]);
    }
    memcpy(data, saved, sizeof(saved));
    bench_free(scratch, n);

    snprintf(name, sizeof(name), "raw PUT %s", label);
    timed_row(c, name, "raw", &rp);
    snprintf(name, sizeof(name), "raw GET %s", label);
    timed_row(c, name, "raw", &rg);
    double raw_put_med = c->rows[c->nrows - 2].value, raw_get_med = c->rows[c->nrows - 1].value;
    snprintf(name, sizeof(name), "raw PUT %s, %uM parts x%d", label, PAR_PART >> 20, PAR_UP);
    r = timed_row(c, name, "raw", &pp);
    snprintf(r->note, sizeof(r->note),
             "multipart upload, %d parts in flight: shaped as the store's put (informational)",
             PAR_UP);
    double par_put_med = r->value;
    snprintf(name, sizeof(name), "raw GET %s, %uM ranges x%d", label, PAR_RANGE >> 20, PAR_READ);
    r = timed_row(c, name, "raw", &pg);
    snprintf(r->note, sizeof(r->note),
             "ranged GETs, %d in flight: shaped as the store's read-ahead (informational)",
             PAR_READ);
    double par_get_med = r->value;

    snprintf(name, sizeof(name), "put %s", label);
    r = timed_row(c, name, "s3", &sp);
    snprintf(r->ref_name, sizeof(r->ref_name), "raw PUT");
    r->ref = raw_put_med;
    r->goal = compressible ? 1.0 : 0.85;
    report_judge(r, 0.03);
    /* A put cannot outrun its own CPU work (SHA-256 in order, probe or zstd-1, seal): where
     * that alone is below goal x raw PUT, the target cannot be met on this machine. */
    r->out_of_reach = stream_MBps > 0 && stream_MBps < r->goal * r->ref;
    snprintf(r->note, sizeof(r->note),
             "%zu MiB blob, 1 MiB writes, commit included; raw = one PUT of the same bytes; "
             "%.0f%% of the multipart raw PUT; one put stream's CPU work %.0f MB/s (put = %.0f%% "
             "of it)%s",
             n >> 20, par_put_med > 0 ? 100.0 * r->value / par_put_med : 0, stream_MBps,
             stream_MBps > 0 ? 100.0 * r->value / stream_MBps : 0,
             r->out_of_reach ? ": below the target's rate, out of reach here" : "");
    snprintf(what, sizeof(what), "s3 put %s %s raw PUT", label, compressible ? "> 100%" : ">= 85%");
    s3_target(c, what, name);

    snprintf(name, sizeof(name), "get %s", label);
    r = timed_row(c, name, "s3", &sg);
    snprintf(r->ref_name, sizeof(r->ref_name), "raw GET");
    r->ref = raw_get_med;
    r->goal = compressible ? 1.0 : 0.85;
    report_judge(r, 0.03);
    snprintf(r->note, sizeof(r->note),
             "whole blob, 1 MiB reads; raw = one GET of the same bytes into memory; %.0f%% of "
             "the ranged raw GETs",
             par_get_med > 0 ? 100.0 * r->value / par_get_med : 0);
    snprintf(what, sizeof(what), "s3 get %s %s raw GET", label, compressible ? "> 100%" : ">= 85%");
    s3_target(c, what, name);
}

/* ---- 4 KiB blobs ---- */

typedef struct small_job {
    s3run *x;
    const uint8_t *buf; /* count x SMALL_LEN */
    char (*digest)[CMK_DIGEST_MAX];
    const char *label;
    unsigned first, end;
    atomic_uint next;
    int raw, get;
    atomic_int failed;
} small_job;

static void *small_worker(void *arg)
{
    small_job *j = arg;
    uint8_t tmp[SMALL_LEN + 1];
    char key[CMK_S3_KEY_MAX], what[64];

    for (;;) {
        unsigned i = atomic_fetch_add(&j->next, 1);
        const uint8_t *src;
        cmk_errbuf eb = {0};
        if (i >= j->end)
            break;
        src = j->buf + (size_t)i * SMALL_LEN;
        if (j->raw) {
            size_t got = 0;
            snprintf(what, sizeof(what), "small-%s-%u", j->label, i);
            raw_key(j->x, what, key, sizeof(key));
            if (!j->get ? raw_put(j->x, key, src, SMALL_LEN, &eb) != CMK_OK
                        : raw_get(j->x, key, tmp, sizeof(tmp), &got, &eb) != CMK_OK ||
                              got != SMALL_LEN || memcmp(tmp, src, SMALL_LEN) != 0) {
                bench_log("raw %s %s: %s", j->get ? "GET" : "PUT", key, eb.msg);
                atomic_store(&j->failed, 1);
            }
        } else if (!j->get) {
            if (bench_put_buf(j->x->s, src, SMALL_LEN, SMALL_LEN, j->digest[i], NULL) != 0)
                atomic_store(&j->failed, 1);
        } else {
            if (bench_get_all(j->x->s, j->digest[i], tmp, sizeof(tmp)) != SMALL_LEN)
                atomic_store(&j->failed, 1);
        }
    }
    return NULL;
}

/* Items [first, end) by `threads` threads; items per second. */
static double small_seg(s3run *x, const uint8_t *buf, char (*digest)[CMK_DIGEST_MAX],
                        const char *label, unsigned first, unsigned end, unsigned threads, int raw,
                        int get, bench_usage *sum)
{
    pthread_t t[64];
    small_job j = {.x = x,
                   .buf = buf,
                   .digest = digest,
                   .label = label,
                   .first = first,
                   .end = end,
                   .raw = raw,
                   .get = get};
    bench_usage a, b, d;

    atomic_init(&j.next, first);
    atomic_init(&j.failed, 0);
    bench_usage_get(&a);
    for (unsigned k = 0; k < threads; k++)
        if (pthread_create(&t[k], NULL, small_worker, &j) != 0)
            bench_die("pthread_create failed");
    for (unsigned k = 0; k < threads; k++)
        pthread_join(t[k], NULL);
    bench_usage_get(&b);
    if (atomic_load(&j.failed))
        bench_die("4 KiB %s %s failed", raw ? "raw" : "store", get ? "get" : "put");
    bench_usage_diff(&a, &b, &d);
    bench_usage_add(sum, &d);
    return (double)(end - first) / d.wall;
}

static void small(bench_ctx *c, s3run *x, const char *label, int json, unsigned threads)
{
    unsigned count = c->o.small_count;
    size_t total = (size_t)count * SMALL_LEN;
    uint8_t *buf = bench_alloc(total);
    char(*digest)[CMK_DIGEST_MAX] = calloc(count, sizeof(*digest));
    char tag[32], name[64];

    if (!digest)
        bench_die("out of memory");
    s3_store(c, x);
    snprintf(tag, sizeof(tag), "%s-x%u", label, threads);
    for (unsigned i = 0; i < count; i++) {
        /* Distinct per run, per mode and per blob, so every put stores a new blob. */
        uint64_t seed = dg_mix((uint64_t)i * 131 + threads * 7 + (uint64_t)json) ^
                        dg_mix((uint64_t)(c->t0 * 1e6));
        if (json)
            dg_json(seed, buf + (size_t)i * SMALL_LEN, SMALL_LEN);
        else
            dg_fill(DG_RANDOM, seed, 0, buf + (size_t)i * SMALL_LEN, SMALL_LEN);
        memcpy(buf + (size_t)i * SMALL_LEN, &seed, sizeof(seed));
    }
    bench_log("s3 4 KiB %s, %u thread(s): %u blobs per side, %d segments, raw and store "
              "alternating",
              label, threads, count, SMALL_SEGS);
    for (int get = 0; get < 2; get++) {
        double v[2][SMALL_SEGS];
        bench_usage u[2] = {{0}};
        for (unsigned s = 0; s < SMALL_SEGS; s++) {
            unsigned first = count * s / SMALL_SEGS, end = count * (s + 1) / SMALL_SEGS;
            for (int side = 0; side < 2; side++) {
                int raw = (side == 0) == (s % 2 == 0); /* A B B A */
                v[raw][s] = small_seg(x, buf, digest, tag, first, end, threads, raw, get, &u[raw]);
            }
        }
        snprintf(name, sizeof(name), "raw %s 4k %s x%u", get ? "GET" : "PUT", label, threads);
        row *r = s3_row(c, name, "raw", get ? "gets/s" : "puts/s", v[1], SMALL_SEGS);
        r->cores = u[1].wall > 0 ? u[1].cpu / u[1].wall : 0;
        r->bg = bench_usage_bg(&u[1]);
        double ref = r->value;
        snprintf(name, sizeof(name), "%s 4k %s x%u", get ? "get" : "put", label, threads);
        r = s3_row(c, name, "s3", get ? "gets/s" : "puts/s", v[0], SMALL_SEGS);
        r->cores = u[0].wall > 0 ? u[0].cpu / u[0].wall : 0;
        r->bg = bench_usage_bg(&u[0]);
        r->ref = ref;
        snprintf(r->ref_name, sizeof(r->ref_name), "raw %s", get ? "GET" : "PUT");
        snprintf(r->note, sizeof(r->note), "%u distinct 4 KiB blobs, median of %d segments", count,
                 SMALL_SEGS);
    }
    for (unsigned i = 0; i < count; i++)
        if (digest[i][0] && cmk_delete(x->s, digest[i]) != CMK_OK)
            bench_log("store delete: %s", cmk_errmsg());
    free(digest);
    bench_free(buf, total);
}

/* ---- the run ---- */

void run_s3(bench_ctx *c, const char *cmd, const char *shape)
{
    int all = !strcmp(cmd, "all"), ceil_only = !strcmp(cmd, "ceilings");
    int do_big = all || !strcmp(cmd, "put") || !strcmp(cmd, "get");
    int do_small = all || !strcmp(cmd, "small");
    s3run x = {0};
    row *r;

    if (!(all || ceil_only || do_big || do_small)) {
        bench_die("%s: not measured with --store s3:// (it measures the local disk); "
                  "with s3: all, ceilings, put, get, small",
                  cmd);
    }
    r = report_add(c, "s3", "local-disk scenarios", "", "");
    r->v = V_SKIPPED;
    snprintf(r->note, sizeof(r->note),
             "skipped on S3: disk ceilings, io_uring vs sync, chunk sweep, rotation, peak RSS, "
             "cold reads (they measure the local disk)");
    bench_log("s3: skipping the local-disk scenarios (disk ceilings, io_uring vs sync, sweep, "
              "rotation, RSS, cold reads)");
    if (!ceil_only)
        s3_setup(c, &x);

    if (all || ceil_only || do_big) {
        size_t n = (size_t)c->o.size;
        for (int k = 0; k < 2; k++) {
            int compressible = k == 1;
            const char *label = compressible ? "tar" : "random";
            if (!all && !ceil_only && strcmp(shape, label) != 0)
                continue;
            if (compressible && dg_init(0) != 0)
                bench_die("cannot build the generator pool");
            bench_log("generating %zu MiB %s data", n >> 20, label);
            uint8_t *d = bench_gen_data(compressible ? DG_TAR : DG_RANDOM, compressible ? 1 : 2, n);
            ceil_cpu cc;
            memset(&cc, 0, sizeof(cc));
            run_cpu_ceilings(c, label, d, n, &cc);
            if (do_big)
                big(c, &x, label, d, n, compressible, cc.par.stream / MB);
            bench_free(d, n);
        }
        dg_release();
    }
    if (do_small) {
        const unsigned th[2] = {1, 8};
        for (int json = 0; json < 2; json++)
            for (int k = 0; k < 2; k++)
                small(c, &x, json ? "json" : "random", json, th[k]);
    }
    if (x.s)
        cmk_store_close(x.s);
    if (x.h) {
        if (!c->o.keep)
            s3_cleanup(&x);
        else
            bench_log("s3: kept %s/%s (--keep)", x.name, x.run);
        cmk_s3_http_free(x.h);
    }
}
