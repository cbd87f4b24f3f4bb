/*
 * test_pkcs11.c — the PKCS#11 (RSA-HSM) KEK provider against a real SoftHSM2 token.
 *
 * Self-contained: hsm_setup() writes a private SoftHSM2 configuration (tokendir in a test
 * directory, file object store), points $SOFTHSM2_CONF at it before the module is loaded and
 * initialises the tokens through the module itself (C_InitToken, C_InitPIN). The system's
 * /etc/softhsm and /var/lib/softhsm are never read or written.
 * $CMK_SOFTHSM_MODULE overrides the module path (default /usr/lib/softhsm/libsofthsm2.so).
 */
#define _GNU_SOURCE /* dladdr */
#include <dirent.h>
#include <dlfcn.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "tests/check.h"
#include "kek/identity/identity.h"
#include "kek/pkcs11/pkcs11.h"
#include "core/base/secmem.h"
#include "kek/vault/vault.h"

#define TOKEN_MAIN "cmk-main"
#define TOKEN_PIN  "cmk-pin" /* only ever logged in by the PIN tests, one at a time */

static const char SO_PIN[] = "so-Secret-8841";
static const char USER_PIN[] = "usr-Secret-3097";
static const char WRONG_PIN[] = "bad-Secret-5512";

static char g_module[1024];
static char g_dir[1024];
static char g_pinfile[1200], g_wrongpinfile[1200];

/* ---- helpers --------------------------------------------------------------------------- */

static void no_secret(const char *msg, int line)
{
    CHECK_MSG(!strstr(msg, USER_PIN) && !strstr(msg, SO_PIN) && !strstr(msg, WRONG_PIN),
              "line %d: a PIN leaked into a message: %s", line, msg);
}

/* Checks a failed call: its code, the errbuf's code, a substring of the message, no PIN. */
static void expect_err(cmk_err rc, const cmk_errbuf *eb, cmk_err want, const char *sub, int line)
{
    CHECK_MSG(rc == want, "line %d: got %s, want %s: %s", line, cmk_errname(rc), cmk_errname(want),
              eb->msg);
    CHECK_MSG(eb->code == rc, "line %d: errbuf code %s != %s", line, cmk_errname(eb->code),
              cmk_errname(rc));
    if (sub)
        CHECK_MSG(strstr(eb->msg, sub) != NULL, "line %d: message lacks \"%s\": %s", line, sub,
                  eb->msg);
    no_secret(eb->msg, line);
}
#define EXPECT_ERR(rc, eb, want, sub) expect_err((rc), (eb), (want), (sub), __LINE__)
#define EXPECT_OK(rc, eb)                                                                          \
    CHECK_MSG((rc) == CMK_OK, "line %d: %s: %s", __LINE__, cmk_errname(rc), (eb)->msg)

/* Raw access to the module, for setting tokens up and disturbing the code under test. */
static CK_FUNCTION_LIST_PTR raw_module(void)
{
    void *dl = dlopen(g_module, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList getfl;
    CK_FUNCTION_LIST_PTR f = NULL;

    if (!dl)
        return NULL;
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (!getfl || getfl(&f) != CKR_OK)
        return NULL;
    return f; /* the library stays loaded (our code keeps it mapped anyway) */
}

static int raw_find_slot(CK_FUNCTION_LIST_PTR f, const char *label, int uninitialised,
                         CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    char want[32];

    memset(want, ' ', sizeof(want));
    if (label)
        memcpy(want, label, strlen(label));
    if (f->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
        return -1;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        if (uninitialised ? !(ti.flags & CKF_TOKEN_INITIALIZED)
                          : memcmp(ti.label, want, sizeof(want)) == 0) {
            *out = slots[i];
            return 0;
        }
    }
    return -1;
}

/* C_InitToken on the free slot, then C_InitPIN as the security officer. */
static int raw_init_token(CK_FUNCTION_LIST_PTR f, const char *label)
{
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;
    unsigned char lab[32];

    memset(lab, ' ', sizeof(lab));
    memcpy(lab, label, strlen(label));
    if (raw_find_slot(f, NULL, 1, &slot) != 0 ||
        f->C_InitToken(slot, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN), lab) != CKR_OK)
        return -1;
    /* SoftHSM moves an initialised token to a new slot id: look it up again. */
    if (raw_find_slot(f, label, 0, &slot) != 0 ||
        f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
        return -1;
    if (f->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)SO_PIN, strlen(SO_PIN)) != CKR_OK ||
        f->C_InitPIN(s, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN)) != CKR_OK ||
        f->C_Logout(s) != CKR_OK) {
        (void)f->C_CloseSession(s);
        return -1;
    }
    return f->C_CloseSession(s) == CKR_OK ? 0 : -1;
}

static void write_text(const char *path, const char *text)
{
    REQUIRE(test_write_file(path, text, strlen(text)) == 0);
    REQUIRE(chmod(path, 0600) == 0);
}

/* A private SoftHSM2 with two initialised tokens; sets the environment the tests assume. */
static void hsm_setup(void)
{
    const char *mod = getenv("CMK_SOFTHSM_MODULE");
    char conf[1200], tokens[1200], text[2600];
    CK_C_INITIALIZE_ARGS args;
    CK_FUNCTION_LIST_PTR f;

    snprintf(g_module, sizeof(g_module), "%s",
             mod && *mod ? mod : "/usr/lib/softhsm/libsofthsm2.so");
    if (access(g_module, R_OK) != 0) {
        fprintf(stderr,
                "FATAL: SoftHSM2 module %s not found: install softhsm2 (Debian) or set "
                "CMK_SOFTHSM_MODULE\n",
                g_module);
        REQUIRE(0);
    }
    snprintf(g_dir, sizeof(g_dir), "%s", test_tmpdir("p11"));
    snprintf(tokens, sizeof(tokens), "%s/tokens", g_dir);
    snprintf(conf, sizeof(conf), "%s/softhsm2.conf", g_dir);
    REQUIRE(mkdir(tokens, 0700) == 0);
    snprintf(text, sizeof(text),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
             "slots.removable = false\n",
             tokens);
    write_text(conf, text);
    /* Before the module is first loaded: SoftHSM reads it in C_Initialize. */
    REQUIRE(setenv("SOFTHSM2_CONF", conf, 1) == 0);

    snprintf(g_pinfile, sizeof(g_pinfile), "%s/user.pin", g_dir);
    snprintf(text, sizeof(text), "%s\n", USER_PIN);
    write_text(g_pinfile, text);
    snprintf(g_wrongpinfile, sizeof(g_wrongpinfile), "%s/wrong.pin", g_dir);
    write_text(g_wrongpinfile, WRONG_PIN);

    f = raw_module();
    REQUIRE(f != NULL);
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    /* SoftHSM offers one free slot per C_Initialize: re-initialise for each token. */
    REQUIRE(f->C_Initialize(&args) == CKR_OK);
    REQUIRE(raw_init_token(f, TOKEN_MAIN) == 0);
    REQUIRE(f->C_Finalize(NULL) == CKR_OK);
    REQUIRE(f->C_Initialize(&args) == CKR_OK);
    REQUIRE(raw_init_token(f, TOKEN_PIN) == 0);
    REQUIRE(f->C_Finalize(NULL) == CKR_OK);

    unsetenv("CMKSTORE_PKCS11_PIN");
    REQUIRE(setenv("CMKSTORE_PKCS11_MODULE", g_module, 1) == 0);
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN_FILE", g_pinfile, 1) == 0);
}

