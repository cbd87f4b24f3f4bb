#!/usr/bin/env bash
# test_faults_serve.sh — faults injected into a running `cmkstore serve` by the LD_PRELOAD shim
# (tests/fault/cmkfault.c), switched on and off through its rules file while the server runs
# (sync I/O engine, so data writes go through libc; key check every second, grace 2 s):
# - an upload whose writes fail (ENOSPC) answers 507 and stores nothing; a manifest whose tag
#   record cannot be renamed into place answers 500 and moves no tag; what was pushed before
#   reads back unchanged, and the same pushes work once the fault is gone;
# - a vault file that cannot be opened (EACCES) or a keyring that cannot be read (EIO) makes
#   the key check unreachable: 503 after the grace, /metrics names the cause; service resumes
#   at a later check once the fault is gone. One server process throughout.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/fault_lib.sh"

registry_with_grace 2
RULES=$T/rules
REAL_BIN=$CMKSTORE_BIN
cat >"$T/faulty-serve" <<EOF
#!/bin/sh
exec env LD_PRELOAD='$FAULT_PRELOAD' CMKFAULT_FILE='$RULES' CMKFAULT_LOG='$FAULT_LOG' \
    CMKSTORE_IO=sync '$REAL_BIN' "\$@"
EOF
chmod +x "$T/faulty-serve"
CMKSTORE_BIN=$T/faulty-serve start_server srv --key-check-interval 1
PID0=$SRV_PID
B=$T/body

# fault RULES: switches the server's faults (none: no argument); the log is emptied.
fault() {
    : >"$FAULT_LOG"
    if [ $# -eq 0 ]; then rm -f "$RULES"; else printf '%s\n' "$1" >"$RULES.new" && mv "$RULES.new" "$RULES"; fi
}
snap() {
    snapshot "$S" | awk '$1 == "d" { $5 = "-" } { print }'
}

gen_random fs1 300000 "$T/l1"
D1=$(oci_digest "$T/l1")
expect_eq "$(push_blob fs/app "$T/l1")" 201 "push a layer"
printf '{}' >"$T/cfg"
expect_eq "$(push_blob fs/app "$T/cfg")" 201 "push an empty config"
MT=application/vnd.oci.image.manifest.v1+json
manifest() { # FILE LAYER-DIGEST SIZE
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
        "$MT" "$2" "$3" >"$1"
}
put_manifest() { # FILE TAG
    hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$1" "$URL/v2/fs/app/manifests/$2"
}
manifest "$T/m1" "$D1" 300000
expect_eq "$(put_manifest "$T/m1" v1)" 201 "push a manifest, tag v1"
blob_status() { hcurl "$B" "$URL/v2/fs/app/blobs/$D1"; }
is_status() { [ "$(blob_status)" == "$1" ]; }

# pushed_intact WHAT: the layer and tag v1 read back byte-exact.
pushed_intact() {
    expect_eq "$(blob_status)" 200 "$1: the layer reads back"
    expect_true "$1: ... byte-exact" cmp -s "$B" "$T/l1"
    expect_eq "$(hcurl "$B" "$URL/v2/fs/app/manifests/v1")" 200 "$1: tag v1 reads back"
    expect_true "$1: ... byte-exact" cmp -s "$B" "$T/m1"
}

# ---- an upload whose writes fail
gen_random fs2 200000 "$T/l2"
D2=$(oci_digest "$T/l2")
snap >"$T/snap"
fault "op=write path=*/registry/tmp errno=ENOSPC"
expect_eq "$(push_blob fs/app "$T/l2")" 507 "upload, ENOSPC on write: 507"
expect_true "... the fault was met" fault_met
fault
expect_eq "$(hcurl "$B" -I "$URL/v2/fs/app/blobs/$D2")" 404 "... no blob visible"
snap >"$T/snap.after"
expect_unchanged "$T/snap" "$T/snap.after" "upload, ENOSPC"
pushed_intact "upload, ENOSPC"
expect_eq "$(push_blob fs/app "$T/l2")" 201 "fault gone: the upload works"

# ---- a manifest whose tag record cannot be renamed into place
manifest "$T/m2" "$D2" 200000
fault "op=rename path=*/registry/meta/* errno=EIO"
expect_eq "$(put_manifest "$T/m2" v1)" 500 "manifest, EIO on rename: 500"
expect_true "... the fault was met" fault_met
fault
pushed_intact "manifest, EIO on rename: tag v1 not moved"
expect_eq "$(put_manifest "$T/m2" v2)" 201 "fault gone: the manifest push works"

# ---- key checks: faults while reading the vault or the keyring fail closed, then recover
metrics_state() { # STATE REASON
    hcurl "$T/m" "$URL/metrics" >/dev/null &&
        grep -q "^cmkstore_key_state{state=\"$1\",reason=\"$2\"} 1" "$T/m"
}
for r in "op=open path=*/vaults/registry-vault/vault.json errno=EACCES" \
    "op=read path=*/registry/keyring.json errno=EIO"; do
    what="key check, ${r#op=}"
    fault "$r"
    if wait_for 30 is_status 503; then ok "$what: 503 after the grace"; else
        not_ok "$what: still $(blob_status) after 30 s"; fi
    expect_true "$what: ... the fault was met" fault_met
    blob_status >/dev/null
    expect_json '.errors[0].detail.error == "CMK_E_KEY_UNREACHABLE"' "$what: ... unreachable" "$B"
    expect_true "$what: metrics: lost, reason CMK_E_IO" metrics_state lost CMK_E_IO
    fault
    if wait_for 30 is_status 200; then ok "$what: fault gone: pulls work again"; else
        not_ok "$what: still $(blob_status) 30 s after the fault is gone"; fi
    pushed_intact "$what"
done
expect_true "the key.unreachable events name CMK_E_IO" \
    test "$(grep '"event":"key.unreachable"' "$S/events.log" | jq -r .cause | sort -u)" == CMK_E_IO

expect_eq "$SRV_PID" "$PID0" "one server process throughout"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
