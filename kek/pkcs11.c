/* pkcs11.c — RSA-HSM key-encryption keys in a PKCS#11 token (see pkcs11.h). */
#include "kek/pkcs11.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "core/base/jsonfile.h"
#include "core/base/secmem.h"

#define P11_PATH_MAX   4096
#define P11_POOL_MAX   16   /* idle logged-in sessions kept per handle */
#define P11_FIND_MAX   1024 /* objects looked at per search (versions of one key) */
#define P11_MOD_MAX    1024 /* largest modulus we read: RSA-8192 */
#define P11_PROBE_LEN  32   /* bytes round-tripped to negotiate the wrap algorithm */
#define P11_ENV_MODULE "CMKSTORE_PKCS11_MODULE"
#define P11_ENV_PINF   "CMKSTORE_PKCS11_PIN_FILE"
#define P11_ENV_PIN    "CMKSTORE_PKCS11_PIN"

/* ---- small helpers ------------------------------------------------------------------------ */

/* Appends to eb->msg (keeps the code); used to add context to a lower layer's message. */
static void eb_append(cmk_errbuf *eb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void eb_append(cmk_errbuf *eb, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    if (!eb)
        return;
    n = strnlen(eb->msg, sizeof(eb->msg));
    if (n + 1 >= sizeof(eb->msg))
        return;
    va_start(ap, fmt);
    vsnprintf(eb->msg + n, sizeof(eb->msg) - n, fmt, ap);
    va_end(ap);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- CK_RV: names, codes, advice ----------------------------------------------------------- */

static const struct {
    CK_RV rv;
    const char *name;
} rv_names[] = {
    {CKR_OK, "CKR_OK"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK"},
    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
    {CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED"},
    {CKR_DATA_INVALID, "CKR_DATA_INVALID"},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
    {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE"},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"},
    {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
    {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
    {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"},
    {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED"},
};

static void rv_str(CK_RV rv, char buf[48])
{
    for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++) {
        if (rv_names[i].rv == rv) {
            snprintf(buf, 48, "%s", rv_names[i].name);
            return;
        }
    }
    snprintf(buf, 48, "CKR 0x%lx", (unsigned long)rv);
}

static cmk_err rv_code(CK_RV rv)
{
    switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_USER_PIN_NOT_INITIALIZED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_USER_TYPE_INVALID:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
        return CMK_E_KEY_DENIED;
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
        return CMK_E_KEY_NOT_FOUND;
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
        return CMK_E_INTEGRITY;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_SIZE_RANGE:
        return CMK_E_UNSUPPORTED;
    case CKR_HOST_MEMORY:
        return CMK_E_NOMEM;
    case CKR_TEMPLATE_INCOMPLETE:
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_ATTRIBUTE_VALUE_INVALID:
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_SESSION_READ_ONLY:
    case CKR_ACTION_PROHIBITED:
        return CMK_E_REFUSED;
    case CKR_ARGUMENTS_BAD:
        return CMK_E_CRYPTO;
    default:
        /* Device errors, removal, general failures: a transport-like fault of the HSM. */
        return CMK_E_KEY_UNREACHABLE;
    }
}

static const char *rv_advice(CK_RV rv)
{
    switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
        return "the token rejected the user PIN: check the configured PIN (the vault's "
               "--hsm-pin-file, $" P11_ENV_PINF ", $" P11_ENV_PIN " or pinFile in pkcs11.json)";
    case CKR_PIN_LOCKED:
        return "the user PIN is locked: the token's security officer must reset it";
    case CKR_PIN_EXPIRED:
        return "the user PIN has expired: set a new user PIN on the token";
    case CKR_USER_PIN_NOT_INITIALIZED:
        return "the token has no user PIN: initialise it (C_InitPIN, softhsm2-util --pin)";
    case CKR_USER_NOT_LOGGED_IN:
        return "the token logged the user out and refused a new login";
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
        return "the token does not permit this key to decrypt (CKA_DECRYPT is false)";
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
        return "the key object was destroyed: the key is revoked and what it wrapped is lost, "
               "unless the HSM restores that very key from its own backup (a new or imported "
               "key is a different key); see kek/HSM.md";
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
        return "the wrapped key does not decrypt under this key version: it was altered or "
               "wrapped by another key";
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
        return "the token does not support this mechanism or its parameters";
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_DEVICE_REMOVED:
        return "the token is not present: insert or reconnect it";
    default:
        return "check that the token is present and its module works";
    }
}

/* ---- URIs (RFC 7512) ------------------------------------------------------------------------ */

static int is_unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Characters a path value may carry unencoded (RFC 7512 pk11-pchar without pct-encoded). */
static int is_path_raw(int c)
{
    return is_unreserved(c) || (c != 0 && strchr(":[]@!$'()*+,=&", c) != NULL);
}

/* Characters a query value may carry unencoded (pk11-qchar). */
static int is_query_raw(int c)
{
    return is_unreserved(c) || (c != 0 && strchr(":[]@!$'()*+,=/?|", c) != NULL);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static const char uri_form[] = "expected pkcs11:token=<token label>;object=<key label>"
                               "[;id=%XX...][?module-path=<path>&pin-source=file:<path>]";

/* Percent-decodes s[0..n) into out[cap]; raw characters must be legal in the part. Messages
 * name the attribute and the offset, never the value. */
static cmk_err uri_decode(const char *s, size_t n, int query, const char *attr, size_t off,
                          unsigned char *out, size_t cap, size_t *outlen, cmk_errbuf *eb)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = hi < 0 ? -1 : hexval((unsigned char)s[i + 2]);

            if (hi < 0 || lo < 0)
                return cmk_errbuf_set(eb, CMK_E_INVAL,
                                      "bad PKCS#11 URI: bad percent-escape in attribute "
                                      "\"%.32s\" at offset %zu (use %%XX with two hex digits)",
                                      attr, off + i);
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (!(query ? is_query_raw(c) : is_path_raw(c))) {
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "bad PKCS#11 URI: character 0x%02x in attribute \"%.32s\" at "
                                  "offset %zu must be percent-encoded",
                                  c, attr, off + i);
        }
        if (o >= cap)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "bad PKCS#11 URI: the value of attribute \"%.32s\" is too "
                                  "long (at most %zu bytes)",
                                  attr, cap);
        out[o++] = c;
    }
    *outlen = o;
    return CMK_OK;
}

/* Decodes a text value: non-empty, no NUL or control characters, NUL-terminated. */
static cmk_err uri_decode_str(const char *s, size_t n, int query, const char *attr, size_t off,
                              char *out, size_t cap, cmk_errbuf *eb)
{
    size_t len = 0;
    cmk_err rc;

    rc = uri_decode(s, n, query, attr, off, (unsigned char *)out, cap - 1, &len, eb);
    if (rc != CMK_OK)
        return rc;
    if (len == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad PKCS#11 URI: attribute \"%.32s\" is empty",
                              attr);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7f)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "bad PKCS#11 URI: attribute \"%.32s\" decodes to a control "
                                  "character",
                                  attr);
    }
    out[len] = '\0';
    return CMK_OK;
}

/* Splits "name=value" at the first '='; checks the name (RFC 7512: letters, digits, '-',
 * '_'). */
static cmk_err uri_attr_split(const char *a, size_t n, size_t off, char name[33], const char **val,
                              size_t *vlen, cmk_errbuf *eb)
{
    const char *eq = memchr(a, '=', n);
    size_t nl;

    if (n == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad PKCS#11 URI: empty attribute at offset %zu; %s",
                              off, uri_form);
    if (!eq)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 URI: attribute at offset %zu has no '='; %s", off,
                              uri_form);
    nl = (size_t)(eq - a);
    if (nl == 0 || nl > 32)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 URI: bad attribute name at offset %zu; %s", off,
                              uri_form);
    for (size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)a[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "bad PKCS#11 URI: bad attribute name at offset %zu; %s", off,
                                  uri_form);
    }
    memcpy(name, a, nl);
    name[nl] = '\0';
    *val = eq + 1;
    *vlen = n - nl - 1;
    return CMK_OK;
}

static cmk_err uri_refuse_pin_value(cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "PKCS#11 URI: pin-value is refused: a PIN must never be part of a key "
                          "identifier (identifiers are printed, logged and stored); put the PIN "
                          "in a file only the store's user can read and name it with "
                          "pin-source=file:<path>, $" P11_ENV_PINF " or pinFile in "
                          "<home>/pkcs11.json");
}

static cmk_err uri_dup(const char *name, cmk_errbuf *eb)
{
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "bad PKCS#11 URI: attribute \"%.32s\" appears more than once", name);
}

struct uri_seen {
    int token, object, id, type, module, pin;
};

static cmk_err uri_path_attr(const char *a, size_t n, size_t off, cmk_p11_uri *u,
                             struct uri_seen *seen, cmk_errbuf *eb)
{
    char name[33];
    char scratch[CMK_ID_MAX];
    const char *v = NULL;
    size_t vl = 0, dl;
    size_t voff;
    cmk_err rc;

