/* home.c — the cmkstore home: where it is, its tenant id, resource names. */
#define _GNU_SOURCE
#include "kek/identity/home.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/base/secmem.h"

/* Absolute form of p (relative paths are taken from the working directory), without
 * trailing slashes. */
static cmk_err absolutise(const char *p, char out[CMK_PATH_MAX], cmk_errbuf *eb)
{
    char cwd[CMK_PATH_MAX];
    size_t n;
    cmk_err rc;

    if (p[0] == '/') {
        rc = cmk_path(out, CMK_PATH_MAX, eb, "%s", p);
    } else {
        if (!getcwd(cwd, sizeof(cwd)))
            return cmk_errbuf_sys(eb, CMK_E_IO, errno,
                                  "cannot resolve the relative home '%s' (working directory "
                                  "unknown); give an absolute path",
                                  p);
        rc = cmk_path(out, CMK_PATH_MAX, eb, "%s/%s", cwd, p);
    }
    if (rc != CMK_OK)
        return rc;
    n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return CMK_OK;
}

cmk_err cmk_home_resolve(const char *explicit_home, int create, char out[CMK_PATH_MAX],
                         cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX], joined[CMK_PATH_MAX], real[PATH_MAX];
    const char *env, *from;
    struct stat st;
    cmk_err rc;

    out[0] = '\0';
    if (explicit_home && *explicit_home) {
        from = "--home";
        rc = absolutise(explicit_home, path, eb);
    } else if ((env = getenv("CMKSTORE_HOME")) && *env) {
        from = "$CMKSTORE_HOME";
        rc = absolutise(env, path, eb);
    } else if ((env = getenv("HOME")) && *env) {
        from = "$HOME/.cmkstore";
        rc = cmk_path(joined, sizeof(joined), eb, "%s/.cmkstore", env);
        if (rc == CMK_OK)
            rc = absolutise(joined, path, eb);
    } else {
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no cmkstore home: neither --home, $CMKSTORE_HOME nor $HOME is "
                              "set; set CMKSTORE_HOME to a directory");
    }
    if (rc != CMK_OK)
        return rc;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno,
                                  "cannot use the cmkstore home %s (from %s)", path, from);
        if (!create)
            return cmk_errbuf_set(eb, CMK_E_NOT_FOUND,
                                  "cmkstore home %s (from %s) does not exist: create an identity "
                                  "or a vault first, or point --home / CMKSTORE_HOME at an "
                                  "existing home",
                                  path, from);
        rc = cmk_mkdir_p(path, 0700, eb);
        if (rc != CMK_OK)
            return rc;
        if (stat(path, &st) != 0)
            return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno,
                                  "cannot use the cmkstore home %s", path);
    }
    if (!S_ISDIR(st.st_mode))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "cmkstore home %s (from %s) is not a directory: point --home / "
                              "CMKSTORE_HOME at a directory",
                              path, from);
    /* Canonical form, so every process that names the home differently (symlink, "..")
     * records and compares the same path. */
    if (!realpath(path, real))
        return cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno,
                              "cannot resolve the cmkstore home %s", path);
    return cmk_path(out, CMK_PATH_MAX, eb, "%s", real);
}

int cmk_is_uuid(const char *s, int any_case)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

    if (!s)
        return 0;
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        char c = s[i];
        int hex =
            (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (any_case && c >= 'A' && c <= 'F');
        if (shape[i] == '-' ? c != '-' : !hex)
            return 0;
    }
    return s[sizeof(shape) - 1] == '\0';
}

/* Reads the tenant file: its first line must be a UUID. */
static cmk_err read_tenant(const char *path, char out[37], cmk_errbuf *eb)
{
    char *text = NULL;
    size_t len = 0;
    cmk_err rc;

    rc = cmk_read_file(path, 256, &text, &len, eb);
    if (rc != CMK_OK)
        goto out;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = '\0';
    if (!cmk_is_uuid(text, 0)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT,
                            "%s does not hold a tenant id (a UUID): restore it from a backup; "
                            "vault access policies record the tenant",
                            path);
        goto out;
    }
    memcpy(out, text, 37);
out:
    free(text);
    return rc;
}

cmk_err cmk_home_tenant(const char *home, char out[37], cmk_errbuf *eb)
{
    char path[CMK_PATH_MAX], tmp[CMK_PATH_MAX], rnd[17], uuid[40];
    int have_tmp = 0;
    cmk_err rc;

    out[0] = '\0';
    if (!home || !*home)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no cmkstore home given");
    rc = cmk_path(path, sizeof(path), eb, "%s/tenant", home);
    if (rc != CMK_OK)
        return rc;
    rc = read_tenant(path, out, eb);
    if (rc != CMK_E_NOT_FOUND)
        return rc;
    cmk_errbuf_clear(eb);

    /* First use: write a complete file beside it, then link() it into place. link() fails
     * if another process got there first, so every process ends up with the same tenant. */
    rc = cmk_mkdir_p(home, 0700, eb);
    if (rc == CMK_OK)
        rc = cmk_random_hex(rnd, 8, eb);
    if (rc == CMK_OK)
        rc = cmk_path(tmp, sizeof(tmp), eb, "%s/.tenant.new-%s", home, rnd);
    if (rc == CMK_OK)
        rc = cmk_uuid4(uuid, eb);
    if (rc != CMK_OK)
        goto out;
    uuid[36] = '\n';
    rc = cmk_write_file_atomic(tmp, uuid, 37, 0600, eb);
    if (rc != CMK_OK)
        goto out;
    have_tmp = 1;
    if (link(tmp, path) != 0 && errno != EEXIST) {
        rc = cmk_errbuf_sys(eb, cmk_err_from_errno(errno), errno, "cannot create %s", path);
        goto out;
    }
    rc = cmk_fsync_dir(home, eb);
    if (rc == CMK_OK)
        rc = read_tenant(path, out, eb);
out:
    if (have_tmp)
        (void)unlink(tmp);
    return rc;
}

cmk_err cmk_name_check(const char *name, const char *what, cmk_errbuf *eb)
{
    size_t n;
    int ok;

    if (!what)
        what = "resource";
    if (!name || !*name)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "missing %s name: give 1-63 letters, digits and "
                              "'-'",
                              what);
    n = strlen(name);
    ok = n <= 63 && name[0] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    }
    if (!ok)
        /* %.80s: a bad name can be anything; keep the message bounded. */
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad %s name '%.80s%s': use 1-63 letters, digits and '-', not "
                              "starting with '-'",
                              what, name, n > 80 ? "..." : "");
    return CMK_OK;
}
