#!/usr/bin/env bash
# test_serve_access.sh — per-repository access for Basic users (`serve --access FILE`) with
# skopeo and curl: groups, patterns (* within a path component, ** across), pull / push /
# delete on every route, the catalog, static tokens (only * rules), a cross-repository mount
# that needs pull on its source, and access files with mistakes refused with their line.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

use_skopeo

for u in alice bob carol dave; do
    printf '%s-pass\n' "$u" | cmk serve-passwd "$u" --iterations 10000 >>"$T/htpasswd"
done
printf 'static-token-0123456789abcdef\n' >"$T/tokens"
chmod 600 "$T/htpasswd" "$T/tokens"
cat >"$T/access" <<'EOF'
# developers own demo/ and everything below it
group devs alice
group devs dave
allow @devs demo/**   pull,push,delete
allow bob   demo/*    pull
allow carol scratch/* pull,push
allow *     public/*  pull
catalog alice
EOF

# ---- mistakes are refused with their line, and nothing starts
printf 'allow bob demo/* fly\n' >"$T/bad1"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --htpasswd "$T/htpasswd" --access "$T/bad1"
expect_err_match 'bad1 line 1: actions are' "an unknown action is refused with its line"
printf '# ok\n\nallow bob Demo/* pull\n' >"$T/bad2"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --htpasswd "$T/htpasswd" --access "$T/bad2"
expect_err_match 'bad2 line 3: a pattern' "an upper-case pattern is refused"
printf 'deny bob demo pull\n' >"$T/bad3"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --htpasswd "$T/htpasswd" --access "$T/bad3"
expect_err_match 'line 1: a statement starts with group, allow or catalog' "an unknown statement"
expect_exit 3 cmk serve --listen 127.0.0.1:0 --htpasswd "$T/htpasswd" --access "$T/missing"
expect_err_match 'cannot open' "a missing access file"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --access "$T/access"
expect_err_match 'htpasswd' "--access without users is refused"

start_server acl --htpasswd "$T/htpasswd" --token-file "$T/tokens" --access "$T/access"
expect_true "the server says how many rules it loaded" \
    grep -q "^Access: 5 rule(s) from $T/access" "$SRV_OUT"

# ---- skopeo: alice (group devs) pushes, bob pulls, bob cannot push, carol cannot pull
MD=$(mk_oci_layout "$T/img" access-seed 64 200)
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pass \
    "oci:$T/img:latest" "docker://$HP/demo/app:v1"
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false --dest-creds dave:dave-pass \
    "oci:$T/img:latest" "docker://$HP/demo/deep/er:v1"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false --src-creds bob:bob-pass \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back:latest"
expect_eq "$(layout_manifest "$T/back")" "$MD" "bob pulls the manifest alice pushed"
same=1
for f in "$T"/img/blobs/sha256/*; do
    cmp -s "$f" "$T/back/blobs/sha256/$(basename "$f")" || same=0
done
expect_eq "$same" 1 "bob's pull: every blob byte-identical"
expect_exit 1 "${SK[@]}" copy --dest-tls-verify=false --dest-creds bob:bob-pass \
    "oci:$T/img:latest" "docker://$HP/demo/app:bob"
expect_err_match 'denied' "bob cannot push to demo/app (pull only)"
expect_exit 1 "${SK[@]}" inspect --raw --tls-verify=false --creds bob:bob-pass \
    "docker://$HP/demo/deep/er:v1"
expect_err_match 'denied' "demo/* does not reach demo/deep/er for bob"
expect_exit 1 "${SK[@]}" inspect --raw --tls-verify=false --creds carol:carol-pass \
    "docker://$HP/demo/app:v1"
expect_err_match 'denied' "carol cannot pull demo/app"

# ---- every route, with curl
B() { printf 'Authorization: Basic %s' "$(printf '%s:%s-pass' "$1" "$1" | base64 -w0)"; }
layer=$(jq -r '.layers[0].digest' "$T/img/blobs/sha256/${MD#sha256:}")
route() { # WHO WANT WHAT CURL-ARGS...
    local who=$1 want=$2 what=$3 st
    shift 3
    st=$(hcurl "$T/r" -H "$(B "$who")" "$@")
    expect_eq "$st" "$want" "$who: $what"
}
route bob 200 "GET manifest" "$URL/v2/demo/app/manifests/v1"
route bob 200 "HEAD blob" -I "$URL/v2/demo/app/blobs/$layer"
route bob 200 "tags" "$URL/v2/demo/app/tags/list"
route bob 200 "referrers" "$URL/v2/demo/app/referrers/$MD"
route carol 403 "GET blob of demo/app" "$URL/v2/demo/app/blobs/$layer"
expect_json '.errors[0].code == "DENIED"' "... DENIED" "$T/r"
expect_true "... naming the access needed" grep -q 'pull on demo/app' "$T/r"
route carol 403 "tags of demo/app" "$URL/v2/demo/app/tags/list"
route carol 403 "referrers of demo/app" "$URL/v2/demo/app/referrers/$MD"
route bob 403 "upload POST" -X POST "$URL/v2/demo/app/blobs/uploads/"
route bob 403 "manifest PUT" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$T/img/blobs/sha256/${MD#sha256:}" "$URL/v2/demo/app/manifests/v2"
route bob 403 "manifest DELETE" -X DELETE "$URL/v2/demo/app/manifests/$MD"
route bob 403 "blob DELETE" -X DELETE "$URL/v2/demo/app/blobs/$layer"
# an upload session opened by alice is not bob's to continue or look at
st=$(hcurl "$T/r" -H "$(B alice)" -X POST "$URL/v2/demo/app/blobs/uploads/")
expect_eq "$st" 202 "alice opens an upload session"
loc=$(hdr_of "$T/r.h" Location)
route bob 403 "GET on alice's upload" "$URL$loc"
route bob 403 "PATCH on alice's upload" -X PATCH --data-binary 'x' "$URL$loc"
route bob 403 "DELETE on alice's upload" -X DELETE "$URL$loc"
route alice 204 "DELETE her upload" -X DELETE "$URL$loc"
route bob 200 "GET /v2/" "$URL/v2/"
route bob 403 "catalog" "$URL/v2/_catalog"
route alice 200 "catalog" "$URL/v2/_catalog"
expect_json '.repositories | index("demo/app") != null' "alice's catalog lists demo/app" "$T/r"
route dave 403 "catalog (not named on the catalog line)" "$URL/v2/_catalog"
st=$(hcurl "$T/r" -H 'Authorization: Bearer static-token-0123456789abcdef' "$URL/v2/demo/app/tags/list")
expect_eq "$st" 403 "a static token: only * rules apply (none for demo/)"
st=$(hcurl "$T/r" -H 'Authorization: Bearer static-token-0123456789abcdef' "$URL/v2/public/x/tags/list")
expect_eq "$st" 404 "a static token may pull public/* (the repository is unknown: 404)"
st=$(hcurl "$T/r" "$URL/v2/demo/app/tags/list")
expect_eq "$st" 401 "no credentials: 401 as before"

# ---- mounts need pull on the source
route carol 202 "mount from demo/app without pull there: a plain upload session" -X POST \
    "$URL/v2/scratch/x/blobs/uploads/?mount=$layer&from=demo/app"
expect_true "... logged as not allowed" grep -q 'mount not allowed' "$SRV_ERR"
route carol 404 "... and the blob is not in scratch/x" -I "$URL/v2/scratch/x/blobs/$layer"
route carol 202 "mount without from under access control: a plain upload session" -X POST \
    "$URL/v2/scratch/x/blobs/uploads/?mount=$layer"
route alice 201 "mount from demo/app with pull there" -X POST \
    "$URL/v2/demo/copy/blobs/uploads/?mount=$layer&from=demo/app"
route bob 200 "the mounted blob reads back" "$URL/v2/demo/copy/blobs/$layer"
expect_true "... byte for byte" cmp "$T/r" "$T/img/blobs/sha256/${layer#sha256:}"

# ---- delete is its own action
route alice 202 "manifest DELETE" -X DELETE "$URL/v2/demo/deep/er/manifests/$MD"

stop_server TERM
expect_eq "$SRV_EXIT" 0 "the server stops cleanly"
