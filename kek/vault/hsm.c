/* hsm.c — HSM-backed vaults: their token, RSA-HSM versions generated in it, and their
 * destruction at purge (see hsm.h, kek/HSM.md). */
#include "kek/vault/hsm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "kek/provider.h"
#include "kek/vault/keygen.h"
#include "kek/vault/keymeta.h"

/* 1 if the vault is HSM-backed (fills *hs), 0 if not. */
int cmk_vhsm_get(const cmk_vctx *c, cmk_vhsm *hs)
{
    json_t *h = json_object_get(cmk_vctx_props(c), "hsm");
    const char *m = cmk_json_str(h, "module"), *t = cmk_json_str(h, "token");
    const char *pf = cmk_json_str(h, "pinFile");

    if (!json_is_object(h) || !m || !*m || !t || !*t)
        return 0;
    snprintf(hs->module, sizeof(hs->module), "%s", m);
    snprintf(hs->token, sizeof(hs->token), "%s", t);
    snprintf(hs->pin_file, sizeof(hs->pin_file), "%s", pf ? pf : "");
    return 1;
}

/* The token label of a vault key's versions. */
static cmk_err hsm_label(const char *vault, const char *key, char out[CMK_P11_LABEL_MAX + 1],
                         cmk_errbuf *eb)
{
    int n = snprintf(out, CMK_P11_LABEL_MAX + 1, "%s.%s", vault, key);

    if (n < 0 || n > CMK_P11_LABEL_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "vault and key names too long for a token label");
    return CMK_OK;
}

cmk_err cmk_vhsm_context(cmk_err rc, cmk_errbuf *eb, const char *vault, const char *token)
{
    return cmk_eb_prefix(eb, rc, "vault '%s' is backed by PKCS#11 token \"%s\"", vault, token);
}

/* Opens the vault's token (operator operations; the provider uses its own cached handles). */
static cmk_err hsm_open(const cmk_vctx *c, const cmk_vhsm *hs, cmk_p11 **h, cmk_errbuf *eb)
{
    cmk_err rc = cmk_p11_open_home(c->home, hs->token, hs->module,
                                   hs->pin_file[0] ? hs->pin_file : NULL, h, eb);

    return rc == CMK_OK ? rc : cmk_vhsm_context(rc, eb, c->name, hs->token);
}

cmk_err cmk_vhsm_version_label(const cmk_vctx *c, const char *key, const json_t *ver,
                               char out[CMK_P11_LABEL_MAX + 1], cmk_errbuf *eb)
{
    const char *l = cmk_json_str(json_object_get(ver, "hsm"), "label");

    if (l && *l && strlen(l) <= CMK_P11_LABEL_MAX) {
        memcpy(out, l, strlen(l) + 1);
        return CMK_OK;
    }
    return hsm_label(c->name, key, out, eb);
}

cmk_err cmk_vhsm_generate(const cmk_vctx *c, const cmk_vhsm *hs, const char *name, unsigned bits,
                          cmk_p11 **h, json_t **ver_out, char version[CMK_VAULT_VERSION_HEX + 1],
                          cmk_errbuf *eb)
{
    char label[CMK_P11_LABEL_MAX + 1];
    cmk_p11_key_attrs at;
    cmk_p11_version v;
    EVP_PKEY *pub = NULL;
    json_t *rec = NULL;
    int made = 0;
    cmk_err rc;

    *ver_out = NULL;
    rc = hsm_label(c->name, name, label, eb);
    if (rc == CMK_OK)
        rc = hsm_open(c, hs, h, eb);
    if (rc == CMK_OK) {
        rc = cmk_p11_key_generate(*h, label, bits, &v, eb);
        if (rc != CMK_OK)
            rc = cmk_vhsm_context(rc, eb, c->name, hs->token);
    }
    if (rc != CMK_OK)
        goto out;
    made = 1;
    /* The generator checked these already; checked again from the stored object, since a
     * key that could leave the token would defeat the point of RSA-HSM. */
    rc = cmk_p11_key_attrs_get(*h, label, v.version, &at, eb);
    if (rc == CMK_OK && (at.sensitive != 1 || at.extractable != 0))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "PKCS#11 token \"%s\" reports the new private key of '%s' as "
                            "sensitive=%d extractable=%d: refused (it must be sensitive and "
                            "non-extractable)",
                            hs->token, name, at.sensitive, at.extractable);
    if (rc == CMK_OK)
        rc = cmk_p11_key_public(*h, label, v.version, &pub, eb);
    if (rc == CMK_OK)
        rc = cmk_vkey_version_record(pub, CMK_VKTY_RSA_HSM, bits, v.version, &rec, eb);
    if (rc == CMK_OK &&
        cmk_vault_jset(rec, "hsm", json_pack("{s:s, s:s}", "token", hs->token, "label", label)) !=
            0)
        rc = cmk_vault_nomem(eb);
    if (rc != CMK_OK)
        goto out;
    memcpy(version, v.version, CMK_VAULT_VERSION_HEX + 1);
    *ver_out = rec;
    rec = NULL;
    made = 0;
out:
    if (made)
        cmk_vhsm_discard(c, *h, name, v.version);
    json_decref(rec);
    EVP_PKEY_free(pub);
    return rc;
}

