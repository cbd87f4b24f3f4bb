#!/usr/bin/env bash
# test_s3_registry.sh — `cmkstore serve` on a store in a Ceph RGW bucket (s3://), with real
# clients: skopeo pushes a multi-layer OCI image and pulls it back (digests and bytes
# identical), a copy between repositories (mounts), tags; the curl API (chunked upload,
# Range, tags, catalog, manifest by digest, error codes); tags survive a restart; nothing of
# the names, tags or content is in any object of the bucket in plaintext; objects tampered
# with in the bucket are refused on read (blob and metadata record) and repaired by a push;
# the gateway stopped: requests fail (503/5xx, nothing lost, the server keeps running) and
# work again once it is back.
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/../cli/serve_lib.sh"
source "$(dirname "$0")/s3_lib.sh"

use_skopeo

ceph_start
expect_eq "$(s3_mb reg)" 200 "a bucket"
S=s3://reg/prod
setup_cmk s3r
expect_ok cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID_NOVER"
start_server srv --store "$S" --key-check-interval 1
B=$T/body
code() { jq -r '.errors[0].code' "$1" 2>/dev/null; }

# ---- skopeo: push with digests preserved, pull back, inspect, copy between repositories
MD=$(mk_oci_layout "$T/img" s3-seed 64 9000 200)
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false \
    --digestfile "$T/pushed.digest" "oci:$T/img:latest" "docker://$HP/demo/app:v1"
