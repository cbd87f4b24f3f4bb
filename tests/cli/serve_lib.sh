# shellcheck shell=bash
# tests/cli/serve_lib.sh — helpers for the `cmkstore serve` tests (sourced after lib.sh).
#
# Servers listen on 127.0.0.1 port 0 (the kernel picks a free port; the server prints it), so
# tests never race for ports. Every server started here is stopped at exit (lib.sh's on_exit),
# whatever happens. Needs curl, and skopeo for the skopeo tests (Debian packages curl, skopeo).

command -v curl >/dev/null || {
    echo "missing tool: curl (Debian: curl)" >&2
    exit 1
}

SRV_PIDS=()

# use_skopeo [TOOL...]: skopeo and each TOOL (a Debian package of the same name) must be
# installed, else the test stops with its name; sets SK, the skopeo command line, and keeps
# registry credentials in the test's own auth file, never the user's.
use_skopeo() {
    local tool
    for tool in skopeo "$@"; do
        command -v "$tool" >/dev/null || {
            echo "missing tool: $tool (Debian: $tool)" >&2
            exit 1
        }
    done
    SK=(skopeo --insecure-policy)
    export REGISTRY_AUTH_FILE="$T/auth.json"
    echo '{}' >"$REGISTRY_AUTH_FILE"
}

serve_cleanup() {
    local p
    for p in "${SRV_PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
on_exit serve_cleanup

# start_server NAME [serve options...]: starts `cmkstore serve` in the background with
# --listen 127.0.0.1:0, waits (up to 120 s: the first run makes an RSA key) until it listens:
# on https:// when the options hold --tls-cert (a server that fell back to plain HTTP then
# does not count as started), else on http://. Sets SRV_PID, HP (127.0.0.1:PORT), URL
# (http[s]://HP), SRV_OUT, SRV_ERR.
start_server() {
    local name=$1 scheme=http a
    shift
    for a in "$@"; do
        case $a in
        --tls-cert | --tls-cert=*) scheme=https ;;
        esac
    done
    SRV_OUT="$T/$name.out"
    SRV_ERR="$T/$name.err"
    # Emptied here, not only by the background job's redirection: a server started again
    # under the same name must not be found listening on the previous one's line.
    : >"$SRV_OUT"
    : >"$SRV_ERR"
    "$CMKSTORE_BIN" serve --listen 127.0.0.1:0 "$@" >"$SRV_OUT" 2>"$SRV_ERR" &
    SRV_PID=$!
    SRV_PIDS+=("$SRV_PID")
    if HP=$(wait_listening "$SRV_OUT" "$SRV_PID" "$scheme" 1200); then
        URL="$scheme://$HP"
        return 0
    fi
    echo "# server $name did not start (no 'Listening on $scheme://'):" >&2
    sed 's/^/#   /' "$SRV_ERR" >&2
    return 1
}

# stop_server [SIGNAL]: signals the server (default TERM) and waits for it (up to 60 s).
# Sets SRV_EXIT to its exit status (or 124 if it did not stop: it is then killed).
stop_server() {
    stop_bg "$SRV_PID" "${1:-TERM}"
    SRV_EXIT=$BG_EXIT
}

# hcurl OUTFILE CURL-ARGS...: runs curl, body to OUTFILE, headers to OUTFILE.h; prints the
# HTTP status (000 if the connection failed).
hcurl() {
    local out=$1
    shift
    curl -sS -o "$out" -D "$out.h" -w '%{http_code}' "$@" 2>/dev/null || true
}

# hdr_of FILE.h NAME: value of header NAME (case-insensitive), without CR.
hdr_of() {
    grep -i "^$2:" "$1" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r'
}

# upload_parts STORE ID [1]: the digests of the stored blobs in STORE holding parts of upload
# session ID (their bytes end with the line "cmkstore upload part ID <16 hex>", 71 bytes), one
# a line; the bytes of the last one found are left in $T/part. With 1: the first only. Fails
# if there is none.
upload_parts() {
    local d found=1
    for d in $(cmk blob ls --store "$1" | jq -r '.[]' | sort); do
        cmk blob get --store "$1" "$d" >"$T/part.tmp" || continue
        if [ "$(tail -c 71 "$T/part.tmp" | head -c 54)" == "cmkstore upload part $2 " ]; then
            mv "$T/part.tmp" "$T/part"
            echo "$d"
            found=0
            [ "${3:-}" != 1 ] || break
        fi
    done
    return $found
}

# finish_upload LOC FIRST TOTAL REST REPO DIGEST WHOLE: PATCHes file REST as bytes
# FIRST..TOTAL-1 of the upload session at LOC (body $B), commits it with PUT ?digest=DIGEST
# and pulls it back from REPO, byte for byte against file WHOLE: how a resumed upload ends.
finish_upload() {
    local loc=$1 first=$2 total=$3 rest=$4 repo=$5 d=$6 whole=$7
    expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $first-$((total - 1))" --data-binary "@$rest" "$URL$loc")" \
        202 "PATCH the rest"
    expect_eq "$(hdr_of "$B.h" Range)" "0-$((total - 1))" "... Range 0-$((total - 1))"
    expect_eq "$(hcurl "$B" -X PUT "$URL$loc?digest=$d")" 201 "PUT commits"
    expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$d" "... under the blob's digest"
    expect_eq "$(hcurl "$B" "$URL/v2/$repo/blobs/$d")" 200 "GET the blob"
    expect_true "... byte for byte" cmp "$B" "$whole"
}

# mk_oci_layout DIR SEED [LAYER_KIB...]: writes an OCI image layout (oci-layout, index.json
# with ref "latest", config, manifest, layers) into DIR. Each layer is a tar with one file of
# LAYER_KIB KiB of pseudo-random data plus a compressible text file; every layer is gzip
# compressed except the last, which is stored uncompressed (application/vnd.oci.image.layer.
# v1.tar). Prints the manifest digest. Deterministic for a given SEED.
mk_oci_layout() {
    python3 "$(dirname "${BASH_SOURCE[0]}")/../../tools/oci_layout.py" test "$@"
}

# layout_verify DIR: every blob file of an OCI layout hashes to its name.
layout_verify() {
    local f
    for f in "$1"/blobs/sha256/*; do
        [ "sha256:$(sha256sum "$f" | cut -d' ' -f1)" == "sha256:$(basename "$f")" ] || return 1
    done
}

# layout_manifest DIR: the manifest digest that index.json names.
layout_manifest() {
    jq -r '.manifests[0].digest' "$1/index.json"
}

# push_blob REPO FILE: monolithic POST ?digest= upload; prints the HTTP status.
push_blob() {
    hcurl "$T/.push" -X POST --data-binary "@$2" -H 'Content-Type: application/octet-stream' \
        "$URL/v2/$1/blobs/uploads/?digest=$(oci_digest "$2")"
}


# registry_with_grace SECONDS: creates the embedded default store (one start and stop of a
# server) and sets its unreachable grace, a store setting that a server reads when it starts.
# Sets S to the store's directory.
registry_with_grace() {
    start_server init
    stop_server TERM
    S=$CMKSTORE_HOME/registry
    expect_ok cmk encryption update --store "$S" --unreachable-grace "$1"
}
