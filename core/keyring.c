/* keyring.c — wrapped DEKs and the encryption state, one atomic JSON file. */
#include "core/keyring.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/base/jsonfile.h"
#include "core/seal.h"
#include "core/base/secmem.h"

/* ---- base64 (standard alphabet, padded) through OpenSSL's block codec ---- */

static char *b64_encode(const uint8_t *in, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return out;
}

/* Decodes into out (capacity cap); -1 on bad input or overflow. */
static int b64_decode(const char *in, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t n = strlen(in), pad = 0;
    uint8_t tmp[CMK_WRAPPED_MAX + 4];
    int r;

    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(tmp))
        return -1;
    if (in[n - 1] == '=')
        pad++;
    if (in[n - 2] == '=')
        pad++;
    r = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (r < 0 || (size_t)r < pad || (size_t)r - pad > cap)
        return -1;
    *outlen = (size_t)r - pad;
    memcpy(out, tmp, *outlen);
    return 0;
}

/* ---- parse / serialise ---- */

static cmk_err copy_str(char *dst, size_t cap, const json_t *obj, const char *key, int required,
                        cmk_errbuf *eb)
{
    const char *v = cmk_json_str(obj, key);

    dst[0] = '\0';
    if (!v) {
        if (required)
            return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: missing \"%s\"", key);
        return CMK_OK;
    }
    if (strlen(v) >= cap)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: \"%s\" too long", key);
    memcpy(dst, v, strlen(v) + 1);
    return CMK_OK;
}

void cmk_keyring_free(cmk_keyring *kr)
{
    if (!kr)
        return;
    free(kr->deks);
    memset(kr, 0, sizeof(*kr));
}

static cmk_err parse_dek(const json_t *j, cmk_kr_dek *d, cmk_errbuf *eb)
{
    const char *alg, *wrapped, *created;
    json_int_t id;
    cmk_err rc;

    if (!json_is_object(j))
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: a DEK entry is not an object");
    id = cmk_json_int(j, "id", 0);
    if (id <= 0 || id > UINT32_MAX)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: bad DEK id");
    d->id = (uint32_t)id;
    created = cmk_json_str(j, "created");
    d->created = created ? (int64_t)cmk_parse_iso8601(created) : -1;
    if (d->created < 0)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: DEK %u has a bad creation time", d->id);
    alg = cmk_json_str(j, "wrapAlgorithm");
    d->alg = alg ? cmk_wrap_alg_from_name(alg) : CMK_WRAP_NONE;
    if (d->alg == CMK_WRAP_NONE)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: DEK %u has an unknown wrap algorithm",
                              d->id);
    rc = copy_str(d->kid, sizeof(d->kid), j, "kid", 1, eb);
    if (rc != CMK_OK)
        return rc;
    wrapped = cmk_json_str(j, "wrappedKey");
    if (!wrapped || b64_decode(wrapped, d->wrapped, sizeof(d->wrapped), &d->wrapped_len) != 0 ||
        d->wrapped_len < 64)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: DEK %u has a bad wrapped key", d->id);
    return CMK_OK;
}

