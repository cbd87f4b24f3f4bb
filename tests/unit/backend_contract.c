/* backend_contract.c — see backend_contract.h. */
#include "tests/unit/backend_contract.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/select.h"
#include "tests/check.h"

static cmk_errbuf eb;

typedef struct store_at {
    char name[700]; /* canonical: what cmk_backend_open is given for more handles */
    cmk_backend *b; /* the handle that made it */
} store_at;

/* A new, published store with store.json "{}" at f's location for tag. */
static void new_store(const bk_contract_factory *f, const char *tag, store_at *s)
{
    char where[600];

    f->where(tag, where, sizeof(where));
    s->b = NULL;
    RC(cmk_backend_target(where, s->name, sizeof(s->name), &eb), CMK_OK);
    RC(cmk_backend_create(s->name, &s->b, &eb), CMK_OK);
    REQUIRE(s->b != NULL);
    RC(cmk_bk_rec_put(s->b, "store.json", "{}", 2, NULL, NULL, &eb), CMK_OK);
    RC(cmk_backend_publish(s->b, &eb), CMK_OK);
    CHECK_MSG(strcmp(s->b->ops->name, f->backend) == 0, "%s backend, want %s", s->b->ops->name,
              f->backend);
}

static cmk_backend *open_store(const store_at *s)
{
    char canon[700];
    cmk_backend *b = NULL;

    RC(cmk_backend_open(s->name, 0, canon, sizeof(canon), &b, &eb), CMK_OK);
    REQUIRE(b != NULL);
    CHECK_MSG(strcmp(canon, s->name) == 0, "%s reopened as %s", s->name, canon);
    return b;
}

/* ---- records ---- */

