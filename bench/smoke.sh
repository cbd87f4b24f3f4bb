#!/usr/bin/env bash
# bench/smoke.sh CMKBENCH — CTest smoke of the benchmark harness (label bench): one `all` run at
# tiny sizes must finish, print its table, and write JSON that parses and holds every section,
# plus an SVG. Speed is not judged (the figures of such a run mean nothing).
set -euo pipefail
bin=${1:?usage: smoke.sh path/to/cmkbench}
base=${CMK_TEST_TMP:-${TMPDIR:-/tmp}}
mkdir -p "$base"
out=$(mktemp -d "$base/bench-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT

# Odd first bytes make this file a gzip layer as far as the store is concerned (--file path).
printf '\x1f\x8b\x08\x00' >"$out/layer.gz"
head -c 300000 /dev/urandom >>"$out/layer.gz"

# The direct SVG writer runs where gnuplot is missing; force it so both paths stay tested
# (the gnuplot path runs in bench/run.sh).
CMKBENCH_NO_GNUPLOT=1 "$bin" all --quick --dir "$out/data" --size-mb 2 --sample-mb 2 --reps 1 \
    --small 24 --sweep-mb 1 --rot-blobs 1,3,6 --rot-mb 2 --rss-mb 4 --no-cold \
    --file "$out/layer.gz" --json "$out/r.json" --txt "$out/r.txt" --svg "$out/r.svg" \
    >"$out/stdout" 2>"$out/stderr" || {
    echo "cmkbench failed:"
    tail -30 "$out/stderr"
    exit 1
}

fail=0
check() { # description, command...
    local what=$1
    shift
    if "$@" >/dev/null; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
check "table printed" grep -q '^TARGETS' "$out/stdout"
check "text copy written" cmp -s "$out/stdout" "$out/r.txt"
check "SVG written" grep -q '<svg' "$out/r.svg"
if command -v jq >/dev/null; then
    check "JSON parses" jq -e . "$out/r.json"
    for sec in ceiling put get small sweep rotation open rss engine target; do
        check "JSON has $sec rows" jq -e --arg s "$sec" '[.rows[] | select(.section == $s)] | length > 0' \
            "$out/r.json"
    done
    check "JSON has meta.command" jq -e '.meta.command | test("cmkbench")' "$out/r.json"
    check "each part of the put work was measured on all cores" \
        jq -e '[.rows[] | select(.section == "ceiling" and (.name | test("^tar: (sha256|zstd-1 compress|aes-256-gcm seal), [0-9]+ threads$")) and .value > 0)] | length == 3' \
        "$out/r.json"
    check "one put stream's CPU work was measured for each data set" \
        jq -e '[.rows[] | select(.section == "ceiling" and (.name | test(": put CPU work, one stream$")) and .value > 0)] | length == 3' \
        "$out/r.json"
    check "each big put row says how it stands against its stream's CPU work measured beside it" \
        jq -e '[.rows[] | select(.section == "put" and (.name | test(" x[0-9]+$") | not))] | (length == 6) and all((.detail.cpu_stream_beside_MBps > 0) and (.note | test("one stream.s CPU work beside [0-9]+ \\(put = [0-9]+% of it\\) = [0-9]+% of the reference")))' \
        "$out/r.json"
    check "JSON has the parts' scaling" jq -e '(.tar.parts_scaling | length == 3) and ([.tar.parts_scaling[] | select(. > 0)] | length == 3)' "$out/r.json"
    check "the --file layer was measured" \
        jq -e '[.rows[] | select(.name | test("layer.gz"))] | length >= 2' "$out/r.json"
    check "the gzip layer was stored raw on its magic" \
        jq -e '[.rows[] | select(.section == "put" and (.name | test("layer.gz"))) | select(.note | test("[1-9][0-9]* blob\\(s\\) raw by magic"))] | length >= 1' \
        "$out/r.json"
    check "each small get was timed in 8 passes per engine, over the same blobs on both" \
        jq -e '[.rows[] | select(.section == "small" and (.name | startswith("get ")))] | (length == 10) and all(.reps == 8 and (.note | test("median of 8 passes")))' \
        "$out/r.json"
    check "each small put was timed in segments taken in step with the other engine's" \
        jq -e '[.rows[] | select(.section == "small" and (.name | startswith("put ")))] | (length == 18) and all((.paired | length) as $n | ($n == 8 or $n == 2) and .reps == $n and (.note | test("median of \($n) segments")))' \
        "$out/r.json"
    check "the engines' one-thread small puts are compared pair by pair" \
        jq -e '[.rows[] | select(.section == "engine" and (.name | test("^small (put|get) (4k|mix) x1$")))] | (length == 4) and all(.note | test("median of 8 pairs taken in step; io_uring slower in [0-8] \\(sign test p=[01][.][0-9]{3}\\)"))' \
        "$out/r.json"
    check "each big-blob warm get was timed in 8 passes per engine, in step with the other engine" \
        jq -e '[.rows[] | select(.section == "get" and (.name | startswith("get warm ")))] | (length == 6) and all(.reps == 8 and (.paired | length) == 8)' \
        "$out/r.json"
    check "the engines' big-blob warm gets are compared pair by pair" \
        jq -e '[.rows[] | select(.section == "engine" and (.name | startswith("get get warm ")))] | (length == 3) and all(.note | test("median of 8 pairs taken in step"))' \
        "$out/r.json"
    check "every put/get row has a value" \
        jq -e '[.rows[] | select((.section == "put" or .section == "get") and .verdict != "skipped" and .value <= 0)] | length == 0' \
        "$out/r.json"
elif command -v python3 >/dev/null; then
    check "JSON parses" python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["rows"]' "$out/r.json"
else
    echo "FAILED: neither jq nor python3 to parse the JSON"
    fail=1
fi
exit $fail
