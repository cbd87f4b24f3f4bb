#!/usr/bin/env bash
# test_lifecycle_revocation.sh — revocation and restore round trips through the CLI, for each
# cause: access policy deleted / set again, key disabled / enabled, key deleted / recovered
# (soft delete), vault deleted / recovered. While revoked, get and put exit 5 with a message
# naming the key and the identity, nothing is output, and `encryption show` reports the key
# as not accessible with the reason. After the restore every blob is intact. A long-running
# process (`encryption watch`, key-check interval 1 s) notices the loss and the restore by
# itself, and the event log records both.
source "$(dirname "$0")/lib.sh"

WATCH_PID=
cleanup_bg() {
    if [ -n "$WATCH_PID" ]; then
        kill "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
    fi
}
on_exit cleanup_bg

setup_cmk v
S=$T/store
expect_ok cmk create --store "$S" --identity vid --key-encryption-key "$KID"
N=3
for i in $(seq 1 $N); do
    gen_random "rev$i" $((150000 * i)) "$T/b$i"
    cmk blob put --store "$S" "$T/b$i" >"$T/d$i"
done
gen_random newblob 4000 "$T/new"

all_intact() {
    local i
    for i in $(seq 1 $N); do
        rm -f "$T/got"
        "$CMKSTORE_BIN" blob get --store "$S" "$(cat "$T/d$i")" -o "$T/got" 2>/dev/null &&
            cmp -s "$T/b$i" "$T/got" || return 1
    done
}

# revoked ERRNAME WHAT WORD: every key-using command fails as it must while access is
# revoked; the get's message says WORD (denied, disabled...).
revoked() {
    local want=$1 what=$2 word=$3
    rm -f "$T/out"
    expect_exit 5 cmk blob get --store "$S" "$(cat "$T/d1")" -o "$T/out"
    expect_err_match "$word" "$what: the error says '$word'"
    expect_err_match "$KID" "$what: get names the key"
    expect_err_match "$PRINCIPAL" "$what: get names the identity"
    expect_false "$what: get wrote no output file" test -e "$T/out"
    expect_exit 5 cmk blob get --store "$S" "$(cat "$T/d2")"
    expect_eq "$(stat -c %s "$OUT")" 0 "$what: get to stdout printed nothing"
    expect_exit 5 cmk blob put --store "$S" "$T/new"
    expect_err_match "$KID" "$what: put names the key"
    expect_exit 5 cmk blob verify --store "$S" "$(cat "$T/d3")"
    expect_exit 5 cmk encryption check --store "$S" --no-rotate
    expect_ok cmk encryption show --store "$S"
    expect_json ".keyAccess.accessible == false and .keyAccess.error == \"$want\"" \
        "$what: encryption show: not accessible, $want"
    expect_json ".keyAccess.reason | contains(\"$KID\") and contains(\"$PRINCIPAL\")" \
        "$what: encryption show: the reason names the key and the identity"
    expect_ok cmk blob ls --store "$S"
    expect_json "length == $N" "$what: nothing was added"
}

restored() { # WHAT
    expect_ok cmk encryption check --store "$S" --no-rotate
    expect_json '.keyAccess.accessible == true and .keyAccess.error == null' \
        "$1: encryption check: accessible again"
    expect_true "$1: every blob intact (byte-exact)" all_intact
}

snapshot "$S" >"$T/snap0"

# ---- 1. access policy deleted, then set again
expect_ok cmk vault delete-policy --name vvault --object-id "$PRINCIPAL"
revoked CMK_E_KEY_DENIED "policy deleted" denied
expect_ok cmk vault set-policy --name vvault --object-id "$PRINCIPAL" \
    --key-permissions get unwrapKey wrapKey
restored "policy set again"

# ---- 2. key disabled, then enabled
expect_ok cmk vault key set-attributes --vault-name vvault --name vkey --enabled false
revoked CMK_E_KEY_DISABLED "key disabled" disabled
expect_ok cmk vault key set-attributes --vault-name vvault --name vkey --enabled true
restored "key enabled"

