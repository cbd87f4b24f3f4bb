#!/usr/bin/env bash
# test_vault_serve_e2e.sh — the seed workflow with the key in a vault served by
# `cmkstore vault serve` and reached by the store through the akv provider
# (https://127.0.0.1:PORT/keys/..., managed identity through the server's token endpoint, its
# self-signed certificate trusted with CMKSTORE_CA_FILE): create, put/get, encryption show;
# versionless automatic rotation; manual rotate-key to a versioned identifier; a store in
# another home (another host) reaching the vault as the vault home's identity; revocation by
# `vault delete-policy` on the vault side (CLI exit 5, registry 503) and restore; the vault
# stopped (CLI: unreachable; registry: serves on within the grace, then fails closed) and
# back on the same port; 429 bursts (absorbed within the retry budget, unreachable beyond
# it); short-lived tokens renewed by a long-running server; a wrong or missing CA refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/vault_serve_lib.sh"

unset AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_CLIENT_SECRET AZURE_FEDERATED_TOKEN_FILE \
    IDENTITY_ENDPOINT CMKSTORE_CA_FILE CMKSTORE_AZURE_CREDENTIAL AZURE_AUTHORITY_HOST

cmk identity create --name app >"$T/id.json"
PRINCIPAL=$(jq -r .principalId "$T/id.json")
CLIENT_ID=$(jq -r .clientId "$T/id.json")
cmk vault create --name kv --enable-purge-protection >/dev/null
cmk vault set-policy --name kv --object-id "$PRINCIPAL" --key-permissions get wrapKey \
    unwrapKey >/dev/null
cmk vault key create --vault-name kv --name k1 >/dev/null
start_vault kv kv --test-hooks --token-lifetime 3
VCA_FILE=$VCA
# The store side: the vault's token endpoint, its certificate, and the challenge's resource
# (https://vault.azure.net) accepted for a vault named by an IP address.
export AZURE_POD_IDENTITY_AUTHORITY_HOST=$VURL
export CMKSTORE_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION=1
KID="$VURL/keys/k1"

# ---- a wrong or missing CA is refused, and nothing is left behind ---------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$T/other.key" -out "$T/other.crt" >/dev/null 2>&1
expect_exit 5 cmk create --store "$T/s0" --identity app --key-encryption-key "$KID"
expect_err_match 'certificate' "no CA: the vault's certificate is refused"
expect_exit 5 cmk create --store "$T/s0" --identity app --key-encryption-key "$KID" \
    --ca-file "$T/other.crt"
expect_err_match 'certificate' "a wrong CA: refused"
expect_false "nothing left by the refused creates" test -e "$T/s0/store.json"
export CMKSTORE_CA_FILE=$VCA_FILE

# ---- the seed workflow ----------------------------------------------------------------------
S=$T/store
expect_ok cmk create --store "$S" --identity app --key-encryption-key "$KID" \
    --key-check-interval 1 --rotation-check-interval 1 --unreachable-grace 15
expect_ok cmk encryption show --store "$S"
expect_json ".status == \"enabled\" and .keyVaultProperties.keyIdentifier == \"$KID\" and
             .keyVaultProperties.keyRotationEnabled == true and .keyAccess.accessible == true" \
    "encryption show: versionless https key, automatic rotation, accessible"
V1=$(jq -r .keyVaultProperties.versionedKeyIdentifier "$OUT")
expect_true "the version in use is on the served vault" test "${V1%/*}" = "$KID"
gen_random e2e1 300000 "$T/b1"
expect_ok cmk blob put --store "$S" "$T/b1"
D1=$(cat "$OUT")
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "put/get round trip through the served vault" cmp "$T/b1" "$T/back"
cmk vault audit --name kv | jq -s . >"$T/audit.json"
expect_json '[.[] | select(.identity == "'"$PRINCIPAL"'" and .operation == "unwrapKey" and .result == "allowed")] | length >= 1' \
    "the vault host's audit log has the store's unwraps" "$T/audit.json"
expect_true "the vault's log names the store's identity" grep -q "principal=$PRINCIPAL" "$VSRV_ERR"

