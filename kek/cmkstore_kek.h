/*
 * cmkstore_kek.h — the interface a key-encryption-key (KEK) provider implements.
 *
 * A provider is the store's only way to its customer-managed key. It describes a key
 * (type, size, latest version), wraps a data key with the key's public half and unwraps it
 * with the private half, which may never leave the vault or HSM. Every call names the
 * identity (principal id) the store acts as, so the provider can enforce its access policy.
 *
 * Errors: return one of the key-access codes so the store can tell
 *   CMK_E_KEY_DENIED      identity lacks the permission (policy removed)
 *   CMK_E_KEY_DISABLED    key or version disabled
 *   CMK_E_KEY_DELETED     key or vault deleted (soft-deleted, recoverable)
 *   CMK_E_KEY_NOT_FOUND   no such key / version / object
 *   CMK_E_KEY_UNREACHABLE transport fault: the vault did not answer (the store may coast on
 *                         cached DEKs for its grace period; it never does so after a denial)
 *   CMK_E_KEY_UNSUPPORTED key type other than RSA / RSA-HSM
 * and fill the errbuf with a message that names the key and the identity and says what to
 * do. Messages must never contain key material.
 *
 * Thread-safety: the store may call a provider from several threads at once.
 */
#ifndef CMKSTORE_KEK_H
#define CMKSTORE_KEK_H

#include <stddef.h>

#include "cmkstore_err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cmk_kty {
    CMK_KTY_UNKNOWN = 0,
    CMK_KTY_RSA,     /* software-protected RSA key */
    CMK_KTY_RSA_HSM, /* RSA key whose private half stays in an HSM */
    CMK_KTY_EC,      /* refused by the store */
    CMK_KTY_OCT      /* symmetric: refused by the store */
} cmk_kty;

typedef enum cmk_wrap_alg {
    CMK_WRAP_NONE = 0,
    CMK_WRAP_RSA_OAEP_256 = 1, /* RSA-OAEP, SHA-256, MGF1-SHA-256 (preferred) */
    CMK_WRAP_RSA_OAEP = 2      /* RSA-OAEP, SHA-1, MGF1-SHA-1 (only where a token lacks 256) */
} cmk_wrap_alg;

typedef struct cmk_key_desc {
    char kid[CMK_ID_MAX];         /* versioned key identifier of the version described */
    char versionless[CMK_ID_MAX]; /* the key's versionless identifier (follows the latest) */
    int requested_versioned;      /* 1 if the kid passed to describe named a specific version */
    char version[80];             /* the version described */
    cmk_kty kty;
    unsigned bits; /* RSA modulus size */
    int enabled;
    unsigned wrap_algs; /* bitmask of (1u << cmk_wrap_alg) the provider can do */
} cmk_key_desc;

/* Largest wrapped-key blob a provider may return (RSA-4096 = 512 bytes; room for 8192). */
#define CMK_WRAPPED_MAX 1024

/* Interface version: the struct below as first published. A later version only appends
 * members, so a provider built against an older header keeps working. */
#define CMK_KEK_PROVIDER_V1_SIZE (offsetof(cmk_kek_provider, release) + sizeof(void (*)(void *)))

typedef struct cmk_kek_provider {
    /* sizeof(cmk_kek_provider) as the provider was compiled (CMK_KEK_PROVIDER_INIT sets it).
     * The store refuses a provider whose size is smaller than CMK_KEK_PROVIDER_V1_SIZE
     * (CMK_E_INVAL) and treats members past `size` as absent. */
    size_t size;
    const char *name; /* short, for messages: "local-vault", "pkcs11" */
    void *self;       /* provider state, passed back to every call */

    /* Non-zero if this provider serves key identifier kid. */
    int (*handles)(void *self, const char *kid);

    /* Describes the key: a versioned kid describes that version, a versionless kid the latest
     * version. Requires the "get" permission. */
    cmk_err (*describe)(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                        cmk_errbuf *eb);

    /* Wraps dek (keylen bytes) with the versioned key; writes at most CMK_WRAPPED_MAX bytes
     * to out and their count to *outlen. Requires "wrapKey". */
    cmk_err (*wrap)(void *self, const char *versioned_kid, const char *principal, cmk_wrap_alg alg,
                    const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                    cmk_errbuf *eb);

    /* Unwraps into dek (capacity *keylen; *keylen receives the length). Requires
     * "unwrapKey". The caller zeroizes dek. */
    cmk_err (*unwrap)(void *self, const char *versioned_kid, const char *principal,
                      cmk_wrap_alg alg, const unsigned char *wrapped, size_t wrappedlen,
                      unsigned char *dek, size_t *keylen, cmk_errbuf *eb);

    /* Releases self. May be NULL. Called once, when the provider is no longer used. */
    void (*release)(void *self);
} cmk_kek_provider;

/* Initialiser for a provider: `cmk_kek_provider p = CMK_KEK_PROVIDER_INIT;` then fill the
 * members. */
#define CMK_KEK_PROVIDER_INIT                                                                      \
    {                                                                                              \
        .size = sizeof(cmk_kek_provider)                                                           \
    }

/* An identity a store acts as: its principal_id is the `principal` every provider call
 * names, what access policies grant permissions to (see cmkstore_admin.h). */
typedef struct cmk_identity {
    char type[24];         /* "UserAssigned" or "SystemAssigned" */
    char name[128];        /* user-assigned: its name; system: "system-<store-id>" */
    char id[CMK_ID_MAX];   /* "/cmkstore/userAssignedIdentities/<name>" or
                              "/cmkstore/stores/<store-id>/systemAssignedIdentity" */
    char principal_id[37]; /* UUID: what vault access policies name (object id) */
    char client_id[37];    /* UUID */
    char tenant_id[37];    /* the home's tenant */
    char store_id[37];     /* system-assigned: the owning store; "" otherwise */
    char created[32];      /* ISO 8601 */
} cmk_identity;

/* Names used in key identifiers and messages. */
CMK_API const char *cmk_kty_name(cmk_kty kty);
CMK_API const char *cmk_wrap_alg_name(cmk_wrap_alg alg);
CMK_API cmk_wrap_alg cmk_wrap_alg_from_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* CMKSTORE_KEK_H */
