/* test_backend_local.c — the local storage backend: the contract every backend passes
 * (tests/unit/backend_contract.c: versioned records, conditional writes and deletes, names,
 * listing, races between threads, the event log, the lock), then what only a directory has:
 * the same bytes on disk as before the seam, versions that see changes made behind the
 * backend's back, create-if-absent and read-modify-write races between processes, the log's
 * partial lines, lock files shared between processes, hostile entries (links, FIFOs,
 * directories), the staging of a new store and the ABI size check. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check.h"
#include "core/backend/backend.h"
#include "core/backend/local.h"
#include "tests/unit/backend_contract.h"

static cmk_errbuf eb;

static const char *K1 = "meta/ab00000000000000000000000000000000000000000000000000000000000001";
static const char *K2 = "meta/ab00000000000000000000000000000000000000000000000000000000000002";
static const char *K3 = "meta/cd00000000000000000000000000000000000000000000000000000000000003";

static char *path_in(const char *dir, const char *rel)
{
    static _Thread_local char p[4][4200];
    static _Thread_local int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", dir, rel);
    return p[i];
}

/* A directory the local backend opens: store.json and tmp/, as a store has. */
static const char *new_store(const char *tag)
{
    const char *dir = test_tmpdir(tag);

    REQUIRE(test_write_file(path_in(dir, "store.json"), "{}\n", 3) == 0);
    REQUIRE(mkdir(path_in(dir, "tmp"), 0700) == 0);
    return dir;
}

static cmk_backend *open_bk(const char *dir)
{
    cmk_backend *b = NULL;

    RC(cmk_backend_local_open(dir, &b, &eb), CMK_OK);
    REQUIRE(b != NULL);
    return b;
}

static int file_is(const char *path, const char *want)
{
    size_t n;
    unsigned char *got = test_read_file(path, &n);
    int same = got && n == strlen(want) && memcmp(got, want, n) == 0;

    free(got);
    return same;
}

static void test_open(void)
{
    const char *plain = test_tmpdir("bk-plain"), *dir;
    cmk_backend *b = NULL;
    int fd;

    /* Not a store: no store.json. */
    RC(cmk_backend_local_open(plain, &b, &eb), CMK_E_NOT_FOUND);
    CHECK(b == NULL && strstr(eb.msg, "store.json") != NULL);
    /* tmp/ missing: damaged. */
    REQUIRE(test_write_file(path_in(plain, "store.json"), "{}", 2) == 0);
    RC(cmk_backend_local_open(plain, &b, &eb), CMK_E_CORRUPT);
    /* One of the store's own entries a link: refused before anything is done. */
    dir = new_store("bk-links");
    REQUIRE(symlink("/tmp", path_in(dir, "meta")) == 0);
    RC(cmk_backend_local_open(dir, &b, &eb), CMK_E_REFUSED);
    CHECK_MSG(strstr(eb.msg, "meta is a symbolic link") != NULL, "%s", eb.msg);

    /* Leftovers of crashed writers are swept; a live writer's (locked) file is kept. */
    dir = new_store("bk-sweep");
    REQUIRE(test_write_file(path_in(dir, "keyring.json.tmp-0123456789abcdef"), "x", 1) == 0);
    REQUIRE(test_write_file(path_in(dir, "keyring.json.tmp-notours"), "x", 1) == 0);
    REQUIRE(test_write_file(path_in(dir, "tmp/dead"), "x", 1) == 0);
    REQUIRE(test_write_file(path_in(dir, "tmp/live"), "x", 1) == 0);
    REQUIRE(mkfifo(path_in(dir, "tmp/fifo"), 0600) == 0);
    fd = open(path_in(dir, "tmp/live"), O_RDONLY);
    REQUIRE(fd >= 0 && flock(fd, LOCK_EX) == 0);
    b = open_bk(dir);
    CHECK(access(path_in(dir, "keyring.json.tmp-0123456789abcdef"), F_OK) != 0);
    CHECK(access(path_in(dir, "keyring.json.tmp-notours"), F_OK) == 0);
    CHECK(access(path_in(dir, "tmp/dead"), F_OK) != 0);
    CHECK(access(path_in(dir, "tmp/live"), F_OK) == 0);
    CHECK(strcmp(b->ops->name, "local") == 0 && (b->ops->caps & CMK_BK_LOCK));
    cmk_bk_close(b);
    close(fd);
}