    rc = uri_attr_split(a, n, off, name, &v, &vl, eb);
    if (rc != CMK_OK)
        return rc;
    voff = off + (size_t)(v - a);
    if (strcmp(name, "pin-value") == 0)
        return uri_refuse_pin_value(eb);
    if (strcmp(name, "token") == 0) {
        if (seen->token++)
            return uri_dup(name, eb);
        return uri_decode_str(v, vl, 0, name, voff, u->token, sizeof(u->token), eb);
    }
    if (strcmp(name, "object") == 0) {
        if (seen->object++)
            return uri_dup(name, eb);
        return uri_decode_str(v, vl, 0, name, voff, u->object, sizeof(u->object), eb);
    }
    if (strcmp(name, "id") == 0) {
        if (seen->id++)
            return uri_dup(name, eb);
        rc = uri_decode(v, vl, 0, name, voff, u->id, sizeof(u->id), &u->id_len, eb);
        if (rc != CMK_OK)
            return rc;
        if (u->id_len == 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL, "bad PKCS#11 URI: attribute \"id\" is empty");
        u->has_id = 1;
        return CMK_OK;
    }
    if (strcmp(name, "type") == 0) {
        if (seen->type++)
            return uri_dup(name, eb);
        rc = uri_decode_str(v, vl, 0, name, voff, scratch, 16, eb);
        if (rc != CMK_OK)
            return rc;
        if (strcmp(scratch, "private") == 0)
            return CMK_OK;
        if (strcmp(scratch, "public") == 0 || strcmp(scratch, "cert") == 0 ||
            strcmp(scratch, "secret-key") == 0 || strcmp(scratch, "data") == 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "PKCS#11 URI: type=%s is not supported: a key-encryption key "
                                  "is an RSA private key (type=private, or leave type out)",
                                  scratch);
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 URI: unknown type (RFC 7512 types: public, private, "
                              "cert, secret-key, data; a key-encryption key is type=private)");
    }
    /* serial, model, manufacturer, slot-*, library-*, vendor attributes: checked, ignored. */
    return uri_decode(v, vl, 0, name, voff, (unsigned char *)scratch, sizeof(scratch), &dl, eb);
}

static cmk_err uri_pin_source(const char *src, cmk_p11_uri *u, cmk_errbuf *eb)
{
    const char *p;

    if (strncasecmp(src, "file:", 5) != 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "PKCS#11 URI: pin-source must be file:<path> (a file holding the "
                              "PIN); other PIN sources are not supported");
    p = src + 5;
    if (p[0] == '/' && p[1] == '/') {
        /* file://[localhost]/abs/path: only the local host makes sense. */
        const char *host = p + 2;
        const char *slash = strchr(host, '/');
        size_t hl = slash ? (size_t)(slash - host) : strlen(host);

        if (!slash || (hl != 0 && !(hl == 9 && strncasecmp(host, "localhost", 9) == 0)))
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "PKCS#11 URI: pin-source must name a local file "
                                  "(file:/path or file:///path)");
        p = slash;
    }
    if (!*p)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 URI: pin-source names no file");
    snprintf(u->pin_file, sizeof(u->pin_file), "%s", p);
    return CMK_OK;
}

static cmk_err uri_query_attr(const char *a, size_t n, size_t off, cmk_p11_uri *u,
                              struct uri_seen *seen, cmk_errbuf *eb)
{
    char name[33];
    char scratch[CMK_ID_MAX];
    const char *v = NULL;
    size_t vl = 0, dl;
    size_t voff;
    cmk_err rc;

    rc = uri_attr_split(a, n, off, name, &v, &vl, eb);
    if (rc != CMK_OK)
        return rc;
    voff = off + (size_t)(v - a);
    if (strcmp(name, "pin-value") == 0)
        return uri_refuse_pin_value(eb);
    if (strcmp(name, "module-path") == 0) {
        if (seen->module++)
            return uri_dup(name, eb);
        return uri_decode_str(v, vl, 1, name, voff, u->module_path, sizeof(u->module_path), eb);
    }
    if (strcmp(name, "pin-source") == 0) {
        if (seen->pin++)
            return uri_dup(name, eb);
        rc = uri_decode_str(v, vl, 1, name, voff, scratch, sizeof(scratch), eb);
        if (rc != CMK_OK)
            return rc;
        return uri_pin_source(scratch, u, eb);
    }
    /* module-name and vendor query attributes: checked, ignored (module-path or the
     * configuration names the module). */
    return uri_decode(v, vl, 1, name, voff, (unsigned char *)scratch, sizeof(scratch), &dl, eb);
}

int cmk_p11_is_uri(const char *kid)
{
    return kid && strncasecmp(kid, CMK_P11_SCHEME, sizeof(CMK_P11_SCHEME) - 1) == 0;
}

cmk_err cmk_p11_uri_parse(const char *uri, cmk_p11_uri *out, cmk_errbuf *eb)
{
    struct uri_seen seen = {0};
    const char *path, *q, *end, *a, *e;
    size_t len;
    cmk_err rc = CMK_OK;

    memset(out, 0, sizeof(*out));
    if (!uri)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no PKCS#11 key identifier given; %s", uri_form);
    len = strnlen(uri, CMK_ID_MAX);
    if (len >= CMK_ID_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "bad PKCS#11 URI: longer than %d characters",
                              CMK_ID_MAX - 1);
    if (!cmk_p11_is_uri(uri))
        return cmk_errbuf_set(eb, CMK_E_INVAL, "not a PKCS#11 URI; %s", uri_form);
    path = uri + sizeof(CMK_P11_SCHEME) - 1;
    end = uri + len;
    q = memchr(path, '?', (size_t)(end - path));

    /* Path: attributes separated by ';'. An empty path is legal RFC 7512 but names no key;
     * empty attributes between separators are errors. */
    if ((q ? q : end) > path) {
        const char *pend = q ? q : end;
        for (a = path;; a = e + 1) {
            e = memchr(a, ';', (size_t)(pend - a));
            if (!e)
                e = pend;
            rc = uri_path_attr(a, (size_t)(e - a), (size_t)(a - uri), out, &seen, eb);
            if (rc != CMK_OK)
                goto out;
            if (e == pend)
                break;
        }
    }
    /* Query: attributes separated by '&'; kept verbatim for canonical identifiers. */
    if (q && q + 1 < end) {
        for (a = q + 1;; a = e + 1) {
            e = memchr(a, '&', (size_t)(end - a));
            if (!e)
                e = end;
            rc = uri_query_attr(a, (size_t)(e - a), (size_t)(a - uri), out, &seen, eb);
            if (rc != CMK_OK)
                goto out;
            if (e == end)
                break;
        }
        memcpy(out->query, q + 1, (size_t)(end - q - 1));
        out->query[end - q - 1] = '\0';
    }
    if (!seen.token || !seen.object)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 key identifier needs token= and object=; %s",
                            uri_form);
out:
    if (rc != CMK_OK) {
        /* Leave nothing half-parsed behind (pin_file, module_path). */
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

/* Appends n bytes to out, percent-encoding everything a path value may not carry raw (all
 * of it when all is set, as for id=). */
static int uri_put(char *out, size_t cap, size_t *pos, const unsigned char *s, size_t n, int all)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        if (!all && is_path_raw(s[i])) {
            if (*pos + 1 >= cap)
                return -1;
            out[(*pos)++] = (char)s[i];
        } else {
            if (*pos + 3 >= cap)
                return -1;
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[s[i] >> 4];
            out[(*pos)++] = hex[s[i] & 15];
        }
    }
    out[*pos] = '\0';
    return 0;
}

static int uri_put_str(char *out, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);

    if (*pos + n >= cap)
        return -1;
    memcpy(out + *pos, s, n + 1);
    *pos += n;
    return 0;
}

cmk_err cmk_p11_uri_format(const cmk_p11_uri *u, int versioned, char *out, size_t cap,
                           cmk_errbuf *eb)
{
    size_t pos = 0;

    if (!cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "no room for a PKCS#11 key identifier");
    out[0] = '\0';
    if (uri_put_str(out, cap, &pos, "pkcs11:token=") ||
        uri_put(out, cap, &pos, (const unsigned char *)u->token, strlen(u->token), 0) ||
        uri_put_str(out, cap, &pos, ";object=") ||
        uri_put(out, cap, &pos, (const unsigned char *)u->object, strlen(u->object), 0) ||
        (versioned && u->has_id &&
         (uri_put_str(out, cap, &pos, ";id=") || uri_put(out, cap, &pos, u->id, u->id_len, 1))) ||
        (u->query[0] &&
         (uri_put_str(out, cap, &pos, "?") || uri_put_str(out, cap, &pos, u->query)))) {
        out[0] = '\0';
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "PKCS#11 key identifier for key \"%s\" in token \"%s\" is too "
                              "long (at most %zu characters)",
                              u->object, u->token, cap - 1);
    }
    return CMK_OK;
}

/* Appends a query value, percent-encoding what a query value may not carry raw and the
 * separators '&' and '%'. */
static int uri_put_query(char *out, size_t cap, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_query_raw(*p)) {
            if (*pos + 1 >= cap)
                return -1;
            out[(*pos)++] = (char)*p;
        } else {
            if (*pos + 3 >= cap)
                return -1;
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[*p >> 4];
            out[(*pos)++] = hex[*p & 15];
        }
    }
    out[*pos] = '\0';
    return 0;
}

cmk_err cmk_p11_uri_build(const char *token, const char *label, const char *version,
                          const char *module_path, const char *pin_file, char *out, size_t cap,
                          cmk_errbuf *eb)
{
    cmk_p11_uri u;
    size_t qpos = 0;
    cmk_err rc;

    memset(&u, 0, sizeof(u));
    if (!token || !*token || strlen(token) > CMK_P11_TOKEN_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 token label must be 1 to %d bytes long",
                              CMK_P11_TOKEN_MAX);
    if (!label || !*label || strlen(label) > CMK_P11_LABEL_MAX)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "PKCS#11 key label must be 1 to %d bytes long",
                              CMK_P11_LABEL_MAX);
    memcpy(u.token, token, strlen(token) + 1);
    memcpy(u.object, label, strlen(label) + 1);
    if (version && *version) {
        rc = cmk_p11_version_parse(version, u.id, NULL, eb);
        if (rc != CMK_OK)
            return rc;
        u.has_id = 1;
        u.id_len = CMK_P11_ID_LEN;
    }
    if ((module_path && *module_path &&
         (uri_put_str(u.query, sizeof(u.query), &qpos, "module-path=") ||
          uri_put_query(u.query, sizeof(u.query), &qpos, module_path))) ||
        (pin_file && *pin_file &&
         ((qpos && uri_put_str(u.query, sizeof(u.query), &qpos, "&")) ||
          uri_put_str(u.query, sizeof(u.query), &qpos, "pin-source=file:") ||
          uri_put_query(u.query, sizeof(u.query), &qpos, pin_file))))
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "PKCS#11 module path and PIN file path are too long for a key "
                              "identifier (at most %d characters in all)",
                              CMK_ID_MAX - 1);
    return cmk_p11_uri_format(&u, u.has_id, out, cap, eb);
}

