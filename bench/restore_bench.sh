#!/usr/bin/env bash
# bench/restore_bench.sh — `cmkstore blob get -o FILE` against restic's restore of the same
# bytes, side by side in one run, with the ceilings of that machine at the same moment.
#
#   bench/restore_bench.sh [--size-mb N] [--reps N] [--kind tar|random] [--bin PATH]
#
# Both tools start from data they stored themselves (cmkstore: sealed, zstd, AES-256-GCM under a
# local-vault key; restic: its own repository, encrypted, compressed where its version does) on
# the same file system, with warm caches (every timed run is preceded by one untimed run). The
# figures are the median of --reps runs of each, taken alternately; ratios are restic's time
# over cmkstore's. The ceilings are `cmkbench ceilings` (SHA-256, AES-GCM, zstd, raw disk) and
# a plain `cp` of the same file, which is what any restore must at least do.
#
# Needs restic (Debian package restic), jq and a Release build of cmkstore and cmkbench
# (default <repo>/build-bench, built here when missing). Data goes under CMKBENCH_DIR (default
# /work/cmkbench-data or <repo>/cmkbench-data) and is removed at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
size_mb=256 reps=5 kind=tar bin=
while [ $# -gt 0 ]; do
    case $1 in
    --size-mb) size_mb=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --kind) kind=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "restore_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for t in restic jq; do
    command -v "$t" >/dev/null || { echo "restore_bench.sh: $t is not installed" >&2; exit 1; }
done
if [ -z "$bin" ]; then
    build=${CMKBENCH_BUILD:-$src/build-bench}
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMK_BUILD_TESTS=OFF >/dev/null
    cmake --build "$build" -j"$(nproc)" --target cmkstore_cli cmkbench >/dev/null
    bin=$build/cmkstore
fi
bench=$(dirname "$bin")/cmkbench
if [[ -d /work ]]; then data=${CMKBENCH_DIR:-/work/cmkbench-data}; else data=${CMKBENCH_DIR:-$src/cmkbench-data}; fi
mkdir -p "$data"
w=$(mktemp -d "$data/restore.XXXXXX")
trap 'rm -rf "$w"' EXIT
export CMKSTORE_HOME=$w/home RESTIC_PASSWORD=bench-only-password RESTIC_REPOSITORY=$w/restic
export RESTIC_CACHE_DIR=$w/restic-cache

"$bench" gen "$kind" --size-mb "$size_mb" --seed 7 --out "$w/in.bin"
id=$("$bin" identity create --name bench-id)
principal=$(jq -r .principalId <<<"$id")
"$bin" vault create --name bench-vault >/dev/null
"$bin" vault set-policy --name bench-vault --object-id "$principal" \
    --key-permissions get unwrapKey wrapKey >/dev/null
kid=$("$bin" vault key create --vault-name bench-vault --name bench-key | jq -r .key.kid)
"$bin" create --store "$w/store" --identity "$(jq -r .id <<<"$id")" \
    --key-encryption-key "${kid%/*}" >/dev/null
digest=$("$bin" blob put --store "$w/store" "$w/in.bin" | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)
restic init -q >/dev/null
(cd "$w" && restic backup -q in.bin >/dev/null)

now() { date +%s.%N; }
t_cmk=() t_cmkf=() t_restic=() t_cp=()
run_cmk() { rm -f "$w/out.cmk"; "$bin" blob get --store "$w/store" -o "$w/out.cmk" "$digest"; }
run_cmkf() { rm -f "$w/out.cmk"; "$bin" blob get --store "$w/store" --fsync -o "$w/out.cmk" "$digest"; }
run_restic() { rm -rf "$w/out.restic"; restic restore -q latest --target "$w/out.restic" >/dev/null; }
run_cp() { rm -f "$w/out.cp"; cp "$w/in.bin" "$w/out.cp"; }
run_cmk; run_restic; run_cp # warm-up, and a correctness check of both
cmp "$w/in.bin" "$w/out.cmk"
cmp "$w/in.bin" "$w/out.restic/in.bin"
for ((i = 0; i < reps; i++)); do
    for f in cmk cmkf restic cp; do
        t0=$(now); "run_$f"; t1=$(now)
        eval "t_$f+=(\$(echo \"\$t1 - \$t0\" | bc -l))"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_cmk=$(median "${t_cmk[@]}") m_cmkf=$(median "${t_cmkf[@]}") m_restic=$(median "${t_restic[@]}") m_cp=$(median "${t_cp[@]}")

echo "== ceilings (same run)"
"$bench" ceilings --sample-mb 64 --dir "$w" 2>/dev/null | sed 's/^/  /' || echo "  (cmkbench ceilings failed)"
printf '== restore of %s MiB (%s), median of %s, warm cache\n' "$size_mb" "$kind" "$reps"
printf '  %-34s %8.3f s  %7.0f MB/s\n' "cmkstore blob get -o FILE" "$m_cmk" \
    "$(echo "$size_mb * 1.048576 / $m_cmk" | bc -l)"
printf '  %-34s %8.3f s  %7.0f MB/s\n' "cmkstore blob get -o FILE --fsync" "$m_cmkf" \
    "$(echo "$size_mb * 1.048576 / $m_cmkf" | bc -l)"
printf '  %-34s %8.3f s  %7.0f MB/s\n' "restic restore" "$m_restic" \
    "$(echo "$size_mb * 1.048576 / $m_restic" | bc -l)"
printf '  %-34s %8.3f s  %7.0f MB/s\n' "cp (plaintext copy, ceiling)" "$m_cp" \
    "$(echo "$size_mb * 1.048576 / $m_cp" | bc -l)"
printf '  cmkstore vs restic: %.2fx faster (%.2fx with --fsync, which restic does not do); cmkstore vs cp: %.2fx of the copy speed\n' \
    "$(echo "$m_restic / $m_cmk" | bc -l)" "$(echo "$m_restic / $m_cmkf" | bc -l)" "$(echo "$m_cp / $m_cmk" | bc -l)"
echo "  command: bench/restore_bench.sh --size-mb $size_mb --reps $reps --kind $kind"
