/* module.c — PKCS#11 modules: dlopen'd once per process, reference-counted (see module.h). */
#include "kek/pkcs11/module.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kek/pkcs11/pkcs11.h"
#include "kek/pkcs11/rv.h"

struct cmk_p11_lib {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    unsigned refs;
    int finalize; /* we called C_Initialize, so the last user calls C_Finalize */
    struct cmk_p11_lib *next;
};

static pthread_mutex_t mod_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cmk_p11_lib *mods;

cmk_err cmk_p11_lib_get(const char *path, cmk_p11_lib **out, CK_FUNCTION_LIST_PTR *fl,
                        cmk_errbuf *eb)
{
    struct cmk_p11_lib *m = NULL;
    CK_C_GetFunctionList getfl;
    CK_FUNCTION_LIST_PTR f = NULL;
    CK_C_INITIALIZE_ARGS args;
    char rvs[CMK_P11_RV_NAME_MAX];
    void *dl = NULL, *sym;
    int finalize = 0;
    CK_RV rv;
    cmk_err rc = CMK_OK;

    pthread_mutex_lock(&mod_mu);
    (void)dlerror();
    /* RTLD_NODELETE: modules often leave atexit handlers or thread-specific destructors
     * behind; unmapping them is a classic crash at exit. */
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!dl) {
        const char *why = dlerror();
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "cannot load PKCS#11 module %s: %s; check $" CMK_P11_ENV_MODULE
                            ", \"module\" in pkcs11.json or the vault's --hsm-module",
                            path, why ? why : "unknown error");
        goto out;
    }
    for (m = mods; m; m = m->next) {
        if (m->dl == dl) {
            m->refs++;
            /* dlopen counted another reference; ours is m->dl's. */
            (void)dlclose(dl);
            dl = NULL;
            *out = m;
            *fl = m->f;
            goto out;
        }
    }
    sym = dlsym(dl, "C_GetFunctionList");
    if (!sym) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "cannot load PKCS#11 module %s: it has no C_GetFunctionList, so it "
                            "is not a PKCS#11 module; check $" CMK_P11_ENV_MODULE " / pkcs11.json",
                            path);
        goto out;
    }
    getfl = (CK_C_GetFunctionList)sym;
    rv = getfl(&f);
    if (rv != CKR_OK || !f) {
        cmk_p11_rv_name(rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "cannot load PKCS#11 module %s: C_GetFunctionList failed: %s", path,
                            rvs);
        goto out;
    }
    if (f->version.major < 2) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "cannot load PKCS#11 module %s: it implements Cryptoki %u.%u; 2.x or "
                            "later is needed",
                            path, f->version.major, f->version.minor);
        goto out;
    }
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK; /* many threads call the module at once */
    rv = f->C_Initialize(&args);
    if (rv == CKR_OK) {
        finalize = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        /* ALREADY_INITIALIZED: someone else in the process owns the module's lifetime. */
        cmk_p11_rv_name(rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "PKCS#11 module %s: C_Initialize failed: %s; check the module's "
                            "configuration (for SoftHSM2: $SOFTHSM2_CONF and its tokendir)",
                            path, rvs);
        goto out;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        if (finalize && f->C_Finalize(NULL) != CKR_OK) {
            /* Nothing more to do: we are failing anyway. */
        }
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory loading PKCS#11 module %s", path);
        goto out;
    }
    m->dl = dl;
    m->f = f;
    m->refs = 1;
    m->finalize = finalize;
    m->next = mods;
    mods = m;
    dl = NULL;
    *out = m;
    *fl = f;
out:
    if (dl)
        (void)dlclose(dl); /* RTLD_NODELETE: only drops the count */
    pthread_mutex_unlock(&mod_mu);
    return rc;
}

void cmk_p11_lib_put(cmk_p11_lib *m)
{
    struct cmk_p11_lib **pp;

    if (!m)
        return;
    pthread_mutex_lock(&mod_mu);
    if (--m->refs == 0) {
        for (pp = &mods; *pp; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
        if (m->finalize && m->f->C_Finalize(NULL) != CKR_OK) {
            /* A failed C_Finalize leaves nothing for us to undo. */
        }
        (void)dlclose(m->dl);
        free(m);
    }
    pthread_mutex_unlock(&mod_mu);
}
