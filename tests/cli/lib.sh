# shellcheck shell=bash
# tests/cli/lib.sh — shared by the CLI integration tests (sourced, not run).
#
# Environment (set by CTest): CMKSTORE_BIN (the built `cmkstore`), CMK_TEST_TMP (scratch),
# CMK_SOURCE_DIR. Needs: bash, coreutils, jq (Debian package jq), openssl, python3.
#
# Each test gets its own directory $T (and home $CMKSTORE_HOME = $T/home) under
# $CMK_TEST_TMP, removed when every check passed and kept for inspection otherwise. The last
# line printed is "N passed, N failed"; the exit status is non-zero if any check failed.

set -euo pipefail

: "${CMKSTORE_BIN:?set CMKSTORE_BIN to the cmkstore binary}"

# The libraries the binary loads, read whole (piping ldd into `grep -q` races under pipefail:
# grep exits at its match and ldd, still writing, dies of SIGPIPE, failing the pipeline).
CMKSTORE_LIBS=$(ldd "$CMKSTORE_BIN" 2>/dev/null || true)
# bin_sanitized: the binary is built with ASan or TSan (their shadow memory counts in RSS).
bin_sanitized() { [[ $CMKSTORE_LIBS == *libasan* || $CMKSTORE_LIBS == *libtsan* ]]; }
: "${CMK_TEST_TMP:?set CMK_TEST_TMP to a scratch directory}"
for tool in jq openssl python3 cmp sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool (Debian: jq, openssl, python3, coreutils, diffutils)" >&2
        exit 1
    }
done

TEST_NAME=$(basename "$0" .sh)
mkdir -p "$CMK_TEST_TMP"
T=$(mktemp -d "$CMK_TEST_TMP/$TEST_NAME.XXXXXX")
export CMKSTORE_HOME="$T/home"
# The files the CLI makes must not depend on a lenient umask for their modes.
umask 022
PASS=0
FAIL=0
T_START=$SECONDS

# on_exit CMD: run CMD (a function or command line, no arguments of its own) when the script
# ends, before the report; hooks run last-registered first, with `set +e`. Tests register their
# cleanups here instead of replacing the EXIT trap, so each stays in force.
EXIT_HOOKS=()
on_exit() {
    EXIT_HOOKS+=("$1")
}

