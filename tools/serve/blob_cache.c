/* blob_cache.c — decrypted hot blobs for `cmkstore serve` (see blob_cache.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tools/serve/blob_cache.h"

#define BUCKETS    1024
#define DIGEST_CAP 136 /* "sha512:" + 128 hex + NUL */

struct blob_cache_ent {
    blob_cache *c;
    char digest[DIGEST_CAP];
    uint64_t size, have;
    unsigned char *data;
    size_t maplen;
    unsigned refs; /* senders, plus one for the fill while it runs */
    int ready;     /* published: hits may take it */
    int linked;    /* in the table and the LRU list (counted in c->bytes) */
    blob_cache_ent *hnext, *prev, *next;
};

struct blob_cache_fill {
    blob_cache_ent *e;
    int overflow;
};

struct blob_cache {
    pthread_mutex_t mu;
    uint64_t max, bytes, entries;
    uint64_t hits, misses, fills, evictions;
    blob_cache_ent *bucket[BUCKETS];
    blob_cache_ent *head, *tail; /* most and least recently used */
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
    c->max = max_bytes;
    return c;
}

/* The pages go back to the kernel, which zeroes them before anyone else gets them. */
static void ent_destroy(blob_cache_ent *e)
{
    if (e->data)
        munmap(e->data, e->maplen);
    free(e);
}

/* Takes e out of the table and the LRU list (c->mu held). */
static void unlink_ent(blob_cache *c, blob_cache_ent *e)
{
    blob_cache_ent **pp = &c->bucket[hash(e->digest)];

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

static void to_front(blob_cache *c, blob_cache_ent *e)
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

static blob_cache_ent *find(blob_cache *c, const char *digest)
{
    for (blob_cache_ent *e = c->bucket[hash(digest)]; e; e = e->hnext)
        if (strcmp(e->digest, digest) == 0)
            return e;
    return NULL;
}

/* Drops the entry unless someone still holds it (c->mu held); returns it if the caller must
 * destroy it after unlocking. */
static blob_cache_ent *drop(blob_cache *c, blob_cache_ent *e)
{
    if (e->linked)
        unlink_ent(c, e);
    return e->refs == 0 ? e : NULL;
}

void blob_cache_free(blob_cache *c)
{
    if (!c)
        return;
    blob_cache_flush(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void blob_cache_flush(blob_cache *c)
{
    blob_cache_ent *dead = NULL;

    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    while (c->head) {
        blob_cache_ent *e = drop(c, c->head);
        if (e) {
            e->next = dead;
            dead = e;
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (dead) {
        blob_cache_ent *n = dead->next;
        ent_destroy(dead);
        dead = n;
    }
}

blob_cache_ent *blob_cache_get(blob_cache *c, const char *digest, uint64_t size,
                               const unsigned char **data)
{
    blob_cache_ent *e;

    if (!c)
        return NULL;
    pthread_mutex_lock(&c->mu);
    e = find(c, digest);
    if (e && e->ready && e->size == size) {
        e->refs++;
        to_front(c, e);
        c->hits++;
        *data = e->data;
    } else {
        e = NULL;
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

void blob_cache_release(blob_cache_ent *e)
{
    blob_cache *c;
    int dead;

    if (!e)
        return;
    c = e->c;
    pthread_mutex_lock(&c->mu);
    dead = --e->refs == 0 && !e->linked;
    pthread_mutex_unlock(&c->mu);
    if (dead)
        ent_destroy(e);
}

blob_cache_fill *blob_cache_fill_begin(blob_cache *c, const char *digest, uint64_t size)
{
    blob_cache_fill *f = NULL;
    blob_cache_ent *e = NULL, *dead = NULL;
    size_t len = strlen(digest);

    if (!c || size == 0 || size > c->max / 2 || len >= DIGEST_CAP)
        return NULL;
    if (!(f = calloc(1, sizeof(*f))) || !(e = calloc(1, sizeof(*e))))
        goto fail;
    e->c = c;
    memcpy(e->digest, digest, len + 1);
    e->size = size;
    e->maplen = (size_t)size;
    e->data = mmap(NULL, e->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (e->data == MAP_FAILED) {
        e->data = NULL;
        goto fail;
    }
    /* Plaintext of the store's blobs: never in a core dump. */
    (void)madvise(e->data, e->maplen, MADV_DONTDUMP);
    pthread_mutex_lock(&c->mu);
    if (find(c, digest)) {
        pthread_mutex_unlock(&c->mu);
        goto fail;
    }
    /* Room: evict the least recently used entries nobody is sending. */
    for (blob_cache_ent *v = c->tail; v && c->bytes + size > c->max;) {
        blob_cache_ent *prev = v->prev;
        if (v->refs == 0) {
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
    e->refs = 1;
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
    f->e = e;
    e = NULL;
fail:
    while (dead) {
        blob_cache_ent *n = dead->next;
        ent_destroy(dead);
        dead = n;
    }
    if (e)
        ent_destroy(e);
    if (f && !f->e) {
        free(f);
        f = NULL;
    }
    return f;
}

int blob_cache_fill_add(blob_cache_fill *f, const void *p, size_t n)
{
    blob_cache_ent *e;

    if (!f || f->overflow)
        return f ? -1 : 0;
    e = f->e;
    if (n > e->size - e->have) {
        f->overflow = 1;
        return -1;
    }
    memcpy(e->data + e->have, p, n);
    e->have += n;
    return 0;
}

void blob_cache_fill_end(blob_cache_fill *f, int complete)
{
    blob_cache_ent *e, *dead = NULL;
    blob_cache *c;

    if (!f)
        return;
    e = f->e;
    c = e->c;
    pthread_mutex_lock(&c->mu);
    if (complete && !f->overflow && e->have == e->size && e->linked) {
        e->ready = 1;
        c->fills++;
        e->refs--;
    } else {
        if (e->linked)
            unlink_ent(c, e);
        if (--e->refs == 0)
            dead = e;
    }
    pthread_mutex_unlock(&c->mu);
    if (dead)
        ent_destroy(dead);
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
    out->bytes = c->bytes;
    out->entries = c->entries;
    out->max_bytes = c->max;
    pthread_mutex_unlock(&c->mu);
}
