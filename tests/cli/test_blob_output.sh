#!/usr/bin/env bash
# test_blob_output.sh — where `blob get` writes (tools/blob_out.c): to a regular file through
# the io engine with several writes in flight, to anything else as a stream.
#  * -o FILE, with and without --fsync, on io_uring and on the sync engine: the same bytes,
#    mode 0600, no partial file left; a range to a file too;
#  * -o on an existing FIFO or device writes into it as a stream and leaves the node in place
#    (a partial file renamed over it would have replaced /dev/null or the pipe itself);
#  * -o on a directory is refused;
#  * a write that fails mid-blob (RLIMIT_FSIZE: EFBIG from the second MiB on) exits nonzero
#    naming the error, and leaves neither FILE nor a partial file; a FILE that was there
#    before is left as it was.
source "$(dirname "$0")/lib.sh"

setup_cmk bo
S=$T/store
cmk create --store "$S" --identity boid --key-encryption-key "$KID" >/dev/null
gen_random bo-blob 9000000 "$T/blob"
D=$(cmk blob put --store "$S" "$T/blob")

for engine in uring sync; do
    for f in "" --fsync; do
        rm -f "$T/out"
        expect_ok env CMKSTORE_IO=$engine "$CMKSTORE_BIN" blob get --store "$S" $f -o "$T/out" "$D"
        expect_true "$engine ${f:-no fsync}: the same 9000000 bytes" cmp "$T/blob" "$T/out"
        expect_eq "$(stat -c %a "$T/out")" 600 "$engine ${f:-no fsync}: FILE is 0600"
    done
done
expect_ok cmk blob get --store "$S" --range 1048570-5000000 -o "$T/range" "$D"
expect_true "a range to a file: its bytes" cmp <(slice "$T/blob" 1048570 3951431) "$T/range"
expect_eq "$(find "$T" -maxdepth 1 -name '*.partial-*' | wc -l)" 0 "no partial file left"

# ---- not a regular file ---------------------------------------------------------------------
mkfifo "$T/fifo"
cat "$T/fifo" >"$T/from-fifo" &
reader=$!
expect_ok cmk blob get --store "$S" -o "$T/fifo" "$D"
wait "$reader"
expect_true "-o FIFO: the reader got the blob" cmp "$T/blob" "$T/from-fifo"
expect_true "-o FIFO: still a FIFO" test -p "$T/fifo"
expect_ok cmk blob get --store "$S" -o /dev/null "$D"
expect_true "-o /dev/null: still a character device" test -c /dev/null
mkdir "$T/dir"
expect_exit 1 cmk blob get --store "$S" -o "$T/dir" "$D"
expect_err_match "is a directory" "-o DIR: refused, naming why"
expect_true "-o DIR: the directory is still one" test -d "$T/dir"

# ---- a write that fails mid-blob ------------------------------------------------------------
echo "the old contents" >"$T/keep"
for engine in uring sync; do
    expect_exit 1 bash -c "ulimit -f 2048; trap '' XFSZ; CMKSTORE_IO=$engine exec \"\$0\" blob get --store \"\$1\" -o \"\$2\" \"\$3\"" \
        "$CMKSTORE_BIN" "$S" "$T/keep" "$D"
    expect_err_match "file too large" "$engine: a failed write is reported with its cause"
    expect_eq "$(cat "$T/keep")" "the old contents" "$engine: the existing FILE is untouched"
    expect_eq "$(find "$T" -maxdepth 1 -name 'keep.partial-*' | wc -l)" 0 \
        "$engine: no partial file left after the failed write"
done
finish
