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

# s3_uploads PREFIX: the incomplete multipart uploads of the bucket under PREFIX, "key id"
# a line, sorted (ListMultipartUploads, following the markers).
s3_uploads() {
    local q code page
    q="prefix=$(python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1], safe=""))' "$1")&uploads="
    while :; do
        code=$(s3_req "$T/.s3up" GET "/orph?$q")
        [ "$code" = 200 ] || {
            echo "s3_uploads: listing answered $code" >&2
            return 1
        }
        page=$(python3 - "$T/.s3up" "$1" <<'PY'
import sys, urllib.parse
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
for u in root.findall(ns + "Upload"):
    print("U " + u.find(ns + "Key").text + " " + u.find(ns + "UploadId").text)
t = root.find(ns + "IsTruncated")
if t is not None and t.text == "true":
    k = root.find(ns + "NextKeyMarker").text
    i = root.find(ns + "NextUploadIdMarker")
    q = "key-marker=" + urllib.parse.quote(k, safe="")
    q += "&prefix=" + urllib.parse.quote(sys.argv[2], safe="")
    if i is not None and i.text:
        q += "&upload-id-marker=" + urllib.parse.quote(i.text, safe="")
    print("Q " + q + "&uploads=")
PY
)
        printf '%s\n' "$page" | sed -n 's/^U //p'
        q=$(printf '%s\n' "$page" | sed -n 's/^Q //p')
        [ -n "$q" ] || break
    done | sort
}
count_uploads() { s3_uploads "$1" | wc -l; }
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
s3_uploads "" >"$T/before"
expect_eq "$(wc -l <"$T/before")" 4 "four uploads in the bucket"

# ---- kept: read-only open, default grace, large grace, bad grace
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" events --store "$S"
expect_eq "$(s3_uploads "")" "$(cat "$T/before")" "a read-only open (events, grace 0) aborts nothing"
printf 'second blob' >"$T/b"
expect_ok cmk blob put --store "$S" "$T/b"
DB=$(cat "$OUT")
expect_eq "$(s3_uploads "")" "$(cat "$T/before")" "a writable open with the default grace (24 h) aborts nothing"
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=86400 "$CMKSTORE_BIN" blob rm --store "$S" "$DB"
expect_eq "$(s3_uploads "")" "$(cat "$T/before")" "... nor with a grace of 86400 s"
for bad in 1x -1 "" " 5" 99999999999999999999999; do
    expect_exit 2 env "CMKSTORE_S3_ORPHAN_GRACE=$bad" "$CMKSTORE_BIN" blob put --store "$S" "$T/b"
    expect_err_match "CMKSTORE_S3_ORPHAN_GRACE must be a number of seconds" "grace '$bad' refused clearly"
done
expect_exit 3 cmk blob stat --store "$S" "$DB"
expect_eq "$(s3_uploads "")" "$(cat "$T/before")" "... and nothing changed"

# ---- grace 0: the store's data/ uploads go, the others stay
expect_ok env CMKSTORE_S3_ORPHAN_GRACE=0 "$CMKSTORE_BIN" blob put --store "$S" "$T/b"
expect_eq "$(count_uploads st/data/)" 0 "a writable open with grace 0 aborts the uploads under data/"
expect_eq "$(s3_uploads "" | cut -d' ' -f1 | tr '\n' ' ')" "st/other/x st2/data/0000000000000001 " \
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

