#!/usr/bin/env bash
# bench/smoke_s3.sh CMKBENCH — CTest smoke of `cmkbench --store s3://` (labels bench, s3): on a
# Ceph RGW of its own (tests/s3/ceph.sh, memstore), one `all` run at tiny sizes must finish,
# print the S3 table, write JSON holding every S3 row with a value and its raw ceiling, skip
# the local-disk scenarios, and leave nothing in the bucket; bad input is refused with a clear
# message. Speed is not judged (the figures of such a run mean nothing).
set -euo pipefail
bin=${1:?usage: smoke_s3.sh path/to/cmkbench}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ceph=$here/../tests/s3/ceph.sh
base=${CMK_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$base"
out=$(mktemp -d "$base/bench-smoke-s3.XXXXXX")
cleanup() {
    bash "$ceph" stop "$out/ceph" || true
    rm -rf "$out"
}
trap cleanup EXIT

command -v python3 >/dev/null || {
    echo "FAILED: python3 is needed to read the JSON (Debian package python3)"
    exit 1
}
if ! bash "$ceph" start "$out/ceph" --owner $$ >"$out/ceph.log" 2>&1; then
    echo "FAILED: the Ceph RGW test cluster did not start (tests/s3/ceph.sh):"
    tail -20 "$out/ceph.log"
    exit 1
fi
# shellcheck disable=SC1091
source "$out/ceph/env"

fail=0
check() { # description, command...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}

# The endpoint through --s3-endpoint (as the CLI takes it), not the environment.
ep=$AWS_ENDPOINT_URL
if ! env -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_S3 "$bin" all --quick --store s3://smoke/pre \
    --s3-endpoint "$ep" --dir "$out/data" --size-mb 2 --sample-mb 2 --reps 2 --small 16 \
    --json "$out/r.json" --txt "$out/r.txt" --svg "$out/r.svg" >"$out/stdout" 2>"$out/stderr"; then
    echo "FAILED: cmkbench --store s3:// failed:"
    tail -30 "$out/stderr"
    exit 1
fi
check "S3 table printed" grep -q '^S3 STORE' "$out/stdout"
check "load average printed" grep -q '^load average' "$out/stdout"
check "text copy written" cmp -s "$out/stdout" "$out/r.txt"
check "SVG written" grep -q '<svg' "$out/r.svg"

py() { # python expression over d (the JSON) and rows(section): must be true
    python3 - "$out/r.json" "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def rows(sec):
    return {r["name"]: r for r in d["rows"] if r["section"] == sec}
s3 = rows("s3")
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}
for shape in random tar; do
    for op in put get; do
        raw=$( [ $op = put ] && echo "raw PUT" || echo "raw GET")
        check "$op $shape measured against $raw of the same bytes (2 rounds each)" \
            py "s3['$op $shape']['value'] > 0 and s3['$op $shape']['reps'] == 2 and s3['$op $shape']['ref'] == s3['$raw $shape']['value'] > 0 and s3['$raw $shape']['reps'] == 2"
    done
done
for shape in random tar; do
    check "the parallel raw reference (multipart PUT, ranged GETs) on $shape" \
        py "[r['value'] > 0 for k, r in s3.items() if k.startswith('raw PUT $shape, ') and ' parts x' in k] == [True] and [r['value'] > 0 for k, r in s3.items() if k.startswith('raw GET $shape, ') and ' ranges x' in k] == [True]"
done
for shape in random json; do
    for t in 1 8; do
        for op in put get; do
            raw=$( [ $op = put ] && echo "raw PUT" || echo "raw GET")
            check "4 KiB $op $shape x$t against $raw 4 KiB" \
                py "s3['$op 4k $shape x$t']['value'] > 0 and s3['$op 4k $shape x$t']['ref'] == s3['$raw 4k $shape x$t']['value'] > 0"
        done
    done
done
check "the four issue-23 targets are judged" \
    py "len([r for r in d['rows'] if r['section'] == 'target' and r['name'].startswith('s3 ') and r['verdict'] in ('MET', 'MISSED', '~noise')]) == 4"
check "CPU ceilings (sha256, zstd-1, aes-256-gcm) on both data sets" \
    py "all(rows('ceiling')['%s: %s' % (s, w)]['value'] > 0 for s in ('random', 'tar') for w in ('sha256', 'zstd-1 compress', 'aes-256-gcm seal'))"
check "the local-disk scenarios are reported as skipped" \
    py "s3['local-disk scenarios']['verdict'] == 'skipped' and not rows('put') and not rows('sweep') and not rows('rotation') and not rows('rss') and not rows('engine')"
check "the JSON names the store and the load average" \
    py "d['meta']['store'] == 's3://smoke/pre' and len(d['meta']['loadavg_start'].split()) == 3"

# Nothing of the run is left in the bucket.
code=$(curl -sS -K "$out/ceph/curlrc" -o "$out/list.xml" -w '%{http_code}' \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$ep/smoke?list-type=2&prefix=pre%2F")
check "the bucket was listed (HTTP $code)" test "$code" = 200
check "the run's objects were all deleted" \
    bash -c "grep -q '<ListBucketResult' '$out/list.xml' && ! grep -q '<Key>' '$out/list.xml'"

# Bad input: a clear message, a non-zero exit.
refused() { # description, expected message, args...
    local what=$1 msg=$2
    shift 2
    if "$bin" "$@" --dir "$out/data" >"$out/bad.out" 2>"$out/bad.err"; then
        echo "FAILED: $what (exit 0)"
        fail=1
    elif ! grep -q -- "$msg" "$out/bad.err"; then
        echo "FAILED: $what (message: $(tail -1 "$out/bad.err"))"
        fail=1
    else
        echo "ok: $what"
    fi
}
refused "a local path is refused by --store" "takes an S3 store" small --store "$out/x"
refused "a bad bucket name is refused" "--store s3://A_B" small --store s3://A_B
refused "--file is refused with --store s3://" "--file is not measured with --store" \
    put --store s3://smoke/pre --file "$out/x"
refused "a local-disk scenario is refused with --store s3://" "not measured with --store s3://" \
    rotation --store s3://smoke/pre
if env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$bin" small --store s3://smoke/pre \
    --dir "$out/data" >/dev/null 2>"$out/bad.err"; then
    echo "FAILED: no credentials (exit 0)"
    fail=1
else
    check "no credentials: the variables are named" grep -q 'AWS_ACCESS_KEY_ID' "$out/bad.err"
fi
exit $fail
