#!/usr/bin/env bash
# bench/registry_bench.sh — skopeo push and pull of the same image to `cmkstore serve`
# (encrypted store, customer-managed key in a local vault) and to Debian's `docker-registry`
# (CNCF distribution, unencrypted filesystem driver), side by side. Loopback only.
#
#   bash bench/registry_bench.sh [PATH-TO-CMKSTORE]
#
# Environment: BENCH_MB (uncompressed image size, default 500: about 280 MB gzip), BENCH_LAYERS (default 4), BENCH_RUNS
# (default 3; 0: only the idle-session row), BENCH_SESSIONS (idle upload sessions for the
# memory row, default 256; 0: no row), BENCH_SOAK_WINDOWS and BENCH_SOAK_SECONDS (steady
# mixed load from 16 clients, default 4 windows of 30 s; 0 windows: no row), BENCH_DIR (scratch, default a temp dir under /tmp; removed at the end unless
# BENCH_KEEP=1), BENCH_CONC_* (the concurrent row, see there). Each run pushes to a fresh, empty registry (so no blob is skipped as already
# present) and pulls into a fresh OCI layout. Layers are gzip-compressed tars whose files are
# half pseudo-random, half text, like real layers; skopeo copies with --preserve-digests, so
# both registries receive and serve the very same bytes. Prints one line per run and the
# medians. Then the idle-session row: the cmkstore server's RSS (VmRSS) at start, with 48 and
# with BENCH_SESSIONS upload sessions open after one 4 MB PATCH each, and after they are
# cancelled (each read once the server has been idle for 3 s). Then the soak row: RSS at the
# end of each window of a steady mixed load (tools/registry_load.py mixed: pushes, sessions,
# mounts, gets, ranged gets, deletes) and once idle for 3 s. Needs skopeo, docker-registry, python3, jq (Debian packages).
#
#   bash bench/registry_bench.sh --store s3:// [PATH-TO-CMKSTORE]
#
# puts both registries on object storage instead: a Ceph RGW started for the run
# (tests/s3/ceph.sh; bluestore on a sparse file unless CMK_CEPH_OBJECTSTORE says otherwise),
# cmkstore on s3://cmkbench/run-N, docker-registry with its s3-aws driver (regionendpoint,
# forcepathstyle) on the same gateway, bucket dreg. Needs ceph-mon ceph-osd radosgw
# ceph-common besides.
set -euo pipefail

STORE=dir
if [ "${1:-}" == --store ]; then
    case ${2:-} in
    s3://) STORE=s3 ;;
    *)
        echo "usage: bash bench/registry_bench.sh [--store s3://] PATH-TO-CMKSTORE" >&2
        exit 2
        ;;
    esac
    shift 2
fi
BIN=${1:-build/cmkstore}
[ -x "$BIN" ] || {
    echo "usage: bash bench/registry_bench.sh PATH-TO-CMKSTORE" >&2
    exit 2
}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
MB=${BENCH_MB:-500}
LAYERS=${BENCH_LAYERS:-4}
RUNS=${BENCH_RUNS:-3}
TOOLS=(python3 jq curl bc)
[ "$RUNS" == 0 ] || TOOLS+=(skopeo docker-registry)
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool (Debian packages skopeo, docker-registry, python3, jq, curl)" >&2
        exit 1
    }
done
W=${BENCH_DIR:-$(mktemp -d /tmp/registry-bench.XXXXXX)}
mkdir -p "$W"
PIDS=()
cleanup() {
    local p
    # The gateway's cluster first, by its PID files, before they are removed with $W (its
    # watchdog, killed below, would race the removal and leave the OSD and RGW running).
    if [ -n "${CEPH_SH:-}" ] && [ -d "$W/ceph/pids" ]; then
        bash "$CEPH_SH" stop "$W/ceph" || true
    fi
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ "${BENCH_KEEP:-0}" == 1 ] || rm -rf "$W"
}
trap cleanup EXIT
export REGISTRY_AUTH_FILE="$W/auth.json"
echo '{}' >"$REGISTRY_AUTH_FILE"
SK=(skopeo --insecure-policy)