static void kid_for(char *out, size_t cap, const char *token, const char *object,
                    const cmk_p11_version *v, const char *query)
{
    cmk_p11_uri u;

    memset(&u, 0, sizeof(u));
    snprintf(u.token, sizeof(u.token), "%s", token);
    snprintf(u.object, sizeof(u.object), "%s", object);
    if (v) {
        u.has_id = 1;
        u.id_len = CMK_P11_ID_LEN;
        memcpy(u.id, v->id, CMK_P11_ID_LEN);
    }
    if (query)
        snprintf(u.query, sizeof(u.query), "%s", query);
    REQUIRE(cmk_p11_uri_format(&u, v != NULL, out, cap, NULL) == CMK_OK);
}

/* ---- URI parsing ----------------------------------------------------------------------- */

static void uri_bad(const char *uri, const char *sub, int line)
{
    cmk_errbuf eb = {0};
    cmk_p11_uri u;
    cmk_err rc = cmk_p11_uri_parse(uri, &u, &eb);

    expect_err(rc, &eb, CMK_E_INVAL, sub, line);
    CHECK_MSG(u.pin_file[0] == 0 && u.module_path[0] == 0 && u.token[0] == 0,
              "line %d: partial parse left behind", line);
}
#define URI_BAD(uri, sub) uri_bad((uri), (sub), __LINE__)

static void test_uri(void)
{
    static const unsigned char id16[16] = {0,    0,    0, 1,    0xaa, 0xbb, 0xcc, 0xdd,
                                           0xee, 0xff, 0, 0x11, 0x22, 0x33, 0x44, 0x55};
    cmk_errbuf eb = {0};
    cmk_p11_uri u, u2;
    char out[CMK_ID_MAX], longuri[700];
    unsigned char id[CMK_P11_ID_LEN];
    uint32_t seq = 0;
    cmk_err rc;

    rc = cmk_p11_uri_parse("pkcs11:token=cmk;object=kek", &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.token, "cmk") == 0 && strcmp(u.object, "kek") == 0);
    CHECK(!u.has_id && u.query[0] == 0 && u.module_path[0] == 0 && u.pin_file[0] == 0);

    /* Scheme is case-insensitive; attribute order is free; percent-decoding. */
    rc = cmk_p11_uri_parse("PKCS11:object=my%20key;type=private;token=t%2Fx%3b", &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.object, "my key") == 0 && strcmp(u.token, "t/x;") == 0);
    CHECK(cmk_p11_is_uri("PkCs11:token=a") && !cmk_p11_is_uri("local://v/keys/k") &&
          !cmk_p11_is_uri(NULL));

    /* id: binary, either hex case. */
    rc = cmk_p11_uri_parse("pkcs11:token=t;object=o;id=%00%00%00%01%aa%BB%cc%DD%ee%ff%00%11%22"
                           "%33%44%55",
                           &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(u.has_id && u.id_len == 16 && memcmp(u.id, id16, 16) == 0);
    /* Raw unreserved / sub-delim characters are legal in the path. */
    rc = cmk_p11_uri_parse("pkcs11:token=a:b@c;object=k(1)+x,y=z&w", &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.token, "a:b@c") == 0 && strcmp(u.object, "k(1)+x,y=z&w") == 0);

    /* Unknown path and query attributes are checked and ignored; the query is kept. */
    rc = cmk_p11_uri_parse("pkcs11:token=t;serial=1234;manufacturer=SoftHSM%20project;"
                           "x-vendor=abc;slot-id=3;object=o?module-name=softhsm2&x-foo=bar",
                           &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.query, "module-name=softhsm2&x-foo=bar") == 0 && u.module_path[0] == 0);

    rc = cmk_p11_uri_parse("pkcs11:token=t;object=o?module-path=/usr/lib/softhsm/"
                           "libsofthsm2.so&pin-source=file:/run/cmk%20pin",
                           &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.module_path, "/usr/lib/softhsm/libsofthsm2.so") == 0);
    CHECK(strcmp(u.pin_file, "/run/cmk pin") == 0);
    rc = cmk_p11_uri_parse("pkcs11:token=t;object=o?pin-source=file:///run/pin", &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.pin_file, "/run/pin") == 0);
    rc = cmk_p11_uri_parse("pkcs11:token=t;object=o?pin-source=file://localhost/run/pin", &u, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(u.pin_file, "/run/pin") == 0);
    rc = cmk_p11_uri_parse("pkcs11:token=t;object=o?", &u, &eb); /* empty query is legal */
    EXPECT_OK(rc, &eb);

    URI_BAD("pkcs11:token=t;object=o?pin-source=file://otherhost/run/pin", "local file");
    URI_BAD("pkcs11:token=t;object=o?pin-source=|/usr/bin/pinentry", "file:");
    URI_BAD("pkcs11:token=t;object=o?pin-source=env:PIN", "file:");

    /* pin-value: refused, in the query or the path, and never echoed. */
    URI_BAD("pkcs11:token=t;object=o?pin-value=usr-Secret-3097", "pin-value");
    URI_BAD("pkcs11:token=t;object=o;pin-value=usr-Secret-3097", "pin-source=file:");
    URI_BAD("pkcs11:token=t;object=o?module-path=/x.so&pin-value=123456", "never");

    /* Bad escapes. */
    URI_BAD("pkcs11:token=t;object=%4", "percent-escape");
    URI_BAD("pkcs11:token=t;object=ab%", "percent-escape");
    URI_BAD("pkcs11:token=t;object=%zz", "percent-escape");
    URI_BAD("pkcs11:token=t;object=o;id=%0g", "percent-escape");
    URI_BAD("pkcs11:token=t;object=o?module-path=%G0", "percent-escape");
    URI_BAD("pkcs11:token=t;object=o;serial=%", "percent-escape");

    /* Structure. */
    URI_BAD("pkcs11:object=o", "token= and object=");
    URI_BAD("pkcs11:token=t", "token= and object=");
    URI_BAD("pkcs11:", "token= and object=");
    URI_BAD("pkcs11:token=a;token=b;object=o", "more than once");
    URI_BAD("pkcs11:token=t;object=o?module-path=/a&module-path=/b", "more than once");
    URI_BAD("pkcs11:token=t;;object=o", "empty attribute");
    URI_BAD("pkcs11:token=t;object=o;", "empty attribute");
    URI_BAD("pkcs11:token=t;object=o?a=1&&b=2", "empty attribute");
    URI_BAD("pkcs11:token=;object=o", "empty");
    URI_BAD("pkcs11:token=t;object=o;id=", "empty");
    URI_BAD("pkcs11:token;object=o", "no '='");
    URI_BAD("pkcs11:=t;object=o", "attribute name");
    URI_BAD("pkcs11:to%6ben=t;object=o", "attribute name");
    URI_BAD("pkcs11:token=my token;object=o", "percent-encoded");
    URI_BAD("pkcs11:token=a/b;object=o", "percent-encoded");
    URI_BAD("pkcs11:token=a#b;object=o", "percent-encoded");
    URI_BAD("pkcs11:token=t;object=o?x=a#b", "percent-encoded");
    URI_BAD("pkcs11:token=t;object=o?x=a b", "percent-encoded");
    URI_BAD("pkcs11:token=a?b;object=o", "attribute name"); /* '?' starts the query */
    URI_BAD("pkcs11:token=t;object=\xc3\xa9", "percent-encoded");
    URI_BAD("pkcs11:token=t;object=a%00b", "control character");
    URI_BAD("pkcs11:token=t;object=a%0Ab", "control character");
    URI_BAD("pkcs11:token=123456789012345678901234567890123;object=o", "too long");
    URI_BAD("pkcs11:token=t;object=o;type=cert", "type=private");
    URI_BAD("pkcs11:token=t;object=o;type=bogus", "type=private");
    URI_BAD("pkcs11:token=t;object=o;type=private;type=private", "more than once");
    URI_BAD("local://v/keys/k", "not a PKCS#11 URI");
    URI_BAD(NULL, "no PKCS#11 key identifier");
    memset(longuri, 'a', sizeof(longuri) - 1);
    longuri[sizeof(longuri) - 1] = '\0';
    memcpy(longuri, "pkcs11:token=t;object=", 22);
    URI_BAD(longuri, "longer than");

    /* Canonical form: id fully encoded in uppercase hex, the query kept verbatim. */
    rc = cmk_p11_uri_parse("pkcs11:id=%00%00%00%02%01%02%03%04%05%06%07%08%09%0a%0b%0c;"
                           "object=k:1;token=my%20tok;type=private?module-path=/x/y.so",
                           &u, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_uri_format(&u, 1, out, sizeof(out), &eb);
    EXPECT_OK(rc, &eb);
    CHECK_MSG(strcmp(out, "pkcs11:token=my%20tok;object=k:1;id=%00%00%00%02%01%02%03%04%05%06"
                          "%07%08%09%0A%0B%0C?module-path=/x/y.so") == 0,
              "%s", out);
    rc = cmk_p11_uri_parse(out, &u2, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(memcmp(&u, &u2, sizeof(u)) == 0);
    rc = cmk_p11_uri_format(&u, 0, out, sizeof(out), &eb);
    EXPECT_OK(rc, &eb);
    CHECK_MSG(strcmp(out, "pkcs11:token=my%20tok;object=k:1?module-path=/x/y.so") == 0, "%s", out);
    rc = cmk_p11_uri_format(&u, 1, out, 20, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "too long");

    /* Version strings. */
    rc = cmk_p11_version_parse("00000007aabbccddeeff001122334455", id, &seq, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(seq == 7 && id[3] == 7 && id[15] == 0x55);
    rc = cmk_p11_version_parse("00000000aabbccddeeff001122334455", id, &seq, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "is 0");
    rc = cmk_p11_version_parse("00000001aabbccddeeff00112233445", id, &seq, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "32 hex");
    rc = cmk_p11_version_parse("00000001aabbccddeeff00112233445x", id, &seq, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "32 hex");
}

/* ---- the handle: versions, attributes, wrap/unwrap, destroy --------------------------- */

/* A key pair with the label but a foreign CKA_ID (as pkcs11-tool would make). */
static void raw_foreign_key(const char *label)
{
    CK_FUNCTION_LIST_PTR f = raw_module();
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL yes = CK_TRUE;
    CK_ULONG bits = 1024;
    CK_BYTE id = 1, e[] = {1, 0, 1};
    CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, 1},
                          {CKA_MODULUS_BITS, &bits, sizeof(bits)},
                          {CKA_PUBLIC_EXPONENT, e, 3},
                          {CKA_LABEL, (void *)label, strlen(label)},
                          {CKA_ID, &id, 1}};
    CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, 1},
                           {CKA_PRIVATE, &yes, 1},
                           {CKA_DECRYPT, &yes, 1},
                           {CKA_LABEL, (void *)label, strlen(label)},
                           {CKA_ID, &id, 1}};
    CK_OBJECT_HANDLE hp, hq;
    CK_RV rv;

    REQUIRE(f && raw_find_slot(f, TOKEN_MAIN, 0, &slot) == 0);
    REQUIRE(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) == CKR_OK);
    rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)USER_PIN, strlen(USER_PIN));
    CHECK(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
    CHECK(f->C_GenerateKeyPair(s, &mech, pub, 5, priv, 5, &hp, &hq) == CKR_OK);
    CHECK(f->C_CloseSession(s) == CKR_OK);
}