expect_eq "$(cat "$T/pushed.digest")" "$MD" "skopeo push to the S3 store: the source digest"
expect_ok "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/demo/app:v1"
expect_true "raw manifest is byte-identical" cmp "$OUT" "$T/img/blobs/sha256/${MD#sha256:}"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back:latest"
expect_eq "$(layout_manifest "$T/back")" "$MD" "skopeo pull: the same manifest digest"
same=1
for f in "$T"/img/blobs/sha256/*; do
    cmp -s "$f" "$T/back/blobs/sha256/$(basename "$f")" || same=0
done
expect_eq "$same" 1 "every blob came back byte-identical (one layer of 9 MB: multipart)"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
    "docker://$HP/demo/app:v1" "docker://$HP/team/other:copied-tag"
expect_true "the copy used cross-repository mounts" \
    grep -Eq 'POST /v2/team/other/blobs/uploads/ 201 in=0 ' "$SRV_ERR"
expect_ok "${SK[@]}" list-tags --tls-verify=false "docker://$HP/team/other"
expect_json '.Tags == ["copied-tag"]' "list-tags of the copy"

# ---- the curl API
gen_random s3-chunked 3000000 "$T/chunked"
DCH=$(oci_digest "$T/chunked")
expect_eq "$(hcurl "$B" -X POST "$URL/v2/api/one/blobs/uploads/")" 202 "open an upload session"
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary @<(slice "$T/chunked" 0 1000000) \
    -H 'Content-Type: application/octet-stream' "$URL$LOC")" 202 "PATCH 1 MB"
expect_eq "$(hdr_of "$B.h" Range)" "0-999999" "... Range 0-999999"
LOC=$(hdr_of "$B.h" Location)
[[ $LOC == *\?* ]] && SEP='&' || SEP='?'
expect_eq "$(hcurl "$B" -X PUT --data-binary @<(slice "$T/chunked" 1000000 2000000) \
    -H 'Content-Type: application/octet-stream' "$URL$LOC${SEP}digest=$DCH")" 201 "PUT the rest: 201"
expect_eq "$(hcurl "$B" -I "$URL/v2/api/one/blobs/$DCH")" 200 "HEAD the blob"
expect_eq "$(hdr_of "$B.h" Content-Length)" 3000000 "... its size"
expect_eq "$(hcurl "$B" -H 'Range: bytes=2999000-' "$URL/v2/api/one/blobs/$DCH")" 206 "a Range at the end"
expect_true "... the right bytes" cmp "$B" <(slice "$T/chunked" 2999000 1000)
gen_random s3-wrong 5000 "$T/wrong"
expect_eq "$(hcurl "$B" -X POST --data-binary "@$T/wrong" \
    "$URL/v2/api/one/blobs/uploads/?digest=sha256:$(printf '%064d' 0)")" 400 "a wrong digest: 400"
expect_eq "$(code "$B")" DIGEST_INVALID "... DIGEST_INVALID"
expect_eq "$(hcurl "$B" -I "$URL/v2/api/one/blobs/$(oci_digest "$T/wrong")")" 404 "... nothing stored"
printf '{"architecture":"amd64","os":"linux"}' >"$T/cfg"
expect_eq "$(push_blob api/one "$T/cfg")" 201 "push a config"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":3000000}]}' \
    "$(oci_digest "$T/cfg")" "$(stat -c %s "$T/cfg")" "$DCH" >"$T/m1"
DM=$(oci_digest "$T/m1")
MT=application/vnd.oci.image.manifest.v1+json
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/api/one/manifests/first-tag")" 201 \
    "put a manifest tagged first-tag"
expect_eq "$(hcurl "$B" "$URL/v2/api/one/manifests/$DM")" 200 "GET it by digest"
expect_true "... byte-identical" cmp "$B" "$T/m1"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$DM" "... Docker-Content-Digest"
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%064d","size":1},"layers":[]}' \
    "$MT" 7 >"$T/m-unknown"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m-unknown" "$URL/v2/api/one/manifests/bad")" 400 \
    "a manifest naming an unknown blob: 400"
expect_eq "$(code "$B")" MANIFEST_BLOB_UNKNOWN "... MANIFEST_BLOB_UNKNOWN"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 200 "catalog"
expect_json '.repositories == ["api/one","demo/app","team/other"]' "... every repository" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/api/one/tags/list")" 200 "tags"
expect_json '.tags == ["first-tag"]' "... first-tag" "$B"

# ---- restart: tags and content are still there
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
start_server srv2 --store "$S" --key-check-interval 1
expect_ok "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/demo/app:v1"
expect_true "after a restart: the manifest by tag" cmp "$OUT" "$T/img/blobs/sha256/${MD#sha256:}"
expect_eq "$(hcurl "$B" "$URL/v2/api/one/blobs/$DCH")" 200 "... and the chunked blob"
expect_true "... whole" cmp "$B" "$T/chunked"

# ---- plaintext: nothing of names, tags or content in any object of the bucket
mkdir -p "$T/objects"
s3_keys reg >"$T/keys"
n=0
while read -r k; do
    n=$((n + 1))
    s3_req "$T/objects/$n" GET "/reg/$k" >/dev/null
done <"$T/keys"
expect_true "the bucket holds objects ($n)" test "$n" -gt 5
hits=0
for needle in demo/app team/other api/one s3-seed 'layer 1 line' '"architecture"' first-tag copied-tag; do
    if grep -rqaF -- "$needle" "$T/objects"; then
        hits=$((hits + 1))
        echo "# found '$needle' in the bucket in plaintext"
    fi
done
expect_eq "$hits" 0 "no repository name, tag, config or layer text in any object"
expect_false "no object key names a repository or tag" grep -qE 'demo|team|api|first-tag|copied-tag' "$T/keys"

# ---- tamper: a blob object and a metadata record changed in the bucket
HEX=${DCH#sha256:}
key=$(grep -x "prod/blobs/sha256/$HEX" "$T/keys")
expect_eq "$(s3_req "$T/obj" GET "/reg/$key")" 200 "read the chunked blob's object"
if [ "$(head -c 8 "$T/obj")" = CMKSLINK ]; then
    key=prod/$(sed -n 2p "$T/obj")
    expect_eq "$(s3_req "$T/obj" GET "/reg/$key")" 200 "... a link: read its data object"
fi
python3 -c 'import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[len(b) // 2] ^= 1
open(sys.argv[1], "wb").write(b)' "$T/obj"
expect_eq "$(s3_req "$T/put" PUT "/reg/$key" "$T/obj")" 200 "flip one bit in the middle of it"
expect_exit 4 cmk blob verify --store "$S" "$DCH"
expect_err_match 'integrity|authentic|tamper|damaged' "blob verify: an integrity error"
rc=$(curl -sS -o "$B" -w '%{http_code}' "$URL/v2/api/one/blobs/$DCH" 2>/dev/null || true)
expect_false "GET of the tampered blob does not return it whole" cmp -s "$B" "$T/chunked"
echo "# GET of the tampered blob: HTTP $rc, $(stat -c %s "$B") bytes"
expect_eq "$(push_blob api/one "$T/chunked")" 201 "a push of the blob repairs it"
expect_ok cmk blob verify --store "$S" "$DCH"
expect_eq "$(hcurl "$B" "$URL/v2/api/one/blobs/$DCH")" 200 "... served whole again"
expect_true "... the same bytes" cmp "$B" "$T/chunked"

# Every metadata record is flipped (their names are keyed hashes: which one holds the catalog
# is not visible in the bucket, and that is the point), then put back.
mkeys=$(grep '^prod/meta/' "$T/keys")
n=0
for mkey in $mkeys; do
    n=$((n + 1))
    s3_req "$T/meta.$n.orig" GET "/reg/$mkey" >/dev/null
    python3 -c 'import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[min(60, len(b) - 1)] ^= 1
open(sys.argv[2], "wb").write(b)' "$T/meta.$n.orig" "$T/meta.$n"
    [ "$(s3_req "$T/put" PUT "/reg/$mkey" "$T/meta.$n")" == 200 ] || not_ok "flip one bit of $mkey"
done
expect_true "flipped one bit in each of the $n metadata records" test "$n" -gt 0
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 500 "the catalog: 500 (its record fails its check)"
expect_false "... nothing of the record leaks" grep -qE 'demo|team|api/one' "$B"
n=0
for mkey in $mkeys; do
    n=$((n + 1))
    [ "$(s3_req "$T/put" PUT "/reg/$mkey" "$T/meta.$n.orig")" == 200 ] || not_ok "put $mkey back"
done
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 200 "the records put back: the catalog again"
expect_json '.repositories == ["api/one","demo/app","team/other"]' "... whole" "$B"

# ---- the gateway stops: errors, nothing lost; it comes back: service resumes
expect_ok rgw_stop
c=$(hcurl "$B" "$URL/v2/api/one/blobs/$DCH")
expect_true "gateway stopped: a pull fails (HTTP $c)" test "$c" -ge 500
gen_random s3-down 200000 "$T/down"
c=$(push_blob api/one "$T/down")
expect_true "... a push fails (HTTP $c)" test "$c" -ge 500
expect_exit 1 cmk blob ls --store "$S"
expect_err_match '127\.0\.0\.1' "the CLI names the endpoint it cannot reach"
expect_true "the server keeps running" kill -0 "$SRV_PID"
expect_ok rgw_start
is_ok() { [ "$(hcurl "$B" "$URL/v2/api/one/blobs/$DCH")" = 200 ]; }
expect_true "gateway back: pulls work again" wait_for 60 is_ok
expect_true "... whole" cmp "$B" "$T/chunked"
expect_eq "$(push_blob api/one "$T/down")" 201 "... and pushes"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back2:latest"
expect_eq "$(layout_manifest "$T/back2")" "$MD" "nothing lost: the image pulls whole"
expect_true "... every blob hashes to its name" layout_verify "$T/back2"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
