#!/usr/bin/env bash
# test_vault_serve.sh — `cmkstore vault serve` over real HTTPS with curl and openssl: the
# self-signed pair (fingerprint, key mode, TLS 1.2+ only), the 401 challenge, the token
# endpoint (Metadata header, identity selection, client addresses), getKey versioned,
# versionless, with a trailing slash and api%2Dversion, the version list, wrap/unwrap
# (RSA-OAEP-256 and RSA-OAEP) checked against the vault's private key with openssl,
# policies (403 AccessDenied after delete-policy, back after set-policy), a disabled key
# (403 KeyDisabled), a soft-deleted key (404 KeyNotFound, /deletedkeys), expired and forged
# tokens (401), the test hooks (429 Retry-After: 0; tokens expired on demand), the audit log
# under the principal, no token
# in the log, usage errors and --help.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vault_serve_lib.sh"

setup_cmk sv get list wrapKey unwrapKey
VER=${KID##*/}
cmk identity create --name otherid >"$T/other.json"
OTHER_CLIENT=$(jq -r .clientId "$T/other.json")
TENANT=$(jq -r .tenantId "$T/svid.json")

# ---- usage and start-up ------------------------------------------------------------------
expect_ok cmk vault serve --help
expect_true "--help documents every option" \
    bash -c "for o in name listen tls-cert tls-key tls-san token-allow default-identity \
             token-lifetime throttle test-hooks quiet; do grep -q -- \"--\$o\" '$OUT' || exit 1; done"
expect_exit 3 cmk vault serve --name novault --listen 127.0.0.1:0
expect_err_match 'hint: .*vault create --name novault' "a missing vault: the hint names vault create"
expect_exit 2 cmk vault serve --name svvault --listen nonsense
expect_exit 2 cmk vault serve --name svvault --listen 127.0.0.1:0 --token-lifetime 0
expect_exit 2 cmk vault serve --name svvault --listen 127.0.0.1:0 --token-allow 300.1.1.1
expect_exit 2 cmk vault serve --name svvault --listen 127.0.0.1:0 --tls-cert /dev/null
expect_err_match 'both or neither' "a certificate without its key is refused"
expect_exit 3 cmk vault serve --name svvault --listen 127.0.0.1:0 --default-identity nobody

start_vault v1 svvault --test-hooks --default-identity svid
expect_true "the certificate was generated into the home" test -f "$CMKSTORE_HOME/tls/vault-serve.crt"
expect_eq "$(stat -c %a "$CMKSTORE_HOME/tls/vault-serve.key")" 600 "the TLS key is 0600"
expect_eq "$(stat -c %a "$CMKSTORE_HOME/vault-serve/token.key")" 600 "the token secret is 0600"
FP=$(openssl x509 -in "$VCA" -noout -fingerprint -sha256 | sed 's/.*=//')
expect_true "the printed fingerprint is the certificate's SHA-256" grep -q "fingerprint $FP" "$VSRV_OUT"
expect_true "(self-signed, generated now) is said" grep -q 'generated now' "$VSRV_OUT"
expect_eq "$(vcurl "$T/r" --tls-max 1.1 "$VURL/keys/svkey?api-version=7.4")" 000 "TLS 1.1 is refused"
expect_eq "$(curl -sS -o /dev/null -w '%{http_code}' "$VURL/keys/svkey?api-version=7.4" 2>/dev/null || true)" \
    000 "a client that does not trust the certificate fails"

# ---- the challenge ------------------------------------------------------------------------
expect_eq "$(vcurl "$T/r" "$VURL/keys/svkey/?api%2Dversion=2025-07-01")" 401 "no token: 401"
expect_eq "$(vhdr "$T/r.h" WWW-Authenticate)" \
    "Bearer authorization=\"https://login.microsoftonline.com/$TENANT\", resource=\"https://vault.azure.net\"" \
    "the challenge names the home's tenant and Key Vault's resource"
expect_json '.error.code == "Unauthorized"' "401 body in Key Vault's shape" "$T/r"

# ---- the token endpoint -------------------------------------------------------------------
TOKURL="$VURL/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
expect_eq "$(vcurl "$T/t" "$TOKURL&client_id=$CLIENT_ID")" 400 "no Metadata header: 400"
expect_json '.error == "invalid_request"' "IMDS error shape" "$T/t"
expect_eq "$(vcurl "$T/t" -H 'Metadata: true' "$TOKURL&client_id=00000000-0000-0000-0000-000000000000")" \
    400 "an unknown client_id: 400"
expect_eq "$(vcurl "$T/t" -H 'Metadata: true' "$TOKURL&client_id=$CLIENT_ID")" 200 "a token for the identity"
expect_json '.token_type == "Bearer" and .resource == "https://vault.azure.net" and
             (.expires_on | tonumber) > now and .client_id == "'"$CLIENT_ID"'"' \
    "token answer: Bearer, resource, expires_on, client_id" "$T/t"
TOK=$(jq -r .access_token "$T/t")
expect_eq "$(vcurl "$T/t" -H 'Metadata: true' "$TOKURL")" 200 "no client_id: the default identity"
expect_json '.client_id == "'"$CLIENT_ID"'"' "the default identity's token" "$T/t"
OTOK=$(vtoken "$OTHER_CLIENT")
expect_true "a token for another identity" test -n "$OTOK"

# ---- reading keys -------------------------------------------------------------------------
AUTH=(-H "Authorization: Bearer $TOK")
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" "$VURL/keys/svkey/?api%2Dversion=2025-07-01")" 200 \
    "versionless with a trailing slash and api%2Dversion: 200"
expect_json '.key.kid == "'"$VURL/keys/svkey/$VER"'" and .key.kty == "RSA" and
             (.key.key_ops | index("wrapKey")) and (.key.n | length) > 300 and .key.e == "AQAB" and
             .attributes.enabled == true and (.attributes.created | type) == "number"' \
    "the key bundle: kid on this server, JWK, attributes" "$T/k"
expect_eq "$(vcurl "$T/k2" "${AUTH[@]}" "$VURL/keys/svkey/$VER?api-version=7.4")" 200 "versioned: 200"
expect_true "versioned and versionless are the same key" \
    test "$(jq -c .key "$T/k")" = "$(jq -c .key "$T/k2")"
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" "$VURL/keys/svkey")" 400 "no api-version: 400"
expect_json '.error.code == "BadParameter"' "BadParameter" "$T/k"
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" "$VURL/keys/nokey?api-version=7.4")" 404 "unknown key: 404"
expect_json '.error.code == "KeyNotFound"' "KeyNotFound" "$T/k"
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" "$VURL/keys/svkey/0123?api-version=7.4")" 400 "bad version: 400"
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" -X DELETE "$VURL/keys/svkey?api-version=7.4")" 405 "DELETE: 405"
cmk vault key create --vault-name svvault --name svkey >"$T/k2.json"
VER2=$(jq -r .key.kid "$T/k2.json")
VER2=${VER2##*/}
expect_eq "$(vcurl "$T/k" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 200 "after a new version"
expect_json '.key.kid | endswith("'"$VER2"'")' "versionless follows the latest version" "$T/k"
expect_eq "$(vcurl "$T/l" "${AUTH[@]}" "$VURL/keys/svkey/versions?api-version=7.4")" 200 "versions: 200"
expect_json '[.value[].kid] | sort == (["'"$VURL/keys/svkey/$VER"'", "'"$VURL/keys/svkey/$VER2"'"] | sort)' \
    "both versions listed" "$T/l"

# ---- wrap and unwrap, against the vault's private key -------------------------------------
PEM="$CMKSTORE_HOME/vaults/svvault/keys/svkey/$VER.pem"
head -c 32 /dev/urandom >"$T/dek"
DEKB64=$(basenc --base64url -w0 "$T/dek" | tr -d '=')
for alg in RSA-OAEP-256 RSA-OAEP; do
    md=sha256
    [ "$alg" = RSA-OAEP ] && md=sha1
    expect_eq "$(vcurl "$T/w" "${AUTH[@]}" -H 'Content-Type: application/json' \
        -d "{\"alg\":\"$alg\",\"value\":\"$DEKB64\"}" "$VURL/keys/svkey/$VER/wrapkey?api-version=7.4")" \
        200 "wrapkey $alg: 200"
    expect_json '.kid == "'"$VURL/keys/svkey/$VER"'"' "wrapkey answers the versioned kid" "$T/w"
    jq -r .value "$T/w" | tr '_-' '/+' | sed 's/$/==/' | base64 -d 2>/dev/null >"$T/wrapped.bin" || true
    openssl pkeyutl -decrypt -inkey "$PEM" -pkeyopt rsa_padding_mode:oaep \
        -pkeyopt rsa_oaep_md:$md -pkeyopt rsa_mgf1_md:$md -in "$T/wrapped.bin" -out "$T/dek.out" 2>/dev/null || true
    expect_true "$alg: openssl undoes the vault's wrap with the private key" cmp -s "$T/dek" "$T/dek.out"
    openssl pkeyutl -encrypt -inkey "$PEM" -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:$md \
        -pkeyopt rsa_mgf1_md:$md -in "$T/dek" -out "$T/ow.bin"
    OW=$(basenc --base64url -w0 "$T/ow.bin" | tr -d '=')
    expect_eq "$(vcurl "$T/u" "${AUTH[@]}" -d "{\"alg\":\"$alg\",\"value\":\"$OW\"}" \
        "$VURL/keys/svkey/$VER/unwrapkey?api-version=7.4")" 200 "unwrapkey $alg: 200"
    expect_eq "$(jq -r .value "$T/u")" "$DEKB64" "$alg: the vault undoes openssl's wrap"
done
expect_eq "$(vcurl "$T/w" "${AUTH[@]}" -d "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$DEKB64\"}" \
    "$VURL/keys/svkey//wrapkey?api-version=7.4")" 200 "versionless wrapkey: 200"
expect_json '.kid | endswith("'"$VER2"'")' "versionless wrapkey uses the latest version" "$T/w"
expect_eq "$(vcurl "$T/w" "${AUTH[@]}" -d "{\"alg\":\"RSA1_5\",\"value\":\"$DEKB64\"}" \
    "$VURL/keys/svkey/$VER/wrapkey?api-version=7.4")" 400 "RSA1_5: 400"
expect_eq "$(vcurl "$T/w" "${AUTH[@]}" -d 'not json' "$VURL/keys/svkey/$VER/wrapkey?api-version=7.4")" \
    400 "a body that is not JSON: 400"
expect_eq "$(vcurl "$T/w" "${AUTH[@]}" -d '{"alg":"RSA-OAEP-256","value":"AAAA"}' \
    "$VURL/keys/svkey/$VER/unwrapkey?api-version=7.4")" 400 "unwrap of a short value: 400"

# ---- policies and key state ---------------------------------------------------------------
OAUTH=(-H "Authorization: Bearer $OTOK")
expect_eq "$(vcurl "$T/d" "${OAUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 403 \
    "an identity without a policy: 403"
expect_json '.error.code == "Forbidden" and .error.innererror.code == "AccessDenied"' \
    "Forbidden / AccessDenied" "$T/d"
cmk vault delete-policy --name svvault --object-id "$PRINCIPAL" >/dev/null
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" -d "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$OW\"}" \
    "$VURL/keys/svkey/$VER/unwrapkey?api-version=7.4")" 403 "after delete-policy: unwrap 403"
expect_json '.error.innererror.code == "AccessDenied"' "AccessDenied after delete-policy" "$T/d"
cmk vault set-policy --name svvault --object-id "$PRINCIPAL" --key-permissions get list wrapKey \
    unwrapKey >/dev/null
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 200 "policy restored: 200"
cmk vault key set-attributes --vault-name svvault --name svkey --enabled false >/dev/null
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 403 "disabled key: 403"
expect_json '.error.innererror.code == "KeyDisabled"' "KeyDisabled" "$T/d"
cmk vault key set-attributes --vault-name svvault --name svkey --enabled true >/dev/null
cmk vault key delete --vault-name svvault --name svkey >/dev/null
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 404 "deleted key: 404"
expect_json '.error.code == "KeyNotFound"' "a deleted key is KeyNotFound under /keys" "$T/d"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/deletedkeys/svkey?api-version=7.4")" 200 \
    "/deletedkeys finds it"
expect_json '.recoveryId == "'"$VURL/deletedkeys/svkey"'" and (.scheduledPurgeDate | type) == "number"
             and .key.kid != null' "the deleted key bundle" "$T/d"
cmk vault key recover --vault-name svvault --name svkey >/dev/null
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/deletedkeys/svkey?api-version=7.4")" 404 \
    "recovered: /deletedkeys says KeyNotFound"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 200 "recovered: 200"

# ---- tokens -------------------------------------------------------------------------------
expect_eq "$(vcurl "$T/d" -H "Authorization: Bearer cmkv1.${TOK#cmkv1.}x" "$VURL/keys/svkey?api-version=7.4")" \
    401 "an altered token: 401"
expect_eq "$(vcurl "$T/d" -H "Authorization: Bearer not-a-token" "$VURL/keys/svkey?api-version=7.4")" \
    401 "a foreign token: 401"
expect_true "the log holds no token" bash -c "! grep -qF '${TOK:10:40}' '$VSRV_ERR'"
expect_true "the log names the principal" grep -q "principal=$PRINCIPAL" "$VSRV_ERR"
cmk vault audit --name svvault | jq -s . >"$T/audit.json"
expect_json '[.[] | select(.identity == "'"$PRINCIPAL"'" and .operation == "unwrapKey" and .result == "allowed")] | length >= 2' \
    "the audit log has the principal's unwraps" "$T/audit.json"
expect_json '[.[] | select(.identity == "'"$PRINCIPAL"'" and .operation == "unwrapKey" and .error == "CMK_E_KEY_DENIED")] | length == 1' \
    "and its denied unwrap" "$T/audit.json"

# ---- throttling (test hook) ---------------------------------------------------------------
expect_eq "$(vcurl "$T/h" -X POST "$VURL/cmkstore/test/throttle?count=2")" 200 "the throttle hook"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 429 "throttled 1: 429"
expect_eq "$(vhdr "$T/d.h" Retry-After)" 0 "Retry-After: 0"
expect_json '.error.code == "Throttled"' "Throttled" "$T/d"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 429 "throttled 2: 429"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 200 "then 200"

# ---- expire-tokens (test hook): tokens issued so far are refused, new ones work ----------
expect_eq "$(vcurl "$T/h" -X POST "$VURL/cmkstore/test/expire-tokens")" 200 "the expire-tokens hook"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 401 \
    "a token issued before the hook: 401"
expect_json '.error.message | test("expired")' "... as expired" "$T/d"
NTOK=$(vtoken "$CLIENT_ID")
expect_eq "$(vcurl "$T/d" -H "Authorization: Bearer $NTOK" "$VURL/keys/svkey?api-version=7.4")" 200 \
    "a token issued after the hook: 200"
stop_vault
expect_eq "$VSRV_EXIT" 0 "SIGTERM: exit 0"

# ---- a second start: the pair is reused; short tokens expire; --throttle; allow list ------
start_vault v2 svvault --token-lifetime 1 --throttle 1 --token-allow 192.0.2.0/24
expect_false "the pair is reused" grep -q 'generated now' "$VSRV_OUT"
expect_true "same fingerprint" grep -q "fingerprint $FP" "$VSRV_OUT"
TOKURL="$VURL/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
expect_eq "$(vcurl "$T/t" -H 'Metadata: true' "$TOKURL&client_id=$CLIENT_ID")" 403 \
    "a client outside --token-allow: 403"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 429 "--throttle 1: 429 first"
expect_eq "$(vcurl "$T/d" "${AUTH[@]}" "$VURL/keys/svkey?api-version=7.4")" 200 \
    "then 200: a token of the first run still works (the secret is the home's)"
stop_vault
start_vault v3 svvault --token-lifetime 1
STOK=$(vtoken "$CLIENT_ID")
expired() {
    [ "$(vcurl "$T/e" -H "Authorization: Bearer $STOK" "$VURL/keys/svkey?api-version=7.4")" = 401 ]
}
expect_true "a 1-second token expires: 401 (polled)" wait_for 30 expired
expect_json '.error.message | test("expired")' "the 401 says the token expired" "$T/e"
expect_true "the expired answer carries the challenge" test -n "$(vhdr "$T/e.h" WWW-Authenticate)"
stop_vault

# ---- the operator's certificate -----------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/op.key" -out "$T/op.crt" -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
chmod 644 "$T/op.key"
expect_exit 6 cmk vault serve --name svvault --listen 127.0.0.1:0 --tls-cert "$T/op.crt" --tls-key "$T/op.key"
expect_err_match 'group or others' "a key file readable by others is refused"
chmod 600 "$T/op.key"
start_vault v4 svvault --tls-cert "$T/op.crt" --tls-key "$T/op.key"
VCA="$T/op.crt"
expect_eq "$(vcurl "$T/r" "$VURL/keys/svkey?api-version=7.4")" 401 "the operator's certificate is served"
stop_vault

finish
