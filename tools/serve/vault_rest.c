/*
 * vault_rest.c — Key Vault REST shapes for `cmkstore vault serve` (see vault_rest.h).
 */
#include "tools/serve/vault_rest.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* "2024-05-01T12:00:00Z" (fraction ignored) -> Unix seconds; -1 if it does not parse. */
static long long iso_to_unix(const char *s)
{
    struct tm tm;
    int y, mo, d, h, mi, sec, n = 0;

    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n == 0)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return (long long)timegm(&tm);
}

static int set_time(json_t *o, const char *key, const json_t *from, const char *field)
{
    long long t = iso_to_unix(json_string_value(json_object_get(from, field)));

    return t < 0 ? 0 : json_object_set_new(o, key, json_integer(t));
}

int vault_rest_kid(const char *local_kid, const char *base, char *out, size_t cap)
{
    const char *k = local_kid ? strstr(local_kid, "/keys/") : NULL;
    int n;

    if (!k)
        return -1;
    n = snprintf(out, cap, "%s%s", base, k);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static json_t *attributes(const json_t *a)
{
    json_t *o = json_object();
    const json_t *rd = json_object_get(a, "recoverableDays");
    int bad;

    if (!o)
        return NULL;
    bad = json_object_set_new(o, "enabled",
                              json_boolean(json_is_true(json_object_get(a, "enabled"))));
    bad |= set_time(o, "created", a, "created") | set_time(o, "updated", a, "updated");
    bad |= set_time(o, "nbf", a, "notBefore") | set_time(o, "exp", a, "expires");
    if (json_is_string(json_object_get(a, "recoveryLevel")))
        bad |= json_object_set(o, "recoveryLevel", json_object_get(a, "recoveryLevel"));
    if (json_is_integer(rd))
        bad |= json_object_set(o, "recoverableDays", (json_t *)rd);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *vault_rest_key(const json_t *az, const char *base)
{
    const json_t *k = json_object_get(az, "key");
    const char *fields[] = {"kty", "n", "e", "crv", "x", "y"};
    char kid[2048];
    json_t *out = json_object(), *jwk = json_object();
    int bad = !out || !jwk;

    if (!bad &&
        vault_rest_kid(json_string_value(json_object_get(k, "kid")), base, kid, sizeof(kid)) != 0)
        bad = 1;
    if (!bad)
        bad = json_object_set_new(jwk, "kid", json_string(kid));
    for (size_t i = 0; !bad && i < sizeof(fields) / sizeof(fields[0]); i++)
        if (json_is_string(json_object_get(k, fields[i])))
            bad = json_object_set(jwk, fields[i], json_object_get(k, fields[i]));
    if (!bad && json_is_array(json_object_get(k, "keyOps")))
        bad = json_object_set(jwk, "key_ops", json_object_get(k, "keyOps"));
    if (!bad)
        bad = json_object_set_new(out, "attributes", attributes(json_object_get(az, "attributes")));
    if (!bad) {
        bad = json_object_set_new(out, "key", jwk);
        jwk = NULL;
    }
    json_decref(jwk);
    if (bad) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *vault_rest_deleted(const json_t *az, const char *base, const char *name)
{
    json_t *out = vault_rest_key(az, base);
    char rid[2048];
    int n = snprintf(rid, sizeof(rid), "%s/deletedkeys/%s", base, name);

    if (out && (n < 0 || (size_t)n >= sizeof(rid) ||
                json_object_set_new(out, "recoveryId", json_string(rid)) != 0 ||
                set_time(out, "deletedDate", az, "deletedDate") != 0 ||
                set_time(out, "scheduledPurgeDate", az, "scheduledPurgeDate") != 0)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *vault_rest_versions(const json_t *az_list, const char *base)
{
    json_t *out = json_pack("{s:[], s:n}", "value", "nextLink");
    json_t *arr = json_object_get(out, "value"), *item;
    const json_t *v;
    char kid[2048];
    size_t i;

    json_array_foreach(out ? az_list : NULL, i, v)
    {
        if (vault_rest_kid(json_string_value(json_object_get(v, "kid")), base, kid, sizeof(kid)) !=
                0 ||
            !(item = json_pack("{s:s, s:o}", "kid", kid, "attributes",
                               attributes(json_object_get(v, "attributes")))) ||
            json_array_append_new(arr, item) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *vault_rest_error(const char *code, const char *inner, const char *message)
{
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", message ? message : code);

    if (e && inner &&
        json_object_set_new(e, "innererror", json_pack("{s:s}", "code", inner)) != 0) {
        json_decref(e);
        return NULL;
    }
    return e ? json_pack("{s:o}", "error", e) : NULL;
}

vault_rest_status vault_rest_map(cmk_err rc)
{
    vault_rest_status s = {500, "InternalServerError", NULL};

    switch (rc) {
    case CMK_E_KEY_DENIED:
        s = (vault_rest_status){403, "Forbidden", "AccessDenied"};
        break;
    case CMK_E_KEY_DISABLED:
        s = (vault_rest_status){403, "Forbidden", "KeyDisabled"};
        break;
    case CMK_E_KEY_NOT_FOUND:
    case CMK_E_KEY_DELETED: /* Key Vault: a soft-deleted key is not found under /keys/ */
    case CMK_E_NOT_FOUND:
        s = (vault_rest_status){404, "KeyNotFound", NULL};
        break;
    case CMK_E_INVAL:
    case CMK_E_UNSUPPORTED:
    case CMK_E_KEY_UNSUPPORTED:
    case CMK_E_INTEGRITY:
    case CMK_E_RANGE:
        s = (vault_rest_status){400, "BadParameter", NULL};
        break;
    default:
        break;
    }
    return s;
}
