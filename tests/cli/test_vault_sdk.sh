#!/usr/bin/env bash
# test_vault_sdk.sh — the official Azure SDK for JavaScript against `cmkstore vault serve`:
# @azure/keyvault-keys and @azure/identity installed with `npm ci` from the lock file
# (tests/akv-sdk/package-lock.json) and run by tests/akv-sdk/compat.mjs with
# ManagedIdentityCredential pointed at the server's token endpoint
# (AZURE_POD_IDENTITY_AUTHORITY_HOST), the self-signed certificate trusted through
# NODE_EXTRA_CA_CERTS and disableChallengeResourceVerification. Checked: getKey versionless
# and versioned, serviceVersion 7.4, the version list, wrapKey/unwrapKey RSA-OAEP-256 round
# trips, what the SDK does on the wire (first request without a token -> 401 challenge,
# api%2Dversion=2025-07-01, /keys/<name>/ for the latest, RSA-OAEP wrapped locally, a local
# refusal without wrapKey in key_ops), 403 after `vault delete-policy`, a store's DEK wrapped
# by cmkstore unwrapped through the SDK (proved by a blob's key commitment) and a DEK wrapped
# by the SDK unwrapped by cmkstore (the blob read back).
#
# Needs node (>= 20) and npm, and the npm registry (or npm's cache) for `npm ci`: this test
# fails, it does not skip, when they are missing.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vault_serve_lib.sh"

SDK_SRC="${CMK_SOURCE_DIR:?}/tests/akv-sdk"
for tool in node npm; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool (Debian: nodejs, npm; tools/run.sh installs them)" >&2
        exit 1
    }
done
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || {
    echo "node $NODE_MAJOR is too old: the pinned SDK needs node >= 20" >&2
    exit 1
}

# The SDK, exactly as locked, in this test's own directory (tests run in parallel).
mkdir -p "$T/sdk"
cp "$SDK_SRC/package.json" "$SDK_SRC/package-lock.json" "$SDK_SRC/compat.mjs" "$T/sdk/"
expect_true "npm ci installs the locked SDK" \
    bash -c "cd '$T/sdk' && npm ci --no-audit --no-fund >'$T/npm.log' 2>&1"
if [ ! -d "$T/sdk/node_modules/@azure/keyvault-keys" ]; then
    sed 's/^/#   npm: /' "$T/npm.log" | tail -20
    finish
fi

setup_cmk sdk get list wrapKey unwrapKey
start_vault sdk sdkvault
mkdir -p "$T/work"
sdk_step() {
    (cd "$T/sdk" && env VAULT_URL="$VURL" KEY_NAME=sdkkey CLIENT_ID="$CLIENT_ID" \
        AZURE_POD_IDENTITY_AUTHORITY_HOST="$VURL" NODE_EXTRA_CA_CERTS="$VCA" \
        WORK="$T/work" STEP="$1" "${@:2}" node compat.mjs) >"$T/sdk_$1.log" 2>&1
    local rc=$?
    grep -E '^(ok|not ok) - ' "$T/sdk_$1.log" | while IFS= read -r line; do
        echo "#   sdk: $line"
    done
    grep -v -E '^(ok|not ok) - ' "$T/sdk_$1.log" | head -20 | sed 's/^/#   sdk output: /'
    return $rc
}
# run_sdk WHAT STEP [VAR=VALUE...]: runs a step; its checks are printed and counted as this
# test's, and the step itself must succeed.
run_sdk() {
    local what=$1 step=$2 n
    shift 2
    if sdk_step "$step" "$@"; then ok "$what"; else not_ok "$what"; fi
    n=$(grep -c '^ok - ' "$T/sdk_$step.log" || true)
    PASS=$((PASS + n))
    n=$(grep -c '^not ok - ' "$T/sdk_$step.log" || true)
    FAIL=$((FAIL + n))
}

run_sdk "SDK: versions, round trips and wire facts" main
expect_true "SDK: at least 20 checks ran" test "$(grep -c '^ok - ' "$T/sdk_main.log")" -ge 20

# A store on this host with the same key (local provider), a blob in it.
cmk create --store "$T/store" --identity sdkid --key-encryption-key "$KID" >/dev/null
gen_random sdkblob 300000 "$T/blob.bin"
DIGEST=$(cmk blob put --store "$T/store" "$T/blob.bin")
BLOB_FILE=$(grep -rl --include='*' 'CMKSBLOB' "$T/store/blobs" | head -1)
expect_true "the store holds the blob's container" test -n "$BLOB_FILE"
run_sdk "SDK: a DEK wrapped by cmkstore unwraps through the SDK" unwrap-cmk \
    KEYRING="$T/store/keyring.json" BLOB_FILE="$BLOB_FILE"
# The SDK's wrap of that DEK replaces cmkstore's in the keyring: cmkstore must unwrap it.
# Control first: a wrapped key of the right size that is not the DEK's is refused.
set_wrap() {
    jq --arg w "$1" --arg a "$2" '.deks |= map(.wrappedKey = $w | .wrapAlgorithm = $a)' \
        "$T/keyring.orig" >"$T/store/keyring.json"
}
cp "$T/store/keyring.json" "$T/keyring.orig"
set_wrap "$(head -c 256 /dev/urandom | base64 -w0)" RSA-OAEP
expect_false "control: a foreign wrapped key does not read the blob" \
    cmk blob get --store "$T/store" "$DIGEST" -o "$T/blob.bad"
set_wrap "$(cat "$T/work/sdk_rewrapped.b64")" RSA-OAEP
expect_false "the keyring now holds the SDK's wrap" cmp -s "$T/keyring.orig" "$T/store/keyring.json"
expect_ok cmk blob get --store "$T/store" "$DIGEST" -o "$T/blob.out"
expect_true "a DEK wrapped by the SDK unwraps in cmkstore: the blob reads back" \
    cmp -s "$T/blob.bin" "$T/blob.out"

# Revocation on the vault host: the SDK gets 403.
cmk vault delete-policy --name sdkvault --object-id "$PRINCIPAL" >/dev/null
run_sdk "SDK: 403 after vault delete-policy" denied
expect_true "the token never reaches the server's log" bash -c "! grep -q 'cmkv1\.' '$VSRV_ERR'"
stop_vault
expect_eq "$VSRV_EXIT" 0 "the server stops on SIGTERM"
finish