/* The record is the file, private, holding exactly the bytes written; its version changes on
 * every write, even of the same bytes, and when the file is changed in place; a record too
 * large for the reader is named "too large". */
static void test_versions(void)
{
    const char *dir = new_store("bk-ver");
    cmk_backend *b = open_bk(dir);
    cmk_rec_ver v1, v2, got, stale, any = {CMK_REC_ANY};
    void *data = NULL;
    size_t len = 0;
    struct stat st;

    RC(cmk_bk_rec_put(b, "keyring.json", "one\n", 4, NULL, &v1, &eb), CMK_OK);
    CHECK(file_is(path_in(dir, "keyring.json"), "one\n"));
    CHECK(stat(path_in(dir, "keyring.json"), &st) == 0 && (st.st_mode & 0777) == 0600);
    /* The same bytes again: a new version all the same. */
    RC(cmk_bk_rec_put(b, "keyring.json", "one\n", 4, &v1, &v2, &eb), CMK_OK);
    CHECK(!cmk_rec_ver_eq(&v1, &v2));
    RC(cmk_bk_rec_put(b, "keyring.json", "three\n", 6, &v1, NULL, &eb), CMK_E_BUSY);
    CHECK_MSG(strstr(eb.msg, "was changed by another process") != NULL, "%s", eb.msg);
    CHECK(file_is(path_in(dir, "keyring.json"), "one\n"));
    /* A change made in place behind the backend's back (an operator's cp) is noticed. */
    stale = v2;
    REQUIRE(test_write_file(path_in(dir, "keyring.json"), "One\n", 4) == 0);
    RC(cmk_bk_rec_get(b, "keyring.json", 1 << 20, NULL, NULL, &got, &eb), CMK_OK);
    CHECK(!cmk_rec_ver_eq(&got, &stale));
    RC(cmk_bk_rec_put(b, "keyring.json", "four\n", 5, &stale, NULL, &eb), CMK_E_BUSY);
    RC(cmk_bk_rec_put(b, "keyring.json", "four\n", 5, &got, NULL, &eb), CMK_OK);
    CHECK(file_is(path_in(dir, "keyring.json"), "four\n"));
    RC(cmk_bk_rec_put(b, "keyring.json", "five\n", 5, &any, NULL, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, "store.json", "{}\n", 3, &any, NULL, &eb), CMK_OK);
    /* No temporaries are left beside the records. */
    CHECK(test_dir_entries(dir) == 4); /* store.json, tmp, lock (made at open), keyring.json */
    /* Too large for what the caller reads: the message says so. */
    RC(cmk_bk_rec_get(b, "keyring.json", 3, &data, &len, NULL, &eb), CMK_E_CORRUPT);
    CHECK_MSG(data == NULL && strstr(eb.msg, "too large") != NULL, "%s", eb.msg);
    cmk_bk_close(b);
}

/* Namespaces are fanned out on disk as meta/<xx>/<hex> has always been; a lock file and a
 * stray temporary in one are no records; a listing prefix must name a namespace. */
