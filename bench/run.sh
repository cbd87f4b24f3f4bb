#!/usr/bin/env bash
# bench/run.sh — builds a Release cmkbench and runs the whole benchmark once, sized for the
# reference machine (2 cores, 24 GiB RAM, a virtual disk of ~0.4-1.2 GB/s): about 5 minutes on a
# quiet machine, plus up to 2 minutes waiting for one.
#
# Writes bench/results/latest.{json,txt,svg} and prints the exact command line it ran.
#
#   bench/run.sh                 full run
#   bench/run.sh --quick         smoke-sized run (seconds, plus the wait for a quiet machine)
#   bench/run.sh [cmkbench options...]   extra options are passed through (see --help)
#
# Environment: CMKBENCH_BUILD (build directory, default <repo>/build-bench),
#              CMKBENCH_DIR (where benchmark data goes, default /work/cmkbench-data or
#              <repo>/cmkbench-data; everything written there is removed at the end).
# Cold-cache figures need root (the page cache is dropped through /proc/sys/vm/drop_caches);
# without it they are reported as skipped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
build=${CMKBENCH_BUILD:-$src/build-bench}
if [[ -d /work ]]; then
    data=${CMKBENCH_DIR:-/work/cmkbench-data}
else
    data=${CMKBENCH_DIR:-$src/cmkbench-data}
fi
results=$here/results

quick=0
for a in "$@"; do
    [[ $a == --quick ]] && quick=1
done

echo "== building cmkbench (Release) in $build" >&2
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMK_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target cmkbench >/dev/null
bin=$build/cmkbench

mkdir -p "$data" "$results"
gz=$(mktemp "$data/layer.XXXXXX.tar.gz")
trap 'rm -f "$gz"' EXIT

# A real gzip layer next to the generated data: `gzip -1 -n` over the deterministic tar-like
# corpus (deterministic for a given gzip build). It goes through the --file path.
gz_mb=384
((quick)) && gz_mb=32
if command -v gzip >/dev/null; then
    echo "== making a gzip layer from ${gz_mb} MiB of the tar-like corpus" >&2
    "$bin" gen tar --size-mb "$gz_mb" --seed 9 --out - | gzip -1 -n >"$gz"
    file_args=(--file "$gz")
else
    echo "== gzip not found: no real gzip layer in this run" >&2
    file_args=()
fi

if ((quick)); then
    sizes=()
else
    # 1 GiB per data set, 3 repetitions, 5000 small blobs per mode, a 4 GiB RSS run, rotation
    # stores of 1 / 1,000 / 5,000 blobs (the largest ~2 GiB), 256 MiB per sweep point.
    sizes=(--size-mb 1024 --reps 3 --small 5000 --rss-mb 4096 --rot-blobs 1,1000,5000
           --rot-mb 2048 --sweep-mb 256)
fi

cmd=("$bin" all --dir "$data" --wait-quiet 120 "${sizes[@]}" "${file_args[@]}"
     --json "$results/latest.json" --txt "$results/latest.txt" --svg "$results/latest.svg"
     "$@")
echo "== command: ${cmd[*]}" >&2
start=$SECONDS
"${cmd[@]}"
echo "== done in $((SECONDS - start)) s; command line:" >&2
echo "${cmd[*]}"