/* ---- versions ------------------------------------------------------------------------------- */

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

/* ---- modules: loaded once per process, reference-counted ------------------------------------ */

struct p11_module {
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    unsigned refs;
    int finalize; /* we called C_Initialize, so the last user calls C_Finalize */
    struct p11_module *next;
};

static pthread_mutex_t mod_mu = PTHREAD_MUTEX_INITIALIZER;
static struct p11_module *mods;

static cmk_err module_get(const char *path, struct p11_module **out, cmk_errbuf *eb)
{
    struct p11_module *m = NULL;
    CK_C_GetFunctionList getfl;
    CK_FUNCTION_LIST_PTR f = NULL;
    CK_C_INITIALIZE_ARGS args;
    char rvs[48];
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
                            "cannot load PKCS#11 module %s: %s; check $" P11_ENV_MODULE
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
            goto out;
        }
    }
    sym = dlsym(dl, "C_GetFunctionList");
    if (!sym) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "cannot load PKCS#11 module %s: it has no C_GetFunctionList, so it "
                            "is not a PKCS#11 module; check $" P11_ENV_MODULE " / pkcs11.json",
                            path);
        goto out;
    }
    getfl = (CK_C_GetFunctionList)sym;
    rv = getfl(&f);
    if (rv != CKR_OK || !f) {
        rv_str(rv, rvs);
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
        rv_str(rv, rvs);
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
out:
    if (dl)
        (void)dlclose(dl); /* RTLD_NODELETE: only drops the count */
    pthread_mutex_unlock(&mod_mu);
    return rc;
}

static void module_put(struct p11_module *m)
{
    struct p11_module **pp;

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

/* ---- handles -------------------------------------------------------------------------------- */

/* Per key version: public key and negotiated wrap algorithms (0: not negotiated yet). */
struct keyent {
    char label[CMK_P11_LABEL_MAX + 1];
    unsigned char id[CMK_P11_ID_LEN];
    EVP_PKEY *pub;
    unsigned algs;
    struct keyent *next;
};

struct cmk_p11 {
    struct p11_module *mod;
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    char module[P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    char *pin; /* secret memory */
    size_t pinlen;
    int mu_ok, gen_ok;
    pthread_mutex_t mu;     /* idle pool and key cache */
    pthread_mutex_t gen_mu; /* serialises key generation (seq numbers) */
    CK_SESSION_HANDLE idle[P11_POOL_MAX];
    unsigned nidle;
    struct keyent *keys;
};

const char *cmk_p11_module(const cmk_p11 *h)
{
    return h->module;
}

const char *cmk_p11_token(const cmk_p11 *h)
{
    return h->token;
}

/* Fills eb for a failed PKCS#11 call; key (may be NULL) describes the key involved. */
static cmk_err p11_fail(const cmk_p11 *h, const char *key, CK_RV rv, const char *fn, cmk_errbuf *eb)
{
    char rvs[48];

    rv_str(rv, rvs);
    if (key)
        return cmk_errbuf_set(eb, rv_code(rv), "%s in PKCS#11 token \"%s\" (module %s): %s: %s; %s",
                              key, h->token, h->module, fn, rvs, rv_advice(rv));
    return cmk_errbuf_set(eb, rv_code(rv), "PKCS#11 token \"%s\" (module %s): %s: %s; %s", h->token,
                          h->module, fn, rvs, rv_advice(rv));
}

static void keydesc(char *out, size_t cap, const char *label, const unsigned char *id)
{
    char hex[CMK_P11_VERSION_LEN + 1];

    if (id) {
        cmk_hex(hex, id, CMK_P11_ID_LEN);
        snprintf(out, cap, "key \"%s\" version %s", label, hex);
    } else {
        snprintf(out, cap, "key \"%s\"", label);
    }
}

static int rv_session_lost(CK_RV rv)
{
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

static int rv_token_lost(CK_RV rv)
{
    return rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR ||
           rv == CKR_TOKEN_NOT_RECOGNIZED;
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
    return p11_fail(h, NULL, rv, "C_Login", eb);
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
        rc = p11_fail(h, NULL, rv, "C_OpenSession", eb);
        goto out;
    }
    /* Login state is per token per process: a new session may already be logged in. */
    rv = h->f->C_GetSessionInfo(s, &si);
    if (rv != CKR_OK) {
        rc = p11_fail(h, NULL, rv, "C_GetSessionInfo", eb);
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
    if (keep && h->nidle < P11_POOL_MAX) {
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
    CK_SESSION_HANDLE v[P11_POOL_MAX];
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
static int sess_logged_out(cmk_p11 *h, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    if (h->f->C_GetSessionInfo(s, &si) != CKR_OK)
        return 0;
    return si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION;
}

/* 1 if the session still answers (the token is there and working). */
static int sess_alive(cmk_p11 *h, CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    return h->f->C_GetSessionInfo(s, &si) == CKR_OK;
}

/* One unit of work in a session. Sets *rv to the failing CK_RV (CKR_OK if the failure was
 * not the token's) and fills eb. */
typedef cmk_err (*p11_op)(cmk_p11 *h, CK_SESSION_HANDLE s, void *ctx, CK_RV *rv, cmk_errbuf *eb);

/* Runs op in a borrowed session; logs in again and retries once after
 * CKR_USER_NOT_LOGGED_IN, and once in a fresh session if the session was lost. */
static cmk_err p11_run(cmk_p11 *h, p11_op op, void *ctx, cmk_errbuf *eb)
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
                             (rc == CMK_E_KEY_NOT_FOUND && sess_logged_out(h, s)))) {
            cmk_errbuf_clear(eb);
            rc = sess_login(h, s, eb);
            sess_put(h, s, rc == CMK_OK);
            if (rc != CMK_OK)
                return rc;
            continue;
        }
        if (attempt == 0 && rv_session_lost(rv)) {
            /* The idle ones are most likely gone too (token reset or reinserted). */
            cmk_errbuf_clear(eb);
            sess_put(h, s, 0);
            pool_flush(h);
            continue;
        }
        if (rv_token_lost(rv)) {
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
        rc = p11_fail(h, NULL, rv, "C_GetSlotList", eb);
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
    struct keyent *k, *next;

    if (!h)
        return;
    if (h->mod) {
        for (unsigned i = 0; i < h->nidle; i++)
            sess_close(h, h->idle[i]);
        h->nidle = 0;
    }
    for (k = h->keys; k; k = next) {
        next = k->next;
        EVP_PKEY_free(k->pub);
        free(k);
    }
    cmk_secfree(h->pin);
    module_put(h->mod);
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
    if (ml == 0 || ml >= P11_PATH_MAX)
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
    rc = module_get(h->module, &h->mod, eb);
    if (rc != CMK_OK)
        goto out;
    h->f = h->mod->f;
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

/* The private-key objects of one version of label (id 16 bytes). */
static cmk_err find_version(cmk_p11 *h, CK_SESSION_HANDLE s, const char *label,
                            const unsigned char *id, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *obj,
                            unsigned *bits, CK_RV *rv, cmk_errbuf *eb)
{
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, (void *)id, CMK_P11_ID_LEN},
    };
    CK_OBJECT_HANDLE found[4];
    CK_ATTRIBUTE mod = {CKA_MODULUS, NULL, 0};
    char kd[CMK_P11_LABEL_MAX + 64];
    size_t n = 0;

    keydesc(kd, sizeof(kd), label, id);
    *rv = find_objects(h, s, tmpl, 4, found, 4, &n);
    if (*rv != CKR_OK)
        return p11_fail(h, kd, *rv, "C_FindObjects", eb);
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
            return p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        if (mod.ulValueLen == CK_UNAVAILABLE_INFORMATION || mod.ulValueLen == 0 ||
            mod.ulValueLen > P11_MOD_MAX)
            return cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                                  "%s in PKCS#11 token \"%s\" reports no usable RSA modulus", kd,
                                  h->token);
        *bits = (unsigned)mod.ulValueLen * 8;
    }
    return CMK_OK;
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
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_LABEL, (void *)c->label, strlen(c->label)},
    };
    CK_OBJECT_HANDLE *objs = NULL;
    char kd[CMK_P11_LABEL_MAX + 64];
    size_t n = 0;
    cmk_err rc = CMK_OK;

    free(c->v);
    c->v = NULL;
    c->n = 0;
    keydesc(kd, sizeof(kd), c->label, NULL);
    objs = calloc(P11_FIND_MAX, sizeof(*objs));
    if (!objs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory listing PKCS#11 key versions");
    *rv = find_objects(h, s, tmpl, 3, objs, P11_FIND_MAX, &n);
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_FindObjects", eb);
        goto out;
    }
    if (n == 0 && sess_logged_out(h, s)) {
        /* Private keys are invisible to a logged-out session: let p11_run log in again. */
        *rv = CKR_USER_NOT_LOGGED_IN;
        rc = p11_fail(h, kd, *rv, "C_FindObjects", eb);
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
        CK_ATTRIBUTE at[] = {
            {CKA_ID, id, sizeof(id)},
            {CKA_MODULUS, NULL, 0},
        };
        CK_RV r = h->f->C_GetAttributeValue(s, objs[i], at, 2);

        if (r == CKR_OBJECT_HANDLE_INVALID || r == CKR_ATTRIBUTE_TYPE_INVALID ||
            r == CKR_ATTRIBUTE_SENSITIVE || r == CKR_BUFFER_TOO_SMALL)
            continue; /* destroyed meanwhile, or not one of ours */
        if (r != CKR_OK) {
            *rv = r;
            rc = p11_fail(h, kd, r, "C_GetAttributeValue(CKA_ID)", eb);
            goto out;
        }
        if (at[0].ulValueLen != CMK_P11_ID_LEN || be32(id) == 0 ||
            at[1].ulValueLen == CK_UNAVAILABLE_INFORMATION || at[1].ulValueLen > P11_MOD_MAX)
            continue; /* not a cmkstore version */
        version_from_id(&c->v[c->n++], id, (unsigned)at[1].ulValueLen * 8);
    }
    if (c->n > 1)
        qsort(c->v, c->n, sizeof(*c->v), version_cmp);
