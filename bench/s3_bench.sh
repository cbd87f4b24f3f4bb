#!/usr/bin/env bash
# bench/s3_bench.sh — cmkstore on object storage against the object store itself, on one Ceph
# RGW started for the run (tests/s3/ceph.sh, bluestore on a sparse file unless
# CMK_CEPH_OBJECTSTORE says otherwise), in one run, rounds alternating:
#
#   put/get  `cmkstore blob put/get --store s3://cmk/s` of BENCH_MB MB (default 256) against
#            the same bytes PUT and GET raw (curl, one request each, body hash computed
#            beforehand), incompressible (random) and compressible (text); the blob is removed
#            between rounds so every put stores it. cmkstore's times include opening the store
#            (a few requests) and sealing; get writes to /dev/null.
#   4 KiB    BENCH_SMALL (default 400) distinct 4 KiB random blobs pushed by 8 concurrent
#            clients to `cmkstore serve --store s3://cmk/reg` (monolithic POST ?digest=), and
#            the same files PUT raw to the gateway by 8 clients: puts/s. One curl per request
#            on both sides.
#
#   cmkbench (with a second argument, PATH-TO-CMKBENCH): `cmkbench all --store s3://cmkbench`
#            on the same RGW afterwards: the same comparisons made in-process, through the
#            backend's own S3 client for the raw side, plus 4 KiB gets and the CPU ceilings
#            (bench/RESULTS.md, "On S3").
#
#   bash bench/s3_bench.sh [PATH-TO-CMKSTORE [PATH-TO-CMKBENCH]]
#
# Environment: BENCH_MB, BENCH_REPS (default 3), BENCH_SMALL, BENCH_DIR (scratch, removed
# unless BENCH_KEEP=1). Needs ceph-mon ceph-osd radosgw ceph-common curl openssl python3 jq bc.
set -euo pipefail

BIN=${1:-build/cmkstore}
[ -x "$BIN" ] || {
    echo "usage: bash bench/s3_bench.sh PATH-TO-CMKSTORE" >&2
    exit 2
}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
BENCH=${2:-}
if [ -n "$BENCH" ]; then
    [ -x "$BENCH" ] || {
        echo "s3_bench.sh: $BENCH is not an executable cmkbench" >&2
        exit 2
    }
    BENCH=$(cd "$(dirname "$BENCH")" && pwd)/$(basename "$BENCH")
