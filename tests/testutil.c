/* testutil.c — shared helpers for the unit tests (see check.h). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "kek/vault/vault.h"

int check_passed, check_failed;

static char *dirs[256];
static int ndirs;

int check_summary(void)
{
    check_cleanup();
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed == 0 ? 0 : 1;
}

const char *test_tmpdir(const char *tag)
{
    const char *base = getenv("CMK_TEST_TMP");
    char tmpl[4096];

    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpl, sizeof(tmpl), "%s/%s.XXXXXX", base, tag ? tag : "t");
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "mkdtemp(%s): %s\n", tmpl, strerror(errno));
        exit(2);
    }
    if (ndirs < 256)
        dirs[ndirs++] = strdup(tmpl);
    return dirs[ndirs - 1];
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void check_cleanup(void)
{
    const char *keep = getenv("CMK_TEST_KEEP");
    for (int i = 0; i < ndirs; i++) {
        if (!keep || !*keep)
            nftw(dirs[i], rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(dirs[i]);
    }
    ndirs = 0;
}

void test_fill_random(void *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545F4914F6CDD1Dull;
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(p + i, &v, k);
    }
}

void test_fill_text(void *buf, size_t n, uint64_t seed)
{
    static const char *words[] = {"registry",
                                  "layer",
                                  "manifest",
                                  "digest",
                                  "sha256",
                                  "blob",
                                  "config",
                                  "the",
                                  "of",
                                  "and",
                                  "to",
                                  "a",
                                  "in",
                                  "index",
                                  "usr/lib/",
                                  "x86_64-linux-gnu",
                                  ".so.1",
                                  "\n",
                                  "{\"a\":1}",
                                  "#include <stdio.h>\n",
                                  "    return 0;\n",
                                  "0000644 "};
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
    unsigned char *p = buf;
    size_t i = 0;
    while (i < n) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        const char *w = words[(x * 0x2545F4914F6CDD1Dull >> 33) % (sizeof(words) / sizeof(*words))];
        size_t l = strlen(w);
        for (size_t k = 0; k < l && i < n; k++)
            p[i++] = (unsigned char)w[k];
        if (i < n && (x & 3) == 0)
            p[i++] = ' ';
    }
}

const char *test_vector_path(const char *name)
{
    static _Thread_local char path[4096];
    const char *base = getenv("CMK_TEST_VECTORS");
    snprintf(path, sizeof(path), "%s/%s", base ? base : "tests/vectors", name);
    return path;
}

unsigned char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto out;
    }
    if (buf)
        buf[n] = 0;
    if (len)
        *len = (size_t)n;
out:
    fclose(f);
    return buf;
}

int test_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(buf, 1, len, f);
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

cmk_err test_make_cmk_store(const char *home, const char *store_dir, int versionless,
                            char kid[CMK_ID_MAX], char vkid[CMK_ID_MAX], char principal[64])
{
    cmk_errbuf eb = {0};
    cmk_identity id;
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 7};
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    json_t *j = NULL;
    cmk_create_opts co;
    cmk_err rc;

    rc = cmk_identity_create(home, "storeid", &id, &eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(principal, 64, "%s", id.principal_id);
    rc = cmk_vault_create(home, "testvault", &vo, &j, &eb);
    json_decref(j);
    j = NULL;
    if (rc != CMK_OK)
        goto out;
    rc = cmk_vault_set_policy(home, "testvault", id.principal_id, perms, 3, NULL, &eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_vault_key_create(home, "testvault", "storekey", "RSA", 2048, &j, &eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(vkid, CMK_ID_MAX, "%s",
             json_string_value(json_object_get(json_object_get(j, "key"), "kid")));
    snprintf(kid, CMK_ID_MAX, "local://testvault/keys/storekey");
    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = id.id;
    co.key_id = versionless ? kid : vkid;
    rc = cmk_store_create(store_dir, &co);
    if (rc != CMK_OK)
        fprintf(stderr, "store create: %s\n", cmk_errmsg());
    return rc;
out:
    json_decref(j);
    fprintf(stderr, "test setup: %s\n", eb.msg);
    return rc;
}

int test_dir_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;

    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}
