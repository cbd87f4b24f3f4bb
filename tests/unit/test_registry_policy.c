/* test_registry_policy.c — the registry's storage policy and garbage collection
 * (tools/serve/registry_policy.c, registry_gc.c) on a real store with the in-process test KEK:
 * a pushed blob is committed and linked (a wrong digest stores nothing); mounts from a
 * repository that links the blob, and without "from" of a stored blob; deletes only unlink;
 * collection frees exactly what no manifest names and no young link holds, deletes untagged
 * manifests on request, empties the catalog of empty repositories and keeps an upload that
 * was in progress while it ran; links against a running collection (a doomed blob is
 * rescued, a claimed one refuses the link and undoes it); blob removal through the
 * protocol; the catalog record; the usage counters; named file locks across handles and
 * processes. */
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
#include "tools/serve/registry_gc.h"
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
    /* Without "from": a stored blob is found, an absent one is not. */
    CHECK_OK(rpolicy_mount(s, "e", d, NULL, &eb));
    CHECK(linked(s, "e", d, 12));
    CHECK_RC(rpolicy_mount(s, "e", absent, NULL, &eb), CMK_E_NOT_FOUND);
    store_unlinked(s, "loose blob", loose);
    CHECK_OK(rpolicy_mount(s, "e", loose, NULL, &eb));
    CHECK(linked(s, "e", loose, 10));
    CHECK_OK(rpolicy_unlink_blob(s, "e", loose, &eb));

    /* Unlinking only unlinks: the stored blob waits for a collection. */
    CHECK_OK(rpolicy_unlink_blob(s, "a", d, &eb));
    CHECK(!linked(s, "a", d, 0) && stored(s, d));
    CHECK_RC(rpolicy_unlink_blob(s, "a", d, &eb), CMK_E_NOT_FOUND);
    CHECK_RC(rpolicy_unlink_blob(s, "nosuch", d, &eb), CMK_E_NOT_FOUND);
    CHECK_OK(rpolicy_unlink_blob(s, "b", d, &eb));
    CHECK_OK(rpolicy_unlink_blob(s, "e", d, &eb));
    CHECK(stored(s, d));
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

/* One collection; returns its report's count for key. */
static json_int_t gc(cmk_store *s, int64_t grace, int untagged, const char *key)
{
    rgc_opts o = {.grace_s = grace, .delete_untagged = untagged};
    cmk_errbuf eb = {0};
    json_t *rep = NULL;
    json_int_t n;

    CHECK_MSG(rgc_run(s, &o, &rep, &eb) == CMK_OK, "gc: %s", eb.msg);
    n = json_integer_value(json_object_get(rep, key));
    json_decref(rep);
    return n;
}

static int in_catalog(cmk_store *s, const char *repo)
{
    json_t *all = NULL, *v;
    size_t i;
    int yes = 0;

    REQUIRE(rmeta_list_repos(s, &all) == CMK_OK);
    json_array_foreach(all, i, v) yes |= strcmp(json_string_value(v), repo) == 0;
    json_decref(all);
    return yes;
}

static void t_collect(cmk_store *s)
{
    char cfg[CMK_DIGEST_MAX], layer[CMK_DIGEST_MAX], man[CMK_DIGEST_MAX], loose[CMK_DIGEST_MAX];
    char young[CMK_DIGEST_MAX], child[CMK_DIGEST_MAX];
    cmk_errbuf eb = {0};
    cmk_put *inflight;

    /* Whatever earlier tests left unreferenced goes first. */
    gc(s, 0, 0, "blobs_freed");
    CHECK_OK(rpolicy_commit_blob(s, "img", put_of(s, "config"), NULL, cfg, NULL));
    CHECK_OK(rpolicy_commit_blob(s, "img", put_of(s, "the layer"), NULL, layer, NULL));
    store_unlinked(s, "{\"manifest\": 1}", man);
    put_manifest(s, "img", man, "v1", cfg, layer);
    put_manifest(s, "img2", man, NULL, cfg, NULL);
    CHECK(in_catalog(s, "img") && in_catalog(s, "img2"));

    /* Unlinked, but a manifest refers to them: kept. */
    CHECK_OK(rpolicy_unlink_blob(s, "img", cfg, &eb));
    CHECK_OK(rpolicy_unlink_blob(s, "img", layer, &eb));
    CHECK(gc(s, 0, 0, "blobs_freed") == 0);
    CHECK(stored(s, cfg) && stored(s, layer) && stored(s, man));
    /* A manifest held by one repository is kept when another lets it go; img2 is empty now
     * and leaves the catalog. */
    CHECK_OK(rpolicy_delete_manifest(s, "img2", man, &eb));
    CHECK_RC(rpolicy_delete_manifest(s, "img2", man, &eb), CMK_E_NOT_FOUND);
    CHECK(!in_catalog(s, "img2"));
    CHECK(gc(s, 0, 0, "blobs_freed") == 0);
    CHECK(stored(s, man) && stored(s, cfg));

    /* A tag delete leaves the manifest: --delete-untagged with a grace keeps it (young),
     * without one deletes it, and then its blobs go too. */
    CHECK_OK(rpolicy_delete_tag(s, "img", "v1", &eb));
    CHECK_RC(rpolicy_delete_tag(s, "img", "v1", &eb), CMK_E_NOT_FOUND);
    CHECK(gc(s, 3600, 1, "manifests_deleted") == 0);
    CHECK(stored(s, man));
    CHECK(gc(s, 0, 1, "blobs_freed") == 3);
    CHECK(!stored(s, man) && !stored(s, cfg) && !stored(s, layer));
    CHECK(!in_catalog(s, "img"));

    /* Unreferenced: a loose blob goes; a freshly linked one survives the grace period. */
    store_unlinked(s, "nobody's", loose);
    CHECK_OK(
        rpolicy_commit_blob(s, "fresh", put_of(s, "manifest still to come"), NULL, young, NULL));
    CHECK(gc(s, 3600, 0, "blobs_freed") == 0);
    CHECK(stored(s, loose) && linked(s, "fresh", young, 0));
    CHECK(gc(s, 0, 0, "links_removed") == 1);
    CHECK(!stored(s, loose) && !stored(s, young) && !in_catalog(s, "fresh"));

    /* An upload in progress while a collection runs (even with no grace) loses nothing:
     * it is not a blob yet, and once committed its link is young. */
    inflight = put_of(s, "uploading during gc");
    CHECK(gc(s, 0, 0, "blobs_freed") == 0);
    CHECK_OK(rpolicy_commit_blob(s, "late", inflight, NULL, child, NULL));
    CHECK(gc(s, 3600, 0, "blobs_freed") == 0);
    CHECK(stored(s, child) && linked(s, "late", child, 0));
    CHECK(in_catalog(s, "late"));
}