/* Logs the whole process out of the token (login state is per token per process). */
static void raw_logout(const char *token)
{
    CK_FUNCTION_LIST_PTR f = raw_module();
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE s;

    REQUIRE(f && raw_find_slot(f, token, 0, &slot) == 0);
    REQUIRE(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) == CKR_OK);
    CHECK(f->C_Logout(s) == CKR_OK);
    CHECK(f->C_CloseSession(s) == CKR_OK);
}

static void test_handle(void)
{
    cmk_errbuf eb = {0};
    cmk_p11 *h = NULL;
    cmk_p11_version v1, v2, v3, v4, lat, *vs = NULL;
    cmk_p11_key_attrs at;
    EVP_PKEY *pub = NULL;
    unsigned char dek[32], got[64], wrapped[CMK_WRAPPED_MAX], bad[CMK_WRAPPED_MAX];
    size_t n = 0, wl, gl, nd = 0;
    unsigned algs = 0;
    cmk_err rc;

    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &h, &eb);
    EXPECT_OK(rc, &eb);
    REQUIRE(h != NULL);
    CHECK(strcmp(cmk_p11_token(h), TOKEN_MAIN) == 0 && strcmp(cmk_p11_module(h), g_module) == 0);

    rc = cmk_p11_key_versions(h, "kek", &vs, &n, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(n == 0 && vs == NULL);
    rc = cmk_p11_key_get(h, "kek", NULL, &lat, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "key \"kek\" is not in PKCS#11 token \"cmk-main\"");
    rc = cmk_p11_key_generate(h, "kek", 1024, &v1, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "2048, 3072 or 4096");
    rc = cmk_p11_key_generate(h, "", 2048, &v1, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "label");

    rc = cmk_p11_key_generate(h, "kek", 2048, &v1, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_key_generate(h, "kek", 2048, &v2, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_key_generate(h, "kek", 3072, &v3, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(v1.seq == 1 && v2.seq == 2 && v3.seq == 3);
    CHECK(strncmp(v1.version, "00000001", 8) == 0 && strncmp(v3.version, "00000003", 8) == 0);
    CHECK(strlen(v1.version) == 32 && strspn(v1.version, "0123456789abcdef") == 32);
    CHECK(memcmp(v1.id + 4, v2.id + 4, 12) != 0); /* random tails */
    raw_foreign_key("kek");                       /* not a cmkstore version: ignored */

    rc = cmk_p11_key_versions(h, "kek", &vs, &n, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(n == 3);
    if (n == 3) {
        CHECK(vs[0].seq == 1 && vs[1].seq == 2 && vs[2].seq == 3);
        CHECK(strcmp(vs[0].version, v1.version) == 0 && strcmp(vs[2].version, v3.version) == 0);
        CHECK(vs[0].bits == 2048 && vs[1].bits == 2048 && vs[2].bits == 3072);
    }
    free(vs);
    vs = NULL;
    rc = cmk_p11_key_get(h, "kek", NULL, &lat, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(lat.version, v3.version) == 0 && lat.bits == 3072);
    rc = cmk_p11_key_get(h, "kek", v1.version, &lat, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(lat.seq == 1 && lat.bits == 2048);

    /* Every generated private key: sensitive, never extractable. */
    const cmk_p11_version *all[] = {&v1, &v2, &v3};
    for (int i = 0; i < 3; i++) {
        rc = cmk_p11_key_attrs_get(h, "kek", all[i]->version, &at, &eb);
        EXPECT_OK(rc, &eb);
        CHECK_MSG(at.extractable == 0 && at.sensitive == 1 && at.always_sensitive == 1 &&
                      at.never_extractable == 1,
                  "version %d: extractable=%d sensitive=%d always=%d never=%d", i + 1,
                  at.extractable, at.sensitive, at.always_sensitive, at.never_extractable);
    }
    rc = cmk_p11_key_public(h, "kek", NULL, &pub, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(pub && EVP_PKEY_get_bits(pub) == 3072);
    EVP_PKEY_free(pub);
    pub = NULL;

    /* Negotiation: SoftHSM 2.6 cannot do OAEP with SHA-256, so RSA-OAEP (SHA-1) only. */
    rc = cmk_p11_wrap_algs(h, "kek", v1.version, &algs, &eb);
    EXPECT_OK(rc, &eb);
    printf("negotiated wrap algorithms on SoftHSM2: 0x%x\n", algs);
    CHECK(algs & (1u << CMK_WRAP_RSA_OAEP));
    CHECK_MSG(algs == (1u << CMK_WRAP_RSA_OAEP), "SoftHSM 2.6 expected RSA-OAEP only: 0x%x", algs);

    test_fill_random(dek, sizeof(dek), 11);
    wl = sizeof(wrapped);
    rc = cmk_p11_wrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP_256, dek, 32, wrapped, &wl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_UNSUPPORTED, "RSA-OAEP-256");
    wl = sizeof(wrapped);
    rc = cmk_p11_wrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, dek, 32, wrapped, &wl, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(wl == 256);
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(gl == 32 && memcmp(got, dek, 32) == 0);
    cmk_cleanse(got, sizeof(got));
    gl = 16; /* too small a buffer */
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "buffer");
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP_256, wrapped, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_UNSUPPORTED, "cannot unwrap RSA-OAEP-256");
    memcpy(bad, wrapped, wl);
    bad[wl / 2] ^= 1;
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, bad, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INTEGRITY, "kek");
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v2.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INTEGRITY, v2.version);
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v3.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INTEGRITY, "RSA-3072 gives 384 bytes"); /* wrong length */
    rc = cmk_p11_wrap(h, "kek", "zz", CMK_WRAP_RSA_OAEP, dek, 32, wrapped, &wl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "version");

    /* Logged out behind the handle's back: it logs in again. */
    raw_logout(TOKEN_MAIN);
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(gl == 32 && memcmp(got, dek, 32) == 0);
    raw_logout(TOKEN_MAIN);
    rc = cmk_p11_key_get(h, "kek", NULL, &lat, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(lat.seq == 3);

    /* Destroying a version = revoking it. */
    rc = cmk_p11_key_destroy(h, "kek", v2.version, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_key_get(h, "kek", v2.version, &lat, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, v2.version);
    rc = cmk_p11_key_destroy(h, "kek", v2.version, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "nothing to destroy");
    rc = cmk_p11_key_destroy(h, "kek", NULL, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "needs the version");
    wl = sizeof(wrapped);
    rc = cmk_p11_wrap(h, "kek", v2.version, CMK_WRAP_RSA_OAEP, dek, 32, wrapped, &wl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "destroyed");
    rc = cmk_p11_key_versions(h, "kek", &vs, &n, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(n == 2);
    free(vs);
    vs = NULL;
    rc = cmk_p11_key_generate(h, "kek", 2048, &v4, &eb); /* seq continues after the max */
    EXPECT_OK(rc, &eb);
    CHECK(v4.seq == 4);
    rc = cmk_p11_key_destroy_all(h, "kek", &nd, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(nd == 3);
    rc = cmk_p11_key_get(h, "kek", NULL, &lat, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "kek");
    rc = cmk_p11_key_destroy_all(h, "kek", &nd, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "kek");
    gl = sizeof(got);
    rc = cmk_p11_unwrap(h, "kek", v1.version, CMK_WRAP_RSA_OAEP, wrapped, wl, got, &gl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, v1.version);
    cmk_p11_close(h);
}

/* ---- module sharing ------------------------------------------------------------------- */

static void test_module_sharing(void)
{
    cmk_errbuf eb = {0};
    cmk_p11 *a = NULL, *b = NULL;
    cmk_p11_version *vs = NULL;
    CK_FUNCTION_LIST_PTR f;
    CK_ULONG ns = 0;
    size_t n;
    cmk_err rc;

    /* Two handles share one C_Initialize; closing one leaves the other working. */
    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &a, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &b, &eb);
    EXPECT_OK(rc, &eb);
    cmk_p11_close(a);
    rc = b ? cmk_p11_key_versions(b, "anything", &vs, &n, &eb) : CMK_E_INVAL;
    EXPECT_OK(rc, &eb);
    free(vs);
    cmk_p11_close(b);

    /* Someone else initialised the module: we tolerate it and never finalise it. */
    f = raw_module();
    REQUIRE(f != NULL);
    REQUIRE(f->C_Initialize(NULL) == CKR_OK);
    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &a, &eb);
    EXPECT_OK(rc, &eb);
    cmk_p11_close(a);
    CHECK(f->C_GetSlotList(CK_FALSE, NULL, &ns) == CKR_OK); /* still initialised */
    CHECK(f->C_Finalize(NULL) == CKR_OK);
    /* And after that, a new handle initialises the module afresh. */
    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &a, &eb);
    EXPECT_OK(rc, &eb);
    cmk_p11_close(a);
}

/* ---- the provider --------------------------------------------------------------------- */

static cmk_kek_provider *g_prov;
static char g_vkid[CMK_ID_MAX];
static unsigned char g_dek[8][32], g_wrapped[8][CMK_WRAPPED_MAX];
static size_t g_wl[8];

/* The flags of the providers new_provider makes: 0 is a store's (identifiers are data),
 * CMK_P11_PROV_OBEY_QUERY an HSM-backed vault's (identifiers built from vault.json). */
static unsigned g_prov_flags;

static cmk_kek_provider *new_provider(const char *home)
{
    cmk_errbuf eb = {0};
    cmk_kek_provider *p = NULL;
    cmk_err rc = cmk_pkcs11_provider_new(home, g_prov_flags, &p, &eb);

    EXPECT_OK(rc, &eb);
    REQUIRE(p != NULL);
    return p;
}

static void free_provider(cmk_kek_provider *p)
{
    if (p && p->release)
        p->release(p->self);
    free(p);
}

static cmk_err describe(cmk_kek_provider *p, const char *kid, cmk_key_desc *d, cmk_errbuf *eb)
{
    return p->describe(p->self, kid, "principal-4711", d, eb);
}

static void test_provider(const char *home)
{
    cmk_errbuf eb = {0};
    cmk_p11 *h = NULL;
    cmk_p11_version v1, v2;
    cmk_key_desc d;
    cmk_kek_provider *p;
    char kid[CMK_ID_MAX], want[2600], q[2600], path[1200], libpath[1024];
    unsigned char dek[32], got[64], wrapped[CMK_WRAPPED_MAX];
    size_t wl, gl;
    Dl_info di;
    cmk_wrap_alg alg;
    cmk_err rc;

    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &h, &eb);
    EXPECT_OK(rc, &eb);
    REQUIRE(h != NULL);
    rc = cmk_p11_key_generate(h, "store-kek", 2048, &v1, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_p11_key_generate(h, "store-kek", 2048, &v2, &eb);
    EXPECT_OK(rc, &eb);

    p = new_provider(home);
    CHECK(strcmp(p->name, "pkcs11") == 0);
    CHECK(p->handles(p->self, "pkcs11:token=a;object=b"));
    CHECK(!p->handles(p->self, "local://v/keys/k") && !p->handles(p->self, "pkcs1:x"));

    /* Versionless: the latest version. */
    rc = describe(p, "pkcs11:token=cmk-main;object=store-kek", &d, &eb);
    EXPECT_OK(rc, &eb);
    kid_for(want, sizeof(want), TOKEN_MAIN, "store-kek", &v2, NULL);
    CHECK_MSG(strcmp(d.kid, want) == 0, "%s != %s", d.kid, want);
    CHECK(strcmp(d.versionless, "pkcs11:token=cmk-main;object=store-kek") == 0);
    CHECK(d.requested_versioned == 0 && strcmp(d.version, v2.version) == 0);
    CHECK(d.kty == CMK_KTY_RSA_HSM && d.bits == 2048 && d.enabled == 1);
    CHECK(d.wrap_algs == (1u << CMK_WRAP_RSA_OAEP));

    /* Versioned: that version; the canonical kid round-trips. */
    kid_for(kid, sizeof(kid), TOKEN_MAIN, "store-kek", &v1, NULL);
    rc = describe(p, kid, &d, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(d.requested_versioned == 1 && strcmp(d.version, v1.version) == 0);
    CHECK(strcmp(d.kid, kid) == 0);
    snprintf(g_vkid, sizeof(g_vkid), "%s", d.kid);

    /* The query (module-path, pin-source) is carried into both identifiers. */
    snprintf(q, sizeof(q),
             "pkcs11:object=store-kek;token=cmk-main?module-path=%s&pin-source=file:%s", g_module,
             g_pinfile);
    rc = describe(p, q, &d, &eb);
    EXPECT_OK(rc, &eb);
    snprintf(want, sizeof(want), "module-path=%s&pin-source=file:%s", g_module, g_pinfile);
    CHECK(strstr(d.kid, ";id=%00%00%00%02") && strstr(d.kid, want) && strstr(d.versionless, want));
    CHECK(strncmp(d.versionless, "pkcs11:token=cmk-main;object=store-kek?", 39) == 0);

    /* Wrap and unwrap a 32-byte key through the provider with the negotiated algorithm. */
    alg = (d.wrap_algs & (1u << CMK_WRAP_RSA_OAEP_256)) ? CMK_WRAP_RSA_OAEP_256 : CMK_WRAP_RSA_OAEP;
    CHECK(alg == CMK_WRAP_RSA_OAEP);
    test_fill_random(dek, sizeof(dek), 42);
    wl = 0;
    rc = p->wrap(p->self, g_vkid, "principal-4711", alg, dek, 32, wrapped, &wl, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(wl == 256);
    gl = sizeof(got);
    rc = p->unwrap(p->self, g_vkid, "principal-4711", alg, wrapped, wl, got, &gl, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(gl == 32 && memcmp(got, dek, 32) == 0);
    cmk_cleanse(got, sizeof(got));
    rc = p->wrap(p->self, g_vkid, "principal-4711", CMK_WRAP_RSA_OAEP_256, dek, 32, wrapped, &wl,
                 &eb);
    EXPECT_ERR(rc, &eb, CMK_E_UNSUPPORTED, "RSA-OAEP-256");
    rc = p->wrap(p->self, "pkcs11:token=cmk-main;object=store-kek", "principal-4711", alg, dek, 32,
                 wrapped, &wl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "versioned key identifier");

    /* Missing things, each with its code and a message that names it. */
    rc = describe(p, "pkcs11:token=cmk-main;object=no-such-key", &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "key \"no-such-key\" is not in PKCS#11 token");
    CHECK(strstr(eb.msg, "principal-4711") != NULL);
    rc = describe(p,
                  "pkcs11:token=cmk-main;object=store-kek;id=%00%00%00%07%01%02%03%04%05%06"
                  "%07%08%09%0a%0b%0c",
                  &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "version 00000007010203040506070809");
    rc = describe(p, "pkcs11:token=cmk-main;object=store-kek;id=%01", &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "not a cmkstore key version");
    rc = describe(p, "pkcs11:token=no-such-token;object=store-kek", &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE, "no PKCS#11 token labelled \"no-such-token\"");
    CHECK(strstr(eb.msg, "\"cmk-main\"") != NULL); /* lists the tokens present */
    /* A store's identifier never chooses the module: one that is not the configured module
     * is refused without being loaded; without a configured module, too. */
    rc = describe(p, "pkcs11:token=cmk-main;object=store-kek?module-path=/nonexistent/libnope.so",
                  &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE,
               "names module /nonexistent/libnope.so, but the configured module is");
    REQUIRE(dladdr((void *)EVP_PKEY_new, &di) != 0 && di.dli_fname);
    snprintf(libpath, sizeof(libpath), "%s", di.dli_fname);
    snprintf(q, sizeof(q), "pkcs11:token=cmk-main;object=store-kek?module-path=%s", libpath);
    rc = describe(p, q, &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE, "neither was loaded");
    unsetenv("CMKSTORE_PKCS11_MODULE");
    rc = describe(p, q, &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE,
               "a module named by a key identifier is never loaded");
    REQUIRE(setenv("CMKSTORE_PKCS11_MODULE", g_module, 1) == 0);
    /* Module loading failures, where identifiers are obeyed (an HSM-backed vault's). */
    {
        cmk_kek_provider *vp;

        g_prov_flags = CMK_P11_PROV_OBEY_QUERY;
        vp = new_provider(home);
        g_prov_flags = 0;
        rc = describe(vp,
                      "pkcs11:token=cmk-main;object=store-kek?module-path=/nonexistent/libnope.so",
                      &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE,
                   "cannot load PKCS#11 module /nonexistent/libnope.so");
        rc = describe(vp, q, &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE, "not a PKCS#11 module");
        snprintf(path, sizeof(path), "%s/notamodule.so", g_dir);
        write_text(path, "this is not a shared object\n");
        snprintf(q, sizeof(q), "pkcs11:token=cmk-main;object=store-kek?module-path=%s", path);
        rc = describe(vp, q, &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_UNREACHABLE, "cannot load PKCS#11 module");
        free_provider(vp);
    }
    rc = describe(p, "pkcs11:token=cmk-main;object=store-kek?pin-value=usr-Secret-3097", &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "pin-value is refused");
    rc = describe(p, "pkcs11:token=cmk-main;object=%zz", &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_INVAL, "percent-escape");

    /* Revocation: destroying the version's key object makes it "not found" at once, even
     * though the provider has its public key cached. */
    rc = cmk_p11_key_destroy(h, "store-kek", v2.version, &eb);
    EXPECT_OK(rc, &eb);
    kid_for(kid, sizeof(kid), TOKEN_MAIN, "store-kek", &v2, NULL);
    rc = describe(p, kid, &d, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, v2.version);
    wl = sizeof(wrapped);
    rc = p->wrap(p->self, kid, "principal-4711", alg, dek, 32, wrapped, &wl, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "destroyed");
    CHECK(strstr(eb.msg, "principal-4711") != NULL);
    rc = describe(p, "pkcs11:token=cmk-main;object=store-kek", &d, &eb);
    EXPECT_OK(rc, &eb);
    CHECK(strcmp(d.version, v1.version) == 0); /* latest is v1 again */
    free_provider(p);
    cmk_p11_close(h);
}

/* The PIN tests use TOKEN_PIN, which no other handle logs in to: PKCS#11 login state is per
 * token per process, so a PIN can only be checked on a token nobody is logged in to. Every
 * provider is freed at the end of its check, which closes its sessions and logs out. */
static void pin_case(const char *home, const char *kid, cmk_err want, const char *sub, int line)
{
    cmk_kek_provider *p = new_provider(home);
    cmk_errbuf eb = {0};
    cmk_key_desc d;
    cmk_err rc = describe(p, kid, &d, &eb);

    expect_err(rc, &eb, want, sub, line);
    free_provider(p);
}
#define PIN_CASE(home, kid, want, sub) pin_case((home), (kid), (want), (sub), __LINE__)

static void test_pins(const char *home)
{
    char kid[1300], path[1200], text[2600];

    /* A store's identifier: its pin-source is never read. With the right PIN only there and
     * a wrong one configured, the login fails with the configured one. */
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN_FILE", g_wrongpinfile, 1) == 0);
    snprintf(kid, sizeof(kid), "pkcs11:token=" TOKEN_PIN ";object=k?pin-source=file:%s", g_pinfile);
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, "$CMKSTORE_PKCS11_PIN_FILE");
    unsetenv("CMKSTORE_PKCS11_PIN_FILE");
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, "the key identifier's pin-source is not read");

    /* The rest: identifiers obeyed (an HSM-backed vault's, built from vault.json). */
    g_prov_flags = CMK_P11_PROV_OBEY_QUERY;
    /* Wrong PIN from each source; the message names the token and where the PIN came from. */
    snprintf(kid, sizeof(kid), "pkcs11:token=" TOKEN_PIN ";object=k?pin-source=file:%s",
             g_wrongpinfile);
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, "CKR_PIN_INCORRECT");
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, "token \"cmk-pin\"");
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, g_wrongpinfile);
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN_FILE", g_wrongpinfile, 1) == 0);
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED,
             "$CMKSTORE_PKCS11_PIN_FILE");
    /* pin-source beats the environment: the right PIN logs in (and the key is not there). */
    snprintf(kid, sizeof(kid), "pkcs11:token=" TOKEN_PIN ";object=k?pin-source=file:%s", g_pinfile);
    PIN_CASE(home, kid, CMK_E_KEY_NOT_FOUND, "key \"k\"");
    /* A PIN file beats a PIN in the environment. */
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN", USER_PIN, 1) == 0);
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED, "PIN");
    unsetenv("CMKSTORE_PKCS11_PIN_FILE");
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_NOT_FOUND, "key \"k\"");
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN", WRONG_PIN, 1) == 0);
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED, "$CMKSTORE_PKCS11_PIN");
    unsetenv("CMKSTORE_PKCS11_PIN");

    /* One provider: a rejected PIN is not presented again (a real HSM would lock it after a
     * few tries) until the PIN file changes. */
    {
        cmk_kek_provider *p = new_provider(home);
        cmk_errbuf eb = {0};
        cmk_key_desc d;
        cmk_err rc;

        snprintf(path, sizeof(path), "%s/changing.pin", g_dir);
        write_text(path, WRONG_PIN);
        snprintf(kid, sizeof(kid), "pkcs11:token=" TOKEN_PIN ";object=k?pin-source=file:%s", path);
        rc = describe(p, kid, &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_DENIED, "CKR_PIN_INCORRECT");
        rc = describe(p, kid, &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_DENIED, "rejected before and is not presented again");
        CHECK(strstr(eb.msg, "CKR_PIN_INCORRECT") != NULL && strstr(eb.msg, path) != NULL);
        write_text(path, USER_PIN);
        rc = describe(p, kid, &d, &eb);
        EXPECT_ERR(rc, &eb, CMK_E_KEY_NOT_FOUND, "key \"k\""); /* logged in */
        free_provider(p);
    }

    /* Nothing configured. */
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED,
             "no PKCS#11 user PIN configured");
    PIN_CASE(NULL, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED,
             "no PKCS#11 user PIN configured");
    snprintf(path, sizeof(path), "%s/absent.pin", g_dir);
    snprintf(kid, sizeof(kid), "pkcs11:token=" TOKEN_PIN ";object=k?pin-source=file:%s", path);
    PIN_CASE(home, kid, CMK_E_KEY_DENIED, "cannot read the PKCS#11 PIN file");
    unsetenv("CMKSTORE_PKCS11_MODULE");
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_UNREACHABLE,
             "no PKCS#11 module configured");

    /* <home>/pkcs11.json: module and a pinFile relative to home. */
    snprintf(path, sizeof(path), "%s/pkcs11.json", home);
    snprintf(text, sizeof(text), "{\"module\": \"%s\", \"pinFile\": \"wrong.pin\"}", g_module);
    write_text(path, text);
    snprintf(path, sizeof(path), "%s/wrong.pin", home);
    write_text(path, WRONG_PIN);
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_DENIED, "pinFile");
    snprintf(path, sizeof(path), "%s/pkcs11.json", home);
    snprintf(text, sizeof(text), "{\"module\": \"%s\", \"pinFile\": \"%s\"}", g_module, g_pinfile);
    write_text(path, text);
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_KEY_NOT_FOUND, "key \"k\"");
    PIN_CASE(home, "pkcs11:token=" TOKEN_MAIN ";object=store-kek", CMK_OK, NULL);
    write_text(path, "{ not json");
    PIN_CASE(home, "pkcs11:token=" TOKEN_PIN ";object=k", CMK_E_CORRUPT, "pkcs11.json");
    REQUIRE(unlink(path) == 0);

    REQUIRE(setenv("CMKSTORE_PKCS11_MODULE", g_module, 1) == 0);
    REQUIRE(setenv("CMKSTORE_PKCS11_PIN_FILE", g_pinfile, 1) == 0);
    g_prov_flags = 0;
}