out:
    free(objs);
    return rc;
}

static cmk_err check_label(const char *label, cmk_errbuf *eb)
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
    rc = check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    rc = p11_run(h, op_list, &c, eb);
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

struct get_ctx {
    const char *label;
    const unsigned char *id;
    unsigned bits;
};

static cmk_err op_get(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct get_ctx *c = vctx;
    CK_OBJECT_HANDLE obj;

    return find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, &c->bits, rv, eb);
}

cmk_err cmk_p11_key_get(cmk_p11 *h, const char *label, const char *version, cmk_p11_version *out,
                        cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct get_ctx c = {label, id, 0};
    cmk_p11_version *v = NULL;
    size_t n = 0;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = check_label(label, eb);
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
    rc = p11_run(h, op_get, &c, eb);
    if (rc != CMK_OK)
        return rc;
    version_from_id(out, id, c.bits);
    return CMK_OK;
}

/* Resolves version (NULL/"": latest) to its id. */
static cmk_err resolve_id(cmk_p11 *h, const char *label, const char *version,
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

struct gen_ctx {
    const char *label;
    const unsigned char *id;
    CK_ULONG bits;
};

static cmk_err op_generate(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct gen_ctx *c = vctx;
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
        {CKA_MODULUS_BITS, &c->bits, sizeof(c->bits)},
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
    char kd[CMK_P11_LABEL_MAX + 64];
    cmk_err rc = CMK_OK;

    keydesc(kd, sizeof(kd), c->label, c->id);
    *rv = h->f->C_GenerateKeyPair(s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
                                  sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_GenerateKeyPair", eb);
        hpub = hpriv = CK_INVALID_HANDLE;
        goto out;
    }
    /* Trust, but verify: a token that ignored the template would leave an exportable key. */
    *rv = h->f->C_GetAttributeValue(s, hpriv, chk, 2);
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_SENSITIVE)", eb);
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
    struct gen_ctx c = {label, id, bits};
    cmk_p11_version *v = NULL;
    size_t n = 0;
    uint32_t seq;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = check_label(label, eb);
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
    rc = p11_run(h, op_generate, &c, eb);
    if (rc != CMK_OK)
        goto out;
    version_from_id(out, id, bits);
out:
    pthread_mutex_unlock(&h->gen_mu);
    free(v);
    return rc;
}

/* ---- attributes ----------------------------------------------------------------------------- */

struct attrs_ctx {
    const char *label;
    const unsigned char *id;
    cmk_p11_key_attrs *out;
};

static int bool_attr(const CK_ATTRIBUTE *a, CK_BBOOL v)
{
    if (a->ulValueLen != sizeof(CK_BBOOL))
        return -1;
    return v != CK_FALSE;
}

static cmk_err op_attrs(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct attrs_ctx *c = vctx;
    CK_BBOOL ex = 0, se = 0, as = 0, ne = 0;
    CK_ATTRIBUTE at[] = {
        {CKA_EXTRACTABLE, &ex, sizeof(ex)},
        {CKA_SENSITIVE, &se, sizeof(se)},
        {CKA_ALWAYS_SENSITIVE, &as, sizeof(as)},
        {CKA_NEVER_EXTRACTABLE, &ne, sizeof(ne)},
    };
    CK_OBJECT_HANDLE obj;
    char kd[CMK_P11_LABEL_MAX + 64];
    CK_RV r;
    cmk_err rc;

    rc = find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, NULL, rv, eb);
    if (rc != CMK_OK)
        return rc;
    r = h->f->C_GetAttributeValue(s, obj, at, 4);
    /* A token may not know an attribute: the others are still filled in. */
    if (r != CKR_OK && r != CKR_ATTRIBUTE_TYPE_INVALID && r != CKR_ATTRIBUTE_SENSITIVE) {
        *rv = r;
        keydesc(kd, sizeof(kd), c->label, c->id);
        return p11_fail(h, kd, r, "C_GetAttributeValue", eb);
    }
    c->out->extractable = bool_attr(&at[0], ex);
    c->out->sensitive = bool_attr(&at[1], se);
    c->out->always_sensitive = bool_attr(&at[2], as);
    c->out->never_extractable = bool_attr(&at[3], ne);
    return CMK_OK;
}

cmk_err cmk_p11_key_attrs_get(cmk_p11 *h, const char *label, const char *version,
                              cmk_p11_key_attrs *out, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct attrs_ctx c = {label, id, out};
    cmk_err rc;

    out->extractable = out->sensitive = out->always_sensitive = out->never_extractable = -1;
    rc = check_label(label, eb);
    if (rc == CMK_OK)
        rc = resolve_id(h, label, version, id, eb);
    if (rc == CMK_OK)
        rc = p11_run(h, op_attrs, &c, eb);
    return rc;
}

/* ---- public keys ---------------------------------------------------------------------------- */

static cmk_err pub_from_parts(const unsigned char *n, size_t nlen, const unsigned char *e,
                              size_t elen, EVP_PKEY **out, cmk_errbuf *eb)
{
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL);
    BIGNUM *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ||
        EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        ERR_clear_error();
        EVP_PKEY_free(*out);
        *out = NULL;
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "cannot build an RSA public key from the token's modulus and "
                            "exponent");
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    return rc;
}

struct pub_ctx {
    const char *label;
    const unsigned char *id;
    EVP_PKEY *pub;
};

/* Reads CKA_MODULUS and CKA_PUBLIC_EXPONENT (public attributes; nothing else is asked). */
static cmk_err read_pub(cmk_p11 *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, const char *kd,
                        EVP_PKEY **out, CK_RV *rv, cmk_errbuf *eb)
{
    CK_ATTRIBUTE at[] = {
        {CKA_MODULUS, NULL, 0},
        {CKA_PUBLIC_EXPONENT, NULL, 0},
    };
    unsigned char *buf = NULL;
    cmk_err rc = CMK_OK;

    *rv = h->f->C_GetAttributeValue(s, obj, at, 2);
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        goto out;
    }
    if (at[0].ulValueLen == 0 || at[0].ulValueLen > P11_MOD_MAX || at[1].ulValueLen == 0 ||
        at[1].ulValueLen > 16) {
        rc =
            cmk_errbuf_set(eb, CMK_E_KEY_UNSUPPORTED,
                           "%s in PKCS#11 token \"%s\" has no usable RSA public key", kd, h->token);
        goto out;
    }
    buf = malloc(at[0].ulValueLen + at[1].ulValueLen);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory reading a public key");
        goto out;
    }
    at[0].pValue = buf;
    at[1].pValue = buf + at[0].ulValueLen;
    *rv = h->f->C_GetAttributeValue(s, obj, at, 2);
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_GetAttributeValue(CKA_MODULUS)", eb);
        goto out;
    }
    rc = pub_from_parts(at[0].pValue, at[0].ulValueLen, at[1].pValue, at[1].ulValueLen, out, eb);
out:
    free(buf);
    return rc;
}

static cmk_err op_public(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct pub_ctx *c = vctx;
    CK_OBJECT_HANDLE priv, pub;
    char kd[CMK_P11_LABEL_MAX + 64];
    cmk_err rc;

    keydesc(kd, sizeof(kd), c->label, c->id);
    /* The version exists while its private key does. */
    rc = find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &priv, NULL, rv, eb);
    if (rc != CMK_OK)
        return rc;
    rc = find_version(h, s, c->label, c->id, CKO_PUBLIC_KEY, &pub, NULL, rv, eb);
    if (rc == CMK_E_KEY_NOT_FOUND) {
        /* No public-key object: the private key's modulus and exponent are public too. */
        cmk_errbuf_clear(eb);
        pub = priv;
    } else if (rc != CMK_OK) {
        return rc;
    }
    return read_pub(h, s, pub, kd, &c->pub, rv, eb);
}

/* The cache entry of (label, id), created if absent; called with h->mu held. */
static struct keyent *cache_find(cmk_p11 *h, const char *label, const unsigned char *id)
{
    for (struct keyent *k = h->keys; k; k = k->next) {
        if (memcmp(k->id, id, CMK_P11_ID_LEN) == 0 && strcmp(k->label, label) == 0)
            return k;
    }
    return NULL;
}

/* The version's public key (a new reference) and its cached wrap algorithms. */
static cmk_err cached_key(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY **pub,
                          unsigned *algs, cmk_errbuf *eb)
{
    struct pub_ctx c = {label, id, NULL};
    struct keyent *k, *nk = NULL;
    cmk_err rc;

    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (k) {
        *pub = k->pub;
        *algs = k->algs;
        EVP_PKEY_up_ref(k->pub);
    }
    pthread_mutex_unlock(&h->mu);
    if (k)
        return CMK_OK;
    rc = p11_run(h, op_public, &c, eb);
    if (rc != CMK_OK)
        return rc;
    nk = calloc(1, sizeof(*nk));
    if (!nk) {
        EVP_PKEY_free(c.pub);
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory caching a public key");
    }
    snprintf(nk->label, sizeof(nk->label), "%s", label);
    memcpy(nk->id, id, CMK_P11_ID_LEN);
    nk->pub = c.pub;
    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (!k) {
        nk->next = h->keys;
        h->keys = nk;
        k = nk;
        nk = NULL;
    }
    *pub = k->pub;
    *algs = k->algs;
    EVP_PKEY_up_ref(k->pub);
    pthread_mutex_unlock(&h->mu);
    if (nk) {
        /* Another thread cached it first. */
        EVP_PKEY_free(nk->pub);
        free(nk);
    }
    return CMK_OK;
}

