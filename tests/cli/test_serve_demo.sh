#!/usr/bin/env bash
# test_serve_demo.sh — tools/demo.sh, the README's first command: the seed's workflow with
# CMKSTORE_DEMO_NO_SERVE=1 (every step runs, the blob comes back byte-identical, the scratch
# home is removed), then the serving mode on the embedded default (port 0), pushing the
# demo's own image with skopeo, stopped with SIGTERM.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

DEMO="$CMK_SOURCE_DIR/tools/demo.sh"
expect_exit 2 bash "$DEMO"
expect_exit 2 bash "$DEMO" "$CMKSTORE_BIN" --bogus

CMKSTORE_DEMO_NO_SERVE=1 expect_ok bash "$DEMO" "$CMKSTORE_BIN"
cat "$OUT" "$ERR" >"$T/demo.log"
for step in 'identity create' 'vault create --name demo-vault --enable-purge-protection' \
    'vault set-policy' 'vault key create' 'create --store' 'encryption show' 'blob put' 'blob get'; do
    expect_true "demo runs: cmkstore $step" grep -q "^\$ cmkstore $step" "$T/demo.log"
done
expect_true "encryption show reports status enabled" grep -q '"status": "enabled"' "$T/demo.log"
expect_true "blob get returned the same bytes" grep -q '^(blob get returned the same 3000000 bytes' "$T/demo.log"
expect_true "the demo did not serve" grep -q 'not serving' "$T/demo.log"
scratch=$(sed -n 's/^== 1.*(scratch home \(.*\)\/home)$/\1/p' "$T/demo.log")
expect_true "the scratch home is removed" test -n "$scratch" -a ! -e "$scratch"
expect_true "the demo image layout is written" test -f "$CMKSTORE_HOME/demo-image/index.json"
expect_false "no store was made under CMKSTORE_HOME yet" test -e "$CMKSTORE_HOME/registry"

# Serving mode: the demo execs `cmkstore serve` in the foreground.
bash "$DEMO" "$CMKSTORE_BIN" --listen 127.0.0.1:0 >"$T/serve.out" 2>"$T/serve.err" &
SRV_PID=$!
SRV_PIDS+=("$SRV_PID")
SRV_OUT=$T/serve.out SRV_ERR=$T/serve.err
if wait_for 180 grep -q '^Listening on http://' "$SRV_OUT"; then
    ok "the demo serves the embedded default"
    HP=$(sed -n 's|^Listening on http://\([0-9.]*:[0-9]*\).*|\1|p' "$SRV_OUT" | head -1)
    expect_true "... created on first run" grep -q '^Created the embedded default' "$SRV_OUT"
    expect_true "... it prints the skopeo command" grep -q 'skopeo copy --dest-tls-verify=false oci:' "$SRV_OUT"
    if command -v skopeo >/dev/null; then
        export REGISTRY_AUTH_FILE="$T/auth.json"
        echo '{}' >"$REGISTRY_AUTH_FILE"
        expect_ok skopeo --insecure-policy copy --dest-tls-verify=false \
            "oci:$CMKSTORE_HOME/demo-image:latest" "docker://$HP/demo/hello:1"
        expect_ok skopeo --insecure-policy inspect --tls-verify=false "docker://$HP/demo/hello:1"
        expect_json ".Digest == \"$(jq -r '.manifests[0].digest' "$CMKSTORE_HOME/demo-image/index.json")\"" \
            "the demo image is served under its digest"
    fi
else
    not_ok "the demo did not start serving"
    sed 's/^/#   /' "$T/serve.err" | head -20
fi
stop_server TERM
expect_eq "$SRV_EXIT" 0 "the demo's server stops on SIGTERM with exit 0"
