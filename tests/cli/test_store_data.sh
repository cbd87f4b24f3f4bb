#!/usr/bin/env bash
# test_store_data.sh — a store's files are data, never code or secrets configuration
# (README "What a store's writer can do"):
#  * a key identifier written into keyring.json with ?module-path=<library> is not loaded
#    (the library's constructor would leave a marker file) by `encryption show`, `blob get`
#    or `encryption check`, with or without a configured module; the reason says so;
#  * its pin-source=file:<path> is never opened (a FIFO there would be);
#  * the store's own entries (events.log, lock, keyring.json, store.json, tmp, meta, blobs
#    prefix directories and blob files) that are symbolic links are refused with a clear
#    error, and the link's target is not read, written or created;
#  * a FIFO in tmp/ or in place of a blob file hangs nothing (swept; refused, exit 4);
#  * a store.json that names a home the store's writer controls is refused.
source "$(dirname "$0")/lib.sh"

: "${CMK_TEST_MARKER_MODULE:?set CMK_TEST_MARKER_MODULE to the marker module (built by CMake)}"
MOD=$CMK_TEST_MARKER_MODULE
export CMK_TEST_MARKER="$T/marker"
unset CMKSTORE_PKCS11_MODULE CMKSTORE_PKCS11_PIN_FILE CMKSTORE_PKCS11_PIN

setup_cmk sd
S=$T/store
cmk create --store "$S" --identity sdid --key-encryption-key "$KID" >/dev/null
gen_random sd-blob 200000 "$T/blob"
D=$(cmk blob put --store "$S" "$T/blob")

# forged SRC DST KID: a copy of store SRC whose keyring names KID for every key.
forged() {
    rm -rf "$2"
    cp -a "$1" "$2"
    jq --arg k "$3" '.keyIdentifier = $k | .versionedKeyIdentifier = $k | .deks[].kid = $k' \
        "$1/keyring.json" >"$2/keyring.json"
}
P11="pkcs11:token=t;object=o;id=%00%00%00%01%01%02%03%04%05%06%07%08%09%0A%0B%0C"

# ---- module-path: never loaded ----------------------------------------------------------------
echo 123456 >"$T/pin"
forged "$S" "$T/s-mod" "$P11?module-path=$MOD&pin-source=file:$T/pin"
rm -f "$T/marker"
expect_ok cmk encryption show --store "$T/s-mod"
expect_json '.keyAccess.accessible == false and .keyAccess.error == "CMK_E_KEY_UNREACHABLE"' \
    "encryption show: the forged key is not accessible"
expect_json '.keyAccess.reason | test("names module .*marker_module.so, which was not loaded: a module named by a key identifier is never loaded")' \
    "encryption show: the reason says the identifier's module is never loaded"
expect_false "encryption show did not load the store's module (no marker)" test -e "$T/marker"
expect_exit 5 cmk blob get --store "$T/s-mod" "$D"
expect_err_match "never loaded" "blob get: key unreachable, the module named by the store was not loaded"
expect_false "blob get did not load the store's module" test -e "$T/marker"
# An operator module that is another file: refused as well, neither is loaded.
CMKSTORE_PKCS11_MODULE=$T/operator-module.so expect_exit 5 cmk encryption check --store "$T/s-mod"
expect_err_match "but the configured module is .*operator-module.so: refused, neither was loaded" \
    "encryption check: a module other than the operator's is refused"
expect_false "encryption check did not load the store's module" test -e "$T/marker"

# The operator's module is loaded when the identifier names that same file (by another path
# here): --pkcs11-module on the command line or the variable. (The marker module is no PKCS#11
# module, so the key stays unreachable, but it was the operator's choice to load it.)
ln -s "$MOD" "$T/same-module.so"
CMKSTORE_PKCS11_PIN_FILE=$T/pin expect_ok cmk --pkcs11-module "$T/same-module.so" \
    encryption show --store "$T/s-mod"
expect_json '.keyAccess.reason | test("is not a PKCS#11 module")' \
    "--pkcs11-module naming the same file: the operator's module is used"
