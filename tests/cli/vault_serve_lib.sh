# shellcheck shell=bash
# tests/cli/vault_serve_lib.sh — helpers for the `cmkstore vault serve` tests (sourced after
# lib.sh).
#
# Servers listen on 127.0.0.1 port 0 (the kernel picks a free port; the server prints it).
# Every server started here is stopped at exit (lib.sh's on_exit). Needs curl.

command -v curl >/dev/null || {
    echo "missing tool: curl (Debian: curl)" >&2
    exit 1
}

VSRV_PIDS=()

vault_cleanup() {
    local p
    for p in "${VSRV_PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
on_exit vault_cleanup

# start_vault NAME VAULT [vault serve options...]: starts `cmkstore vault serve --name VAULT`
# in the background on 127.0.0.1:0 and waits (bounded) until it listens. Sets VSRV_PID,
# VURL (https://127.0.0.1:PORT), VPORT, VCA (the certificate to trust), VSRV_OUT, VSRV_ERR.
start_vault() {
    local name=$1 vault=$2 hp
    shift 2
    VSRV_OUT="$T/$name.out"
    VSRV_ERR="$T/$name.err"
    "$CMKSTORE_BIN" vault serve --name "$vault" --listen 127.0.0.1:0 "$@" >"$VSRV_OUT" \
        2>"$VSRV_ERR" &
    VSRV_PID=$!
    VSRV_PIDS+=("$VSRV_PID")
    if hp=$(wait_listening "$VSRV_OUT" "$VSRV_PID" https 600); then
        VURL="https://$hp"
        VPORT=${VURL##*:}
        VCA=$(sed -n 's|^TLS certificate \([^ ]*\).*|\1|p' "$VSRV_OUT" | head -1)
        return 0
    fi
    echo "# vault server $name did not start:" >&2
    sed 's/^/#   /' "$VSRV_ERR" >&2
    return 1
}

# stop_vault [SIGNAL]: signals the server (default TERM) and waits for it (bounded); sets
# VSRV_EXIT (124 if it had to be killed).
stop_vault() {
    stop_bg "$VSRV_PID" "${1:-TERM}"
    VSRV_EXIT=$BG_EXIT
}

# vcurl OUTFILE CURL-ARGS...: curl trusting $VCA; body to OUTFILE, headers to OUTFILE.h;
# prints the HTTP status (000 if the connection failed).
vcurl() {
    local out=$1
    shift
    curl -sS --cacert "$VCA" -o "$out" -D "$out.h" -w '%{http_code}' "$@" 2>/dev/null || true
}

# vtoken CLIENT_ID: a token from the server's token endpoint, on stdout.
vtoken() {
    curl -sS --cacert "$VCA" -H 'Metadata: true' \
        "$VURL/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id=$1" |
        jq -r .access_token
}

# vhdr FILE.h NAME: value of header NAME (case-insensitive), without CR.
vhdr() {
    grep -i "^$2:" "$1" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r'
}
