#!/usr/bin/env bash
# bench/registry_mixed.sh — `cmkstore serve` under a mixed load of GET/PUT/DELETE from many
# clients (every GET compared byte for byte with what was pushed), and the cost of DELETE
# and of the catalog against the number of repositories. Loopback only.
#
#   bash bench/registry_mixed.sh [PATH-TO-CMKSTORE]
#
# Environment: MIXED_CLIENTS (default "8 64 128"), MIXED_SECONDS (per client count, default
# 15), MIXED_REPOS (default "1,100,400,1600"), MIXED_SAMPLES (DELETEs and catalog GETs timed
# at each size, default 50), BENCH_DIR (scratch, default a temp dir; removed unless
# BENCH_KEEP=1). Prints one JSON line per client count (requests/s, errors, p50/p99 per
# kind) with the ratio of each to the first, then one per repository count (DELETE and
# catalog p50/p99 in ms), then the server's CPU use. A fresh store for each part. Needs
# python3, jq, curl (Debian packages).
set -euo pipefail

BIN=${1:-build/cmkstore}
[ -x "$BIN" ] || {
    echo "usage: bash bench/registry_mixed.sh PATH-TO-CMKSTORE" >&2
    exit 2
}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in python3 jq curl bc; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool (Debian packages python3, jq, curl, bc)" >&2
        exit 1
    }
done
CLIENTS=${MIXED_CLIENTS:-8 64 128}
SECS=${MIXED_SECONDS:-15}
REPOS=${MIXED_REPOS:-1,100,400,1600}
SAMPLES=${MIXED_SAMPLES:-50}
W=${BENCH_DIR:-$(mktemp -d /tmp/registry-mixed.XXXXXX)}
mkdir -p "$W"
SPID=
cleanup() {
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
    fi
    [ "${BENCH_KEEP:-0}" == 1 ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

export CMKSTORE_HOME=$W/cmkhome
if [ ! -s "$W/key.json" ]; then
    "$BIN" identity create --name bench-id >"$W/id.json"
    "$BIN" vault create --name bench-vault --enable-purge-protection >/dev/null
    "$BIN" vault set-policy --name bench-vault --object-id "$(jq -r .principalId "$W/id.json")" \
        --key-permissions get wrapKey unwrapKey >/dev/null
    "$BIN" vault key create --vault-name bench-vault --name bench-key >"$W/key.json"
fi
KID=$(jq -r .key.kid "$W/key.json")

start() { # NAME -> HP, SPID
    "$BIN" create --store "$W/$1" --identity "$(jq -r .id "$W/id.json")" \
        --key-encryption-key "${KID%/*}" >/dev/null
    local port i
    port=$(free_port)
    "$BIN" serve --store "$W/$1" --listen "127.0.0.1:$port" --quiet --max-connections-per-ip 0 \
        --max-connections 1024 >"$W/$1.out" 2>"$W/$1.err" &
    SPID=$!
    HP=127.0.0.1:$port
    for i in $(seq 1 600); do
        curl -s -o /dev/null "http://$HP/v2/" && return 0
        sleep 0.1
    done
    echo "server did not start" >&2
    exit 1
}
stop() {
    kill "$SPID"
    wait "$SPID" || true
    SPID=
}

echo "== mixed load (60% GET verified byte for byte, 25% PUT 4-64 KiB, 15% DELETE), ${SECS} s per client count"
echo "   machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: other processes compete)"
start mixed
first=
for n in $CLIENTS; do
    t0=$(cpu_ticks "$SPID")
    line=$(python3 "$HERE/registry_mixed.py" load "$HP" "$n" "$SECS")
    t1=$(cpu_ticks "$SPID")
    rps=$(jq -r .req_per_s <<<"$line")
    [ -n "$first" ] || first=$rps
    cores=$(echo "scale=2; ($t1 - $t0) / $(getconf CLK_TCK) / $(jq -r .seconds <<<"$line")" | bc)
    jq -c --argjson r "$(echo "scale=2; $rps / $first" | bc)" --argjson c "$cores" \
        '. + {ratio_to_first: $r, server_cores: $c}' <<<"$line"
done
stop

echo "== DELETE and catalog latency against the number of repositories (one client, no other load)"
start scale
python3 "$HERE/registry_mixed.py" scale "$HP" "$REPOS" "$SAMPLES"
stop
