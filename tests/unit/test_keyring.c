/* test_keyring.c — keyring parsing (strict), save/load, wrapping with checks, DEK sets. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check.h"
#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/keyring.h"
#include "kek/builtin.h"
#include "core/base/secmem.h"
#include "tests/testkek.h"

static const char *corpus_valid(void)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/fuzz_keyring/valid.json",
             getenv("CMK_SOURCE_DIR") ? getenv("CMK_SOURCE_DIR") : ".");
    return path;
}

static void test_parse(void)
{
    size_t len;
    char *text = (char *)test_read_file(corpus_valid(), &len);
    cmk_keyring kr;
    json_t *j;

    REQUIRE(text);
    CHECK_OK(cmk_keyring_parse(text, len, &kr, NULL));
    CHECK(kr.ndeks == 2 && kr.current_dek == 2 && kr.cmk == 1 && kr.rotation_enabled == 1);
    CHECK(kr.deks[1].alg == CMK_WRAP_RSA_OAEP && kr.deks[0].wrapped_len == 64);
    CHECK(kr.last_rotation == 0);
    CHECK(strcmp(kr.identity.kind, "UserAssigned") == 0);

    /* Round trip through JSON. */
    j = cmk_keyring_to_json(&kr);
    char *again = json_dumps(j, 0);
    cmk_keyring kr2;
    CHECK_OK(cmk_keyring_parse(again, strlen(again), &kr2, NULL));
    CHECK(kr2.ndeks == 2 && memcmp(kr2.deks[1].wrapped, kr.deks[1].wrapped, 64) == 0 &&
          kr2.deks[0].created == kr.deks[0].created);
    cmk_keyring_free(&kr2);
    free(again);

    /* Each broken variant is refused with a message. */
    struct {
        const char *path, *key;
        json_t *val;
    } breaks[] = {
        {NULL, "format", json_integer(2)},
        {NULL, "currentDek", json_integer(7)},
        {NULL, "customerManagedKey", json_string("yes")},
        {NULL, "keyIdentifier", json_integer(1)},
        {NULL, "deks", json_array()},
        {NULL, "identity", json_null()},
        {NULL, "lastKeyRotationTimestamp", json_string("yesterday")},
        {"dek", "id", json_integer(2)}, /* duplicate */
        {"dek", "wrapAlgorithm", json_string("RSA1_5")},
        {"dek", "wrappedKey", json_string("!!!!")},
        {"dek", "wrappedKey", json_string("AAAA")}, /* too short */
        {"dek", "created", json_string("soon")},
        {"dek", "id", json_integer(-1)},
    };
    for (size_t i = 0; i < sizeof(breaks) / sizeof(*breaks); i++) {
        json_t *c = json_deep_copy(j);
        json_t *target = breaks[i].path ? json_array_get(json_object_get(c, "deks"), 0) : c;
        json_object_set_new(target, breaks[i].key, breaks[i].val);
        char *t = json_dumps(c, 0);
        cmk_errbuf eb = {0};
        cmk_keyring bad;
        cmk_err rc = cmk_keyring_parse(t, strlen(t), &bad, &eb);
        CHECK_MSG(rc == CMK_E_CORRUPT || rc == CMK_E_UNSUPPORTED, "break %zu (%s) accepted", i,
                  breaks[i].key);
        CHECK(eb.msg[0] != 0);
        free(t);
        json_decref(c);
    }
    cmk_keyring dummy;
    CHECK_RC(cmk_keyring_parse("[]", 2, &dummy, NULL), CMK_E_CORRUPT);
    CHECK_RC(cmk_keyring_parse("{", 1, &dummy, NULL), CMK_E_CORRUPT);
    json_decref(j);
    cmk_keyring_free(&kr);
    free(text);
}

