/* builtin.c — the built-in key environment: the providers, identities and store-managed
 * keys of a cmkstore home, bound together for the store engine (kek/kek.h). */
#include "kek/builtin.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "kek/akv/akv.h"
#include "kek/identity/home.h"
#include "kek/identity/identity.h"
#include "kek/pkcs11/pkcs11.h"
#include "kek/vault/vault.h"

#define CMK_MANAGED_VAULT "cmkstore-managed"

cmk_err cmk_kek_open(const char *home, const cmk_kek_provider *extra, cmk_kek **out, cmk_errbuf *eb)
{
    cmk_kek_provider *vp = NULL;
    cmk_kek *k = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_kek_new(&k, eb);
    if (rc != CMK_OK)
        return rc;
    /* 1. The caller's provider first: it may serve identifiers the built-ins also claim. */
    if (extra)
        rc = cmk_kek_add(k, extra, 0, eb);
    /* 2. The local vault of the home (no home: no local vault). */
    if (rc == CMK_OK && home && *home) {
        rc = cmk_vault_provider_new(home, &vp, eb);
        if (rc == CMK_OK)
            rc = cmk_kek_add(k, vp, 1, eb);
        vp = NULL;
    }
    /* 3. PKCS#11 tokens (RSA-HSM), for pkcs11: identifiers. Cheap to make: no module is
     *    loaded and no PIN read until a pkcs11: key is first used. The identifiers come
     *    from the store's files: their module-path and pin-source are not obeyed. */
    if (rc == CMK_OK) {
        rc = cmk_pkcs11_provider_new(home, 0, &vp, eb);
        if (rc == CMK_OK)
            rc = cmk_kek_add(k, vp, 1, eb);
        vp = NULL;
    }
    /* 4. Azure Key Vault, for https:// identifiers. Cheap too: no connection and no
     *    credential is read until such a key is first used. */
    if (rc == CMK_OK) {
        rc = cmk_akv_provider_new(home, &vp, eb);
        if (rc == CMK_OK)
            rc = cmk_kek_add(k, vp, 1, eb);
        vp = NULL;
    }
    if (rc == CMK_OK) {
        *out = k;
        k = NULL;
    }
    cmk_kek_close(k);
    return rc;
}

/* The environment's self: the home. */
static cmk_err env_identity_get(void *self, const char *ref, cmk_identity *out, cmk_errbuf *eb)
{
    return cmk_identity_get(self, ref, out, eb);
}

static cmk_err env_identity_get_system(void *self, const char *store_id, cmk_identity *out,
                                       cmk_errbuf *eb)
{
    return cmk_identity_get_system(self, store_id, out, eb);
}

static cmk_err env_identity_create_system(void *self, const char *store_id, cmk_identity *out,
                                          cmk_errbuf *eb)
{
    return cmk_identity_create_system(self, store_id, out, eb);
}

/* The store-managed key: a key per store in the home's "cmkstore-managed" vault, usable by
 * the store's system-assigned identity only. Stores are always encrypted; this is the
 * service-managed key of the seeds' "status: disabled". */
static cmk_err env_managed_key_create(void *self, const char *store_id, const cmk_identity *sys,
                                      char vkid[CMK_ID_MAX], cmk_errbuf *eb)
{
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    cmk_vault_opts vo = {.purge_protection = 1, .retention_days = 90};
    const char *home = self;
    char keyname[64];
    json_t *j = NULL;
    const char *kid;
    cmk_err rc;

    rc = cmk_vault_create(home, CMK_MANAGED_VAULT, &vo, NULL, eb);
    if (rc != CMK_OK && rc != CMK_E_EXISTS)
        return rc;
    cmk_errbuf_clear(eb);
    snprintf(keyname, sizeof(keyname), "store-%.8s", store_id);
    rc = cmk_vault_key_create(home, CMK_MANAGED_VAULT, keyname, "RSA", 3072, &j, eb);
    if (rc != CMK_OK)
        return rc;
    kid = json_string_value(json_object_get(json_object_get(j, "key"), "kid"));
    if (!kid || strlen(kid) >= CMK_ID_MAX) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO, "managed key creation returned no key id");
        goto out;
    }
    memcpy(vkid, kid, strlen(kid) + 1);
    rc = cmk_vault_set_policy(home, CMK_MANAGED_VAULT, sys->principal_id, perms, 3, NULL, eb);
out:
    json_decref(j);
    return rc;
}

static cmk_err env_resolve_home(const char *given, int create, char *out, cmk_errbuf *eb)
{
    return cmk_home_resolve(given, create, out, eb);
}

static cmk_err env_open(const char *home, const cmk_kek_provider *extra, cmk_keyenv *out,
                        cmk_errbuf *eb)
{
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = cmk_path(out->home, sizeof(out->home), eb, "%s", home ? home : "");
    if (rc == CMK_OK)
        rc = cmk_kek_open(home, extra, &out->kek, eb);
    if (rc != CMK_OK)
        return rc;
    out->self = strdup(out->home);
    if (!out->self) {
        cmk_keyenv_close(out);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory binding the key environment");
    }
    out->release = free;
    out->identity_get = env_identity_get;
    out->identity_get_system = env_identity_get_system;
    out->identity_create_system = env_identity_create_system;
    out->managed_key_create = env_managed_key_create;
    return CMK_OK;
}

const cmk_keyenv_factory cmk_builtin_keyenv = {
    .resolve_home = env_resolve_home,
    .open = env_open,
};