cmk_err cmk_keyring_parse(const char *text, size_t len, cmk_keyring *out, cmk_errbuf *eb)
{
    json_t *j = NULL, *deks, *ident;
    const char *ts;
    json_int_t cur;
    cmk_err rc;

    memset(out, 0, sizeof(*out));
    rc = cmk_json_parse(text, len, "keyring", &j, eb);
    if (rc != CMK_OK)
        return rc;
    if (cmk_json_int(j, "format", 0) != CMK_KEYRING_FORMAT) {
        rc = cmk_errbuf_set(eb, CMK_E_UNSUPPORTED, "keyring format %lld is not supported",
                            (long long)cmk_json_int(j, "format", 0));
        goto out;
    }
    out->cmk = cmk_json_bool(j, "customerManagedKey", -1);
    out->rotation_enabled = cmk_json_bool(j, "keyRotationEnabled", -1);
    if (out->cmk < 0 || out->rotation_enabled < 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: missing encryption settings");
        goto out;
    }
    if ((rc = copy_str(out->key_identifier, sizeof(out->key_identifier), j, "keyIdentifier", 1,
                       eb)) != CMK_OK ||
        (rc = copy_str(out->versioned_kid, sizeof(out->versioned_kid), j, "versionedKeyIdentifier",
                       1, eb)) != CMK_OK)
        goto out;
    ts = cmk_json_str(j, "lastKeyRotationTimestamp");
    out->last_rotation = ts ? (int64_t)cmk_parse_iso8601(ts) : 0;
    if (out->last_rotation < 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: bad lastKeyRotationTimestamp");
        goto out;
    }
    ident = json_object_get(j, "identity");
    if (!json_is_object(ident)) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: missing identity");
        goto out;
    }
    if ((rc = copy_str(out->identity.kind, sizeof(out->identity.kind), ident, "type", 1, eb)) !=
            CMK_OK ||
        (rc = copy_str(out->identity.id, sizeof(out->identity.id), ident, "id", 1, eb)) != CMK_OK ||
        (rc = copy_str(out->identity.principal, sizeof(out->identity.principal), ident,
                       "principalId", 1, eb)) != CMK_OK ||
        (rc = copy_str(out->identity.client, sizeof(out->identity.client), ident, "clientId", 0,
                       eb)) != CMK_OK)
        goto out;
    deks = json_object_get(j, "deks");
    if (!json_is_array(deks) || json_array_size(deks) == 0 ||
        json_array_size(deks) > CMK_KEYRING_MAX_DEKS) {
        rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: missing or bad DEK list");
        goto out;
    }
    out->ndeks = json_array_size(deks);
    out->deks = calloc(out->ndeks, sizeof(*out->deks));
    if (!out->deks) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keyring)");
        goto out;
    }
    for (size_t i = 0; i < out->ndeks; i++) {
        rc = parse_dek(json_array_get(deks, i), &out->deks[i], eb);
        if (rc != CMK_OK)
            goto out;
        for (size_t k = 0; k < i; k++) {
            if (out->deks[k].id == out->deks[i].id) {
                rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: duplicate DEK id %u",
                                    out->deks[i].id);
                goto out;
            }
        }
    }
    cur = cmk_json_int(j, "currentDek", 0);
    out->current_dek = cur > 0 && cur <= UINT32_MAX ? (uint32_t)cur : 0;
    rc = cmk_errbuf_set(eb, CMK_E_CORRUPT, "keyring: current DEK %lld is not in the keyring",
                        (long long)cur);
    for (size_t i = 0; i < out->ndeks; i++)
        if (out->deks[i].id == out->current_dek)
            rc = CMK_OK;
    if (rc == CMK_OK)
        cmk_errbuf_clear(eb);
out:
    json_decref(j);
    if (rc != CMK_OK)
        cmk_keyring_free(out);
    return rc;
}

/* Parses the text read with rc (freed here) into *out, cleared first. */
static cmk_err parse_read(cmk_err rc, char *text, size_t len, cmk_keyring *out, cmk_errbuf *eb)
{
    memset(out, 0, sizeof(*out));
    if (rc == CMK_OK)
        rc = cmk_keyring_parse(text, len, out, eb);
    free(text);
    return rc;
}

cmk_err cmk_keyring_read(cmk_backend *bk, cmk_keyring *out, cmk_rec_ver *ver, cmk_errbuf *eb)
{
    void *text = NULL;
    size_t len = 0;
    cmk_err rc = cmk_bk_rec_get(bk, CMK_KEYRING_FILE, CMK_KEYRING_MAX, &text, &len, ver, eb);

    return parse_read(rc, text, len, out, eb);
}

cmk_err cmk_keyring_load(int dirfd, const char *dir, cmk_keyring *out, cmk_errbuf *eb)
{
    char *text = NULL;
    size_t len = 0;
    cmk_err rc = cmk_read_file_at(dirfd, dir, CMK_KEYRING_FILE, CMK_KEYRING_MAX, &text, &len, eb);

    return parse_read(rc, text, len, out, eb);
}

