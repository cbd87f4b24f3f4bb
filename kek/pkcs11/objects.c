/* objects.c — key versions as token objects: find, list, get, generate, attributes,
 * destroy (see pkcs11.h, "Keys and versions"). */
#include "kek/pkcs11/objects.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/secmem.h"
#include "kek/pkcs11/pubkey.h"

#define P11_FIND_MAX 1024 /* objects looked at per search (versions of one key) */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int cmk_p11_id_is_version(const unsigned char *id, size_t len)
{
    return len == CMK_P11_ID_LEN && be32(id) != 0;
}

cmk_err cmk_p11_version_parse(const char *version, unsigned char id[CMK_P11_ID_LEN], uint32_t *seq,
                              cmk_errbuf *eb)
{
    if (!version || strlen(version) != CMK_P11_VERSION_LEN ||
        cmk_unhex(id, CMK_P11_ID_LEN, version) != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 key version: expected %d hex characters (the key "
                              "pair's CKA_ID)",
                              CMK_P11_VERSION_LEN);
    if (be32(id) == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 key version %s: its sequence number (first 4 bytes) "
                              "is 0",
                              version);
    if (seq)
        *seq = be32(id);
    return CMK_OK;
}

static void version_from_id(cmk_p11_version *v, const unsigned char id[CMK_P11_ID_LEN],
                            unsigned bits)
{
    memcpy(v->id, id, CMK_P11_ID_LEN);
    v->seq = be32(id);
    cmk_hex(v->version, id, CMK_P11_ID_LEN);
    v->bits = bits;
}

static int version_cmp(const void *a, const void *b)
{
    const cmk_p11_version *x = a, *y = b;

    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return memcmp(x->id, y->id, CMK_P11_ID_LEN);
}

/* ---- finding objects ------------------------------------------------------------------------ */

/* Collects up to cap handles matching tmpl into out. */
static CK_RV find_objects(cmk_p11 *h, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG nt,
                          CK_OBJECT_HANDLE *out, size_t cap, size_t *n)
{
    CK_RV rv, rv2;

    *n = 0;
    rv = h->f->C_FindObjectsInit(s, tmpl, nt);
    if (rv != CKR_OK)
        return rv;
    while (*n < cap) {
        CK_ULONG got = 0;
        CK_ULONG want = (CK_ULONG)(cap - *n < 64 ? cap - *n : 64);

        rv = h->f->C_FindObjects(s, out + *n, want, &got);
        if (rv != CKR_OK || got == 0)
            break;
        *n += got;
    }
    rv2 = h->f->C_FindObjectsFinal(s);
    return rv != CKR_OK ? rv : rv2;
}

/* Up to cap RSA key objects of class cls labelled label (and of version id, unless id is
 * NULL) into objs. kd describes the key for messages. */
static cmk_err find_label(cmk_p11 *h, CK_SESSION_HANDLE s, const char *label,
                          const unsigned char *id, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *objs,
                          size_t cap, size_t *n, const char *kd, CK_RV *rv, cmk_errbuf *eb)
{
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, (void *)id, CMK_P11_ID_LEN},
    };

    *rv = find_objects(h, s, tmpl, id ? 4 : 3, objs, cap, n);
    return *rv == CKR_OK ? CMK_OK : cmk_p11_fail(h, kd, *rv, "C_FindObjects", eb);
}