void cmk_vhsm_discard(const cmk_vctx *c, cmk_p11 *h, const char *name, const char *version)
{
    char label[CMK_P11_LABEL_MAX + 1];
    cmk_errbuf ignore = {0};

    if (hsm_label(c->name, name, label, &ignore) == CMK_OK)
        cmk_best_effort(cmk_p11_key_destroy(h, label, version, &ignore));
}

/* Destroys the token objects of the RSA-HSM versions recorded in kj (purge). Versions that
 * are already gone are fine; any other failure stops before the purge removes anything. */
cmk_err cmk_vhsm_destroy_versions(const cmk_vctx *c, const char *key, const json_t *kj,
                                  cmk_errbuf *eb)
{
    char label[CMK_P11_LABEL_MAX + 1];
    json_t *v;
    cmk_p11 *h = NULL;
    cmk_vhsm hs;
    size_t i;
    cmk_err rc = CMK_OK;

    json_array_foreach(cmk_vkey_versions(kj), i, v)
    {
        const char *kty = cmk_json_str(v, "kty");
        if (!kty || strcmp(kty, "RSA-HSM") != 0)
            continue;
        if (!h) {
            if (!cmk_vhsm_get(c, &hs))
                return cmk_errbuf_set(eb, CMK_E_CORRUPT,
                                      "key '%s' in vault '%s' has RSA-HSM versions but the "
                                      "vault names no PKCS#11 token (vault.json damaged)",
                                      key, c->name);
            rc = hsm_open(c, &hs, &h, eb);
            if (rc != CMK_OK)
                break;
        }
        rc = cmk_vhsm_version_label(c, key, v, label, eb);
        if (rc == CMK_OK)
            rc = cmk_p11_key_destroy(h, label, cmk_json_str(v, "version"), eb);
        if (rc == CMK_E_KEY_NOT_FOUND) {
            cmk_errbuf_clear(eb);
            rc = CMK_OK;
        }
        if (rc != CMK_OK) {
            rc = cmk_vhsm_context(rc, eb, c->name, hs.token);
            break;
        }
    }
    cmk_p11_close(h);
    return rc;
}

/* path made absolute against the working directory (out may be path). */
static cmk_err absolute(const char *path, char *out, size_t cap, const char *what, cmk_errbuf *eb)
{
    char cwd[PATH_MAX], tmp[CMK_PATH_MAX];
    int n;

    if (path[0] == '/')
        n = snprintf(tmp, sizeof(tmp), "%s", path);
    else if (!getcwd(cwd, sizeof(cwd)))
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot resolve %s %s", what, path);
    else
        n = snprintf(tmp, sizeof(tmp), "%s/%s", cwd, path);
    if (n < 0 || (size_t)n >= cap || (size_t)n >= sizeof(tmp))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s path too long", what);
    memcpy(out, tmp, (size_t)n + 1);
    return CMK_OK;
}

/* Checks and records the token of a new HSM-backed vault: the module loads, the token is
 * there and the PIN logs in, so a mistake shows now rather than at the first key. */
cmk_err cmk_vhsm_configure(const char *home, const cmk_vault_opts *o, json_t *vj, cmk_errbuf *eb)
{
    char module[CMK_PATH_MAX], pinf[CMK_PATH_MAX] = "";
    cmk_p11 *h = NULL;
    cmk_err rc;

    rc = cmk_p11_resolve_module(home, o->hsm_module, module, sizeof(module), eb);
    if (rc != CMK_OK)
        return rc;
    /* Recorded absolute, so the vault does not depend on the directory a command ran in;
     * symbolic links are kept (a distribution's module link outlives its target). A bare
     * name is left to the dynamic loader's search path. */
    if (strchr(module, '/') && module[0] != '/') {
        rc = absolute(module, module, sizeof(module), "--hsm-module", eb);
        if (rc != CMK_OK)
            return rc;
    }
    if (o->hsm_pin_file && *o->hsm_pin_file) {
        rc = absolute(o->hsm_pin_file, pinf, sizeof(pinf), "--hsm-pin-file", eb);
        if (rc != CMK_OK)
            return rc;
    }
    rc = cmk_p11_open_home(home, o->hsm_token, module, pinf[0] ? pinf : NULL, &h, eb);
    cmk_p11_close(h);
    if (rc != CMK_OK)
        return rc;
    if (cmk_vault_jset(json_object_get(vj, "properties"), "hsm",
                       json_pack("{s:s, s:s, s:o}", "module", module, "token", o->hsm_token,
                                 "pinFile", pinf[0] ? json_string(pinf) : json_null())))
        return cmk_vault_nomem(eb);
    return CMK_OK;
}

/* Destroys the token objects of every RSA-HSM version of every key of an HSM-backed vault
 * that is being purged. */
static cmk_err purge_key(const char *name, void *arg, json_t **item, cmk_errbuf *eb)
{
    const cmk_vctx *c = arg;
    json_t *kj = NULL;
    cmk_err rc = cmk_vkey_load(c, name, &kj, eb);

    (void)item;
    if (rc == CMK_OK)
        rc = cmk_vhsm_destroy_versions(c, name, kj, eb);
    json_decref(kj);
    return rc;
}

cmk_err cmk_vhsm_purge_all(const cmk_vctx *c, cmk_errbuf *eb)
{
    char keys[CMK_PATH_MAX];
    cmk_err rc = cmk_path(keys, sizeof(keys), eb, "%s/keys", c->dir);

    if (rc == CMK_OK)
        rc = cmk_vault_each_name(keys, "key", purge_key, (void *)c, NULL, eb);
    return rc;
}