if [ "$STORE" == s3 ]; then
    CEPH_SH=$(dirname "${BASH_SOURCE[0]}")/../tests/s3/ceph.sh
    CMK_CEPH_OBJECTSTORE=${CMK_CEPH_OBJECTSTORE:-bluestore} bash "$CEPH_SH" start "$W/ceph" --owner $$
    PIDS+=("$(cat "$W/ceph/pids/watchdog")")
    # shellcheck disable=SC1091
    source "$W/ceph/env"
    for bucket in cmkbench dreg; do
        curl -sS -f -K "$W/ceph/curlrc" -X PUT -o /dev/null \
            -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
            "$AWS_ENDPOINT_URL/$bucket"
    done
fi
# store_of RUN: where cmkstore keeps run RUN's store.
store_of() {
    if [ "$STORE" == s3 ]; then echo "s3://cmkbench/run-$1"; else echo "$W/cmk-$1"; fi
}

now() { date +%s.%N; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # URL
    local i
    for i in $(seq 1 600); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# ---- the image (made once)
IMG=$W/image
if [ "$RUNS" == 0 ]; then
    : # the idle-session row only
elif [ ! -f "$IMG/index.json" ]; then
    echo "== making a ${MB} MB image with $LAYERS layers in $IMG"
    python3 "$(dirname "${BASH_SOURCE[0]}")/../tools/oci_layout.py" bench "$IMG" "$MB" "$LAYERS" >/dev/null
fi
if [ "$RUNS" -gt 0 ]; then
    BYTES=$(du -cb "$IMG"/blobs/sha256/* | tail -1 | cut -f1)
    DIGEST=$(jq -r '.manifests[0].digest' "$IMG/index.json")
    echo "image: $DIGEST, $LAYERS layers, $BYTES bytes (gzip)"
fi

# ---- cmkstore: one vault/identity/key; a fresh store per run
export CMKSTORE_HOME=$W/cmkhome
if [ ! -s "$W/key.json" ]; then # made once per BENCH_DIR
    "$BIN" identity create --name bench-id >"$W/id.json"
    "$BIN" vault create --name bench-vault --enable-purge-protection >/dev/null
    "$BIN" vault set-policy --name bench-vault --object-id "$(jq -r .principalId "$W/id.json")" \
        --key-permissions get wrapKey unwrapKey >/dev/null
    "$BIN" vault key create --vault-name bench-vault --name bench-key >"$W/key.json"
fi
KID=$(jq -r .key.kid "$W/key.json")

start_cmkstore() { # run -> sets HP, SPID
    "$BIN" create --store "$(store_of "$1")" --identity "$(jq -r .id "$W/id.json")" \
        --key-encryption-key "${KID%/*}" >/dev/null
    local port
    port=$(free_port)
    "$BIN" serve --store "$(store_of "$1")" --listen "127.0.0.1:$port" --quiet \
        >"$W/cmk-$1.out" 2>"$W/cmk-$1.err" &
    SPID=$!
    PIDS+=("$SPID")
    HP=127.0.0.1:$port
    wait_http "http://$HP/v2/"
}

start_distribution() { # run -> sets HP, SPID
    local port
    port=$(free_port)
    mkdir -p "$W/dist-$1/data"
    cat >"$W/dist-$1/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/dist-$1/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    if [ "$STORE" == s3 ]; then
        (
            umask 077
            cat >"$W/dist-$1/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $AWS_ACCESS_KEY_ID
    secretkey: $AWS_SECRET_ACCESS_KEY
    region: us-east-1
    regionendpoint: $AWS_ENDPOINT_URL
    forcepathstyle: true
    bucket: dreg
    rootdirectory: /run-$1
    secure: false
    v4auth: true
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$port
EOF
        )
    fi
    # (docker-registry reads REGISTRY_* variables as configuration: keep skopeo's out)
    # (a CA bundle named for the AWS SDK is loaded even for http:// and fails the start)
    env -u REGISTRY_AUTH_FILE -u AWS_CA_BUNDLE docker-registry serve "$W/dist-$1/config.yml" \
        >"$W/dist-$1.log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    HP=127.0.0.1:$port
    wait_http "http://$HP/v2/"
}

stop_it() {
    kill -TERM "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
}

declare -A PUSH PULL
for run in $(seq 1 "$RUNS"); do
    for reg in cmkstore distribution; do
        if [ "$reg" == cmkstore ]; then start_cmkstore "$run"; else start_distribution "$run"; fi
        sync
        t0=$(now)
        "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$IMG:latest" \
            "docker://$HP/bench/image:$run" >/dev/null
        t1=$(now)
        rm -rf "$W/pull"
        "${SK[@]}" copy -q --preserve-digests --src-tls-verify=false \
            "docker://$HP/bench/image:$run" "oci:$W/pull:latest" >/dev/null
        t2=$(now)
        got=$(jq -r '.manifests[0].digest' "$W/pull/index.json")
        [ "$got" == "$DIGEST" ] || {
            echo "$reg: pulled $got, expected $DIGEST" >&2
            exit 1
        }
        stop_it
        rm -rf "$W/cmk-$run" "$W/dist-$run" "$W/pull"
        PUSH[$reg,$run]=$(echo "$t1 - $t0" | bc -l)
        PULL[$reg,$run]=$(echo "$t2 - $t1" | bc -l)
        printf '%-12s run %d  push %6.2f s (%6.1f MB/s)  pull %6.2f s (%6.1f MB/s)\n' "$reg" "$run" \
            "${PUSH[$reg,$run]}" "$(echo "$BYTES / 1048576 / ${PUSH[$reg,$run]}" | bc -l)" \
            "${PULL[$reg,$run]}" "$(echo "$BYTES / 1048576 / ${PULL[$reg,$run]}" | bc -l)"
    done
done

if [ "$RUNS" -gt 0 ]; then
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "median of $RUNS runs, $BYTES bytes, $LAYERS layers, store: $STORE (machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for reg in cmkstore distribution; do
    pu=() pl=()
    for run in $(seq 1 "$RUNS"); do
        pu+=("${PUSH[$reg,$run]}")
        pl+=("${PULL[$reg,$run]}")
    done
    mpu=$(median "${pu[@]}")
    mpl=$(median "${pl[@]}")
    printf '%-12s push %6.2f s (%6.1f MB/s)  pull %6.2f s (%6.1f MB/s)\n' "$reg" "$mpu" \
        "$(echo "$BYTES / 1048576 / $mpu" | bc -l)" "$mpl" "$(echo "$BYTES / 1048576 / $mpl" | bc -l)"
done
fi

# ---- concurrent clients on one layer: pulls and pushes, both registries in turn (issue 24, item 7)
# BENCH_CONC_CLIENTS clients (default 8) each GET the same BENCH_CONC_MB MB layer (default 87,
# random bytes like a gzip layer) BENCH_CONC_PULLS times (default 4), every body checked by
# size (and the last by digest); then each client pushes its own BENCH_CONC_MB MB blob (POST,
# then one PUT of the whole body).
# cmkstore runs with --cache-size ${BENCH_CACHE:-512M} (decrypted hot blobs; see SERVE.md).
# Rounds alternate between the registries (BENCH_CONC_ROUNDS, default 3); medians printed.
NCONC=${BENCH_CONC_CLIENTS:-8}
CROUNDS=${BENCH_CONC_ROUNDS:-3}
if [ "$NCONC" -gt 0 ] && [ "$CROUNDS" -gt 0 ]; then
    CMB=${BENCH_CONC_MB:-87}
    CPULLS=${BENCH_CONC_PULLS:-4}
    head -c $((CMB * 1000000)) /dev/urandom >"$W/conc.layer"
    CD=sha256:$(sha256sum "$W/conc.layer" | cut -c1-64)
    # Each push's digest is computed here, before any timer: a client pushing a layer knows
    # its digest already (from the image it pushes), and hashing 8 x 87 MB on the clients'
    # side would add the same fixed CPU to both registries' times on 2 cores.
    declare -A PDIG
    for i in $(seq 1 "$NCONC"); do
        head -c $((CMB * 1000000)) /dev/urandom >"$W/conc.push$i"
        PDIG[$i]=sha256:$(sha256sum "$W/conc.push$i" | cut -c1-64)
    done
    declare -A CPULL CPUSH SCPL SCPU
    # The server's own CPU seconds (user + system) over a phase: on a machine shared with the
    # clients (and other jobs) the wall-clock ratio understates a difference in server work.
    srv_ticks() { awk '{print $14 + $15}' "/proc/$SPID/stat"; }
    conc_push_one() { # HP FILE REPO DIGEST: POST a session, PUT the body with its digest; prints the status
        local loc sep
        loc=$(curl -sS -o /dev/null -D - -X POST "http://$1/v2/$3/blobs/uploads/" |
            awk -F': ' 'tolower($1) == "location" {print $2}' | tr -d '\r')
        case $loc in http*) ;; *) loc=http://$1$loc ;; esac
        case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
        curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
            --data-binary "@$2" "$loc${sep}digest=$4"
    }
    # HP: CPULLS GETs of the layer; each body's size is checked, the last one's digest too
    # (hashing every body on the client would cost both registries the same CPU and hide the
    # servers' difference on 2 cores; for the same reason the digest is taken with OpenSSL's
    # SHA-NI code, about 4x faster here than coreutils' sha256sum).
    conc_pull_loop() {
        local j got
        for j in $(seq 1 "$CPULLS"); do
            if [ "$j" -lt "$CPULLS" ]; then
                got=$(curl -sS -o /dev/null -w '%{size_download}' "http://$1/v2/conc/layer/blobs/$CD")
                [ "$got" == $((CMB * 1000000)) ] || { echo "pull $j from $1: $got bytes" >&2; return 1; }
            else
                got=sha256:$(curl -sS "http://$1/v2/conc/layer/blobs/$CD" | openssl dgst -sha256 -r | cut -c1-64)
                [ "$got" == "$CD" ] || { echo "pull $j from $1: digest $got" >&2; return 1; }
            fi
        done
    }
    for round in $(seq 1 "$CROUNDS"); do
        for reg in cmkstore distribution; do
            if [ "$reg" == cmkstore ]; then
                "$BIN" create --store "$W/cmk-conc$round" --identity "$(jq -r .id "$W/id.json")" \
                    --key-encryption-key "${KID%/*}" >/dev/null
                port=$(free_port)
                "$BIN" serve --store "$W/cmk-conc$round" --listen "127.0.0.1:$port" --quiet \
                    --cache-size "${BENCH_CACHE:-512M}" >"$W/cmk-conc.out" 2>"$W/cmk-conc.err" &
                SPID=$!
                PIDS+=("$SPID")
                HP=127.0.0.1:$port
                wait_http "http://$HP/v2/"
            else
                start_distribution "conc$round"
            fi
            [ "$(conc_push_one "$HP" "$W/conc.layer" conc/layer "$CD")" == 201 ] || { echo "$reg: layer push failed" >&2; exit 1; }
            cp=()
            c0=$(srv_ticks)
            t0=$(now)
            for c in $(seq 1 "$NCONC"); do conc_pull_loop "$HP" & cp+=($!); done
            for p in "${cp[@]}"; do wait "$p" || { echo "$reg: a pull failed" >&2; exit 1; }; done
            t1=$(now)
            c1=$(srv_ticks)
            cp=()
            for c in $(seq 1 "$NCONC"); do
                (st=$(conc_push_one "$HP" "$W/conc.push$c" "conc/p$c" "${PDIG[$c]}"); [ "$st" == 201 ] || { echo "$reg: push $c answered $st" >&2; exit 1; }) &
                cp+=($!)
            done
            for p in "${cp[@]}"; do wait "$p" || exit 1; done
            t2=$(now)
            c2=$(srv_ticks)
            stop_it
            rm -rf "$W/cmk-conc$round" "$W/dist-conc$round"
            CPULL[$reg,$round]=$(echo "$t1 - $t0" | bc -l)
            CPUSH[$reg,$round]=$(echo "$t2 - $t1" | bc -l)
            SCPL[$reg,$round]=$(echo "($c1 - $c0) / $(getconf CLK_TCK)" | bc -l)
            SCPU[$reg,$round]=$(echo "($c2 - $c1) / $(getconf CLK_TCK)" | bc -l)
            printf '%-12s concurrent round %d: %d clients x %d pulls of %d MB %6.2f s (server CPU %.2f s); %d clients pushing %d MB each %6.2f s (server CPU %.2f s)\n' \
                "$reg" "$round" "$NCONC" "$CPULLS" "$CMB" "${CPULL[$reg,$round]}" "${SCPL[$reg,$round]}" \
                "$NCONC" "$CMB" "${CPUSH[$reg,$round]}" "${SCPU[$reg,$round]}"
        done
    done
    cmed() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
    declare -A CMPL CMPU CMSL CMSU
    for reg in cmkstore distribution; do
        pl=() pu=() sl=() su=()
        for round in $(seq 1 "$CROUNDS"); do
            pl+=("${CPULL[$reg,$round]}")
            pu+=("${CPUSH[$reg,$round]}")
            sl+=("${SCPL[$reg,$round]}")
            su+=("${SCPU[$reg,$round]}")
        done
        CMPL[$reg]=$(cmed "${pl[@]}")
        CMPU[$reg]=$(cmed "${pu[@]}")
        CMSL[$reg]=$(cmed "${sl[@]}")
        CMSU[$reg]=$(cmed "${su[@]}")
    done
    printf 'concurrent, median of %d rounds (load %s): pulls cmkstore %.2f s vs distribution %.2f s = %.2fx; pushes cmkstore %.2f s vs distribution %.2f s = %.2fx (ratios: distribution time / cmkstore time)\n' \
        "$CROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)" "${CMPL[cmkstore]}" "${CMPL[distribution]}" \
        "$(echo "${CMPL[distribution]} / ${CMPL[cmkstore]}" | bc -l)" "${CMPU[cmkstore]}" "${CMPU[distribution]}" \
        "$(echo "${CMPU[distribution]} / ${CMPU[cmkstore]}" | bc -l)"
    printf 'concurrent, server CPU seconds (median): pulls cmkstore %.2f vs distribution %.2f; pushes cmkstore %.2f vs distribution %.2f\n' \
        "${CMSL[cmkstore]}" "${CMSL[distribution]}" "${CMSU[cmkstore]}" "${CMSU[distribution]}"
fi

# ---- idle upload sessions: what they cost the server (issue 20, item 4)
NSESS=${BENCH_SESSIONS:-256}
if [ "$NSESS" -gt 0 ]; then
    start_cmkstore sessions
    head -c $((4 * 1024 * 1024)) /dev/urandom >"$W/four"
    : >"$W/locs"
    rss() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$SPID/status"; }
    US=$(dirname "${BASH_SOURCE[0]}")/../tools/registry_load.py
    r0=$(rss)
    t0=$(now)
    bad=$(python3 "$US" open "$HP" bench/idle 48 "$W/four" "$W/locs")
    sleep 3
    r48=$(rss)
    bad=$((bad + $(python3 "$US" open "$HP" bench/idle $((NSESS - 48)) "$W/four" "$W/locs")))
    t1=$(now)
    sleep 3
    rn=$(rss)
    bad=$((bad + $(python3 "$US" cancel "$HP" "$W/locs")))
    sleep 3
    rc=$(rss)
    engines=$(curl -s "http://$HP/metrics" | awk '$1 == "cmkstore_io_engines_open" {print $2}')
    stop_it
    rm -rf "$W/cmk-sessions"
    [ "$bad" == 0 ] || echo "idle sessions: $bad requests failed" >&2
    printf 'cmkstore     idle sessions RSS: %d MiB at start, %d MiB with 48, %d MiB with %d (4 MB PATCH each, %.1f s), %d MiB after cancelling; %s I/O engines open\n' \
        "$r0" "$r48" "$rn" "$NSESS" "$(echo "$t1 - $t0" | bc -l)" "$rc" "${engines:-?}"
fi

# ---- steady mixed load: RSS window by window, then idle (issue 20, item 8)
NWIN=${BENCH_SOAK_WINDOWS:-4}
WSEC=${BENCH_SOAK_SECONDS:-30}
if [ "$NWIN" -gt 0 ]; then
    start_cmkstore soak
    US=$(dirname "${BASH_SOURCE[0]}")/../tools/registry_load.py
    rows=() treq=0 terr=0
    for _ in $(seq 1 "$NWIN"); do
        read -r nreq nerr < <(python3 "$US" mixed "$HP" 16 0 "$WSEC")
        treq=$((treq + nreq))
        terr=$((terr + nerr))
        rows+=("$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$SPID/status")")
    done
    cpu=$(awk '{print $14 + $15}' "/proc/$SPID/stat")
    sleep 3
    idle=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$SPID/status")
    peak=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$SPID/status")
    stop_it
    rm -rf "$W/cmk-soak"
    printf 'cmkstore     soak, 16 clients, %d x %d s: %d requests, %d errors, server CPU %.2f ms/request; RSS at each window end %s MiB, peak %d MiB, idle after 3 s %d MiB\n' \
        "$NWIN" "$WSEC" "$treq" "$terr" "$(echo "$cpu * 1000 / $(getconf CLK_TCK) / $treq" | bc -l)" "$(
            IFS=/
            echo "${rows[*]}"
        )" "$peak" "$idle"
fi