/* ---- threads -------------------------------------------------------------------------- */

#define NTHREADS 8
#define NITER    25

struct worker {
    int idx;
    int failures;
    char msg[600];
};

static cmk_kek_provider *g_cold; /* fresh provider: the threads race to open and negotiate */
static pthread_barrier_t g_start;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned char got[64], wrapped[CMK_WRAPPED_MAX];
    cmk_errbuf eb0 = {0};
    cmk_key_desc d;
    cmk_err rc0;

    (void)pthread_barrier_wait(&g_start);
    rc0 = g_cold->describe(g_cold->self, "pkcs11:token=cmk-main;object=store-kek", "p", &d, &eb0);
    if (rc0 != CMK_OK || strcmp(d.kid, g_vkid) != 0 || d.wrap_algs != (1u << CMK_WRAP_RSA_OAEP)) {
        w->failures++;
        snprintf(w->msg, sizeof(w->msg), "cold describe: %s: %s", cmk_errname(rc0), eb0.msg);
    }

    for (int i = 0; i < NITER; i++) {
        cmk_errbuf eb = {0};
        size_t gl = sizeof(got), wl = 0;
        cmk_err rc;

        rc = g_prov->unwrap(g_prov->self, g_vkid, "principal-4711", CMK_WRAP_RSA_OAEP,
                            g_wrapped[w->idx], g_wl[w->idx], got, &gl, &eb);
        if (rc != CMK_OK || gl != 32 || memcmp(got, g_dek[w->idx], 32) != 0) {
            w->failures++;
            snprintf(w->msg, sizeof(w->msg), "unwrap: %s: %s", cmk_errname(rc), eb.msg);
        }
        cmk_cleanse(got, sizeof(got));
        if (i % 5 == 0) {
            rc = g_prov->wrap(g_prov->self, g_vkid, "principal-4711", CMK_WRAP_RSA_OAEP,
                              g_dek[w->idx], 32, wrapped, &wl, &eb);
            if (rc != CMK_OK || wl != g_wl[w->idx]) {
                w->failures++;
                snprintf(w->msg, sizeof(w->msg), "wrap: %s: %s", cmk_errname(rc), eb.msg);
            }
        }
    }
    return NULL;
}

