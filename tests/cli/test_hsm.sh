#!/usr/bin/env bash
# test_hsm.sh — RSA-HSM key-encryption keys in a real PKCS#11 token (SoftHSM2), through the
# CLI: an HSM-backed vault (keys generated in the token, private halves sensitive and
# non-extractable), stores on versioned and versionless key identifiers, byte-exact round
# trips, manual rotation, automatic rotation (`encryption check` and a running `encryption
# watch` with --rotation-check-interval), the vault's policy / enable / soft delete still
# gating use, token removal and a wrong PIN (both restorable), revocation by destroying the
# key objects with pkcs11-tool (not restorable: re-creating is a new key), direct pkcs11: key
# identifiers, and the errors for a wrong PIN, a missing module, token or key. No PIN may
# appear in any output.
#
# The token lives in this test's directory with its own SOFTHSM2_CONF; the system's SoftHSM
# configuration and tokens are never touched. Exits 77 (CTest: skipped) if SoftHSM2 is not
# installed (Debian: softhsm2; pkcs11-tool is in opensc).
MOD=${CMK_SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
if ! command -v softhsm2-util >/dev/null || [ ! -r "$MOD" ]; then
    echo "skipped: SoftHSM2 not installed (softhsm2-util, $MOD); Debian: apt-get install softhsm2 opensc"
    exit 77
fi
source "$(dirname "$0")/lib.sh"
command -v pkcs11-tool >/dev/null || {
    not_ok "pkcs11-tool not found (Debian: opensc): it is needed to inspect and destroy token objects"
    exit 1
}

# ---- a private SoftHSM2 with one token
mkdir -m 700 "$T/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
    "$T" >"$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
unset CMKSTORE_PKCS11_MODULE CMKSTORE_PKCS11_PIN CMKSTORE_PKCS11_PIN_FILE
TOKEN=cmk-tok
SO_PIN=so-$(openssl rand -hex 6)
USER_PIN=usr-$(openssl rand -hex 6)
WRONG_PIN=bad-$(openssl rand -hex 6)
softhsm2-util --init-token --free --label "$TOKEN" --so-pin "$SO_PIN" --pin "$USER_PIN" >/dev/null
(umask 077 && printf '%s\n' "$USER_PIN" >"$T/user.pin" && printf '%s\n' "$WRONG_PIN" >"$T/wrong.pin")

# p11 ARGS...: pkcs11-tool on the test token, logged in (the PIN is on pkcs11-tool's command
# line only: this is the test's own token).
p11() {
    pkcs11-tool --module "$MOD" --token-label "$TOKEN" --login --pin "$USER_PIN" "$@" 2>/dev/null
}

# no_pin WHAT: the last command's stdout and stderr hold no PIN.
no_pin() {
    if grep -qF -e "$USER_PIN" -e "$SO_PIN" -e "$WRONG_PIN" "$OUT" "$ERR"; then
        not_ok "$1: a PIN appears in the output"
    else
        ok "$1: no PIN in the output"
    fi
}

# key_fails CODE REGEX WHAT CMD...: CMD exits CODE, says REGEX, prints no PIN.
key_fails() {
    local code=$1 re=$2 what=$3
    shift 3
    expect_exit "$code" "$@"
    expect_err_match "$re" "$what"
    no_pin "$what"
}

# privkey_access LABEL ID: the "Access:" line pkcs11-tool prints for that private key.
privkey_access() {
    p11 --list-objects --type privkey |
        awk -v l="$1" -v id="$2" '
            /^Private Key Object/ { lab = ""; oid = "" }
            /^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]+/, ""); lab = $0 }
            /^[ \t]+ID:/ { oid = $2 }
            /^[ \t]+Access:/ { if (lab == l && oid == id) { sub(/^[ \t]+Access:[ \t]+/, ""); print } }'
}

ISO_VER='^[0-9a-f]{32}$'

# ---- errors at vault creation: nothing is created
expect_ok cmk identity create --name hid
PRINCIPAL=$(jq -r .principalId "$OUT")
key_fails 5 'PKCS#11 token "cmk-tok".*(PIN|C_Login)' "vault create, wrong PIN: key access" \
    cmk vault create --name hv --hsm-token "$TOKEN" --hsm-module "$MOD" --hsm-pin-file "$T/wrong.pin"