static void cache_drop(cmk_p11 *h, const char *label, const unsigned char *id)
{
    struct keyent **pp, *dead = NULL;

    pthread_mutex_lock(&h->mu);
    for (pp = &h->keys; *pp;) {
        struct keyent *k = *pp;
        if (strcmp(k->label, label) == 0 && (!id || memcmp(k->id, id, CMK_P11_ID_LEN) == 0)) {
            *pp = k->next;
            k->next = dead;
            dead = k;
        } else {
            pp = &k->next;
        }
    }
    pthread_mutex_unlock(&h->mu);
    while (dead) {
        struct keyent *next = dead->next;
        EVP_PKEY_free(dead->pub);
        free(dead);
        dead = next;
    }
}

cmk_err cmk_p11_key_public(cmk_p11 *h, const char *label, const char *version, EVP_PKEY **out,
                           cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct get_ctx g = {label, id, 0};
    unsigned algs;
    cmk_err rc;

    *out = NULL;
    rc = check_label(label, eb);
    if (rc == CMK_OK)
        rc = resolve_id(h, label, version, id, eb);
    if (rc == CMK_OK) /* the cache may outlive the key: check it still exists */
        rc = p11_run(h, op_get, &g, eb);
    if (rc == CMK_OK)
        rc = cached_key(h, label, id, out, &algs, eb);
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
    CK_KEY_TYPE kt = CKK_RSA;
    CK_OBJECT_HANDLE *objs = NULL;
    char kd[CMK_P11_LABEL_MAX + 64];
    cmk_err rc = CMK_OK;

    keydesc(kd, sizeof(kd), c->label, c->id);
    c->nversions = 0;
    objs = calloc(P11_FIND_MAX, sizeof(*objs));
    if (!objs)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory destroying a PKCS#11 key");
    /* Private keys first: once they are gone the version is revoked, whatever happens to the
     * public halves. */
    for (size_t ci = 0; ci < 2; ci++) {
        CK_OBJECT_CLASS cls = classes[ci];
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_LABEL, (void *)c->label, strlen(c->label)},
            {CKA_ID, (void *)c->id, CMK_P11_ID_LEN},
        };
        size_t n = 0;

        *rv = find_objects(h, s, tmpl, c->id ? 4 : 3, objs, P11_FIND_MAX, &n);
        if (*rv != CKR_OK) {
            rc = p11_fail(h, kd, *rv, "C_FindObjects", eb);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char id[CMK_P11_URI_ID_MAX];
            CK_ATTRIBUTE at = {CKA_ID, id, sizeof(id)};
            CK_RV r = h->f->C_GetAttributeValue(s, objs[i], &at, 1);

            /* Only cmkstore versions of the key are destroyed, never other objects that
             * happen to share the label. */
            if (r != CKR_OK || at.ulValueLen != CMK_P11_ID_LEN || be32(id) == 0)
                continue;
            r = h->f->C_DestroyObject(s, objs[i]);
            if (r == CKR_OBJECT_HANDLE_INVALID)
                continue; /* destroyed meanwhile */
            if (r != CKR_OK) {
                *rv = r;
                rc = p11_fail(h, kd, r, "C_DestroyObject", eb);
                goto out;
            }
            if (cls == CKO_PRIVATE_KEY)
                c->nversions++;
        }
    }
    if (c->nversions == 0)
        rc = c->id ? cmk_errbuf_set(eb, CMK_E_KEY_NOT_FOUND,
                                    "%s is not in PKCS#11 token \"%s\" (module %s): nothing to "
                                    "destroy",
                                    kd, h->token, h->module)
                   : no_versions(h, c->label, eb);
out:
    free(objs);
    return rc;
}

cmk_err cmk_p11_key_destroy(cmk_p11 *h, const char *label, const char *version, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct destroy_ctx c = {label, id, 0};
    cmk_err rc;

    rc = check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    if (!version || !*version)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "destroying a PKCS#11 key version needs the version (use "
                              "cmk_p11_key_destroy_all for every version)");
    rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc != CMK_OK)
        return rc;
    cache_drop(h, label, id);
    return p11_run(h, op_destroy, &c, eb);
}

cmk_err cmk_p11_key_destroy_all(cmk_p11 *h, const char *label, size_t *ndestroyed, cmk_errbuf *eb)
{
    struct destroy_ctx c = {label, NULL, 0};
    cmk_err rc;

    if (ndestroyed)
        *ndestroyed = 0;
    rc = check_label(label, eb);
    if (rc != CMK_OK)
        return rc;
    cache_drop(h, label, NULL);
    rc = p11_run(h, op_destroy, &c, eb);
    if (ndestroyed)
        *ndestroyed = c.nversions;
    return rc;
}

/* ---- wrapping and unwrapping ---------------------------------------------------------------- */

static const EVP_MD *alg_md(cmk_wrap_alg alg)
{
    return alg == CMK_WRAP_RSA_OAEP_256 ? EVP_sha256() : EVP_sha1();
}

static cmk_err check_alg(cmk_wrap_alg alg, cmk_errbuf *eb)
{
    if (alg != CMK_WRAP_RSA_OAEP_256 && alg != CMK_WRAP_RSA_OAEP)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "wrap algorithm %d is not supported: use RSA-OAEP-256 or RSA-OAEP",
                              (int)alg);
    return CMK_OK;
}

/* RSA-OAEP encryption with the public key, in software. */
static cmk_err sw_encrypt(EVP_PKEY *pub, cmk_wrap_alg alg, const unsigned char *in, size_t inlen,
                          unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    const EVP_MD *md = alg_md(alg);
    size_t need = 0;
    cmk_err rc = CMK_OK;

    if (!ctx || EVP_PKEY_encrypt_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) <= 0 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) <= 0 ||
        EVP_PKEY_encrypt(ctx, NULL, &need, in, inlen) <= 0) {
        rc =
            cmk_errbuf_set(eb, CMK_E_CRYPTO, "cannot set up %s encryption", cmk_wrap_alg_name(alg));
        goto out;
    }
    if (need > *outlen) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "wrapped key needs %zu bytes, the buffer holds %zu",
                            need, *outlen);
        goto out;
    }
    need = *outlen;
    if (EVP_PKEY_encrypt(ctx, out, &need, in, inlen) <= 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "%s encryption of a %zu-byte key failed (too long for the RSA "
                            "key?)",
                            cmk_wrap_alg_name(alg), inlen);
        goto out;
    }
    *outlen = need;
out:
    if (rc != CMK_OK)
        ERR_clear_error();
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

struct dec_ctx {
    const char *label;
    const unsigned char *id;
    cmk_wrap_alg alg;
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t cap;
    size_t outlen;
};

static cmk_err op_decrypt(cmk_p11 *h, CK_SESSION_HANDLE s, void *vctx, CK_RV *rv, cmk_errbuf *eb)
{
    struct dec_ctx *c = vctx;
    CK_RSA_PKCS_OAEP_PARAMS p;
    CK_MECHANISM mech = {CKM_RSA_PKCS_OAEP, &p, sizeof(p)};
    CK_OBJECT_HANDLE obj;
    char kd[CMK_P11_LABEL_MAX + 64];
    unsigned char *buf = NULL;
    unsigned bits = 0;
    char rvs[48];
    CK_ULONG n;
    cmk_err rc;

    keydesc(kd, sizeof(kd), c->label, c->id);
    rc = find_version(h, s, c->label, c->id, CKO_PRIVATE_KEY, &obj, &bits, rv, eb);
    if (rc != CMK_OK)
        goto out;
    memset(&p, 0, sizeof(p));
    p.hashAlg = c->alg == CMK_WRAP_RSA_OAEP_256 ? CKM_SHA256 : CKM_SHA_1;
    p.mgf = c->alg == CMK_WRAP_RSA_OAEP_256 ? CKG_MGF1_SHA256 : CKG_MGF1_SHA1;
    p.source = CKZ_DATA_SPECIFIED; /* empty OAEP label, as OpenSSL uses */
    p.pSourceData = NULL;
    p.ulSourceDataLen = 0;
    if (c->inlen != bits / 8) {
        /* RSA ciphertext is exactly the modulus length; tokens answer anything else with
         * assorted codes, some of them CKR_GENERAL_ERROR. */
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "%s in PKCS#11 token \"%s\" (module %s) cannot unwrap a %zu-byte "
                            "wrapped key: RSA-%u gives %u bytes; it was altered or wrapped by "
                            "another key",
                            kd, h->token, h->module, c->inlen, bits, bits / 8);
        goto out;
    }
    /* The plaintext is shorter than the modulus; decrypt into secret memory of that size so
     * the token never sees a short buffer (which would leave the operation active). */
    buf = cmk_secalloc(bits / 8);
    if (!buf) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory unwrapping a key");
        goto out;
    }
    *rv = h->f->C_DecryptInit(s, &mech, obj);
    if (*rv == CKR_MECHANISM_PARAM_INVALID || *rv == CKR_ARGUMENTS_BAD ||
        *rv == CKR_MECHANISM_INVALID) {
        rv_str(*rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap %s with %s (%s): "
                            "wrap with an algorithm the token supports",
                            h->token, h->module, cmk_wrap_alg_name(c->alg), kd, rvs);
        goto out;
    }
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_DecryptInit", eb);
        goto out;
    }
    n = bits / 8;
    *rv = h->f->C_Decrypt(s, (CK_BYTE_PTR)c->in, (CK_ULONG)c->inlen, buf, &n);
    /* Bad OAEP padding is reported as ENCRYPTED_DATA_INVALID by the book, but also as
     * DATA_INVALID, or (SoftHSM2) GENERAL_ERROR / FUNCTION_FAILED. The key and the session
     * just worked for C_DecryptInit; if the session still answers, the token is fine and
     * the ciphertext is what it rejected. */
    if (*rv == CKR_ENCRYPTED_DATA_INVALID || *rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
        *rv == CKR_DATA_INVALID || *rv == CKR_DATA_LEN_RANGE ||
        ((*rv == CKR_GENERAL_ERROR || *rv == CKR_FUNCTION_FAILED) && sess_alive(h, s))) {
        rv_str(*rv, rvs);
        rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                            "%s in PKCS#11 token \"%s\" (module %s) could not unwrap the key "
                            "with %s (%s): it was altered, or wrapped by another key or "
                            "algorithm",
                            kd, h->token, h->module, cmk_wrap_alg_name(c->alg), rvs);
        goto out;
    }
    if (*rv != CKR_OK) {
        rc = p11_fail(h, kd, *rv, "C_Decrypt", eb);
        goto out;
    }
    if (n > c->cap) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "unwrapped key is %lu bytes, the buffer holds %zu",
                            (unsigned long)n, c->cap);
        goto out;
    }
    memcpy(c->out, buf, n);
    c->outlen = n;
