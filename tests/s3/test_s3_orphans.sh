#!/usr/bin/env bash
# test_s3_orphans.sh — the sweep of abandoned multipart uploads at a writable open of an
# s3:// store, on a Ceph RGW of the test's own: uploads under the store's data/ (as a put
# killed mid-upload leaves them) are aborted by a writable open with
# CMKSTORE_S3_ORPHAN_GRACE=0 and kept by one with the default grace (24 h) or a large one, and
# by the read-only open of the event log; uploads outside the store's data/ are never touched;
# a bad grace is refused with a clear error and changes nothing.
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/s3_lib.sh"

ceph_start
expect_eq "$(s3_mb orph)" 200 "a bucket"
S=s3://orph/st
unset CMKSTORE_S3_ORPHAN_GRACE

count_uploads() { s3_upload_count orph "$1"; }
has_uploads() { [ "$(count_uploads "$1")" = "$2" ]; }

# start_upload KEY: starts a multipart upload of KEY directly; prints its upload id.
start_upload() {
    local code
    code=$(s3_req "$T/.init" POST "/orph/$1?uploads=")
    [ "$code" = 200 ] || {
        echo "start_upload: $code" >&2
        return 1
    }
    sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p' "$T/.init"
}

expect_ok cmk create --store "$S"
printf 'first blob' >"$T/a"
expect_ok cmk blob put --store "$S" "$T/a"
DA=$(cat "$OUT")
expect_eq "$(count_uploads st/)" 0 "no upload after a complete put"

# ---- the orphan a writer killed mid-put leaves (its multipart upload under data/), made
# directly: a put killed with kill -9 once its upload had started (a FIFO fed 20 MB) did this
# in 6 s alone but saw no upload start within 120 s in one CI run under load, unexplained, so
# the orphan is made by hand here (kill -9 mid-push is covered by test_s3_frontends).
gen_random killed 40000000 "$T/killed"
expect_true "an orphaned upload under st/data/, as a killed put leaves it" \
    test -n "$(start_upload st/data/00000000000000bb)"
expect_eq "$(s3_keys orph st/blobs/ | wc -l)" 1 "... nothing under blobs/ but the first blob"

# ---- uploads started directly: one of the store's, two that are not its own
U1=$(start_upload st/data/00000000000000aa)
expect_true "an upload under st/data/" test -n "$U1"
expect_true "an upload under st/other/" test -n "$(start_upload st/other/x)"
expect_true "an upload under another store's data/" test -n "$(start_upload st2/data/0000000000000001)"
s3_uploads orph "" >"$T/before"
expect_eq "$(wc -l <"$T/before")" 4 "four uploads in the bucket"

# ---- kept: read-only open, default grace, large grace, bad grace
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" events --store "$S"
expect_eq "$(s3_uploads orph "")" "$(cat "$T/before")" "a read-only open (events, grace 0) aborts nothing"
printf 'second blob' >"$T/b"
expect_ok cmk blob put --store "$S" "$T/b"
DB=$(cat "$OUT")
expect_eq "$(s3_uploads orph "")" "$(cat "$T/before")" "a writable open with the default grace (24 h) aborts nothing"
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=86400 "$CMKSTORE_BIN" blob rm --store "$S" "$DB"
expect_eq "$(s3_uploads orph "")" "$(cat "$T/before")" "... nor with a grace of 86400 s"
for bad in 1x -1 "" " 5" 99999999999999999999999; do
    expect_exit 2 env "CMKSTORE_S3_ORPHAN_GRACE=$bad" "$CMKSTORE_BIN" blob put --store "$S" "$T/b"
    expect_err_match "CMKSTORE_S3_ORPHAN_GRACE must be a number of seconds" "grace '$bad' refused clearly"
done
expect_exit 3 cmk blob stat --store "$S" "$DB"
expect_eq "$(s3_uploads orph "")" "$(cat "$T/before")" "... and nothing changed"

# ---- grace 0: the store's data/ uploads go, the others stay
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" blob put --store "$S" "$T/b"
expect_eq "$(count_uploads st/data/)" 0 "a writable open with grace 0 aborts the uploads under data/"
expect_eq "$(s3_uploads orph "" | cut -d' ' -f1 | tr '\n' ' ')" "st/other/x st2/data/0000000000000001 " \
    "... and only those"
expect_eq "$(s3_req "$T/.parts" GET "/orph/st/data/00000000000000aa?uploadId=$U1")" 404 \
    "... the aborted upload is gone (NoSuchUpload)"
