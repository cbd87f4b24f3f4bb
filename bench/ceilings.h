/*
 * ceilings.h — what this machine can do at best, measured in the same run as the store, on
 * the same bytes and through the same libraries (OpenSSL libcrypto, libzstd) and the same
 * file system. Throughput targets are judged as ratios against these.
 *
 * CPU ceilings run on one thread; the store's bound is derived from them (bench/RESULTS.md):
 *   put CPU bound = bytes / ((t_sha256 + t_zstd1 + t_gcm(compressed bytes)) / cores)
 */
#ifndef CMKBENCH_CEILINGS_H
#define CMKBENCH_CEILINGS_H

#include <stddef.h>
#include <stdint.h>

/* The store's CPU work run on all cores at once (ceil_measure_cpu_parallel), in bytes/s of
 * plaintext; 0: not measured. */
typedef struct ceil_par {
    double put, get; /* the whole put work, the whole get work */
    /* One put stream's CPU work laid out as the store runs it: SHA-256 of all the bytes in
     * order on one thread, beside it the sealers (probe, zstd-1 where it pays, seal) on
     * `threads` threads. No I/O, no pipeline: the most one stream can get from these cores. */
    double stream;
    double sha256, zstd_c, gcm_seal; /* each part of the put alone (if asked for) */
} ceil_par;

typedef struct ceil_cpu {
    uint64_t bytes;    /* bytes measured (a prefix of the data, at most the sample) */
    uint64_t zbytes;   /* their zstd-1 size, chunk by chunk (raw size where zstd loses) */
    size_t chunk;      /* chunk size the data was cut into */
    double sha256;     /* bytes/s, one thread */
    double zstd_c;     /* input bytes/s, level 1, one chunk per call */
    double zstd_d;     /* output bytes/s */
    double zstd_probe; /* input bytes/s of the store's 8 KiB-sample probe alone */
    double gcm_seal;   /* bytes/s, AES-256-GCM, one chunk per call */
    double gcm_open;
    double ratio; /* bytes / zbytes */
    ceil_par par; /* the same work on all cores at once */
} ceil_cpu;

/* Measures on the first min(n, sample) bytes of data cut into `chunk` pieces. 0 or -1. */
int ceil_measure_cpu(const uint8_t *data, size_t n, size_t sample, size_t chunk, ceil_cpu *out);

/* Seconds one thread needs for the put work on n bytes with these rates (sha256 + zstd or
 * probe + GCM over what is stored). */
double ceil_put_cpu_seconds(const ceil_cpu *c, uint64_t n);
/* Seconds one thread needs to open n bytes (GCM over stored bytes + zstd decompression). */
double ceil_get_cpu_seconds(const ceil_cpu *c, uint64_t n);

/* The same work run on `threads` threads at once, each on its share of the chunks (sha256 +
 * zstd-1 + seal for a put, open + unzstd for a get), timed as a whole: what the cores
 * really deliver together, where the computed bound assumes they scale perfectly. With
 * `parts`, also SHA-256, zstd-1 and the GCM seal each alone on all cores: how each part
 * scales from one thread to the cores. Rates in bytes/s of plaintext. 0 or -1. */
int ceil_measure_cpu_parallel(const uint8_t *data, size_t n, size_t sample, size_t chunk,
                              unsigned threads, int parts, ceil_par *out);

typedef struct ceil_mem {
    double memcpy_bps; /* warm buffers, one thread */
    double fault_us;   /* first touch of a fresh anonymous 4 KiB page */
} ceil_mem;

int ceil_measure_mem(size_t n, ceil_mem *out);

typedef struct ceil_disk {
    uint64_t bytes;
    double write_fsync; /* bytes/s: write(2) 1 MiB blocks to a new file, then fsync */
    double write_fsync_min, write_fsync_max;
    double read_warm; /* bytes/s: read(2) the same file from the page cache */
    double read_cold; /* bytes/s: after dropping the page cache; 0 if not possible */
} ceil_disk;

/* One write+fsync of n bytes of data to a new file in dir (removed after), with writeback
 * started every 8 MiB as the data is written: bytes/s, 0 on failure. Run next to each
 * incompressible put, so the put is judged against the disk as it was at that moment (a
 * shared virtual disk varies by 2-3x within minutes). */
double ceil_write_fsync(const char *dir, const uint8_t *data, size_t n);

/* The device's durable sequential write rate: n bytes (a multiple of 4 KiB, data page
 * aligned) written with O_DIRECT in 1 MiB blocks by `threads` threads at once, then fsync;
 * bytes/s, 0 on failure. */
double ceil_write_direct(const char *dir, const uint8_t *data, size_t n, unsigned threads);

/* Writes n bytes of data to a file in dir `reps` times (median), reads it back warm and
 * cold, removes it. */
int ceil_measure_disk(const char *dir, const uint8_t *data, size_t n, unsigned reps,
                      ceil_disk *out);

typedef struct ceil_small {
    unsigned threads;
    unsigned files;
    size_t size;
    double files_per_s; /* durable creates per second over all threads */
    double p50_us, p99_us;
} ceil_small;

/* The durable small-file ceiling, done as the store publishes a blob: O_TMPFILE, write,
 * fsync, linkat into one of 256 directories, fsync that directory. */
int ceil_small_files(const char *dir, size_t size, unsigned files, unsigned threads,
                     ceil_small *out);

/* sync(2), then drops the page cache (needs root). 0 on success, -1 otherwise. */
int bench_drop_caches(void);

#endif
