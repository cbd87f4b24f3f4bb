#!/usr/bin/env bash
# test_akv_client.sh — a store whose key is in an Azure Key Vault-shaped HTTPS server
# (tests/unit/akv_server.py on 127.0.0.1, self-signed certificate made here): create with
# --ca-file and a user-assigned identity reaching the vault through the managed-identity
# endpoint (its client id sent), put/get, encryption show, automatic rotation to a new
# version, a denial (exit 5) and its restore, a burst of 429s absorbed, plain http:// and a
# missing CA file refused, the vault's certificate refused without the CA. The end-to-end run
# against `cmkstore vault serve` is a separate test.
source "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || { not_ok "python3 is required"; exit 1; }
python3 -c 'import cryptography' 2>/dev/null ||
    { not_ok "python3-cryptography is required (akv_server.py)"; exit 1; }

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" >/dev/null 2>&1
python3 "$CMK_SOURCE_DIR/tests/unit/akv_server.py" "$T" &
SRV=$!
on_exit "kill $SRV 2>/dev/null; wait $SRV 2>/dev/null"
for _ in $(seq 600); do
    [ -s "$T/port" ] && break
    kill -0 "$SRV" 2>/dev/null || break
    sleep 0.05
done
[ -s "$T/port" ] || { not_ok "akv_server.py did not start"; exit 1; }
PORT=$(cat "$T/port")
BASE="https://127.0.0.1:$PORT"
ctl() { curl -sf --cacert "$T/cert.pem" -H 'Content-Type: application/json' ${1:+-d "$1"} "$BASE/_ctl"; }

export AZURE_POD_IDENTITY_AUTHORITY_HOST=$BASE
unset AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_CLIENT_SECRET AZURE_FEDERATED_TOKEN_FILE \
    IDENTITY_ENDPOINT CMKSTORE_CA_FILE CMKSTORE_AZURE_CREDENTIAL
cmk identity create --name app >"$T/id.json"
CLIENT_ID=$(jq -r .clientId "$T/id.json")
PRINCIPAL=$(jq -r .principalId "$T/id.json")

# Refusals that lose nothing: plain http, a CA file that is not there, the server's
# certificate without its CA.
expect_exit 2 cmk create --store "$T/s0" --identity app --key-encryption-key "http://127.0.0.1:$PORT/keys/k1"
expect_err_match 'plain http://' "plain http:// vault URL refused"
expect_exit 2 cmk create --store "$T/s0" --identity app --key-encryption-key "$BASE/keys/k1" \
    --ca-file "$T/nonexistent.pem"
expect_err_match 'ca-file' "a missing --ca-file is named"
expect_exit 5 cmk create --store "$T/s0" --identity app --key-encryption-key "$BASE/keys/k1"
expect_err_match 'certificate' "the vault's certificate is refused without its CA"
expect_false "nothing left by the refused creates" test -e "$T/s0/store.json"

# The seed workflow with the vault's key: versionless, so automatic rotation.
expect_ok cmk create --store "$T/s" --identity app --key-encryption-key "$BASE/keys/k1" \
    --ca-file "$T/cert.pem"
ctl >"$T/stats.json"
expect_json ".last_client_id == \"$CLIENT_ID\"" "the identity's client id went to the token endpoint" "$T/stats.json"
expect_json '.unauth >= 1' "the first request went without a token (challenge)" "$T/stats.json"
export CMKSTORE_CA_FILE=$T/cert.pem
expect_ok cmk encryption show --store "$T/s"
expect_json ".status == \"enabled\" and .keyVaultProperties.keyIdentifier == \"$BASE/keys/k1\"" \
    "encryption show: the versionless key identifier"
expect_json ".keyVaultProperties.versionedKeyIdentifier | startswith(\"$BASE/keys/k1/\")" \
    "encryption show: the version in use"
V1=$(jq -r .keyVaultProperties.versionedKeyIdentifier "$OUT")
gen_random akv 300000 "$T/blob"
expect_ok cmk blob put --store "$T/s" "$T/blob"
DIGEST=$(cat "$OUT")
expect_ok cmk blob get --store "$T/s" -o "$T/back" "$DIGEST"
expect_true "blob round trip through the vault's key" cmp "$T/blob" "$T/back"

# A new version in the vault: the store follows it.
ctl '{"rotate": "k1"}' >/dev/null
expect_ok cmk encryption check --store "$T/s"
expect_ok cmk encryption show --store "$T/s"
V2=$(jq -r .keyVaultProperties.versionedKeyIdentifier "$OUT")
expect_true "automatic rotation to the new version" test "$V2" != "$V1" -a -n "$V2"
expect_ok cmk blob get --store "$T/s" -o "$T/back" "$DIGEST"
expect_true "blob readable after the rotation" cmp "$T/blob" "$T/back"

# Revoked: the vault answers 403; the store says so (exit 5), naming vault, key, identity.
ctl '{"deny": true}' >/dev/null
expect_exit 5 cmk encryption check --store "$T/s" --no-rotate
expect_err_match "127\.0\.0\.1.*k1|k1.*127\.0\.0\.1" "the denial names the vault and the key"
expect_err_match "$CLIENT_ID|$PRINCIPAL" "the denial names the identity"
expect_false "no token in the message" grep -q 'tok-' "$ERR"
ctl '{"deny": false}' >/dev/null
expect_ok cmk encryption check --store "$T/s" --no-rotate

# A burst of 429s shorter than the retry budget is absorbed.
ctl '{"faults": [{"status": 429, "retry_after": 0}, {"status": 429, "retry_after": 0}]}' >/dev/null
expect_ok cmk blob get --store "$T/s" -o "$T/back" "$DIGEST"
expect_true "blob readable through the 429 burst" cmp "$T/blob" "$T/back"