out:
    cmk_secfree(buf);
    return rc;
}

static cmk_err unwrap_id(cmk_p11 *h, const char *label, const unsigned char *id, cmk_wrap_alg alg,
                         const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                         size_t *keylen, cmk_errbuf *eb)
{
    struct dec_ctx c = {label, id, alg, wrapped, wrappedlen, dek, *keylen, 0};
    cmk_err rc;

    if (wrappedlen == 0 || wrappedlen > CMK_WRAPPED_MAX)
        return cmk_errbuf_set(eb, CMK_E_INTEGRITY, "wrapped key has a bad length (%zu bytes)",
                              wrappedlen);
    rc = p11_run(h, op_decrypt, &c, eb);
    if (rc == CMK_OK)
        *keylen = c.outlen;
    return rc;
}

/* One negotiation round trip: 1 if the token undid alg, 0 if it cannot, else an error. */
static cmk_err probe(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY *pub,
                     cmk_wrap_alg alg, int *ok, cmk_errbuf *eb)
{
    unsigned char *sec = cmk_secalloc(2 * P11_PROBE_LEN);
    unsigned char ct[CMK_WRAPPED_MAX];
    size_t ctlen = sizeof(ct), outlen = P11_PROBE_LEN;
    cmk_err rc;

    *ok = 0;
    if (!sec)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory");
    rc = cmk_random(sec, P11_PROBE_LEN, eb);
    if (rc != CMK_OK)
        goto out;
    rc = sw_encrypt(pub, alg, sec, P11_PROBE_LEN, ct, &ctlen, eb);
    if (rc != CMK_OK)
        goto out;
    rc = unwrap_id(h, label, id, alg, ct, ctlen, sec + P11_PROBE_LEN, &outlen, eb);
    if (rc == CMK_E_UNSUPPORTED || rc == CMK_E_INTEGRITY) {
        /* Rejected parameters, or a token that silently used another hash. */
        cmk_errbuf_clear(eb);
        rc = CMK_OK;
        goto out;
    }
    if (rc != CMK_OK)
        goto out;
    *ok = outlen == P11_PROBE_LEN && CRYPTO_memcmp(sec, sec + P11_PROBE_LEN, P11_PROBE_LEN) == 0;
out:
    cmk_secfree(sec);
    return rc;
}

static cmk_err negotiated(cmk_p11 *h, const char *label, const unsigned char *id, EVP_PKEY **pub,
                          unsigned *algs, cmk_errbuf *eb)
{
    static const cmk_wrap_alg order[] = {CMK_WRAP_RSA_OAEP_256, CMK_WRAP_RSA_OAEP};
    char kd[CMK_P11_LABEL_MAX + 64];
    struct keyent *k;
    unsigned got = 0;
    cmk_err rc;

    *pub = NULL;
    rc = cached_key(h, label, id, pub, algs, eb);
    if (rc != CMK_OK || *algs != 0)
        goto out;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int ok = 0;

        rc = probe(h, label, id, *pub, order[i], &ok, eb);
        if (rc != CMK_OK)
            goto out;
        if (ok)
            got |= 1u << order[i];
    }
    if (got == 0) {
        keydesc(kd, sizeof(kd), label, id);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap with %s under "
                            "RSA-OAEP-256 or RSA-OAEP (do its public and private halves "
                            "match?)",
                            h->token, h->module, kd);
        goto out;
    }
    pthread_mutex_lock(&h->mu);
    k = cache_find(h, label, id);
    if (k)
        k->algs = got;
    pthread_mutex_unlock(&h->mu);
    *algs = got;
out:
    if (rc != CMK_OK) {
        EVP_PKEY_free(*pub);
        *pub = NULL;
    }
    return rc;
}

cmk_err cmk_p11_wrap_algs(cmk_p11 *h, const char *label, const char *version, unsigned *algs,
                          cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    EVP_PKEY *pub = NULL;
    cmk_err rc;

    *algs = 0;
    rc = check_label(label, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc == CMK_OK)
        rc = negotiated(h, label, id, &pub, algs, eb);
    EVP_PKEY_free(pub);
    return rc;
}

cmk_err cmk_p11_wrap(cmk_p11 *h, const char *label, const char *version, cmk_wrap_alg alg,
                     const unsigned char *dek, size_t keylen, unsigned char *out, size_t *outlen,
                     cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    struct get_ctx g = {label, id, 0};
    char kd[CMK_P11_LABEL_MAX + 64];
    EVP_PKEY *pub = NULL;
    unsigned algs = 0;
    cmk_err rc;

    rc = check_label(label, eb);
    if (rc == CMK_OK)
        rc = check_alg(alg, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_version_parse(version, id, NULL, eb);
    /* The public key is cached; the private key must still exist (revocation = destroy). */
    if (rc == CMK_OK)
        rc = p11_run(h, op_get, &g, eb);
    if (rc == CMK_OK)
        rc = negotiated(h, label, id, &pub, &algs, eb);
    if (rc != CMK_OK)
        goto out;
    if (!(algs & (1u << alg))) {
        keydesc(kd, sizeof(kd), label, id);
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED,
                            "PKCS#11 token \"%s\" (module %s) cannot unwrap %s with %s, so "
                            "nothing is wrapped with it: use %s",
                            h->token, h->module, cmk_wrap_alg_name(alg), kd,
                            (algs & (1u << CMK_WRAP_RSA_OAEP_256)) ? "RSA-OAEP-256" : "RSA-OAEP");
        goto out;
    }
    rc = sw_encrypt(pub, alg, dek, keylen, out, outlen, eb);
out:
    EVP_PKEY_free(pub);
    return rc;
}

cmk_err cmk_p11_unwrap(cmk_p11 *h, const char *label, const char *version, cmk_wrap_alg alg,
                       const unsigned char *wrapped, size_t wrappedlen, unsigned char *dek,
                       size_t *keylen, cmk_errbuf *eb)
{
    unsigned char id[CMK_P11_ID_LEN];
    cmk_err rc;

    rc = check_label(label, eb);
    if (rc == CMK_OK)
        rc = check_alg(alg, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_version_parse(version, id, NULL, eb);
    if (rc == CMK_OK)
        rc = unwrap_id(h, label, id, alg, wrapped, wrappedlen, dek, keylen, eb);
    return rc;
}

/* ---- configuration: module and PIN ---------------------------------------------------------- */

static cmk_err copy_str(char *out, size_t cap, const char *s, const char *what, cmk_errbuf *eb)
{
    if (strlen(s) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "%s is too long", what);
    memcpy(out, s, strlen(s) + 1);
    return CMK_OK;
}

/* <home>/pkcs11.json, or NULL if home is NULL or the file does not exist. */
static cmk_err load_home_config(const char *home, json_t **out, char *path, size_t cap,
                                cmk_errbuf *eb)
{
    cmk_err rc;

    *out = NULL;
    path[0] = '\0';
    if (!home || !*home)
        return CMK_OK;
    if ((size_t)snprintf(path, cap, "%s/pkcs11.json", home) >= cap)
        return cmk_errbuf_set(eb, CMK_E_INVAL, "home path too long");
    rc = cmk_json_load(path, out, eb);
    if (rc == CMK_E_NOT_FOUND) {
        cmk_errbuf_clear(eb);
        return CMK_OK;
    }
    return rc;
}

cmk_err cmk_p11_resolve_module(const char *home, const char *module_path, char *out, size_t cap,
                               cmk_errbuf *eb)
{
    char cfg[P11_PATH_MAX];
    const char *env = getenv(P11_ENV_MODULE);
    const char *m;
    json_t *j = NULL;
    cmk_err rc;

    if (module_path && *module_path)
        return copy_str(out, cap, module_path, "PKCS#11 module path", eb);
    if (env && *env)
        return copy_str(out, cap, env, "$" P11_ENV_MODULE, eb);
    rc = load_home_config(home, &j, cfg, sizeof(cfg), eb);
    if (rc != CMK_OK)
        return rc;
    m = cmk_json_str(j, "module");
    if (m && *m)
        rc = copy_str(out, cap, m, "\"module\" in pkcs11.json", eb);
    else
        rc = cmk_errbuf_set(
            eb, CMK_E_INVAL,
            "no PKCS#11 module configured: give --pkcs11-module, set $" P11_ENV_MODULE
            ", or put \"module\" in %s",
            cfg[0] ? cfg : "<home>/pkcs11.json");
    json_decref(j);
    return rc;
}

/* Reads a PIN file into secret memory; one trailing newline (LF or CRLF) is dropped. */
static cmk_err read_pin_file(const char *path, char **pin, cmk_errbuf *eb)
{
    char *buf = cmk_secalloc(CMK_P11_PIN_MAX + 3);
    size_t n = 0;
    struct stat st;
    int fd = -1;
    cmk_err rc = CMK_OK;

    *pin = NULL;
    if (!buf)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory for the PKCS#11 PIN");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = cmk_errbuf_sys(eb, CMK_E_KEY_DENIED, errno, "cannot read the PKCS#11 PIN file %s",
                            path);
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED, "the PKCS#11 PIN file %s is not a regular file",
                            path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, CMK_P11_PIN_MAX + 2 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = cmk_errbuf_sys(eb, CMK_E_KEY_DENIED, errno, "cannot read the PKCS#11 PIN file %s",
                                path);
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n >= CMK_P11_PIN_MAX + 2)
            break;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0 || n > CMK_P11_PIN_MAX || memchr(buf, '\0', n)) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "the PKCS#11 PIN file %s is empty, too long (over %d bytes) or "
                            "binary",
                            path, CMK_P11_PIN_MAX);
        goto out;
    }
    buf[n] = '\0';
    *pin = buf;
    buf = NULL;
