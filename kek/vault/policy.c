/* policy.c — access policies: set, delete, and authorisation of key use (see policy.h). */
#include "kek/vault/policy.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/base/jsonfile.h"
#include "kek/identity/home.h"
#include "kek/identity/identity.h"
#include "kek/provider.h"
#include "kek/vault/audit.h"
#include "kek/vault/common.h"
#include "kek/vault/vault.h"

#define STORE_PERMS "get unwrapKey wrapKey"

/* Every key permission a policy can grant, in the order policies list them. */
static const char *const key_perms[] = {
    "get",   "list",    "create",  "update",    "import",  "delete", "recover", "backup", "restore",
    "purge", "decrypt", "encrypt", "unwrapKey", "wrapKey", "verify", "sign",    "rotate",
};
#define NPERMS (sizeof(key_perms) / sizeof(key_perms[0]))
#define PERM_LIST                                                                                  \
    "get, list, create, update, import, delete, recover, backup, restore, purge, decrypt, "        \
    "encrypt, unwrapKey, wrapKey, verify, sign, rotate, all"

static json_t *policies(const cmk_vctx *c)
{
    return json_object_get(cmk_vctx_props(c), "accessPolicies");
}

static json_t *find_policy(const cmk_vctx *c, const char *object_id, size_t *index)
{
    json_t *ps = policies(c), *p;
    size_t i;

    json_array_foreach(ps, i, p)
    {
        const char *o = cmk_json_str(p, "objectId");
        if (o && strcasecmp(o, object_id) == 0) {
            if (index)
                *index = i;
            return p;
        }
    }
    return NULL;
}

/* The object id in lowercase; CMK_E_INVAL unless it is a UUID. */
static cmk_err check_object_id(const char *object_id, char out[37], cmk_errbuf *eb)
{
    if (!cmk_is_uuid(object_id, 1))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad object id '%.80s': give the principalId (a UUID) of an "
                              "identity",
                              object_id ? object_id : "");
    for (int i = 0; i < 36; i++)
        out[i] = (char)(object_id[i] >= 'A' && object_id[i] <= 'F' ? object_id[i] - 'A' + 'a'
                                                                   : object_id[i]);
    out[36] = '\0';
    return CMK_OK;
}

/* The key permissions named by perms as a JSON array in canonical order ("all": every one). */
static cmk_err perm_array(const char *const *perms, size_t nperms, json_t **out, cmk_errbuf *eb)
{
    unsigned granted = 0;
    size_t ngranted = 0;
    json_t *keys;

    *out = NULL;
    if (nperms == 0 || !perms)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "no key permissions given: name some of " PERM_LIST
                              " (a store needs " STORE_PERMS ")");
    for (size_t i = 0; i < nperms; i++) {
        size_t k;
        if (perms[i] && strcasecmp(perms[i], "all") == 0) {
            granted = (1u << NPERMS) - 1;
            continue;
        }
        for (k = 0; k < NPERMS; k++)
            if (perms[i] && strcasecmp(perms[i], key_perms[k]) == 0)
                break;
        if (k == NPERMS)
            return cmk_errbuf_set(eb, CMK_E_INVAL, "unknown key permission '%.40s': use " PERM_LIST,
                                  perms[i] ? perms[i] : "(null)");
        granted |= 1u << k;
    }
    keys = json_array();
    for (size_t k = 0; keys && k < NPERMS; k++) {
        if (!(granted & (1u << k)))
            continue;
        ngranted++;
        if (json_array_append_new(keys, json_string(key_perms[k])) != 0)
            break;
    }
    if (!keys || json_array_size(keys) != ngranted) {
        json_decref(keys);
        return cmk_vault_nomem(eb);
    }
    *out = keys;
    return CMK_OK;
}

/* Starts a policy change: object id checked, (if keys is not NULL) the permissions made into
 * *keys, the vault (not deleted) open and locked. */
static cmk_err policy_begin(cmk_vop *v, const char *home, const char *vault, const char *object_id,
                            char oid[37], const char *const *perms, size_t nperms, json_t **keys,
                            cmk_errbuf *eb)
{
    cmk_err rc = check_object_id(object_id, oid, eb);

    if (rc != CMK_OK)
        return rc;
    v->a.object_id = oid;
    if (keys)
        rc = perm_array(perms, nperms, keys, eb);
    if (rc == CMK_OK)
        rc = cmk_vctx_open(&v->c, home, vault, 1, eb);
    if (rc == CMK_OK && cmk_vctx_deleted(&v->c, NULL, NULL))
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED, "vault '%s' is deleted: recover it first", vault);
    return rc;
}

