#!/usr/bin/env bash
# tools/demo.sh — the README's first command (`bash tools/run.sh demo` builds, then runs this).
#
#   bash tools/demo.sh PATH-TO-CMKSTORE [--no-serve] [--listen ADDR:PORT]
#
# 1. Walks through the seed's workflow on a local vault in a scratch home (removed at the
#    end): identity -> vault with purge protection -> access policy -> RSA key -> store with
#    the customer-managed key -> `encryption show` -> blob put / get (byte-identical).
# 2. Writes a tiny OCI image layout to push, then runs `cmkstore serve` in the foreground on
#    the embedded default store under CMKSTORE_HOME (default ~/.cmkstore; made on first run,
#    reused afterwards) at 127.0.0.1:5000, until Ctrl-C.
#
# --no-serve (or CMKSTORE_DEMO_NO_SERVE=1) stops after step 1 and the image layout (the
# tests run the demo this way). --listen (or CMKSTORE_DEMO_LISTEN) picks another address.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -x "$1" ]; then
    echo "usage: bash tools/demo.sh PATH-TO-CMKSTORE [--no-serve] [--listen ADDR:PORT]" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
serve=1
listen=${CMKSTORE_DEMO_LISTEN:-127.0.0.1:5000}
[ "${CMKSTORE_DEMO_NO_SERVE:-0}" == 1 ] && serve=0
while [ $# -gt 0 ]; do
    case "$1" in
    --no-serve) serve=0 ;;
    --listen)
        listen=${2:?--listen needs ADDR:PORT}
        shift
        ;;
    *)
        echo "demo.sh: unknown argument: $1" >&2
        exit 2
        ;;
    esac
    shift
done
for tool in jq python3 cmp; do
    command -v "$tool" >/dev/null || {
        echo "demo.sh: missing tool: $tool" >&2
        exit 1
    }
done

serve_home=${CMKSTORE_HOME:-$HOME/.cmkstore}
work=$(mktemp -d "${TMPDIR:-/tmp}/cmkstore-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

# run CMD...: shows the command the way a user would type it, then runs it.
run() {
    { # on stderr, so the command's own output can be captured
        printf '\n$ cmkstore'
        printf ' %q' "$@"
        printf '\n'
    } >&2
    CMKSTORE_HOME="$work/home" "$BIN" "$@"
}

echo "== 1. The seed's workflow on a local vault (scratch home $work/home)"
run identity create --name demo-identity | tee "$work/id.json"
principal=$(jq -r .principalId "$work/id.json")
identity=$(jq -r .id "$work/id.json")
run vault create --name demo-vault --enable-purge-protection >"$work/vault.json"
jq '{name, properties: {enablePurgeProtection: .properties.enablePurgeProtection, softDeleteRetentionInDays: .properties.softDeleteRetentionInDays}}' \
    "$work/vault.json" 2>/dev/null || cat "$work/vault.json"
run vault set-policy --name demo-vault --object-id "$principal" \
    --key-permissions get unwrapKey wrapKey >/dev/null
echo "(access policy: get, unwrapKey, wrapKey for principalId $principal)"
run vault key create --vault-name demo-vault --name demo-key | tee "$work/key.json" |
    jq '{kid: .key.kid, kty: .key.kty}'
kid=$(jq -r .key.kid "$work/key.json")
run create --store "$work/store" --identity "$identity" --key-encryption-key "${kid%/*}" |
    jq '{id, encryption: .encryption.status}' 2>/dev/null || true
run encryption show --store "$work/store"
head -c 3000000 /dev/urandom >"$work/layer.bin"
run blob put --store "$work/store" "$work/layer.bin" | tee "$work/put.out"
digest=$(grep -o 'sha256:[0-9a-f]\{64\}' "$work/put.out" | head -1)
run blob get --store "$work/store" --output "$work/layer.out" "$digest"
cmp "$work/layer.bin" "$work/layer.out"
echo "(blob get returned the same 3000000 bytes: $digest)"

echo
echo "== 2. A small OCI image to push"
img=$serve_home/demo-image
mkdir -p "$serve_home"
python3 "$(dirname "${BASH_SOURCE[0]}")/oci_layout.py" demo "$img" >/dev/null
echo "OCI image layout: $img"

if [ "$serve" -eq 0 ]; then
    echo
    echo "== demo finished (not serving: --no-serve)"
    exit 0
fi

echo
echo "== 3. cmkstore serve on the embedded default (CMKSTORE_HOME=$serve_home); Ctrl-C stops it"
echo "In another terminal, push and pull the image:"
echo "  skopeo copy --dest-tls-verify=false oci:$img:latest docker://$listen/demo/hello:1"
echo "  skopeo inspect --tls-verify=false docker://$listen/demo/hello:1"
echo "  curl -s http://$listen/metrics | grep ^cmkstore_"
echo
rm -rf "$work"
trap - EXIT
CMKSTORE_HOME=$serve_home exec "$BIN" serve --listen "$listen"
