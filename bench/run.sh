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
#   bench/run.sh --store s3://[BUCKET[/PREFIX]] [options...]
#                                the object-store run (cmkbench --store, see --help): without
#                                an endpoint in AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (or
#                                --s3-endpoint), or with a bare s3://, a Ceph RGW is started for
#                                the run (tests/s3/ceph.sh, bluestore on a sparse file) and
#                                stopped after it; BUCKET defaults to cmkbench. Writes
#                                bench/results/s3-latest.{json,txt,svg}.
#                                The gateway started for the run gets CPU 0 and cmkbench the
#                                others (both sides of every ratio alike): an object store does
#                                not share the registry's cores in any deployment, and on 2
#                                shared cores the gateway and the sealing take turns on the
#                                same CPU. --shared-cores: everything on every CPU instead.
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

quick=0 store='' bare=0 prev='' shared=0
args=()
for a in "$@"; do
    [[ $a == --quick ]] && quick=1
    if [[ $a == --shared-cores ]]; then
        shared=1
        continue
    fi
    if [[ $prev == --store ]]; then
        if [[ $a == s3:// ]]; then
            a=s3://cmkbench
            bare=1
        fi
        store=$a
    fi
    [[ $prev == --s3-endpoint ]] && export AWS_ENDPOINT_URL_S3=$a
    args+=("$a")
    prev=$a
done
set -- "${args[@]+"${args[@]}"}"

echo "== building cmkbench (Release) in $build" >&2
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMK_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target cmkbench >/dev/null
bin=$build/cmkbench

mkdir -p "$data" "$results"

if [[ $store == s3://* ]]; then
    # The object-store run: cmkbench against raw PUT/GET of the same bytes to the same bucket.
    ceph_dir=
    gw_pin=() pin=()
    if ((bare)) || [[ -z ${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-}} ]]; then
        ceph_dir=$(mktemp -d "$data/ceph.XXXXXX")
        trap 'bash "$src/tests/s3/ceph.sh" stop "$ceph_dir/c" || true; rm -rf "$ceph_dir"' EXIT
        ncpu=$(nproc --all)
        if ((!shared && ncpu >= 2)) && command -v taskset >/dev/null; then
            gw_pin=(taskset -c 0)
            pin=(taskset -c "1-$((ncpu - 1))")
            echo "== the gateway on CPU 0, cmkbench on CPUs 1-$((ncpu - 1)) (--shared-cores: all on all)" >&2
        fi
        echo "== starting a Ceph RGW for the run (bluestore) in $ceph_dir" >&2
        CMK_CEPH_OBJECTSTORE=${CMK_CEPH_OBJECTSTORE:-bluestore} \
            "${gw_pin[@]}" bash "$src/tests/s3/ceph.sh" start "$ceph_dir/c" --owner $$ >&2
        # shellcheck disable=SC1091
        set -a && source "$ceph_dir/c/env" && set +a
        # Its endpoint, whatever the caller's environment or --s3-endpoint named.
        export AWS_ENDPOINT_URL_S3=$AWS_ENDPOINT_URL
        args=()
        prev=''
        for a in "$@"; do
            [[ $prev == --s3-endpoint ]] && a=$AWS_ENDPOINT_URL
            args+=("$a")
            prev=$a
        done
        set -- "${args[@]}"
    fi
    sizes=()
    ((quick)) || sizes=(--reps 5)
    cmd=("${pin[@]}" "$bin" all --dir "$data" --wait-quiet 120 "${sizes[@]}"
         --json "$results/s3-latest.json" --txt "$results/s3-latest.txt"
         --svg "$results/s3-latest.svg" "$@")
    echo "== command: ${cmd[*]}" >&2
    start=$SECONDS
    "${cmd[@]}"
    echo "== done in $((SECONDS - start)) s; command line:" >&2
    echo "${cmd[*]}"
    exit 0
fi

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
