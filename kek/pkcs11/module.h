/*
 * module.h — internal to kek/pkcs11/: PKCS#11 modules, loaded once per process.
 *
 * Every handle on one module shares one dlopen and one C_Initialize (CKF_OS_LOCKING_OK).
 * CKR_CRYPTOKI_ALREADY_INITIALIZED is tolerated: someone else in the process owns the
 * module's lifetime, and then C_Finalize is never called here. Thread-safe (one
 * process-wide mutex); not fork-safe.
 */
#ifndef CMK_P11_MODULE_H
#define CMK_P11_MODULE_H

#include <p11-kit/pkcs11.h>

#include "core/base/error.h"

typedef struct cmk_p11_lib cmk_p11_lib;

/* Loads path (RTLD_NODELETE) or takes another reference on the copy already loaded; *f
 * receives its function list. CMK_E_KEY_UNREACHABLE if it cannot be loaded, is not a
 * PKCS#11 2.x+ module or C_Initialize fails; CMK_E_NOMEM. Release with cmk_p11_lib_put. */
CMK_MUST_CHECK cmk_err cmk_p11_lib_get(const char *path, cmk_p11_lib **out, CK_FUNCTION_LIST_PTR *f,
                                       cmk_errbuf *eb);

/* Drops a reference; the last one calls C_Finalize (if this code initialised the module).
 * NULL is a no-op. */
void cmk_p11_lib_put(cmk_p11_lib *m);

#endif
