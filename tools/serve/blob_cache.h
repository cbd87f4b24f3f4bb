/*
 * blob_cache.h — decrypted hot blobs kept in memory by `cmkstore serve` (--cache-size), so
 * that many clients pulling the same layer decrypt it once and are answered straight from
 * memory: each entry is an anonymous memory file (memfd) that libmicrohttpd sends with
 * sendfile(2), so a hit costs no file read, no decryption and no copy in the server.
 *
 * What goes in: only a blob read whole and authenticated by the store (the filler is fed
 * what cmk_get_read returned and the entry is published only when every byte arrived). The
 * server fills an entry before it answers (at the store's speed, not the client's), and
 * requests for a blob being filled wait for it (blob_cache_get_wait): eight clients asking
 * at once for a cold layer cost one decryption, not eight.
 * Fail-closed: the cache never answers by itself. The caller opens the blob through the store
 * first (key gate, blob present, size) and only then takes the cached bytes; a key-access
 * failure empties the cache (blob_cache_flush). An entry's memory file is never mapped (so
 * never in a core dump), and its pages go back to the kernel, which zeroes them before any
 * reuse, when its last descriptor closes. Eviction: least recently used, by bytes; a response
 * being sent holds a descriptor of its own (blob_cache_get gives a dup), so an evicted entry
 * lives on only until those responses are done.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef CMK_SERVE_BLOB_CACHE_H
#define CMK_SERVE_BLOB_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob_cache blob_cache;
typedef struct blob_cache_fill blob_cache_fill;

/* A cache of at most max_bytes of plaintext; a blob larger than max_bytes / 2 is never
 * cached. NULL for max_bytes 0 (no cache: every function accepts a NULL cache) or ENOMEM. */
blob_cache *blob_cache_new(uint64_t max_bytes);
/* Drops every entry and frees the cache. Only once no fill is running (the server has
 * stopped); descriptors handed out stay valid. NULL is a no-op. */
void blob_cache_free(blob_cache *c);

/* A hit: a new descriptor (close-on-exec; the caller closes it) of a memory file holding
 * digest's size bytes from offset 0. Read it with pread or sendfile only, never write it.
 * -1 on a miss, when the cached size differs from size, or when no descriptor is left (the
 * caller then reads from the store). */
int blob_cache_get(blob_cache *c, const char *digest, uint64_t size);

/* As blob_cache_get, but a fill of digest at this size in progress is waited for first (up
 * to BLOB_CACHE_WAIT_S seconds), so that clients asking at once for a blob being filled are
 * answered from the cache instead of each decrypting it. Never call it while holding a fill
 * of the same digest. */
#define BLOB_CACHE_WAIT_S 60
int blob_cache_get_wait(blob_cache *c, const char *digest, uint64_t size);

/* Starts filling digest (size bytes) on a miss; NULL when it cannot be cached (too big,
 * already cached or being filled, no room, no memory). */
blob_cache_fill *blob_cache_fill_begin(blob_cache *c, const char *digest, uint64_t size);
/* Appends the next n authenticated bytes; 0, or -1 if they overflow the declared size or
 * cannot be stored (the fill is then dropped at its end). NULL f: 0. */
int blob_cache_fill_add(blob_cache_fill *f, const void *p, size_t n);
/* Publishes the entry if complete is set and exactly size bytes arrived, else drops it.
 * NULL is a no-op. */
void blob_cache_fill_end(blob_cache_fill *f, int complete);

/* Drops every entry now (the store's key became unusable). */
void blob_cache_flush(blob_cache *c);

typedef struct blob_cache_stats {
    uint64_t hits, misses, fills, evictions, waits, bytes, entries, max_bytes;
} blob_cache_stats;
void blob_cache_get_stats(blob_cache *c, blob_cache_stats *out);

#endif