static void test_threads(const char *home)
{
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    cmk_errbuf eb = {0};
    cmk_err rc;

    g_prov = new_provider(home);
    g_cold = new_provider(home);
    REQUIRE(pthread_barrier_init(&g_start, NULL, NTHREADS) == 0);
    for (int i = 0; i < NTHREADS; i++) {
        test_fill_random(g_dek[i], 32, 100 + (uint64_t)i);
        rc = g_prov->wrap(g_prov->self, g_vkid, "principal-4711", CMK_WRAP_RSA_OAEP, g_dek[i], 32,
                          g_wrapped[i], &g_wl[i], &eb);
        EXPECT_OK(rc, &eb);
    }
    for (int i = 0; i < NTHREADS; i++) {
        w[i].idx = i;
        w[i].failures = 0;
        w[i].msg[0] = 0;
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        REQUIRE(pthread_join(th[i], NULL) == 0);
        CHECK_MSG(w[i].failures == 0, "thread %d: %d failures, last: %s", i, w[i].failures,
                  w[i].msg);
    }
    CHECK(pthread_barrier_destroy(&g_start) == 0);
    free_provider(g_cold);
    free_provider(g_prov);
    g_prov = g_cold = NULL;
}

/* ---- an HSM-backed vault and a store on it: 8 threads reading at once ---------------------- */