expect_ok cmk blob get --store "$S" "$DA"
expect_eq "$(cat "$OUT")" "first blob" "the store's blobs are intact"
expect_ok cmk blob get --store "$S" "$DB"
expect_eq "$(cat "$OUT")" "second blob" "... both"
expect_ok cmk blob put --store "$S" "$T/killed"
expect_ok cmk blob get --store "$S" "$(oci_digest "$T/killed")" -o "$T/killed.out"
expect_true "the killed put's blob, put again, reads back whole" cmp "$T/killed" "$T/killed.out"
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" blob ls --store "$S"
expect_eq "$(count_uploads st/)" 1 "a sweep with nothing of its own to abort keeps the rest"


# ==== the sweep of unlinked data objects (`registry gc`, cmk_store_sweep) ====
# A large blob is a multipart upload completed into st/data/<16 hex>, then published by a
# link object under st/blobs/. A writer killed between the two, or the loser of a publish race
# that died before deleting its upload, leaves a completed data object no link names; so
# does a blob deletion whose data delete failed after its link was gone. `registry gc` sweeps
# those once older than CMKSTORE_S3_ORPHAN_GRACE, after reading every link (fail closed).

# obj_size KEY: the size of object KEY of the bucket (HEAD), or "absent".
obj_size() {
    local code
    code=$(s3_req "$T/.head" HEAD "/orph/$1")
    if [ "$code" = 404 ]; then
        echo absent
        return 0
    fi
    [ "$code" = 200 ] || {
        echo "obj_size: HEAD $1 answered $code" >&2
        return 1
    }
    tr -d '\r' <"$T/.head.h" | sed -n 's/^[Cc]ontent-[Ll]ength: *//p'
}

# complete_upload KEY FILE: a multipart upload of FILE (one part) to KEY, completed directly:
# the data object a put killed right after CompleteMultipartUpload leaves.
complete_upload() {
    local id code etag
    id=$(start_upload "$1") && [ -n "$id" ] || return 1
    code=$(s3_req "$T/.part" PUT "/orph/$1?partNumber=1&uploadId=$id" "$2")
    [ "$code" = 200 ] || {
        echo "complete_upload: part answered $code" >&2
        return 1
    }
    etag=$(tr -d '\r' <"$T/.part.h" | sed -n 's/^[Ee][Tt]ag: *//p')
    printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>' \
        "$etag" >"$T/.complete.xml"
    code=$(s3_req "$T/.complete" POST "/orph/$1?uploadId=$id" "$T/.complete.xml")
    [ "$code" = 200 ] && ! grep -q '<Error>' "$T/.complete" || {
        echo "complete_upload: complete answered $code" >&2
        return 1
    }
}

