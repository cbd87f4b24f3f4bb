/* uri.c — RFC 7512 pkcs11: key identifiers: parse, format, build (see pkcs11.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/secmem.h"
#include "kek/pkcs11/pkcs11.h"

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
            char hx[3] = {i + 2 < n ? s[i + 1] : '\0', i + 2 < n ? s[i + 2] : '\0', '\0'};

            if (cmk_unhex(&c, 1, hx) != 0)
                return cmk_errbuf_set(eb, CMK_E_INVAL,
                                      "bad PKCS#11 URI: bad percent-escape in attribute "
                                      "\"%.32s\" at offset %zu (use %%XX with two hex digits)",
                                      attr, off + i);
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
                          "pin-source=file:<path>, $" CMK_P11_ENV_PIN_FILE " or pinFile in "
                          "<home>/pkcs11.json");
}

struct uri_seen {
    int token, object, id, type, module, pin;
};

/* One attribute of a URI: its name and its raw value v[0..vl), at offset voff. */
typedef struct uri_attr {
    char name[33];
    const char *v;
    size_t vl, voff;
    int query; /* in the query part (other characters are legal raw) */
} uri_attr;

/* Decodes a text attribute that may appear once into out. */
static cmk_err uri_take_str(const uri_attr *a, int *seen, char *out, size_t cap, cmk_errbuf *eb)
{
    if ((*seen)++)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 URI: attribute \"%.32s\" appears more than once",
                              a->name);
    return uri_decode_str(a->v, a->vl, a->query, a->name, a->voff, out, cap, eb);
}

/* An attribute cmkstore does not use: its syntax is checked, its value dropped. */
static cmk_err uri_check_ignored(const uri_attr *a, cmk_errbuf *eb)
{
    unsigned char scratch[CMK_ID_MAX];
    size_t dl;

    return uri_decode(a->v, a->vl, a->query, a->name, a->voff, scratch, sizeof(scratch), &dl, eb);
}

static cmk_err uri_type(const uri_attr *a, struct uri_seen *seen, cmk_errbuf *eb)
{
    char type[16];
    cmk_err rc = uri_take_str(a, &seen->type, type, sizeof(type), eb);

    if (rc != CMK_OK || strcmp(type, "private") == 0)
        return rc;
    if (strcmp(type, "public") == 0 || strcmp(type, "cert") == 0 ||
        strcmp(type, "secret-key") == 0 || strcmp(type, "data") == 0)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "PKCS#11 URI: type=%s is not supported: a key-encryption key "
                              "is an RSA private key (type=private, or leave type out)",
                              type);
    return cmk_errbuf_set(eb, CMK_E_INVAL,
                          "bad PKCS#11 URI: unknown type (RFC 7512 types: public, private, "
                          "cert, secret-key, data; a key-encryption key is type=private)");
}

static cmk_err uri_path_attr(const uri_attr *a, cmk_p11_uri *u, struct uri_seen *seen,
                             cmk_errbuf *eb)
{
    cmk_err rc;

    if (strcmp(a->name, "token") == 0)
        return uri_take_str(a, &seen->token, u->token, sizeof(u->token), eb);
    if (strcmp(a->name, "object") == 0)
        return uri_take_str(a, &seen->object, u->object, sizeof(u->object), eb);
    if (strcmp(a->name, "type") == 0)
        return uri_type(a, seen, eb);
    if (strcmp(a->name, "id") != 0)
        /* serial, model, manufacturer, slot-*, library-*, vendor attributes. */
        return uri_check_ignored(a, eb);
    if (seen->id++)
        return cmk_errbuf_set(eb, CMK_E_INVAL,
                              "bad PKCS#11 URI: attribute \"id\" appears more than once");
    rc = uri_decode(a->v, a->vl, 0, a->name, a->voff, u->id, sizeof(u->id), &u->id_len, eb);
    if (rc == CMK_OK && u->id_len == 0)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "bad PKCS#11 URI: attribute \"id\" is empty");
    u->has_id = rc == CMK_OK;
    return rc;
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

