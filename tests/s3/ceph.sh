#!/usr/bin/env bash
# tests/s3/ceph.sh — a throwaway single-node Ceph cluster with an S3 gateway (RGW), for the
# tests and benchmarks of stores on object storage. No root, no systemd, no block device: one
# monitor, one OSD (memstore in RAM, or bluestore on a sparse file) and radosgw listening on
# 127.0.0.1 at a free port, everything (configuration, data, logs, sockets) under one
# directory. Several clusters run side by side (ctest -j2): each has its own directory and
# its own ports.
#
#   ceph.sh start DIR [--owner PID]   start a cluster in DIR (created; must be empty) and an
#                                     S3 user; write DIR/env (the AWS_* variables) and
#                                     DIR/curlrc (for curl -K: user and SigV4), both 0600, and
#                                     print the endpoint. With --owner, the daemons are
#                                     stopped when process PID ends (a killed test leaves
#                                     nothing running).
#   ceph.sh stop DIR                  stop the daemons of DIR by their PIDs (TERM, then KILL)
#   ceph.sh run DIR [--] CMD ARGS...  start, run CMD with DIR/env exported, stop; exits with
#                                     CMD's status
#   ceph.sh rgw-stop DIR / rgw-start DIR
#                                     stop / restart the gateway alone (the cluster keeps its
#                                     data): for "the endpoint is unreachable" tests
#
# Environment: CMK_CEPH_OBJECTSTORE=memstore (default; the data lives in the OSD's RAM) or
# bluestore (a sparse file DIR/osd/0/block of CMK_CEPH_BLOCK_GIB GiB, default 20: RAM stays
# bounded whatever is stored; use it for benchmarks), CMK_CEPH_TIMEOUT (seconds to wait for
# each daemon, default 60).
#
# Settings that matter (measured on Ceph 16): with authentication off, clients must still be
# allowed the "crc" mode on the monitor connection (`ms mon client mode = crc secure`), else
# radosgw retries its monitor session forever; `paxos propose interval` near 0 (else each pool
# creation waits ~1 s and RGW's first start ~9 s); the monitor's free-space warning and
# shutdown thresholds near 0 (build machines' disks can be nearly full); no manager daemon;
# `tcp_nodelay=1` on the beast frontend (else every small request on a kept-alive connection
# waits 40-50 ms: the response body is held back by Nagle until the client's delayed ACK).
# Debian packages: ceph-mon ceph-osd radosgw ceph-common curl python3.
set -euo pipefail

die() {
    echo "ceph.sh: $*" >&2
    exit 1
}

need_tools() {
    local t missing=()
    for t in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph curl python3; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] ||
        die "missing: ${missing[*]} (Debian packages: ceph-mon ceph-osd radosgw ceph-common curl python3)"
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# pid_is DIR PID: PID is alive and is one of DIR's daemons (guards against PID reuse).
pid_is() {
    [ -r "/proc/$2/cmdline" ] && tr '\0' ' ' <"/proc/$2/cmdline" | grep -qF -- "$1/ceph.conf"
}

# stop_pid DIR NAME: TERM the daemon whose PID is in DIR/pids/NAME, KILL it after 10 s.
stop_pid() {
    local d=$1 f="$1/pids/$2" pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if pid_is "$d" "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            pid_is "$d" "$pid" || break
            sleep 0.1
        done
        if pid_is "$d" "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                pid_is "$d" "$pid" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$f"
}

stop_all() {
    local d=$1
    [ -d "$d/pids" ] || return 0
    if [ -f "$d/pids/watchdog" ]; then
        # The watchdog runs this very command when its owner ends (as its own PID: bash
        # execs a subshell's last command).
        [ "$(cat "$d/pids/watchdog")" = $$ ] || kill -TERM "$(cat "$d/pids/watchdog")" 2>/dev/null || true
        rm -f "$d/pids/watchdog"
    fi
    stop_pid "$d" rgw
    stop_pid "$d" osd
    stop_pid "$d" mon
}

# spawn DIR NAME CMD...: starts a daemon in the foreground mode of Ceph, detached from the
# caller's stdin/stdout/stderr (a test runner waits for those to close), its PID recorded.
spawn() {
    local d=$1 name=$2
    shift 2
    "$@" </dev/null >>"$d/log/$name.out" 2>&1 &
    echo $! >"$d/pids/$name"
}