static void test_namespace(void)
{
    const char *dir = new_store("bk-ns");
    cmk_backend *b = open_bk(dir);
    cmk_rec_ver v;
    char acc[1024] = "";

    RC(cmk_bk_rec_put(b, K1, "a", 1, NULL, &v, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, K2, "b", 1, NULL, NULL, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, K3, "c", 1, NULL, NULL, &eb), CMK_OK);
    CHECK(file_is(
        path_in(dir, "meta/ab/ab00000000000000000000000000000000000000000000000000000000000001"),
        "a"));
    CHECK(file_is(
        path_in(dir, "meta/cd/cd00000000000000000000000000000000000000000000000000000000000003"),
        "c"));
    REQUIRE(test_write_file(path_in(dir, "meta/lock"), "", 0) == 0);
    REQUIRE(test_write_file(path_in(dir, "meta/ab/ab01.tmp-0123456789abcdef"), "t", 1) == 0);
    RC(cmk_bk_rec_list(b, "meta/", bk_contract_collect, acc, &eb), CMK_OK);
    CHECK_MSG(strlen(acc) == 3 * (strlen(K1) + 1) && strstr(acc, K1) && strstr(acc, K2) &&
                  strstr(acc, K3),
              "%s", acc);
    /* A put expecting a record that was deleted meanwhile says so. */
    RC(cmk_bk_rec_delete(b, K1, &v, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, K1, "x", 1, &v, NULL, &eb), CMK_E_BUSY);
    CHECK_MSG(strstr(eb.msg, "was deleted by another process") != NULL, "%s", eb.msg);
    cmk_bk_close(b);
}

/* ---- create-if-absent and read-modify-write races between processes ---- */

/* Runs fn(handle, arg) in a child process on a handle of its own; returns the child's pid.
 * Its exit status is fn's (3: the open failed). */
static pid_t spawn(const char *dir, int (*fn)(cmk_backend *b, const void *arg), const void *arg)
{
    pid_t pid = fork();

    if (pid == 0) {
        cmk_backend *cb = NULL;
        cmk_errbuf e = {0};
        _exit(cmk_backend_local_open(dir, &cb, &e) != CMK_OK ? 3 : fn(cb, arg));
    }
    return pid;
}

