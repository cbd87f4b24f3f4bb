#!/usr/bin/env bash
# test_lifecycle_refusals.sh — key-lifecycle refusals change nothing and say why: rotating to
# an EC key, to an identity that is not assigned or lacks permissions, while the key in use
# is revoked; removing the identity encryption uses (the seeds' troubleshooting case);
# out-of-range lifecycle settings. Checked by store.json / keyring.json checksums and a
# listing of every file of the store. Then the identities workflow that works: assign a
# user-assigned identity and the system-assigned one, grant, rotate to each, remove the old.
source "$(dirname "$0")/lib.sh"

setup_cmk f
S=$T/store
expect_ok cmk create --store "$S" --identity fid --key-encryption-key "$KID"
SYS=$(jq -r .identity.principalId "$OUT")
gen_random ref1 50000 "$T/b1"
D1=$(cmk blob put --store "$S" "$T/b1")

cmk identity create --name weak >"$T/weak.json"
WEAK=$(jq -r .principalId "$T/weak.json")
cmk vault set-policy --name fvault --object-id "$WEAK" --key-permissions get wrapKey >/dev/null
cmk identity create --name other >"$T/other.json"
OTHER=$(jq -r .principalId "$T/other.json")
expect_ok cmk identity assign --store "$S" --identities weak
expect_json ".userAssignedIdentities | length == 2" "assign: two user-assigned identities"
cmk vault key create --vault-name fvault --name eckey --kty EC >"$T/ec.json"
ECKID=$(jq -r .key.kid "$T/ec.json")

state() {
    sha256sum "$S/store.json" "$S/keyring.json"
    snapshot "$S"
}
state >"$T/state0"

# refused CODE REGEX WHAT CMD...: exit CODE, stderr matches REGEX, no file of the store changed.
refused() {
    local code=$1 re=$2 what=$3
    shift 3
    expect_exit "$code" "$@"
    expect_err_match "$re" "$what: says why"
    state >"$T/state1"
    expect_true "$what: store.json, keyring.json and every file unchanged" \
        cmp "$T/state0" "$T/state1"
}

refused 6 'only RSA' "rotate to an EC key" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$ECKID"
refused 5 'unwrapKey' "rotate with an identity lacking unwrapKey" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity weak
expect_err_match "$WEAK" "lacking permissions: the message names the identity"
refused 6 'identity assign' "rotate with an identity not assigned to the store" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity other
refused 5 'not found|nokey' "rotate to a key that does not exist" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "local://fvault/keys/nokey"
refused 6 'assign it again' "remove the identity encryption uses" \
    cmk identity remove --store "$S" --identities fid
expect_err_match 'rotate' "remove in use: says to rotate to another identity first"
expect_err_match "identity assign --store [^ ]+ --identities $PRINCIPAL" \
    "remove in use: the assign command names the identity's principalId"
refused 6 'cannot be removed' "remove several identities, one of them in use" \
    cmk identity remove --store "$S" --identities weak fid
refused 3 'not assigned' "remove an identity that is not assigned" \
    cmk identity remove --store "$S" --identities other
refused 2 'either --system or --identities' "assign with neither --system nor --identities" \
    cmk identity assign --store "$S"
refused 2 '--rotation-check-interval must be from 1 to 86400' "update: rotation check 0 s" \
    cmk encryption update --store "$S" --rotation-check-interval 0
refused 2 '--key-check-interval must be from 1 to 86400' "update: key check over a day" \
    cmk encryption update --store "$S" --key-check-interval 86401
refused 2 'unreachable-grace' "update: grace 0" \
    cmk encryption update --store "$S" --unreachable-grace 0
refused 2 'dek-rollover-blobs' "update: rollover 0" \
    cmk encryption update --store "$S" --dek-rollover-blobs 0
refused 2 'dek-rollover-blobs' "update: rollover garbage" \
    cmk encryption update --store "$S" --dek-rollover-blobs 12x
refused 2 'non-negative|number|invalid' "update: negative interval" \
    cmk encryption update --store "$S" --rotation-check-interval -5
refused 2 'nothing to update' "update without a setting" cmk encryption update --store "$S"
expect_exit 2 cmk create --store "$T/new" --identity fid --key-encryption-key "$KID" \
    --rotation-check-interval 0