static void contract_versions(const bk_contract_factory *f)
{
    static const char *const bad[] = {"",         "../store.json", "/etc/passwd", "a/b/c",
                                      ".hidden",  "meta/.x0",      "meta/a",      "meta/",
                                      "/meta/ab", "x.tmp-1",       "me ta/ab",    "meta/ab\n"};
    cmk_rec_ver v1, v2, v3, got, any = {CMK_REC_ANY};
    char longname[300];
    void *data = NULL;
    size_t len = 0;
    store_at s;
    cmk_backend *b;

    new_store(f, "rec", &s);
    b = s.b;
    /* Absent: NOT_FOUND and an empty version. */
    RC(cmk_bk_rec_get(b, "keyring.json", 100, &data, &len, &got, &eb), CMK_E_NOT_FOUND);
    CHECK(data == NULL && got.tag[0] == '\0');
    /* Create if absent, then once only. */
    RC(cmk_bk_rec_put(b, "keyring.json", "one", 3, NULL, &v1, &eb), CMK_OK);
    CHECK(v1.tag[0] != '\0');
    RC(cmk_bk_rec_put(b, "keyring.json", "two", 3, NULL, NULL, &eb), CMK_E_BUSY);
    CHECK_MSG(strstr(eb.msg, "keyring.json") && strstr(eb.msg, "retry"), "%s", eb.msg);
    /* Read back whole (terminated) with the version written; the version alone. */
    RC(cmk_bk_rec_get(b, "keyring.json", 100, &data, &len, &got, &eb), CMK_OK);
    CHECK(len == 3 && data && memcmp(data, "one", 3) == 0 && ((char *)data)[3] == '\0');
    CHECK(cmk_rec_ver_eq(&got, &v1));
    free(data);
    data = NULL;
    RC(cmk_bk_rec_get(b, "keyring.json", 100, NULL, NULL, &got, &eb), CMK_OK);
    CHECK(cmk_rec_ver_eq(&got, &v1));
    /* Replaced with the current version; the old one is stale and changes nothing. */
    RC(cmk_bk_rec_put(b, "keyring.json", "three", 5, &v1, &v3, &eb), CMK_OK);
    CHECK(!cmk_rec_ver_eq(&v1, &v3));
    RC(cmk_bk_rec_put(b, "keyring.json", "four", 4, &v1, NULL, &eb), CMK_E_BUSY);
    CHECK_MSG(strstr(eb.msg, "changed by another process") != NULL, "%s", eb.msg);
    RC(cmk_bk_rec_get(b, "keyring.json", 100, &data, &len, &v2, &eb), CMK_OK);
    CHECK(len == 5 && data && memcmp(data, "three", 5) == 0 && cmk_rec_ver_eq(&v2, &v3));
    free(data);
    data = NULL;
    /* Too large for what the caller reads: a clear error, nothing returned. */
    RC(cmk_bk_rec_get(b, "keyring.json", 4, &data, &len, NULL, &eb), CMK_E_CORRUPT);
    CHECK_MSG(data == NULL && strstr(eb.msg, "keyring.json") != NULL, "%s", eb.msg);
    /* Blind write. */
    RC(cmk_bk_rec_put(b, "keyring.json", "five", 4, &any, NULL, &eb), CMK_OK);
    /* A put expecting a record that is not there is a conflict, not a write. */
    RC(cmk_bk_rec_put(b, "meta/nothere", "x", 1, &v3, NULL, &eb), CMK_E_BUSY);
    RC(cmk_bk_rec_get(b, "meta/nothere", 10, &data, &len, NULL, &eb), CMK_E_NOT_FOUND);
    /* Delete: only the version read, then gone. */
    RC(cmk_bk_rec_put(b, "meta/del", "x", 1, NULL, &v1, &eb), CMK_OK);
    RC(cmk_bk_rec_delete(b, "meta/del", &v3, &eb), CMK_E_BUSY);
    RC(cmk_bk_rec_delete(b, "meta/del", &v1, &eb), CMK_OK);
    RC(cmk_bk_rec_get(b, "meta/del", 10, NULL, NULL, NULL, &eb), CMK_E_NOT_FOUND);
    RC(cmk_bk_rec_delete(b, "meta/del", NULL, &eb), CMK_E_NOT_FOUND);
    /* Created again after its delete (and deleted again: the listing below must not see it);
     * a record is never empty. */
    RC(cmk_bk_rec_put(b, "meta/del", "y", 1, NULL, &v1, &eb), CMK_OK);
    RC(cmk_bk_rec_get(b, "meta/del", 10, &data, &len, NULL, &eb), CMK_OK);
    CHECK(data && len == 1 && memcmp(data, "y", 1) == 0);
    free(data);
    data = NULL;
    RC(cmk_bk_rec_put(b, "meta/del", "z", 1, NULL, NULL, &eb), CMK_E_BUSY);
    RC(cmk_bk_rec_delete(b, "meta/del", &v1, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, "meta/empty", "", 0, NULL, NULL, &eb), CMK_E_INVAL);
    RC(cmk_bk_rec_get(b, "meta/empty", 10, NULL, NULL, NULL, &eb), CMK_E_NOT_FOUND);
    /* Names that would leave the store, hide, nest or collide with temporaries. */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        RC(cmk_bk_rec_get(b, bad[i], 100, &data, &len, NULL, &eb), CMK_E_INVAL);
        RC(cmk_bk_rec_put(b, bad[i], "x", 1, NULL, NULL, &eb), CMK_E_INVAL);
        RC(cmk_bk_rec_delete(b, bad[i], NULL, &eb), CMK_E_INVAL);
    }
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    RC(cmk_bk_rec_put(b, longname, "x", 1, NULL, NULL, &eb), CMK_E_INVAL);
    RC(cmk_bk_rec_get(b, NULL, 100, &data, &len, NULL, &eb), CMK_E_INVAL);
    CHECK(data == NULL);
    cmk_bk_close(b);
}

int bk_contract_collect(const char *name, void *arg)
{
    char *acc = arg;
    strcat(acc, name);
    strcat(acc, ";");
    return 0;
}

static int stop_first(const char *name, void *arg)
{
    (void)name;
    ++*(int *)arg;
    return 1;
}

/* 1 if the listing acc holds exactly the n names given (in any order). */
static int listed(const char *acc, size_t n, const char *const *names)
{
    size_t total = 0;
    char want[300];

    for (size_t i = 0; i < n; i++) {
        snprintf(want, sizeof(want), "%s;", names[i]);
        if (!strstr(acc, want))
            return 0;
        total += strlen(want);
    }
    return strlen(acc) == total;
}