/* Ends a policy change that was made in memory: vault.json saved, shown in *out. */
static cmk_err policy_commit(cmk_vop *v, json_t **out, cmk_errbuf *eb)
{
    cmk_err rc = cmk_vctx_save(&v->c, eb);

    if (rc == CMK_OK)
        rc = cmk_vault_copy_out(out, v->c.vj, eb);
    return rc;
}

cmk_err cmk_vault_set_policy(const char *home, const char *vault, const char *object_id,
                             const char *const *perms, size_t nperms, json_t **out, cmk_errbuf *eb)
{
    char oid[37], tenant[37];
    json_t *keys = NULL, *pol;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "setPolicy", NULL, eb, out);
    rc = policy_begin(&v, home, vault, object_id, oid, perms, nperms, &keys, eb);
    if (rc == CMK_OK)
        rc = cmk_home_tenant(home, tenant, eb);
    if (rc != CMK_OK)
        goto out;
    pol = find_policy(&v.c, oid, NULL);
    if (pol) {
        if (cmk_vault_jset(json_object_get(pol, "permissions"), "keys", json_incref(keys)) != 0)
            rc = cmk_vault_nomem(eb);
    } else {
        pol = json_pack("{s:s, s:s, s:{s:O}}", "objectId", oid, "tenantId", tenant, "permissions",
                        "keys", keys);
        if (!pol || json_array_append_new(policies(&v.c), pol) != 0)
            rc = cmk_vault_nomem(eb);
    }
    if (rc == CMK_OK)
        rc = policy_commit(&v, out, eb);
out:
    json_decref(keys);
    return cmk_vop_end(&v, rc, eb);
}

cmk_err cmk_vault_delete_policy(const char *home, const char *vault, const char *object_id,
                                json_t **out, cmk_errbuf *eb)
{
    char oid[37];
    size_t idx = 0;
    cmk_vop v;
    cmk_err rc;

    eb = cmk_vop_begin(&v, "deletePolicy", NULL, eb, out);
    rc = policy_begin(&v, home, vault, object_id, oid, NULL, 0, NULL, eb);
    if (rc == CMK_OK && !find_policy(&v.c, oid, &idx))
        rc = cmk_errbuf_set(eb, CMK_E_NOT_FOUND, "vault '%s' has no access policy for object id %s",
                            vault, oid);
    else if (rc == CMK_OK && json_array_remove(policies(&v.c), idx) != 0)
        rc = cmk_vault_nomem(eb);
    if (rc == CMK_OK)
        rc = policy_commit(&v, out, eb);
    return cmk_vop_end(&v, rc, eb);
}

static int policy_grants(const json_t *pol, const char *perm)
{
    json_t *keys = json_object_get(json_object_get(pol, "permissions"), "keys"), *p;
    size_t i;

    json_array_foreach(keys, i, p)
    {
        const char *s = json_string_value(p);
        if (s && (strcmp(s, perm) == 0 || strcmp(s, "all") == 0))
            return 1;
    }
    return 0;
}

/* Authenticates the principal (it must be an identity of the home) and authorises perm by
 * the vault's access policy. Denials say who, what, which key and how to fix it. */
cmk_err cmk_vault_authorise(const cmk_vctx *c, const char *kid, const char *principal,
                            const char *perm, cmk_errbuf *eb)
{
    char who[200];
    cmk_identity id;
    const json_t *pol;
    cmk_err rc;

    if (!principal || !*principal)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "no identity given for %s on key " CMK_VAULT_KID_SHOW
                              ": the vault serves identities only",
                              perm, kid);
    rc = cmk_identity_get_by_principal(c->home, principal, &id, eb);
    if (rc == CMK_E_NOT_FOUND)
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "identity %.64s does not exist in %s (deleted?), so it may not %s "
                              "key " CMK_VAULT_KID_SHOW
                              ": use an existing identity, or create one and "
                              "grant it access in the vault's access policy",
                              principal, c->home, perm, kid);
    if (rc != CMK_OK)
        return cmk_eb_prefix(eb, CMK_E_KEY_UNREACHABLE, "the vault cannot check identity %.64s",
                             principal);
    /* The denials name who, what and where; granting it is the command line's hint. */
    snprintf(who, sizeof(who), "identity '%s' (principal %s)", id.name, id.principal_id);
    pol = find_policy(c, id.principal_id, NULL);
    if (!pol)
        return cmk_errbuf_set(
            eb, CMK_E_KEY_DENIED,
            "%s has no access policy in vault '%s', so %s on key " CMK_VAULT_KID_SHOW " is denied",
            who, c->name, perm, kid);
    if (!policy_grants(pol, perm))
        return cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                              "%s lacks the '%s' permission on key " CMK_VAULT_KID_SHOW
                              " (access policy of vault '%s')",
                              who, perm, kid, c->name);
    return CMK_OK;
}
