#!/usr/bin/env bash
# test_serve_token.sh — Docker registry token authentication (`serve --auth-token-*`) with
# real clients: a token issuer (tests/cli/token_issuer.py, Debian's python3-jwt) on loopback
# grants per-user scopes; skopeo and podman follow the server's Bearer challenge to it, push
# and pull byte for byte, and are refused what their token does not grant. curl checks the
# challenges (realm, service, scope, error), RS256 and ES256 tokens, expired / not yet valid
# / wrong audience / wrong issuer / untrusted key / alg=none tokens, the catalog scope, and a
# cross-repository mount that needs pull on its source.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

PY=/usr/bin/python3 # Debian's python3 with python3-jwt and python3-cryptography
"$PY" -c 'import jwt, cryptography' 2>/dev/null || {
    echo "missing: python3-jwt and python3-cryptography for $PY (Debian: python3-jwt python3-cryptography)" >&2
    exit 1
}
use_skopeo podman
ISSUER="$(dirname "$0")/token_issuer.py"

# ---- the issuer's keys: an RSA one (the issuer signs with it) and a P-256 one (minted tokens)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/rsa.key" -out "$T/rsa.crt" -days 2 \
    -subj /CN=token-issuer-rsa 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ec.key" \
    -out "$T/ec.crt" -days 2 -subj /CN=token-issuer-ec 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rogue.key" 2>/dev/null
cat "$T/rsa.crt" "$T/ec.crt" >"$T/certs.pem"

cat >"$T/policy.json" <<'EOF'
{"users": {"alice": {"password": "alice-pass", "allow": {"demo/*": ["pull", "push", "delete"],
                                                         "team/*": ["pull", "push"]},
                     "catalog": true},
           "bob": {"password": "bob-pass", "allow": {"demo/*": ["pull"]}},
           "carol": {"password": "carol-pass", "allow": {"scratch/*": ["pull", "push"]}}},
 "anonymous": {"allow": {}}}
EOF
"$PY" "$ISSUER" serve --key "$T/rsa.key" --alg RS256 --issuer cmk-test-issuer \
    --policy "$T/policy.json" --port-file "$T/issuer.port" 2>"$T/issuer.err" &
ISSUER_PID=$!
on_exit 'kill $ISSUER_PID 2>/dev/null; wait $ISSUER_PID 2>/dev/null'
wait_for 30 test -s "$T/issuer.port" || {
    cat "$T/issuer.err" >&2
    exit 1
}
REALM="http://127.0.0.1:$(cat "$T/issuer.port")/token"
SVC=cmk-test-registry

# ---- option checks
expect_exit 2 cmk serve --listen 127.0.0.1:0 --auth-token-realm "$REALM"
expect_err_match 'together' "token options are given together"
printf 'x:y\n' >"$T/bad.htpasswd"
chmod 600 "$T/bad.htpasswd"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --auth-token-realm "$REALM" --auth-token-service "$SVC" \
    --auth-token-issuer cmk-test-issuer --auth-token-certs "$T/certs.pem" --htpasswd "$T/bad.htpasswd"
expect_err_match 'excludes --htpasswd' "token authentication excludes --htpasswd"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --auth-token-realm "$REALM" --auth-token-service "$SVC" \
    --auth-token-issuer cmk-test-issuer --auth-token-certs "$T/rsa.key"
expect_err_match 'private key' "a certificate file holding a private key is refused"
expect_false "... without printing it" grep -q 'BEGIN' "$ERR"
: >"$T/empty.pem"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --auth-token-realm "$REALM" --auth-token-service "$SVC" \
    --auth-token-issuer cmk-test-issuer --auth-token-certs "$T/empty.pem"
expect_err_match 'no PEM certificate' "an empty certificate file is refused"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --auth-token-realm 'ftp://x' --auth-token-service "$SVC" \
    --auth-token-issuer cmk-test-issuer --auth-token-certs "$T/certs.pem"
expect_err_match 'http:// or https://' "a realm that is not an http(s) URL is refused"

start_server tok --auth-token-realm "$REALM" --auth-token-service "$SVC" \
    --auth-token-issuer cmk-test-issuer --auth-token-certs "$T/certs.pem"
expect_true "the server says it takes tokens from the issuer" \
    grep -q "^Authentication: Bearer tokens from $REALM (2 trusted key(s))" "$SRV_OUT"

# ---- challenges
st=$(hcurl "$T/r" "$URL/v2/")
expect_eq "$st" 401 "GET /v2/ without a token: 401"
expect_eq "$(hdr_of "$T/r.h" WWW-Authenticate)" "Bearer realm=\"$REALM\",service=\"$SVC\"" \
    "/v2/ challenge names realm and service"
st=$(hcurl "$T/r" "$URL/v2/demo/app/manifests/v1")
expect_eq "$st" 401 "manifest GET without a token: 401"
expect_eq "$(hdr_of "$T/r.h" WWW-Authenticate)" \
    "Bearer realm=\"$REALM\",service=\"$SVC\",scope=\"repository:demo/app:pull\"" \
    "the challenge names the pull scope"