cmk_err cmk_p11_find_version(cmk_p11 *h, CK_SESSION_HANDLE s, const char *label,
                             const unsigned char *id, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *obj,
                             unsigned *bits, CK_RV *rv, cmk_errbuf *eb)
{
    CK_OBJECT_HANDLE found[4];
    CK_ATTRIBUTE mod = {CKA_MODULUS, NULL, 0};
    char kd[CMK_P11_KD_MAX];
    size_t n = 0;
    cmk_err rc;

    cmk_p11_keydesc(kd, sizeof(kd), label, id);
    rc = find_label(h, s, label, id, cls, found, 4, &n, kd, rv, eb);
    if (rc != CMK_OK)
        return rc;
    if (n == 0)
        return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                              "%s is not in PKCS#11 token \"%s\" (module %s): it was destroyed "
                              "or never existed; data keys wrapped by it stay unreadable unless "
                              "the HSM restores that very key from its own backup (a new or "
                              "imported key is a different key; see kek/HSM.md)",
                              kd, h->token, h->module);
    if (n > 1)
        return cmk_errbuf_set(eb, CMK_E_REFUSED,
                              "%s is ambiguous in PKCS#11 token \"%s\" (module %s): %zu objects "
                              "share its label and CKA_ID; remove the duplicates",
                              kd, h->token, h->module, n);
    *obj = found[0];
    if (bits) {
        /* Modulus length only (pValue NULL): a public attribute of either half. */
        *rv = h->f->C_GetAttributeValue(s, found[0], &mod, 1);
        if (*rv != CKR_OK)
            return cmk_p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        if (mod.ulValueLen == CK_UNAVAILABLE_INFORMATION || mod.ulValueLen == 0 ||
            mod.ulValueLen > CMK_P11_MOD_MAX)
            return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                                  "%s in PKCS#11 token \"%s\" reports no usable RSA modulus", kd,
                                  h->token);
        *bits = (unsigned)mod.ulValueLen * 8;
    }
    return CMK_OK;
}

/* Reads obj's CKA_ID into id (and, if bits is not NULL, its modulus size); *ours is set if
 * the object is a cmkstore version (anything else sharing the label is left alone). */
static CK_RV object_version(cmk_p11 *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                            unsigned char id[CMK_P11_URI_ID_MAX], unsigned *bits, int *ours)
{
    CK_ATTRIBUTE at[] = {
        {CKA_ID, id, CMK_P11_URI_ID_MAX},
        {CKA_MODULUS, NULL, 0},
    };
    CK_RV r = h->f->C_GetAttributeValue(s, obj, at, bits ? 2 : 1);

    *ours = r == CKR_OK && cmk_p11_id_is_version(id, at[0].ulValueLen) &&
            (!bits || (at[1].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
                       at[1].ulValueLen <= CMK_P11_MOD_MAX));
    if (*ours && bits)
        *bits = (unsigned)at[1].ulValueLen * 8;
    return r;
}

/* ---- listing versions ----------------------------------------------------------------------- */

struct list_ctx {
    const char *label;
    cmk_p11_version *v;
    size_t n;
};

static cmk_err op_list(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct list_ctx *c = vctx;
    CK_OBJECT_HANDLE *objs = NULL;
    char kd[CMK_P11_KD_MAX];
    size_t n = 0;
    cmk_err rc = CMK_OK;

    free(c->v);
    c->v = NULL;
    c->n = 0;
    cmk_p11_keydesc(kd, sizeof(kd), c->label, NULL);
    objs = calloc(P11_FIND_MAX, sizeof(*objs));
    if (!objs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing PKCS#11 key versions");
    rc = find_label(h, s, c->label, NULL, CKO_PRIVATE_KEY, objs, P11_FIND_MAX, &n, kd, rv, eb);
    if (rc != CMK_OK)
        goto out;
    if (n == 0 && cmk_p11_sess_logged_out(h, s)) {
        /* Private keys are invisible to a logged-out session: let cmk_p11_run log in again. */
        *rv = CKR_USER_NOT_LOGGED_IN;
        rc = cmk_p11_fail(h, kd, *rv, "C_FindObjects", eb);
        goto out;
    }
    if (n > 0) {
        c->v = calloc(n, sizeof(*c->v));
        if (!c->v) {
            rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing PKCS#11 key versions");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char id[CMK_P11_URI_ID_MAX];
        unsigned bits = 0;
        int ours = 0;
        CK_RV r = object_version(h, s, objs[i], id, &bits, &ours);

        if (r == CKR_OBJECT_HANDLE_INVALID || r == CKR_ATTRIBUTE_TYPE_INVALID ||
            r == CKR_ATTRIBUTE_SENSITIVE || r == CKR_BUFFER_TOO_SMALL)
            continue; /* destroyed meanwhile, or not one of ours */
        if (r != CKR_OK) {
            *rv = r;
            rc = cmk_p11_fail(h, kd, r, "C_GetAttributeValue(CKA_ID)", eb);
            goto out;
        }
        if (ours)
            version_from_id(&c->v[c->n++], id, bits);
    }
    if (c->n > 1)
        qsort(c->v, c->n, sizeof(*c->v), version_cmp);
out:
    free(objs);
    return rc;
}

cmk_err cmk_p11_check_label(const char *label, cmk_errbuf *eb)
{
    size_t n = label ? strlen(label) : 0;

    if (n == 0 || n > CMK_P11_LABEL_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 key label must be 1 to %d bytes long",
                              CMK_P11_LABEL_MAX);
    return CMK_OK;
}

cmk_err cmk_p11_key_versions(cmk_p11 *h, const char *label, cmk_p11_version **out, size_t *n,
                             cmk_errbuf *eb)
{
    struct list_ctx c = {label, NULL, 0};
    cmk_err rc;

    *out = NULL;
    *n = 0;
    rc = cmk_p11_check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_p11_run(h, op_list, &c, eb);
    if (rc != CMK_OK) {
        free(c.v);
        return rc;
    }
    if (c.n == 0) {
        free(c.v);
        c.v = NULL;
    }
    *out = c.v;
    *n = c.n;
    return CMK_OK;
}

static cmk_err no_versions(cmk_p11 *h, const char *label, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                          "key \"%s\" is not in PKCS#11 token \"%s\" (module %s): no RSA key pair "
                          "with this label and a cmkstore version id; check object= in the key "
                          "identifier, or create the key",
                          label, h->token, h->module);
}

/* ---- one version ---------------------------------------------------------------------------- */

static cmk_err op_get(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    cmk_p11_ver *c = vctx;
    CK_OBJECT_HANDLE obj;

    return cmk_p11_find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, &c->bits, rv, eb);
}