static void test_wrap_and_save(void)
{
    test_kek *tk = test_kek_new(0);
    cmk_kek *kek = NULL;
    cmk_keyring kr, back;
    cmk_deks deks = {0}, again = {0};
    char path[4200];
    struct stat st;
    const char *dir = test_tmpdir("kr");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    REQUIRE(tk && dfd >= 0);
    CHECK_OK(cmk_kek_open(test_tmpdir("home"), test_kek_provider(tk), &kek, NULL));
    REQUIRE(kek);
    memset(&kr, 0, sizeof(kr));
    kr.cmk = 1;
    snprintf(kr.key_identifier, sizeof(kr.key_identifier), "test://vault/keys/k");
    snprintf(kr.versioned_kid, sizeof(kr.versioned_kid), "test://vault/keys/k/v1");
    snprintf(kr.identity.kind, sizeof(kr.identity.kind), "UserAssigned");
    snprintf(kr.identity.id, sizeof(kr.identity.id), "/x");
    snprintf(kr.identity.principal, sizeof(kr.identity.principal), "p");
    for (int i = 0; i < 3; i++)
        CHECK_OK(cmk_keyring_add_dek(&kr, &deks, kek,
                                     i == 0 ? CMK_WRAP_RSA_OAEP_256 : CMK_WRAP_NONE, NULL));
    CHECK(kr.ndeks == 3 && deks.n == 3 && kr.current_dek == 3);
    CHECK(kr.deks[2].alg == CMK_WRAP_RSA_OAEP_256 && kr.deks[2].wrapped_len == 256);
    CHECK(memcmp(cmk_deks_find(&deks, 1), cmk_deks_find(&deks, 2), 32) != 0);
    CHECK(cmk_deks_find(&deks, 4) == NULL);

    snprintf(path, sizeof(path), "%s/keyring.json", dir);
    CHECK_OK(cmk_keyring_save(dfd, dir, &kr, NULL));
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(cmk_keyring_load(dfd, dir, &back, NULL));
    CHECK_OK(cmk_keyring_unwrap_all(&back, kek, &again, NULL));
    for (uint32_t id = 1; id <= 3; id++)
        CHECK(memcmp(cmk_deks_find(&deks, id), cmk_deks_find(&again, id), 32) == 0);
    /* No DEK bytes in the file. */
    size_t flen;
    uint8_t *file = test_read_file(path, &flen);
    for (uint32_t id = 1; id <= 3 && file; id++) {
        char hex[65];
        cmk_hex(hex, cmk_deks_find(&deks, id), 32);
        CHECK(memmem(file, flen, cmk_deks_find(&deks, id), 8) == NULL);
        CHECK(strstr((char *)file, hex) == NULL);
    }
    free(file);

    /* A failing provider leaves nothing unwrapped. */
    cmk_deks none = {0};
    test_kek_fail(tk, CMK_E_KEY_DENIED);
    CHECK_RC(cmk_keyring_unwrap_all(&back, kek, &none, NULL), CMK_E_KEY_DENIED);
    CHECK(none.n == 0 && none.keys == NULL);
    test_kek_fail(tk, CMK_OK);
    /* A wrapped key from another key version does not unwrap. */
    CHECK(test_kek_add_version(tk) == 2);
    snprintf(back.deks[0].kid, sizeof(back.deks[0].kid), "test://vault/keys/k/v2");
    CHECK_RC(cmk_keyring_unwrap_all(&back, kek, &none, NULL), CMK_E_INTEGRITY);

    cmk_deks_free(&deks);
    cmk_deks_free(&again);
    cmk_keyring_free(&kr);
    cmk_keyring_free(&back);
    cmk_kek_close(kek);
    test_kek_free(tk);
    close(dfd);
}

/* A keyring.json that is a symbolic link (to a real keyring elsewhere, or through a
 * linked directory) is refused, not followed: a store's files are read only inside it. */
static void test_link_refused(void)
{
    const char *dir = test_tmpdir("krlink"), *other = test_tmpdir("krother");
    char link[4200], target[4200], sub[4200];
    cmk_errbuf eb = {0};
    cmk_keyring kr;
    char *txt = NULL;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    REQUIRE(dfd >= 0);
    snprintf(target, sizeof(target), "%s/keyring.json", other);
    snprintf(link, sizeof(link), "%s/keyring.json", dir);
    REQUIRE(test_write_file(target, corpus_valid(), strlen(corpus_valid())) == 0);
    REQUIRE(symlink(target, link) == 0);
    CHECK_RC(cmk_keyring_load(dfd, dir, &kr, &eb), CMK_E_REFUSED);
    CHECK_MSG(strstr(eb.msg, "keyring.json is a symbolic link") != NULL, "%s", eb.msg);
    /* The same through a linked parent directory. */
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    REQUIRE(symlink(other, sub) == 0);
    int fd = cmk_openat_nofollow(dfd, "sub/keyring.json", O_RDONLY, 0);
    CHECK(fd < 0 && (errno == ELOOP || errno == EXDEV));
    /* The walk used where openat2 is missing refuses the same, and "..". */
    fd = cmk_openat_walk(dfd, "sub/keyring.json", O_RDONLY, 0);
    CHECK(fd < 0 && errno == ELOOP);
    fd = cmk_openat_walk(dfd, "keyring.json", O_RDONLY, 0);
    CHECK(fd < 0 && errno == ELOOP);
    fd = cmk_openat_walk(dfd, "../keyring.json", O_RDONLY, 0);
    CHECK(fd < 0 && errno == EXDEV);
    REQUIRE(mkdir(strcat(strcpy(sub, dir), "/real"), 0700) == 0);
    fd = cmk_openat_walk(dfd, "real/new.json", O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    fd = cmk_openat_walk(dfd, "real", O_RDONLY | O_DIRECTORY, 0);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    fd = cmk_openat_walk(dfd, "sub", O_RDONLY | O_DIRECTORY, 0);
    CHECK(fd < 0 && errno == ELOOP);
    CHECK_RC(cmk_read_file_at(dfd, dir, "sub/keyring.json", 1 << 20, &txt, NULL, &eb),
             CMK_E_REFUSED);
    CHECK(txt == NULL);
    close(dfd);
}

int main(void)
{
    test_parse();
    test_wrap_and_save();
    test_link_refused();
    return check_summary();
}
