/* json.c — the JSON bodies of Key Vault, IMDS and Entra ID replies (see json.h). */
#include "kek/akv/json.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/b64url.h"
#include "core/base/secmem.h"

int cmk_akv_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t cap,
                          size_t *outlen)
{
    long r = cmk_b64url_decode(in, inlen, out, cap);

    *outlen = r < 0 ? 0 : (size_t)r;
    return r < 0 ? -1 : 0;
}

void cmk_akv_b64url_encode(const unsigned char *in, size_t n, char *out)
{
    (void)cmk_b64url_encode(in, n, out, (n + 2) / 3 * 4 + 1); /* the caller's room (json.h) */
}

static json_t *load(const char *body, size_t len, const char *what, cmk_errbuf *eb)
{
    json_error_t je;
    json_t *j;

    if (!body || len > CMK_AKV_BODY_MAX) {
        cmk_errbuf_set(eb, CMK_E_INVAL, "%s: reply body missing or too large", what);
        return NULL;
    }
    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        cmk_errbuf_set(eb, CMK_E_INVAL, "%s: reply is not a JSON object", what);
        return NULL;
    }
    return j;
}

/* An integer member that may also arrive as a string of digits ("expires_on": "1700000000"). */
static int get_int(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    int64_t n = 0;

    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 1;
    }
    s = json_string_value(v);
    if (!s || !*s || strlen(s) > 18)
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        n = n * 10 + (*s - '0');
    }
    *out = n;
    return 1;
}

static cmk_kty kty_of(const char *s)
{
    if (strcmp(s, "RSA") == 0)
        return CMK_KTY_RSA;
    if (strcmp(s, "RSA-HSM") == 0)
        return CMK_KTY_RSA_HSM;
    if (strcmp(s, "EC") == 0 || strcmp(s, "EC-HSM") == 0)
        return CMK_KTY_EC;
    if (strcmp(s, "oct") == 0 || strcmp(s, "oct-HSM") == 0)
        return CMK_KTY_OCT;
    return CMK_KTY_UNKNOWN;
}

/* The modulus size of base64url n: its bit length without leading zeros. */
static int modulus_bits(const char *n, unsigned *bits)
{
    unsigned char buf[1100];
    size_t len, i = 0;
    unsigned b;

    if (cmk_akv_b64url_decode(n, strlen(n), buf, sizeof(buf), &len) != 0)
        return -1;
    while (i < len && buf[i] == 0)
        i++;
    if (i == len)
        return -1;
    b = 8;
    for (unsigned char top = buf[i]; !(top & 0x80); top = (unsigned char)(top << 1))
        b--;
    *bits = (unsigned)((len - i - 1) * 8) + b;
    return 0;
}

cmk_err cmk_akv_key_parse(const char *body, size_t len, cmk_akv_key *out, cmk_errbuf *eb)
{
    json_t *j = load(body, len, "key bundle", eb), *key, *attr, *ops, *v;
    const char *kid, *kty, *slash;
    cmk_err rc = CMK_OK;
    size_t i;

    memset(out, 0, sizeof(*out));
    if (!j)
        return CMK_E_INVAL;
    key = json_object_get(j, "key");
    attr = json_object_get(j, "attributes");
    kid = json_string_value(json_object_get(key, "kid"));
    kty = json_string_value(json_object_get(key, "kty"));
    if (!json_is_object(key) || !kid || !kty) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key bundle without key.kid and key.kty");
        goto out;
    }
    if (strlen(kid) >= sizeof(out->kid)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key bundle: kid too long");
        goto out;
    }
    memcpy(out->kid, kid, strlen(kid) + 1);
    slash = strrchr(kid, '/');
    if (!slash || !slash[1] || strlen(slash + 1) >= sizeof(out->version)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key bundle: kid '%.200s' names no version", kid);
        goto out;
    }
    for (const char *c = slash + 1; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key bundle: kid '%.200s' has a bad version", kid);
            goto out;
        }
    memcpy(out->version, slash + 1, strlen(slash + 1) + 1);
    out->kty = kty_of(kty);
    if (out->kty == CMK_KTY_RSA || out->kty == CMK_KTY_RSA_HSM) {
        const char *n = json_string_value(json_object_get(key, "n"));
        const char *e = json_string_value(json_object_get(key, "e"));
        if (!n || !e || !*e || modulus_bits(n, &out->bits) != 0) {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                                "key bundle: RSA key '%.200s' without a valid modulus n and "
                                "exponent e",
                                kid);
            goto out;
        }
    }
    ops = json_object_get(key, "key_ops");
    json_array_foreach(ops, i, v)
    {
        const char *op = json_string_value(v);
        if (op && strcmp(op, "wrapKey") == 0)
            out->ops |= CMK_AKV_OP_WRAP;
        else if (op && strcmp(op, "unwrapKey") == 0)
            out->ops |= CMK_AKV_OP_UNWRAP;
    }
    v = json_object_get(attr, "enabled");
    out->enabled = json_is_boolean(v) ? json_is_true(v) : 1;
    if (json_is_object(attr)) {
        if (!get_int(attr, "nbf", &out->nbf))
            out->nbf = 0;
        if (!get_int(attr, "exp", &out->exp))
            out->exp = 0;
    }