cmk_err cmk_p11_key_exists(cmk_p11 *h, const char *label, const unsigned char *id, unsigned *bits,
                           cmk_errbuf *eb)
{
    cmk_p11_ver c = {label, id, 0, NULL};
    cmk_err rc = cmk_p11_run(h, op_get, &c, eb);

    if (rc == CMK_OK && bits)
        *bits = c.bits;
    return rc;
}

cmk_err cmk_p11_key_get(cmk_p11 *h, const char *label, const char *version, cmk_p11_version *out,
                        cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    cmk_p11_version *v = NULL;
    unsigned bits = 0;
    size_t n = 0;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = cmk_p11_check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    if (!version || !*version) {
        rc = cmk_p11_key_versions(h, label, &v, &n, eb);
        if (rc != CMK_OK)
            return rc;
        if (n == 0)
            return no_versions(h, label, eb);
        *out = v[n - 1];
        free(v);
        return CMK_OK;
    }
    rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_p11_key_exists(h, label, id, &bits, eb);
    if (rc != CMK_OK)
        return rc;
    version_from_id(out, id, bits);
    return CMK_OK;
}

cmk_err cmk_p11_resolve_id(cmk_p11 *h, const char *label, const char *version,
                           unsigned char id[CMK_P11_ID_LEN], cmk_errbuf *eb)
{
    cmk_p11_version v;
    cmk_err rc;

    if (version && *version)
        return cmk_p11_version_parse(version, id, NULL, eb);
    rc = cmk_p11_key_get(h, label, NULL, &v, eb);
    if (rc == CMK_OK)
        memcpy(id, v.id, CMK_P11_ID_LEN);
    return rc;
}

/* ---- generating ----------------------------------------------------------------------------- */

