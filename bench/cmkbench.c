/*
 * cmkbench.c — the cmkstore benchmark harness: measures this machine's ceilings and the
 * store's throughput, small-blob rate, chunk/thread sweep, io_uring against sync, rotation
 * and open latency against store size, and peak RSS, in one run; prints a table and writes
 * JSON and an SVG plot. See bench/RESULTS.md for what each figure is and how ratios are
 * computed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "bench/cmkbench.h"
#include "core/base/pool.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cmkbench COMMAND [options]\n"
               "\n"
               "commands:\n"
               "  all        everything below, in one run (the default)\n"
               "  ceilings   SHA-256, zstd-1, AES-256-GCM, memcpy, page faults, seq write+fsync\n"
               "             and read, durable small files\n"
               "  put        put throughput of --file F or --shape S (both engines)\n"
               "  get        get throughput (warm and cold) of --file F or --shape S\n"
               "  small      many small blobs: 4 KiB and 1-64 KiB JSON, puts/s and gets/s\n"
               "  sweep      chunk size (64 KiB..16 MiB) x worker threads (1, 2, 4)\n"
               "  rotation   rotate-key time and store open latency at 1, 1k, 5k blobs\n"
               "  rss        peak RSS of a big put and get (forked child, wait4)\n"
               "  gen SHAPE  write generated data (tar, random, json) to --out (- = stdout);\n"
               "             --stats prints its zstd-1 ratio instead\n"
               "\n"
               "options:\n"
               "  --dir DIR          where the run directory is made (default /work/cmkbench-data\n"
               "                     if /work exists, else ./cmkbench-data); removed at the end\n"
               "  --size-mb N        bytes per big-blob data set (default 1024; --quick 64)\n"
               "  --sample-mb N      bytes the CPU ceilings use (default 256)\n"
               "  --reps N           repetitions per big-blob put (default 3; --quick 1);\n"
               "                     warm gets: 8 passes per engine, alternating with the\n"
               "                     other engine; cold gets: 8 per engine if N >= 2\n"
               "  --threads N        store worker threads (default: online cores)\n"
               "  --depth N          chunks in flight per stream (default: the store's)\n"
               "  --chunk-kb N       chunk size of the stores (default 1024)\n"
               "  --engines LIST     uring,sync (default), uring, or sync\n"
               "  --file F           benchmark this file (put/get; with `all`: an extra data set)\n"
               "  --shape S          tar or random (put/get without --file; default tar)\n"
               "  --small N          small blobs: each mode puts 2N per engine, in 8 segments\n"
               "                     alternating with the other engine (default 2000;\n"
               "                     --quick 200)\n"
               "  --sweep-mb N       data per sweep point (default 256; --quick 16)\n"
               "  --rot-blobs A,B,C  rotation store sizes in blobs (default 1,1000,5000)\n"
               "  --rot-mb N         plaintext of the largest rotation store (default 2048)\n"
               "  --rss-mb N         size of the peak-RSS put/get (default 4096; --quick 256)\n"
               "  --store s3://BUCKET[/PREFIX]\n"
               "                     run on an S3 store instead (all, ceilings, put, get,\n"
               "                     small): put/get and 4 KiB puts/gets against raw PUT/GET\n"
               "                     of the same bytes to the same bucket with the same S3\n"
               "                     client, plus the CPU ceilings; the local-disk scenarios\n"
               "                     are skipped. Endpoint, region and credentials as for the\n"
               "                     CLI: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION,\n"
               "                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,\n"
               "                     AWS_CA_BUNDLE. Defaults there: --size-mb 256 (--quick 16),\n"
               "                     --small 400 (--quick 64). Objects go below\n"
               "                     PREFIX/cmkbench-<hex>/ and are deleted at the end\n"
               "  --s3-endpoint URL  the S3 endpoint (overrides AWS_ENDPOINT_URL_S3)\n"
               "  --no-cold          skip cold-cache reads (they need root to drop the cache)\n"
               "  --wait-quiet S     first wait up to S seconds for other processes to go idle\n"
               "  --json F  --txt F  --svg F   outputs (the table always goes to stdout)\n"
               "  --keep             keep the run directory\n"
               "  --quick            CI-sized smoke run\n"
               "  --seed N  --out F  --stats   for gen\n"
               "  -h, --help\n");
}

static uint64_t parse_u64(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v ? v : "", &end, 10);
    if (!v || errno || *end || end == v)
        bench_die("%s needs a number, got '%s'", opt, v ? v : "");
    return x;
}

static const char *fs_name(const char *dir)
{
    struct statfs sf;
    if (statfs(dir, &sf) != 0)
        return "?";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
        return "ext4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs";
    case 0x794c7630:
        return "overlayfs";
    case 0x2FC12FC1:
        return "zfs";
    case 0xF2F52010:
        return "f2fs";
    }
    return "other";
}

static void cpu_model(char *out, size_t cap)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");

    snprintf(out, cap, "unknown CPU");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p += 1 + strspn(p + 1, " \t");
                p[strcspn(p, "\n")] = '\0';
                snprintf(out, cap, "%s", p);
            }
            break;
        }
    fclose(f);
}

/* The machine's load average now (1, 5, 15 min, from /proc/loadavg) into meta.key: on a
 * shared machine it says how far the absolute figures can be trusted. */
