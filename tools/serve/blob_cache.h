/*
 * blob_cache.h — decrypted hot blobs kept in memory by `cmkstore serve` (--cache-mb), so that
 * many clients pulling the same layer decrypt it once and are answered straight from memory
 * (MHD sends from the cached bytes: no read, no decryption, no copy in the server).
 *
 * What goes in: only a blob read whole and authenticated by the store (the filler is fed
 * what cmk_get_read returned and the entry is published only when every byte arrived).
 * Fail-closed: the cache never answers by itself. The caller opens the blob through the store
 * first (key gate, blob present, size) and only then takes the cached bytes; a key-access
 * failure empties the cache (blob_cache_flush). Entries live in anonymous mappings excluded
 * from core dumps and are zeroed when dropped. Eviction: least recently used, by bytes;
 * entries still being sent stay alive (reference counts) until their last sender lets go.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef CMK_SERVE_BLOB_CACHE_H
#define CMK_SERVE_BLOB_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob_cache blob_cache;
typedef struct blob_cache_ent blob_cache_ent;
typedef struct blob_cache_fill blob_cache_fill;

/* A cache of at most max_bytes of plaintext; a blob larger than max_bytes / 2 is never
 * cached. NULL for max_bytes 0 (no cache: every function accepts a NULL cache) or ENOMEM. */
blob_cache *blob_cache_new(uint64_t max_bytes);
/* Drops every entry and frees the cache. Only once no entry is referenced or being filled
 * (the server has stopped). NULL is a no-op. */
void blob_cache_free(blob_cache *c);

/* A hit: a reference to digest's size bytes at *data (read-only, valid until released).
 * NULL on a miss or when the cached size differs from size. */
blob_cache_ent *blob_cache_get(blob_cache *c, const char *digest, uint64_t size,
                               const unsigned char **data);
void blob_cache_release(blob_cache_ent *e);

/* Starts filling digest (size bytes) on a miss; NULL when it cannot be cached (too big,
 * already cached or being filled, no memory). */
blob_cache_fill *blob_cache_fill_begin(blob_cache *c, const char *digest, uint64_t size);
/* Appends the next n authenticated bytes; 0, or -1 if they overflow the declared size (the
 * fill is then abandoned at its end). */
int blob_cache_fill_add(blob_cache_fill *f, const void *p, size_t n);
/* Publishes the entry if complete is set and exactly size bytes arrived, else drops it.
 * NULL is a no-op. */
void blob_cache_fill_end(blob_cache_fill *f, int complete);

/* Drops every entry now (the store's key became unusable). */
void blob_cache_flush(blob_cache *c);

typedef struct blob_cache_stats {
    uint64_t hits, misses, fills, evictions, bytes, entries, max_bytes;
} blob_cache_stats;
void blob_cache_get_stats(blob_cache *c, blob_cache_stats *out);

#endif