expect_json '.errors[0].code == "UNAUTHORIZED"' "body: UNAUTHORIZED" "$T/r"
st=$(hcurl "$T/r" -X POST "$URL/v2/demo/app/blobs/uploads/")
expect_true "upload POST challenge: scope pull,push" \
    grep -q 'scope="repository:demo/app:pull,push"' "$T/r.h"
st=$(hcurl "$T/r" -X DELETE "$URL/v2/demo/app/manifests/sha256:$(printf '%064d' 0)")
expect_true "DELETE challenge: scope delete" grep -q 'scope="repository:demo/app:delete"' "$T/r.h"
st=$(hcurl "$T/r" "$URL/v2/_catalog")
expect_true "catalog challenge: scope registry:catalog:*" \
    grep -q 'scope="registry:catalog:\*"' "$T/r.h"

# ---- skopeo follows the challenge: alice pushes, bob pulls, bob cannot push
MD=$(mk_oci_layout "$T/img" token-seed 64 300)
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pass \
    "oci:$T/img:latest" "docker://$HP/demo/app:v1"
expect_true "the issuer was asked for alice's push scope" \
    grep -q 'alice granted .*"name": "demo/app", "actions": \["pull", "push"\]' "$T/issuer.err"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false --src-creds bob:bob-pass \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back:latest"