#define HS_THREADS 8
#define HS_BLOBS   8
#define HS_ROUNDS  12

static cmk_store *g_hs_store;
static const char *g_hs_dir, *g_hs_home;
static unsigned char *g_hs_data[HS_BLOBS];
static size_t g_hs_len[HS_BLOBS];
static char g_hs_digest[HS_BLOBS][CMK_DIGEST_MAX];
static pthread_barrier_t g_hs_start;

struct hs_worker {
    int idx, failures;
    char msg[600];
};

static void hs_fail(struct hs_worker *w, const char *what, cmk_err rc)
{
    w->failures++;
    snprintf(w->msg, sizeof(w->msg), "%s: %s: %s", what, cmk_errname(rc), cmk_errmsg());
}

/* Reads blob b through s in odd-sized pieces and compares it with what was put. */
static void hs_read(struct hs_worker *w, cmk_store *s, int b)
{
    unsigned char buf[70001];
    size_t off = 0, n;
    cmk_get *g = NULL;
    cmk_err rc;

    rc = cmk_get_open(s, g_hs_digest[b], 0, CMK_TO_END, &g);
    if (rc != CMK_OK) {
        hs_fail(w, "get_open", rc);
        return;
    }
    for (;;) {
        rc = cmk_get_read(g, buf, sizeof(buf), &n);
        if (rc != CMK_OK) {
            hs_fail(w, "get_read", rc);
            break;
        }
        if (n == 0)
            break;
        if (off + n > g_hs_len[b] || memcmp(buf, g_hs_data[b] + off, n) != 0) {
            w->failures++;
            snprintf(w->msg, sizeof(w->msg), "blob %d differs at %zu", b, off);
            break;
        }
        off += n;
    }
    if (rc == CMK_OK && off != g_hs_len[b]) {
        w->failures++;
        snprintf(w->msg, sizeof(w->msg), "blob %d: %zu of %zu bytes", b, off, g_hs_len[b]);
    }
    cmk_get_close(g);
}