/* --delete-untagged: an index's children and the referrers of a kept manifest stay while the
 * index is tagged; once the tag goes, all of them and what they name go. */
static void t_untagged(cmk_store *s)
{
    char layer[CMK_DIGEST_MAX], child[CMK_DIGEST_MAX], idx[CMK_DIGEST_MAX], ref[CMK_DIGEST_MAX];
    json_t *e;

    gc(s, 0, 0, "blobs_freed");
    CHECK_OK(rpolicy_commit_blob(s, "u/idx", put_of(s, "platform layer"), NULL, layer, NULL));
    store_unlinked(s, "{\"child\": 1}", child);
    store_unlinked(s, "{\"index\": 1}", idx);
    store_unlinked(s, "{\"signature\": 1}", ref);
    put_manifest(s, "u/idx", child, NULL, layer, NULL);
    put_manifest(s, "u/idx", idx, "v1", child, NULL);
    e = json_pack("{s:s, s:i, s:[], s:s}", "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "size", 10, "refs", "subject",
                  child);
    REQUIRE(e);
    CHECK_OK(rmeta_put_manifest(s, "u/idx", ref, e, NULL));
    json_decref(e);
    CHECK(gc(s, 0, 1, "manifests_deleted") == 0);
    CHECK(stored(s, child) && stored(s, ref) && stored(s, layer));
    CHECK_OK(rpolicy_delete_tag(s, "u/idx", "v1", NULL));
    CHECK(gc(s, 0, 1, "blobs_freed") == 4);
    CHECK(!stored(s, child) && !stored(s, ref) && !stored(s, layer) && !stored(s, idx));
    CHECK(!in_catalog(s, "u/idx"));
}

/* Writes a collection state by hand: digest doomed or claimed. */
static void fake_state(cmk_store *s, const char *digest, int claimed)
{
    json_t *st =
        json_pack("{s:i, s:s, s:I, s:I, s:{}, s:{}}", "v", 1, "id", "test", "started",
                  (json_int_t)time(NULL), "updated", (json_int_t)time(NULL), "doomed", "claimed");
    char *txt;

    json_object_set_new(json_object_get(st, claimed ? "claimed" : "doomed"), digest, json_true());
    txt = json_dumps(st, JSON_COMPACT);
    REQUIRE(txt);
    CHECK_OK(cmk_meta_put(s, RGC_STATE, txt, strlen(txt)));
    free(txt);
    json_decref(st);
}

static int doomed(cmk_store *s, const char *digest)
{
    void *val = NULL;
    size_t len = 0;
    json_t *st;
    int yes;

    REQUIRE(cmk_meta_get(s, RGC_STATE, &val, &len) == CMK_OK);
    st = json_loadb(val, len, 0, NULL);
    cmk_free(val);
    yes = json_object_get(json_object_get(st, "doomed"), digest) != NULL;
    json_decref(st);
    return yes;
}