static void set_loadavg(bench_ctx *c, const char *key)
{
    char buf[128] = "";
    FILE *f = fopen("/proc/loadavg", "r");
    double l1, l5, l15;

    if (!f)
        return;
    if (fgets(buf, sizeof(buf), f) && sscanf(buf, "%lf %lf %lf", &l1, &l5, &l15) == 3) {
        snprintf(buf, sizeof(buf), "%.2f %.2f %.2f", l1, l5, l15);
        json_object_set_new(json_object_get(c->json, "meta"), key, json_string(buf));
    }
    fclose(f);
}

static void set_meta(bench_ctx *c, const char *cmd, const char *data_desc)
{
    struct utsname un;
    char model[256], machine[512], date[64];
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    time_t now = time(NULL);
    struct tm tm;

    cpu_model(model, sizeof(model));
    if (uname(&un) != 0)
        memset(&un, 0, sizeof(un));
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        char cpus[48];
        if (online > (long)c->cores)
            snprintf(cpus, sizeof(cpus), "%u of %ld CPUs", c->cores, online);
        else
            snprintf(cpus, sizeof(cpus), "%u CPUs", c->cores);
        snprintf(machine, sizeof(machine), "%s (%s), %.0f GiB RAM, Linux %s, %s on %s", cpus, model,
                 (double)pages * (double)ps / (double)(1ull << 30), un.release, fs_name(c->o.dir),
                 c->o.dir);
    }
    report_set(c, "meta",
               json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:I, s:I, s:i, "
                         "s:i, s:i, s:b, s:b}",
                         "tool", "cmkbench " CMKSTORE_VERSION_STRING, "date", date, "command",
                         c->o.cmdline, "subcommand", cmd, "machine", machine, "cpu", model, "cores",
                         (int)c->cores, "kernel", un.release, "openssl",
                         OpenSSL_version(OPENSSL_VERSION), "zstd", ZSTD_versionString(),
                         "size_bytes", (json_int_t)c->o.size, "chunk_bytes", (json_int_t)c->o.chunk,
                         "threads", (int)c->o.threads, "reps", (int)c->o.reps, "small_count",
                         (int)c->o.small_count, "cold_cache_dropped", c->can_drop && !c->o.no_cold,
                         "quick", c->o.quick));
    json_object_set_new(json_object_get(c->json, "meta"), "data", json_string(data_desc));
    if (c->o.store)
        json_object_set_new(json_object_get(c->json, "meta"), "store", json_string(c->o.store));
    set_loadavg(c, "loadavg_start");
}

uint8_t *bench_gen_data(dg_shape shape, uint64_t seed, size_t n)
{
    uint8_t *p = bench_alloc(n);
    const size_t step = 64u << 20;

    for (size_t off = 0; off < n; off += step)
        dg_fill(shape, seed, off, p + off, n - off < step ? n - off : step);
    return p;
}

