#!/usr/bin/env bash
# test_crash.sh — SIGKILL `cmkstore blob put` at random moments, many times: while it reads a
# slow pipe (mid-write), and with fast input (around the commit). After every kill the blob
# is either absent or complete and verifies; `blob ls` never shows a partial blob; whatever
# the killed writer left in tmp/ is swept by the next open. Same for `blob get -o`: FILE is
# absent or complete.
#
# CMK_CRASH_ITERATIONS (default 24) sets the number of slow-pipe kills.
source "$(dirname "$0")/lib.sh"

setup_cmk c
S=$T/store
cmk create --store "$S" --identity cid --key-encryption-key "$KID" --chunk-size 64K >/dev/null
SRC=$T/src
gen_random crash $((3 * 1024 * 1024 + 12345)) "$SRC"
D=$(oci_digest "$SRC")
ITER=${CMK_CRASH_ITERATIONS:-24}

# A leftover of a writer that died in the named-temp-file fallback (file systems without
# O_TMPFILE) is swept at the next open; an O_TMPFILE writer leaves nothing at all.
head -c 1000 /dev/urandom >"$S/tmp/put-0123456789abcdef.part"
chmod 600 "$S/tmp/put-0123456789abcdef.part"
expect_ok cmk blob ls --store "$S"
expect_false "stale temp file swept at open" test -e "$S/tmp/put-0123456789abcdef.part"

# Writes FILE to FIFO in 32 KiB pieces, 8 ms apart (about 0.8 s in all).
cat >"$T/feeder.py" <<'EOF'
import sys, time
src, fifo = sys.argv[1], sys.argv[2]
try:
    with open(src, 'rb') as f, open(fifo, 'wb', buffering=0) as out:
        while True:
            piece = f.read(32768)
            if not piece:
                break
            out.write(piece)
            time.sleep(0.008)
except (BrokenPipeError, OSError):
    pass
EOF
mkfifo "$T/fifo"

complete=0
absent=0
# check_state LABEL: the store holds nothing or exactly the whole blob, and tmp/ is clean
# after the next open.
check_state() {
    local label=$1 n files
    if ! cmk blob ls --store "$S" >"$T/ls.json" 2>"$ERR"; then
        not_ok "$label: blob ls failed"
        cat "$ERR"
        return 0
    fi
    n=$(jq length "$T/ls.json")
    files=$(find "$S/blobs" -type f | wc -l)
    if [ "$files" -ne "$n" ]; then
        not_ok "$label: $files container files but ls shows $n blobs"
    fi
    if [ -n "$(ls -A "$S/tmp")" ]; then
        not_ok "$label: tmp/ not swept by the next open: $(ls -A "$S/tmp" | head -3 | tr '\n' ' ')"
    fi
    if [ "$n" -eq 0 ]; then
        absent=$((absent + 1))
        ok "$label: blob absent"
        return 0
    fi
    if [ "$n" -ne 1 ] || [ "$(jq -r '.[0]' "$T/ls.json")" != "$D" ]; then
        not_ok "$label: ls shows something other than the whole blob: $(cat "$T/ls.json")"
        return 0
    fi
    complete=$((complete + 1))
    if cmk blob verify --store "$S" "$D" >/dev/null 2>"$ERR" &&
        cmk blob get --store "$S" "$D" -o "$T/back" 2>"$ERR" && cmp -s "$SRC" "$T/back"; then
        ok "$label: blob complete and verified"
    else
        not_ok "$label: listed blob does not verify"
        cat "$ERR"
    fi
    cmk blob rm --store "$S" "$D" >/dev/null
}

# ---- kills while the writer reads a slow pipe
for ((i = 1; i <= ITER; i++)); do
    # Both I/O engines: io_uring where the kernel allows it (auto), and pread/pwrite.
    io=auto
    [ $((i % 2)) -eq 0 ] && io=sync
    # On io_uring, every other put writes with O_DIRECT from its first chunk (the default
    # switches past 256 MiB, more than this blob).
    wm=auto
    [ $((i % 4)) -eq 3 ] && wm=direct
    CMKSTORE_IO=$io CMKSTORE_WRITE=$wm "$CMKSTORE_BIN" blob put --store "$S" - <"$T/fifo" >/dev/null 2>&1 &
    pid=$!
    python3 "$T/feeder.py" "$SRC" "$T/fifo" &
    fpid=$!
    # 0 .. 1.1 s: before, during and (sometimes) after the feed.
    ms=$((RANDOM % 1100))
    sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    kill "$fpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
    check_state "slow pipe, kill $i"
done

# ---- kills with fast input: around chunk sealing, fsync and rename
for ((i = 1; i <= ITER / 2; i++)); do
    io=auto
    [ $((i % 2)) -eq 0 ] && io=sync
    wm=auto
    [ $((i % 4)) -eq 3 ] && wm=direct
    CMKSTORE_IO=$io CMKSTORE_WRITE=$wm "$CMKSTORE_BIN" blob put --store "$S" "$SRC" >/dev/null 2>&1 &
    pid=$!
    sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    check_state "fast input, kill $i"
done
echo "# puts killed: $complete left the whole blob, $absent left nothing"

# ---- kills during `blob get -o FILE`: FILE is absent or complete
cmk blob put --store "$S" "$SRC" >/dev/null
for ((i = 1; i <= ITER / 2; i++)); do
    rm -f "$T/got"
    "$CMKSTORE_BIN" blob get --store "$S" "$D" -o "$T/got" >/dev/null 2>&1 &
    pid=$!
    sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ ! -e "$T/got" ] || cmp -s "$T/got" "$SRC"; then
        ok "get -o killed $i: output absent or complete"
    else
        not_ok "get -o killed $i: partial output under the final name"
    fi
    rm -f "$T"/got.partial-* # SIGKILL cannot be caught: the partial file may remain
done
# A catchable signal (TERM, INT, HUP) removes the partial file.
for ((i = 1; i <= ITER / 2; i++)); do
    rm -f "$T/got"
    "$CMKSTORE_BIN" blob get --store "$S" "$D" -o "$T/got" >/dev/null 2>&1 &
    pid=$!
    sleep "0.0$((RANDOM % 10))$((RANDOM % 10))"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ ! -e "$T/got" ] || cmp -s "$T/got" "$SRC"; then
        ok "get -o terminated $i: output absent or complete"
    else
        not_ok "get -o terminated $i: partial output under the final name"
    fi
    expect_false "get -o terminated $i: no partial file left" compgen -G "$T/got.partial-*"
done
expect_ok cmk blob verify --store "$S" "$D"
