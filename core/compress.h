/*
 * compress.h — per-chunk zstd compression with a raw fallback.
 *
 * A chunk is stored compressed only when zstd saves a useful margin (1/16 of its size);
 * otherwise it is stored raw, so already-compressed layers (gzip, zstd) cost no
 * decompression on reads. To avoid spending a full compression attempt on such data, a
 * small sample of the chunk is compressed first: if the sample does not shrink, the chunk
 * goes raw without the full attempt.
 *
 * Thread-safety: all functions are thread-safe; zstd contexts are per thread.
 */
#ifndef CMK_COMPRESS_H
#define CMK_COMPRESS_H

#include <stddef.h>

#include "core/base/error.h"

#define CMK_ZSTD_LEVEL 1

/* Worst-case compressed size of n bytes. */
size_t cmk_compress_bound(size_t n);

/* Decides and compresses. On return *compressed is 1 with *outlen bytes in dst, or 0 (store
 * src raw; dst contents undefined). dst must hold cmk_compress_bound(n). */
CMK_MUST_CHECK cmk_err cmk_compress_chunk(const void *src, size_t n, void *dst, size_t cap,
                                          size_t *outlen, int *compressed, cmk_errbuf *eb);

/* 1 if data starting with these bytes is already compressed by a format that zstd cannot
 * improve on (gzip, zstd, xz, lz4 frame magic: gzip and zstd are what OCI layers
 * use), so a whole blob can be stored raw without any compression attempt. Counts the
 * decision in the statistics (magic_raw) when it returns 1. */
int cmk_compress_skip(const void *head, size_t n);

/* Decompresses exactly `expect` bytes into dst; CMK_E_CORRUPT if the frame is bad or its
 * size differs. */
CMK_MUST_CHECK cmk_err cmk_decompress_chunk(const void *src, size_t n, void *dst, size_t expect,
                                            cmk_errbuf *eb);

/* Process-wide statistics, for the benchmark: chunks stored raw after the sample probe only,
 * raw after a full attempt, and compressed; blobs stored raw on their magic alone. */
typedef struct cmk_compress_stats {
    unsigned long long probe_raw, full_raw, compressed;
    unsigned long long magic_raw;
} cmk_compress_stats;
void cmk_compress_stats_get(cmk_compress_stats *out);

#endif