static void t_protect(cmk_store *s)
{
    char d[CMK_DIGEST_MAX], d2[CMK_DIGEST_MAX], m[CMK_DIGEST_MAX];
    json_t *repos = NULL;
    cmk_errbuf eb = {0};
    uint64_t b0, n0, b1, n1;

    store_unlinked(s, "about to be collected", d);
    /* Doomed (a collection between its two marks): a mount rescues it. */
    fake_state(s, d, 0);
    CHECK_OK(rpolicy_mount(s, "p", d, NULL, &eb));
    CHECK(linked(s, "p", d, 0) && !doomed(s, d));
    /* Claimed (being deleted): the mount is refused and undone, a push of the same content
     * fails busy (retry) and leaves no link, a manifest naming it is removed again. */
    fake_state(s, d, 1);
    CHECK_RC(rpolicy_mount(s, "q", d, NULL, &eb), CMK_E_NOT_FOUND);
    CHECK_RC(rmeta_load(s, "q", &(json_t *){NULL}), CMK_E_NOT_FOUND);
    CHECK_RC(rpolicy_commit_blob(s, "q", put_of(s, "about to be collected"), d, d2, &eb),
             CMK_E_BUSY);
    CHECK(!linked(s, "q", d, 0));
    store_unlinked(s, "{\"m\": 2}", m);
    put_manifest(s, "q", m, "t", d, NULL);
    {
        json_t *rec = NULL, *entry = NULL;
        REQUIRE(rmeta_load(s, "q", &rec) == CMK_OK);
        entry = json_incref(rmeta_manifest(rec, m));
        CHECK_RC(rpolicy_protect_manifest(s, "q", m, entry, &eb), CMK_E_BUSY);
        json_decref(entry);
        json_decref(rec);
    }
    CHECK_RC(rmeta_load(s, "q", &(json_t *){NULL}), CMK_E_NOT_FOUND);
    /* A collection runs already: another one and a blob rm are refused busy. */
    CHECK_RC(rgc_run(s, &(rgc_opts){.grace_s = 0}, &repos, &eb), CMK_E_BUSY);
    CHECK_RC(rgc_remove_blob(s, m, 0, NULL, &eb), CMK_E_BUSY);
    CHECK_OK(cmk_meta_delete(s, RGC_STATE));

    /* blob rm: refused while referenced (naming the repository), else deleted. */
    CHECK_RC(rgc_remove_blob(s, d, 0, &repos, &eb), CMK_E_REFUSED);
    CHECK(json_array_size(repos) == 1 &&
          strcmp(json_string_value(json_array_get(repos, 0)), "p") == 0);
    json_decref(repos);
    CHECK_OK(rgc_usage_get(s, &b0, &n0));
    CHECK_OK(rgc_remove_blob(s, m, 0, NULL, &eb));
    CHECK(!stored(s, m));
    CHECK_OK(rgc_usage_get(s, &b1, &n1));
    CHECK(n1 == n0 && b1 == b0); /* left to the next collection */
    CHECK_RC(rgc_remove_blob(s, m, 0, NULL, &eb), CMK_E_NOT_FOUND);
    CHECK_RC(cmk_meta_get(s, RGC_STATE, &(void *){NULL}, &(size_t){0}), CMK_E_NOT_FOUND);
}

/* The usage counters: a new blob adds, a second push of it does not, gc recomputes. */
static void t_usage(cmk_store *s)
{
    char d[CMK_DIGEST_MAX], d2[CMK_DIGEST_MAX];
    uint64_t b0, n0, b1, n1;
    json_t *rec = NULL;

    gc(s, 0, 0, "blobs_freed");
    CHECK_OK(rgc_usage_get(s, &b0, &n0));
    CHECK_OK(rpolicy_commit_blob(s, "u", put_of(s, "0123456789"), NULL, d, NULL));
    /* A wrong digest stores nothing and counts nothing. */
    CHECK_RC(rpolicy_commit_blob(s, "u", put_of(s, "abcdefghijklmnopqrst"),
                                 "sha256:"
                                 "6b0a1b8e0b1d1ae6e59c4a0e1dd5e4b0d2e1a5b9f9c1b3a4f2e9d7c6b5a49382",
                                 d2, NULL),
             CMK_E_DIGEST);
    CHECK_OK(rgc_usage_get(s, &b1, &n1));
    CHECK(b1 == b0 + 10 && n1 == n0 + 1); /* new: counted */
    CHECK(gc(s, 3600, 0, "blobs_freed") == 0);
    CHECK_OK(rgc_usage_get(s, &b1, &n1));
    CHECK_MSG(b1 == b0 + 10 && n1 == n0 + 1, "after gc %llu/%llu, before %llu/%llu",
              (unsigned long long)b1, (unsigned long long)n1, (unsigned long long)b0,
              (unsigned long long)n0);
    CHECK_OK(rpolicy_commit_blob(s, "u", put_of(s, "0123456789"), d, d, NULL));
    CHECK_OK(rgc_usage_get(s, &b0, &n0));
    CHECK(b0 == b1 && n0 == n1); /* stored already: not counted again */
    REQUIRE(rmeta_load(s, "u", &rec) == CMK_OK);
    CHECK(rmeta_repo_bytes(rec) == 10);
    json_decref(rec);
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
    t_untagged(s1);
    t_protect(s2);
    t_usage(s1);
    t_lock_handles(s1, s2);
    t_lock_processes(s1);
    cmk_store_close(s2);
    cmk_store_close(s1);
    test_kek_free(tk);
    return check_summary();
}