finish() {
    local rc=$? i
    set +e
    for ((i = ${#EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${EXIT_HOOKS[i]}"
    done
    if [ "$rc" -ne 0 ] && [ "$FAIL" -eq 0 ]; then
        echo "not ok - the test script itself failed (exit $rc) at line ${ERR_LINE:-?}"
        FAIL=$((FAIL + 1))
    fi
    echo "# $TEST_NAME: $((SECONDS - T_START)) s"
    echo "$PASS passed, $FAIL failed"
    if [ "$FAIL" -eq 0 ]; then
        rm -rf "$T"
        exit 0
    fi
    echo "# kept $T for inspection"
    exit 1
}
ERR_LINE=
trap 'ERR_LINE=$LINENO' ERR
trap finish EXIT

ok() {
    PASS=$((PASS + 1))
    echo "ok - $*"
}

not_ok() {
    FAIL=$((FAIL + 1))
    echo "not ok - $*"
}

# cmk ARGS...: runs cmkstore (in the foreground; use "$CMKSTORE_BIN" directly to get a pid).
cmk() {
    "$CMKSTORE_BIN" "$@"
}

# expect_exit CODE CMD...: runs CMD with stdout in $OUT and stderr in $ERR (files) and checks
# its exit status. The command's output stays in those files for further checks.
OUT="$T/.out"
ERR="$T/.err"
expect_exit() {
    local want=$1 rc=0
    shift
    "$@" >"$OUT" 2>"$ERR" || rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "exit $want: $*"
        return 0
    fi
    not_ok "exit $rc, expected $want: $*"
    sed 's/^/#   stderr: /' "$ERR" | head -20
    return 0
}

expect_ok() {
    expect_exit 0 "$@"
}

# expect_eq ACTUAL EXPECTED WHAT
expect_eq() {
    if [ "$1" == "$2" ]; then
        ok "$3"
    else
        not_ok "$3: got '$1', expected '$2'"
    fi
}

# expect_true WHAT CMD...: CMD (a test, jq -e, cmp...) must succeed.
expect_true() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        ok "$what"
    else
        not_ok "$what"
    fi
}

expect_false() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        not_ok "$what"
    else
        ok "$what"
    fi
}

# expect_err_match REGEX WHAT: the last command's stderr matches (extended, case-insensitive).
expect_err_match() {
    if grep -Eqi -- "$1" "$ERR"; then
        ok "$2"
    else
        not_ok "$2: stderr does not match /$1/"
        sed 's/^/#   stderr: /' "$ERR" | head -10
    fi
}

# expect_json FILTER WHAT [FILE]: jq -e FILTER on FILE (default: the last stdout).
expect_json() {
    local file=${3:-$OUT}
    if jq -e "$1" "$file" >/dev/null 2>&1; then
        ok "$2"
    else
        not_ok "$2: jq -e '$1' failed on:"
        head -c 2000 "$file" | sed 's/^/#   /'
    fi
}

# gen_random SEED SIZE FILE: SIZE deterministic pseudo-random (incompressible) bytes.
gen_random() {
    local key
    key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
    { openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 \
        -in /dev/zero 2>/dev/null || true; } | head -c "$2" >"$3"
}

# gen_text SEED SIZE FILE: SIZE bytes of compressible text.
gen_text() {
    { seq -f "$1 line %08g of a very compressible layer: lorem ipsum dolor sit amet" \
        1 100000000 2>/dev/null || true; } | head -c "$2" >"$3"
}

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds; returns 1 after SECONDS.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# wait_listening OUT PID SCHEME TRIES: waits (TRIES x 0.1 s) until the background server PID
# writes "Listening on SCHEME://HOST:PORT" to OUT, and prints HOST:PORT; fails as soon as PID
# has exited without it (a server that refused its options) or when TRIES run out.
wait_listening() {
    local out=$1 pid=$2 scheme=$3 tries=$4 i
    for i in $(seq 1 "$tries"); do
        if grep -q "^Listening on $scheme://" "$out" 2>/dev/null; then
            sed -n "s|^Listening on $scheme://\([0-9.]*:[0-9]*\).*|\1|p" "$out" | head -1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# stop_bg PID SIGNAL: signals the background process PID and waits for it (up to 60 s); sets
# BG_EXIT to its exit status, or 124 if it did not stop (it is then killed).
stop_bg() {
    local pid=$1 sig=$2 i
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        BG_EXIT=124
        return 0
    fi
    BG_EXIT=0
    wait "$pid" 2>/dev/null || BG_EXIT=$?
}

# slice FILE START LEN: LEN bytes of FILE from offset START, on stdout.
slice() {
    dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}

# sha256 digest of a file in OCI form.
oci_digest() {
    echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"
}

# snapshot DIR...: a listing of every file and directory under the given directories (type,
# mode, size, inode, modification time), for "nothing changed" checks: any write, atomic
# replacement, creation or removal shows. The vault's audit log and the store's event log are
# left out: they record refused operations on purpose.
snapshot() {
    local d
    for d in "$@"; do
        [ -e "$d" ] || {
            echo "absent $d"
            continue
        }
        (cd "$d" && find . -not -name audit.log -not -name events.log \
            -printf '%y %m %s %i %T@ %p\n' | sort -k6)
    done
}

# expect_unchanged BEFORE AFTER WHAT: two snapshots (files) are the same; the difference is
# shown otherwise.
expect_unchanged() {
    if cmp -s "$1" "$2"; then
        ok "$3: nothing changed"
    else
        not_ok "$3: something changed"
        diff "$1" "$2" | head -10 | sed 's/^/#   /'
    fi
}

# blob_file STORE DIGEST: path of a blob's container file.
blob_file() {
    local hex=${2#*:} alg=${2%%:*}
    echo "$1/blobs/$alg/${hex:0:2}/$hex"
}

# u32le FILE OFFSET: the little-endian u32 at OFFSET.
u32le() {
    od -An -tu4 -j "$2" -N4 --endian=little "$1" | tr -d ' '
}

# u64le FILE OFFSET
u64le() {
    od -An -tu8 -j "$2" -N8 --endian=little "$1" | tr -d ' '
}

# Sets up identity + vault + policy + key, the seed's workflow: exports IDENT_JSON fields
# PRINCIPAL, CLIENT_ID, IDENT_ID, and KID (versioned), KID_NOVER (versionless).
# setup_cmk NAME_PREFIX [PERMS...]
setup_cmk() {
    local p=$1
    shift
    local perms=("$@")
    [ ${#perms[@]} -gt 0 ] || perms=(get unwrapKey wrapKey)
    cmk identity create --name "${p}id" >"$T/${p}id.json"
    PRINCIPAL=$(jq -r .principalId "$T/${p}id.json")
    CLIENT_ID=$(jq -r .clientId "$T/${p}id.json")
    IDENT_ID=$(jq -r .id "$T/${p}id.json")
    cmk vault create --name "${p}vault" --enable-purge-protection >/dev/null
    cmk vault set-policy --name "${p}vault" --object-id "$PRINCIPAL" \
        --key-permissions "${perms[@]}" >/dev/null
    cmk vault key create --vault-name "${p}vault" --name "${p}key" >"$T/${p}key.json"
    KID=$(jq -r .key.kid "$T/${p}key.json")
    KID_NOVER=${KID%/*}
}