out:
    if (fd >= 0)
        close(fd);
    cmk_secfree(buf);
    return rc;
}

cmk_err cmk_p11_load_pin(const char *home, const char *pin_file, char **pin, char *where,
                         size_t wherecap, cmk_errbuf *eb)
{
    char cfg[P11_PATH_MAX], path[P11_PATH_MAX];
    const char *env_file = getenv(P11_ENV_PINF);
    const char *env_pin = getenv(P11_ENV_PIN);
    const char *pf;
    json_t *j = NULL;
    cmk_err rc = CMK_OK;

    *pin = NULL;
    if (pin_file && *pin_file) {
        snprintf(where, wherecap, "pin-source file %s", pin_file);
        return read_pin_file(pin_file, pin, eb);
    }
    if (env_file && *env_file) {
        snprintf(where, wherecap, "$" P11_ENV_PINF " (%s)", env_file);
        return read_pin_file(env_file, pin, eb);
    }
    if (env_pin && *env_pin) {
        size_t n = strnlen(env_pin, CMK_P11_PIN_MAX + 1);

        snprintf(where, wherecap, "$" P11_ENV_PIN);
        if (n > CMK_P11_PIN_MAX)
            return cmk_errbuf_set(eb, CMK_E_KEY_DENIED, "$" P11_ENV_PIN " is longer than %d bytes",
                                  CMK_P11_PIN_MAX);
        *pin = cmk_secalloc(n + 1);
        if (!*pin)
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of secure memory for the PKCS#11 PIN");
        memcpy(*pin, env_pin, n);
        return CMK_OK;
    }
    rc = load_home_config(home, &j, cfg, sizeof(cfg), eb);
    if (rc != CMK_OK)
        return rc;
    pf = cmk_json_str(j, "pinFile");
    if (!pf || !*pf) {
        snprintf(where, wherecap, "nowhere");
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "no PKCS#11 user PIN configured: set $" P11_ENV_PINF " or $" P11_ENV_PIN
                            ", or put \"pinFile\" in %s",
                            cfg[0] ? cfg : "<home>/pkcs11.json");
        goto out;
    }
    if (pf[0] == '/')
        rc = copy_str(path, sizeof(path), pf, "pinFile", eb);
    else if ((size_t)snprintf(path, sizeof(path), "%s/%s", home, pf) >= sizeof(path))
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "pinFile path too long");
    if (rc != CMK_OK)
        goto out;
    snprintf(where, wherecap, "pinFile %s in %s", path, cfg);
    rc = read_pin_file(path, pin, eb);
out:
    json_decref(j);
    return rc;
}

cmk_err cmk_p11_open_home(const char *home, const char *token_label, const char *module_path,
                          const char *pin_file, cmk_p11 **out, cmk_errbuf *eb)
{
    char module[P11_PATH_MAX], where[P11_PATH_MAX + 64];
    char *pin = NULL;
    cmk_err rc;

    *out = NULL;
    rc = cmk_p11_resolve_module(home, module_path, module, sizeof(module), eb);
    if (rc == CMK_OK)
        rc = cmk_p11_load_pin(home, pin_file, &pin, where, sizeof(where), eb);
    if (rc == CMK_OK) {
        rc = cmk_p11_open(module, token_label, pin, out, eb);
        if (rc == CMK_E_KEY_DENIED)
            eb_append(eb, " (the PIN came from %s)", where);
    }
    cmk_secfree(pin);
    return rc;
}

/* ---- the provider --------------------------------------------------------------------------- */

struct prov_ent {
    char module[P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    cmk_p11 *h;
    unsigned refs;
    int dead; /* unlinked after a fault or a denial; closed by its last user */
    struct prov_ent *next;
};

/* A PIN a token rejected, remembered (as an HMAC under a per-provider key) so that the same
 * wrong PIN is not presented again on every call: real HSMs lock the user PIN after a few
 * failed logins. A different PIN (the operator fixed the file) is tried at once. */
struct prov_bad {
    char module[P11_PATH_MAX];
    char token[CMK_P11_TOKEN_MAX + 1];
    unsigned char mac[32];
    char msg[sizeof(((cmk_errbuf *)0)->msg)];
    struct prov_bad *next;
};

struct p11_prov {
    char *home;
    unsigned flags; /* CMK_P11_PROV_* */
    pthread_mutex_t mu;
    struct prov_ent *ents;
    struct prov_bad *bad;
    unsigned char mac_key[32];
};

static cmk_err pin_mac(const struct p11_prov *p, const char *pin, unsigned char mac[32],
                       cmk_errbuf *eb)
{
    size_t n = 0;

    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, p->mac_key, sizeof(p->mac_key),
                   (const unsigned char *)pin, strlen(pin), mac, 32, &n) ||
        n != 32) {
        ERR_clear_error();
        return cmk_errbuf_set(eb, CMK_E_CRYPTO, "HMAC-SHA256 failed");
    }
    return CMK_OK;
}

/* The remembered rejection of (module, token), or NULL; called with p->mu held. */
static struct prov_bad **bad_find(struct p11_prov *p, const char *module, const char *token)
{
    struct prov_bad **pp;

    for (pp = &p->bad; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->module, module) == 0 && strcmp((*pp)->token, token) == 0)
            return pp;
    }
    return NULL;
}

/* Opens a handle for (module, token), unless this very PIN was rejected before; called with
 * p->mu held, so there is one login per token, not one per racing thread. */
static cmk_err prov_open(struct p11_prov *p, const char *module, const cmk_p11_uri *u, cmk_p11 **h,
                         cmk_errbuf *eb)
{
    char where[P11_PATH_MAX + 64];
    unsigned char mac[32];
    struct prov_bad **pb, *b;
    char *pin = NULL;
    cmk_err rc;

    /* A pin-source in an identifier is read only when the identifier is the operator's own
     * (an HSM-backed vault builds it from vault.json); a store's identifier is data. */
    rc = cmk_p11_load_pin(
        p->home, (p->flags & CMK_P11_PROV_OBEY_QUERY) && u->pin_file[0] ? u->pin_file : NULL, &pin,
        where, sizeof(where), eb);
    if (rc == CMK_E_KEY_DENIED && u->pin_file[0] && !(p->flags & CMK_P11_PROV_OBEY_QUERY))
        eb_append(eb, " (the key identifier's pin-source is not read: a PIN file comes only "
                      "from the operator's configuration)");
    if (rc == CMK_OK)
        rc = pin_mac(p, pin, mac, eb);
    if (rc != CMK_OK)
        goto out;
    pb = bad_find(p, module, u->token);
    if (pb && CRYPTO_memcmp((*pb)->mac, mac, sizeof(mac)) == 0) {
        rc = cmk_errbuf_set(eb, CMK_E_KEY_DENIED,
                            "%s (this PIN was rejected before and is not presented again, so "
                            "the token does not lock it: fix the PIN in %s)",
                            (*pb)->msg, where);
        goto out;
    }
    rc = cmk_p11_open(module, u->token, pin, h, eb);
    if (rc == CMK_E_KEY_DENIED) {
        eb_append(eb, " (the PIN came from %s)", where);
        b = pb ? *pb : calloc(1, sizeof(*b));
        if (b) {
            snprintf(b->module, sizeof(b->module), "%s", module);
            snprintf(b->token, sizeof(b->token), "%s", u->token);
            memcpy(b->mac, mac, sizeof(mac));
            snprintf(b->msg, sizeof(b->msg), "%s", eb ? eb->msg : "PIN rejected");
            if (!pb) {
                b->next = p->bad;
                p->bad = b;
            }
        }
    } else if (rc == CMK_OK && pb) {
        b = *pb;
        *pb = b->next;
        free(b);
    }
out:
    cmk_secfree(pin);
    cmk_cleanse(mac, sizeof(mac));
    return rc;
}

/* 1 if a and b name the same file (same path, or both resolve to one inode). Only stat()
 * is done on them: nothing is loaded. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (strcmp(a, b) == 0)
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* The module for u: the operator's ($CMKSTORE_PKCS11_MODULE, pkcs11.json). A module-path
 * in the identifier is a claim checked against it, never loaded on its own: identifiers
 * are read back from a store's files, which whoever can write the store controls, and
 * loading a library runs its code. An identifier the operator built (HSM-backed vault) is
 * obeyed. */