expect_true "the operator's module was loaded" test -e "$T/marker"
rm -f "$T/marker"
CMKSTORE_PKCS11_MODULE=$T/other.so CMKSTORE_PKCS11_PIN_FILE=$T/pin \
    expect_ok cmk --pkcs11-module "$MOD" encryption show --store "$T/s-mod"
expect_json '.keyAccess.reason | test("is not a PKCS#11 module")' \
    "--pkcs11-module overrides \$CMKSTORE_PKCS11_MODULE"
rm -f "$T/marker"

# ---- pin-source: never read -------------------------------------------------------------------
# The PIN file is a FIFO: whoever opens it for reading releases the writer below, which then
# leaves a flag before it closes (so before the reader sees end of file and goes on).
mkfifo "$T/pin.fifo"
(
    exec 3>"$T/pin.fifo"
    : >"$T/pin-opened"
) &
WRITER=$!
release_writer() {
    # O_RDWR on a FIFO does not block: the writer's open returns and it exits.
    exec 4<>"$T/pin.fifo"
    wait "$WRITER" 2>/dev/null
    exec 4<&-
}
on_exit release_writer
forged "$S" "$T/s-pin" "$P11?pin-source=file:$T/pin.fifo"
CMKSTORE_PKCS11_MODULE=$T/operator-module.so expect_ok cmk encryption show --store "$T/s-pin"
expect_json '.keyAccess.accessible == false and .keyAccess.error == "CMK_E_KEY_DENIED"' \
    "pin-source store: no PIN configured by the operator, access denied"
expect_json ".keyAccess.reason | test(\"pin-source is not read\")" \
    "pin-source store: the reason says the identifier's pin-source is not read"
expect_false "the store's pin-source file was never opened" test -e "$T/pin-opened"

# ---- symbolic links inside the store -----------------------------------------------------------
# link_case ENTRY TARGET WHAT CMD...: ENTRY (inside a fresh copy $C of the store) made a link to
# TARGET; CMD exits 6 (refused) with "ENTRY is a symbolic link" and TARGET is as before.
C=$T/s-link
# fp PATH: what a write of PATH would change (size, inode, mtime, content) or "absent".
fp() {
    if [ -d "$1" ]; then
        snapshot "$1"
    elif [ -e "$1" ]; then
        stat -c '%s %i %Y' "$1"
        sha256sum <"$1"
    else
        echo absent
    fi
}
link_case() {
    local entry=$1 target=$2 what=$3 before
    shift 3
    rm -rf "$C"
    cp -a "$S" "$C"
    before=$(fp "$target")
    rm -rf "${C:?}/$entry"
    ln -s "$target" "$C/$entry"
    expect_exit 6 "$@"
    expect_err_match "${entry}[^ ]* is a symbolic link or lies behind one: refused" \
        "$what: refused, says why"
    expect_eq "$(fp "$target")" "$before" \
        "$what: the link's target is untouched"
}
printf 'precious\n' >"$T/victim"
link_case events.log "$T/victim" "events.log -> file, rotate-dek" \
    cmk encryption rotate-dek --store "$C"
link_case events.log "$T/victim" "events.log -> file, events" cmk events --store "$C"
link_case lock "$T/lock-victim" "lock -> absent file, rotate-dek" \
    cmk encryption rotate-dek --store "$C"
expect_false "the lock link's target was not created" test -e "$T/lock-victim"
cp "$S/keyring.json" "$T/keyring-copy"
link_case keyring.json "$T/keyring-copy" "keyring.json -> copy, blob get" \
    cmk blob get --store "$C" "$D" -o "$T/out"
cp "$S/store.json" "$T/store-copy"
link_case store.json "$T/store-copy" "store.json -> copy, encryption show" \
    cmk encryption show --store "$C"
