/* test_blob_cache.c — the server's cache of decrypted blobs (tools/serve/blob_cache.c): a fill
 * is published only whole and exact; hits return the bytes and count; least recently used
 * entries are evicted by bytes, but never one still referenced; a blob over half the cache and
 * a second fill of the same blob are refused; a flush during a fill and while an entry is
 * being sent drops everything without freeing what is in use. */
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const unsigned char *p = NULL;
    blob_cache_stats st;
    blob_cache_ent *e, *held;
    blob_cache_fill *f;
    blob_cache *c;

    CHECK(blob_cache_new(0) == NULL); /* no cache */
    CHECK(blob_cache_get(NULL, "sha256:a", 1, &p) == NULL);
    CHECK(blob_cache_fill_begin(NULL, "sha256:a", 1) == NULL);

    c = blob_cache_new(1000);
    REQUIRE(c);

    /* a fill is published only once whole */
    f = blob_cache_fill_begin(c, "sha256:a", 300);
    REQUIRE(f);
    CHECK(blob_cache_fill_begin(c, "sha256:a", 300) == NULL); /* being filled already */
    CHECK(blob_cache_get(c, "sha256:a", 300, &p) == NULL);    /* not visible while filling */
    CHECK(blob_cache_fill_add(f, "xyz", 3) == 0);
    blob_cache_fill_end(f, 1); /* 3 of 300 bytes: dropped */
    CHECK(blob_cache_get(c, "sha256:a", 300, &p) == NULL);
    f = blob_cache_fill_begin(c, "sha256:a", 4);
    REQUIRE(f);
    CHECK(blob_cache_fill_add(f, "12345", 5) == -1); /* more than declared */
    blob_cache_fill_end(f, 1);
    CHECK(blob_cache_get(c, "sha256:a", 4, &p) == NULL);
    f = blob_cache_fill_begin(c, "sha256:a", 4);
    REQUIRE(f);
    CHECK(blob_cache_fill_add(f, "1234", 4) == 0);
    blob_cache_fill_end(f, 0); /* the stream broke off */
    CHECK(blob_cache_get(c, "sha256:a", 4, &p) == NULL);
    blob_cache_get_stats(c, &st);
    CHECK(st.bytes == 0 && st.entries == 0 && st.fills == 0);

    /* hits */
    CHECK(fill(c, "sha256:a", 300, 'a') == 0);
    e = blob_cache_get(c, "sha256:a", 300, &p);
    REQUIRE(e);
    CHECK(p[0] == 'a' && p[299] == 'a');
    CHECK(blob_cache_get(c, "sha256:a", 301, &p) == NULL); /* another size: a miss */
    blob_cache_release(e);
    CHECK(fill(c, "sha256:a", 300, 'a') == -1);   /* cached already */
    CHECK(fill(c, "sha256:big", 501, 'x') == -1); /* over half the cache */

    /* eviction: a(300) b(300) c(300), then d(300) evicts the least recently used, a ... */
    CHECK(fill(c, "sha256:b", 300, 'b') == 0);
    CHECK(fill(c, "sha256:c", 300, 'c') == 0);
    e = blob_cache_get(c, "sha256:a", 300, &p); /* ... unless a was used last: then b goes */
    REQUIRE(e);
    blob_cache_release(e);
    CHECK(fill(c, "sha256:d", 300, 'd') == 0);
    e = blob_cache_get(c, "sha256:b", 300, &p);
    CHECK(e == NULL);
    e = blob_cache_get(c, "sha256:a", 300, &p);
    CHECK(e != NULL);
    blob_cache_release(e);
    blob_cache_get_stats(c, &st);
    CHECK(st.evictions == 1 && st.entries == 3 && st.bytes == 900);

    /* an entry being sent is never evicted: hold every one, a new fill finds no room */
    {
        blob_cache_ent *h[3];
        const char *names[3] = {"sha256:a", "sha256:c", "sha256:d"};
        for (int i = 0; i < 3; i++) {
            h[i] = blob_cache_get(c, names[i], 300, &p);
            CHECK(h[i] != NULL);
        }
        CHECK(fill(c, "sha256:e", 300, 'e') == -1);
        for (int i = 0; i < 3; i++)
            blob_cache_release(h[i]);
        CHECK(fill(c, "sha256:e", 300, 'e') == 0);
    }

    /* flush while an entry is held and a fill runs: both survive until let go, then vanish */
    held = blob_cache_get(c, "sha256:e", 300, &p);
    REQUIRE(held);
    f = blob_cache_fill_begin(c, "sha256:f", 100);
    REQUIRE(f);
    blob_cache_flush(c);
    blob_cache_get_stats(c, &st);
    CHECK(st.bytes == 0 && st.entries == 0);
    CHECK(p[0] == 'e' && p[299] == 'e'); /* still readable by its sender */
    CHECK(blob_cache_get(c, "sha256:e", 300, &p) == NULL);
    blob_cache_release(held);
    {
        char hundred[100];
        memset(hundred, 'f', sizeof(hundred));
        CHECK(blob_cache_fill_add(f, hundred, sizeof(hundred)) == 0);
    }
    blob_cache_fill_end(f, 1); /* flushed meanwhile: not published */
    CHECK(blob_cache_get(c, "sha256:f", 100, &p) == NULL);
    CHECK(fill(c, "sha256:f", 100, 'f') == 0);
    blob_cache_get_stats(c, &st);
    CHECK(st.entries == 1 && st.bytes == 100 && st.max_bytes == 1000);

    blob_cache_free(c);
    return check_summary();
}