static uint8_t *load_file(const char *path, size_t *n)
{
    struct stat st;
    uint8_t *p;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0)
        bench_die("cannot open %s: %s", path, strerror(errno));
    if (st.st_size <= 0)
        bench_die("%s is empty", path);
    *n = (size_t)st.st_size;
    p = bench_alloc(*n);
    while (got < *n) {
        ssize_t r = read(fd, p + got, *n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            bench_die("cannot read %s: %s", path, r < 0 ? strerror(errno) : "short file");
        got += (size_t)r;
    }
    close(fd);
    return p;
}

static int cmd_gen(bench_ctx *c, int argc, char **argv, int i)
{
    const char *out = "-";
    uint64_t seed = 1, size = 64 * MiB;
    int stats = 0, shape = -1;

    for (; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = parse_u64("--seed", argv[++i]);
        else if (strcmp(argv[i], "--size-mb") == 0 && i + 1 < argc)
            size = parse_u64("--size-mb", argv[++i]) * MiB;
        else if (strcmp(argv[i], "--stats") == 0)
            stats = 1;
        else if (shape < 0 && dg_shape_parse(argv[i]) >= 0)
            shape = dg_shape_parse(argv[i]);
        else
            bench_die("gen: unknown argument '%s'", argv[i]);
    }
    if (shape < 0)
        shape = DG_TAR;
    if (shape == DG_TAR && dg_init(0) != 0)
        bench_die("cannot build the generator pool");
    if (stats) {
        uint8_t *d = bench_gen_data((dg_shape)shape, seed, (size_t)size);
        ceil_cpu cc;
        if (ceil_measure_cpu(d, (size_t)size, (size_t)size, c->o.chunk, &cc) != 0)
            bench_die("measurement failed");
        printf("%s: %llu bytes, zstd-1 ratio %.3f on %u KiB chunks (stored %llu bytes), "
               "zstd-1 %.0f MB/s, sha256 %.0f MB/s\n",
               dg_shape_name((dg_shape)shape), (unsigned long long)size, cc.ratio, c->o.chunk >> 10,
               (unsigned long long)cc.zbytes, cc.zstd_c / MB, cc.sha256 / MB);
        bench_free(d, (size_t)size);
        return 0;
    }
    FILE *f = strcmp(out, "-") == 0 ? stdout : fopen(out, "wb");
    if (!f)
        bench_die("cannot write %s: %s", out, strerror(errno));
    uint8_t *buf = bench_alloc(1u << 20);
    for (uint64_t off = 0; off < size; off += 1u << 20) {
        size_t len = size - off < (1u << 20) ? (size_t)(size - off) : (1u << 20);
        dg_fill((dg_shape)shape, seed, off, buf, len);
        if (fwrite(buf, 1, len, f) != len)
            bench_die("write %s: %s", out, strerror(errno));
    }
    bench_free(buf, 1u << 20);
    if (f != stdout ? fclose(f) != 0 : fflush(f) != 0)
        bench_die("write %s: %s", out, strerror(errno));
    return 0;
}

static void parse_engines(bench_opts *o, const char *v)
{
    if (strcmp(v, "uring,sync") == 0 || strcmp(v, "both") == 0) {
        o->engines[0] = "uring";
        o->engines[1] = "sync";
        o->nengines = 2;
    } else if (strcmp(v, "sync,uring") == 0) {
        o->engines[0] = "sync";
        o->engines[1] = "uring";
        o->nengines = 2;
    } else if (strcmp(v, "uring") == 0 || strcmp(v, "sync") == 0) {
        o->engines[0] = strcmp(v, "uring") == 0 ? "uring" : "sync";
        o->nengines = 1;
    } else {
        bench_die("--engines: expected uring,sync | uring | sync");
    }
}

static void parse_rot(bench_opts *o, const char *v)
{
    unsigned a, b, d;
    if (!v || sscanf(v, "%u,%u,%u", &a, &b, &d) != 3 || a == 0 || b == 0 || d == 0)
        bench_die("--rot-blobs needs A,B,C");
    o->rot_blobs[0] = a;
    o->rot_blobs[1] = b;
    o->rot_blobs[2] = d;
}