expect_eq "$(layout_manifest "$T/back")" "$MD" "bob pulls the same manifest digest"
same=1
for f in "$T"/img/blobs/sha256/*; do
    cmp -s "$f" "$T/back/blobs/sha256/$(basename "$f")" || same=0
done
expect_eq "$same" 1 "bob's pull: every blob byte-identical"
expect_exit 1 "${SK[@]}" copy --dest-tls-verify=false --dest-creds bob:bob-pass \
    "oci:$T/img:latest" "docker://$HP/demo/app:bob"
expect_err_match 'unauthorized|denied|authentication required' "bob cannot push (pull-only token)"
expect_exit 1 "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/demo/app:v1"
expect_err_match 'unauthorized|denied|authentication required' "anonymous cannot pull"
expect_exit 1 "${SK[@]}" inspect --raw --tls-verify=false --creds bob:wrong "docker://$HP/demo/app:v1"
expect_err_match 'unauthorized|401' "a wrong password at the issuer: refused"

# ---- podman: pull as bob, push as alice to another repository (mounts need pull on demo/app)
# podman wants a runroot path of at most 50 characters: a private one under /tmp.
PRUN=$(mktemp -d /tmp/cmkpm.XXXXXX)
on_exit 'rm -rf "$PRUN"'
PM=(podman --root "$T/podman/root" --runroot "$PRUN" --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend none)
export CONTAINERS_REGISTRIES_CONF="$T/registries.conf"
printf 'unqualified-search-registries = []\n' >"$CONTAINERS_REGISTRIES_CONF"
expect_ok "${PM[@]}" pull --tls-verify=false --creds bob:bob-pass "docker://$HP/demo/app:v1"
expect_ok "${PM[@]}" push --tls-verify=false --creds alice:alice-pass \
    "$HP/demo/app:v1" "docker://$HP/team/app:v1"
expect_ok "${SK[@]}" copy --src-tls-verify=false --src-creds alice:alice-pass \
    --dest-oci-accept-uncompressed-layers "docker://$HP/team/app:v1" "oci:$T/team:latest"
expect_true "podman's push pulls back: every blob hashes to its name" layout_verify "$T/team"
cfg=$(jq -r '.config.digest' "$T/img/blobs/sha256/${MD#sha256:}")
expect_true "podman's push carries the same config" test -f "$T/team/blobs/sha256/${cfg#sha256:}"
expect_exit 125 "${PM[@]}" pull --tls-verify=false --creds carol:carol-pass "docker://$HP/demo/app:v1"
expect_err_match 'unauthorized|denied|authentication required' "podman as carol: no pull on demo/app"

# ---- tokens made by hand
mint() { # KEY ALG ACCESS [mint options...]
    local key=$1 alg=$2 acc=$3
    shift 3
    "$PY" "$ISSUER" mint --key "$key" --alg "$alg" --issuer cmk-test-issuer --aud "$SVC" \
        --access "$acc" "$@"
}
PULL='[{"type":"repository","name":"demo/app","actions":["pull"]}]'
tok=$(mint "$T/ec.key" ES256 "$PULL")
st=$(hcurl "$T/r" -H "Authorization: Bearer $tok" "$URL/v2/demo/app/manifests/v1" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json')
expect_eq "$st" 200 "an ES256 token granting pull: manifest GET 200"
expect_true "... the manifest as pushed" cmp "$T/r" "$T/img/blobs/sha256/${MD#sha256:}"
st=$(hcurl "$T/r" -H "Authorization: Bearer $(mint "$T/rsa.key" RS256 "$PULL")" \
    "$URL/v2/demo/app/tags/list")
expect_eq "$st" 200 "an RS256 token granting pull: tags 200"
st=$(hcurl "$T/r" -X PUT -H "Authorization: Bearer $tok" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$T/img/blobs/sha256/${MD#sha256:}" "$URL/v2/demo/app/manifests/v2")
expect_eq "$st" 401 "a pull-only token cannot PUT a manifest: 401"
expect_eq "$(hdr_of "$T/r.h" WWW-Authenticate)" \
    "Bearer realm=\"$REALM\",service=\"$SVC\",scope=\"repository:demo/app:pull,push\",error=\"insufficient_scope\"" \
    "... with error=insufficient_scope and the scope needed"
expect_json '.errors[0].code == "UNAUTHORIZED" and .errors[0].detail[0].Action == "pull,push"' \
    "... and the access needed in the body" "$T/r"
st=$(hcurl "$T/r" -H "Authorization: Bearer $tok" "$URL/v2/demo/other/tags/list")
expect_eq "$st" 401 "a token for demo/app does not open demo/other"
bad() { # WHAT TOKEN
    local st
    st=$(hcurl "$T/r" -H "Authorization: Bearer $2" "$URL/v2/demo/app/tags/list")
    expect_eq "$st" 401 "$1: 401"
    expect_true "$1: error=invalid_token" grep -q 'error="invalid_token"' "$T/r.h"
}
bad "an expired token" "$(mint "$T/ec.key" ES256 "$PULL" --exp -120)"
bad "a token valid only later (nbf)" "$(mint "$T/ec.key" ES256 "$PULL" --nbf 600)"
bad "a token signed by an untrusted key" "$(mint "$T/rogue.key" RS256 "$PULL")"
bad "an alg=none token" "$(mint "$T/ec.key" ES256 "$PULL" --none)"
bad "a token for another service" "$("$PY" "$ISSUER" mint --key "$T/ec.key" --alg ES256 \
    --issuer cmk-test-issuer --aud other-registry --access "$PULL")"
bad "a token of another issuer" "$("$PY" "$ISSUER" mint --key "$T/ec.key" --alg ES256 \
    --issuer someone-else --aud "$SVC" --access "$PULL")"
bad "a truncated token" "${tok%?????}"
bad "garbage" "not.a.token"
expect_true "refusals are logged with the reason" grep -q 'token refused: the token has expired' "$SRV_ERR"
expect_false "no token is logged" grep -qF "$tok" "$SRV_ERR"
st=$(hcurl "$T/r" -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$PULL" --exp -30)" \
    "$URL/v2/demo/app/tags/list")
expect_eq "$st" 200 "expired 30 s ago: within the 60 s skew"

# ---- catalog
st=$(hcurl "$T/r" -H "Authorization: Bearer $tok" "$URL/v2/_catalog")
expect_eq "$st" 401 "catalog without registry:catalog:*: 401"
expect_true "... insufficient_scope" grep -q 'error="insufficient_scope"' "$T/r.h"
st=$(hcurl "$T/r" -H "Authorization: Bearer $(mint "$T/rsa.key" RS256 \
    '[{"type":"registry","name":"catalog","actions":["*"]}]')" "$URL/v2/_catalog")
expect_eq "$st" 200 "catalog with registry:catalog:*: 200"
expect_json '.repositories | index("demo/app") != null' "... lists demo/app" "$T/r"

# ---- a mount needs pull on its source
layer=$(jq -r '.layers[0].digest' "$T/img/blobs/sha256/${MD#sha256:}")
PUSHX='[{"type":"repository","name":"scratch/x","actions":["pull","push"]}]'
st=$(hcurl "$T/r" -X POST -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$PUSHX")" \
    "$URL/v2/scratch/x/blobs/uploads/?mount=$layer&from=demo/app")
expect_eq "$st" 202 "mount without pull on the source: a plain upload session (202)"
st=$(hcurl "$T/r" -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$PUSHX")" \
    -I "$URL/v2/scratch/x/blobs/$layer")
expect_eq "$st" 404 "... and the blob is not in scratch/x"
st=$(hcurl "$T/r" -X POST -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$PUSHX")" \
    "$URL/v2/scratch/x/blobs/uploads/?mount=$layer")
expect_eq "$st" 202 "mount without from under token auth: 202 (no store-wide search)"
BOTH='[{"type":"repository","name":"scratch/x","actions":["pull","push"]},{"type":"repository","name":"demo/app","actions":["pull"]}]'
st=$(hcurl "$T/r" -X POST -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$BOTH")" \
    "$URL/v2/scratch/x/blobs/uploads/?mount=$layer&from=demo/app")
expect_eq "$st" 201 "mount with pull on the source: 201"
st=$(hcurl "$T/r" -H "Authorization: Bearer $(mint "$T/ec.key" ES256 "$PUSHX")" \
    "$URL/v2/scratch/x/blobs/$layer")
expect_true "... the mounted blob reads back" cmp "$T/r" "$T/img/blobs/sha256/${layer#sha256:}"

stop_server TERM
expect_eq "$SRV_EXIT" 0 "the server stops cleanly"
