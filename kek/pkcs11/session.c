/* session.c — handles: a module, one token in it, the user PIN and a pool of logged-in
 * sessions (see session.h and pkcs11.h). */
#include "kek/pkcs11/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/secmem.h"
#include "kek/pkcs11/pubkey.h"
#include "kek/pkcs11/rv.h"

const char *cmk_p11_module(const cmk_p11 *h)
{
    return h->module;
}

const char *cmk_p11_token(const cmk_p11 *h)
{
    return h->token;
}

/* Fills eb for a failed PKCS#11 call; key (may be NULL) describes the key involved. */
cmk_err cmk_p11_fail(const cmk_p11 *h, const char *key, CK_RV rv, const char *fn, cmk_errbuf *eb)
{
    char rvs[CMK_P11_RV_NAME_MAX];

    cmk_p11_rv_name(rv, rvs);
    if (key)
        return cmk_errbuf_set(eb, cmk_p11_rv_code(rv),
                              "%s in PKCS#11 token \"%s\" (module %s): %s: %s; %s", key, h->token,
                              h->module, fn, rvs, cmk_p11_rv_advice(rv));
    return cmk_errbuf_set(eb, cmk_p11_rv_code(rv), "PKCS#11 token \"%s\" (module %s): %s: %s; %s",
                          h->token, h->module, fn, rvs, cmk_p11_rv_advice(rv));
}

void cmk_p11_keydesc(char *out, size_t cap, const char *label, const unsigned char *id)
{
    char hex[CMK_P11_VERSION_LEN + 1];

    if (id) {
        cmk_hex(hex, id, CMK_P11_ID_LEN);
        snprintf(out, cap, "key \"%s\" version %s", label, hex);
    } else {
        snprintf(out, cap, "key \"%s\"", label);
    }
}

static void sess_close(cmk_p11 *h, CK_SESSION_HANDLE s)
{
    if (h->f->C_CloseSession(s) != CKR_OK) {
        /* The session is already gone (token removed, handle invalid): nothing to release. */
    }
}

static cmk_err sess_login(cmk_p11 *h, CK_SESSION_HANDLE s, cmk_errbuf *eb)
{
    CK_RV rv = h->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)h->pin, (CK_ULONG)h->pinlen);

    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
        return CMK_OK;
    return cmk_p11_fail(h, NULL, rv, "C_Login", eb);
}

/* Borrows a logged-in read/write session: an idle one, or a new one. */
static cmk_err sess_get(cmk_p11 *h, CK_SESSION_HANDLE *out, cmk_errbuf *eb)
{
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_SESSION_INFO si;
    CK_RV rv;
    cmk_err rc = CMK_OK;

    pthread_mutex_lock(&h->mu);
    if (h->nidle > 0) {
        *out = h->idle[--h->nidle];
        pthread_mutex_unlock(&h->mu);
        return CMK_OK;
    }
    pthread_mutex_unlock(&h->mu);

    rv = h->f->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) {
        s = CK_INVALID_HANDLE;
        rc = cmk_p11_fail(h, NULL, rv, "C_OpenSession", eb);
        goto out;
    }
    /* Login state is per token per process: a new session may already be logged in. */
    rv = h->f->C_GetSessionInfo(s, &si);
    if (rv != CKR_OK) {
        rc = cmk_p11_fail(h, NULL, rv, "C_GetSessionInfo", eb);
        goto out;
    }
    if (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION) {
        rc = sess_login(h, s, eb);
        if (rc != CMK_OK)
            goto out;
    }
    *out = s;
    s = CK_INVALID_HANDLE;
out:
    if (s != CK_INVALID_HANDLE)
        sess_close(h, s);
    return rc;
}

/* Returns a session to the pool, or closes it when its state is unknown (after a failed
 * call an operation may still be active in it) or the pool is full. */
static void sess_put(cmk_p11 *h, CK_SESSION_HANDLE s, int keep)
{
    pthread_mutex_lock(&h->mu);
    if (keep && h->nidle < CMK_P11_POOL_MAX) {
        h->idle[h->nidle++] = s;
        s = CK_INVALID_HANDLE;
    }
    pthread_mutex_unlock(&h->mu);
    if (s != CK_INVALID_HANDLE)
        sess_close(h, s);
}

