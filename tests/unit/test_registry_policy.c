/* test_registry_policy.c — the registry's storage policy (tools/serve/registry_policy.c) on a
 * real store with the in-process test KEK: a pushed blob is committed and linked (a wrong
 * digest stores nothing); mounts from a repository that links the blob, and without "from"
 * only of a referenced blob (never one awaiting collection); unlinking collects a blob only
 * once nothing links it, holds it as a manifest or refers to it from a manifest; manifest and
 * tag deletes; the collection lock excludes across two store handles, across processes, and
 * holds a push back until a delete is done. */
#define _GNU_SOURCE
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "tests/testkek.h"
#include "tools/serve/registry_meta.h"
#include "tools/serve/registry_policy.h"

static char home[4096], dir[4096];
static test_kek *tk;

static cmk_store *open_store(void)
{
    cmk_store_opts so;
    cmk_store *s = NULL;

    cmk_store_opts_init(&so);
    so.home = home;
    so.kek_provider = test_kek_provider(tk);
    REQUIRE(cmk_store_open(dir, &so, &s) == CMK_OK);
    return s;
}

static void new_store(void)
{
    cmk_create_opts co;
    cmk_identity id;
    cmk_errbuf eb = {0};

    snprintf(home, sizeof(home), "%s", test_tmpdir("policy-home"));
    REQUIRE(cmk_identity_create(home, "tester", &id, &eb) == CMK_OK);
    snprintf(dir, sizeof(dir), "%s/store", test_tmpdir("policy"));
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "tester";
    co.key_id = "test://vault/keys/k";
    co.kek_provider = test_kek_provider(tk);
    REQUIRE(cmk_store_create(dir, &co) == CMK_OK);
}

/* A put of text, ready to commit. */
static cmk_put *put_of(cmk_store *s, const char *text)
{
    cmk_put *p = NULL;

    REQUIRE(cmk_put_begin(s, "sha256", &p) == CMK_OK);
    REQUIRE(cmk_put_write(p, text, strlen(text)) == CMK_OK);
    return p;
}

/* Stores text as a blob without linking it anywhere. */
static void store_unlinked(cmk_store *s, const char *text, char digest[CMK_DIGEST_MAX])
{
    REQUIRE(cmk_put_commit(put_of(s, text), NULL, digest) == CMK_OK);
}

static int stored(cmk_store *s, const char *digest)
{
    cmk_blob_info bi;

    return cmk_stat(s, digest, &bi) == CMK_OK;
}

/* 1 if repo links digest with size (size 0: any). */
static int linked(cmk_store *s, const char *repo, const char *digest, uint64_t size)
{
    json_t *rec = NULL;
    uint64_t have = 0;
    int yes;

    if (rmeta_load(s, repo, &rec) != CMK_OK)
        return 0;
    yes = rmeta_blob(rec, digest, &have) && (size == 0 || have == size);
    json_decref(rec);
    return yes;
}

static void t_commit(cmk_store *s)
{
    char d[CMK_DIGEST_MAX], d2[CMK_DIGEST_MAX];
    const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    CHECK_OK(rpolicy_commit_blob(s, "lib/app", put_of(s, "layer one"), NULL, d, NULL));
    CHECK(stored(s, d) && linked(s, "lib/app", d, 9));
    /* With the right expected digest too; a wrong one stores and links nothing. */
    CHECK_OK(rpolicy_commit_blob(s, "lib/app", put_of(s, "layer one"), d, d2, NULL));
    CHECK(strcmp(d, d2) == 0);
    CHECK_RC(rpolicy_commit_blob(s, "other", put_of(s, "not it"), wrong, d2, NULL), CMK_E_DIGEST);
    CHECK(!linked(s, "other", wrong, 0));
    CHECK_RC(rmeta_load(s, "other", &(json_t *){NULL}), CMK_E_NOT_FOUND);
}