# ---- automatic rotation (versionless) -------------------------------------------------------
cmk vault key create --vault-name kv --name k1 >"$T/v2.json"
V2=$(jq -r .key.kid "$T/v2.json")
V2=$KID/${V2##*/}
expect_ok cmk encryption check --store "$S"
expect_json ".rotated == true and .keyVaultProperties.versionedKeyIdentifier == \"$V2\"" \
    "encryption check follows the vault's new version"
expect_true "keyring: the DEK rewrapped by the new version" \
    jq -e --arg v "$V2" '[.deks[].kid] | all(. == $v)' "$S/keyring.json"
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "blob readable after automatic rotation" cmp "$T/b1" "$T/back"

# ---- manual rotation to a versioned identifier ----------------------------------------------
cmk vault key create --vault-name kv --name k1 >"$T/v3.json"
V3=$(jq -r .key.kid "$T/v3.json")
V3=$KID/${V3##*/}
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$V3" --identity app
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V3\" and .keyVaultProperties.keyRotationEnabled == false" \
    "rotate-key: the versioned https identifier, automatic rotation off"
cmk vault key create --vault-name kv --name k1 >/dev/null
expect_ok cmk encryption check --store "$S"
expect_json ".rotated == false and .keyVaultProperties.versionedKeyIdentifier == \"$V3\"" \
    "versioned: a newer version is not followed"
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "blob readable after manual rotation" cmp "$T/b1" "$T/back"
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity app
expect_json '.keyVaultProperties.keyRotationEnabled == true' "back to versionless"

# ---- another host: a store in another home reaches the vault as the vault home's identity -----
# (its own home has an identity of the same name for --identity; AZURE_CLIENT_ID names the
# vault home's identity to the token endpoint, as on an Azure host with that identity.)
HOME_A=$CMKSTORE_HOME
export CMKSTORE_HOME=$T/home2
cmk identity create --name app >/dev/null
expect_ok env AZURE_CLIENT_ID="$CLIENT_ID" "$CMKSTORE_BIN" create --store "$T/store2" \
    --identity app --key-encryption-key "$KID"
expect_ok env AZURE_CLIENT_ID="$CLIENT_ID" "$CMKSTORE_BIN" blob put --store "$T/store2" "$T/b1"
D2=$(cat "$OUT")
expect_ok env AZURE_CLIENT_ID="$CLIENT_ID" "$CMKSTORE_BIN" blob get --store "$T/store2" "$D2" \
    -o "$T/back2"
expect_true "another home: round trip through the served vault" cmp "$T/b1" "$T/back2"
CMKSTORE_HOME=$HOME_A cmk vault delete-policy --name kv --object-id "$PRINCIPAL" >/dev/null
expect_exit 5 env AZURE_CLIENT_ID="$CLIENT_ID" "$CMKSTORE_BIN" blob get --store "$T/store2" "$D2" \
    -o "$T/none2"
expect_err_match 'denied' "another home: delete-policy on the vault home denies it (exit 5)"
CMKSTORE_HOME=$HOME_A cmk vault set-policy --name kv --object-id "$PRINCIPAL" \
    --key-permissions get wrapKey unwrapKey >/dev/null
expect_ok env AZURE_CLIENT_ID="$CLIENT_ID" "$CMKSTORE_BIN" blob get --store "$T/store2" "$D2" \
    -o "$T/back2"
export CMKSTORE_HOME=$HOME_A

# ---- a registry on the store ------------------------------------------------------------------
start_server reg --store "$S" --key-check-interval 1 --rotation-check-interval 1
B=$T/body
gen_random e2e2 150000 "$T/l1"
DL=$(oci_digest "$T/l1")
expect_eq "$(push_blob e2e/app "$T/l1")" 201 "registry: push a layer"
blob_status() { hcurl "$B" "$URL/v2/e2e/app/blobs/$DL"; }
is_status() { [ "$(blob_status)" == "$1" ]; }
expect_eq "$(blob_status)" 200 "registry: pull"

# ---- revocation on the vault host, and restore -------------------------------------------------
cmk vault delete-policy --name kv --object-id "$PRINCIPAL" >/dev/null
expect_exit 5 cmk blob get --store "$S" "$D1" -o "$T/none"
expect_err_match 'denied' "revoked: the CLI says denied"
expect_err_match 'k1' "revoked: ... naming the key"
expect_false "revoked: no output written" test -e "$T/none"
expect_exit 5 cmk blob put --store "$S" "$T/l1"
expect_exit 5 cmk encryption check --store "$S" --no-rotate
if wait_for 30 is_status 503; then ok "revoked: the registry answers 503"; else
    not_ok "revoked: the registry still answers $(blob_status) after 30 s"; fi
expect_json '.errors[0].detail.error == "CMK_E_KEY_DENIED"' "revoked: 503 detail CMK_E_KEY_DENIED" "$B"
cmk vault set-policy --name kv --object-id "$PRINCIPAL" --key-permissions get wrapKey \
    unwrapKey >/dev/null
expect_ok cmk encryption check --store "$S" --no-rotate
if wait_for 30 is_status 200; then ok "restored: the registry serves again"; else
    not_ok "restored: still $(blob_status) after 30 s"; fi
expect_true "restored: same bytes" cmp "$B" "$T/l1"

# ---- short-lived tokens: the long-running registry renews them --------------------------------
token_calls() { grep -c 'GET /metadata/identity/oauth2/token 200' "$VSRV_ERR" || true; }
N0=$(token_calls)
more_tokens() { [ "$(token_calls)" -ge $((N0 + 2)) ] && is_status 200; }
expect_true "3-second tokens: the registry gets new ones and keeps serving" wait_for 60 more_tokens

# ---- 429 bursts -------------------------------------------------------------------------------
vcurl "$T/h" -X POST "$VURL/cmkstore/test/throttle?count=2" >/dev/null
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "a burst of two 429s is absorbed (retries honour Retry-After)" cmp "$T/b1" "$T/back"
expect_true "the vault answered 429s" grep -q ' 429 ' "$VSRV_ERR"
vcurl "$T/h" -X POST "$VURL/cmkstore/test/throttle?count=1000" >/dev/null
expect_exit 5 cmk blob get --store "$S" "$D1" -o "$T/none"
expect_err_match 'unreachable|429|throttl' "a burst beyond the retry budget: unreachable, exit 5"
vcurl "$T/h" -X POST "$VURL/cmkstore/test/throttle?count=0" >/dev/null
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "after the burst: readable" cmp "$T/b1" "$T/back"

# ---- the vault stopped: unreachable, grace, fail closed, back ---------------------------------
stop_vault
expect_exit 5 cmk blob get --store "$S" "$D1" -o "$T/none"
expect_err_match 'unreachable|connect' "vault stopped: the CLI says unreachable"
metrics_unreachable() { # the registry's key checks fail, cached data keys still serve
    hcurl "$T/m" "$URL/metrics" >/dev/null &&
        grep -q '^cmkstore_key_state{state="unreachable",reason="CMK_E_KEY_UNREACHABLE"} 1' "$T/m"
}
if wait_for 30 metrics_unreachable; then ok "vault stopped: the registry notices (state unreachable)"; else
    not_ok "vault stopped: the registry did not notice within 30 s"; fi
expect_eq "$(blob_status)" 200 "vault stopped: within the 15 s grace the registry still serves"
if wait_for 60 is_status 503; then ok "vault stopped: after the grace the registry fails closed"; else
    not_ok "vault stopped: still $(blob_status) after the grace"; fi
expect_json '.errors[0].detail.error == "CMK_E_KEY_UNREACHABLE"' "fail closed: CMK_E_KEY_UNREACHABLE" "$B"
"$CMKSTORE_BIN" vault serve --name kv --listen "127.0.0.1:$VPORT" --test-hooks \
    >"$T/kv2.out" 2>"$T/kv2.err" &
VSRV_PID=$!
VSRV_PIDS+=("$VSRV_PID")
VSRV_ERR=$T/kv2.err
expect_true "the vault is back on the same port" wait_for 30 grep -q '^Listening on https://' "$T/kv2.out"
if wait_for 60 is_status 200; then ok "vault back: the registry serves again"; else
    not_ok "vault back: still $(blob_status) after 60 s"; fi
expect_true "vault back: same bytes" cmp "$B" "$T/l1"
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "vault back: the CLI reads" cmp "$T/b1" "$T/back"

# ---- (vault back, default 1-hour tokens) tokens refused as expired while the registry holds
# one: it renews and serves on
key401() { grep -cE '(GET|POST) /keys/k1[^ ]* 401 ' "$VSRV_ERR" || true; }
K0=$(key401)
N1=$(token_calls)
expect_eq "$(vcurl "$T/h" -X POST "$VURL/cmkstore/test/expire-tokens")" 200 "every issued token expired"
refreshed() { [ "$(key401)" -gt "$K0" ] && [ "$(token_calls)" -gt "$N1" ] && is_status 200; }
expect_true "the registry's expired token is refused (401), renewed, and it serves on" \
    wait_for 60 refreshed
expect_ok cmk blob get --store "$S" "$D1" -o "$T/back"
expect_true "the CLI reads with a fresh token" cmp "$T/b1" "$T/back"


stop_server TERM
expect_eq "$SRV_EXIT" 0 "registry: SIGTERM, exit 0"
stop_vault
expect_eq "$VSRV_EXIT" 0 "vault: SIGTERM, exit 0"
finish