json_t *cmk_keyring_to_json(const cmk_keyring *kr)
{
    json_t *j = json_object(), *deks = json_array(), *ident = json_object();
    char ts[32];

    if (!j || !deks || !ident)
        goto fail;
    json_object_set_new(j, "format", json_integer(CMK_KEYRING_FORMAT));
    json_object_set_new(j, "customerManagedKey", json_boolean(kr->cmk));
    json_object_set_new(j, "keyIdentifier", json_string(kr->key_identifier));
    json_object_set_new(j, "versionedKeyIdentifier", json_string(kr->versioned_kid));
    json_object_set_new(j, "keyRotationEnabled", json_boolean(kr->rotation_enabled));
    if (kr->last_rotation > 0) {
        cmk_iso8601((time_t)kr->last_rotation, ts);
        json_object_set_new(j, "lastKeyRotationTimestamp", json_string(ts));
    } else {
        json_object_set_new(j, "lastKeyRotationTimestamp", json_null());
    }
    json_object_set_new(ident, "type", json_string(kr->identity.kind));
    json_object_set_new(ident, "id", json_string(kr->identity.id));
    json_object_set_new(ident, "principalId", json_string(kr->identity.principal));
    if (kr->identity.client[0])
        json_object_set_new(ident, "clientId", json_string(kr->identity.client));
    json_object_set_new(j, "identity", ident);
    ident = NULL;
    json_object_set_new(j, "currentDek", json_integer(kr->current_dek));
    for (size_t i = 0; i < kr->ndeks; i++) {
        const cmk_kr_dek *d = &kr->deks[i];
        json_t *e = json_object();
        char *b64 = b64_encode(d->wrapped, d->wrapped_len);
        if (!e || !b64) {
            json_decref(e);
            free(b64);
            goto fail;
        }
        cmk_iso8601((time_t)d->created, ts);
        json_object_set_new(e, "id", json_integer(d->id));
        json_object_set_new(e, "created", json_string(ts));
        json_object_set_new(e, "wrapAlgorithm", json_string(cmk_wrap_alg_name(d->alg)));
        json_object_set_new(e, "kid", json_string(d->kid));
        json_object_set_new(e, "wrappedKey", json_string(b64));
        free(b64);
        json_array_append_new(deks, e);
    }
    json_object_set_new(j, "deks", deks);
    return j;
fail:
    json_decref(j);
    json_decref(deks);
    json_decref(ident);
    return NULL;
}

cmk_err cmk_keyring_write(cmk_backend *bk, const cmk_keyring *kr, const cmk_rec_ver *expect,
                          cmk_rec_ver *newver, cmk_errbuf *eb)
{
    json_t *j = cmk_keyring_to_json(kr);
    size_t n = 0;
    /* The bytes cmk_json_save_at has always written: pretty, sorted keys, a final newline. */
    char *text = j ? cmk_json_dump_line(j, 1, &n) : NULL;
    cmk_err rc = text ? cmk_bk_rec_put(bk, CMK_KEYRING_FILE, text, n, expect, newver, eb)
                      : cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keyring)");

    free(text);
    json_decref(j);
    return rc;
}

cmk_err cmk_keyring_save(int dirfd, const char *dir, const cmk_keyring *kr, cmk_errbuf *eb)
{
    json_t *j = cmk_keyring_to_json(kr);
    cmk_err rc;

    if (!j)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keyring)");
    rc = cmk_json_save_at(dirfd, dir, CMK_KEYRING_FILE, j, 0600, eb);
    json_decref(j);
    return rc;
}