/* The exit status of child pid, -1 if it did not exit. */
static int exit_of(pid_t pid)
{
    int st = 0;

    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* 0: created, 1: there already (CMK_E_BUSY), 2: anything else. */
static int create_once(cmk_backend *b, const void *arg)
{
    cmk_errbuf e = {0};
    cmk_err rc = cmk_bk_rec_put(b, arg, "p", 1, NULL, NULL, &e);

    return rc == CMK_OK ? 0 : rc == CMK_E_BUSY ? 1 : 2;
}

typedef struct racer {
    cmk_backend *b;
    pthread_barrier_t *start;
    cmk_err rc;
} racer;

static int increment_40(cmk_backend *b, const void *arg)
{
    (void)arg;
    return bk_contract_increment(b, 40) == 0 ? 0 : 2;
}

static void *race_increment(void *arg)
{
    racer *r = arg;

    pthread_barrier_wait(r->start);
    r->rc = bk_contract_increment(r->b, 40) == 0 ? CMK_OK : CMK_E_IO;
    return NULL;
}

static void test_races(void)
{
    enum { T = 4, P = 4 };
    const char *dir = new_store("bk-race");
    cmk_backend *b[2] = {open_bk(dir), open_bk(dir)};
    pthread_barrier_t start;
    pthread_t th[T];
    racer r[T];
    int won = 0, ok = 1;
    pid_t pid[P];
    void *data = NULL;
    size_t len;

    /* Four processes, one name: exactly one creates it. */
    for (int i = 0; i < P; i++)
        pid[i] = spawn(dir, create_once, "meta/procrace");
    for (int i = 0; i < P; i++) {
        int st = exit_of(pid[i]);
        won += st == 0;
        ok &= st == 0 || st == 1;
    }
    CHECK_MSG(won == 1 && ok, "won %d", won);

    /* Read-modify-write with no lock at all: threads of two handles and two processes add
     * to one counter; a lost update would show in the total. */
    RC(cmk_bk_rec_put(b[0], "counter", "0", 1, NULL, NULL, &eb), CMK_OK);
    for (int i = 0; i < 2; i++)
        pid[i] = spawn(dir, increment_40, NULL);
    pthread_barrier_init(&start, NULL, 4);
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){b[i % 2], &start, CMK_OK};
        REQUIRE(pthread_create(&th[i], NULL, race_increment, &r[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(r[i].rc == CMK_OK);
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < 2; i++)
        CHECK(exit_of(pid[i]) == 0);
    RC(cmk_bk_rec_get(b[0], "counter", 64, &data, &len, NULL, &eb), CMK_OK);
    CHECK_MSG(data && strcmp(data, "240") == 0, "counter %s", data ? (char *)data : "-");
    free(data);
    cmk_bk_close(b[0]);
    cmk_bk_close(b[1]);
}

/* ---- the log ---- */

static int log_collect(const char *line, size_t len, void *arg)
{
    char *all = arg;
    strncat(all, line, len);
    strcat(all, ";");
    return 0;
}

static void test_log(void)
{
    const char *dir = new_store("bk-log");
    cmk_backend *b = open_bk(dir);
    struct stat st;

    RC(cmk_bk_log_append(b, "events.log", "{\"a\":1}\n", 8, &eb), CMK_OK);
    RC(cmk_bk_log_append(b, "events.log", "{\"b\":2}\n", 8, &eb), CMK_OK);
    CHECK(file_is(path_in(dir, "events.log"), "{\"a\":1}\n{\"b\":2}\n"));
    CHECK(stat(path_in(dir, "events.log"), &st) == 0 && (st.st_mode & 0777) == 0600);
    /* A FIFO or a link planted as the log: refused, nothing hangs, nothing written through. */
    REQUIRE(mkfifo(path_in(dir, "fifo.log"), 0600) == 0);
    /* (No reader: the non-blocking open fails with ENXIO; with one, the type check refuses.) */
    CHECK(cmk_bk_log_append(b, "fifo.log", "x\n", 2, &eb) != CMK_OK);
    REQUIRE(symlink(path_in(dir, "events.log"), path_in(dir, "link.log")) == 0);
    RC(cmk_bk_log_append(b, "link.log", "x\n", 2, &eb), CMK_E_REFUSED);
    CHECK(file_is(path_in(dir, "events.log"), "{\"a\":1}\n{\"b\":2}\n"));
    /* Reading: every line after the cursor, the cursor left after the last; a line still
     * being written (no newline yet) waits for the next read; a link is refused. */
    {
        char cur[CMK_BK_CURSOR_MAX] = "", got[256] = "";
        int fd;
        RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
        CHECK_MSG(strcmp(got, "{\"a\":1};{\"b\":2};") == 0, "%s", got);
        CHECK(strcmp(cur, "16") == 0);
        fd = open(path_in(dir, "events.log"), O_WRONLY | O_APPEND);
        REQUIRE(fd >= 0 && write(fd, "{\"c\"", 4) == 4);
        got[0] = '\0';
        RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
        CHECK(got[0] == '\0' && strcmp(cur, "16") == 0);
        REQUIRE(write(fd, ":3}\n", 4) == 4);
        close(fd);
        RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_OK);
        CHECK_MSG(strcmp(got, "{\"c\":3};") == 0, "%s", got);
        cur[0] = '\0';
        RC(cmk_bk_log_read(b, "link.log", cur, sizeof(cur), log_collect, got, &eb), CMK_E_REFUSED);
        RC(cmk_bk_log_read(b, "none.log", cur, sizeof(cur), log_collect, got, &eb),
           CMK_E_NOT_FOUND);
        snprintf(cur, sizeof(cur), "12x");
        RC(cmk_bk_log_read(b, "events.log", cur, sizeof(cur), log_collect, got, &eb), CMK_E_INVAL);
    }
    cmk_bk_close(b);
}

/* ---- locks ---- */

typedef struct lock_try {
    const char *name;
    unsigned flags;
} lock_try;

/* 0: taken, 1: held by someone else (CMK_E_BUSY), 2: anything else. */
static int try_lock(cmk_backend *b, const void *arg)
{
    const lock_try *t = arg;
    cmk_bk_lock *l = NULL;
    cmk_errbuf e = {0};
    cmk_err rc = cmk_bk_acquire(b, t->name, t->flags | CMK_BK_NOWAIT, &l, &e);

    return rc == CMK_OK ? 0 : rc == CMK_E_BUSY ? 1 : 2;
}

/* Tries lock `name` without waiting from another process. */
static int child_try_lock(const char *dir, const char *name, unsigned flags)
{
    lock_try t = {name, flags};

    return exit_of(spawn(dir, try_lock, &t));
}

static void test_locks(void)
{
    const char *dir = new_store("bk-lock");
    cmk_backend *a = open_bk(dir), *b = open_bk(dir);
    cmk_bk_lock *la = NULL, *lb = NULL, *lc = NULL;

    RC(cmk_bk_acquire(a, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE, &la, &eb), CMK_OK);
    CHECK(la != NULL && access(path_in(dir, "lock"), F_OK) == 0);
    /* Held: another handle of this process and another process are refused at once. */
    RC(cmk_bk_acquire(b, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE | CMK_BK_NOWAIT, &lb, &eb),
       CMK_E_BUSY);
    CHECK_MSG(lb == NULL && strstr(eb.msg, "locked by another process") != NULL, "%s", eb.msg);
    RC(cmk_bk_acquire(b, CMK_BK_LOCK_STORE, CMK_BK_NOWAIT, &lb, &eb), CMK_E_BUSY);
    CHECK(child_try_lock(dir, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE) == 1);
    CHECK(child_try_lock(dir, CMK_BK_LOCK_STORE, 0) == 1);
    /* Another lock name is another lock: "meta" is <dir>/meta/lock. */
    REQUIRE(mkdir(path_in(dir, "meta"), 0700) == 0);
    RC(cmk_bk_acquire(b, CMK_BK_LOCK_META, CMK_BK_EXCLUSIVE | CMK_BK_NOWAIT, &lb, &eb), CMK_OK);
    CHECK(access(path_in(dir, "meta/lock"), F_OK) == 0);
    CHECK(child_try_lock(dir, CMK_BK_LOCK_META, CMK_BK_EXCLUSIVE) == 1);
    cmk_bk_release(b, lb);
    lb = NULL;
    /* Released: taken at once; shared holders share. */
    cmk_bk_release(a, la);
    la = NULL;
    CHECK(child_try_lock(dir, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE) == 0);
    RC(cmk_bk_acquire(a, CMK_BK_LOCK_STORE, 0, &la, &eb), CMK_OK);
    RC(cmk_bk_acquire(b, CMK_BK_LOCK_STORE, CMK_BK_NOWAIT, &lb, &eb), CMK_OK);
    CHECK(child_try_lock(dir, CMK_BK_LOCK_STORE, 0) == 0);
    CHECK(child_try_lock(dir, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE) == 1);
    RC(cmk_bk_acquire(a, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE | CMK_BK_NOWAIT, &lc, &eb),
       CMK_E_BUSY);
    cmk_bk_release(a, la);
    cmk_bk_release(b, lb);
    RC(cmk_bk_acquire(a, "../x", CMK_BK_EXCLUSIVE, &la, &eb), CMK_E_INVAL);
    RC(cmk_bk_acquire(a, "meta/x", CMK_BK_EXCLUSIVE, &la, &eb), CMK_E_INVAL);
    /* A link planted as the lock file is not followed. */
    REQUIRE(symlink(path_in(dir, "store.json"), path_in(dir, "meta/lock2")) == 0);
    REQUIRE(unlink(path_in(dir, "meta/lock")) == 0 &&
            rename(path_in(dir, "meta/lock2"), path_in(dir, "meta/lock")) == 0);
    RC(cmk_bk_acquire(a, CMK_BK_LOCK_META, CMK_BK_EXCLUSIVE, &la, &eb), CMK_E_REFUSED);
    cmk_bk_close(a);
    cmk_bk_close(b);
}

/* ---- hostile entries ---- */

/* Links, FIFOs and directories planted where records are: refused, nothing hangs, nothing is
 * written through. */
static void test_hostile(void)
{
    const char *dir = new_store("bk-hostile"), *other = test_tmpdir("bk-other");
    cmk_backend *b = open_bk(dir);
    cmk_rec_ver v;
    void *data = NULL;
    size_t len;

    /* A link in place of a record: refused for reads and writes, the target untouched. */
    REQUIRE(test_write_file(path_in(other, "secret"), "secret", 6) == 0);
    REQUIRE(symlink(path_in(other, "secret"), path_in(dir, "keyring.json")) == 0);
    RC(cmk_bk_rec_get(b, "keyring.json", 100, &data, &len, &v, &eb), CMK_E_REFUSED);
    CHECK_MSG(data == NULL && strstr(eb.msg, "keyring.json is a symbolic link") != NULL, "%s",
              eb.msg);
    RC(cmk_bk_rec_put(b, "keyring.json", "x", 1, NULL, NULL, &eb), CMK_E_REFUSED);
    CHECK(file_is(path_in(other, "secret"), "secret"));
    /* A linked fan-out directory, and a linked namespace. */
    REQUIRE(mkdir(path_in(dir, "meta"), 0700) == 0);
    REQUIRE(symlink(other, path_in(dir, "meta/ab")) == 0);
    RC(cmk_bk_rec_get(b, K1, 100, &data, &len, NULL, &eb), CMK_E_REFUSED);
    RC(cmk_bk_rec_put(b, K1, "x", 1, NULL, NULL, &eb), CMK_E_REFUSED);
    CHECK(test_dir_entries(other) == 1);
    /* A FIFO in place of a record: a clear error at once, no hang. */
    REQUIRE(mkfifo(path_in(dir, "settings"), 0600) == 0);
    RC(cmk_bk_rec_get(b, "settings", 100, &data, &len, NULL, &eb), CMK_E_CORRUPT);
    CHECK_MSG(strstr(eb.msg, "not a regular file") != NULL, "%s", eb.msg);
    RC(cmk_bk_rec_put(b, "settings", "x", 1, NULL, NULL, &eb), CMK_E_CORRUPT);
    /* A directory in place of a record. */
    REQUIRE(mkdir(path_in(dir, "damaged"), 0700) == 0);
    RC(cmk_bk_rec_get(b, "damaged", 100, &data, &len, NULL, &eb), CMK_E_CORRUPT);
    CHECK_MSG(strstr(eb.msg, "damaged") != NULL, "%s", eb.msg);
    cmk_bk_close(b);
}

/* ---- a new store: target checks, staging, publish ---- */

/* Entries of dir whose names start with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void test_create(void)
{
    const char *parent = test_tmpdir("bk-create");
    char dir[4200], got[4200], in[4200];
    cmk_backend *b = NULL;
    struct stat st;

    snprintf(dir, sizeof(dir), "%s/store", parent);
    /* A target that does not exist yet is resolved (trailing slashes too). */
    snprintf(in, sizeof(in), "%s/store//", parent);
    RC(cmk_backend_local_target(in, got, sizeof(got), &eb), CMK_OK);
    CHECK_MSG(strcmp(got, dir) == 0, "%s", got);
    snprintf(in, sizeof(in), "%s/none/store", parent);
    RC(cmk_backend_local_target(in, got, sizeof(got), &eb), CMK_E_NOT_FOUND);
    /* Not published: nothing is left, neither the store nor its staging directory. */
    RC(cmk_backend_local_create(dir, &b, &eb), CMK_OK);
    REQUIRE(b != NULL);
    RC(cmk_bk_rec_put(b, "store.json", "{}\n", 3, NULL, NULL, &eb), CMK_OK);
    cmk_bk_close(b);
    CHECK(count_prefixed(parent, "store") == 0);
    /* Published: the layout, the records, and the handle names the store in place. */
    RC(cmk_backend_local_create(dir, &b, &eb), CMK_OK);
    REQUIRE(b != NULL);
    RC(cmk_bk_rec_put(b, "store.json", "{}\n", 3, NULL, NULL, &eb), CMK_OK);
    RC(cmk_bk_log_append(b, "events.log", "{}\n", 3, &eb), CMK_OK);
    RC(cmk_backend_local_publish(b, &eb), CMK_OK);
    RC(cmk_bk_rec_put(b, "keyring.json", "k\n", 2, NULL, NULL, &eb), CMK_OK);
    RC(cmk_backend_local_publish(b, &eb), CMK_E_INVAL);
    cmk_bk_close(b);
    CHECK(count_prefixed(parent, "store") == 1);
    CHECK(file_is(path_in(dir, "store.json"), "{}\n") &&
          file_is(path_in(dir, "keyring.json"), "k\n"));
    CHECK(stat(path_in(dir, "blobs/sha512/ff"), &st) == 0 && S_ISDIR(st.st_mode) &&
          (st.st_mode & 0777) == 0700);
    CHECK(test_dir_entries(path_in(dir, "blobs/sha256")) == 256 &&
          test_dir_entries(path_in(dir, "tmp")) == 0 &&
          test_dir_entries(path_in(dir, "meta")) == 0);
    b = open_bk(dir);
    cmk_bk_close(b);
    /* A store there already, or anything else there: refused, nothing changed. */
    RC(cmk_backend_local_target(dir, got, sizeof(got), &eb), CMK_E_REFUSED);
    CHECK_MSG(strstr(eb.msg, "a store already exists") != NULL, "%s", eb.msg);
    snprintf(dir, sizeof(dir), "%s/other", parent);
    REQUIRE(mkdir(dir, 0700) == 0 && test_write_file(path_in(dir, "x"), "x", 1) == 0);
    RC(cmk_backend_local_target(dir, got, sizeof(got), &eb), CMK_E_EXISTS);
    /* Someone else's files arrived meanwhile: the publish fails, the staging goes. */
    RC(cmk_backend_local_create(dir, &b, &eb), CMK_OK);
    REQUIRE(b != NULL);
    RC(cmk_backend_local_publish(b, &eb), CMK_E_EXISTS);
    cmk_bk_close(b);
    CHECK(count_prefixed(parent, "other") == 1 && test_dir_entries(dir) == 1);
}