# ---- 3. key deleted (soft), then recovered
expect_ok cmk vault key delete --vault-name vvault --name vkey
revoked CMK_E_KEY_DELETED "key deleted" deleted
expect_exit 6 cmk vault key purge --vault-name vvault --name vkey
expect_ok cmk vault key recover --vault-name vvault --name vkey
restored "key recovered"

# ---- 4. vault deleted, then recovered
expect_ok cmk vault delete --name vvault
revoked CMK_E_KEY_DELETED "vault deleted" deleted
expect_ok cmk vault recover --name vvault
restored "vault recovered"

snapshot "$S" >"$T/snap1"
expect_true "revocations and restores changed no file of the store" cmp "$T/snap0" "$T/snap1"
expect_ok cmk blob put --store "$S" "$T/new"
expect_eq "$(cat "$OUT")" "$(oci_digest "$T/new")" "after the restores: put works"

# ---- a long-running process notices within its key-check interval, and recovers by itself
expect_ok cmk encryption update --store "$S" --key-check-interval 1
"$CMKSTORE_BIN" encryption watch --store "$S" --duration 120 >"$T/watch.out" 2>"$T/watch.err" &
WATCH_PID=$!
expect_true "watch: starts accessible" wait_for 20 grep -q '"keyAccessible":true' "$T/watch.out"
# last_is PATTERN: the watcher's latest line matches PATTERN (its keys are sorted: dekCount,
# error, keyAccessible, reason, time, versionedKeyIdentifier).
last_is() {
    tail -n 1 "$T/watch.out" | grep -q -- "$1"
}
for cause in policy disable delete; do
    case $cause in
    policy)
        want=CMK_E_KEY_DENIED
        cmk vault delete-policy --name vvault --object-id "$PRINCIPAL" >/dev/null
        ;;
    disable)
        want=CMK_E_KEY_DISABLED
        cmk vault key set-attributes --vault-name vvault --name vkey --enabled false >/dev/null
        ;;
    delete)
        want=CMK_E_KEY_DELETED
        cmk vault key delete --vault-name vvault --name vkey >/dev/null
        ;;
    esac
    expect_true "watch ($cause): notices the loss ($want)" wait_for 20 \
        last_is "\"error\":\"$want\",\"keyAccessible\":false"
    case $cause in
    policy)
        cmk vault set-policy --name vvault --object-id "$PRINCIPAL" \
            --key-permissions get unwrapKey wrapKey >/dev/null
        ;;
    disable) cmk vault key set-attributes --vault-name vvault --name vkey --enabled true >/dev/null ;;
    delete) cmk vault key recover --vault-name vvault --name vkey >/dev/null ;;
    esac
    expect_true "watch ($cause): notices the restore" wait_for 20 last_is '"keyAccessible":true'
done
expect_true "watch: each loss printed with its reason naming the key" \
    jq -e -s --arg k "$KID" '[.[] | select(.keyAccessible == false)] | length >= 3 and all(.reason | contains($k))' \
    "$T/watch.out"
kill -TERM "$WATCH_PID"
wrc=0
wait "$WATCH_PID" || wrc=$?
WATCH_PID=
expect_eq "$wrc" 0 "watch exits 0 on SIGTERM"
expect_true "after the round trips: every blob intact" all_intact

# ---- events
expect_ok cmk events --store "$S" --type key.access
cp "$OUT" "$T/ev"
expect_true "events: accessLost three times (policy, disable, delete), each with its reason" \
    jq -e -s --arg k "$KID" --arg p "$PRINCIPAL" \
    '[.[] | select(.event == "key.accessLost")] | length == 3 and all(.keyIdentifier == $k and .identity == $p) and (map(.error) == ["CMK_E_KEY_DENIED", "CMK_E_KEY_DISABLED", "CMK_E_KEY_DELETED"])' \
    "$T/ev"
expect_true "events: accessRestored three times" \
    jq -e -s '[.[] | select(.event == "key.accessRestored")] | length == 3' "$T/ev"
expect_true "events: lost and restored alternate" \
    jq -e -s 'map(.event) == ["key.accessLost", "key.accessRestored", "key.accessLost", "key.accessRestored", "key.accessLost", "key.accessRestored"]' "$T/ev"
