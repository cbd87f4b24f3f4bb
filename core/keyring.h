/*
 * keyring.h — the store's data keys (DEKs), wrapped by the KEK, together with the
 * encryption state that must change at the same instant as the wrapping: the key
 * identifier, the versioned key identifier in use, the identity, rotation settings.
 *
 * One file, keyring.json (0600), replaced atomically (temp, fsync, rename, fsync dir): at
 * every instant the keyring on disk is entirely the old one or entirely the new one, and
 * each names the exact key version that wrapped every DEK in it. Keeping this state in one
 * file (rather than splitting it between store.json and the keyring, as the design sketch
 * suggests) makes a rotation a single atomic commit.
 *
 * DEKs are unwrapped into a cmk_deks set held in locked, dump-excluded memory and zeroized
 * when dropped.
 */
#ifndef CMK_KEYRING_H
#define CMK_KEYRING_H

#include <jansson.h>
#include <stdint.h>

#include "core/backend/backend.h"
#include "cmkstore_kek.h"
#include "core/base/error.h"
#include "kek/kek.h"

#define CMK_KEYRING_FORMAT   1
#define CMK_KEYRING_MAX_DEKS 4096

typedef struct cmk_kr_identity {
    char kind[24];       /* "UserAssigned" or "SystemAssigned" */
    char id[CMK_ID_MAX]; /* the identity's resource id */
    char principal[40];
    char client[40];
} cmk_kr_identity;

typedef struct cmk_kr_dek {
    uint32_t id;
    int64_t created;
    cmk_wrap_alg alg;
    char kid[CMK_ID_MAX]; /* versioned key identifier that wrapped it */
    uint8_t wrapped[CMK_WRAPPED_MAX];
    size_t wrapped_len;
} cmk_kr_dek;

typedef struct cmk_keyring {
    int cmk;                         /* customer-managed (1) or store-managed (0) */
    char key_identifier[CMK_ID_MAX]; /* as configured (versioned or versionless) */
    char versioned_kid[CMK_ID_MAX];  /* the version every DEK is wrapped under */
    int rotation_enabled;            /* versionless key id */
    int64_t last_rotation;           /* 0: never */
    cmk_kr_identity identity;
    uint32_t current_dek; /* DEK for new writes */
    size_t ndeks;
    cmk_kr_dek *deks; /* malloc'd */
} cmk_keyring;

#define CMK_KEYRING_FILE "keyring.json"
/* The most a keyring record may hold. */
#define CMK_KEYRING_MAX (4u << 20)

/* Unwrapped DEKs (secret memory). */
typedef struct cmk_deks {
    size_t n;
    uint32_t *ids;
    uint8_t *keys; /* n * CMK_DEK_LEN bytes, from cmk_secalloc */
} cmk_deks;

/* Parses keyring JSON text and validates it (format, unique ids, current DEK present,
 * algorithms, lengths). Pure; CMK_E_CORRUPT with what is wrong. */
CMK_MUST_CHECK cmk_err cmk_keyring_parse(const char *text, size_t len, cmk_keyring *out,
                                         cmk_errbuf *eb);
/* Reads and parses the store's keyring record through its backend; *ver (may be NULL)
 * receives its version. Errors as cmk_bk_rec_get and cmk_keyring_parse. */
CMK_MUST_CHECK cmk_err cmk_keyring_read(cmk_backend *bk, cmk_keyring *out, cmk_rec_ver *ver,
                                        cmk_errbuf *eb);
/* Serialises kr and replaces the keyring record if its version still equals *expect (NULL:
 * only if there is none), atomically; CMK_E_BUSY if another process changed it. *newver (may
 * be NULL) receives the version written. */
CMK_MUST_CHECK cmk_err cmk_keyring_write(cmk_backend *bk, const cmk_keyring *kr,
                                         const cmk_rec_ver *expect, cmk_rec_ver *newver,
                                         cmk_errbuf *eb);
/* The same bytes for a keyring.json in a bare directory dirfd (dir names it in messages;
 * never through a symbolic link): for tests and tools that hold no store. The engine goes
 * through the backend (cmk_keyring_read / cmk_keyring_write). */
CMK_MUST_CHECK cmk_err cmk_keyring_load(int dirfd, const char *dir, cmk_keyring *out,
                                        cmk_errbuf *eb);
CMK_MUST_CHECK cmk_err cmk_keyring_save(int dirfd, const char *dir, const cmk_keyring *kr,
                                        cmk_errbuf *eb);
json_t *cmk_keyring_to_json(const cmk_keyring *kr);
void cmk_keyring_free(cmk_keyring *kr);
/* Deep copy. */
CMK_MUST_CHECK cmk_err cmk_keyring_copy(cmk_keyring *dst, const cmk_keyring *src, cmk_errbuf *eb);

/* Unwraps every DEK with the KEK as the keyring's identity. On failure nothing is kept. */
CMK_MUST_CHECK cmk_err cmk_keyring_unwrap_all(const cmk_keyring *kr, cmk_kek *kek, cmk_deks *out,
                                              cmk_errbuf *eb);
/* Returns the DEK with this id, or NULL. */
const uint8_t *cmk_deks_find(const cmk_deks *d, uint32_t id);
/* Zeroizes and frees. */
void cmk_deks_free(cmk_deks *d);

/* Wraps `dek` under versioned key `vkid` as `principal` with `alg`, then unwraps the result
 * and compares (a key version is only adopted after a test wrap/unwrap with it succeeds). */
CMK_MUST_CHECK cmk_err cmk_keyring_wrap_checked(cmk_kek *kek, const char *vkid,
                                                const char *principal, cmk_wrap_alg alg,
                                                const uint8_t *dek, cmk_kr_dek *out,
                                                cmk_errbuf *eb);

/* Generates a new random DEK into dek_out (secret memory, CMK_DEK_LEN) and wraps it
 * (checked) under kr's versioned key with alg (CMK_WRAP_NONE: the keyring's algorithm) into
 * *entry with the next free id. kr is not modified. */
CMK_MUST_CHECK cmk_err cmk_keyring_new_dek(const cmk_keyring *kr, cmk_kek *kek, cmk_wrap_alg alg,
                                           cmk_kr_dek *entry, uint8_t *dek_out, cmk_errbuf *eb);
/* Appends an entry and makes it current. */
CMK_MUST_CHECK cmk_err cmk_keyring_append(cmk_keyring *kr, const cmk_kr_dek *entry, cmk_errbuf *eb);
/* Adds an unwrapped DEK to a set. */
CMK_MUST_CHECK cmk_err cmk_deks_add(cmk_deks *d, uint32_t id, const uint8_t *key, cmk_errbuf *eb);
/* Deep copy of a set (secret memory). */
CMK_MUST_CHECK cmk_err cmk_deks_copy(cmk_deks *dst, const cmk_deks *src, cmk_errbuf *eb);

/* Generates a new DEK, wraps it (checked) under kr's versioned key with alg (CMK_WRAP_NONE:
 * the algorithm the keyring's DEKs already use), appends it to kr and deks, and makes it
 * current. */
CMK_MUST_CHECK cmk_err cmk_keyring_add_dek(cmk_keyring *kr, cmk_deks *deks, cmk_kek *kek,
                                           cmk_wrap_alg alg, cmk_errbuf *eb);

#endif
