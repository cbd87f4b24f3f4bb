#!/usr/bin/env bash
# test_lifecycle_rotation.sh — key rotation through the CLI touches no blob: every file under
# blobs/ is byte-identical (and keeps its inode and mtime) after a manual rotation, after an
# automatic one by `encryption check`, and after one made by a long-running process
# (`encryption watch`) with a 1 s rotation-check interval; all blobs still read after the old
# key version is disabled; rotate-dek gives new blobs a new DEK; the event log records the
# rotations with their from/to versions; `encryption update` changes the intervals.
source "$(dirname "$0")/lib.sh"

WATCH_PID=
FOLLOW_PID=
cleanup_bg() {
    local p
    for p in $WATCH_PID $FOLLOW_PID; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
on_exit cleanup_bg

# Every blob file's content hash, by path.
blob_sums() {
    (cd "$1/blobs" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

# verify_all STORE: every blob reads back and matches its digest (in new processes).
verify_all() {
    local d bad=0 n=0
    while read -r d; do
        n=$((n + 1))
        "$CMKSTORE_BIN" blob verify --store "$1" "$d" >/dev/null 2>"$ERR" || {
            bad=$((bad + 1))
            sed 's/^/#   /' "$ERR" | head -3
        }
    done < <(jq -r '.[]' "$T/digests.json")
    [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]
}

version_of() { # KID -> its version
    echo "${1##*/}"
}

setup_cmk r
V1=$KID
S=$T/store
expect_ok cmk create --store "$S" --identity rid --key-encryption-key "$KID_NOVER" \
    --rotation-check-interval 1 --key-check-interval 1
expect_json '.encryption.keyVaultProperties.keyRotationEnabled == true' \
    "versionless key: automatic rotation on"
expect_ok cmk encryption show --store "$S"
expect_json '.rotationCheckIntervalSeconds == 1 and .keyCheckIntervalSeconds == 1' \
    "create: intervals kept in the store config"

# Blobs under three DEKs.
for i in $(seq 1 9); do
    if [ $((i % 3)) -eq 1 ] && [ "$i" -gt 1 ]; then
        expect_ok cmk encryption rotate-dek --store "$S"
    fi
    gen_random "rot$i" $((1000 * i + 70000)) "$T/b$i"
    cmk blob put --store "$S" "$T/b$i" >>"$T/digests.txt"
done
jq -R . "$T/digests.txt" | jq -s . >"$T/digests.json"
expect_ok cmk encryption show --store "$S"
expect_json '.dekCount == 3 and .currentDekId == 3' "rotate-dek: three data keys"
expect_ok cmk blob stat --store "$S" "$(sed -n 1p "$T/digests.txt")"
expect_json '.dekId == 1' "first blob keeps DEK 1"
expect_ok cmk blob stat --store "$S" "$(sed -n 9p "$T/digests.txt")"
expect_json '.dekId == 3' "last blob has DEK 3"

blob_sums "$S" >"$T/sums0"
snapshot "$S/blobs" >"$T/snap0"
expect_eq "$(wc -l <"$T/sums0")" 9 "nine blob files"
same_blobs() { # WHAT
    blob_sums "$S" >"$T/sums1"
    snapshot "$S/blobs" >"$T/snap1"
    expect_true "$1: every blob file byte-identical" cmp "$T/sums0" "$T/sums1"
    expect_true "$1: no blob file rewritten, created or removed (inode, mtime)" \
        cmp "$T/snap0" "$T/snap1"
}

# ---- manual rotation to a new version (versioned: automatic rotation off)
cmk vault key create --vault-name rvault --name rkey >"$T/v2.json"
V2=$(jq -r .key.kid "$T/v2.json")
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$V2" --identity rid
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V2\" and .keyVaultProperties.keyRotationEnabled == false" \
    "manual rotation: new version, automatic rotation off"
expect_json '.keyVaultProperties.lastKeyRotationTimestamp != null' \
    "manual rotation: lastKeyRotationTimestamp set"
expect_true "keyring: every DEK wrapped by the new version" \
    jq -e --arg v "$V2" '[.deks[].kid] | length == 3 and all(. == $v)' "$S/keyring.json"
same_blobs "manual rotation"
expect_ok cmk vault key set-attributes --vault-name rvault --name rkey \
    --version "$(version_of "$V1")" --enabled false
expect_true "old version disabled: every blob reads and verifies" verify_all "$S"

# ---- back to the versionless id; `encryption check` follows a new version
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$KID_NOVER"
expect_json ".keyVaultProperties.keyRotationEnabled == true and .keyVaultProperties.versionedKeyIdentifier == \"$V2\"" \
    "versionless again: automatic rotation on, latest version"
cmk vault key create --vault-name rvault --name rkey >"$T/v3.json"
V3=$(jq -r .key.kid "$T/v3.json")
expect_ok cmk encryption check --store "$S" --no-rotate
expect_json ".rotated == false and .keyVaultProperties.versionedKeyIdentifier == \"$V2\"" \
    "check --no-rotate: no rotation"
expect_ok cmk encryption check --store "$S"
expect_json ".rotated == true and .keyVaultProperties.versionedKeyIdentifier == \"$V3\"" \
    "check: follows the new version"
expect_ok cmk encryption check --store "$S"
expect_json '.rotated == false' "check again: nothing newer"
same_blobs "automatic rotation (check)"

# ---- a long-running process with a 1 s rotation-check interval follows by itself
"$CMKSTORE_BIN" encryption watch --store "$S" --duration 120 >"$T/watch.out" 2>"$T/watch.err" &
WATCH_PID=$!
expect_true "watch prints the current state" wait_for 20 \
    grep -q "\"versionedKeyIdentifier\":\"$V3\"" "$T/watch.out"
cmk vault key create --vault-name rvault --name rkey >"$T/v4.json"
V4=$(jq -r .key.kid "$T/v4.json")
show_names() { # KID: encryption show names KID as the version in use
    "$CMKSTORE_BIN" encryption show --store "$S" >"$T/show.json" 2>/dev/null &&
        jq -e --arg v "$1" '.keyVaultProperties.versionedKeyIdentifier == $v' "$T/show.json"
}
expect_true "automatic rotation: versionedKeyIdentifier follows the new version (1 s interval)" \
    wait_for 20 show_names "$V4"
expect_true "watch reports the new version" wait_for 20 \
    grep -q "\"versionedKeyIdentifier\":\"$V4\"" "$T/watch.out"
expect_true "keyring: every DEK wrapped by the newest version" \
    jq -e --arg v "$V4" '[.deks[].kid] | all(. == $v)' "$S/keyring.json"
same_blobs "automatic rotation (long-running process)"
for v in "$V2" "$V3"; do
    expect_ok cmk vault key set-attributes --vault-name rvault --name rkey \
        --version "$(version_of "$v")" --enabled false
done
expect_true "older versions disabled: every blob reads and verifies" verify_all "$S"
# Writes go on while the watcher holds the store open.
gen_random rot10 12345 "$T/b10"
expect_ok cmk blob put --store "$S" "$T/b10"
cat "$OUT" >>"$T/digests.txt"
jq -R . "$T/digests.txt" | jq -s . >"$T/digests.json"
kill -TERM "$WATCH_PID"
wrc=0
wait "$WATCH_PID" || wrc=$?
WATCH_PID=
expect_eq "$wrc" 0 "watch exits 0 on SIGTERM"
expect_true "every blob verifies, the new one too" verify_all "$S"

# ---- events
expect_ok cmk events --store "$S"
cp "$OUT" "$T/events"
expect_true "events: one JSON object per line" jq -e -s 'length > 0 and all(type == "object")' "$T/events"
expect_true "events: store.created first" jq -e -s '.[0].event == "store.created"' "$T/events"
expect_true "events: manual rotation from v1 to v2" \
    jq -e -s --arg a "$V1" --arg b "$V2" \
    'any(.[]; .event == "key.rotated" and .from == $a and .to == $b and .trigger == "manual")' \
    "$T/events"
expect_true "events: automatic rotation v2 -> v3 (check)" \
    jq -e -s --arg a "$V2" --arg b "$V3" \
    'any(.[]; .event == "key.rotated" and .from == $a and .to == $b and .trigger == "automatic")' \
    "$T/events"
expect_true "events: automatic rotation v3 -> v4 (long-running process)" \
    jq -e -s --arg a "$V3" --arg b "$V4" \
    'any(.[]; .event == "key.rotated" and .from == $a and .to == $b and .trigger == "automatic")' \
    "$T/events"
expect_true "events: dek.rotated twice" \
    jq -e -s '[.[] | select(.event == "dek.rotated")] | length == 2' "$T/events"
expect_ok cmk events --store "$S" --type key.rotated
expect_true "events --type: only key.rotated" \
    jq -e -s 'length == 4 and all(.event == "key.rotated")' "$OUT"
expect_false "events print no key material" grep -Eqi 'wrappedKey|PRIVATE' "$T/events"
expect_exit 3 cmk events --store "$T/nostore"

# events --follow prints what is appended while it runs.
"$CMKSTORE_BIN" events --store "$S" --type dek. --follow >"$T/follow.out" 2>&1 &
FOLLOW_PID=$!
expect_true "follow: prints the past events" wait_for 20 grep -q '"dek":3' "$T/follow.out"
expect_ok cmk encryption rotate-dek --store "$S"
expect_json '.newDekId == 4' "rotate-dek prints the new DEK id"
expect_true "follow: prints a new event" wait_for 20 grep -q '"dek":4' "$T/follow.out"
kill -TERM "$FOLLOW_PID"
wait "$FOLLOW_PID" || true
FOLLOW_PID=

# ---- encryption update
expect_ok cmk encryption update --store "$S" --rotation-check-interval 7200 \
    --key-check-interval 30 --unreachable-grace 600 --dek-rollover-blobs 1000
expect_json '.rotationCheckIntervalSeconds == 7200 and .keyCheckIntervalSeconds == 30 and .unreachableGraceSeconds == 600 and .dekRolloverBlobs == 1000' \
    "update: new values printed"
expect_ok cmk encryption show --store "$S"
expect_json '.rotationCheckIntervalSeconds == 7200 and .keyCheckIntervalSeconds == 30 and .unreachableGraceSeconds == 600 and .dekRolloverBlobs == 1000' \
    "update: kept (a new process sees them)"
expect_ok cmk encryption update --store "$S" --dek-rollover-blobs never
expect_json '.dekRolloverBlobs == null and .keyCheckIntervalSeconds == 30' \
    "update: rollover off, other values unchanged"
expect_ok cmk events --store "$S" --type policy.updated
expect_true "events: policy.updated" jq -e -s 'length == 2' "$OUT"