static void contract_namespace(const bk_contract_factory *f)
{
    static const char *const all[] = {"meta/ab01", "meta/ab02", "meta/cd03"};
    char acc[1024] = "";
    int n = 0;
    store_at s;
    cmk_backend *b;

    new_store(f, "ns", &s);
    b = s.b;
    for (size_t i = 0; i < 3; i++)
        RC(cmk_bk_rec_put(b, all[i], "r", 1, NULL, NULL, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, "other/ab04", "o", 1, NULL, NULL, &eb), CMK_OK);
    RC(cmk_bk_rec_list(b, "meta/", bk_contract_collect, acc, &eb), CMK_OK);
    CHECK_MSG(listed(acc, 3, all), "%s", acc);
    acc[0] = '\0';
    RC(cmk_bk_rec_list(b, "meta/ab", bk_contract_collect, acc, &eb), CMK_OK);
    CHECK_MSG(listed(acc, 2, all), "%s", acc);
    acc[0] = '\0';
    RC(cmk_bk_rec_list(b, "meta/cd03", bk_contract_collect, acc, &eb), CMK_OK);
    CHECK_MSG(listed(acc, 1, all + 2), "%s", acc);
    RC(cmk_bk_rec_list(b, "meta/", stop_first, &n, &eb), CMK_OK);
    CHECK(n == 1);
    acc[0] = '\0';
    RC(cmk_bk_rec_list(b, "none/", bk_contract_collect, acc, &eb), CMK_OK);
    CHECK(acc[0] == '\0');
    RC(cmk_bk_rec_list(b, "", bk_contract_collect, acc, &eb), CMK_E_INVAL);
    RC(cmk_bk_rec_list(b, "meta/a/b", bk_contract_collect, acc, &eb),
       CMK_E_INVAL); /* not a namespace */
    RC(cmk_bk_rec_list(b, "/ab", bk_contract_collect, acc, &eb), CMK_E_INVAL);
    RC(cmk_bk_rec_list(b, NULL, bk_contract_collect, acc, &eb), CMK_E_INVAL);
    cmk_bk_close(b);
}

/* ---- create-if-absent and read-modify-write races between threads ---- */

int bk_contract_increment(cmk_backend *b, int n)
{
    for (int i = 0; i < n; i++) {
        for (;;) {
            cmk_errbuf e = {0};
            cmk_rec_ver v;
            char *data = NULL, buf[32];
            size_t len;
            cmk_err rc = cmk_bk_rec_get(b, "counter", 64, (void **)&data, &len, &v, &e);
            if (rc != CMK_OK)
                return -1;
            snprintf(buf, sizeof(buf), "%ld", strtol(data, NULL, 10) + 1);
            free(data);
            rc = cmk_bk_rec_put(b, "counter", buf, strlen(buf), &v, NULL, &e);
            if (rc == CMK_OK)
                break;
            if (rc != CMK_E_BUSY)
                return -1;
        }
    }
    return 0;
}

typedef struct racer {
    cmk_backend *b;
    pthread_barrier_t *start;
    cmk_err rc;
} racer;

static void *race_create(void *arg)
{
    racer *r = arg;
    cmk_errbuf e = {0};

    pthread_barrier_wait(r->start);
    r->rc = cmk_bk_rec_put(r->b, "meta/race", "me", 2, NULL, NULL, &e);
    return NULL;
}

enum { RACE_ADDS = 10 };

static void *race_increment(void *arg)
{
    racer *r = arg;

    pthread_barrier_wait(r->start);
    r->rc = bk_contract_increment(r->b, RACE_ADDS) == 0 ? CMK_OK : CMK_E_IO;
    return NULL;
}