int main(int argc, char **argv)
{
    static bench_ctx ctx;
    bench_ctx *c = &ctx;
    bench_opts *o = &c->o;
    const char *cmd = "all", *shape_s = "tar";
    int have = 0, i = 1;
    int set_size = 0, set_reps = 0, set_small = 0, set_rss = 0, set_sweep = 0, set_rot = 0,
        set_rotmb = 0;
    size_t len = 0;
    struct stat st;
    bench_usage run_a, run_b, run_d;

    /* The exact command line, for the report. */
    for (int k = 0; k < argc && len + 2 < sizeof(o->cmdline); k++) {
        int w = snprintf(o->cmdline + len, sizeof(o->cmdline) - len, "%s%s", k ? " " : "", argv[k]);
        if (w < 0)
            break;
        len += (size_t)w;
        if (len >= sizeof(o->cmdline))
            len = sizeof(o->cmdline) - 1;
    }
    o->dir = stat("/work", &st) == 0 ? "/work/cmkbench-data" : "./cmkbench-data";
    o->size = 1024 * MiB;
    o->sample = 256 * MiB;
    o->reps = 3;
    o->chunk = 1u << 20;
    o->engines[0] = "uring";
    o->engines[1] = "sync";
    o->nengines = 2;
    o->rss_size = 4096 * MiB;
    o->small_count = 2000;
    o->rot_blobs[0] = 1;
    o->rot_blobs[1] = 1000;
    o->rot_blobs[2] = 5000;
    o->rot_bytes = 2048 * MiB;
    o->sweep_size = 256 * MiB;
    c->cores = cmk_ncpu(); /* those it may run on (bench/run.sh --store may pin it) */
    c->t0 = bench_now();

    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        i = 2;
    }
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "gen") == 0)
        return cmd_gen(c, argc, argv, i);
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--quick") == 0) {
            o->quick = 1;
            continue;
        } else if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            continue;
        } else if (strcmp(a, "--no-cold") == 0) {
            o->no_cold = 1;
            continue;
        }
        if (!v)
            bench_die("%s needs a value (see --help)", a);
        i++;
        if (strcmp(a, "--dir") == 0) {
            o->dir = v;
        } else if (strcmp(a, "--size-mb") == 0) {
            o->size = parse_u64(a, v) * MiB;
            set_size = 1;
        } else if (strcmp(a, "--sample-mb") == 0) {
            o->sample = parse_u64(a, v) * MiB;
        } else if (strcmp(a, "--reps") == 0) {
            o->reps = (unsigned)parse_u64(a, v);
            set_reps = 1;
        } else if (strcmp(a, "--threads") == 0) {
            o->threads = (unsigned)parse_u64(a, v);
        } else if (strcmp(a, "--depth") == 0) {
            o->depth = (unsigned)parse_u64(a, v);
        } else if (strcmp(a, "--chunk-kb") == 0) {
            o->chunk = (uint32_t)(parse_u64(a, v) << 10);
        } else if (strcmp(a, "--engines") == 0) {
            parse_engines(o, v);
        } else if (strcmp(a, "--file") == 0) {
            o->file = v;
        } else if (strcmp(a, "--store") == 0) {
            if (strncmp(v, "s3://", 5) != 0)
                bench_die("--store takes an S3 store, s3://BUCKET[/PREFIX] (a local store is "
                          "what the run without --store measures)");
            o->store = v;
        } else if (strcmp(a, "--s3-endpoint") == 0) {
            /* As the CLI: the library takes the endpoint from the environment. */
            if (setenv("AWS_ENDPOINT_URL_S3", v, 1) != 0)
                bench_die("cannot set the S3 endpoint");
        } else if (strcmp(a, "--shape") == 0) {
            shape_s = v;
        } else if (strcmp(a, "--small") == 0) {
            o->small_count = (unsigned)parse_u64(a, v);
            set_small = 1;
        } else if (strcmp(a, "--sweep-mb") == 0) {
            o->sweep_size = parse_u64(a, v) * MiB;
            set_sweep = 1;
        } else if (strcmp(a, "--rot-blobs") == 0) {
            parse_rot(o, v);
            set_rot = 1;
        } else if (strcmp(a, "--rot-mb") == 0) {
            o->rot_bytes = parse_u64(a, v) * MiB;
            set_rotmb = 1;
        } else if (strcmp(a, "--rss-mb") == 0) {
            o->rss_size = parse_u64(a, v) * MiB;
            set_rss = 1;
        } else if (strcmp(a, "--wait-quiet") == 0) {
            o->wait_quiet = (double)parse_u64(a, v);
        } else if (strcmp(a, "--json") == 0) {
            o->json_out = v;
        } else if (strcmp(a, "--txt") == 0) {
            o->txt_out = v;
        } else if (strcmp(a, "--svg") == 0) {
            o->svg_out = v;
        } else {
            usage(stderr);
            bench_die("unknown option %s", a);
        }
    }
    if (o->store && o->file)
        bench_die("--file is not measured with --store s3:// (its data sets are random and "
                  "tar-like, --size-mb each)");
    if (o->store) {
        /* An object store behind a network: smaller defaults (each put crosses it twice). */
        if (!set_size)
            o->size = (o->quick ? 16 : 256) * MiB;
        if (!set_small)
            o->small_count = o->quick ? 64 : 400;
        set_size = set_small = 1;
    }
    if (o->quick) {
        if (!set_size)
            o->size = 64 * MiB;
        if (!set_reps)
            o->reps = 1;
        if (!set_small)
            o->small_count = 200;
        if (!set_rss)
            o->rss_size = 256 * MiB;
        if (!set_sweep)
            o->sweep_size = 16 * MiB;
        if (!set_rot)
            parse_rot(o, "1,100,500");
        if (!set_rotmb)
            o->rot_bytes = 64 * MiB;
    }
    if (o->reps == 0 || o->size < MiB || o->small_count < 16 || o->chunk < (64u << 10))
        bench_die("sizes too small (size >= 1 MiB, reps >= 1, small >= 16, chunk >= 64 KiB)");
    if (o->sweep_size > o->size)
        o->sweep_size = o->size;
    if (o->sample > o->size)
        o->sample = o->size;

    have = !strcmp(cmd, "all") || !strcmp(cmd, "ceilings") || !strcmp(cmd, "put") ||
           !strcmp(cmd, "get") || !strcmp(cmd, "small") || !strcmp(cmd, "sweep") ||
           !strcmp(cmd, "rotation") || !strcmp(cmd, "rss");
    if (!have) {
        usage(stderr);
        bench_die("unknown command '%s'", cmd);
    }
    if (geteuid() == 0 && !o->no_cold) {
        /* Only root may drop the page cache; test once, before anything is cached. */
        c->can_drop = bench_drop_caches() == 0;
    }

    char data_desc[512];
    snprintf(data_desc, sizeof(data_desc),
             "tar-like corpus and random (already-compressed) data, %llu MiB each; chunk %u "
             "KiB; %u worker threads; %u rep(s)%s",
             (unsigned long long)(o->size >> 20), o->chunk >> 10,
             o->threads ? o->threads : c->cores, o->reps, c->can_drop ? "" : "; no cold reads");
    if (o->store)
        snprintf(data_desc, sizeof(data_desc),
                 "store %s: random (incompressible) and tar-like (compressible) %llu MiB each, "
                 "%u rep(s); %u 4 KiB blobs per mode; chunk %u KiB; %u worker threads",
                 o->store, (unsigned long long)(o->size >> 20), o->reps, o->small_count,
                 o->chunk >> 10, o->threads ? o->threads : c->cores);
    else if (o->file && (!strcmp(cmd, "put") || !strcmp(cmd, "get")))
        snprintf(data_desc, sizeof(data_desc), "file %s; chunk %u KiB", o->file, o->chunk >> 10);
    /* The run directory's parent must exist for the file system to be named. */
    if (mkdir(o->dir, 0700) != 0 && errno != EEXIST)
        bench_die("cannot create %s: %s", o->dir, strerror(errno));
    set_meta(c, cmd, data_desc);
    bench_log("cmkbench %s: %s", cmd, data_desc);

    if (o->wait_quiet > 0) {
        double bg = bench_wait_quiet(o->wait_quiet);
        json_object_set_new(json_object_get(c->json, "meta"), "background_cores_at_start",
                            json_real(bg));
        if (bg >= 0.1)
            bench_log("the machine is still busy (%.2f cores used by others): figures will "
                      "be low; see the bg column",
                      bg);
    }

    bench_usage_get(&run_a);

    /* Peak RSS first, while this process is lean (see scen_rss.c). */
    if (!o->store && (!strcmp(cmd, "all") || !strcmp(cmd, "rss")))
        run_rss(c);

    if (o->store) {
        run_s3(c, cmd, shape_s);
    } else if (!strcmp(cmd, "all") || !strcmp(cmd, "ceilings") || !strcmp(cmd, "sweep")) {
        size_t n = (size_t)o->size;
        uint8_t *tar, *rnd;

        if (dg_init(0) != 0)
            bench_die("cannot build the generator pool");
        bench_log("generating %zu MiB tar-like and %zu MiB random data", n >> 20, n >> 20);
        tar = bench_gen_data(DG_TAR, 1, n);
        rnd = bench_gen_data(DG_RANDOM, 2, n);
        if (strcmp(cmd, "sweep") != 0) {
            run_ceilings_common(c, rnd, n);
            if (!strcmp(cmd, "ceilings")) {
                run_cpu_ceilings(c, "tar", tar, n, NULL);
                run_cpu_ceilings(c, "random", rnd, n, NULL);
                run_small_ceilings(c);
            } else {
                run_bigblob(c, "tar", tar, n, 1, 1);
                run_bigblob(c, "random", rnd, n, 1, 1);
                if (o->file) {
                    size_t fn;
                    uint8_t *fd = load_file(o->file, &fn);
                    const char *base = strrchr(o->file, '/');
                    char label[48];
                    snprintf(label, sizeof(label), "file %s", base ? base + 1 : o->file);
                    run_bigblob(c, label, fd, fn, 1, 1);
                    bench_free(fd, fn);
                }
            }
        }
        if (!strcmp(cmd, "all") || !strcmp(cmd, "sweep"))
            run_sweep(c, tar, rnd, (size_t)o->sweep_size);
        bench_free(tar, n);
        bench_free(rnd, n);
        dg_release();
        if (!strcmp(cmd, "all")) {
            run_small(c);
            run_rotation(c);
        }
    } else if (!strcmp(cmd, "put") || !strcmp(cmd, "get")) {
        size_t n;
        uint8_t *d;
        char label[48];
        if (o->file) {
            const char *base = strrchr(o->file, '/');
            d = load_file(o->file, &n);
            snprintf(label, sizeof(label), "file %s", base ? base + 1 : o->file);
        } else {
            int sh = dg_shape_parse(shape_s);
            if (sh != DG_TAR && sh != DG_RANDOM)
                bench_die("--shape: tar or random");
            if (sh == DG_TAR && dg_init(0) != 0)
                bench_die("cannot build the generator pool");
            n = (size_t)o->size;
            d = bench_gen_data((dg_shape)sh, sh == DG_TAR ? 1 : 2, n);
            snprintf(label, sizeof(label), "%s", shape_s);
        }
        run_ceilings_common(c, d, n);
        run_bigblob(c, label, d, n, !strcmp(cmd, "put"), 1);
        bench_free(d, n);
    } else if (!strcmp(cmd, "small")) {
        run_small(c);
    } else if (!strcmp(cmd, "rotation")) {
        run_rotation(c);
    }

    run_summary(c);
    bench_usage_get(&run_b);
    bench_usage_diff(&run_a, &run_b, &run_d);
    set_loadavg(c, "loadavg_end");
    json_object_set_new(json_object_get(c->json, "meta"), "elapsed_s",
                        json_real(bench_now() - c->t0));
    json_object_set_new(json_object_get(c->json, "meta"), "background_cores_mean",
                        json_real(bench_usage_bg(&run_d)));
    report_print(c, stdout);
    fflush(stdout);
    int rc = report_write(c);
    env_teardown(c);
    report_free(c);
    bench_log("done in %.0f s", bench_now() - c->t0);
    return rc == 0 ? 0 : 1;
}
