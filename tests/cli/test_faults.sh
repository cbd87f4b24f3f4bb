#!/usr/bin/env bash
# test_faults.sh — file operations that fail, injected by the LD_PRELOAD shim
# (tests/fault/cmkfault.c) into one-shot commands: puts (EIO, ENOSPC, short writes, a failed
# fsync, open or link), gets (EIO on a chunk read), key rotation and DEK rollover (the keyring's
# write, fsync or rename fails) and key checks (EACCES / EIO on vault, private key and keyring
# reads). After every fault: the command fails (or, for short writes, completes correctly),
# the fault was really met, no partial blob is visible, nothing already stored is changed (a
# snapshot of the store: every file's size, inode and time), every blob reads back byte-exact,
# and key checks fail closed (exit 5, nothing output). Data writes, reads and fsyncs go
# through libc only on the sync engine (CMKSTORE_IO=sync); opens and links are faulted on the
# default engine too.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fault_lib.sh"

setup_cmk f
S=$T/store
cmk create --store "$S" --identity fid --key-encryption-key "$KID" --chunk-size 1048576 \
    >/dev/null
gen_random a 2500000 "$T/a" # three chunks
gen_random b 3000 "$T/b"
gen_random n 1500000 "$T/n" # the blob the failing puts try to store
DA=$(cmk blob put --store "$S" "$T/a")
DB=$(cmk blob put --store "$S" "$T/b")
DN=$(oci_digest "$T/n")

# snap: a snapshot of the store, directory times left out (a failed write may have created
# its temporary file and removed it again).
snap() {
    snapshot "$S" | awk '$1 == "d" { $5 = "-" } { print }'
}

