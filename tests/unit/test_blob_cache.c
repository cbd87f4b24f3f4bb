/* test_blob_cache.c — the server's cache of decrypted blobs (tools/serve/blob_cache.c): a fill
 * is published only whole and exact; a hit is a descriptor whose bytes are the blob's; least
 * recently used entries are evicted by bytes; a blob over half the cache and a second fill of
 * the same blob are refused; a descriptor handed out keeps its bytes after eviction and flush;
 * a flush during a fill publishes nothing; a read that waits for a fill in progress gets the
 * entry when it is published and a miss when it is dropped or flushed. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check.h"
#include "tools/serve/blob_cache.h"

static int fill(blob_cache *c, const char *digest, size_t size, unsigned char seed)
{
    blob_cache_fill *f = blob_cache_fill_begin(c, digest, size);
    unsigned char *b;

    if (!f)
        return -1;
    b = malloc(size);
    REQUIRE(b);
    memset(b, seed, size);
    /* in two pieces, as a stream arrives */
    CHECK(blob_cache_fill_add(f, b, size / 2) == 0);
    CHECK(blob_cache_fill_add(f, b + size / 2, size - size / 2) == 0);
    blob_cache_fill_end(f, 1);
    free(b);
    return 0;
}

/* fd holds size bytes, all equal to seed; closes fd. */
static int holds(int fd, size_t size, unsigned char seed)
{
    unsigned char buf[1024];
    size_t off = 0;
    int ok = fd >= 0;

    while (ok && off < size) {
        ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
        if (n <= 0)
            ok = 0;
        for (ssize_t i = 0; ok && i < n; i++)
            ok = buf[i] == seed;
        off += n > 0 ? (size_t)n : 0;
    }
    if (ok && pread(fd, buf, 1, (off_t)size) != 0) /* nothing beyond */
        ok = 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static int hit(blob_cache *c, const char *digest, size_t size)
{
    int fd = blob_cache_get(c, digest, size);

    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

struct waiter {
    blob_cache *c;
    const char *digest;
    size_t size;
    int fd;
};

static void *wait_get(void *arg)
{
    struct waiter *w = arg;

    w->fd = blob_cache_get_wait(w->c, w->digest, w->size);
    return NULL;
}

static uint64_t waits(blob_cache *c)
{
    blob_cache_stats st;

    blob_cache_get_stats(c, &st);
    return st.waits;
}

/* A reader arrives while digest is being filled, and is known to be waiting (the waits counter
 * moved) before the fill ends with complete; returns its descriptor (or -1). end_how: 1
 * publish, 0 drop, 2 flush then publish. No timing: the counter is polled, bounded. */
static int wait_through_fill(blob_cache *c, const char *digest, size_t size, int end_how)
{
    struct waiter w = {c, digest, size, -1};
    blob_cache_fill *f = blob_cache_fill_begin(c, digest, size);
    uint64_t w0 = waits(c);
    char *b = malloc(size);
    pthread_t t;
    int spins = 0;

    REQUIRE(f && b);
    memset(b, 'w', size);
    REQUIRE(pthread_create(&t, NULL, wait_get, &w) == 0);
    while (waits(c) == w0 && spins++ < 100000)
        usleep(100);
    CHECK(waits(c) == w0 + 1); /* the reader is blocked on the fill, not answered a miss */
    CHECK(blob_cache_fill_add(f, b, size) == 0);
    if (end_how == 2)
        blob_cache_flush(c);
    blob_cache_fill_end(f, end_how != 0);
    pthread_join(t, NULL);
    free(b);
    return w.fd;
}

int main(void)
{
    blob_cache_stats st;
    blob_cache_fill *f;
    blob_cache *c;
    int held;

    CHECK(blob_cache_new(0) == NULL); /* no cache */
    CHECK(blob_cache_get(NULL, "sha256:a", 1) == -1);
    CHECK(blob_cache_fill_begin(NULL, "sha256:a", 1) == NULL);

    c = blob_cache_new(1000);
    REQUIRE(c);

    /* a fill is published only once whole */
    f = blob_cache_fill_begin(c, "sha256:a", 300);
    REQUIRE(f);
    CHECK(blob_cache_fill_begin(c, "sha256:a", 300) == NULL); /* being filled already */
    CHECK(!hit(c, "sha256:a", 300));                          /* not visible while filling */
    CHECK(blob_cache_fill_add(f, "xyz", 3) == 0);
    blob_cache_fill_end(f, 1); /* 3 of 300 bytes: dropped */
    CHECK(!hit(c, "sha256:a", 300));
    f = blob_cache_fill_begin(c, "sha256:a", 4);
    REQUIRE(f);
    CHECK(blob_cache_fill_add(f, "12345", 5) == -1); /* more than declared */
    blob_cache_fill_end(f, 1);
    CHECK(!hit(c, "sha256:a", 4));
    f = blob_cache_fill_begin(c, "sha256:a", 4);
    REQUIRE(f);
    CHECK(blob_cache_fill_add(f, "1234", 4) == 0);
    blob_cache_fill_end(f, 0); /* the stream broke off */
    CHECK(!hit(c, "sha256:a", 4));
    blob_cache_get_stats(c, &st);
    CHECK(st.bytes == 0 && st.entries == 0 && st.fills == 0);

    /* hits: the bytes, and only at the right size */
    CHECK(fill(c, "sha256:a", 300, 'a') == 0);
    CHECK(holds(blob_cache_get(c, "sha256:a", 300), 300, 'a'));
    CHECK(!hit(c, "sha256:a", 301));
    CHECK(fill(c, "sha256:a", 300, 'a') == -1);   /* cached already */
    CHECK(fill(c, "sha256:big", 501, 'x') == -1); /* over half the cache */

    /* eviction: a(300) b(300) c(300); a used last; then d(300) evicts b, the least recent */
    CHECK(fill(c, "sha256:b", 300, 'b') == 0);
    CHECK(fill(c, "sha256:c", 300, 'c') == 0);
    held = blob_cache_get(c, "sha256:b", 300); /* a response still sending b */
    CHECK(held >= 0);
    CHECK(hit(c, "sha256:c", 300));
    CHECK(hit(c, "sha256:a", 300));
    CHECK(fill(c, "sha256:d", 300, 'd') == 0);
    CHECK(!hit(c, "sha256:b", 300));
    CHECK(hit(c, "sha256:a", 300) && hit(c, "sha256:c", 300) && hit(c, "sha256:d", 300));
    CHECK(holds(held, 300, 'b')); /* evicted, but its sender's bytes are intact */
    blob_cache_get_stats(c, &st);
    CHECK(st.evictions == 1 && st.entries == 3 && st.bytes == 900);

    /* flush while a descriptor is out and a fill runs */
    held = blob_cache_get(c, "sha256:d", 300);
    CHECK(held >= 0);
    f = blob_cache_fill_begin(c, "sha256:f", 100);
    REQUIRE(f);
    blob_cache_flush(c);
    blob_cache_get_stats(c, &st);
    CHECK(st.bytes == 0 && st.entries == 0);
    CHECK(!hit(c, "sha256:d", 300));
    CHECK(holds(held, 300, 'd'));
    {
        char hundred[100];
        memset(hundred, 'f', sizeof(hundred));
        CHECK(blob_cache_fill_add(f, hundred, sizeof(hundred)) == 0);
    }
    blob_cache_fill_end(f, 1); /* flushed meanwhile: not published */
    CHECK(!hit(c, "sha256:f", 100));
    CHECK(fill(c, "sha256:f", 100, 'f') == 0);
    CHECK(holds(blob_cache_get(c, "sha256:f", 100), 100, 'f'));
    blob_cache_get_stats(c, &st);
    CHECK(st.entries == 1 && st.bytes == 100 && st.max_bytes == 1000 && st.hits >= 8);

    /* readers that wait for a fill in progress */
    CHECK(holds(wait_through_fill(c, "sha256:w1", 200, 1), 200, 'w')); /* published: a hit */
    CHECK(holds(blob_cache_get_wait(c, "sha256:w1", 200), 200, 'w'));  /* ready: no wait */
    CHECK(wait_through_fill(c, "sha256:w2", 200, 0) == -1);            /* dropped: a miss */
    CHECK(wait_through_fill(c, "sha256:w3", 200, 2) == -1);            /* flushed: a miss */
    CHECK(!hit(c, "sha256:w3", 200));
    CHECK(blob_cache_get_wait(c, "sha256:none", 10) == -1); /* nothing being filled: no wait */

    blob_cache_free(c);
    return check_summary();
}