static void t_mount_and_unlink(cmk_store *s)
{
    char d[CMK_DIGEST_MAX], loose[CMK_DIGEST_MAX];
    const char *absent = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    cmk_errbuf eb = {0};

    CHECK_OK(rpolicy_commit_blob(s, "a", put_of(s, "shared layer"), NULL, d, NULL));
    /* From a repository that links it: linked with its size. */
    CHECK_OK(rpolicy_mount(s, "b", d, "a", &eb));
    CHECK(linked(s, "b", d, 12));
    /* From one that does not (or does not exist): refused, nothing created. */
    CHECK_RC(rpolicy_mount(s, "c", d, "nosuch", &eb), CMK_E_NOT_FOUND);
    CHECK_RC(rpolicy_mount(s, "c", d, "lib/app", &eb), CMK_E_NOT_FOUND);
    CHECK_RC(rmeta_load(s, "c", &(json_t *){NULL}), CMK_E_NOT_FOUND);
    /* Without "from": a referenced blob is found; an absent one or one no repository
     * references (awaiting collection) is not. */
    CHECK_OK(rpolicy_mount(s, "e", d, NULL, &eb));
    CHECK(linked(s, "e", d, 12));
    CHECK_RC(rpolicy_mount(s, "e", absent, NULL, &eb), CMK_E_NOT_FOUND);
    store_unlinked(s, "loose blob", loose);
    CHECK_RC(rpolicy_mount(s, "e", loose, NULL, &eb), CMK_E_NOT_FOUND);
    CHECK(!linked(s, "e", loose, 0) && stored(s, loose));

    /* Unlinking keeps the blob while another repository links it. */
    CHECK_OK(rpolicy_unlink_blob(s, "a", d, &eb));
    CHECK(!linked(s, "a", d, 0) && stored(s, d));
    CHECK_RC(rpolicy_unlink_blob(s, "a", d, &eb), CMK_E_NOT_FOUND);
    CHECK_RC(rpolicy_unlink_blob(s, "nosuch", d, &eb), CMK_E_NOT_FOUND);
    CHECK_OK(rpolicy_unlink_blob(s, "b", d, &eb));
    CHECK(stored(s, d));
    /* The last link goes: the blob is collected, and no longer mountable. */
    CHECK_OK(rpolicy_unlink_blob(s, "e", d, &eb));
    CHECK(!stored(s, d));
    CHECK_RC(rpolicy_mount(s, "f", d, NULL, &eb), CMK_E_NOT_FOUND);
}

/* Records manifest m (stored as a blob) in repo, referring to refs, under tag (may be NULL). */
static void put_manifest(cmk_store *s, const char *repo, const char *m, const char *tag,
                         const char *ref1, const char *ref2)
{
    json_t *entry = json_pack("{s:s, s:i, s:[]}", "mediaType",
                              "application/vnd.oci.image.manifest.v1+json", "size", 10, "refs");

    REQUIRE(entry);
    json_array_append_new(json_object_get(entry, "refs"), json_string(ref1));
    if (ref2)
        json_array_append_new(json_object_get(entry, "refs"), json_string(ref2));
    CHECK_OK(rmeta_put_manifest(s, repo, m, entry, tag));
    json_decref(entry);
}

static void collect_locked(cmk_store *s, const char *digest)
{
    int lk = -1;

    CHECK_OK(rpolicy_lock(s, LOCK_EX, &lk, NULL));
    CHECK_OK(rpolicy_collect(s, digest));
    rpolicy_unlock(lk);
}

static void t_collect(cmk_store *s)
{
    char cfg[CMK_DIGEST_MAX], layer[CMK_DIGEST_MAX], man[CMK_DIGEST_MAX], loose[CMK_DIGEST_MAX];
    cmk_errbuf eb = {0};

    CHECK_OK(rpolicy_commit_blob(s, "img", put_of(s, "config"), NULL, cfg, NULL));
    CHECK_OK(rpolicy_commit_blob(s, "img", put_of(s, "the layer"), NULL, layer, NULL));
    store_unlinked(s, "{\"manifest\": 1}", man);
    put_manifest(s, "img", man, "v1", cfg, layer);
    put_manifest(s, "img2", man, NULL, cfg, NULL);

    /* Unlinked, but a manifest refers to them: kept, however often collection runs. */
    CHECK_OK(rpolicy_unlink_blob(s, "img", cfg, &eb));
    CHECK_OK(rpolicy_unlink_blob(s, "img", layer, &eb));
    collect_locked(s, cfg);
    collect_locked(s, layer);
    CHECK(stored(s, cfg) && stored(s, layer));
    /* A manifest held by one repository is kept when another lets it go. */
    CHECK_OK(rpolicy_delete_manifest(s, "img2", man, &eb));
    CHECK(stored(s, man));
    CHECK_RC(rpolicy_delete_manifest(s, "img2", man, &eb), CMK_E_NOT_FOUND);
    collect_locked(s, cfg); /* img's manifest still refers to it */
    CHECK(stored(s, cfg));

    /* A tag delete leaves the manifest; an unknown tag is NOT_FOUND. */
    CHECK_OK(rpolicy_delete_tag(s, "img", "v1", &eb));
    CHECK_RC(rpolicy_delete_tag(s, "img", "v1", &eb), CMK_E_NOT_FOUND);
    CHECK(stored(s, man));
    /* The last holder deletes the manifest: its blob is collected at once, the blobs it
     * referred to by the next collection of each. */
    CHECK_OK(rpolicy_delete_manifest(s, "img", man, &eb));
    CHECK(!stored(s, man) && stored(s, cfg) && stored(s, layer));
    collect_locked(s, cfg);
    collect_locked(s, layer);
    CHECK(!stored(s, cfg) && !stored(s, layer));
    collect_locked(s, cfg); /* already gone: no error */

    store_unlinked(s, "nobody's", loose);
    collect_locked(s, loose);
    CHECK(!stored(s, loose));
}