expect_err_match 'from 1 to 86400' "create: rotation check 0 s refused"
expect_false "create refused: no store made" test -e "$T/new"
expect_exit 2 cmk create --store "$T/new" --dek-rollover-blobs 0
expect_false "create with rollover 0 refused: no store made" test -e "$T/new"
expect_ok cmk create --store "$T/new2" --identity fid --key-encryption-key "$KID" \
    --dek-rollover-blobs 5 --key-check-interval 2 --unreachable-grace 1
expect_ok cmk encryption show --store "$T/new2"
expect_json '.dekRolloverBlobs == 5 and .keyCheckIntervalSeconds == 2 and .unreachableGraceSeconds == 1 and .rotationCheckIntervalSeconds == 3600' \
    "create: rollover, key check and grace kept; rotation check default 3600"

# While the key in use is revoked, rotation is refused (the DEKs cannot be unwrapped).
cmk vault key set-attributes --vault-name fvault --name fkey --enabled false >/dev/null
cmk vault key create --vault-name fvault --name fkey2 >"$T/k2.json"
KID2=$(jq -r .key.kid "$T/k2.json")
refused 5 'restore access first' "rotate while the current key is disabled" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$KID2"
refused 5 'disabled' "rotate-dek while the key is disabled" \
    cmk encryption rotate-dek --store "$S"
cmk vault key set-attributes --vault-name fvault --name fkey --enabled true >/dev/null
expect_ok cmk blob verify --store "$S" "$D1"

expect_ok cmk events --store "$S" --type operation.refused
expect_true "events: the refused rotations and removals are recorded with the reason" \
    jq -e -s '([.[] | select(.operation == "rotate-key")] | length >= 4) and ([.[] | select(.operation == "identity remove")] | length >= 2) and all(.reason | length > 0)' "$OUT"

# ---- what works: rotate to another identity, then the old one may be removed
expect_ok cmk vault set-policy --name fvault --object-id "$WEAK" \
    --key-permissions get wrapKey unwrapKey
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity weak
expect_json ".identity.principalId == \"$WEAK\" and .keyVaultProperties.identity == \"$(jq -r .clientId "$T/weak.json")\"" \
    "rotated to the other identity"
expect_ok cmk identity remove --store "$S" --identities fid
expect_json ".userAssignedIdentities | keys == [\"$(jq -r .id "$T/weak.json")\"]" \
    "old identity removed"
expect_json ".encryptionIdentity.principalId == \"$WEAK\"" "encryption identity shown"
state >"$T/state0"
refused 6 'assign it again' "remove the new identity in use" \
    cmk identity remove --store "$S" --identities weak

# ---- the system-assigned identity: shown, removed, assigned, granted, used
expect_ok cmk identity show --store "$S"
expect_json ".principalId == \"$SYS\" and (.type | contains(\"SystemAssigned\")) and (.tenantId | length > 0)" \
    "identity show --store: the system-assigned principalId"
expect_ok cmk identity remove --store "$S" --system
expect_json '.principalId == null and .type == "UserAssigned"' "system identity removed"
expect_exit 6 cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity '[system]'
expect_err_match 'identity assign --store' "rotate to [system] before it is assigned: says to assign it"
expect_ok cmk identity assign --store "$S" --system
expect_json ".principalId == \"$SYS\"" "system identity assigned again: same principalId"
expect_exit 5 cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity '[system]'
expect_ok cmk vault set-policy --name fvault --object-id "$SYS" \
    --key-permissions get wrapKey unwrapKey
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$KID" --identity '[system]'
expect_json ".identity.type == \"SystemAssigned\" and .identity.principalId == \"$SYS\"" \
    "rotated to the system-assigned identity"
expect_exit 6 cmk identity remove --store "$S" --system
expect_err_match 'assign it again' "removing the system identity in use is refused"
expect_ok cmk identity remove --store "$S" --identities weak
expect_json '.userAssignedIdentities == null and .type == "SystemAssigned"' \
    "only the system identity is left"
expect_ok cmk blob verify --store "$S" "$D1"
expect_ok cmk events --store "$S" --type identity.
expect_true "events: identity.assigned and identity.removed" \
    jq -e -s '(map(.event) | index("identity.assigned") != null and index("identity.removed") != null)' "$OUT"
