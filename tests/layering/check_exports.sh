#!/usr/bin/env bash
# check_exports.sh LIBCMKSTORE.so SRC_DIR
# The shared library exports exactly the functions its installed headers declare with
# CMK_API (no internal symbol leaks, no public one is missing), all in the version node of
# core/cmkstore.map.
set -u
lib=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
headers=("$src"/core/cmkstore.h "$src"/core/base/cmkstore_err.h "$src"/kek/cmkstore_*.h)
cat "${headers[@]}" | tr '\n' ' ' | grep -oP 'CMK_API[^;{]*?\b\Kcmk_\w+(?=\s*\()' |
    sort -u >"$tmp/declared"
nm -D --defined-only "$lib" | awk '$2 ~ /^[TWiV]$/ {print $3}' >"$tmp/raw"
sed 's/@.*//' "$tmp/raw" | sort -u >"$tmp/exported"
grep -oP '^\s+\Kcmk_\w+(?=;)' "$src/core/cmkstore.map" | sort -u >"$tmp/mapped"
rc=0
if ! diff -u "$tmp/declared" "$tmp/exported" >"$tmp/d1"; then
    echo "FAIL: exported symbols differ from the public headers' CMK_API functions (- declared, + exported):"
    cat "$tmp/d1"
    rc=1
fi
if ! diff -u "$tmp/declared" "$tmp/mapped" >"$tmp/d2"; then
    echo "FAIL: core/cmkstore.map differs from the public headers (- declared, + in the map):"
    cat "$tmp/d2"
    rc=1
fi
if grep -v '@@CMKSTORE_0$' "$tmp/raw" | grep -q .; then
    echo "FAIL: symbols outside the CMKSTORE_0 version node:"
    grep -v '@@CMKSTORE_0$' "$tmp/raw"
    rc=1
fi
echo "exports: $(wc -l <"$tmp/exported") symbols, $(wc -l <"$tmp/declared") declared"
exit $rc