# intact WHAT: every stored blob reads back byte-exact, the store holds exactly them, tmp/ is
# empty and no file of the store changed since the last snapshot.
intact() {
    local what=$1 d f
    for d in "$DA=$T/a" "$DB=$T/b"; do
        f=${d#*=}
        d=${d%%=*}
        rm -f "$T/got"
        cmk blob get --store "$S" --output "$T/got" "$d" 2>/dev/null || true
        expect_true "$what: ${f##*/} reads back byte-exact" cmp -s "$T/got" "$f"
    done
    expect_eq "$(cmk blob ls --store "$S" | jq -r '.[]' | sort | tr '\n' ' ')" \
        "$(printf '%s\n' "$DA" "$DB" | sort | tr '\n' ' ')" "$what: no other blob is visible"
    expect_eq "$(find "$S/tmp" -mindepth 1 | wc -l)" 0 "$what: nothing left in tmp/"
    snap >"$T/snap.after"
    expect_unchanged "$T/snap" "$T/snap.after" "$what"
}

# put_fails WHAT ENGINE RULES: a put under RULES fails, and loses nothing.
put_fails() {
    local what=$1 engine=$2 rules=$3
    snap >"$T/snap"
    expect_exit_nonzero "$what: put fails" \
        faulty "$rules" env CMKSTORE_IO="$engine" "$CMKSTORE_BIN" blob put --store "$S" "$T/n"
    expect_true "$what: ... the fault was met" fault_met
    intact "$what"
}

# expect_exit_nonzero WHAT CMD...: CMD fails (its stderr goes to $ERR).
expect_exit_nonzero() {
    local what=$1 rc=0
    shift
    "$@" >"$OUT" 2>"$ERR" || rc=$?
    if [ "$rc" -ne 0 ]; then ok "$what (exit $rc)"; else not_ok "$what: it succeeded"; fi
}

# ---- puts
put_fails "put, EIO on the first write" sync "op=write path=*/store/tmp errno=EIO"
put_fails "put, ENOSPC on the second write" sync "op=write path=*/store/tmp errno=ENOSPC nth=2"
put_fails "put, fsync fails" sync "op=fsync path=*/store/tmp errno=EIO"
put_fails "put, EACCES opening the temporary" auto "op=open path=*/store/tmp* errno=EACCES"
put_fails "put, EIO linking the blob in" auto "op=link path=*/store/blobs/* errno=EIO"
expect_err_match "cannot publish blob" "... the message says what failed"

# Short writes are finished by the engine: the put succeeds and the blob is exact.
snap >"$T/snap"
expect_ok faulty "op=write path=*/store/tmp errno=short" \
    env CMKSTORE_IO=sync "$CMKSTORE_BIN" blob put --store "$S" "$T/n"
expect_true "short writes: the fault was met" fault_met
expect_eq "$(cat "$OUT")" "$DN" "short writes: the put names the right digest"
expect_ok cmk blob get --store "$S" --output "$T/got" "$DN"
expect_true "short writes: the blob reads back byte-exact" cmp -s "$T/got" "$T/n"
expect_ok cmk blob rm --store "$S" "$DN"

# ---- gets: a read error fails the get and changes nothing
snap >"$T/snap"
expect_exit_nonzero "get, EIO on the second chunk read" \
    faulty "op=read path=*/store/blobs/* errno=EIO nth=3" \
    env CMKSTORE_IO=sync "$CMKSTORE_BIN" blob get --store "$S" "$DA"
expect_true "... the fault was met" fault_met
expect_err_match "Input/output error" "... the message says why"
intact "get, EIO"

# ---- key rotation and DEK rollover: a failed keyring write leaves the keyring as it was
cmk vault key create --vault-name fvault --name fkey >"$T/k2.json"
KID2=$(jq -r .key.kid "$T/k2.json")
for r in "op=write path=*/store/keyring.json.tmp* errno=ENOSPC" \
    "op=fsync path=*/store/keyring.json.tmp* errno=EIO" \
    "op=rename path=*/store/keyring.json* errno=EIO"; do
    snap >"$T/snap"
    expect_exit_nonzero "rotate-key, ${r#op=}" faulty "$r" \
        "$CMKSTORE_BIN" encryption rotate-key --store "$S" --key-encryption-key "$KID2"
    expect_true "... the fault was met" fault_met
    intact "rotate-key, ${r#op=}"
    expect_exit_nonzero "rotate-dek, ${r#op=}" faulty "$r" \
        "$CMKSTORE_BIN" encryption rotate-dek --store "$S"
    intact "rotate-dek, ${r#op=}"
done
expect_ok cmk encryption show --store "$S"
expect_json ".keyVaultProperties.keyIdentifier == \"$KID\"" "the key in use is still the first"
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$KID2"
expect_ok cmk encryption rotate-dek --store "$S"
snap >"$T/snap"
intact "after a clean rotation"

# ---- key checks: a vault, private key or keyring that cannot be read fails closed (exit 5)
for r in "op=open path=*/vaults/fvault/vault.json errno=EACCES" \
    "op=read path=*/vaults/fvault/keys/fkey/*.pem errno=EIO" \
    "op=open path=*/vaults/fvault/keys/fkey/key.json errno=EACCES"; do
    expect_exit 5 faulty "$r" "$CMKSTORE_BIN" encryption check --store "$S"
    expect_true "check, ${r#op=}: the fault was met" fault_met
    expect_err_match "CMK_E_IO|unreachable" "... reported as unreachable, naming the fault"
    expect_exit 5 faulty "$r" "$CMKSTORE_BIN" blob get --store "$S" "$DA"
    expect_eq "$(stat -c %s "$OUT")" 0 "get, ${r#op=}: nothing output"
done
expect_exit_nonzero "get with the keyring unreadable" \
    faulty "op=read path=*/store/keyring.json errno=EIO" \
    "$CMKSTORE_BIN" blob get --store "$S" "$DA"
expect_true "... the fault was met" fault_met
expect_eq "$(stat -c %s "$OUT")" 0 "... nothing output"
snap >"$T/snap"
intact "after the key-check faults"