expect_err_match 'wrong\.pin' "wrong PIN: names where the PIN came from"
key_fails 5 "cannot load PKCS#11 module $T/nosuch\.so" "vault create, missing module" \
    cmk vault create --name hv --hsm-token "$TOKEN" --hsm-module "$T/nosuch.so" --hsm-pin-file "$T/user.pin"
key_fails 5 'no PKCS#11 token labelled "nosuch".*tokens present: "cmk-tok"' \
    "vault create, missing token: names the tokens present" \
    cmk vault create --name hv --hsm-token nosuch --hsm-module "$MOD" --hsm-pin-file "$T/user.pin"
key_fails 5 "cannot read the PKCS#11 PIN file $T/nosuch\.pin" "vault create, missing PIN file" \
    cmk vault create --name hv --hsm-token "$TOKEN" --hsm-module "$MOD" --hsm-pin-file "$T/nosuch.pin"
expect_exit 2 cmk vault create --name hv --hsm-module "$MOD"
expect_err_match 'needs the label of its PKCS#11 token \(--hsm-token\)' "module without token: usage"
expect_exit 3 cmk vault show --name hv
expect_true "refused vault creates left no vault" test ! -e "$CMKSTORE_HOME/vaults/hv"

# ---- the HSM-backed vault
expect_ok cmk vault create --name hv --hsm-token "$TOKEN" --hsm-module "$MOD" \
    --hsm-pin-file "$T/user.pin"
expect_json ".properties.hsm.token == \"$TOKEN\" and .properties.hsm.module == \"$MOD\" and .properties.hsm.pinFile == \"$T/user.pin\"" \
    "vault records module, token and PIN file path"
expect_ok cmk vault set-policy --name hv --object-id "$PRINCIPAL" --key-permissions get wrapKey unwrapKey
expect_false "no PIN anywhere in the home" grep -rqF "$USER_PIN" "$CMKSTORE_HOME"

expect_ok cmk vault create --name sv
expect_exit 6 cmk vault key create --vault-name sv --name k --kty RSA-HSM
expect_err_match "vault 'sv' is not HSM-backed.*--hsm-token" "RSA-HSM in a software vault: refused"

