#!/usr/bin/env bash
# test_diskfull.sh — a store whose file system fills up. Every write that cannot be done fails
# with a clear "No space left on device" and loses nothing: no partial blob, nothing left in
# tmp/, the keyring and settings unchanged, every blob already stored still reads back
# byte-exact. Removing blobs still works (it is how an operator frees space), and once there is
# room again puts and key operations work. Both I/O engines, and io_uring's direct writes.
#
# The store lives on a small tmpfs mounted for the test, so it needs root (and a kernel that
# lets this process mount); elsewhere it is skipped (exit 77). The home (vault, identities)
# stays on the normal file system: only the store's file system is full. The registry front
# answers an upload on the full store with 507 Insufficient Storage.
source "$(dirname "$0")/lib.sh"

M=$T/mnt
mkdir -p "$M"
if [ "$(id -u)" -ne 0 ] || ! mount -t tmpfs -o size=24m,mode=0700 tmpfs "$M" 2>/dev/null; then
    echo "skip: cannot mount a small tmpfs here (needs root)"
    trap - EXIT
    rm -rf "$T"
    exit 77
fi
# Unmount before lib.sh's finish removes $T.
unmount_store() {
    umount "$M" 2>/dev/null || umount -l "$M"
}
on_exit unmount_store

setup_cmk d
S=$M/store
cmk create --store "$S" --identity did --key-encryption-key "$KID" >/dev/null
gen_random a 300000 "$T/a"
gen_text b $((2 * 1024 * 1024 + 17)) "$T/b"
gen_random big $((32 * 1024 * 1024)) "$T/big"
gen_random c $((4 * 1024 * 1024)) "$T/c"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}' >"$T/m"
DA=$(cmk blob put --store "$S" "$T/a")
DB=$(cmk blob put --store "$S" "$T/b")

used_kb() {
    df -k --output=used "$M" | tail -1 | tr -d ' '
}

# reads_back: every stored blob still reads back byte-exact and verifies.
reads_back() { # WHAT
    local what=$1 d f
    for d in "$DA=$T/a" "$DB=$T/b"; do
        f=${d#*=}
        d=${d%%=*}
        expect_ok cmk blob get --store "$S" --output "$T/got" "$d"
        expect_true "$what: ${f##*/} reads back byte-exact" cmp -s "$T/got" "$f"
        expect_ok cmk blob verify --store "$S" "$d"
    done
}

# files_of DIR...: snapshot without the directories' modification times (a write that fails
# for want of space has created its temporary file and removed it again).
files_of() {
    snapshot "$@" | awk '$1 == "d" { $5 = "-" } { print }'
}

# no_space CODE WHAT CMD...: the command fails with CODE, says why, and changes no file of the
# store (or the home) and leaves nothing in tmp/.
no_space() {
    local code=$1 what=$2
    shift 2
    files_of "$CMKSTORE_HOME" "$S" >"$T/before"
    expect_exit "$code" "$@"
    expect_err_match 'No space left on device' "$what: says the disk is full"
    expect_true "$what: stderr starts with 'cmkstore: error:'" grep -q '^cmkstore: error: ' "$ERR"
    files_of "$CMKSTORE_HOME" "$S" >"$T/after"
    expect_unchanged "$T/before" "$T/after" "$what"
    expect_eq "$(find "$S/tmp" -mindepth 1 | wc -l)" 0 "$what: nothing left in tmp/"
}

# ---- a blob larger than the free space: fails part-way, and gives its space back
for mode in uring:auto uring:direct sync:auto; do
    before=$(used_kb)
    CMKSTORE_IO=${mode%%:*} CMKSTORE_WRITE=${mode#*:} no_space 1 "32 MiB put ($mode)" \
        cmk blob put --store "$S" "$T/big"
    expect_true "32 MiB put ($mode): the space is given back ($before -> $(used_kb) KiB)" \
        test "$(used_kb)" -le $((before + 64))
    expect_exit 3 cmk blob stat --store "$S" "$(oci_digest "$T/big")"
done
reads_back "after failed big puts"

# ---- the file system full to the last block
dd if=/dev/zero of="$M/filler" bs=64k status=none 2>/dev/null || true
expect_eq "$(df -k --output=avail "$M" | tail -1 | tr -d ' ')" 0 "the file system is full"
for io in uring sync; do
    CMKSTORE_IO=$io no_space 1 "manifest put on a full disk ($io)" \
        cmk blob put --store "$S" "$T/m"
    CMKSTORE_IO=$io no_space 1 "4 MiB put on a full disk ($io)" cmk blob put --store "$S" "$T/c"
done
no_space 1 "rotate-dek on a full disk" cmk encryption rotate-dek --store "$S"
cmk vault key create --vault-name dvault --name dkey >"$T/v2.json"
V2=$(jq -r .key.kid "$T/v2.json")
no_space 1 "rotate-key to a new version on a full disk" \
    cmk encryption rotate-key --store "$S" --key-encryption-key "$V2"
expect_ok cmk encryption show --store "$S"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$KID\" and .dekCount == 1" \
    "the store still uses the first key version and data key"
reads_back "on a full disk"

# The registry front on the full store: an upload gets 507 Insufficient Storage, saying why,
# and nothing is stored.
source "$(dirname "$0")/serve_lib.sh"
start_server full --store "$S" --quiet
DC=$(oci_digest "$T/c")
expect_eq "$(hcurl "$T/body" -X POST --data-binary "@$T/c" "$URL/v2/app/full/blobs/uploads/?digest=$DC")" \
    507 "registry: a 4 MiB upload on a full disk is 507"
expect_true "... the error says the disk is full" grep -qi 'no space left' "$T/body"
expect_eq "$(hcurl "$T/body" -I "$URL/v2/app/full/blobs/$DC")" 404 "... nothing stored"
stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly"

# Removing a blob needs no new space: it is how room is made.
expect_ok cmk blob rm --store "$S" "$DB"
expect_exit 3 cmk blob stat --store "$S" "$DB"
expect_ok cmk blob put --store "$S" "$T/b" # rm freed enough for it again
expect_eq "$(cat "$OUT")" "$DB" "the removed blob is put again into the space it freed"

# ---- room again: everything works
rm -f "$M/filler"
expect_ok cmk blob put --store "$S" "$T/c"
expect_eq "$(cat "$OUT")" "$(oci_digest "$T/c")" "4 MiB put after space was freed"
expect_ok cmk encryption rotate-dek --store "$S"
expect_ok cmk encryption rotate-key --store "$S" --key-encryption-key "$V2"
expect_ok cmk encryption show --store "$S"
expect_json ".keyVaultProperties.versionedKeyIdentifier == \"$V2\" and .dekCount == 2" \
    "rotated to the new version, with a second data key, once there was room"
reads_back "after space was freed"
expect_ok cmk blob get --store "$S" --output "$T/got" "$(oci_digest "$T/c")"
expect_true "the 4 MiB blob reads back byte-exact" cmp -s "$T/got" "$T/c"