/* Closes every idle session (the token went away: they are all dead). */
static void pool_flush(cmk_p11 *h)
{
    CK_SESSION_HANDLE v[CMK_P11_POOL_MAX];
    unsigned n;

    pthread_mutex_lock(&h->mu);
    n = h->nidle;
    memcpy(v, h->idle, n * sizeof(v[0]));
    h->nidle = 0;
    pthread_mutex_unlock(&h->mu);
    for (unsigned i = 0; i < n; i++)
        sess_close(h, v[i]);
}

/* 1 if the session is known to be in a public (not logged-in) state. */
int cmk_p11_sess_logged_out(cmk_p11 *h, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    if (h->f->C_GetSessionInfo(s, &si) != CKR_OK)
        return 0;
    return si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION;
}

/* 1 if the session still answers (the token is there and working). */
int cmk_p11_sess_alive(cmk_p11 *h, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    return h->f->C_GetSessionInfo(s, &si) == CKR_OK;
}

cmk_err cmk_p11_run(cmk_p11 *h, cmk_p11_op op, void *ctx, cmk_errbuf *eb)
{
    cmk_err rc;

    for (int attempt = 0;; attempt++) {
        CK_SESSION_HANDLE s;
        CK_RV rv = CKR_OK;

        rc = sess_get(h, &s, eb);
        if (rc != CMK_OK)
            return rc;
        rc = op(h, s, ctx, &rv, eb);
        if (rc == CMK_OK) {
            sess_put(h, s, 1);
            return CMK_OK;
        }
        /* Logged out behind our back (another handle closed the process's last session on
         * the token, or C_Logout): private objects are then invisible rather than refused,
         * so a "not found" is checked against the session state too. */
        if (attempt == 0 && (rv == CKR_USER_NOT_LOGGED_IN ||
                             (rc == CMK_E_KEY_NOT_FOUND && cmk_p11_sess_logged_out(h, s)))) {
            cmk_errbuf_clear(eb);
            rc = sess_login(h, s, eb);
            sess_put(h, s, rc == CMK_OK);
            if (rc != CMK_OK)
                return rc;
            continue;
        }
        if (attempt == 0 && cmk_p11_rv_session_lost(rv)) {
            /* The idle ones are most likely gone too (token reset or reinserted). */
            cmk_errbuf_clear(eb);
            sess_put(h, s, 0);
            pool_flush(h);
            continue;
        }
        if (cmk_p11_rv_token_lost(rv)) {
            sess_put(h, s, 0);
            pool_flush(h);
            return rc;
        }
        sess_put(h, s, rv == CKR_OK);
        return rc;
    }
}

/* Finds the slot holding the token labelled h->token. */
static cmk_err find_slot(cmk_p11 *h, CK_FLAGS *flags, cmk_errbuf *eb)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    CK_TOKEN_INFO ti;
    char want[32];
    char seen[160] = "";
    size_t tl = strlen(h->token);
    int found = 0;
    CK_RV rv = CKR_OK;
    cmk_err rc = CMK_OK;

    /* The slot count can change between the two calls (hot plug): retry a few times. */
    for (int tries = 0; tries < 4; tries++) {
        rv = h->f->C_GetSlotList(CK_TRUE, NULL, &n);
        if (rv != CKR_OK)
            break;
        free(slots);
        slots = calloc(n ? n : 1, sizeof(*slots));
        if (!slots) {
            rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing PKCS#11 slots");
            goto out;
        }
        rv = h->f->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv != CKR_BUFFER_TOO_SMALL)
            break;
    }
    if (rv != CKR_OK) {
        rc = cmk_p11_fail(h, NULL, rv, "C_GetSlotList", eb);
        goto out;
    }
    memset(want, ' ', sizeof(want));
    memcpy(want, h->token, tl);
    for (CK_ULONG i = 0; i < n && !found; i++) {
        rv = h->f->C_GetTokenInfo(slots[i], &ti);
        if (rv != CKR_OK)
            continue; /* removed meanwhile or unrecognised: not ours */
        if (memcmp(ti.label, want, sizeof(want)) == 0) {
            h->slot = slots[i];
            *flags = ti.flags;
            found = 1;
        } else if (ti.flags & CKF_TOKEN_INITIALIZED) {
            /* Remember the labels present, for the message. */
            char lab[33];
            size_t ll = sizeof(ti.label), sl = strlen(seen);

            while (ll > 0 && ti.label[ll - 1] == ' ')
                ll--;
            for (size_t k = 0; k < ll; k++)
                lab[k] = (ti.label[k] < 0x20 || ti.label[k] == 0x7f) ? '?' : (char)ti.label[k];
            lab[ll] = '\0';
            snprintf(seen + sl, sizeof(seen) - sl, "%s\"%s\"", sl ? ", " : "", lab);
        }
    }
    if (!found)
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "no PKCS#11 token labelled \"%s\" in module %s (tokens present: "
                            "%s); check token= in the key identifier, insert the token or "
                            "initialise it",
                            h->token, h->module, seen[0] ? seen : "none");