out:
    json_decref(j);
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

cmk_err cmk_akv_result_parse(const char *body, size_t len, unsigned char *out, size_t cap,
                             size_t *outlen, cmk_errbuf *eb)
{
    json_t *j = load(body, len, "key operation result", eb);
    const char *v;
    cmk_err rc = CMK_OK;

    *outlen = 0;
    if (!j)
        return CMK_E_INVAL;
    v = json_string_value(json_object_get(j, "value"));
    if (!v || !*v)
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key operation result without a value");
    else if (cmk_akv_b64url_decode(v, strlen(v), out, cap, outlen) != 0 || *outlen == 0) {
        if (*outlen)
            cmk_cleanse(out, *outlen);
        *outlen = 0;
        rc = cmk_errbuf_set(eb, CMK_E_INVAL,
                            "key operation result: value is empty, not base64url or longer than "
                            "%zu bytes",
                            cap);
    }
    /* The value is a wrapped or unwrapped data key: wiped in jansson's copy before it is
     * freed (the lexer's scratch copy is not reachable from here). */
    if (v)
        cmk_cleanse((char *)v, strlen(v));
    json_decref(j);
    return rc;
}

void cmk_akv_token_clear(cmk_akv_token *t)
{
    if (!t)
        return;
    cmk_secfree(t->value);
    t->value = NULL;
    t->len = 0;
    t->expires_on = 0;
}

cmk_err cmk_akv_token_parse(const char *body, size_t len, int64_t now, cmk_akv_token *out,
                            cmk_errbuf *eb)
{
    json_t *j = load(body, len, "token response", eb);
    const char *tok, *type;
    int64_t on = 0, in = 0;
    cmk_err rc = CMK_OK;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (!j)
        return CMK_E_INVAL;
    tok = json_string_value(json_object_get(j, "access_token"));
    type = json_string_value(json_object_get(j, "token_type"));
    n = tok ? strlen(tok) : 0;
    if (n == 0 || n > 16384) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "token response without an access_token");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] <= 0x20 || tok[i] == 0x7f) {
            rc = cmk_errbuf_set(eb, CMK_E_INVAL, "token response: access_token is not a token");
            goto out;
        }
    if (type && strcasecmp(type, "Bearer") != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "token response: token_type '%.32s' is not Bearer",
                            type);
        goto out;
    }
    if (get_int(j, "expires_on", &on))
        out->expires_on = on;
    else if (get_int(j, "expires_in", &in) && in >= 0 && in < (int64_t)1 << 40)
        out->expires_on = now + in;
    else {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "token response without expires_on or expires_in");
        goto out;
    }
    if (out->expires_on <= now) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "token response: the token has already expired");
        goto out;
    }
    out->value = cmk_secalloc(n + 1);
    if (!out->value) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory keeping an access token");
        goto out;
    }
    memcpy(out->value, tok, n + 1);
    out->len = n;
out:
    if (tok)
        cmk_cleanse((char *)tok, strlen(tok)); /* jansson's copy of the token */
    json_decref(j);
    if (rc != CMK_OK)
        memset(out, 0, sizeof(*out));
    return rc;
}

static void copy_clean(char *dst, size_t cap, const char *src)
{
    size_t i = 0;

    if (!src)
        return;
    for (; src[i] && i + 1 < cap; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
    dst[i] = '\0';
}

void cmk_akv_error_parse(const char *body, size_t len, cmk_akv_error *out)
{
    json_t *j, *err;

    memset(out, 0, sizeof(*out));
    if (!body || len == 0 || len > CMK_AKV_BODY_MAX)
        return;
    j = json_loadb(body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    err = json_object_get(j, "error");
    if (json_is_object(err)) {
        json_t *inner = json_object_get(err, "innererror");
        copy_clean(out->code, sizeof(out->code), json_string_value(json_object_get(err, "code")));
        copy_clean(out->message, sizeof(out->message),
                   json_string_value(json_object_get(err, "message")));
        copy_clean(out->inner, sizeof(out->inner),
                   json_string_value(json_object_get(inner, "code")));
    } else if (json_is_string(err)) {
        /* Entra ID / IMDS: {"error": "invalid_request", "error_description": "..."} */
        copy_clean(out->code, sizeof(out->code), json_string_value(err));
        copy_clean(out->message, sizeof(out->message),
                   json_string_value(json_object_get(j, "error_description")));
    }
    json_decref(j);
}