# wait_until SECONDS WHAT PIDNAME CMD...: polls CMD (every 0.1 s) until it succeeds; fails if
# the daemon PIDNAME dies or SECONDS pass.
wait_until() {
    local secs=$1 what=$2 name=$3 deadline
    shift 3
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ! pid_is "$D" "$(cat "$D/pids/$name")"; then
            echo "ceph.sh: $what: the $name daemon exited; its log:" >&2
            tail -15 "$D/log/$name.out" "$D/log/"*"$name"*.log 2>/dev/null | sed 's/^/  /' >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "ceph.sh: $what: not ready after $secs s" >&2
            return 1
        fi
        sleep 0.1
    done
}

write_conf() {
    local store=${CMK_CEPH_OBJECTSTORE:-memstore}
    cat >"$D/ceph.conf" <<EOF
# A single-node test cluster made by tests/s3/ceph.sh; everything stays under $D.
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
mon warn on insecure global id reclaim allowed = false
keyring = /dev/null
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
debug ms = 0
mon data = $D/mon/\$id
osd data = $D/osd/\$id
paxos propose interval = 0.01
mon data avail warn = 1
mon data avail crit = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd objectstore = $store
memstore device bytes = 4294967296
bluestore block create = true
bluestore block size = $((${CMK_CEPH_BLOCK_GIB:-20} * 1024 * 1024 * 1024))
bluestore cache size = 134217728
bluestore fsck on mkfs = false
osd memory target = 939524096
[client]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $D/rgw
rgw thread pool size = 64
rgw dynamic resharding = false
rgw enable usage log = false
EOF
}

rgw_answers() {
    # An S3 answer (not just any HTTP server that took the port meanwhile).
    curl -sS --noproxy '*' -m 5 -o /dev/null -D - "http://127.0.0.1:$RGW_PORT/" 2>/dev/null |
        grep -qi '^x-amz-request-id:'
}

start_rgw() {
    spawn "$D" rgw radosgw -c "$D/ceph.conf" -n client.rgw.0 -f
    wait_until "$TIMEOUT" "radosgw on 127.0.0.1:$RGW_PORT" rgw rgw_answers
}

# One attempt at a cluster in $D (empty); fails if a daemon does not come up (e.g. a port
# picked as free was taken meanwhile).
start_once() {
    local osd_uuid id
    mkdir -p "$D/run" "$D/log" "$D/mon" "$D/osd" "$D/rgw" "$D/pids"
    FSID=$(cat /proc/sys/kernel/random/uuid)
    MON_PORT=$(free_port)
    RGW_PORT=$(free_port)
    write_conf
    monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" \
        >>"$D/log/setup.out" 2>&1
    ceph-mon -c "$D/ceph.conf" --mkfs -i a --monmap "$D/monmap" >>"$D/log/setup.out" 2>&1 ||
        return 1
    spawn "$D" mon ceph-mon -c "$D/ceph.conf" -i a -f
    wait_until "$TIMEOUT" "monitor on 127.0.0.1:$MON_PORT" mon \
        timeout 10 ceph -c "$D/ceph.conf" mon stat || return 1
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(timeout 30 ceph -c "$D/ceph.conf" osd new "$osd_uuid" 2>>"$D/log/setup.out") || return 1
    [ "$id" = 0 ] || return 1
    mkdir -p "$D/osd/0"
    ceph-osd -c "$D/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$D/log/setup.out" 2>&1 ||
        return 1
    spawn "$D" osd ceph-osd -c "$D/ceph.conf" -i 0 -f
    wait_until "$TIMEOUT" "OSD" osd osd_up || return 1
    start_rgw || return 1
    ACCESS_KEY=$(head -c 15 /dev/urandom | base32 | tr -d '=' | head -c 20)
    SECRET_KEY=$(head -c 30 /dev/urandom | base64 | tr -d '=+/\n' | head -c 40)
    timeout 60 radosgw-admin -c "$D/ceph.conf" -n client.rgw.0 user create --uid=cmktest \
        --display-name="cmkstore tests" --access-key="$ACCESS_KEY" \
        --secret-key="$SECRET_KEY" >>"$D/log/setup.out" 2>&1 || return 1
}