static cmk_err prov_module(const struct p11_prov *p, const cmk_p11_uri *u, char *module, size_t cap,
                           cmk_errbuf *eb)
{
    cmk_err rc;

    if (p->flags & CMK_P11_PROV_OBEY_QUERY)
        return cmk_p11_resolve_module(p->home, u->module_path, module, cap, eb);
    rc = cmk_p11_resolve_module(p->home, NULL, module, cap, eb);
    if (!u->module_path[0])
        return rc;
    if (rc == CMK_E_INVAL)
        return cmk_errbuf_set(
            eb, CMK_E_KEY_UNREACHABLE,
            "key identifier for PKCS#11 key \"%s\" names module %.300s, which "
            "was not loaded: a module named by a key identifier is never "
            "loaded (identifiers are stored in the store's files), only the "
            "operator's. If you trust it, name it with --pkcs11-module, $" P11_ENV_MODULE
            " or \"module\" in <home>/pkcs11.json",
            u->object, u->module_path);
    if (rc == CMK_OK && !same_file(u->module_path, module))
        rc = cmk_errbuf_set(eb, CMK_E_KEY_UNREACHABLE,
                            "key identifier for PKCS#11 key \"%s\" names module %.300s, but the "
                            "configured module is %.300s: refused, neither was loaded (a key "
                            "identifier never chooses the module). If the identifier is right, "
                            "configure that module (--pkcs11-module, $" P11_ENV_MODULE
                            " or pkcs11.json)",
                            u->object, u->module_path, module);
    return rc;
}

/* Finds or opens the handle for the URI's module and token. */
static cmk_err prov_acquire(struct p11_prov *p, const cmk_p11_uri *u, struct prov_ent **out,
                            cmk_errbuf *eb)
{
    char module[P11_PATH_MAX];
    struct prov_ent *e;
    cmk_p11 *h = NULL;
    cmk_err rc;

    *out = NULL;
    rc = prov_module(p, u, module, sizeof(module), eb);
    if (rc == CMK_E_INVAL && eb)
        /* For a store this is not bad input but a key it cannot reach from here: the
         * identifier is valid, the environment lacks the module (key-access, exit 5). */
        rc = eb->code = CMK_E_KEY_UNREACHABLE;
    if (rc != CMK_OK)
        return rc;
    pthread_mutex_lock(&p->mu);
    for (e = p->ents; e; e = e->next) {
        if (strcmp(e->module, module) == 0 && strcmp(e->token, u->token) == 0) {
            e->refs++;
            *out = e;
            goto out;
        }
    }
    rc = prov_open(p, module, u, &h, eb);
    if (rc != CMK_OK)
        goto out;
    e = calloc(1, sizeof(*e));
    if (!e) {
        cmk_p11_close(h);
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(e->module, module, sizeof(module));
    snprintf(e->token, sizeof(e->token), "%s", u->token);
    e->h = h;
    e->refs = 1;
    e->next = p->ents;
    p->ents = e;
    *out = e;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static void prov_release(struct p11_prov *p, struct prov_ent *e, cmk_err rc)
{
    struct prov_ent **pp;
    int close_it = 0;

    if (!e)
        return;
    pthread_mutex_lock(&p->mu);
    if ((rc == CMK_E_KEY_UNREACHABLE || rc == CMK_E_KEY_DENIED) && !e->dead) {
        /* The token went away, the module failed or a new login was refused: the next call
         * starts afresh (and reads the PIN again). */
        for (pp = &p->ents; *pp; pp = &(*pp)->next) {
            if (*pp == e) {
                *pp = e->next;
                break;
            }
        }
        e->dead = 1;
    }
    close_it = --e->refs == 0 && e->dead;
    pthread_mutex_unlock(&p->mu);
    if (close_it) {
        cmk_p11_close(e->h);
        free(e);
    }
}

/* Parses kid and checks an id= is a cmkstore version; version receives its hex ("" if the
 * kid is versionless). */
static cmk_err prov_parse(const char *kid, cmk_p11_uri *u, char version[CMK_P11_VERSION_LEN + 1],
                          cmk_errbuf *eb)
{
    cmk_err rc = cmk_p11_uri_parse(kid, u, eb);

    version[0] = '\0';
    if (rc != CMK_OK)
        return rc;
    if (u->has_id) {
        if (u->id_len != CMK_P11_ID_LEN || be32(u->id) == 0)
            return cmk_errbuf_set(eb, CMK_E_INVAL,
                                  "PKCS#11 key identifier for key \"%s\": id= is not a cmkstore "
                                  "key version (16 bytes: a 4-byte sequence number from 1, then "
                                  "12 random bytes)",
                                  u->object);
        cmk_hex(version, u->id, CMK_P11_ID_LEN);
    }
    return CMK_OK;
}

/* Adds the store's identity to a failure message. */
static cmk_err prov_done(cmk_err rc, const char *principal, cmk_errbuf *eb)
{
    if (rc != CMK_OK && principal && *principal)
        eb_append(eb, " [identity %s]", principal);
    return rc;
}

static int prov_handles(void *self, const char *kid)
{
    (void)self;
    return cmk_p11_is_uri(kid);
}

static cmk_err prov_describe(void *self, const char *kid, const char *principal, cmk_key_desc *out,
                             cmk_errbuf *eb)
{
    struct p11_prov *p = self;
    struct prov_ent *e = NULL;
    char version[CMK_P11_VERSION_LEN + 1];
    cmk_p11_version v;
    cmk_p11_uri u;
    unsigned algs = 0;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = prov_parse(kid, &u, version, eb);
    if (rc == CMK_OK)
        rc = prov_acquire(p, &u, &e, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_key_get(e->h, u.object, version, &v, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_wrap_algs(e->h, u.object, v.version, &algs, eb);
    if (rc != CMK_OK)
        goto out;
    out->requested_versioned = u.has_id;
    rc = cmk_p11_uri_format(&u, 0, out->versionless, sizeof(out->versionless), eb);
    if (rc != CMK_OK)
        goto out;
    u.has_id = 1;
    u.id_len = CMK_P11_ID_LEN;
    memcpy(u.id, v.id, CMK_P11_ID_LEN);
    rc = cmk_p11_uri_format(&u, 1, out->kid, sizeof(out->kid), eb);
    if (rc != CMK_OK)
        goto out;
    snprintf(out->version, sizeof(out->version), "%s", v.version);
    out->kty = CMK_KTY_RSA_HSM;
    out->bits = v.bits;
    out->enabled = 1;
    out->wrap_algs = algs;
out:
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    prov_release(p, e, rc);
    return prov_done(rc, principal, eb);
}

static cmk_err prov_need_version(const cmk_p11_uri *u, const char *version, const char *what,
                                 cmk_errbuf *eb)
{
    if (version[0])
        return CMK_OK;
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "%s with PKCS#11 key \"%s\" in token \"%s\" needs a versioned key "
                          "identifier (with id=); describe the key to get one",
                          what, u->object, u->token);
}

static cmk_err prov_wrap(void *self, const char *versioned_kid, const char *principal,
                         cmk_wrap_alg alg, const unsigned char *dek, size_t keylen,
                         unsigned char *out, size_t *outlen, cmk_errbuf *eb)
{
    struct p11_prov *p = self;
    struct prov_ent *e = NULL;
    char version[CMK_P11_VERSION_LEN + 1];
    size_t cap = CMK_WRAPPED_MAX;
    cmk_p11_uri u;
    cmk_err rc;

    rc = prov_parse(versioned_kid, &u, version, eb);
    if (rc == CMK_OK)
        rc = prov_need_version(&u, version, "wrapping a key", eb);
    if (rc == CMK_OK)
        rc = prov_acquire(p, &u, &e, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_wrap(e->h, u.object, version, alg, dek, keylen, out, &cap, eb);
    if (rc == CMK_OK)
        *outlen = cap;
    prov_release(p, e, rc);
    return prov_done(rc, principal, eb);
}

static cmk_err prov_unwrap(void *self, const char *versioned_kid, const char *principal,
                           cmk_wrap_alg alg, const unsigned char *wrapped, size_t wrappedlen,
                           unsigned char *dek, size_t *keylen, cmk_errbuf *eb)
{
    struct p11_prov *p = self;
    struct prov_ent *e = NULL;
    char version[CMK_P11_VERSION_LEN + 1];
    cmk_p11_uri u;
    cmk_err rc;

    rc = prov_parse(versioned_kid, &u, version, eb);
    if (rc == CMK_OK)
        rc = prov_need_version(&u, version, "unwrapping a key", eb);
    if (rc == CMK_OK)
        rc = prov_acquire(p, &u, &e, eb);
    if (rc == CMK_OK)
        rc = cmk_p11_unwrap(e->h, u.object, version, alg, wrapped, wrappedlen, dek, keylen, eb);
    prov_release(p, e, rc);
    return prov_done(rc, principal, eb);
}

static void prov_free(void *self)
{
    struct p11_prov *p = self;
    struct prov_ent *e, *next;

    if (!p)
        return;
    for (e = p->ents; e; e = next) {
        next = e->next;
        cmk_p11_close(e->h);
        free(e);
    }
    while (p->bad) {
        struct prov_bad *b = p->bad;
        p->bad = b->next;
        free(b);
    }
    cmk_cleanse(p->mac_key, sizeof(p->mac_key));
    pthread_mutex_destroy(&p->mu);
    free(p->home);
    free(p);
}

cmk_err cmk_pkcs11_provider_new(const char *home, unsigned flags, cmk_kek_provider **out,
                                cmk_errbuf *eb)
{
    struct p11_prov *p = NULL;
    cmk_kek_provider *kp = NULL;
    cmk_err rc = CMK_OK;

    *out = NULL;
    p = calloc(1, sizeof(*p));
    kp = calloc(1, sizeof(*kp));
    if (!p || !kp || (home && !(p->home = strdup(home)))) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory creating the PKCS#11 provider");
        goto out;
    }
    p->flags = flags;
    rc = cmk_random(p->mac_key, sizeof(p->mac_key), eb);
    if (rc != CMK_OK)
        goto out;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot create a mutex for the PKCS#11 provider");
        goto out;
    }
    kp->size = sizeof(*kp);
    kp->name = "pkcs11";
    kp->self = p;
    kp->handles = prov_handles;
    kp->describe = prov_describe;
    kp->wrap = prov_wrap;
    kp->unwrap = prov_unwrap;
    kp->release = prov_free;
    *out = kp;
    p = NULL;
    kp = NULL;
out:
    if (p) {
        free(p->home);
        free(p);
    }
    free(kp);
    return rc;
}