static cmk_err op_generate(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    cmk_p11_ver *c = vctx;
    CK_ULONG bits = c->bits;
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_BYTE e65537[] = {0x01, 0x00, 0x01};
    CK_ULONG ll = strlen(c->label);
    CK_ATTRIBUTE pub[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_WRAP, &yes, sizeof(yes)},
        {CKA_VERIFY, &no, sizeof(no)},
        {CKA_MODULUS_BITS, &bits, sizeof(bits)},
        {CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)},
        {CKA_LABEL, (void *)c->label, ll},
        {CKA_ID, (void *)c->id, CMK_P11_ID_LEN},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_DECRYPT, &yes, sizeof(yes)},
        {CKA_UNWRAP, &yes, sizeof(yes)},
        {CKA_SIGN, &no, sizeof(no)},
        {CKA_LABEL, (void *)c->label, ll},
        {CKA_ID, (void *)c->id, CMK_P11_ID_LEN},
    };
    CK_BBOOL sens = CK_FALSE, extr = CK_TRUE;
    CK_ATTRIBUTE chk[] = {
        {CKA_SENSITIVE, &sens, sizeof(sens)},
        {CKA_EXTRACTABLE, &extr, sizeof(extr)},
    };
    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
    char kd[CMK_P11_KD_MAX];
    cmk_err rc = CMK_OK;

    cmk_p11_keydesc(kd, sizeof(kd), c->label, c->id);
    *rv = h->f->C_GenerateKeyPair(s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
                                  sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_GenerateKeyPair", eb);
        hpub = hpriv = CK_INVALID_HANDLE;
        goto out;
    }
    /* Trust, but verify: a token that ignored the template would leave an exportable key. */
    *rv = h->f->C_GetAttributeValue(s, hpriv, chk, 2);
    if (*rv != CKR_OK) {
        rc = cmk_p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_SENSITIVE)", eb);
        goto out;
    }
    if (sens != CK_TRUE || extr != CK_FALSE) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED,
                            "PKCS#11 token \"%s\" (module %s) created %s as sensitive=%d "
                            "extractable=%d; cmkstore needs a non-extractable sensitive key, so "
                            "the pair was destroyed",
                            h->token, h->module, kd, sens, extr);
        goto out;
    }
    hpub = hpriv = CK_INVALID_HANDLE;
out:
    /* Undo a half-made or unacceptable pair; nothing to do if destroying fails too. */
    if (hpriv != CK_INVALID_HANDLE && h->f->C_DestroyObject(s, hpriv) != CKR_OK) {
    }
    if (hpub != CK_INVALID_HANDLE && h->f->C_DestroyObject(s, hpub) != CKR_OK) {
    }
    return rc;
}

cmk_err cmk_p11_key_generate(cmk_p11 *h, const char *label, unsigned bits, cmk_p11_version *out,
                             cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    cmk_p11_ver c = {label, id, bits, NULL};
    cmk_p11_version *v = NULL;
    size_t n = 0;
    uint32_t seq;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = cmk_p11_check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    if (bits != 2048 && bits != 3072 && bits != 4096)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "RSA key size %u is not supported: use 2048, 3072 or 4096", bits);
    pthread_mutex_lock(&h->gen_mu);
    rc = cmk_p11_key_versions(h, label, &v, &n, eb);
    if (rc != CMK_OK)
        goto out;
    seq = n ? v[n - 1].seq : 0;
    if (seq == UINT32_MAX) {
        rc = cmk_errbuf_set(eb, CMK_E_REFUSED, "key \"%s\" has run out of version numbers", label);
        goto out;
    }
    seq++;
    id[0] = (unsigned char)(seq >> 24);
    id[1] = (unsigned char)(seq >> 16);
    id[2] = (unsigned char)(seq >> 8);
    id[3] = (unsigned char)seq;
    rc = cmk_random(id + 4, CMK_P11_ID_LEN - 4, eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_p11_run(h, op_generate, &c, eb);
    if (rc != CMK_OK)
        goto out;
    version_from_id(out, id, bits);
out:
    pthread_mutex_unlock(&h->gen_mu);
    free(v);
    return rc;
}

/* ---- attributes ----------------------------------------------------------------------------- */

static int bool_attr(const CK_ATTRIBUTE *a, CK_BBOOL v)
{
    if (a->ulValueLen != sizeof(CK_BBOOL))
        return -1;
    return v != CK_FALSE;
}

static cmk_err op_attrs(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    cmk_p11_ver *c = vctx;
    cmk_p11_key_attrs *out = c->out;
    CK_BBOOL ex = 0, se = 0, as = 0, ne = 0;
    CK_ATTRIBUTE at[] = {
        {CKA_EXTRACTABLE, &ex, sizeof(ex)},
        {CKA_SENSITIVE, &se, sizeof(se)},
        {CKA_ALWAYS_SENSITIVE, &as, sizeof(as)},
        {CKA_NEVER_EXTRACTABLE, &ne, sizeof(ne)},
    };
    CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
    char kd[CMK_P11_KD_MAX];
    CK_RV r;
    cmk_err rc;

    rc = cmk_p11_find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, NULL, rv, eb);
    if (rc != CMK_OK)
        return rc;
    r = h->f->C_GetAttributeValue(s, obj, at, 4);
    /* A token may not know an attribute: the others are still filled in. */
    if (r != CKR_OK && r != CKR_ATTRIBUTE_TYPE_INVALID && r != CKR_ATTRIBUTE_SENSITIVE) {
        *rv = r;
        cmk_p11_keydesc(kd, sizeof(kd), c->label, c->id);
        return cmk_p11_fail(h, kd, r, "C_GetAttributeValue", eb);
    }
    out->extractable = bool_attr(&at[0], ex);
    out->sensitive = bool_attr(&at[1], se);
    out->always_sensitive = bool_attr(&at[2], as);
    out->never_extractable = bool_attr(&at[3], ne);
    return CMK_OK;
}

