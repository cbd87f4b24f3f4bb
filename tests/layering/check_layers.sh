#!/usr/bin/env bash
# check_layers.sh CC LAYERS_DIR SRC_DIR SYS_INCLUDES LAYER=DIR:DIR... ...
#
# Proves that the layering is enforced by the build: for every library layer (with the
# include directories its CMake target really has), each header of its own and lower layers
# preprocesses, and each header of every other layer fails to ("No such file"): a source
# file that added such an include would not compile. Also checks that every quoted include
# in the sources names its path from the source root (public headers aside).
set -u
cc=$1 layers=$2 src=$3 sys=$4
shift 4
fail=0 checked=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sysflags=()
IFS=';' read -r -a sysdirs <<<"$sys"
for d in "${sysdirs[@]}"; do [ -n "$d" ] && sysflags+=(-I "$d"); done

# Headers of a layer: its include root, by path from the source root.
headers_of() { (cd "$layers/$1" && find . -name '*.h' -path './*/*' | sed 's|^\./||' | sort); }

try() { # layer flags... -- header: 0 if it preprocesses
    local hdr=${*: -1} out
    printf '#include "%s"\n' "$hdr" >"$tmp/probe.c"
    out=$("$cc" -E -D_GNU_SOURCE "${@:1:$#-1}" "${sysflags[@]}" "$tmp/probe.c" -o /dev/null 2>&1)
    local rc=$?
    [ $rc -ne 0 ] && printf '%s\n' "$out" >"$tmp/err"
    return $rc
}

all_layers=()
for spec in "$@"; do all_layers+=("${spec%%=*}"); done

for spec in "$@"; do
    layer=${spec%%=*}
    IFS=':' read -r -a dirs <<<"${spec#*=}"
    flags=()
    below=()
    for d in "${dirs[@]}"; do
        flags+=(-I "$d")
        below+=("$(basename "$d")")
    done
    for other in "${all_layers[@]}"; do
        allowed=0
        for b in "${below[@]}"; do [ "$b" = "$other" ] && allowed=1; done
        while read -r h; do
            [ -n "$h" ] || continue
            checked=$((checked + 1))
            if [ $allowed = 1 ]; then
                if ! try "${flags[@]}" "$h"; then
                    echo "FAIL: layer $layer cannot include its own or a lower layer's $h:"
                    head -3 "$tmp/err"
                    fail=1
                fi
            elif try "${flags[@]}" "$h"; then
                echo "FAIL: layer $layer can include $h of the higher or unrelated layer $other"
                fail=1
            elif ! grep -q "$h: No such file" "$tmp/err"; then
                echo "FAIL: layer $layer including $h failed for another reason:"
                head -3 "$tmp/err"
                fail=1
            fi
        done < <(headers_of "$other")
    done
done

# Includes name their folder: "core/base/error.h", not "error.h" (public headers aside).
bad=$(cd "$src" && grep -rn --include='*.c' --include='*.h' -E '^#include "[^/"]+"' \
          core io kek tools bench tests | grep -v -E '"cmkstore(_[a-z]+)?\.h"' |
          grep -v 'tests/layering/')
if [ -n "$bad" ]; then
    echo "FAIL: includes that do not name their folder:"
    echo "$bad"
    fail=1
fi

echo "layering: $checked layer/header pairs checked"
exit $fail
