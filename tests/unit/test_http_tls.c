/* test_http_tls.c — the HTTPS pair of the servers (tools/serve/http_tls.c): a self-signed
 * pair generated into the home (key 0600, the certificate naming the loopback addresses and
 * the extra names, its fingerprint the SHA-256 of its DER), reused on the next load; the
 * operator's files loaded; a key that is not the certificate's, a key readable by others, one
 * file without the other and a file that is not PEM refused, leaving nothing loaded. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/check.h"
#include "tools/serve/http_tls.h"

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

    if (f)
        fclose(f);
    return x;
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void check_generated(const char *home)
{
    const char *sans[] = {"vault.example.test", "192.0.2.7"};
    char err[512], crt[4200], key[4200], hex[96];
    unsigned char md[32];
    unsigned mdlen = 0;
    struct stat st;
    http_tls t, again;
    X509 *x;

    CHECK_RC(http_tls_load(&t, NULL, NULL, home, "unit", sans, 2, err, sizeof(err)), CMK_OK);
    CHECK(t.generated == 1);
    CHECK(t.cert_pem && strstr(t.cert_pem, "BEGIN CERTIFICATE"));
    CHECK(t.key_pem && strstr(t.key_pem, "PRIVATE KEY"));
    snprintf(crt, sizeof(crt), "%s/tls/unit.crt", home);
    snprintf(key, sizeof(key), "%s/tls/unit.key", home);
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(strcmp(t.cert_path, crt) == 0);
    x = read_cert(crt);
    CHECK(x != NULL);
    if (x) {
        CHECK(X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32);
        for (unsigned i = 0; i < 32; i++)
            snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02X%s", md[i], i < 31 ? ":" : "");
        CHECK_MSG(strcmp(hex, t.fingerprint) == 0, "%s vs %s", hex, t.fingerprint);
        CHECK(X509_check_host(x, "localhost", 0, 0, NULL) == 1);
        CHECK(X509_check_host(x, "vault.example.test", 0, 0, NULL) == 1);
        CHECK(X509_check_ip_asc(x, "127.0.0.1", 0) == 1);
        CHECK(X509_check_ip_asc(x, "::1", 0) == 1);
        CHECK(X509_check_ip_asc(x, "192.0.2.7", 0) == 1);
        CHECK(X509_check_ip_asc(x, "192.0.2.8", 0) == 0);
        X509_free(x);
    }
    /* The next load reuses the pair. */
    CHECK_RC(http_tls_load(&again, NULL, NULL, home, "unit", NULL, 0, err, sizeof(err)), CMK_OK);
    CHECK(again.generated == 0);
    CHECK(strcmp(again.fingerprint, t.fingerprint) == 0);
    http_tls_free(&again);
    /* The operator's files: the same pair named explicitly. */
    CHECK_RC(http_tls_load(&again, crt, key, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_OK);
    CHECK(strcmp(again.fingerprint, t.fingerprint) == 0);
    http_tls_free(&again);
    http_tls_free(&t);
    CHECK(t.cert_pem == NULL && t.key_pem == NULL);
}

static void check_refusals(const char *home)
{
    char err[512], crt[4200], key[4200], other_key[4200], bad[4200], open_key[4200];
    char *text = NULL;
    http_tls t, o;
    FILE *f;
    long n;

    snprintf(crt, sizeof(crt), "%s/tls/unit.crt", home);
    snprintf(key, sizeof(key), "%s/tls/unit.key", home);
    CHECK_RC(http_tls_load(&o, NULL, NULL, home, "other", NULL, 0, err, sizeof(err)), CMK_OK);
    snprintf(other_key, sizeof(other_key), "%s/tls/other.key", home);
    http_tls_free(&o);

    CHECK_RC(http_tls_load(&t, crt, other_key, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK(strstr(err, "is not the key of the certificate") != NULL);
    CHECK(t.cert_pem == NULL && t.key_pem == NULL);
    CHECK_RC(http_tls_load(&t, crt, NULL, home, "unit", NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK(strstr(err, "both or neither") != NULL);

    snprintf(bad, sizeof(bad), "%s/notpem.crt", home);
    write_text(bad, "not a certificate\n", 0644);
    CHECK_RC(http_tls_load(&t, bad, key, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK(strstr(err, "holds no PEM certificate") != NULL);

    /* Files that cannot be a PEM file: each named, a bad option value. */
    snprintf(bad, sizeof(bad), "%s/empty.crt", home);
    write_text(bad, "", 0644);
    CHECK_RC(http_tls_load(&t, bad, key, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK_MSG(strstr(err, "empty.crt is empty") != NULL, "%s", err);
    CHECK_RC(http_tls_load(&t, crt, home, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK_MSG(strstr(err, "is not a regular file") != NULL, "%s", err);
    snprintf(bad, sizeof(bad), "%s/big.crt", home);
    text = malloc(300u << 10);
    CHECK(text != NULL);
    if (text) {
        memset(text, 'A', (300u << 10) - 1);
        text[(300u << 10) - 1] = '\0';
        write_text(bad, text, 0644);
        free(text);
        text = NULL;
    }
    CHECK_RC(http_tls_load(&t, bad, key, NULL, NULL, NULL, 0, err, sizeof(err)), CMK_E_INVAL);
    CHECK_MSG(strstr(err, "big.crt is too large") != NULL, "%s", err);

    /* A private key others may read is refused, and the message holds none of it. */
    f = fopen(key, "r");
    CHECK(f != NULL);
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (text = calloc(1, (size_t)n + 1)) && fread(text, 1, (size_t)n, f) == (size_t)n) {
        snprintf(open_key, sizeof(open_key), "%s/open.key", home);
        write_text(open_key, text, 0644);
        CHECK_RC(http_tls_load(&t, crt, open_key, NULL, NULL, NULL, 0, err, sizeof(err)),
                 CMK_E_REFUSED);
        CHECK(strstr(err, "0644") != NULL && strstr(err, "PRIVATE") == NULL);
    }
    if (f)
        fclose(f);
    free(text);
    CHECK_RC(http_tls_load(&t, crt, "/nonexistent/k.pem", NULL, NULL, NULL, 0, err, sizeof(err)),
             CMK_E_NOT_FOUND);
    CHECK_RC(http_tls_load(&t, NULL, NULL, home, "../x", NULL, 0, err, sizeof(err)), CMK_E_INVAL);

    /* The generated key cannot be written (a directory is in its place): the error names it,
     * no temporary is left beside it and no certificate is written. */
    snprintf(bad, sizeof(bad), "%s/tls/blocked.key", home);
    CHECK(mkdir(bad, 0700) == 0);
    CHECK(http_tls_load(&t, NULL, NULL, home, "blocked", NULL, 0, err, sizeof(err)) != CMK_OK);
    CHECK_MSG(strstr(err, "blocked.key") != NULL, "%s", err);
    snprintf(bad, sizeof(bad), "%s/tls", home);
    CHECK_MSG(test_dir_entries(bad) == 5, "%d entries", test_dir_entries(bad));
}

int main(void)
{
    const char *home = test_tmpdir("http_tls");

    check_generated(home);
    check_refusals(home);
    return check_summary();
}