static void t_lock_handles(cmk_store *s1, cmk_store *s2)
{
    int a = -1, b = -1, c = -1;
    cmk_errbuf eb = {0};

    CHECK_OK(rpolicy_lock(s1, LOCK_SH, &a, NULL));
    CHECK_OK(rpolicy_lock(s2, LOCK_SH | LOCK_NB, &b, NULL)); /* shared with shared */
    CHECK_RC(rpolicy_lock(s2, LOCK_EX | LOCK_NB, &c, &eb), CMK_E_BUSY);
    CHECK(c == -1 && strstr(eb.msg, RPOLICY_GC_LOCK) != NULL);
    rpolicy_unlock(a);
    CHECK_RC(rpolicy_lock(s1, LOCK_EX | LOCK_NB, &c, NULL), CMK_E_BUSY);
    rpolicy_unlock(b);
    CHECK_OK(rpolicy_lock(s1, LOCK_EX | LOCK_NB, &c, NULL));
    /* The same handle is excluded too: each call has its own descriptor. */
    CHECK_RC(rpolicy_lock(s1, LOCK_SH | LOCK_NB, &a, NULL), CMK_E_BUSY);
    rpolicy_unlock(c);
    rpolicy_unlock(-1); /* no-op */
}

/* The exclusive lock held by another process refuses this one's, and the other way round. */
static void t_lock_processes(cmk_store *s)
{
    int to_child[2], to_parent[2], lk = -1, status = 0;
    char ch = 0;
    pid_t pid;

    REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int fd = -1, ok;
        /* The child only takes the lock (a file lock: no store state is used). */
        ok = rpolicy_lock(s, LOCK_EX, &fd, NULL) == CMK_OK;
        if (write(to_parent[1], "x", 1) != 1 || read(to_child[0], &ch, 1) != 1)
            ok = 0;
        rpolicy_unlock(fd);
        /* Now the parent holds it: a shared lock here is refused. */
        if (write(to_parent[1], "y", 1) != 1 || read(to_child[0], &ch, 1) != 1)
            ok = 0;
        ok = ok && rpolicy_lock(s, LOCK_SH | LOCK_NB, &fd, NULL) == CMK_E_BUSY;
        _exit(ok ? 0 : 1);
    }
    REQUIRE(read(to_parent[0], &ch, 1) == 1);
    CHECK_RC(rpolicy_lock(s, LOCK_SH | LOCK_NB, &lk, NULL), CMK_E_BUSY);
    REQUIRE(write(to_child[1], "g", 1) == 1);
    REQUIRE(read(to_parent[0], &ch, 1) == 1);
    CHECK_OK(rpolicy_lock(s, LOCK_EX | LOCK_NB, &lk, NULL));
    REQUIRE(write(to_child[1], "g", 1) == 1);
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    rpolicy_unlock(lk);
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);
}

struct pusher {
    cmk_store *s;
    cmk_put *put;
    char digest[CMK_DIGEST_MAX];
    cmk_err rc;
    atomic_int done;
};

static void *push_thread(void *arg)
{
    struct pusher *p = arg;

    p->rc = rpolicy_commit_blob(p->s, "race", p->put, NULL, p->digest, NULL);
    atomic_store(&p->done, 1);
    return NULL;
}

/* A push on one handle waits while a delete on another holds the lock exclusively. */
static void t_push_waits_for_delete(cmk_store *s1, cmk_store *s2)
{
    struct pusher p = {.s = s1};
    struct timespec ts = {0, 200 * 1000 * 1000};
    pthread_t th;
    int lk = -1;

    p.put = put_of(s1, "pushed while a delete runs");
    atomic_init(&p.done, 0);
    CHECK_OK(rpolicy_lock(s2, LOCK_EX, &lk, NULL));
    REQUIRE(pthread_create(&th, NULL, push_thread, &p) == 0);
    nanosleep(&ts, NULL);
    CHECK_MSG(!atomic_load(&p.done), "the push linked while the collection lock was held");
    rpolicy_unlock(lk);
    REQUIRE(pthread_join(th, NULL) == 0);
    CHECK_OK(p.rc);
    CHECK(linked(s2, "race", p.digest, 26));
}

int main(void)
{
    cmk_store *s1, *s2;

    tk = test_kek_new(0);
    REQUIRE(tk);
    new_store();
    s1 = open_store();
    s2 = open_store();
    t_commit(s1);
    t_mount_and_unlink(s1);
    t_collect(s1);
    t_lock_handles(s1, s2);
    t_lock_processes(s1);
    t_push_waits_for_delete(s1, s2);
    cmk_store_close(s2);
    cmk_store_close(s1);
    test_kek_free(tk);
    return check_summary();
}