expect_ok cmk vault key create --vault-name hv --name hk --kty RSA-HSM
cp "$OUT" "$T/v1.json"
V1=$(jq -r .key.kid "$T/v1.json")
KID_NOVER=local://hv/keys/hk
V1HEX=${V1##*/}
expect_true "RSA-HSM version: a local key id whose version is the CKA_ID (sequence 1)" \
    grep -Eq '^local://hv/keys/hk/00000001[0-9a-f]{24}$' <<<"$V1"
expect_json '.key.kty == "RSA-HSM" and .hsm.label == "hv.hk" and .hsm.token == "cmk-tok"' \
    "key create: RSA-HSM in token cmk-tok, label hv.hk" "$T/v1.json"
expect_json '(.key | has("d") or has("p") or has("q")) | not' "key create: no private part" "$T/v1.json"
expect_false "no private key file in the vault" \
    bash -c "find '$CMKSTORE_HOME/vaults/hv' -name '*.pem' | grep -q ."
ACCESS=$(privkey_access hv.hk "$V1HEX")
expect_true "private key in the token is sensitive ($ACCESS)" grep -Eq '(^|, )sensitive(,|$)' <<<"$ACCESS"
expect_true "private key in the token is never extractable ($ACCESS)" \
    grep -q 'never extractable' <<<"$ACCESS"
expect_false "private key in the token is not extractable ($ACCESS)" \
    grep -Eq '(^|, )extractable(,|$)' <<<"$ACCESS"
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.hk$')" 1 \
    "one private key object for version 1"

# ---- stores: versionless (automatic rotation) and versioned (manual)
SA=$T/sa SM=$T/sm
expect_ok cmk create --store "$SA" --identity hid --key-encryption-key "$KID_NOVER"
expect_json ".encryption.keyVaultProperties.versionedKeyIdentifier == \"$V1\"" \
    "versionless store starts on version 1"
expect_ok cmk create --store "$SM" --identity hid --key-encryption-key "$V1"
gen_random hsm1 3145800 "$T/big"
gen_text hsm2 70000 "$T/small"
: >"$T/emp"
for s in "$SA" "$SM"; do
    for f in big small emp; do
        cmk blob put --store "$s" "$T/$f" >"$T/$(basename "$s").$f.digest"
    done
done
# check_blobs STORE WHAT: every blob put so far reads back byte-exact.
check_blobs() {
    local f d b=0
    for f in big small emp; do
        d=$(cat "$T/$(basename "$1").$f.digest")
        cmk blob get --store "$1" "$d" -o "$T/got" 2>"$ERR" && cmp -s "$T/$f" "$T/got" || b=$((b + 1))
    done
    expect_eq "$b" 0 "$2: every blob reads back byte-exact"
}
check_blobs "$SA" "put/get (versionless)"
check_blobs "$SM" "put/get (versioned)"
expect_ok cmk vault audit --name hv
expect_true "audit log records the store's unwrapKey on the RSA-HSM version" \
    jq -se "map(select(.operation == \"unwrapKey\" and .version == \"$V1HEX\" and .result == \"allowed\" and .identity == \"$PRINCIPAL\")) | length > 0" "$OUT"

# ---- manual rotation to a new version (created in the token)
expect_ok cmk vault key create --vault-name hv --name hk --kty RSA-HSM
V2=$(jq -r .key.kid "$OUT")
expect_true "second version has sequence 2" grep -Eq '^local://hv/keys/hk/00000002[0-9a-f]{24}$' <<<"$V2"
expect_ok cmk vault key show --vault-name hv --name hk
expect_json ".key.kid == \"$V2\"" "latest version is the new one"
expect_ok cmk encryption rotate-key --store "$SM" --key-encryption-key "$V2"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V2\"" "manual rotation to version 2"
expect_true "keyring: every DEK wrapped by version 2" \
    jq -e --arg v "$V2" '[.deks[].kid] | all(. == $v)' "$SM/keyring.json"
check_blobs "$SM" "after manual rotation"

# ---- automatic rotation: `encryption check` forces the rotation check
expect_ok cmk encryption check --store "$SA"
expect_json ".rotated == true and .keyVaultProperties.versionedKeyIdentifier == \"$V2\"" \
    "encryption check: versionless store follows version 2"
check_blobs "$SA" "after automatic rotation"
expect_ok cmk encryption check --store "$SA"
expect_json '.rotated == false' "encryption check again: nothing to rotate"

# ---- automatic rotation by a running process (--rotation-check-interval)
SW=$T/sw
expect_ok cmk create --store "$SW" --identity hid --key-encryption-key "$KID_NOVER" \
    --rotation-check-interval 1 --key-check-interval 1
cmk blob put --store "$SW" "$T/small" >"$T/sw.small.digest"
"$CMKSTORE_BIN" encryption watch --store "$SW" --duration 120 >"$T/watch.out" 2>"$T/watch.err" &
WATCH=$!
expect_true "watch is up" wait_for 60 grep -q versionedKeyIdentifier "$T/watch.out"
expect_ok cmk vault key create --vault-name hv --name hk --kty RSA-HSM
V3=$(jq -r .key.kid "$OUT")
expect_true "running store rotates to version 3 by itself" \
    wait_for 60 grep -qF "\"$V3\"" "$T/watch.out"
kill "$WATCH" 2>/dev/null || true
wait "$WATCH" 2>/dev/null || true
expect_ok cmk encryption show --store "$SW"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V3\"" "rotation by the watcher is saved"
expect_ok cmk blob get --store "$SW" "$(cat "$T/sw.small.digest")" -o "$T/got"
expect_true "blob reads back after the watcher's rotation" cmp "$T/small" "$T/got"

# ---- a vault without a recorded PIN file takes the PIN from the environment at each use
expect_ok env CMKSTORE_PKCS11_PIN_FILE="$T/user.pin" "$CMKSTORE_BIN" vault create --name hv2 \
    --hsm-token "$TOKEN" --hsm-module "$MOD"
expect_json '.properties.hsm.pinFile == null' "hv2: no PIN file recorded"
expect_ok env CMKSTORE_PKCS11_PIN_FILE="$T/user.pin" "$CMKSTORE_BIN" vault key create \
    --vault-name hv2 --name ek --kty RSA-HSM
expect_json '.key.keyOps == ["encrypt","decrypt","wrapKey","unwrapKey"]' \
    "RSA-HSM key operations: no sign/verify"
key_fails 5 "no PKCS#11 user PIN configured" "hv2 without a PIN in the environment" \
    cmk vault key create --vault-name hv2 --name ek --kty RSA-HSM
expect_ok cmk vault key list-versions --vault-name hv2 --name ek
expect_json 'length == 1' "failed key create added no version"

# ---- the vault still gates use: policy, enable/disable, soft delete (all restorable)
D_SMALL=$(cat "$T/sa.small.digest")
expect_ok cmk vault delete-policy --name hv --object-id "$PRINCIPAL"
key_fails 5 "no access policy in vault 'hv'" "policy removed: key access" \
    cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_ok cmk vault set-policy --name hv --object-id "$PRINCIPAL" --key-permissions get wrapKey unwrapKey
expect_ok cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_ok cmk vault key set-attributes --vault-name hv --name hk --enabled false
key_fails 5 "is disabled" "key disabled: key access" cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_ok cmk vault key set-attributes --vault-name hv --name hk --enabled true
expect_ok cmk vault key delete --vault-name hv --name hk
key_fails 5 "is deleted.*vault key recover" "key soft-deleted: key access" \
    cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.hk$')" 3 \
    "soft delete leaves the token objects alone"
expect_ok cmk vault key recover --vault-name hv --name hk
check_blobs "$SA" "after re-enable, new policy and recover"

# ---- token removed (its directory moved away) and back: restorable
mv "$T/tokens" "$T/tokens.away"
mkdir -m 700 "$T/tokens"
key_fails 5 "no PKCS#11 token labelled \"cmk-tok\"" "token removed: key access, names the token" \
    cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
key_fails 5 "no PKCS#11 token labelled" "token removed: put refused too" cmk blob put --store "$SA" "$T/small"
rmdir "$T/tokens"
mv "$T/tokens.away" "$T/tokens"
check_blobs "$SA" "token back"

# ---- wrong PIN in the vault's PIN file, then fixed: restorable
cp "$T/user.pin" "$T/user.pin.good"
cp "$T/wrong.pin" "$T/user.pin"
key_fails 5 "C_Login.*PIN" "wrong PIN: key access" cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_err_match "user\.pin" "wrong PIN: names the PIN file"
cp "$T/user.pin.good" "$T/user.pin"
check_blobs "$SA" "PIN fixed"

# ---- direct pkcs11: key identifiers (module and PIN from the environment)
# Versions made with pkcs11-tool, as an HSM administrator would: CKA_ID = 4-byte sequence ||
# 12 random bytes, private key sensitive.
mkver() { # SEQ -> CKA_ID hex
    local id
    id=$(printf '%08x' "$1")$(openssl rand -hex 12)
    p11 --keypairgen --key-type rsa:2048 --id "$id" --label direct --usage-decrypt --sensitive >/dev/null
    echo "$id"
}
pct() { # hex -> %XX%XX...
    sed 's/../%\U&/g' <<<"$1"
}
export CMKSTORE_PKCS11_MODULE=$MOD CMKSTORE_PKCS11_PIN_FILE=$T/user.pin
ID1=$(mkver 1)
SD=$T/sd
P11_NOVER="pkcs11:token=$TOKEN;object=direct"
expect_ok cmk create --store "$SD" --identity hid --key-encryption-key "$P11_NOVER"
expect_json ".encryption.keyVaultProperties.versionedKeyIdentifier == \"$P11_NOVER;id=$(pct "$ID1")\"" \
    "direct pkcs11: store on version 1 (id = CKA_ID)"
for f in big small emp; do cmk blob put --store "$SD" "$T/$f" >"$T/sd.$f.digest"; done
check_blobs "$SD" "direct pkcs11: put/get"
ID2=$(mkver 2)
expect_ok cmk encryption check --store "$SD"
expect_json ".rotated == true and .keyVaultProperties.versionedKeyIdentifier == \"$P11_NOVER;id=$(pct "$ID2")\"" \
    "direct pkcs11: automatic rotation to the highest sequence"
check_blobs "$SD" "direct pkcs11: after rotation"
SDM=$T/sdm
expect_ok cmk create --store "$SDM" --identity hid --key-encryption-key "$P11_NOVER;id=$(pct "$ID1")"
expect_json '.encryption.keyVaultProperties.keyRotationEnabled == false' "direct versioned id: manual rotation"
cmk blob put --store "$SDM" "$T/small" >"$T/sdm.small.digest"
expect_ok cmk encryption rotate-key --store "$SDM" --key-encryption-key "$P11_NOVER;id=$(pct "$ID2")"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$P11_NOVER;id=$(pct "$ID2")\"" \
    "direct pkcs11: manual rotation to version 2"
expect_ok cmk blob get --store "$SDM" "$(cat "$T/sdm.small.digest")" -o "$T/got"
expect_true "direct pkcs11: blob reads back after manual rotation" cmp "$T/small" "$T/got"
D_SD=$(cat "$T/sd.small.digest")
# A store made with an identifier that names the module (module-path) still opens where
# that module is the operator's (variable or --pkcs11-module); elsewhere the identifier's
# module is refused, not loaded, and its pin-source is never the PIN.
SQ=$T/sq
expect_ok cmk create --store "$SQ" --identity hid \
    --key-encryption-key "$P11_NOVER?module-path=$MOD&pin-source=file:$T/wrong.pin"
cmk blob put --store "$SQ" "$T/small" >"$T/sq.small.digest"
expect_ok env -u CMKSTORE_PKCS11_MODULE "$CMKSTORE_BIN" --pkcs11-module "$MOD" blob get \
    --store "$SQ" "$(cat "$T/sq.small.digest")" -o "$T/got"
expect_true "module-path store: reads back with --pkcs11-module naming the same module" \
    cmp "$T/small" "$T/got"
key_fails 5 "names module .*, which was not loaded" "module-path store: no operator module, refused" \
    env -u CMKSTORE_PKCS11_MODULE "$CMKSTORE_BIN" blob get --store "$SQ" "$(cat "$T/sq.small.digest")" -o "$T/got"

# errors with direct identifiers
key_fails 5 "cannot load PKCS#11 module $T/nosuch\.so" "direct: missing module" \
    env CMKSTORE_PKCS11_MODULE="$T/nosuch.so" "$CMKSTORE_BIN" blob get --store "$SD" "$D_SD" -o "$T/got"
key_fails 5 "no PKCS#11 module configured" "direct: no module configured" \
    env -u CMKSTORE_PKCS11_MODULE "$CMKSTORE_BIN" blob get --store "$SD" "$D_SD" -o "$T/got"
key_fails 5 "C_Login.*PIN.*wrong\.pin" "direct: wrong PIN" \
    env CMKSTORE_PKCS11_PIN_FILE="$T/wrong.pin" "$CMKSTORE_BIN" blob get --store "$SD" "$D_SD" -o "$T/got"
key_fails 5 "no PKCS#11 user PIN configured" "direct: no PIN configured" \
    env -u CMKSTORE_PKCS11_PIN_FILE "$CMKSTORE_BIN" blob get --store "$SD" "$D_SD" -o "$T/got"
key_fails 5 'no PKCS#11 token labelled "nosuch"' "direct: missing token" \
    cmk create --store "$T/x1" --identity hid --key-encryption-key "pkcs11:token=nosuch;object=direct"
key_fails 5 'key "nokey" is not in PKCS#11 token "cmk-tok"' "direct: missing key" \
    cmk create --store "$T/x2" --identity hid --key-encryption-key "pkcs11:token=$TOKEN;object=nokey"
key_fails 2 "pin-value" "direct: a PIN in the key identifier is refused" \
    cmk create --store "$T/x3" --identity hid --key-encryption-key "pkcs11:token=$TOKEN;object=direct?pin-value=$USER_PIN"
key_fails 5 "local://hv/keys/nokey not found" "vault: missing key" \
    cmk create --store "$T/x4" --identity hid --key-encryption-key local://hv/keys/nokey
expect_true "failed creates left no store" test ! -e "$T/x1" -a ! -e "$T/x2" -a ! -e "$T/x3" -a ! -e "$T/x4"
unset CMKSTORE_PKCS11_MODULE CMKSTORE_PKCS11_PIN_FILE

# ---- revocation: destroy the key objects in the token (not restorable)
V3HEX=${V3##*/}
expect_ok cmk encryption check --store "$SA"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V3\"" "versionless store on version 3"
snapshot "$SA/blobs" >"$T/snap.before"
# A running store (key check every second) notices the revocation by itself.
"$CMKSTORE_BIN" encryption watch --store "$SW" --duration 120 >"$T/watch2.out" 2>"$T/watch2.err" &
WATCH=$!
expect_true "watcher is up on version 3" wait_for 60 grep -qF "\"$V3\"" "$T/watch2.out"
expect_true "destroy version 3's private key with pkcs11-tool" \
    p11 --delete-object --type privkey --id "$V3HEX"
expect_true "running store: access lost within its key-check interval" \
    wait_for 60 grep -q '"keyAccessible":false' "$T/watch2.out"
expect_true "running store: the reason is the missing key object" \
    grep -q '"error":"CMK_E_KEY_NOT_FOUND".*is not in PKCS#11 token' "$T/watch2.out"
kill "$WATCH" 2>/dev/null || true
wait "$WATCH" 2>/dev/null || true
expect_true "destroy version 3's public key with pkcs11-tool" \
    p11 --delete-object --type pubkey --id "$V3HEX"
key_fails 5 "version $V3HEX is not in PKCS#11 token \"cmk-tok\".*destroyed" \
    "revoked: get fails with key access, says the key object is gone" \
    cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
expect_err_match "new or imported key is a different key" "revoked: says a new key is no restore"
key_fails 5 "is not in PKCS#11 token" "revoked: put fails" cmk blob put --store "$SA" "$T/small"
key_fails 5 "is not in PKCS#11 token" "revoked: the watcher's store too" \
    cmk blob get --store "$SW" "$(cat "$T/sw.small.digest")" -o "$T/got"
snapshot "$SA/blobs" >"$T/snap.after"
expect_true "revoked: no blob file changed" cmp "$T/snap.before" "$T/snap.after"
# Re-creating is not a restore: version 4 is a new key pair, and the data keys were wrapped
# by version 3, so the store cannot move to it.
expect_ok cmk vault key create --vault-name hv --name hk --kty RSA-HSM
key_fails 5 "is not in PKCS#11 token" "new version after revocation: still no access" \
    cmk blob get --store "$SA" "$D_SMALL" -o "$T/got"
key_fails 5 "is not in PKCS#11 token" "new version after revocation: rotation cannot unwrap" \
    cmk encryption check --store "$SA"
# The store pinned on version 2 is unaffected.
check_blobs "$SM" "store on version 2 after version 3's revocation"

# ---- purge destroys the token objects of the key's versions; without the token it is
# refused and nothing is lost
expect_ok cmk vault key delete --vault-name hv --name hk
mv "$T/tokens" "$T/tokens.away"
mkdir -m 700 "$T/tokens"
key_fails 5 'no PKCS#11 token labelled "cmk-tok"' "purge without the token: refused" \
    cmk vault key purge --vault-name hv --name hk
rmdir "$T/tokens"
mv "$T/tokens.away" "$T/tokens"
expect_ok cmk vault key list-deleted --vault-name hv
expect_json 'map(select(.kid | test("/keys/hk"))) | length == 1' "refused purge: key still soft-deleted"
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.hk$')" 3 \
    "refused purge: token objects still there (versions 1, 2, 4)"
expect_ok cmk vault key purge --vault-name hv --name hk
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.hk$')" 0 \
    "purge: no key object of hv.hk left in the token"
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *direct$')" 2 \
    "purge: other keys in the token untouched"
key_fails 5 "not found" "purged: the versioned store has lost its key" \
    cmk blob get --store "$SM" "$(cat "$T/sm.small.digest")" -o "$T/got"

# ---- purging the whole vault destroys the token objects of all its keys
expect_ok cmk vault key create --vault-name hv --name other --kty RSA-HSM
expect_ok cmk vault key create --vault-name hv --name other --kty RSA-HSM
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.other$')" 2 \
    "two versions of hv.other in the token"
expect_ok cmk vault delete --name hv
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.other$')" 2 \
    "vault soft delete leaves the token alone"
expect_ok cmk vault purge --name hv
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *hv\.')" 0 \
    "vault purge: no key object of the vault left in the token"
expect_eq "$(p11 --list-objects --type privkey | grep -c 'label: *direct$')" 2 \
    "vault purge: other keys in the token untouched"

# ---- no PIN in any file the test or cmkstore wrote (stores, home, logs, captured output),
# apart from the PIN files themselves and SoftHSM's own token files
expect_false "no PIN in any store, home, log or captured output" \
    grep -rlF -e "$USER_PIN" -e "$WRONG_PIN" -e "$SO_PIN" "$T" --exclude='*.pin' \
    --exclude='*.pin.good' --exclude-dir=tokens