cmk_err cmk_keyring_copy(cmk_keyring *dst, const cmk_keyring *src, cmk_errbuf *eb)
{
    *dst = *src;
    dst->deks = NULL;
    if (src->ndeks) {
        dst->deks = malloc(src->ndeks * sizeof(*dst->deks));
        if (!dst->deks) {
            memset(dst, 0, sizeof(*dst));
            return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keyring)");
        }
        memcpy(dst->deks, src->deks, src->ndeks * sizeof(*dst->deks));
    }
    return CMK_OK;
}

/* ---- unwrapped set ---- */

void cmk_deks_free(cmk_deks *d)
{
    if (!d)
        return;
    cmk_secfree(d->keys);
    free(d->ids);
    memset(d, 0, sizeof(*d));
}

const uint8_t *cmk_deks_find(const cmk_deks *d, uint32_t id)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->ids[i] == id)
            return d->keys + i * CMK_DEK_LEN;
    return NULL;
}

/* Grows the set by one slot (secret memory is reallocated by copy + cleanse). */
static cmk_err deks_grow(cmk_deks *d, cmk_errbuf *eb)
{
    uint8_t *keys = cmk_secalloc((d->n + 1) * CMK_DEK_LEN);
    uint32_t *ids = realloc(d->ids, (d->n + 1) * sizeof(*ids));

    if (!keys || !ids) {
        cmk_secfree(keys);
        if (ids)
            d->ids = ids;
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (DEKs)");
    }
    d->ids = ids;
    if (d->n)
        memcpy(keys, d->keys, d->n * CMK_DEK_LEN);
    cmk_secfree(d->keys);
    d->keys = keys;
    return CMK_OK;
}

cmk_err cmk_keyring_unwrap_all(const cmk_keyring *kr, cmk_kek *kek, cmk_deks *out, cmk_errbuf *eb)
{
    cmk_err rc = CMK_OK;

    memset(out, 0, sizeof(*out));
    out->keys = cmk_secalloc(kr->ndeks * CMK_DEK_LEN);
    out->ids = calloc(kr->ndeks, sizeof(*out->ids));
    if (!out->keys || !out->ids) {
        rc = cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (DEKs)");
        goto out;
    }
    for (size_t i = 0; i < kr->ndeks; i++) {
        const cmk_kr_dek *d = &kr->deks[i];
        size_t klen = CMK_DEK_LEN;
        rc = cmk_kek_unwrap(kek, d->kid, kr->identity.principal, d->alg, d->wrapped, d->wrapped_len,
                            out->keys + i * CMK_DEK_LEN, &klen, eb);
        if (rc != CMK_OK)
            goto out;
        if (klen != CMK_DEK_LEN) {
            rc = cmk_errbuf_set(eb, CMK_E_INTEGRITY,
                                "DEK %u unwrapped to %zu bytes, expected %d: the keyring "
                                "entry is not a cmkstore data key",
                                d->id, klen, CMK_DEK_LEN);
            goto out;
        }
        out->ids[i] = d->id;
        out->n = i + 1;
    }
out:
    if (rc != CMK_OK)
        cmk_deks_free(out);
    return rc;
}

cmk_err cmk_keyring_wrap_checked(cmk_kek *kek, const char *vkid, const char *principal,
                                 cmk_wrap_alg alg, const uint8_t *dek, cmk_kr_dek *out,
                                 cmk_errbuf *eb)
{
    uint8_t *back = cmk_secalloc(CMK_DEK_LEN + 32);
    size_t blen = CMK_DEK_LEN + 32;
    cmk_err rc;

    if (!back)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    if (strlen(vkid) >= sizeof(out->kid)) {
        rc = cmk_errbuf_set(eb, CMK_E_INVAL, "key identifier too long");
        goto out;
    }
    out->wrapped_len = sizeof(out->wrapped);
    rc = cmk_kek_wrap(kek, vkid, principal, alg, dek, CMK_DEK_LEN, out->wrapped, &out->wrapped_len,
                      eb);
    if (rc != CMK_OK)
        goto out;
    rc = cmk_kek_unwrap(kek, vkid, principal, alg, out->wrapped, out->wrapped_len, back, &blen, eb);
    if (rc != CMK_OK)
        goto out;
    if (blen != CMK_DEK_LEN || CRYPTO_memcmp(back, dek, CMK_DEK_LEN) != 0) {
        rc = cmk_errbuf_set(eb, CMK_E_CRYPTO,
                            "test unwrap with %s returned a different key: refusing to use "
                            "this key version",
                            vkid);
        goto out;
    }
    out->alg = alg;
    memcpy(out->kid, vkid, strlen(vkid) + 1);
out:
    cmk_secfree(back);
    return rc;
}

