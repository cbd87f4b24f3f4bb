#!/usr/bin/env bash
# tests/s3/bench_s3.sh — put/get throughput of an s3:// store against raw curl PUT/GET of the
# same bytes to the same RGW, alternating, in one run (not a ctest: a measurement).
#   [BASE=OTHER_CMKSTORE_BIN] bash tests/s3/bench_s3.sh CMKSTORE_BIN [SIZE_MB] [ROUNDS]
# BASE: a second build (say, of main) timed in the same rounds, for before/after figures.
# Starts its own Ceph RGW (tests/s3/ceph.sh), prints per-round seconds and the median ratios
# (raw time / cmkstore time: >1 means cmkstore is faster) for random and compressible data.
set -euo pipefail
BIN=$(realpath "${1:?usage: bench_s3.sh CMKSTORE_BIN [SIZE_MB] [ROUNDS]}")
MB=${2:-200}
ROUNDS=${3:-3}
BASE=${BASE:+$(realpath "$BASE")}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/s3bench.XXXXXX")
trap 'bash "$HERE/ceph.sh" stop "$W/ceph" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
bash "$HERE/ceph.sh" start "$W/ceph" --owner $$ >/dev/null
# shellcheck disable=SC1091
source "$W/ceph/env"
EP=$AWS_ENDPOINT_URL
RC=$W/ceph/curlrc
EMPTY=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
raw() { # METHOD PATH [curl args]
    local m=$1 p=$2
    shift 2
    curl -K "$RC" -sS -f -X "$m" -H "x-amz-content-sha256: ${SHA:-$EMPTY}" "$@" "$EP$p"
}
now() { date +%s.%N; }
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
raw PUT /bench >/dev/null
head -c $((MB << 20)) /dev/urandom >"$W/random"
# Compressible: text-like lines (zstd shrinks it several-fold, as a tar of sources would).
python3 - "$W/text" $((MB << 20)) <<'PY'
import random, sys
r = random.Random(1)
words = [("".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))))
         for _ in range(5000)]
out, n = [], 0
with open(sys.argv[1], "w") as f:
    while n < int(sys.argv[2]):
        line = " ".join(r.choice(words) for _ in range(12)) + "\n"
        f.write(line)
        n += len(line)
PY
truncate -s $((MB << 20)) "$W/text"
"$BIN" create --store s3://bench/s >/dev/null
[ -z "$BASE" ] || "$BASE" create --store s3://bench/base >/dev/null
echo "load: $(uptime)"
for kind in random text; do
    f=$W/$kind
    rm -f "$W"/t.*
    for i in $(seq "$ROUNDS"); do
        line="$kind round $i:"
        for who in raw cmk ${BASE:+base}; do
            case $who in
            raw) t0=$(now); SHA=UNSIGNED-PAYLOAD raw PUT "/bench/raw-$kind" -T "$f" -o /dev/null; t1=$(now)
                 raw GET "/bench/raw-$kind" -o /dev/null; t2=$(now) ;;
            *) b=$BIN st=s3://bench/s
               [ "$who" = cmk ] || { b=$BASE; st=s3://bench/base; }
               t0=$(now); "$b" blob put --store "$st" "$f" >"$W/digest"; t1=$(now)
               "$b" blob get --store "$st" "$(cat "$W/digest")" -o /dev/null; t2=$(now)
               "$b" blob rm --store "$st" "$(cat "$W/digest")" >/dev/null ;;
            esac
            echo "$t1 - $t0" | bc >>"$W/t.$who.put"; echo "$t2 - $t1" | bc >>"$W/t.$who.get"
            line="$line $who put $(tail -1 "$W/t.$who.put") get $(tail -1 "$W/t.$who.get")"
        done
        echo "$line"
    done
    for op in put get; do
        r=$(med <"$W/t.raw.$op"); c=$(med <"$W/t.cmk.$op")
        out="$kind ${MB} MiB $op medians: raw $r s, cmkstore $c s (ratio raw/cmk $(echo "scale=2; $r / $c" | bc))"
        if [ -n "$BASE" ]; then
            o=$(med <"$W/t.base.$op")
            out="$out, baseline $o s (ratio $(echo "scale=2; $r / $o" | bc))"
        fi
        echo "$out"
    done
done
echo "load: $(uptime)"