/* ---- the ABI size: a backend built against a smaller ops table ---- */

static void test_abi(void)
{
    static const cmk_backend_ops old = {
        .size = offsetof(cmk_backend_ops, rec_get), .name = "old", .caps = CMK_BK_LOCK};
    cmk_backend fake = {&old};
    cmk_bk_lock *l = (cmk_bk_lock *)&fake;

    RC(cmk_bk_rec_get(&fake, "store.json", 10, NULL, NULL, NULL, &eb), CMK_E_UNSUPPORTED);
    CHECK_MSG(strstr(eb.msg, "old storage backend has no rec_get") != NULL, "%s", eb.msg);
    RC(cmk_bk_log_append(&fake, "events.log", "x\n", 2, &eb), CMK_E_UNSUPPORTED);
    /* No lock op: nothing to take, the version tokens serve. */
    RC(cmk_bk_acquire(&fake, CMK_BK_LOCK_STORE, CMK_BK_EXCLUSIVE, &l, &eb), CMK_OK);
    CHECK(l == NULL);
    cmk_bk_release(&fake, l);
    cmk_bk_close(&fake);
}

/* The contract's stores: a fresh directory each. */
static void local_where(const char *tag, char *name, size_t cap)
{
    char t[64];

    snprintf(t, sizeof(t), "bk-contract-%s", tag);
    snprintf(name, cap, "%s/store", test_tmpdir(t));
}

int main(void)
{
    static const bk_contract_factory local = {"local", local_where};

    bk_contract_run(&local);
    test_open();
    test_versions();
    test_namespace();
    test_races();
    test_log();
    test_locks();
    test_hostile();
    test_create();
    test_abi();
    check_cleanup();
    return check_summary();
}