cmk_err cmk_keyring_new_dek(const cmk_keyring *kr, cmk_kek *kek, cmk_wrap_alg alg,
                            cmk_kr_dek *entry, uint8_t *dek_out, cmk_errbuf *eb)
{
    uint32_t id = 0;
    cmk_err rc;

    if (kr->ndeks >= CMK_KEYRING_MAX_DEKS)
        return cmk_errbuf_set(eb, CMK_E_REFUSED, "the keyring already holds %d DEKs",
                              CMK_KEYRING_MAX_DEKS);
    for (size_t i = 0; i < kr->ndeks; i++)
        if (kr->deks[i].id > id)
            id = kr->deks[i].id;
    memset(entry, 0, sizeof(*entry));
    entry->id = id + 1;
    entry->created = cmk_now();
    /* By default a new DEK uses the algorithm the keyring already uses with this key. */
    if (alg == CMK_WRAP_NONE)
        alg = kr->ndeks ? kr->deks[0].alg : CMK_WRAP_RSA_OAEP_256;
    rc = cmk_random(dek_out, CMK_DEK_LEN, eb);
    if (rc != CMK_OK)
        return rc;
    return cmk_keyring_wrap_checked(kek, kr->versioned_kid, kr->identity.principal, alg, dek_out,
                                    entry, eb);
}

cmk_err cmk_keyring_append(cmk_keyring *kr, const cmk_kr_dek *entry, cmk_errbuf *eb)
{
    cmk_kr_dek *grown = realloc(kr->deks, (kr->ndeks + 1) * sizeof(*grown));

    if (!grown)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (keyring)");
    kr->deks = grown;
    kr->deks[kr->ndeks++] = *entry;
    kr->current_dek = entry->id;
    return CMK_OK;
}

cmk_err cmk_deks_add(cmk_deks *d, uint32_t id, const uint8_t *key, cmk_errbuf *eb)
{
    cmk_err rc = deks_grow(d, eb);

    if (rc != CMK_OK)
        return rc;
    memcpy(d->keys + d->n * CMK_DEK_LEN, key, CMK_DEK_LEN);
    d->ids[d->n++] = id;
    return CMK_OK;
}

cmk_err cmk_deks_copy(cmk_deks *dst, const cmk_deks *src, cmk_errbuf *eb)
{
    memset(dst, 0, sizeof(*dst));
    for (size_t i = 0; i < src->n; i++) {
        cmk_err rc = cmk_deks_add(dst, src->ids[i], src->keys + i * CMK_DEK_LEN, eb);
        if (rc != CMK_OK) {
            cmk_deks_free(dst);
            return rc;
        }
    }
    return CMK_OK;
}

cmk_err cmk_keyring_add_dek(cmk_keyring *kr, cmk_deks *deks, cmk_kek *kek, cmk_wrap_alg alg,
                            cmk_errbuf *eb)
{
    uint8_t *dek = cmk_secalloc(CMK_DEK_LEN);
    cmk_kr_dek nd;
    cmk_err rc;

    if (!dek)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory");
    rc = cmk_keyring_new_dek(kr, kek, alg, &nd, dek, eb);
    if (rc == CMK_OK)
        rc = cmk_deks_add(deks, nd.id, dek, eb);
    if (rc == CMK_OK) {
        rc = cmk_keyring_append(kr, &nd, eb);
        if (rc != CMK_OK)
            deks->n--; /* keep the set consistent with the keyring */
    }
    cmk_secfree(dek);
    return rc;
}
