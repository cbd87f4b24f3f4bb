/* errmap.c — Key Vault replies to the store's key-access errors (see errmap.h). */
#include "kek/akv/errmap.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int cmk_akv_status_retryable(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

static const char *nz(const char *s, const char *dflt)
{
    return s && *s ? s : dflt;
}

static int is(const cmk_akv_error *e, const char *code)
{
    return e && (strcasecmp(e->code, code) == 0 || strcasecmp(e->inner, code) == 0);
}

cmk_err cmk_akv_error_map(long status, const cmk_akv_error *e, const cmk_akv_where *w,
                          cmk_errbuf *eb)
{
    char what[400], why[400];
    const char *code = e ? nz(e->inner, e->code) : "";
    cmk_err rc;

    snprintf(what, sizeof(what),
             "%s of key '%.127s' (version %.64s) in vault %.200s as identity %.80s",
             nz(w->op, "request"), nz(w->key, "?"), nz(w->version, "latest"), nz(w->host, "?"),
             nz(w->identity, "[system]"));
    snprintf(why, sizeof(why), "HTTP %ld%s%s%s%s", status, *code ? " " : "", code,
             e && e->message[0] ? ": " : "", e ? e->message : "");
    if (is(e, "KeyDisabled") || is(e, "KeyExpired") || is(e, "KeyNotYetValid"))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DISABLED,
                            "%s refused: the key is disabled or outside "
                            "its validity period (%s)",
                            what, why);
    else if (status == 401)
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "%s refused: the vault does not accept the identity's token (%s)", what,
                            why);
    else if (status == 403)
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "%s denied: the identity lacks the permission in the vault's access "
                            "policy or role assignments (%s)",
                            what, why);
    else if (status == 404)
        rc = cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND, "%s failed: no such key or version (%s)", what,
                            why);
    else if (status == 409 &&
             (is(e, "ObjectIsDeletedButRecoverable") || is(e, "ObjectIsBeingDeleted")))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DELETED,
                            "%s failed: the key is deleted (recoverable until purged) (%s)", what,
                            why);
    else if (status == 400 && w->op && strcmp(w->op, "unwrapKey") == 0)
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "%s failed: the vault could not unwrap the data key; it was altered, "
                            "or wrapped by another key or algorithm (%s)",
                            what, why);
    else if (status == 400)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "%s refused as a bad request (%s)", what, why);
    else if (cmk_akv_status_retryable(status))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "%s failed: the vault is throttling or unavailable and still was "
                            "after the retries allowed (%s)",
                            what, why);
    else
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE, "%s failed: unexpected reply (%s)", what,
                            why);
    return rc;
}