fi
MB=${BENCH_MB:-256}
REPS=${BENCH_REPS:-3}
SMALL=${BENCH_SMALL:-400}
W=${BENCH_DIR:-$(mktemp -d /tmp/s3-bench.XXXXXX)}
mkdir -p "$W"
SPID=
cleanup() {
    [ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
    bash "$(dirname "${BASH_SOURCE[0]}")/../tests/s3/ceph.sh" stop "$W/ceph" || true
    [ "${BENCH_KEEP:-0}" == 1 ] || rm -rf "$W"
}
trap cleanup EXIT

CMK_CEPH_OBJECTSTORE=${CMK_CEPH_OBJECTSTORE:-bluestore} \
    bash "$(dirname "${BASH_SOURCE[0]}")/../tests/s3/ceph.sh" start "$W/ceph" --owner $$
# shellcheck disable=SC1091
source "$W/ceph/env"
EP=$AWS_ENDPOINT_URL
EMPTY=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3() { # curl args...: one signed request
    curl -sS -f -K "$W/ceph/curlrc" "$@"
}
for b in raw cmk; do
    s3 -X PUT -o /dev/null -H "x-amz-content-sha256: $EMPTY" "$EP/$b"
done

export CMKSTORE_HOME=$W/home
"$BIN" identity create --name bench-id >"$W/id.json"
"$BIN" vault create --name bench-vault >/dev/null
"$BIN" vault set-policy --name bench-vault --object-id "$(jq -r .principalId "$W/id.json")" \
    --key-permissions get wrapKey unwrapKey >/dev/null
"$BIN" vault key create --vault-name bench-vault --name bench-key >"$W/key.json"
KID=$(jq -r .key.kid "$W/key.json")
S=s3://cmk/s
"$BIN" create --store "$S" --identity bench-id --key-encryption-key "${KID%/*}" >/dev/null

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "== data: $MB MB random and $MB MB text"
{ openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -in /dev/zero 2>/dev/null ||
    true; } | head -c $((MB * 1048576)) >"$W/random"
{ seq -f "line %08g of a compressible layer: lorem ipsum dolor sit amet" 1 100000000 2>/dev/null ||
    true; } | head -c $((MB * 1048576)) >"$W/text"

declare -A T
for shape in random text; do
    f=$W/$shape
    sha=$(sha256sum "$f" | cut -d' ' -f1)
    for rep in $(seq 1 "$REPS"); do
        t0=$(now)
        s3 -X PUT -o /dev/null -H "x-amz-content-sha256: $sha" -T "$f" "$EP/raw/$shape"
        t1=$(now)
        s3 -o /dev/null -H "x-amz-content-sha256: $EMPTY" "$EP/raw/$shape"
        t2=$(now)
        d=$("$BIN" blob put --store "$S" "$f")
        t3=$(now)
        "$BIN" blob get --store "$S" "$d" -o /dev/null
        t4=$(now)
        "$BIN" blob rm --store "$S" "$d" >/dev/null
        T[$shape,rawput,$rep]=$(echo "$t1 - $t0" | bc -l)
        T[$shape,rawget,$rep]=$(echo "$t2 - $t1" | bc -l)
        T[$shape,cmkput,$rep]=$(echo "$t3 - $t2" | bc -l)
        T[$shape,cmkget,$rep]=$(echo "$t4 - $t3" | bc -l)
        printf '%-6s round %d  raw put %6.2f s  get %6.2f s   cmkstore put %6.2f s  get %6.2f s\n' \
            "$shape" "$rep" "${T[$shape,rawput,$rep]}" "${T[$shape,rawget,$rep]}" \
            "${T[$shape,cmkput,$rep]}" "${T[$shape,cmkget,$rep]}"
    done
done

echo "== $SMALL distinct 4 KiB blobs, 8 clients"
mkdir -p "$W/small"
for i in $(seq 1 "$SMALL"); do
    head -c 4096 /dev/urandom >"$W/small/$i"
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" create --store s3://cmk/reg --identity bench-id --key-encryption-key "${KID%/*}" >/dev/null
"$BIN" serve --store s3://cmk/reg --listen "127.0.0.1:$port" --quiet >"$W/serve.out" 2>"$W/serve.err" &
SPID=$!
for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break
    sleep 0.1
done
export W EP port
t0=$(now)
seq 1 "$SMALL" | xargs -P 8 -I{} sh -c 'curl -sS -f -o /dev/null -K "$W/ceph/curlrc" -X PUT \
    -H "x-amz-content-sha256: $(sha256sum "$W/small/{}" | cut -d" " -f1)" -T "$W/small/{}" "$EP/raw/small/{}"'
t1=$(now)
seq 1 "$SMALL" | xargs -P 8 -I{} sh -c 'curl -sS -f -o /dev/null -X POST --data-binary "@$W/small/{}" \
    -H "Content-Type: application/octet-stream" \
    "http://127.0.0.1:$port/v2/bench/small/blobs/uploads/?digest=sha256:$(sha256sum "$W/small/{}" | cut -d" " -f1)"'
t2=$(now)
kill "$SPID"
wait "$SPID" 2>/dev/null || true
SPID=

rate() { echo "$1 / 1048576 / $2" | bc -l; }
echo
echo "median of $REPS rounds, $MB MB per blob (machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); RGW ${CMK_CEPH_OBJECTSTORE:-bluestore})"
declare -A M
for shape in random text; do
    for op in rawput rawget cmkput cmkget; do
        vals=()
        for rep in $(seq 1 "$REPS"); do vals+=("${T[$shape,$op,$rep]}"); done
        M[$op]=$(median "${vals[@]}")
    done
    bytes=$((MB * 1048576))
    printf '%-6s put: raw %6.1f MB/s, cmkstore %6.1f MB/s (%3.0f%%)   get: raw %6.1f MB/s, cmkstore %6.1f MB/s (%3.0f%%)\n' \
        "$shape" "$(rate $bytes "${M[rawput]}")" "$(rate $bytes "${M[cmkput]}")" \
        "$(echo "100 * ${M[rawput]} / ${M[cmkput]}" | bc -l)" \
        "$(rate $bytes "${M[rawget]}")" "$(rate $bytes "${M[cmkget]}")" \
        "$(echo "100 * ${M[rawget]} / ${M[cmkget]}" | bc -l)"
done
printf '4 KiB puts, 8 clients: raw %6.0f/s, cmkstore serve %6.0f/s (%3.0f%%)\n' \
    "$(echo "$SMALL / ($t1 - $t0)" | bc -l)" "$(echo "$SMALL / ($t2 - $t1)" | bc -l)" \
    "$(echo "100 * ($t1 - $t0) / ($t2 - $t1)" | bc -l)"

if [ -n "$BENCH" ]; then
    echo
    echo "== cmkbench --store s3://cmkbench on the same RGW (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$BENCH" all --store s3://cmkbench --dir "$W/cmkbench" --size-mb "$MB" --reps "$REPS" \
        --small "$SMALL"
fi
