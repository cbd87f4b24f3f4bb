#!/usr/bin/env bash
# test_serve_keyfaults.sh — key checks fail closed on every fault, while `cmkstore serve` runs
# (key check every second, grace 2 s). Each fault that is not a denial - a damaged vault.json,
# key.json or private key, a damaged or missing keyring - is recorded as key.unreachable with
# its cause, then fails closed at the end of the grace (503 naming the key, metrics say
# why), and repairing the file brings service back at a later check, in the same process. A
# vanished vault directory or private key is a denial: closed at once. A denial while the
# keyring is damaged is still a denial. One server process throughout.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

registry_with_grace 2
start_server srv --key-check-interval 1
PID0=$SRV_PID
PRINCIPAL=$(cmk identity show --name registry-identity | jq -r .principalId)
V=$CMKSTORE_HOME/vaults/registry-vault
KD=$V/keys/registry-key
PEM=$(ls "$KD"/*.pem)
B=$T/body
EV=$S/events.log

gen_random kf 70000 "$T/b1"
D1=$(oci_digest "$T/b1")
expect_eq "$(push_blob kf/app "$T/b1")" 201 "push a layer"
blob_status() { hcurl "$B" "$URL/v2/kf/app/blobs/$D1"; }
is_status() { [ "$(blob_status)" == "$1" ]; }
metrics() { hcurl "$T/m" "$URL/metrics" >/dev/null; }
state_is() { # STATE REASON
    metrics && grep -q "^cmkstore_key_state{state=\"$1\",reason=\"$2\"} 1" "$T/m"
}
n_events() { grep -c "\"event\":\"$1\"" "$EV" || true; }
more_events() { [ "$(n_events "$1")" -gt "$2" ]; }
last_event() { grep "\"event\":\"$1\"" "$EV" | tail -1 || true; }
checks() { metrics && sed -n 's/^cmkstore_key_checks_total //p' "$T/m"; }
checks_above() { [ "$(checks)" -gt "$1" ]; }

expect_eq "$(blob_status)" 200 "pull works"
expect_true "metrics: key accessible, no fault" state_is accessible none

# fault_case WHAT CAUSE DAMAGE REPAIR: a fault that counts as unreachable.
fault_case() {
    local what=$1 cause=$2 damage=$3 repair=$4 u0 l0 c0
    u0=$(n_events key.unreachable)
    l0=$(n_events key.accessLost)
    eval "$damage"
    if wait_for 30 more_events key.unreachable "$u0"; then
        ok "$what: key.unreachable recorded"
    else
        not_ok "$what: no key.unreachable event in 30 s"
    fi
    last_event key.unreachable >"$T/ev"
    expect_json ".cause == \"$cause\"" "$what: ... its cause is $cause" "$T/ev"
    if wait_for 30 is_status 503; then ok "$what: pulls fail closed (503) after the grace"; else
        not_ok "$what: pulls still answer $(blob_status) 30 s after the fault"; fi
    blob_status >/dev/null
    expect_json '.errors[0].detail.error == "CMK_E_KEY_UNREACHABLE"' "$what: ... unreachable" "$B"
    expect_true "$what: ... the server log names the fault" \
        grep -qF "key check failed ($cause)" "$SRV_ERR"
    expect_eq "$(n_events key.accessLost)" "$((l0 + 1))" "$what: key.accessLost recorded once"
    last_event key.accessLost >"$T/ev"
    expect_json ".cause == \"$cause\" and (.reason | test(\"grace\"))" \
        "$what: ... at the end of the grace" "$T/ev"
    expect_true "$what: metrics: state lost, reason $cause" state_is lost "$cause"
    expect_true "$what: ... cmkstore_key_revoked 1" grep -q '^cmkstore_key_revoked 1' "$T/m"
    c0=$(checks)
    expect_true "$what: key checks go on counting" wait_for 30 checks_above "$c0"
    eval "$repair"
    if wait_for 30 is_status 200; then ok "$what: repaired: pulls work again"; else
        not_ok "$what: still $(blob_status) 30 s after the repair"; fi
    blob_status >/dev/null
    expect_true "$what: ... same bytes" cmp "$B" "$T/b1"
    expect_true "$what: metrics: accessible again" state_is accessible none
}

# denial_case WHAT ERROR DAMAGE REPAIR [any]: fails closed at the first check, no grace
# (with "any", a grace the damage may have started first is not counted against it).
denial_case() {
    local what=$1 want=$2 damage=$3 repair=$4 u0
    u0=$(n_events key.unreachable)
    eval "$damage"
    if wait_for 30 is_status 503; then ok "$what: pulls fail closed (503)"; else
        not_ok "$what: pulls still answer $(blob_status) 30 s after the fault"; fi
    blob_status >/dev/null
    expect_json ".errors[0].detail.error == \"$want\"" "$what: ... $want, not a grace" "$B"
    [ "${5:-}" == any ] ||
        expect_eq "$(n_events key.unreachable)" "$u0" "$what: no grace period was started"
    expect_true "$what: metrics: state lost, reason $want" state_is lost "$want"
    eval "$repair"
    if wait_for 30 is_status 200; then ok "$what: repaired: pulls work again"; else
        not_ok "$what: still $(blob_status) 30 s after the repair"; fi
}

cp -p "$V/vault.json" "$T/vault.json"
cp -p "$KD/key.json" "$T/key.json"
cp -p "$PEM" "$T/key.pem"
cp -p "$S/keyring.json" "$T/keyring.json"

fault_case "vault.json = {" CMK_E_CORRUPT \
    'printf "{" >"$V/vault.json"' 'cp "$T/vault.json" "$V/vault.json"'
fault_case "key.json = {" CMK_E_CORRUPT \
    'printf "{" >"$KD/key.json"' 'cp "$T/key.json" "$KD/key.json"'
fault_case "private key truncated" CMK_E_CORRUPT \
    'head -c 600 "$T/key.pem" >"$PEM"' 'cp "$T/key.pem" "$PEM"'
fault_case "keyring + 1 byte" CMK_E_CORRUPT \
    'printf x >>"$S/keyring.json"' 'cp "$T/keyring.json" "$S/keyring.json"'
fault_case "keyring missing" CMK_E_NOT_FOUND \
    'mv "$S/keyring.json" "$T/kr.moved"' 'mv "$T/kr.moved" "$S/keyring.json"'
denial_case "vault directory vanished" CMK_E_KEY_NOT_FOUND \
    'mv "$V" "$T/vault.moved"' 'mv "$T/vault.moved" "$V"'
denial_case "private key missing" CMK_E_KEY_NOT_FOUND \
    'mv "$PEM" "$T/pem.moved"' 'mv "$T/pem.moved" "$PEM"'
# A denial while the keyring is damaged: the check still reaches the vault with the keyring
# it holds, and the denial closes at once.
denial_case "keyring damaged, then delete-policy" CMK_E_KEY_DENIED \
    'printf x >>"$S/keyring.json"; cmk vault delete-policy --name registry-vault --object-id "$PRINCIPAL" >/dev/null' \
    'cp "$T/keyring.json" "$S/keyring.json"; cmk vault set-policy --name registry-vault --object-id "$PRINCIPAL" --key-permissions get wrapKey unwrapKey >/dev/null' any

expect_true "every restore recorded" test "$(n_events key.accessRestored)" -eq 8
expect_eq "$SRV_PID" "$PID0" "one server process throughout"
expect_true "... still running" kill -0 "$SRV_PID"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