cmk_err cmk_p11_key_attrs_get(cmk_p11 *h, const char *label, const char *version,
                              cmk_p11_key_attrs *out, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    cmk_p11_ver c = {label, id, 0, out};
    cmk_err rc;

    out->extractable = out->sensitive = out->always_sensitive = out->never_extractable = -1;
    rc = cmk_p11_check_label(label, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_resolve_id(h, label, version, id, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_run(h, op_attrs, &c, eb);
    return rc;
}
/* ---- destroying ----------------------------------------------------------------------------- */

struct destroy_ctx {
    const char *label;
    const unsigned char *id; /* NULL: every version */
    size_t nversions;
};

static cmk_err op_destroy(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct destroy_ctx *c = vctx;
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    CK_OBJECT_HANDLE *objs = NULL;
    char kd[CMK_P11_KD_MAX];
    cmk_err rc = CMK_OK;

    cmk_p11_keydesc(kd, sizeof(kd), c->label, c->id);
    c->nversions = 0;
    objs = calloc(P11_FIND_MAX, sizeof(*objs));
    if (!objs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory destroying a PKCS#11 key");
    /* Private keys first: once they are gone the version is revoked, whatever happens to the
     * public halves. */
    for (size_t ci = 0; ci < 2 && rc == CMK_OK; ci++) {
        size_t n = 0;

        rc = find_label(h, s, c->label, c->id, classes[ci], objs, P11_FIND_MAX, &n, kd, rv, eb);
        for (size_t i = 0; rc == CMK_OK && i < n; i++) {
            unsigned char id[CMK_P11_URI_ID_MAX];
            int ours = 0;
            CK_RV r = object_version(h, s, objs[i], id, NULL, &ours);

            /* Only cmkstore versions of the key are destroyed, never other objects that
             * happen to share the label. */
            if (r != CKR_OK || !ours)
                continue;
            r = h->f->C_DestroyObject(s, objs[i]);
            if (r == CKR_OBJECT_HANDLE_INVALID)
                continue; /* destroyed meanwhile */
            if (r != CKR_OK) {
                *rv = r;
                rc = cmk_p11_fail(h, kd, r, "C_DestroyObject", eb);
            } else if (classes[ci] == CKO_PRIVATE_KEY) {
                c->nversions++;
            }
        }
    }
    if (rc == CMK_OK && c->nversions == 0)
        rc = c->id ? cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                                    "%s is not in PKCS#11 token \"%s\" (module %s): nothing to "
                                    "destroy",
                                    kd, h->token, h->module)
                   : no_versions(h, c->label, eb);
    free(objs);
    return rc;
}

cmk_err cmk_p11_key_destroy(cmk_p11 *h, const char *label, const char *version, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct destroy_ctx c = {label, id, 0};
    cmk_err rc;

    rc = cmk_p11_check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    if (!version || !*version)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "destroying a PKCS#11 key version needs the version (use "
                              "cmk_p11_key_destroy_all for every version)");
    rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc != CMK_OK)
        return rc;
    cmk_p11_cache_drop(h, label, id);
    return cmk_p11_run(h, op_destroy, &c, eb);
}

cmk_err cmk_p11_key_destroy_all(cmk_p11 *h, const char *label, size_t *ndestroyed, cmk_errbuf *eb)
{
    struct destroy_ctx c = {label, NULL, 0};
    cmk_err rc;

    if (ndestroyed)
        *ndestroyed = 0;
    rc = cmk_p11_check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    cmk_p11_cache_drop(h, label, NULL);
    rc = cmk_p11_run(h, op_destroy, &c, eb);
    if (ndestroyed)
        *ndestroyed = c.nversions;
    return rc;
}
