#!/usr/bin/env bash
# test_tamper.sh — damage a stored blob container in every region (header, chunk record
# headers, ciphertext, tags, index, trailer), truncate it, extend it, swap chunks within it
# and between blobs, swap whole blob files: every time `blob get` and `blob verify` exit 4,
# `blob get -o FILE` leaves no FILE, and what reaches stdout is at most a prefix of the true
# content. Layout (core/format.h): 192-byte header | records (16-byte header, ciphertext,
# 16-byte tag) | sealed index (16 bytes per chunk + 16-byte tag) | 8-byte trailer.
source "$(dirname "$0")/lib.sh"

setup_cmk t
S=$T/store
cmk create --store "$S" --identity tid --key-encryption-key "$KID" --chunk-size 64K >/dev/null
K=65536
SIZE=$((4 * K + 1000)) # 5 chunks, the last one short; random data: stored raw
gen_random tamper-a "$SIZE" "$T/a"
gen_random tamper-b "$SIZE" "$T/b"
DA=$(cmk blob put --store "$S" "$T/a")
DB=$(cmk blob put --store "$S" "$T/b")
FA=$(blob_file "$S" "$DA")
FB=$(blob_file "$S" "$DB")
expect_true "blob A's container file exists" test -f "$FA"
cp "$FA" "$T/pristine-a"
cp "$FB" "$T/pristine-b"
MODE_A=$(stat -c %a "$FA")

# Byte surgery on the container files (coreutils only: this runs a few hundred times).
# put_bytes FILE OFFSET: writes stdin over FILE at OFFSET.
put_bytes() { dd of="$1" bs=1M oflag=seek_bytes seek="$2" conv=notrunc status=none; }
tamper() { # OP FILE ARGS...
    local op=$1 f=$2 b
    shift 2
    chmod u+w "$f"
    case $op in
    flip) # OFFSET [MASK]
        b=$(od -An -tu1 -j "$1" -N1 "$f" | tr -d ' ')
        printf "\\$(printf %03o $((b ^ ${2:-1})))" | put_bytes "$f" "$1"
        ;;
    truncate) truncate -s "$1" "$f" ;;             # LENGTH
    append) head -c "$1" /dev/zero | tr '\0' '\7' >>"$f" ;; # COUNT
    swap) # OFF1 OFF2 LEN
        slice "$f" "$1" "$3" >"$T/swap1"
        slice "$f" "$2" "$3" >"$T/swap2"
        put_bytes "$f" "$1" <"$T/swap2"
        put_bytes "$f" "$2" <"$T/swap1"
        ;;
    splice) slice "$1" "$2" "$3" | put_bytes "$f" "$2" ;; # OTHER OFF LEN
    esac
}
restore() {
    chmod u+w "$FA" "$FB" 2>/dev/null || true
    cp "$T/pristine-a" "$FA"
    cp "$T/pristine-b" "$FB"
    chmod "$MODE_A" "$FA" "$FB"
}

# Layout of A from its own record headers.
N=$(u64le "$FA" 96)
IDX=$(u64le "$FA" 104)
expect_eq "$N" 5 "layout: 5 chunks"
REC=()
off=192
for ((i = 0; i < N; i++)); do
    REC+=("$off")
    slen=$(u32le "$FA" $((off + 4)))
    off=$((off + 16 + slen + 16))
done
expect_eq "$off" "$IDX" "layout: records end at the index offset"
FSIZE=$(stat -c %s "$FA")
expect_eq "$FSIZE" $((IDX + N * 16 + 16 + 8)) "layout: index, tag and trailer end the file"
RECLEN=$((REC[2] - REC[1]))

# rejected WHAT: get (-o and stdout) and verify of A fail with 4 and leak nothing.
rejected() {
    local what=$1 rc=0 n
    rm -f "$T/out.bin"
    expect_exit 4 cmk blob get --store "$S" "$DA" -o "$T/out.bin"
    expect_false "$what: -o FILE not created" test -e "$T/out.bin"
    expect_false "$what: no partial file left" compgen -G "$T/out.bin.partial-*"
    cmk blob get --store "$S" "$DA" >"$T/stdout.bin" 2>"$ERR" || rc=$?
    expect_eq "$rc" 4 "$what: get to stdout exits 4"
    n=$(stat -c %s "$T/stdout.bin")
    if [ "$n" -le "$SIZE" ] && cmp -s -n "$n" "$T/stdout.bin" "$T/a"; then
        ok "$what: stdout is a prefix of the true content ($n bytes)"
    else
        not_ok "$what: stdout has $n bytes that are not a prefix of the content"
    fi
    expect_exit 4 cmk blob verify --store "$S" "$DA"
    restore
}

