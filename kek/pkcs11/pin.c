/* pin.c — the operator's configuration: which module to load and the user PIN
 * (see pkcs11.h, "Module and PIN resolution"). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/jsonfile.h"
#include "core/base/secmem.h"
#include "kek/pkcs11/pkcs11.h"
#include "kek/provider.h"

static cmk_err copy_str(char *out, size_t cap, const char *s, const char *what, cmk_errbuf *eb)
{
    if (strlen(s) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s is too long", what);
    memcpy(out, s, strlen(s) + 1);
    return CMK_OK;
}

/* <home>/pkcs11.json, or NULL if home is NULL or the file does not exist. */
static cmk_err load_home_config(const char *home, json_t **out, char *path, size_t cap,
                                cmk_errbuf *eb)
{
    cmk_err rc;

    *out = NULL;
    path[0] = '\0';
    if (!home || !*home)
        return CMK_OK;
    if ((size_t)snprintf(path, cap, "%s/pkcs11.json", home) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "home path too long");
    rc = cmk_json_load(path, out, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        return CMK_OK;
    }
    return rc;
}

cmk_err cmk_p11_resolve_module(const char *home, const char *module_path, char *out, size_t cap,
                               cmk_errbuf *eb)
{
    char cfg[CMK_P11_PATH_MAX];
    const char *env = getenv(CMK_P11_ENV_MODULE);
    const char *m;
    json_t *j = NULL;
    cmk_err rc;

    if (module_path && *module_path)
        return copy_str(out, cap, module_path, "PKCS#11 module path", eb);
    if (env && *env)
        return copy_str(out, cap, env, "$" CMK_P11_ENV_MODULE, eb);
    rc = load_home_config(home, &j, cfg, sizeof(cfg), eb);
    if (rc != CMK_OK)
        return rc;
    m = cmk_json_str(j, "module");
    if (m && *m)
        rc = copy_str(out, cap, m, "\"module\" in pkcs11.json", eb);
    else
        rc = cmk_errbuf_set(
            eb, CMK_E_INVAL,
            "no PKCS#11 module configured: give --pkcs11-module, set $" CMK_P11_ENV_MODULE
            ", or put \"module\" in %s",
            cfg[0] ? cfg : "<home>/pkcs11.json");
    json_decref(j);
    return rc;
}

/* Reads a PIN file into secret memory; one trailing newline (LF or CRLF) is dropped. */
static cmk_err read_pin_file(const char *path, char **pin, cmk_errbuf *eb)
{
    char *buf = cmk_secalloc(CMK_P11_PIN_MAX + 3);
    size_t n = 0;
    struct stat st;
    int fd = -1;
    cmk_err rc = CMK_OK;

    *pin = NULL;
    if (!buf)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory for the PKCS#11 PIN");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_KEY_DENIED, errno, "cannot read the PKCS#11 PIN file %s",
                            path);
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED, "the PKCS#11 PIN file %s is not a regular file",
                            path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, CMK_P11_PIN_MAX + 2 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cmk_errbuf_sys(eb, CMK_E_KEY_DENIED, errno, "cannot read the PKCS#11 PIN file %s",
                                path);
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n >= CMK_P11_PIN_MAX + 2)
            break;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0 || n > CMK_P11_PIN_MAX || memchr(buf, '\0', n)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "the PKCS#11 PIN file %s is empty, too long (over %d bytes) or "
                            "binary",
                            path, CMK_P11_PIN_MAX);
        goto out;
    }
    buf[n] = '\0';
    *pin = buf;
    buf = NULL;
out:
    if (fd >= 0)
        close(fd);
    cmk_secfree(buf);
    return rc;
}

cmk_err cmk_p11_load_pin(const char *home, const char *pin_file, char **pin, char *where,
                         size_t wherecap, cmk_errbuf *eb)
{
    char cfg[CMK_P11_PATH_MAX], path[CMK_P11_PATH_MAX];
    const char *env_file = getenv(CMK_P11_ENV_PIN_FILE);
    const char *env_pin = getenv(CMK_P11_ENV_PIN);
    const char *pf;
    json_t *j = NULL;
    cmk_err rc = CMK_OK;

    *pin = NULL;
    if (pin_file && *pin_file) {
        snprintf(where, wherecap, "pin-source file %s", pin_file);
        return read_pin_file(pin_file, pin, eb);
    }
    if (env_file && *env_file) {
        snprintf(where, wherecap, "$" CMK_P11_ENV_PIN_FILE " (%s)", env_file);
        return read_pin_file(env_file, pin, eb);
    }
    if (env_pin && *env_pin) {
        size_t n = strnlen(env_pin, CMK_P11_PIN_MAX + 1);

        snprintf(where, wherecap, "$" CMK_P11_ENV_PIN);
        if (n > CMK_P11_PIN_MAX)
            return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                                  "$" CMK_P11_ENV_PIN " is longer than %d bytes", CMK_P11_PIN_MAX);
        *pin = cmk_secalloc(n + 1);
        if (!*pin)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory for the PKCS#11 PIN");
        memcpy(*pin, env_pin, n);
        return CMK_OK;
    }
    rc = load_home_config(home, &j, cfg, sizeof(cfg), eb);
    if (rc != CMK_OK)
        return rc;
    pf = cmk_json_str(j, "pinFile");
    if (!pf || !*pf) {
        snprintf(where, wherecap, "nowhere");
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "no PKCS#11 user PIN configured: set $" CMK_P11_ENV_PIN_FILE
                            " or $" CMK_P11_ENV_PIN ", or put \"pinFile\" in %s",
                            cfg[0] ? cfg : "<home>/pkcs11.json");
        goto out;
    }
    if (pf[0] == '/')
        rc = copy_str(path, sizeof(path), pf, "pinFile", eb);
    else if ((size_t)snprintf(path, sizeof(path), "%s/%s", home, pf) >= sizeof(path))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "pinFile path too long");
    if (rc != CMK_OK)
        goto out;
    snprintf(where, wherecap, "pinFile %s in %s", path, cfg);
    rc = read_pin_file(path, pin, eb);
out:
    json_decref(j);
    return rc;
}

cmk_err cmk_p11_open_home(const char *home, const char *token_label, const char *module_path,
                          const char *pin_file, cmk_p11 **out, cmk_errbuf *eb)
{
    char module[CMK_P11_PATH_MAX], where[CMK_P11_PATH_MAX + 64];
    char *pin = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_p11_resolve_module(home, module_path, module, sizeof(module), eb);
    if (rc == CMK_OK)
        rc = cmk_p11_load_pin(home, pin_file, &pin, where, sizeof(where), eb);
    if (rc == CMK_OK) {
        rc = cmk_p11_open(module, token_label, pin, out, eb);
        if (rc == CMK_E_KEY_DENIED)
            cmk_eb_append(eb, " (the PIN came from %s)", where);
    }
    cmk_secfree(pin);
    return rc;
}
