/*
 * rv.h — internal to kek/pkcs11/: what a CK_RV means for cmkstore. Pure functions, no state:
 * thread-safe.
 */
#ifndef CMK_P11_RV_H
#define CMK_P11_RV_H

#include <p11-kit/pkcs11.h>

#include "core/base/error.h"

#define CMK_P11_RV_NAME_MAX 48

/* The CKR_ name of rv ("CKR 0x..." for codes it does not know) into buf. */
void cmk_p11_rv_name(CK_RV rv, char buf[CMK_P11_RV_NAME_MAX]);

/* The cmk_err a failed call maps to: PIN and permission problems CMK_E_KEY_DENIED, a
 * destroyed object CMK_E_KEY_NOT_FOUND, bad ciphertext CMK_E_INTEGRITY, unsupported
 * mechanisms CMK_E_UNSUPPORTED, refused templates CMK_E_REFUSED, anything else (device
 * errors, removal) CMK_E_KEY_UNREACHABLE. */
CMK_MUST_CHECK cmk_err cmk_p11_rv_code(CK_RV rv);

/* One sentence saying what to do about rv (static text, no secrets). */
const char *cmk_p11_rv_advice(CK_RV rv);

/* 1 if the session is gone (replace it), resp. the token is gone (drop every session). */
int cmk_p11_rv_session_lost(CK_RV rv);
int cmk_p11_rv_token_lost(CK_RV rv);

#endif