osd_up() {
    timeout 10 ceph -c "$D/ceph.conf" osd stat 2>/dev/null | grep -q '1 up'
}

write_env() {
    (
        umask 077
        cat >"$D/env" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$RGW_PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export CMK_CEPH_DIR=$D
EOF
        # For curl -K: SigV4-signed requests without the secret on a command line.
        cat >"$D/curlrc" <<EOF
user = "$ACCESS_KEY:$SECRET_KEY"
aws-sigv4 = "aws:amz:us-east-1:s3"
noproxy = "*"
EOF
    )
}

# watchdog DIR OWNER: stops the cluster when OWNER ends. Detached from every descriptor.
start_watchdog() {
    local me
    me=$(readlink -f "$0")
    (
        trap '' HUP
        while kill -0 "$2" 2>/dev/null && [ -d "$1/pids" ]; do
            sleep 1
        done
        bash "$me" stop "$1"
    ) </dev/null >>"$1/log/watchdog.out" 2>&1 &
    echo $! >"$1/pids/watchdog"
}

cmd_start() {
    local owner='' attempt t0=$SECONDS
    [ $# -ge 1 ] || die "usage: ceph.sh start DIR [--owner PID]"
    mkdir -p "$1"
    D=$(cd "$1" && pwd)
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --owner)
            owner=${2:?--owner needs a PID}
            shift 2
            ;;
        *) die "unknown option: $1" ;;
        esac
    done
    [ -z "$(ls -A "$D")" ] || die "$D is not empty"
    need_tools
    TIMEOUT=${CMK_CEPH_TIMEOUT:-60}
    # A port found free can be taken before the daemon binds it: start again, a few times.
    for attempt in 1 2 3; do
        if start_once; then
            write_env
            [ -z "$owner" ] || start_watchdog "$D" "$owner"
            echo "ceph.sh: RGW ready at http://127.0.0.1:$RGW_PORT in $((SECONDS - t0)) s" \
                "(${CMK_CEPH_OBJECTSTORE:-memstore}; access key $ACCESS_KEY; variables in $D/env)"
            return 0
        fi
        stop_all "$D"
        if [ "$attempt" -lt 3 ]; then
            echo "ceph.sh: attempt $attempt failed; starting again" >&2
            rm -rf "${D:?}"/*
        fi
    done
    die "the cluster did not start (logs in $D/log)"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: ceph.sh stop DIR"
    [ -d "$1" ] || return 0
    D=$(cd "$1" && pwd)
    stop_all "$D"
}

cmd_run() {
    [ $# -ge 2 ] || die "usage: ceph.sh run DIR [--] CMD ARGS..."
    local dir=$1 rc=0
    shift
    [ "$1" != -- ] || shift
    cmd_start "$dir" --owner $$
    trap 'cmd_stop "$D"' EXIT
    # shellcheck disable=SC1091
    (source "$D/env" && "$@") || rc=$?
    exit "$rc"
}

# The gateway alone: stopped and started again on the same port (the cluster keeps running).
cmd_rgw_stop() {
    D=$(cd "${1:?usage: ceph.sh rgw-stop DIR}" && pwd)
    stop_pid "$D" rgw
}

cmd_rgw_start() {
    D=$(cd "${1:?usage: ceph.sh rgw-start DIR}" && pwd)
    TIMEOUT=${CMK_CEPH_TIMEOUT:-60}
    RGW_PORT=$(sed -n 's|^export AWS_ENDPOINT_URL=http://127.0.0.1:||p' "$D/env")
    [ -n "$RGW_PORT" ] || die "$D/env names no endpoint"
    start_rgw
}

case ${1:-} in
start) shift && cmd_start "$@" ;;
stop) shift && cmd_stop "$@" ;;
run) shift && cmd_run "$@" ;;
rgw-stop) shift && cmd_rgw_stop "$@" ;;
rgw-start) shift && cmd_rgw_start "$@" ;;
*) die "usage: ceph.sh start DIR [--owner PID] | stop DIR | run DIR [--] CMD... | rgw-stop DIR | rgw-start DIR" ;;
esac
