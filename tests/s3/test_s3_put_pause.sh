#!/usr/bin/env bash
# test_s3_put_pause.sh — `blob put` fed through a FIFO whose writer (this test) pauses without
# closing it, into an s3:// store on a Ceph RGW of the test's own: while it waits for input the
# put hands the store what it has read (its multipart upload starts, paused), and it completes
# with the digest of everything written once the writer goes on and closes; a FIFO named as
# FILE, written in bursts; a paused put with a wrong --digest is refused and leaves no upload
# and no blob; a put killed (kill -9) while paused leaves its upload under data/ and nothing
# under blobs/.
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/s3_lib.sh"

ceph_start
expect_eq "$(s3_mb pause)" 200 "a bucket"
S=s3://pause/st
expect_ok cmk create --store "$S"
gen_random paused 20000000 "$T/data"
DIGEST=$(oci_digest "$T/data")
# Where the writer pauses: 16 chunks of 1 MiB (the store's default), the 16th complete only
# with the last of these bytes (a chunk is sealed once the next byte arrives); past the size
# at which the store starts its multipart upload (header + 9 MiB: the first part, header and
# 5 MiB, is sent last, and the upload starts once the second holds 4 MiB). Before the put
# handed over what it had sealed when its input paused, the chunks sealed last waited in
# memory for the next write: no upload while paused.
PAUSE_AT=$((16 * 1048576 + 84))

# count_uploads: the incomplete multipart uploads under the store's data/.
count_uploads() { s3_upload_count pause st/data/; }
has_uploads() { [ "$(count_uploads)" = "$1" ]; }
count_blobs() { s3_keys pause st/blobs/ | wc -l; }

# paused_put N [ARGS...]: starts `blob put` (with ARGS) reading FIFO $T/fN on its stdin, opens
# the FIFO's writing end as fd 8 and writes the first PAUSE_AT bytes; PID in PUTPID.
paused_put() {
    local n=$1
    shift
    mkfifo "$T/f$n"
    "$CMKSTORE_BIN" blob put --store "$S" "$@" - <"$T/f$n" >"$T/put$n.out" 2>"$T/put$n.err" &
    PUTPID=$!
    on_exit "kill -KILL $PUTPID 2>/dev/null"
    exec 8>"$T/f$n"
    head -c "$PAUSE_AT" "$T/data" >&8
}

# expect_upload_paused WHAT: the put's upload starts while its input is paused (bounded poll).
expect_upload_paused() {
    if wait_for 120 has_uploads 1; then
        ok "$1: its multipart upload starts while the input is paused"
    else
        not_ok "$1: its multipart upload starts while the input is paused (none within 120 s;" \
            "put stderr: $(cat "$T/put$2.err"))"
    fi
    expect_true "$1: ... the put still waits for its input" kill -0 "$PUTPID"
}

# resume: writes the rest of the data in 1 MiB bursts and closes the writer.
resume() {
    local off=$PAUSE_AT
    while [ "$off" -lt 20000000 ]; do
        slice "$T/data" "$off" 1048576 >&8
        off=$((off + 1048576))
    done
    exec 8>&-
}

# ---- paused past the second part, then resumed and closed
paused_put 1
expect_upload_paused "a put paused at $PAUSE_AT bytes" 1
expect_eq "$(count_blobs)" 0 "... nothing under blobs/ yet"
resume
rc=0
wait "$PUTPID" || rc=$?
expect_eq "$rc" 0 "the resumed put succeeds (stderr: $(cat "$T/put1.err"))"
expect_eq "$(cat "$T/put1.out")" "$DIGEST" "... with the digest of everything written"
expect_ok cmk blob get --store "$S" "$DIGEST" -o "$T/get1"
expect_true "... and the blob reads back whole" cmp "$T/data" "$T/get1"
expect_eq "$(count_uploads)" 0 "... no upload left"

# ---- a FIFO named as FILE, written in bursts (small: one object)
mkfifo "$T/named"
"$CMKSTORE_BIN" blob put --store "$S" "$T/named" >"$T/named.out" 2>"$T/named.err" &
PUTPID=$!
on_exit "kill -KILL $PUTPID 2>/dev/null"
exec 8>"$T/named"
printf 'first burst, ' >&8
printf 'second burst' >&8
exec 8>&-
rc=0
wait "$PUTPID" || rc=$?
expect_eq "$rc" 0 "a put from a FIFO named as FILE succeeds (stderr: $(cat "$T/named.err"))"
printf 'first burst, second burst' >"$T/named.exp"
expect_eq "$(cat "$T/named.out")" "$(oci_digest "$T/named.exp")" "... with the digest of both bursts"

# ---- a wrong --digest, found at the end of a paused put: refused, nothing left behind
paused_put 2 --digest "sha256:$(printf '%064d' 0)"
expect_upload_paused "a put with a wrong --digest" 2
resume
rc=0
wait "$PUTPID" || rc=$?
expect_eq "$rc" 4 "... is refused at the end (exit 4)"
expect_true "... saying the digest does not match" grep -qi "digest" "$T/put2.err"
expect_eq "$(count_uploads)" 0 "... its upload is aborted"
expect_eq "$(count_blobs)" 2 "... and no blob added"

# ---- killed (kill -9) while paused: the upload stays behind, invisible
paused_put 3
expect_upload_paused "a put killed while paused" 3
kill -KILL "$PUTPID"
wait "$PUTPID" 2>/dev/null || true
exec 8>&-
expect_eq "$(count_uploads)" 1 "... leaves its upload under data/"
expect_eq "$(count_blobs)" 2 "... and nothing under blobs/"
expect_ok cmk blob get --store "$S" "$DIGEST" -o "$T/get3"
expect_true "... the store's blobs are intact" cmp "$T/data" "$T/get3"
