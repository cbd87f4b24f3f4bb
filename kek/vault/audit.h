/*
 * audit.h — internal to kek/vault/: the vault's audit log (<vault>/audit.log, JSON lines:
 * time, identity, operation, vault, key, version, result, and error and reason of a
 * refusal), and the frame of an operator's management operation, which is audited as
 * identity "operator". Appends are single write(2)s of whole lines (cmk_json_append_line).
 */
#ifndef CMK_VAULT_AUDIT_H
#define CMK_VAULT_AUDIT_H

#include "kek/vault/context.h"

typedef struct cmk_vault_audit_rec {
    const char *identity, *op, *key, *version, *alg, *object_id;
    /* A key use by a store (provider call): the versioned key identifier. Such a use is
     * refused if it cannot be recorded. NULL for management operations. */
    const char *vkid;
} cmk_vault_audit_rec;

/* Records the outcome rc of a (the reason of a refusal is eb's message, which never holds
 * key material) if c's vault was found, then closes c. An operation that succeeded but
 * could not be recorded fails: a key use with CMK_E_KEY_UNREACHABLE, a management
 * operation with the audit's error, each saying so. Returns the operation's result. */
CMK_MUST_CHECK cmk_err cmk_vault_audit_end(cmk_vctx *c, const cmk_vault_audit_rec *a, cmk_err rc,
                                           cmk_errbuf *eb);

/* A management operation on one vault: its context, its audit record, an error buffer for
 * callers that passed none. */
typedef struct cmk_vop {
    cmk_vctx c;
    cmk_vault_audit_rec a;
    cmk_errbuf local;
} cmk_vop;

/* Starts operation `op` (NULL: a read that is not audited) on key (may be NULL): the
 * context is initialised and *out (if out is not NULL) cleared. Returns the error buffer
 * to use: eb, or v's own if eb is NULL; cleared. */
cmk_errbuf *cmk_vop_begin(cmk_vop *v, const char *op, const char *key, cmk_errbuf *eb,
                          json_t **out);

/* Ends it: audited if it was named and the vault was found, the context closed. */
CMK_MUST_CHECK cmk_err cmk_vop_end(cmk_vop *v, cmk_err rc, cmk_errbuf *eb);

#endif