static cmk_err uri_query_attr(const uri_attr *a, cmk_p11_uri *u, struct uri_seen *seen,
                              cmk_errbuf *eb)
{
    char src[CMK_ID_MAX];
    cmk_err rc;

    if (strcmp(a->name, "module-path") == 0)
        return uri_take_str(a, &seen->module, u->module_path, sizeof(u->module_path), eb);
    if (strcmp(a->name, "pin-source") != 0)
        /* module-name and vendor query attributes (module-path or the configuration names
         * the module). */
        return uri_check_ignored(a, eb);
    rc = uri_take_str(a, &seen->pin, src, sizeof(src), eb);
    return rc == CMK_OK ? uri_pin_source(src, u, eb) : rc;
}

/* Parses the attributes of s[0..n) (the path or the query part, at offset off of the URI),
 * separated by sep. */
static cmk_err uri_attrs(const char *s, size_t n, size_t off, int query, cmk_p11_uri *u,
                         struct uri_seen *seen, cmk_errbuf *eb)
{
    const char *end = s + n, *e;
    cmk_err rc = CMK_OK;

    for (const char *p = s; rc == CMK_OK; p = e + 1) {
        uri_attr a = {.query = query};

        e = memchr(p, query ? '&' : ';', (size_t)(end - p));
        if (!e)
            e = end;
        rc = uri_attr_split(p, (size_t)(e - p), off + (size_t)(p - s), a.name, &a.v, &a.vl, eb);
        if (rc != CMK_OK)
            break;
        a.voff = off + (size_t)(a.v - s);
        if (strcmp(a.name, "pin-value") == 0)
            rc = uri_refuse_pin_value(eb);
        else
            rc = query ? uri_query_attr(&a, u, seen, eb) : uri_path_attr(&a, u, seen, eb);
        if (e == end)
            break;
    }
    return rc;
}

int cmk_p11_is_uri(const char *kid)
{
    return kid && strncasecmp(kid, CMK_P11_SCHEME, sizeof(CMK_P11_SCHEME) - 1) == 0;
}

cmk_err cmk_p11_uri_parse(const char *uri, cmk_p11_uri *out, cmk_errbuf *eb)
{
    struct uri_seen seen = {0};
    const char *path, *q, *end, *pend;
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
    pend = q ? q : end;
    if (pend > path)
        rc = uri_attrs(path, (size_t)(pend - path), (size_t)(path - uri), 0, out, &seen, eb);
    /* Query: attributes separated by '&'; kept verbatim for canonical identifiers. */
    if (rc == CMK_OK && q && q + 1 < end) {
        rc = uri_attrs(q + 1, (size_t)(end - q - 1), (size_t)(q + 1 - uri), 1, out, &seen, eb);
        memcpy(out->query, q + 1, (size_t)(end - q - 1));
        out->query[end - q - 1] = '\0';
    }
    if (rc != CMK_OK)
        goto out;
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

/* Appends n bytes to out, percent-encoding every byte raw() does not accept (all of them
 * when raw is NULL, as for id=). -1 if it does not fit. */
static int uri_put(char *out, size_t cap, size_t *pos, const unsigned char *s, size_t n,
                   int (*raw)(int))
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        if (raw && raw(s[i])) {
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
        uri_put(out, cap, &pos, (const unsigned char *)u->token, strlen(u->token), is_path_raw) ||
        uri_put_str(out, cap, &pos, ";object=") ||
        uri_put(out, cap, &pos, (const unsigned char *)u->object, strlen(u->object), is_path_raw) ||
        (versioned && u->has_id &&
         (uri_put_str(out, cap, &pos, ";id=") ||
          uri_put(out, cap, &pos, u->id, u->id_len, NULL))) ||
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
    return uri_put(out, cap, pos, (const unsigned char *)s, strlen(s), is_query_raw);
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