# check_field_damaged WHAT: a record's xxh3 check is the one field no tag covers, and a get
# computes it only when a tag fails: get still delivers the authentic content, and verify (a
# scrub, which checks every record) finds the damage and exits 4.
check_field_damaged() {
    local what=$1
    rm -f "$T/out.bin"
    expect_ok cmk blob get --store "$S" "$DA" -o "$T/out.bin"
    expect_true "$what: get delivers the true content" cmp -s "$T/out.bin" "$T/a"
    expect_exit 4 cmk blob verify --store "$S" "$DA"
    expect_err_match "checksum mismatch" "$what: verify reports a corrupt record"
    restore
}

expect_ok cmk blob verify --store "$S" "$DA"

# ---- single-bit flips across the header
# magic, version, header length, algorithm ids, chunk size, DEK id, salt, commitment, size,
# chunk count, index offset, digest, reserved, checksum.
for pos in 0 8 9 10 12 15 16 20 24 56 88 96 104 112 176 184 191; do
    tamper flip "$FA" "$pos"
    rejected "header byte $pos flipped"
done
tamper flip "$FA" 60 0x80
rejected "key commitment high bit flipped"

# ---- every chunk record: header fields (flags, reserved, lengths, check), ciphertext (start,
# middle, end), tag (start, end); all of them in the first and last chunk, a sample between.
for ((i = 0; i < N; i++)); do
    r=${REC[$i]}
    slen=$(u32le "$FA" $((r + 4)))
    rels=(0 4 $((16 + slen / 2)) $((16 + slen)))
    if [ "$i" -eq 0 ] || [ "$i" -eq $((N - 1)) ]; then
        rels=(0 1 4 8 12 16 $((16 + slen / 2)) $((16 + slen - 1)) $((16 + slen)) \
            $((16 + slen + 15)))
    fi
    for rel in "${rels[@]}"; do
        tamper flip "$FA" $((r + rel))
        if [ "$rel" -eq 12 ]; then
            check_field_damaged "chunk $i byte +$rel (its check) flipped"
        else
            rejected "chunk $i byte +$rel flipped"
        fi
    done
done

# ---- the sealed index, its tag and the trailer
for rel in 0 12 $((N * 16 - 1)) $((N * 16)) $((N * 16 + 15)) $((N * 16 + 23)); do
    tamper flip "$FA" $((IDX + rel))
    rejected "index byte +$rel flipped"
done

# ---- truncation and extension
for len in $((FSIZE - 1)) $((FSIZE - 8)) "$IDX" $((REC[4] + 20)) "${REC[3]}" \
    $((REC[1] + 100)) 192 100 0; do
    tamper truncate "$FA" "$len"
    rejected "truncated to $len bytes"
done
for n in 1 4096; do
    tamper append "$FA" "$n"
    rejected "$n bytes appended"
done

# ---- reordering and transplanting
tamper swap "$FA" "${REC[1]}" "${REC[2]}" "$RECLEN"
rejected "chunks 1 and 2 swapped"
tamper swap "$FA" "${REC[0]}" "${REC[3]}" "$RECLEN"
rejected "chunks 0 and 3 swapped"
tamper splice "$FA" "$T/pristine-b" "${REC[2]}" "$RECLEN"
rejected "chunk 2 taken from another blob"
tamper splice "$FA" "$T/pristine-b" 0 192
rejected "header taken from another blob"
tamper splice "$FA" "$T/pristine-b" "$IDX" $((N * 16 + 24))
rejected "index taken from another blob"
tamper splice "$FA" "$T/pristine-b" 0 $((REC[1]))
rejected "header and chunk 0 taken from another blob"

# A range read that touches a damaged chunk fails too; one that does not may succeed, and if
# it does its bytes are right.
tamper flip "$FA" $((REC[2] + 100))
expect_exit 4 cmk blob get --store "$S" "$DA" --range $((2 * K + 10))-$((2 * K + 20))
rc=0
cmk blob get --store "$S" "$DA" --range 0-99 >"$T/r.bin" 2>/dev/null || rc=$?
if [ "$rc" -eq 0 ]; then
    expect_true "range of an intact chunk: right bytes" cmp "$T/r.bin" <(slice "$T/a" 0 100)
else
    expect_eq "$rc" 4 "range of an intact chunk in a damaged blob: 0 or 4"
fi
restore

# ---- whole files swapped between two blobs
cp "$T/pristine-b" "$FA"
cp "$T/pristine-a" "$FB"
rejected "blob files swapped (A holds B's container)"
cp "$T/pristine-a" "$FB"
chmod "$MODE_A" "$FB"
cp "$T/pristine-b" "$FA"
expect_exit 4 cmk blob get --store "$S" "$DA" --range 0-10
expect_exit 4 cmk blob stat --store "$S" "$DA"
restore

# After all this, both blobs are intact again (nothing was cached or rewritten).
expect_ok cmk blob verify --store "$S" "$DA"
expect_ok cmk blob verify --store "$S" "$DB"
expect_ok cmk blob get --store "$S" "$DA" -o "$T/final"
expect_true "A reads back intact" cmp "$T/final" "$T/a"
