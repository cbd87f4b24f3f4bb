#!/usr/bin/env bash
# check_admin_api.sh CC LIBCMKSTORE.so SRC_DIR TMPDIR [CFLAGS...]
# The administration API works as installed: admin_client.c compiles with only the public
# headers (core/cmkstore.h, cmkstore_err.h, kek/cmkstore_kek.h, kek/cmkstore_admin.h) on its
# include path, links against the shared library alone, and runs.
set -u
cc=$1 lib=$2 src=$3 tmpbase=$4
shift 4
mkdir -p "$tmpbase"
tmp=$(mktemp -d "$tmpbase/admin_api.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/include"
cp "$src/core/cmkstore.h" "$src/core/base/cmkstore_err.h" "$src/kek/cmkstore_kek.h" \
    "$src/kek/cmkstore_admin.h" "$tmp/include/"
if ! "$cc" -std=c11 -Wall -Wextra -Werror "$@" -I "$tmp/include" \
    "$src/tests/layering/admin_client.c" -o "$tmp/client" "$lib" \
    $(pkg-config --libs jansson) -Wl,-rpath,"$(dirname "$lib")"; then
    echo "FAIL: admin_client.c does not build against the installed headers and library"
    exit 1
fi
"$tmp/client" "$tmp/home"
