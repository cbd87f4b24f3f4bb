#!/usr/bin/env bash
# test_store_repair.sh — damage in a store and what the CLI does about it: a re-push of a
# blob whose stored file is damaged replaces it (atomically, and only then: an intact file is
# kept); a damaged or missing store.json or keyring.json is named, with how to restore it,
# and no blob is blamed.
source "$(dirname "$0")/lib.sh"

S=$T/store
expect_ok cmk create --store "$S"

# blob_file DIGEST: the container file of a blob.
blob_file() {
    local hex=${1#sha256:}
    echo "$S/blobs/sha256/${hex:0:2}/$hex"
}

# flip FILE OFFSET: inverts one bit of FILE at OFFSET, in place.
flip() {
    python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 1]))' "$1" "$2"
}

# ---- a re-push repairs a damaged blob, and keeps an intact one
gen_random repair 3000000 "$T/big"
D=$(oci_digest "$T/big")
expect_ok cmk blob put --store "$S" "$T/big"
F=$(blob_file "$D")
INO=$(stat -c %i "$F")
expect_ok cmk blob put --store "$S" "$T/big"
expect_eq "$(stat -c %i "$F")" "$INO" "re-push of an intact blob keeps its file"

flip "$F" 200000
expect_exit 4 cmk blob verify --store "$S" "$D"
expect_err_match 'push the blob again' "a damaged blob's hint: push it again"
expect_ok cmk blob put --store "$S" "$T/big"
expect_eq "$(cat "$OUT")" "$D" "re-push of a damaged blob prints its digest"
expect_ok cmk blob verify --store "$S" "$D"
expect_ok cmk blob get --store "$S" "$D" -o "$T/back"
expect_true "... and the blob reads back whole" cmp "$T/back" "$T/big"
expect_true "... from a new file" test "$(stat -c %i "$F")" != "$INO"
expect_eq "$(find "$S/tmp" -mindepth 1 | wc -l)" 0 "... nothing left in tmp/"

# A header damaged in the same way, and a truncated file.
flip "$F" 20
expect_exit 4 cmk blob stat --store "$S" "$D"
expect_ok cmk blob put --store "$S" "$T/big"
expect_ok cmk blob verify --store "$S" "$D"
truncate -s 100000 "$F"
expect_ok cmk blob put --store "$S" "$T/big"
expect_ok cmk blob verify --store "$S" "$D"

# A small blob (one chunk), re-pushed with --digest.
gen_text small 5000 "$T/small"
DS=$(oci_digest "$T/small")
expect_ok cmk blob put --store "$S" "$T/small"
flip "$(blob_file "$DS")" 300
expect_ok cmk blob put --store "$S" --digest "$DS" "$T/small"
expect_ok cmk blob verify --store "$S" "$DS"

# ---- damaged store files: named, with how to restore them; no blob is blamed
cp "$S/store.json" "$T/store.json.bak"
cp "$S/keyring.json" "$T/keyring.json.bak"

echo '{' >"$S/store.json"
expect_exit 4 cmk blob ls --store "$S"
expect_err_match 'store\.json, the store.s settings, is damaged' "damaged store.json is named"
expect_err_match 'restore store\.json from a backup' "... with how to restore it"
expect_false "... and no blob is blamed" grep -qi 'blob rm\|push the blob' "$ERR"
cp "$T/store.json.bak" "$S/store.json"

echo x >>"$S/keyring.json"
expect_exit 4 cmk blob get --store "$S" "$D" -o "$T/x"
expect_err_match 'keyring\.json, the store.s keyring .*is damaged' "damaged keyring.json is named"
expect_err_match 'restore keyring\.json from a backup' "... with how to restore it"
expect_false "... and no blob is blamed" grep -qi 'blob rm\|push the blob' "$ERR"
expect_false "... no output file" test -e "$T/x"

rm "$S/keyring.json"
expect_exit 4 cmk blob ls --store "$S"
expect_err_match 'keyring\.json is missing.*restore it from a backup' "missing keyring.json: how to restore"
expect_false "... and no blob is blamed" grep -qi 'blob rm\|push the blob' "$ERR"

cp "$T/keyring.json.bak" "$S/keyring.json"
expect_ok cmk blob verify --store "$S" "$D"
