#!/usr/bin/env bash
# tools/run.sh — the README's two commands.
#
#   bash tools/run.sh demo   install what is missing, build, run the seed's workflow, then serve
#                            a registry on the embedded default (demo.sh; --no-serve stops
#                            after the workflow)
#   bash tools/run.sh test   install what is missing, build (normal and ASan+UBSan, warnings
#                            as errors) and run the whole test suite with CTest
#
# Environment: BUILD_DIR (default build), JOBS (default: cores), CMK_TEST_LARGE=0 skips the
# 1 GiB round trip.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
jobs=${JOBS:-$(nproc)}
build=${BUILD_DIR:-build}

# Debian packages: build dependencies, and the real peers and tools the tests and the demo use
# (SoftHSM2 token, pkcs11-tool, skopeo, curl, jq, python3 for OCI layouts, zstd, openssl).
PKGS=(build-essential cmake pkg-config libssl-dev liburing-dev libzstd-dev libxxhash-dev
      libjansson-dev libmicrohttpd-dev libp11-kit-dev softhsm2 opensc skopeo jq curl python3
      zstd openssl procps)

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

configure_build() { # dir, extra cmake args...
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMK_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
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
    echo "== build: release, warnings as errors"
    configure_build "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    echo "== test: release"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    echo "== build: ASan + UBSan"
    configure_build "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DCMK_SANITIZE=ON
    echo "== test: ASan + UBSan"
    CMK_TEST_LARGE=${CMK_TEST_LARGE_ASAN:-0} ctest --test-dir "$build-asan" --output-on-failure -j "$jobs"
    ;;
-h | --help | help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    echo "usage: bash tools/run.sh demo [--no-serve] [--listen ADDR:PORT] | test | --help" >&2
    exit 2
    ;;
esac