mkdir -p "$T/tmp-elsewhere"
link_case tmp "$T/tmp-elsewhere" "tmp -> directory, blob put" cmk blob put --store "$C" "$T/victim"
expect_eq "$(ls -A "$T/tmp-elsewhere")" "" "nothing was written into the tmp link's target"
cp -a "$S/meta" "$T/meta-elsewhere"
link_case meta "$T/meta-elsewhere" "meta -> directory, blob ls" cmk blob ls --store "$C"
# Deeper entries are refused where they are used.
HEX=${D#sha256:}
cp -a "$S/blobs/sha256/${HEX:0:2}" "$T/prefix-elsewhere"
link_case "blobs/sha256/${HEX:0:2}" "$T/prefix-elsewhere" "blob prefix directory -> copy, blob get" \
    cmk blob get --store "$C" "$D" -o "$T/out"
cp "$S/blobs/sha256/${HEX:0:2}/$HEX" "$T/blob-copy"
link_case "blobs/sha256/${HEX:0:2}/$HEX" "$T/blob-copy" "blob file -> copy, blob get" \
    cmk blob get --store "$C" "$D" -o "$T/out"
link_case "blobs/sha256/${HEX:0:2}" "$T/prefix-elsewhere" "blob prefix directory -> copy, blob rm" \
    cmk blob rm --store "$C" "$D"
expect_true "the original store still serves the blob" cmk blob get --store "$S" "$D" -o "$T/out"

# ---- FIFOs in place of the store's files ------------------------------------------------------
# Opening a FIFO for reading blocks until a writer comes: one planted in tmp/ (swept at every
# open) or in place of a blob file must not hang the process. `timeout` only bounds a hang
# (it fails the check as exit 124); the answers come at once.
rm -rf "$C"
cp -a "$S" "$C"
mkfifo "$C/tmp/planted"
expect_ok timeout 60 "$CMKSTORE_BIN" encryption show --store "$C"
expect_json '.keyAccess.accessible == true' "a FIFO in tmp/ does not hang the store's open"
expect_ok timeout 60 "$CMKSTORE_BIN" blob get --store "$C" "$D" -o "$T/out"
expect_eq "$(sha256sum <"$T/out")" "$(sha256sum <"$T/blob")" "a FIFO in tmp/: the blob reads back"
rm -rf "$C"
cp -a "$S" "$C"
rm "$C/blobs/sha256/${HEX:0:2}/$HEX"
mkfifo "$C/blobs/sha256/${HEX:0:2}/$HEX"
expect_exit 4 timeout 60 "$CMKSTORE_BIN" blob get --store "$C" "$D" -o "$T/out"
expect_err_match "$HEX is not a regular file" "a FIFO in place of a blob file: refused, says why"

# ---- the home store.json names ------------------------------------------------------------------
# Without --home / $CMKSTORE_HOME the recorded home is used, unless the store's writer could
# have made it: inside the store, or writable by others.
# A home inside the store whose pkcs11.json names the marker module, for a pkcs11: key.
forged "$S" "$C" "$P11"
mkdir -m 700 "$C/evil-home"
printf '{"module": "%s", "pinFile": "%s"}\n' "$MOD" "$T/pin" >"$C/evil-home/pkcs11.json"
jq --arg h "$C/evil-home" '.home = $h' "$S/store.json" >"$C/store.json"
rm -f "$T/marker"
expect_exit 6 env -u CMKSTORE_HOME "$CMKSTORE_BIN" encryption show --store "$C"
expect_err_match "names the cmkstore home .*evil-home, which lies inside the store" \
    "a home inside the store is refused"
expect_false "the module named by that home's pkcs11.json was not loaded" test -e "$T/marker"
mkdir -m 777 "$T/open-home"
chmod 777 "$T/open-home"
jq --arg h "$T/open-home" '.home = $h' "$S/store.json" >"$C/store.json"
expect_exit 6 env -u CMKSTORE_HOME "$CMKSTORE_BIN" encryption show --store "$C"
expect_err_match "may be written by other users" "a home others may write is refused"
expect_ok env -u CMKSTORE_HOME "$CMKSTORE_BIN" encryption show --store "$S"
expect_json '.keyAccess.accessible == true' "the store's own recorded home is still used"