out:
    free(slots);
    return rc;
}

void cmk_p11_close(cmk_p11 *h)
{
    if (!h)
        return;
    if (h->mod) {
        for (unsigned i = 0; i < h->nidle; i++)
            sess_close(h, h->idle[i]);
        h->nidle = 0;
    }
    if (h->mu_ok) /* the cache exists only once its mutex does */
        cmk_p11_cache_drop(h, NULL, NULL);
    cmk_secfree(h->pin);
    cmk_p11_lib_put(h->mod);
    if (h->mu_ok)
        pthread_mutex_destroy(&h->mu);
    if (h->gen_ok)
        pthread_mutex_destroy(&h->gen_mu);
    free(h);
}

cmk_err cmk_p11_open(const char *module_path, const char *token_label, const char *pin,
                     cmk_p11 **out, cmk_errbuf *eb)
{
    cmk_p11 *h = NULL;
    CK_SESSION_HANDLE s;
    CK_FLAGS flags = 0;
    size_t ml, tl, pl;
    cmk_err rc = CMK_OK;

    *out = NULL;
    ml = module_path ? strlen(module_path) : 0;
    tl = token_label ? strlen(token_label) : 0;
    pl = pin ? strnlen(pin, CMK_P11_PIN_MAX + 1) : 0;
    if (ml == 0 || ml >= CMK_P11_PATH_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 module path is empty or too long");
    if (tl == 0 || tl > CMK_P11_TOKEN_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 token label must be 1 to %d bytes long",
                              CMK_P11_TOKEN_MAX);
    if (!pin || pl > CMK_P11_PIN_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "PKCS#11 user PIN for token \"%s\" is missing or longer than %d "
                              "bytes",
                              token_label, CMK_P11_PIN_MAX);
    h = calloc(1, sizeof(*h));
    if (!h)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory opening PKCS#11 token");
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot create a mutex for PKCS#11 token");
        goto out;
    }
    h->mu_ok = 1;
    if (pthread_mutex_init(&h->gen_mu, NULL) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot create a mutex for PKCS#11 token");
        goto out;
    }
    h->gen_ok = 1;
    memcpy(h->module, module_path, ml + 1);
    memcpy(h->token, token_label, tl + 1);
    h->pin = cmk_secalloc(pl + 1);
    if (!h->pin) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory for the PKCS#11 PIN");
        goto out;
    }
    memcpy(h->pin, pin, pl);
    h->pinlen = pl;
    rc = cmk_p11_lib_get(h->module, &h->mod, &h->f, eb);
    if (rc != CMK_OK)
        goto out;
    rc = find_slot(h, &flags, eb);
    if (rc != CMK_OK)
        goto out;
    if (!(flags & CKF_USER_PIN_INITIALIZED)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "PKCS#11 token \"%s\" (module %s) has no user PIN: initialise it "
                            "(C_InitPIN, softhsm2-util --init-token --pin)",
                            h->token, h->module);
        goto out;
    }
    /* Log in now, so a wrong PIN is reported at open rather than at first use. */
    rc = sess_get(h, &s, eb);
    if (rc != CMK_OK)
        goto out;
    sess_put(h, s, 1);
    *out = h;
    h = NULL;
out:
    cmk_p11_close(h);
    return rc;
}
