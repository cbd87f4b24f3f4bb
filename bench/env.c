/*
 * env.c — the real components a store runs against: a home with a local vault, a
 * user-assigned identity with get / wrapKey / unwrapKey on an RSA key, stores created with
 * that customer-managed key (as tests/testutil.c's test_make_cmk_store does).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/cmkbench.h"
#include "cmkstore_admin.h"

void env_setup(bench_ctx *c)
{
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 7};
    cmk_errbuf eb = {0};
    cmk_identity id;
    json_t *j = NULL;
    const char *kid;
    cmk_err rc;

    if (c->env_ready)
        return;
    if (mkdir(c->o.dir, 0700) != 0 && errno != EEXIST)
        bench_die("cannot create %s: %s", c->o.dir, strerror(errno));
    snprintf(c->root, sizeof(c->root), "%s/cmkbench.XXXXXX", c->o.dir);
    if (!mkdtemp(c->root))
        bench_die("cannot create a directory under %s: %s", c->o.dir, strerror(errno));
    snprintf(c->home, sizeof(c->home), "%s/home", c->root);
    if (mkdir(c->home, 0700) != 0)
        bench_die("cannot create %s: %s", c->home, strerror(errno));
    snprintf(c->vault, sizeof(c->vault), "benchvault");
    rc = cmk_identity_create(c->home, "bench", &id, &eb);
    if (rc != CMK_OK)
        bench_die("identity create: %s", eb.msg);
    snprintf(c->identity, sizeof(c->identity), "%s", id.id);
    rc = cmk_vault_create(c->home, c->vault, &vo, NULL, &eb);
    if (rc != CMK_OK)
        bench_die("vault create: %s", eb.msg);
    rc = cmk_vault_set_policy(c->home, c->vault, id.principal_id, perms, 3, NULL, &eb);
    if (rc != CMK_OK)
        bench_die("vault set-policy: %s", eb.msg);
    rc = cmk_vault_key_create(c->home, c->vault, "kek", "RSA", 2048, &j, &eb);
    if (rc != CMK_OK)
        bench_die("key create: %s", eb.msg);
    kid = json_string_value(json_object_get(json_object_get(j, "key"), "kid"));
    if (!kid)
        bench_die("key create returned no kid");
    snprintf(c->vkid, sizeof(c->vkid), "%s", kid);
    json_decref(j);
    c->env_ready = 1;
    bench_log("environment: %s (home, vault %s, identity %s, key %s)", c->root, c->vault, id.name,
              c->vkid);
}

void env_teardown(bench_ctx *c)
{
    if (!c->env_ready)
        return;
    if (c->o.keep) {
        bench_log("kept %s (--keep)", c->root);
        return;
    }
    if (bench_rmtree(c->root) != 0)
        bench_log("could not remove all of %s", c->root);
    c->env_ready = 0;
}

void env_store_create(bench_ctx *c, const char *name, uint32_t chunk, char path[4096])
{
    cmk_create_opts co;
    cmk_err rc;

    env_setup(c);
    snprintf(path, 4096, "%s/%s", c->root, name);
    cmk_create_opts_init(&co);
    co.home = c->home;
    co.identity = c->identity;
    co.key_id = c->vkid;
    co.chunk_size = chunk;
    rc = cmk_store_create(path, &co);
    if (rc != CMK_OK)
        bench_die("store create %s: %s: %s", path, cmk_errname(rc), cmk_errmsg());
}

cmk_err env_store_open(bench_ctx *c, const char *path, unsigned threads, const char *engine,
                       cmk_store **out)
{
    cmk_store_opts so;
    cmk_err rc;

    cmk_store_opts_init(&so);
    so.home = c->home;
    so.threads = threads;
    so.queue_depth = c->o.depth;
    so.io_engine = engine;
    rc = cmk_store_open(path, &so, out);
    if (rc != CMK_OK)
        bench_log("store open %s (%s): %s: %s", path, engine ? engine : "auto", cmk_errname(rc),
                  cmk_errmsg());
    return rc;
}

void env_new_key_version(bench_ctx *c, char vkid[CMK_ID_MAX])
{
    cmk_errbuf eb = {0};
    json_t *j = NULL;
    const char *kid;

    env_setup(c);
    if (cmk_vault_key_create(c->home, c->vault, "kek", "RSA", 2048, &j, &eb) != CMK_OK)
        bench_die("key version create: %s", eb.msg);
    kid = json_string_value(json_object_get(json_object_get(j, "key"), "kid"));
    if (!kid)
        bench_die("key create returned no kid");
    snprintf(vkid, CMK_ID_MAX, "%s", kid);
    json_decref(j);
}

int bench_put_buf(cmk_store *s, const uint8_t *buf, size_t n, size_t wsize,
                  char digest[CMK_DIGEST_MAX], double *commit_s)
{
    cmk_put *p = NULL;
    double t0;
    cmk_err rc;

    rc = cmk_put_begin(s, NULL, &p);
    if (rc != CMK_OK) {
        bench_log("put begin: %s: %s", cmk_errname(rc), cmk_errmsg());
        return -1;
    }
    for (size_t off = 0; off < n; off += wsize) {
        size_t len = n - off < wsize ? n - off : wsize;
        rc = cmk_put_write(p, buf + off, len);
        if (rc != CMK_OK) {
            bench_log("put write: %s: %s", cmk_errname(rc), cmk_errmsg());
            cmk_put_abort(p);
            return -1;
        }
    }
    t0 = bench_now();
    rc = cmk_put_commit(p, NULL, digest);
    if (commit_s)
        *commit_s = bench_now() - t0;
    if (rc != CMK_OK) {
        bench_log("put commit: %s: %s", cmk_errname(rc), cmk_errmsg());
        return -1;
    }
    return 0;
}

int64_t bench_get_all(cmk_store *s, const char *digest, uint8_t *scratch, size_t rsize)
{
    cmk_get *g = NULL;
    int64_t total = 0;
    size_t got;
    cmk_err rc;

    rc = cmk_get_open(s, digest, 0, CMK_TO_END, &g);
    if (rc != CMK_OK) {
        bench_log("get open: %s: %s", cmk_errname(rc), cmk_errmsg());
        return -1;
    }
    for (;;) {
        rc = cmk_get_read(g, scratch, rsize, &got);
        if (rc != CMK_OK) {
            bench_log("get read: %s: %s", cmk_errname(rc), cmk_errmsg());
            cmk_get_close(g);
            return -1;
        }
        if (got == 0)
            break;
        total += (int64_t)got;
    }
    cmk_get_close(g);
    return total;
}