# link_target DIGEST: the data key the link object of a large blob names.
link_target() {
    local hex=${1#sha256:}
    [ "$(s3_req "$T/.link" GET "/orph/st/blobs/sha256/$hex")" = 200 ] || return 1
    sed -n 2p "$T/.link"
}

# Linked blobs: the 40 MB one put above, one of 20 MB, and a small one-object blob.
gen_random linked 20000000 "$T/linked"
expect_ok cmk blob put --store "$S" "$T/linked"
DL=$(cat "$OUT")
DK=$(oci_digest "$T/killed")
LK=$(link_target "$DK")
LL=$(link_target "$DL")
expect_true "the large blobs are links to data objects ($LK, $LL)" \
    test -n "$LK" -a -n "$LL" -a "$(obj_size "st/$LL")" != absent

# Unlinked data objects: a completed upload (one part of 3 MB), one PUT whole, and the data
# object of a 12 MB blob whose link is deleted directly (as if its data delete had failed).
gen_random unlinked 3000000 "$T/unlinked"
expect_true "a completed multipart upload under st/data/ with no link" \
    complete_upload st/data/00000000000000cc "$T/unlinked"
expect_eq "$(s3_req "$T/.put" PUT /orph/st/data/00000000000000dd "$T/b")" 200 \
    "a data object PUT whole, no link"
gen_random dropped 12000000 "$T/dropped"
expect_ok cmk blob put --store "$S" "$T/dropped"
DD=$(cat "$OUT")
LD=$(link_target "$DD")
expect_true "the 12 MB blob is a link ($LD)" test -n "$LD"
expect_eq "$(s3_req "$T/.del" DELETE "/orph/st/blobs/sha256/${DD#sha256:}")" 204 \
    "its link deleted, its data object left"
ORPH_BYTES=$(($(obj_size st/data/00000000000000cc) + $(obj_size st/data/00000000000000dd) + $(obj_size "st/$LD")))
expect_eq "$(obj_size st/data/00000000000000cc)" 3000000 "the completed upload is a 3 MB object"

# Not the store's to sweep: a name no sink gives under st/data/, another prefix, another store.
for k in st/data/notours st/other/y st2/data/00000000000000ee; do
    expect_eq "$(s3_req "$T/.put" PUT "/orph/$k" "$T/b")" 200 "an object $k"
done
# The bucket's keys but events and records (each command appends events, gc writes records).
bucket_keys() { s3_keys orph "" | grep -v -e '^st/events/' -e '^st/meta/'; }
bucket_keys >"$T/keys0"

# ---- the default grace (24 h), and 3600 s, keep them all; gc reports nothing swept
expect_ok cmk registry gc --store "$S"
expect_json '.orphans_deleted == 0 and .orphan_bytes_deleted == 0 and .orphan_uploads_aborted == 0' \
    "gc with the default grace sweeps nothing"
expect_json '.blobs_freed == 0' "... and frees no young blob"
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=3600 "$CMKSTORE_BIN" registry gc --store "$S"
expect_json '.orphans_deleted == 0' "... nor with a grace of 3600 s"
expect_eq "$(bucket_keys)" "$(cat "$T/keys0")" "... and nothing in the bucket changed"

# ---- dry run with grace 0: counts, deletes nothing
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" registry gc --store "$S" --dry-run
expect_json ".orphans_deleted == 3 and .orphan_bytes_deleted == $ORPH_BYTES" \
    "a dry run with grace 0 counts the three unlinked data objects ($ORPH_BYTES bytes)"
expect_eq "$(bucket_keys)" "$(cat "$T/keys0")" "... and deletes nothing"

# ---- fail closed: a link object that cannot be read stops the sweep before any delete
BAD=st/blobs/sha256/$(printf 'bad link' | sha256sum | cut -d' ' -f1)
printf 'CMKSLINK\ndata/00000000000000cc\nnot a size\n' >"$T/badlink"
expect_eq "$(s3_req "$T/.put" PUT "/orph/$BAD" "$T/badlink")" 200 "a malformed link object"
expect_exit 4 env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" registry gc --store "$S"
expect_err_match "malformed link object; no data object is deleted" "the sweep fails closed, naming why"
expect_err_match "${BAD}" "... and the link"
expect_eq "$(bucket_keys | grep -v "^$BAD\$")" "$(cat "$T/keys0")" \
    "... and no data object was deleted"
expect_eq "$(s3_req "$T/.del" DELETE "/orph/$BAD")" 204 "the malformed link removed"

# ---- grace 0: the three go, everything else stays
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" registry gc --store "$S"
expect_json ".orphans_deleted == 3 and .orphan_bytes_deleted == $ORPH_BYTES and .blobs_freed == 0" \
    "gc with grace 0 deletes the three unlinked data objects ($ORPH_BYTES bytes)"
for k in st/data/00000000000000cc st/data/00000000000000dd "st/$LD"; do
    expect_eq "$(obj_size "$k")" absent "$k is gone"
done
grep -v -e '^st/data/00000000000000cc$' -e '^st/data/00000000000000dd$' -e "^st/$LD\$" \
    "$T/keys0" >"$T/keys1"
expect_eq "$(bucket_keys)" "$(cat "$T/keys1")" \
    "... and only those: linked data, blobs, records and other prefixes stay"
expect_eq "$(s3_keys orph st/data/ | tr '\n' ' ')" "$(printf '%s\n' "st/$LK" "st/$LL" st/data/notours | sort | tr '\n' ' ')" \
    "st/data/ holds the two linked data objects and the name that is not the store's"
expect_eq "$(s3_uploads orph "" | cut -d' ' -f1 | tr '\n' ' ')" "st/other/x st2/data/0000000000000001 " \
    "other prefixes' uploads are untouched"
for f in linked killed; do
    expect_ok cmk blob get --store "$S" "$(oci_digest "$T/$f")" -o "$T/$f.out"
    expect_true "the linked blob $f reads back byte for byte" cmp "$T/$f" "$T/$f.out"
done
expect_ok cmk blob get --store "$S" "$DA"
expect_eq "$(cat "$OUT")" "first blob" "the one-object blob is intact"
expect_exit 3 cmk blob stat --store "$S" "$DD"
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" registry gc --store "$S"
expect_json '.orphans_deleted == 0' "a second sweep finds nothing left"

# ---- a put after the sweep still links and reads
expect_ok cmk blob put --store "$S" "$T/dropped"
expect_ok cmk blob get --store "$S" "$DD" -o "$T/dropped.out"
expect_true "the dropped blob, put again, reads back whole" cmp "$T/dropped" "$T/dropped.out"
