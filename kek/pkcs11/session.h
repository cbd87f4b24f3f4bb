/*
 * session.h — internal to kek/pkcs11/: the handle (struct cmk_p11) and its pool of logged-in
 * sessions, shared by objects.c, pubkey.c and wrap.c.
 *
 * Thread-safety: h->mu guards the idle pool and the key cache (pubkey.c); h->gen_mu
 * serialises key generation. Everything else in the handle is set at open and read-only
 * after.
 */
#ifndef CMK_P11_SESSION_H
#define CMK_P11_SESSION_H

#include <p11-kit/pkcs11.h>
#include <pthread.h>

#include "kek/pkcs11/module.h"
#include "kek/pkcs11/pkcs11.h"

#define CMK_P11_POOL_MAX 16                       /* idle logged-in sessions kept per handle */
#define CMK_P11_KD_MAX   (CMK_P11_LABEL_MAX + 64) /* a key description (cmk_p11_keydesc) */

/* Per key version: public key and negotiated wrap algorithms (0: not negotiated yet). */
struct cmk_p11_keyent {
    char label[CMK_P11_LABEL_MAX + 1];
    unsigned char id[CMK_P11_ID_LEN];
    EVP_PKEY *pub;
    unsigned algs;
    struct cmk_p11_keyent *next;
};

struct cmk_p11 {
    cmk_p11_lib *mod;
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    char module[CMK_P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    char *pin; /* secret memory */
    size_t pinlen;
    int mu_ok, gen_ok;
    pthread_mutex_t mu;     /* idle pool and key cache */
    pthread_mutex_t gen_mu; /* serialises key generation (seq numbers) */
    CK_SESSION_HANDLE idle[CMK_P11_POOL_MAX];
    unsigned nidle;
    struct cmk_p11_keyent *keys;
};

/* Fills eb for a failed call fn (code from cmk_p11_rv_code, with advice); key (may be NULL)
 * describes the key involved. Returns the code. */
CMK_MUST_CHECK cmk_err cmk_p11_fail(const cmk_p11 *h, const char *key, CK_RV rv, const char *fn,
                                    cmk_errbuf *eb);

/* "key \"<label>\" version <hex>" (id NULL: without the version), for messages. */
void cmk_p11_keydesc(char *out, size_t cap, const char *label, const unsigned char *id);

/* 1 if the session is known to be public (not logged in), resp. still answers. */
int cmk_p11_sess_logged_out(cmk_p11 *h, CK_SESSION_HANDLE s);
int cmk_p11_sess_alive(cmk_p11 *h, CK_SESSION_HANDLE s);

/* One unit of work in a session. Sets *rv to the failing CK_RV (CKR_OK if the failure was
 * not the token's) and fills eb. */
typedef cmk_err (*cmk_p11_op)(cmk_p11 *h, CK_SESSION_HANDLE s, void *ctx, CK_RV *rv,
                              cmk_errbuf *eb);

/* Runs op in a borrowed session; logs in again and retries once after
 * CKR_USER_NOT_LOGGED_IN (or a "not found" in a session that turns out to be public), and
 * once in a fresh session if the session was lost. The session goes back to the pool
 * unless its state is unknown. */
CMK_MUST_CHECK cmk_err cmk_p11_run(cmk_p11 *h, cmk_p11_op op, void *ctx, cmk_errbuf *eb);

#endif