/* Runs fn on T threads, thread i on handle hs[i % H], all released at once. */
enum { T = 6, H = 3 };
static void race(cmk_backend *hs[H], void *(*fn)(void *), racer r[T])
{
    pthread_barrier_t start;
    pthread_t th[T];

    REQUIRE(pthread_barrier_init(&start, NULL, T) == 0);
    for (int i = 0; i < T; i++) {
        r[i] = (racer){hs[i % H], &start, CMK_E_IO};
        REQUIRE(pthread_create(&th[i], NULL, fn, &r[i]) == 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
}

static void contract_races(const bk_contract_factory *f)
{
    cmk_backend *hs[H];
    racer r[T];
    char *data = NULL;
    size_t len;
    int won = 0, ok = 1;
    store_at s;

    new_store(f, "race", &s);
    /* Several handles (as several front-ends), several threads each, one name: exactly one
     * creates it, the others are told it is there. */
    for (int i = 0; i < H; i++)
        hs[i] = open_store(&s);
    race(hs, race_create, r);
    for (int i = 0; i < T; i++) {
        won += r[i].rc == CMK_OK;
        ok &= r[i].rc == CMK_OK || r[i].rc == CMK_E_BUSY;
    }
    CHECK_MSG(won == 1 && ok, "won %d", won);
    /* Read-modify-write with no lock at all: a lost update would show in the total. */
    RC(cmk_bk_rec_put(s.b, "counter", "0", 1, NULL, NULL, &eb), CMK_OK);
    race(hs, race_increment, r);
    for (int i = 0; i < T; i++)
        CHECK(r[i].rc == CMK_OK);
    RC(cmk_bk_rec_get(s.b, "counter", 64, (void **)&data, &len, NULL, &eb), CMK_OK);
    CHECK_MSG(data && strtol(data, NULL, 10) == T * RACE_ADDS, "counter %s", data ? data : "-");
    free(data);
    for (int i = 0; i < H; i++)
        cmk_bk_close(hs[i]);
    cmk_bk_close(s.b);
}

/* ---- the event log ---- */

static int log_collect(const char *line, size_t len, void *arg)
{
    char *all = arg;
    strncat(all, line, len);
    strcat(all, ";");
    return 0;
}

static void contract_log(const bk_contract_factory *f)
{
    char cur[CMK_BK_CURSOR_MAX] = "", got[512] = "", lcur[CMK_EVENTS_CURSOR_MAX] = "";
    store_at s;
    cmk_backend *b;

    new_store(f, "log", &s);
    b = s.b;
    RC(cmk_bk_log_append(b, "events.log", "{\"a\":1}\n", 8, &eb), CMK_OK);
    RC(cmk_bk_log_append(b, "events.log", "{\"b\":2}\n", 8, &eb), CMK_OK);
    RC(cmk_bk_log_append(b, "../events.log", "x\n", 2, &eb), CMK_E_INVAL);
    RC(cmk_bk_log_append(b, "meta/events", "x\n", 2, &eb), CMK_E_INVAL);
    /* Every line after the cursor, in order; the cursor left after the last, so the next
     * read gives only newer lines. */
    RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
    CHECK_MSG(strcmp(got, "{\"a\":1};{\"b\":2};") == 0, "%s", got);
    got[0] = '\0';
    RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
    CHECK_MSG(got[0] == '\0', "%s", got);
    RC(cmk_bk_log_append(b, "events.log", "{\"c\":3}\n", 8, &eb), CMK_OK);
    RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
    CHECK_MSG(strcmp(got, "{\"c\":3};") == 0, "%s", got);
    /* A cursor the backend never gave. */
    snprintf(cur, sizeof(cur), "meta/x");
    RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_E_INVAL);
    /* Through the library, without opening the store (no key). */
    got[0] = '\0';
    CHECK_OK(cmk_store_events_read(s.name, lcur, sizeof(lcur), log_collect, got));
    CHECK_MSG(strcmp(got, "{\"a\":1};{\"b\":2};{\"c\":3};") == 0, "%s", got);
    cmk_bk_close(b);
}

/* ---- the lock, or none ---- */

static void contract_lock(const bk_contract_factory *f)
{
    cmk_bk_lock *la = NULL, *lb = NULL;
    store_at s;
    cmk_backend *o;

    new_store(f, "lock", &s);
    o = open_store(&s);
    if (s.b->ops->caps & CMK_BK_LOCK) {
        /* Held: another handle is refused at once; released: it takes it. */
        RC(cmk_bk_acquire(s.b, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE, &la, &eb), CMK_OK);
        CHECK(la != NULL);
        RC(cmk_bk_acquire(o, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE | CMK_BK_NOWAIT, &lb, &eb),
           CMK_E_BUSY);
        CHECK(lb == NULL);
        cmk_bk_release(s.b, la);
        RC(cmk_bk_acquire(o, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE | CMK_BK_NOWAIT, &lb, &eb),
           CMK_OK);
        CHECK(lb != NULL);
        cmk_bk_release(o, lb);
    } else {
        /* No lock: acquire gives none, and the records' version tokens serve. */
        la = (cmk_bk_lock *)&s;
        RC(cmk_bk_acquire(s.b, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE, &la, &eb), CMK_OK);
        CHECK(la == NULL);
        cmk_bk_release(s.b, la);
    }
    cmk_bk_close(o);
    cmk_bk_close(s.b);
}

void bk_contract_run(const bk_contract_factory *f)
{
    contract_versions(f);
    contract_namespace(f);
    contract_races(f);
    contract_log(f);
    contract_lock(f);
}
