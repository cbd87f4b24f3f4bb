/*
 * json.h — internal: the JSON bodies the akv provider reads from the network, parsed by pure
 * functions with every length checked: a key bundle (JSON Web Key and attributes), a
 * wrapkey/unwrapkey result, a token response (IMDS or Microsoft Entra ID) and a Key Vault
 * error body; and base64url, the encoding of JWK numbers and operation values.
 */
#ifndef CMK_AKV_JSON_H
#define CMK_AKV_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "cmkstore_kek.h"
#include "core/base/error.h"

/* Bodies larger than this are refused (a key bundle is a few KiB). */
#define CMK_AKV_BODY_MAX (256u * 1024u)

/* key_ops bits */
#define CMK_AKV_OP_WRAP   1u
#define CMK_AKV_OP_UNWRAP 2u

typedef struct cmk_akv_key {
    char kid[CMK_ID_MAX]; /* as the vault returned it */
    char version[65];     /* the kid's last path element */
    cmk_kty kty;
    unsigned bits; /* RSA modulus size (0 for other types) */
    unsigned ops;  /* CMK_AKV_OP_* found in key_ops */
    int enabled;   /* attributes.enabled (absent: 1) */
    int64_t nbf;   /* attributes.nbf, seconds since the epoch (0: absent) */
    int64_t exp;   /* attributes.exp (0: absent) */
} cmk_akv_key;

/* A key bundle {"key": {kid, kty, n, e, key_ops}, "attributes": {...}}. CMK_E_INVAL with a
 * message if it is not JSON or lacks key.kid / key.kty, or an RSA key lacks n or e. */
CMK_MUST_CHECK cmk_err cmk_akv_key_parse(const char *body, size_t len, cmk_akv_key *out,
                                         cmk_errbuf *eb);

/* A key operation result {"kid": ..., "value": base64url}: value decoded into out (cap
 * bytes), *outlen its length. CMK_E_INVAL if malformed or it does not fit. */
CMK_MUST_CHECK cmk_err cmk_akv_result_parse(const char *body, size_t len, unsigned char *out,
                                            size_t cap, size_t *outlen, cmk_errbuf *eb);

/* An access token: its text in secure memory (cmk_akv_token_clear frees it). */
typedef struct cmk_akv_token {
    char *value; /* NUL-terminated, cmk_secalloc'd; never logged */
    size_t len;
    int64_t expires_on; /* seconds since the epoch */
} cmk_akv_token;

/* A token response {access_token, expires_on (number or digit string) or expires_in,
 * token_type}: expires_in counts from now. CMK_E_INVAL if malformed, not a Bearer token,
 * or already expired at now. */
CMK_MUST_CHECK cmk_err cmk_akv_token_parse(const char *body, size_t len, int64_t now,
                                           cmk_akv_token *out, cmk_errbuf *eb);
void cmk_akv_token_clear(cmk_akv_token *t);

/* A Key Vault or Entra ID error body: {"error": {"code", "message", "innererror": {"code"}}}
 * or {"error": "code", "error_description": ...}. Best effort: fields it cannot find stay "". */
typedef struct cmk_akv_error {
    char code[64];
    char inner[64];
    char message[256]; /* control characters replaced: safe to print */
} cmk_akv_error;
void cmk_akv_error_parse(const char *body, size_t len, cmk_akv_error *out);

/* base64url without padding (padding accepted when decoding; the standard alphabet's + and /
 * too). decode: -1 if malformed or longer than cap. encode: out needs 4*ceil(n/3)+1 bytes. */
int cmk_akv_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t cap,
                          size_t *outlen);
void cmk_akv_b64url_encode(const unsigned char *in, size_t n, char *out);

#endif
