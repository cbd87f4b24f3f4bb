#!/usr/bin/env bash
# tools/run.sh — the README's two commands.
#
#   bash tools/run.sh demo   install what is missing, build, run the seed's workflow, then serve
#                            a registry on the embedded default (demo.sh; --no-serve stops
#                            after the workflow)
#   bash tools/run.sh test   install what is missing, build (normal and ASan+UBSan, warnings
#                            as errors) and run the whole test suite with CTest, the unit
#                            tests again under ThreadSanitizer, then each fuzz target for
#                            CMK_FUZZ_SECONDS (with clang)
#
# Environment: BUILD_DIR (default build), JOBS (default: cores), CMK_TEST_LARGE=0 skips the
# 1 GiB round trip, CMK_FUZZ_SECONDS (default 30, 0: no fuzzing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
jobs=${JOBS:-$(nproc)}
build=${BUILD_DIR:-build}

# Debian packages: build dependencies, and the real peers and tools the tests and the demo use
# (SoftHSM2 token, pkcs11-tool, skopeo, curl, jq, python3 for OCI layouts and, with
# python3-cryptography, the Key Vault-shaped test server of test_akv_transport, zstd, openssl,
# a single-node Ceph with its S3 gateway for the object storage tests, tests/s3/ceph.sh, and
# podman and python3-jwt for the registry's token-authentication test).
PKGS=(build-essential cmake pkg-config libssl-dev liburing-dev libzstd-dev libxxhash-dev
      libjansson-dev libmicrohttpd-dev libp11-kit-dev libcurl4-openssl-dev softhsm2 opensc skopeo
      jq curl python3 python3-cryptography zstd openssl procps ceph-mon ceph-osd radosgw
      ceph-common podman python3-jwt)

install_missing() {
    local missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" </dev/null
}

# Node.js and npm for the Azure SDK compatibility test (tests/cli/test_vault_sdk.sh; the
# pinned @azure/identity needs node >= 20). Installed only when `node` or `npm` is absent: a
# node from elsewhere (NodeSource's nodejs carries its own npm) is kept, and the test fails
# with a clear message if it is older than 20.
install_node() {
    command -v node >/dev/null && command -v npm >/dev/null && return 0
    echo "== installing: nodejs npm"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nodejs npm </dev/null
}

configure_build() { # dir, extra cmake args...
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMK_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
}

# The libFuzzer targets (tests/fuzz), built with clang under ASan+UBSan, each run for
# CMK_FUZZ_SECONDS (default 30; 0 skips) from a copy of its corpus. Without clang they are not
# built, and this says so; CTest replays the corpora either way.
fuzz_targets() {
    local secs=${CMK_FUZZ_SECONDS:-30} names=() t out
    [ "$secs" -gt 0 ] || return 0
    if ! command -v clang >/dev/null; then
        echo "== fuzz: clang not installed, the libFuzzer targets are not built (corpora replayed by CTest)"
        return 0
    fi
    for t in tests/fuzz/fuzz_*.c; do
        names+=("$(basename "$t" .c)")
    done
    echo "== build: fuzz targets (clang, libFuzzer, ASan + UBSan)"
    cmake -S . -B "$build-fuzz" -DCMK_WERROR=ON -DCMAKE_C_COMPILER=clang \
        -DCMAKE_BUILD_TYPE=Debug -DCMK_SANITIZE=ON -DCMK_FUZZ=ON >/dev/null
    cmake --build "$build-fuzz" -j "$jobs" --target "${names[@]}"
    out=$(mktemp -d)
    for t in "${names[@]}"; do
        echo "== fuzz: $t for $secs s"
        cp -r "tests/fuzz/corpus/$t" "$out/$t"
        if ! "$build-fuzz/tests/$t" -max_total_time="$secs" -rss_limit_mb=2048 \
            -artifact_prefix="$out/$t-" "$out/$t" >"$out/$t.log" 2>&1; then
            tail -40 "$out/$t.log"
            echo "== fuzz: $t failed; the input that failed is in $out" >&2
            return 1
        fi
        tail -1 "$out/$t.log"
    done
    rm -rf "$out"
}

cmd=${1:-demo}
[ $# -gt 0 ] && shift
case "$cmd" in
demo)
    install_missing
    configure_build "$build" -DCMAKE_BUILD_TYPE=Release
    exec bash tools/demo.sh "$build/cmkstore" "$@"
    ;;
test)
    install_missing
    install_node
    echo "== build: release, warnings as errors"
    configure_build "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    echo "== test: release"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    echo "== build: ASan + UBSan"
    configure_build "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DCMK_SANITIZE=ON
    echo "== test: ASan + UBSan"
    CMK_TEST_LARGE=${CMK_TEST_LARGE_ASAN:-0} ctest --test-dir "$build-asan" --output-on-failure -j "$jobs"
    # The put and get pipelines, the worker pool and the key checker are threaded: their unit
    # tests run once more under ThreadSanitizer.
    echo "== build: ThreadSanitizer"
    configure_build "$build-tsan" -DCMAKE_BUILD_TYPE=Debug -DCMK_TSAN=ON
    echo "== test: ThreadSanitizer (unit tests)"
    CMK_TEST_LARGE=0 ctest --test-dir "$build-tsan" --output-on-failure -j "$jobs" -L unit
    fuzz_targets
    ;;
-h | --help | help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    echo "usage: bash tools/run.sh demo [--no-serve] [--listen ADDR:PORT] | test | --help" >&2
    exit 2
    ;;
esac