static void *hs_main(void *arg)
{
    struct hs_worker *w = arg;
    cmk_store_opts so;
    cmk_store *own = NULL;
    cmk_err rc;

    (void)pthread_barrier_wait(&g_hs_start);
    /* Every thread also opens the store itself, at the same moment: each open unwraps the
     * data keys in the token through its own provider, racing the others' logins. */
    cmk_store_opts_init(&so);
    so.home = g_hs_home;
    so.threads = 1;
    rc = cmk_store_open(g_hs_dir, &so, &own);
    if (rc != CMK_OK)
        hs_fail(w, "store_open", rc);
    for (int r = 0; r < HS_ROUNDS && w->failures == 0; r++) {
        hs_read(w, g_hs_store, (w->idx + r) % HS_BLOBS);
        if (own)
            hs_read(w, own, (w->idx + 3 * r + 1) % HS_BLOBS);
        if (r % 4 == 3) {
            /* A key check goes to the token (describe, and an unwrap). */
            rc = cmk_store_check_key(g_hs_store, 0, NULL);
            if (rc != CMK_OK)
                hs_fail(w, "check_key", rc);
        }
    }
    cmk_store_close(own);
    return NULL;
}

static void test_hsm_store(void)
{
    static const char *const perms[] = {"get", "wrapKey", "unwrapKey"};
    char home[1024], dir[1100], kid[CMK_ID_MAX], label[160];
    cmk_vault_opts vo = {0};
    cmk_create_opts co;
    cmk_store_opts so;
    cmk_identity id;
    cmk_errbuf eb = {0};
    cmk_p11_key_attrs at;
    cmk_encryption_info ei;
    struct hs_worker w[HS_THREADS];
    pthread_t th[HS_THREADS];
    json_t *j = NULL;
    cmk_p11 *h = NULL;
    cmk_err rc;

    snprintf(home, sizeof(home), "%s", test_tmpdir("hsmvault"));
    snprintf(dir, sizeof(dir), "%s/store", home);
    g_hs_home = home;
    g_hs_dir = dir;
    rc = cmk_identity_create(home, "sid", &id, &eb);
    EXPECT_OK(rc, &eb);

    /* A wrong PIN refuses the vault and leaves nothing behind. */
    vo.hsm_token = TOKEN_MAIN;
    vo.hsm_module = g_module;
    vo.hsm_pin_file = g_wrongpinfile;
    rc = cmk_vault_create(home, "hv", &vo, NULL, &eb);
    EXPECT_ERR(rc, &eb, CMK_E_KEY_DENIED, "CKR_PIN_INCORRECT");
    CHECK(cmk_vault_show(home, "hv", NULL, &eb) == CMK_E_NOT_FOUND);

    vo.hsm_pin_file = g_pinfile;
    rc = cmk_vault_create(home, "hv", &vo, NULL, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_vault_set_policy(home, "hv", id.principal_id, perms, 3, NULL, &eb);
    EXPECT_OK(rc, &eb);
    rc = cmk_vault_key_create(home, "hv", "k", "RSA-HSM", 2048, &j, &eb);
    EXPECT_OK(rc, &eb);
    REQUIRE(rc == CMK_OK);
    snprintf(kid, sizeof(kid), "%s",
             json_string_value(json_object_get(json_object_get(j, "key"), "kid")));
    snprintf(label, sizeof(label), "%s",
             json_string_value(json_object_get(json_object_get(j, "hsm"), "label")));
    json_decref(j);
    CHECK_MSG(strncmp(kid, "local://hv/keys/k/00000001", 26) == 0 && strlen(kid) == 50, "%s", kid);
    CHECK_MSG(strcmp(label, "hv.k") == 0, "%s", label);

    /* The private key the vault made: sensitive and never extractable, read back from the
     * token's own object. */
    rc = cmk_p11_open(g_module, TOKEN_MAIN, USER_PIN, &h, &eb);
    EXPECT_OK(rc, &eb);
    if (rc == CMK_OK) {
        rc = cmk_p11_key_attrs_get(h, "hv.k", kid + 18, &at, &eb);
        EXPECT_OK(rc, &eb);
        CHECK_MSG(at.sensitive == 1 && at.extractable == 0 && at.always_sensitive == 1 &&
                      at.never_extractable == 1,
                  "extractable=%d sensitive=%d always=%d never=%d", at.extractable, at.sensitive,
                  at.always_sensitive, at.never_extractable);
        cmk_p11_close(h);
    }

    cmk_create_opts_init(&co);
    co.home = home;
    co.identity = "sid";
    co.key_id = "local://hv/keys/k";
    co.chunk_size = 64 * 1024;
    CHECK_OK(cmk_store_create(dir, &co));
    cmk_store_opts_init(&so);
    so.home = home;
    CHECK_OK(cmk_store_open(dir, &so, &g_hs_store));
    REQUIRE(g_hs_store != NULL);
    for (int b = 0; b < HS_BLOBS; b++) {
        cmk_put *p = NULL;

        g_hs_len[b] = (size_t)b * 97001 + (b == 0 ? 0 : 13);
        g_hs_data[b] = malloc(g_hs_len[b] + 1);
        REQUIRE(g_hs_data[b] != NULL);
        test_fill_random(g_hs_data[b], g_hs_len[b], 900 + (uint64_t)b);
        CHECK_OK(cmk_put_begin(g_hs_store, NULL, &p));
        if (p && g_hs_len[b])
            CHECK_OK(cmk_put_write(p, g_hs_data[b], g_hs_len[b]));
        if (p)
            CHECK_OK(cmk_put_commit(p, NULL, g_hs_digest[b]));
    }

    REQUIRE(pthread_barrier_init(&g_hs_start, NULL, HS_THREADS) == 0);
    for (int i = 0; i < HS_THREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].idx = i;
        REQUIRE(pthread_create(&th[i], NULL, hs_main, &w[i]) == 0);
    }
    for (int i = 0; i < HS_THREADS; i++) {
        REQUIRE(pthread_join(th[i], NULL) == 0);
        CHECK_MSG(w[i].failures == 0, "HSM store thread %d: %d failures, last: %s", i,
                  w[i].failures, w[i].msg);
    }
    CHECK(pthread_barrier_destroy(&g_hs_start) == 0);

    /* A new version in the token; the versionless store follows it, and still reads all. */
    rc = cmk_vault_key_create(home, "hv", "k", "RSA-HSM", 2048, &j, &eb);
    EXPECT_OK(rc, &eb);
    json_decref(j);
    {
        int rotated = 0;
        struct hs_worker one = {0};

        CHECK_OK(cmk_store_check_key(g_hs_store, 1, &rotated));
        CHECK(rotated == 1);
        CHECK_OK(cmk_store_encryption(g_hs_store, &ei));
        CHECK_MSG(strncmp(ei.versioned_key_identifier, "local://hv/keys/k/00000002", 26) == 0, "%s",
                  ei.versioned_key_identifier);
        for (int b = 0; b < HS_BLOBS; b++)
            hs_read(&one, g_hs_store, b);
        CHECK_MSG(one.failures == 0, "after rotation: %s", one.msg);
    }
    cmk_store_close(g_hs_store);
    g_hs_store = NULL;
    for (int b = 0; b < HS_BLOBS; b++)
        free(g_hs_data[b]);
}

