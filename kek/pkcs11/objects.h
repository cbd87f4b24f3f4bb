/*
 * objects.h — internal to kek/pkcs11/: finding a key version's objects in the token, shared
 * by objects.c, pubkey.c and wrap.c. Callers hold a session from cmk_p11_run.
 */
#ifndef CMK_P11_OBJECTS_H
#define CMK_P11_OBJECTS_H

#include "kek/pkcs11/session.h"

#define CMK_P11_MOD_MAX 1024 /* largest modulus read, in bytes: RSA-8192 */

/* What an operation on one version of a key works on (the ctx of a cmk_p11_op). */
typedef struct cmk_p11_ver {
    const char *label;
    const unsigned char *id; /* CMK_P11_ID_LEN bytes */
    unsigned bits;           /* modulus size: in for generation, out for a lookup */
    void *out;               /* the operation's result, if any */
} cmk_p11_ver;

/* CMK_E_INVAL unless label is 1..CMK_P11_LABEL_MAX bytes. */
CMK_MUST_CHECK cmk_err cmk_p11_check_label(const char *label, cmk_errbuf *eb);

/* 1 if id (len bytes) is a cmkstore version id: 16 bytes whose sequence number is not 0. */
int cmk_p11_id_is_version(const unsigned char *id, size_t len);

/* The one object of class cls of version id (16 bytes) of label, in *obj; *bits (may be
 * NULL) receives its modulus size. CMK_E_KEY_NOT_FOUND if there is none, CMK_E_REFUSED if
 * several share label and id, else the mapping of the failing CK_RV (in *rv). */
CMK_MUST_CHECK cmk_err cmk_p11_find_version(cmk_p11 *h, CK_SESSION_HANDLE s, const char *label,
                                            const unsigned char *id, CK_OBJECT_CLASS cls,
                                            CK_OBJECT_HANDLE *obj, unsigned *bits, CK_RV *rv,
                                            cmk_errbuf *eb);

/* Checks (in a session of its own) that version id's private key still exists; *bits (may
 * be NULL) receives its size. */
CMK_MUST_CHECK cmk_err cmk_p11_key_exists(cmk_p11 *h, const char *label, const unsigned char *id,
                                          unsigned *bits, cmk_errbuf *eb);

/* Resolves version (NULL or "": the latest) to its CKA_ID. */
CMK_MUST_CHECK cmk_err cmk_p11_resolve_id(cmk_p11 *h, const char *label, const char *version,
                                          unsigned char id[CMK_P11_ID_LEN], cmk_errbuf *eb);

#endif
