/*
 * datagen.h — deterministic benchmark data.
 *
 * Every generator is a pure function of (shape, seed, offset): the same arguments give the
 * same bytes on every machine and run, so results can be compared across runs, and any byte
 * range of a blob can be produced on its own (a 4 GiB blob is streamed through a 1 MiB
 * buffer, never held in memory).
 *
 * Shapes
 *   DG_TAR     a container layer: a tar stream of text files (sources, configs, docs) and
 *              ELF-like binaries (machine-code-like .text, string and symbol tables, zero
 *              padding), plus a few already-compressed members. Tuned to ~2.5-3x with zstd
 *              level 1 on 1 MiB chunks (`cmkbench gen --stats` prints the measured ratio).
 *   DG_RANDOM  an already-compressed layer (gzip/zstd output): random-looking bytes that
 *              zstd cannot shrink. `bench/run.sh` also benchmarks a real `gzip -1` stream.
 *   DG_JSON    small registry documents (OCI manifests, image configs, indexes).
 *
 * The tar shape is cut from a pool of unique content built once (dg_init) in 64 KiB
 * segments: blob `seed` takes the pool's segments in a seed-dependent order that never
 * repeats a segment within 1024 segments (64 MiB), and each segment carries a 16-byte stamp
 * of (seed, segment) so blobs differ. Generation is then a memcpy, so producing the data does
 * not compete with what is being measured.
 *
 * Thread-safety: dg_fill and dg_json are thread-safe once dg_init has returned.
 */
#ifndef CMKBENCH_DATAGEN_H
#define CMKBENCH_DATAGEN_H

#include <stddef.h>
#include <stdint.h>

typedef enum dg_shape { DG_TAR = 0, DG_RANDOM, DG_JSON } dg_shape;

/* Default pool: 64 MiB, so a 16 MiB chunk never sees a segment twice. */
#define DG_POOL_DEFAULT (64u << 20)
#define DG_SEGMENT      (64u << 10)

/* Builds the tar pool (pool_bytes, a multiple of DG_SEGMENT, >= 2 segments; 0: default).
 * Idempotent: a second call with another size rebuilds. Returns 0, or -1 (out of memory). */
int dg_init(size_t pool_bytes);
/* Releases the pool (munmap), so a process about to fork a memory measurement is lean. */
void dg_release(void);
/* Pool size in bytes (0 before dg_init). */
size_t dg_pool_size(void);

/* "tar", "random", "json" -> shape; -1 if unknown. */
int dg_shape_parse(const char *s);
const char *dg_shape_name(dg_shape s);

/* Fills buf with bytes [off, off + len) of blob (shape, seed). DG_TAR needs dg_init. For
 * DG_JSON this is the JSON document of that size class; use dg_json for exact documents. */
void dg_fill(dg_shape shape, uint64_t seed, uint64_t off, void *buf, size_t len);

/* Writes a JSON-like registry document of exactly len bytes (manifest, config or index,
 * chosen by seed). */
void dg_json(uint64_t seed, void *buf, size_t len);

/* Size of small blob i in a mix: log-uniform over [1 KiB, 64 KiB] (configs and manifests). */
size_t dg_small_size(uint64_t seed, uint64_t i);

/* A 64-bit mix of x (splitmix64 finaliser). */
uint64_t dg_mix(uint64_t x);

#endif