/* ---- nothing in the source asks a token for private-key material ---------------------- */

static void test_source_guard(void)
{
    static const char *forbidden[] = {
        "CKA_PRIVATE_EXPONENT", "CKA_PRIME_1",     "CKA_PRIME_2", "CKA_EXPONENT_1",
        "CKA_EXPONENT_2",       "CKA_COEFFICIENT", "C_WrapKey",   "CKA_VALUE"};
    const char *src = getenv("CMK_SOURCE_DIR");
    char dir[1100], path[1400];
    struct dirent *de;
    unsigned char *text;
    int files = 0;
    DIR *d;

    /* Every source of the PKCS#11 provider (kek/pkcs11/, once kek/pkcs11.c). */
    snprintf(dir, sizeof(dir), "%s/kek/pkcs11", src && *src ? src : ".");
    d = opendir(dir);
    if (!d) {
        printf("source guard skipped: %s not readable (set CMK_SOURCE_DIR)\n", dir);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);

        if (n < 3 || strcmp(de->d_name + n - 2, ".c") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        text = test_read_file(path, NULL);
        CHECK_MSG(text != NULL, "cannot read %s", path);
        if (!text)
            continue;
        files++;
        for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
            CHECK_MSG(strstr((char *)text, forbidden[i]) == NULL, "%s mentions %s", path,
                      forbidden[i]);
        free(text);
    }
    closedir(d);
    CHECK_MSG(files > 0, "no PKCS#11 sources found in %s", dir);
}

int main(void)
{
    char home[1024];

    hsm_setup();
    snprintf(home, sizeof(home), "%s", test_tmpdir("p11home"));
    test_uri();
    test_source_guard();
    test_handle();
    test_module_sharing();
    test_provider(home);
    test_pins(home);
    test_threads(home);
    test_hsm_store();
    return check_summary();
}
