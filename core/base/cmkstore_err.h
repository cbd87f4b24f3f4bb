/*
 * cmkstore_err.h — error codes and the error buffer, shared by the store API (cmkstore.h),
 * the KEK provider interface (cmkstore_kek.h) and the admin API (cmkstore_admin.h).
 *
 * The values of cmk_err are part of the ABI: each is pinned to its number and never
 * reordered or reused; new codes are added at the end with the next number. Callers that
 * persist or transmit a code may rely on the number.
 */
#ifndef CMKSTORE_ERR_H
#define CMKSTORE_ERR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CMK_BUILDING_LIBRARY)
#define CMK_API __attribute__((visibility("default")))
#else
#define CMK_API
#endif

/* On every function that returns a cmk_err: ignoring an error is a compile-time warning. */
#define CMK_MUST_CHECK __attribute__((warn_unused_result))

/* Longest OCI digest we produce or accept, with its NUL: "sha512:" + 128 hex + NUL. */
#define CMK_DIGEST_MAX 136
/* Longest key identifier or identity string, with its NUL. */
#define CMK_ID_MAX 512

typedef enum cmk_err {
    CMK_OK = 0,
    CMK_E_INVAL = 1,            /* bad argument, bad syntax, bad configuration */
    CMK_E_NOMEM = 2,            /* out of memory */
    CMK_E_IO = 3,               /* a file operation failed (the message says which and why) */
    CMK_E_NOT_FOUND = 4,        /* no such blob, store, vault, identity */
    CMK_E_EXISTS = 5,           /* already exists */
    CMK_E_INTEGRITY = 6,        /* authentication failed: stored data was altered or is foreign */
    CMK_E_CORRUPT = 7,          /* checksum or structure broken: torn write, media error,
                                   truncation */
    CMK_E_DIGEST = 8,           /* content does not match the expected digest */
    CMK_E_KEY_DENIED = 9,       /* the vault denied the identity (access policy lacks a
                                   permission) */
    CMK_E_KEY_DISABLED = 10,    /* the key (or the version in use) is disabled */
    CMK_E_KEY_DELETED = 11,     /* the key or its vault is deleted (soft-deleted: recoverable) */
    CMK_E_KEY_NOT_FOUND = 12,   /* no such key, key version, vault or token object */
    CMK_E_KEY_UNREACHABLE = 13, /* the vault or HSM did not answer (transport fault) */
    CMK_E_KEY_UNSUPPORTED = 14, /* key type not supported: only RSA and RSA-HSM keys are */
    CMK_E_REFUSED = 15,         /* the operation is not allowed in this state (message says
                                   why) */
    CMK_E_UNSUPPORTED = 16,     /* unknown format version or algorithm */
    CMK_E_CRYPTO = 17,          /* the crypto library failed unexpectedly */
    CMK_E_RANGE = 18,           /* requested range lies outside the blob */
    CMK_E_BUSY = 19,            /* resource temporarily busy (locked by another process, or a
                                   record changed by another writer: retry) */
    CMK_E_NOSPACE = 20,         /* the store's file system is full, or its quota used up
                                   (ENOSPC, EDQUOT); nothing was changed: free space (blob rm)
                                   and retry */
    CMK_E__COUNT = 21           /* not an error: one past the last code */
} cmk_err;

/* Short, static description of an error code ("key access denied"). Never NULL. */
CMK_API const char *cmk_strerror(cmk_err e);
/* Stable symbolic name of an error code ("CMK_E_KEY_DENIED"). Never NULL. */
CMK_API const char *cmk_errname(cmk_err e);
/* Detail message of the calling thread's last failed call. Never NULL; "" if none. The
 * pointer is valid until the thread's next call into the library. */
CMK_API const char *cmk_errmsg(void);
/* Non-zero if e is one of the key-access errors (denied, disabled, deleted, not found,
 * unreachable): the store cannot reach its key-encryption key. */
CMK_API int cmk_err_is_key_access(cmk_err e);

/* Error detail: a code and a message saying what failed. Filled by providers (see
 * cmkstore_kek.h) and the admin API; messages never contain key material. */
typedef struct cmk_errbuf {
    cmk_err code;
    char msg[1024];
} cmk_errbuf;

/* printf-style: sets eb->code and eb->msg (eb may be NULL); returns code. */
CMK_API cmk_err cmk_errbuf_set(cmk_errbuf *eb, cmk_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* CMKSTORE_ERR_H */
