/* blob_cache.c — decrypted hot blobs for `cmkstore serve` (see blob_cache.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tools/serve/blob_cache.h"

#define BUCKETS    1024
#define DIGEST_CAP 136 /* "sha512:" + 128 hex + NUL */

typedef struct ent ent;
struct ent {
    char digest[DIGEST_CAP];
    uint64_t size;
    int fd;     /* the memory file */
    int ready;  /* published: hits may take it */
    int linked; /* in the table and the LRU list (counted in c->bytes) */
    ent *hnext, *prev, *next;
};

struct blob_cache_fill {
    blob_cache *c;
    ent *e;
    uint64_t have;
    int failed;
};

struct blob_cache {
    pthread_mutex_t mu;
    pthread_cond_t filled; /* a fill ended (published or dropped), or a flush */
    uint64_t max, bytes, entries;
    uint64_t hits, misses, fills, evictions, waits;
    ent *bucket[BUCKETS];
    ent *head, *tail; /* most and least recently used */
};

static unsigned hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

blob_cache *blob_cache_new(uint64_t max_bytes)
{
    blob_cache *c;

    if (max_bytes == 0 || !(c = calloc(1, sizeof(*c))))
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->filled, NULL);
    c->max = max_bytes;
    return c;
}

/* Responses still sending hold their own descriptors: the memory goes when the last closes. */
static void ent_destroy(ent *e)
{
    if (e->fd >= 0)
        close(e->fd);
    free(e);
}

/* Takes e out of the table and the LRU list (c->mu held). */
static void unlink_ent(blob_cache *c, ent *e)
{
    ent **pp = &c->bucket[hash(e->digest)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = e->hnext = NULL;
    e->linked = 0;
    c->bytes -= e->size;
    c->entries--;
}

static void to_front(blob_cache *c, ent *e)
{
    if (c->head == e)
        return;
    if (e->prev)
        e->prev->next = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static ent *find(blob_cache *c, const char *digest)
{
    for (ent *e = c->bucket[hash(digest)]; e; e = e->hnext)
        if (strcmp(e->digest, digest) == 0)
            return e;
    return NULL;
}

static void destroy_list(ent *dead)
{
    while (dead) {
        ent *n = dead->next;
        ent_destroy(dead);
        dead = n;
    }
}

void blob_cache_free(blob_cache *c)
{
    if (!c)
        return;
    blob_cache_flush(c);
    pthread_cond_destroy(&c->filled);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Entries being filled are unlinked too; their filler drops them at its end. */
void blob_cache_flush(blob_cache *c)
{
    ent *dead = NULL;

    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    while (c->head) {
        ent *e = c->head;
        unlink_ent(c, e);
        if (e->ready) {
            e->next = dead;
            dead = e;
        }
    }
    pthread_cond_broadcast(&c->filled);
    pthread_mutex_unlock(&c->mu);
    destroy_list(dead);
}

/* c->mu held. With wait set, a fill of digest at this size in progress is waited for, up to
 * BLOB_CACHE_WAIT_S seconds. */
static int get_locked(blob_cache *c, const char *digest, uint64_t size, int wait)
{
    struct timespec until;
    int fd = -1, waited = 0;
    ent *e;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += BLOB_CACHE_WAIT_S;
    while ((e = find(c, digest)) && !e->ready && e->size == size && wait) {
        if (!waited++)
            c->waits++;
        if (pthread_cond_timedwait(&c->filled, &c->mu, &until) == ETIMEDOUT)
            break;
    }
    e = find(c, digest);
    if (e && e->ready && e->size == size)
        fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0) {
        to_front(c, e);
        c->hits++;
    } else {
        c->misses++;
    }
    return fd;
}

static int get(blob_cache *c, const char *digest, uint64_t size, int wait)
{
    int fd;

    if (!c)
        return -1;
    pthread_mutex_lock(&c->mu);
    fd = get_locked(c, digest, size, wait);
    pthread_mutex_unlock(&c->mu);
    return fd;
}

int blob_cache_get(blob_cache *c, const char *digest, uint64_t size)
{
    return get(c, digest, size, 0);
}

int blob_cache_get_wait(blob_cache *c, const char *digest, uint64_t size)
{
    return get(c, digest, size, 1);
}

blob_cache_fill *blob_cache_fill_begin(blob_cache *c, const char *digest, uint64_t size)
{
    blob_cache_fill *f = NULL;
    ent *e = NULL, *dead = NULL;
    size_t len = strlen(digest);

    if (!c || size == 0 || size > c->max / 2 || len >= DIGEST_CAP)
        return NULL;
    if (!(f = calloc(1, sizeof(*f))) || !(e = calloc(1, sizeof(*e))))
        goto fail;
    memcpy(e->digest, digest, len + 1);
    e->size = size;
    e->fd = memfd_create("cmkstore-blob-cache", MFD_CLOEXEC);
    if (e->fd < 0)
        goto fail;
    pthread_mutex_lock(&c->mu);
    if (find(c, digest)) {
        pthread_mutex_unlock(&c->mu);
        goto fail;
    }
    /* Room: evict the least recently used published entries (fills in progress stay). */
    for (ent *v = c->tail; v && c->bytes + size > c->max;) {
        ent *prev = v->prev;
        if (v->ready) {
            unlink_ent(c, v);
            c->evictions++;
            v->next = dead;
            dead = v;
        }
        v = prev;
    }
    if (c->bytes + size > c->max) {
        pthread_mutex_unlock(&c->mu);
        goto fail;
    }
    e->linked = 1;
    e->hnext = c->bucket[hash(digest)];
    c->bucket[hash(digest)] = e;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
    c->bytes += size;
    c->entries++;
    pthread_mutex_unlock(&c->mu);
    f->c = c;
    f->e = e;
    e = NULL;
fail:
    destroy_list(dead);
    if (e)
        ent_destroy(e); /* fd -1 if memfd_create failed */
    if (f && !f->e) {
        free(f);
        f = NULL;
    }
    return f;
}

int blob_cache_fill_add(blob_cache_fill *f, const void *p, size_t n)
{
    const char *b = p;

    if (!f)
        return 0;
    if (f->failed || n > f->e->size - f->have) {
        f->failed = 1;
        return -1;
    }
    while (n > 0) {
        ssize_t w = pwrite(f->e->fd, b, n, (off_t)f->have);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            f->failed = 1; /* ENOSPC/ENOMEM in the memory file: no entry */
            return -1;
        }
        b += w;
        n -= (size_t)w;
        f->have += (uint64_t)w;
    }
    return 0;
}

void blob_cache_fill_end(blob_cache_fill *f, int complete)
{
    blob_cache *c;
    ent *e;
    int drop = 0;

    if (!f)
        return;
    c = f->c;
    e = f->e;
    pthread_mutex_lock(&c->mu);
    if (complete && !f->failed && f->have == e->size && e->linked) {
        e->ready = 1;
        c->fills++;
    } else {
        if (e->linked)
            unlink_ent(c, e);
        drop = 1;
    }
    pthread_cond_broadcast(&c->filled);
    pthread_mutex_unlock(&c->mu);
    if (drop)
        ent_destroy(e);
    free(f);
}

void blob_cache_get_stats(blob_cache *c, blob_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    out->hits = c->hits;
    out->misses = c->misses;
    out->fills = c->fills;
    out->evictions = c->evictions;
    out->waits = c->waits;
    out->bytes = c->bytes;
    out->entries = c->entries;
    out->max_bytes = c->max;
    pthread_mutex_unlock(&c->mu);
}
