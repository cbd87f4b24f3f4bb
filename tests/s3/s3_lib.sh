# shellcheck shell=bash
# tests/s3/s3_lib.sh — helpers for the tests on object storage (sourced after
# tests/cli/lib.sh): a throwaway Ceph RGW per test (tests/s3/ceph.sh) and raw S3 requests
# signed by curl (--aws-sigv4), to look at and tamper with the bucket's objects directly.
#
# RGW (Ceph 16) needs x-amz-content-sha256 on every signed request and curl 7.88 does not
# send it: s3_req adds it (the SHA-256 of the body, or of nothing).

S3_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CEPH_SH=$S3_LIB_DIR/ceph.sh
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# ceph_start [DIR]: starts a cluster in DIR (default $T/ceph), exports its AWS_* variables
# (endpoint, region, keys) and stops it when the test ends (or when the test is killed: the
# cluster's watchdog follows this shell). Fails the test, with the reason, if it cannot start.
ceph_start() {
    CEPH_DIR=${1:-$T/ceph}
    if ! bash "$CEPH_SH" start "$CEPH_DIR" --owner $$; then
        not_ok "the Ceph RGW test cluster starts (tests/s3/ceph.sh)"
        exit 1
    fi
    on_exit "bash '$CEPH_SH' stop '$CEPH_DIR'"
    # shellcheck disable=SC1091
    source "$CEPH_DIR/env"
    S3_EP=$AWS_ENDPOINT_URL
    S3_CURLRC=$CEPH_DIR/curlrc
}

# rgw_stop / rgw_start: the gateway alone goes away and comes back on the same port.
rgw_stop() {
    bash "$CEPH_SH" rgw-stop "$CEPH_DIR"
}
rgw_start() {
    bash "$CEPH_SH" rgw-start "$CEPH_DIR"
}

# s3_req OUT METHOD PATH [BODYFILE|""] [CURL-ARGS...]: one signed request to PATH (/BUCKET,
# /BUCKET/KEY, with ?query); body to OUT, headers to OUT.h; prints the HTTP status (000 if
# the connection failed).
s3_req() {
    local out=$1 method=$2 path=$3 body=${4:-} sha
    shift 3
    [ $# -eq 0 ] || shift
    local args=(-K "$S3_CURLRC" -sS -o "$out" -D "$out.h" -w '%{http_code}')
    # curl -X HEAD would wait for a body that never comes.
    if [ "$method" = HEAD ]; then
        args+=(-I)
    else
        args+=(-X "$method")
    fi
    if [ -n "$body" ]; then
        sha=$(sha256sum "$body" | cut -d' ' -f1)
        args+=(--data-binary "@$body" -H 'Content-Type: application/octet-stream')
    else
        sha=$EMPTY_SHA256
    fi
    curl "${args[@]}" -H "x-amz-content-sha256: $sha" "$@" "$S3_EP$path" 2>/dev/null || true
}

# s3_mb BUCKET: creates a bucket; prints the status (200).
s3_mb() {
    s3_req "$T/.s3mb" PUT "/$1"
}

# s3_etag OUT: the ETag of the last answer written to OUT (OUT.h), without its quotes.
s3_etag() {
    grep -i '^etag:' "$1.h" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r"'
}

# s3_keys BUCKET [PREFIX]: every key in the bucket (under PREFIX), one a line, sorted
# (ListObjectsV2, following continuation tokens).
s3_keys() {
    local bucket=$1 prefix=${2:-} token='' code q
    while :; do
        q="list-type=2&max-keys=1000&prefix=$(python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1], safe=""))' "$prefix")"
        [ -z "$token" ] || q="$q&continuation-token=$(python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1], safe=""))' "$token")"
        code=$(s3_req "$T/.s3ls" GET "/$bucket?$q")
        [ "$code" = 200 ] || {
            echo "s3_keys: listing $bucket answered $code" >&2
            return 1
        }
        token=$(python3 - "$T/.s3ls" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
for c in root.findall(ns + "Contents"):
    print("K " + c.find(ns + "Key").text)
t = root.find(ns + "NextContinuationToken")
trunc = root.find(ns + "IsTruncated")
if trunc is not None and trunc.text == "true" and t is not None:
    print("T " + t.text)
PY
)
        printf '%s\n' "$token" | sed -n 's/^K //p'
        token=$(printf '%s\n' "$token" | sed -n 's/^T //p')
        [ -n "$token" ] || break
    done | sort
}

# s3_uploads BUCKET PREFIX: the incomplete multipart uploads in BUCKET under PREFIX, "key id"
# a line, sorted (ListMultipartUploads, following the markers).
s3_uploads() {
    local q code page
    q="prefix=$(python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1], safe=""))' "$2")&uploads="
    while :; do
        code=$(s3_req "$T/.s3up" GET "/$1?$q")
        [ "$code" = 200 ] || {
            echo "s3_uploads: listing answered $code" >&2
            return 1
        }
        page=$(python3 - "$T/.s3up" "$2" <<'PY'
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
# s3_upload_count BUCKET PREFIX: how many of them; fails (no output) if the listing fails.
s3_upload_count() {
    local list
    list=$(s3_uploads "$1" "$2") || return 1
    printf '%s' "$list" | grep -c . || true
}
