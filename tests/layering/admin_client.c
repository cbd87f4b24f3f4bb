/*
 * admin_client.c — a program that uses the administration API as an installed client does:
 * built by check_admin_api.sh with only the installed public headers on its include path
 * and linked against the shared library. Creates an identity, a vault, a policy and a key
 * in the home given as argv[1], and reads them back. Exit 0 if every step gives what
 * cmkstore_admin.h promises.
 */
#include <stdio.h>
#include <string.h>

#include "cmkstore_admin.h"

#define STEP(call)                                                                                 \
    do {                                                                                           \
        cmk_err rc_ = (call);                                                                      \
        if (rc_ != CMK_OK) {                                                                       \
            fprintf(stderr, "%s: %s (%s)\n", #call, eb.msg, cmk_errname(rc_));                     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    const char *perms[] = {"get", "wrapKey", "unwrapKey"};
    char home[CMK_PATH_MAX], kid[CMK_ID_MAX];
    cmk_errbuf eb = {0};
    cmk_identity id, again;
    cmk_vault_kid k;
    json_t *key = NULL;
    const char *vkid;

    if (argc != 2)
        return 2;
    STEP(cmk_home_resolve(argv[1], 1, home, &eb));
    STEP(cmk_identity_create(home, "client-id", &id, &eb));
    STEP(cmk_identity_get(home, id.principal_id, &again, &eb));
    STEP(cmk_vault_create(home, "client-vault", NULL, NULL, &eb));
    STEP(cmk_vault_set_policy(home, "client-vault", id.principal_id, perms, 3, NULL, &eb));
    STEP(cmk_vault_key_create(home, "client-vault", "k", "RSA", 2048, &key, &eb));
    vkid = json_string_value(json_object_get(json_object_get(key, "key"), "kid"));
    STEP(cmk_vault_kid_parse(vkid, &k, &eb));
    STEP(cmk_vault_kid_format(kid, sizeof(kid), k.vault, k.key, NULL, &eb));
    if (strcmp(again.name, "client-id") != 0 || strcmp(k.vault, "client-vault") != 0 ||
        strlen(k.version) != 32 || strcmp(kid, CMK_VAULT_SCHEME "client-vault/keys/k") != 0) {
        fprintf(stderr, "unexpected answers: %s %s %s\n", again.name, vkid, kid);
        return 1;
    }
    /* A documented refusal: the name is taken. */
    if (cmk_vault_create(home, "client-vault", NULL, NULL, &eb) != CMK_E_EXISTS) {
        fprintf(stderr, "second create of a vault did not give CMK_E_EXISTS\n");
        return 1;
    }
    json_decref(key);
    printf("admin API client: ok\n");
    return 0;
}
