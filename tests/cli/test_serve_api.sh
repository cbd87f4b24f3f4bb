#!/usr/bin/env bash
# test_serve_api.sh — every endpoint of `cmkstore serve` with curl, against an explicit store
# (identity, vault, policy, key, `cmkstore create`): ping; blob HEAD/GET with Range; uploads
# (monolithic, chunked, out-of-order chunk, status, cancel, bad digest); cross-repository
# mount and its fallback; manifests by tag and digest (types, headers, unknown blobs, bad
# JSON, bad digest); tags pagination; referrers with filter; catalog; deletes and blob
# collection; the spec's error codes; metrics; limits; Basic and bearer authentication.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

expect_exit 2 cmk serve --listen nonsense
expect_err_match 'ADDR:PORT' "a bad --listen is a usage error"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --max-uploads 0
expect_exit 3 cmk serve --store "$T/nope" --listen 127.0.0.1:0
expect_err_match 'cannot open the store' "a missing store is named"
expect_ok cmk serve --help
expect_true "serve --help lists --max-blob-size" grep -q -- '--max-blob-size' "$OUT"

setup_cmk api
S=$T/store
expect_ok cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID"
start_server api --store "$S"
B=$T/body

# code FILE: the first error code of a spec error body.
code() { jq -r '.errors[0].code' "$1" 2>/dev/null; }

# ---- ping and routing
expect_eq "$(hcurl "$B" "$URL/v2/")" 200 "GET /v2/ is 200"
expect_eq "$(hdr_of "$B.h" Docker-Distribution-API-Version)" "registry/2.0" "API version header"
expect_eq "$(hcurl "$B" -I "$URL/v2/")" 200 "HEAD /v2/ is 200"
expect_eq "$(hcurl "$B" "$URL/v3/")" 404 "unknown path is 404"
expect_eq "$(hcurl "$B" "$URL/v2/Bad_Name/tags/list")" 400 "upper-case name is 400"
expect_eq "$(code "$B")" NAME_INVALID "... NAME_INVALID"
expect_eq "$(hcurl "$B" "$URL/v2/a//b/tags/list")" 400 "empty path component is 400"
expect_eq "$(hcurl "$B" "$URL/v2/nosuch/tags/list")" 404 "tags of an unknown repository: 404"
expect_eq "$(code "$B")" NAME_UNKNOWN "... NAME_UNKNOWN"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/r/manifests/x")" 405 "POST on a manifest: 405"
expect_eq "$(code "$B")" UNSUPPORTED "... UNSUPPORTED"

# ---- monolithic blob upload, HEAD, GET, Range
gen_random blob1 300000 "$T/b1"
D1=$(oci_digest "$T/b1")
expect_eq "$(push_blob app/one "$T/b1")" 201 "monolithic POST ?digest= is 201"
expect_eq "$(hdr_of "$T/.push.h" Location)" "/v2/app/one/blobs/$D1" "... Location"
expect_eq "$(hdr_of "$T/.push.h" Docker-Content-Digest)" "$D1" "... Docker-Content-Digest"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/blobs/$D1")" 200 "HEAD blob is 200"
expect_eq "$(hdr_of "$B.h" Content-Length)" 300000 "HEAD: Content-Length is the size"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$D1" "HEAD: Docker-Content-Digest"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/$D1")" 200 "GET blob is 200"
expect_true "GET blob: same bytes" cmp "$B" "$T/b1"
expect_eq "$(hcurl "$B" -H 'Range: bytes=1000-66535' "$URL/v2/app/one/blobs/$D1")" 206 "Range a-b: 206"
expect_eq "$(hdr_of "$B.h" Content-Range)" "bytes 1000-66535/300000" "... Content-Range"
expect_true "... the bytes of the range" cmp "$B" <(slice "$T/b1" 1000 65536)
expect_eq "$(hcurl "$B" -H 'Range: bytes=299990-' "$URL/v2/app/one/blobs/$D1")" 206 "Range a-: 206"
expect_true "... the last 10 bytes" cmp "$B" <(slice "$T/b1" 299990 10)
expect_eq "$(hcurl "$B" -H 'Range: bytes=-5000' "$URL/v2/app/one/blobs/$D1")" 206 "Range -n: 206"
expect_true "... the suffix" cmp "$B" <(slice "$T/b1" 295000 5000)
expect_eq "$(hcurl "$B" -H 'Range: bytes=300000-' "$URL/v2/app/one/blobs/$D1")" 416 "Range past the end: 416"
expect_eq "$(hdr_of "$B.h" Content-Range)" "bytes */300000" "... Content-Range */size"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/sha256:1234")" 400 "malformed digest: 400"
expect_eq "$(code "$B")" DIGEST_INVALID "... DIGEST_INVALID"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/sha256:$(printf '%064d' 0)")" 404 "unknown blob: 404"
expect_eq "$(code "$B")" BLOB_UNKNOWN "... BLOB_UNKNOWN"
expect_eq "$(hcurl "$B" "$URL/v2/app/two/blobs/$D1")" 404 "a blob of another repository is unknown here"

# Wrong digest: refused, nothing stored.
gen_random blob-bad 5000 "$T/bad"
expect_eq "$(hcurl "$B" -X POST --data-binary "@$T/bad" "$URL/v2/app/one/blobs/uploads/?digest=sha256:xyz")" 400 \
    "POST with a malformed digest: 400"
WRONG="sha256:$(printf 'wrong' | sha256sum | cut -d' ' -f1)"
expect_eq "$(hcurl "$B" -X POST --data-binary "@$T/bad" "$URL/v2/app/one/blobs/uploads/?digest=$WRONG")" 400 \
    "POST with a digest that does not match: 400"
expect_eq "$(code "$B")" DIGEST_INVALID "... DIGEST_INVALID"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/blobs/$(oci_digest "$T/bad")")" 404 "... the content was not stored"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/blobs/$WRONG")" 404 "... nor under the claimed digest"

# ---- chunked upload
gen_random blob2 200000 "$T/b2"
D2=$(oci_digest "$T/b2")
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/one/blobs/uploads/")" 202 "POST starts a session: 202"
LOC=$(hdr_of "$B.h" Location)
expect_true "... Location of the session" grep -Eq '^/v2/app/one/blobs/uploads/[0-9a-f]{32}$' <<<"$LOC"
slice "$T/b2" 0 70000 >"$T/c1"
slice "$T/b2" 70000 70000 >"$T/c2"
slice "$T/b2" 140000 60000 >"$T/c3"
expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-69999' \
    --data-binary "@$T/c1" "$URL$LOC")" 202 "PATCH chunk 1: 202"
expect_eq "$(hdr_of "$B.h" Range)" "0-69999" "... Range 0-69999"
expect_eq "$(hcurl "$B" "$URL$LOC")" 204 "GET upload status: 204"
expect_eq "$(hdr_of "$B.h" Range)" "0-69999" "... Range 0-69999"
expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Range: 100-69999' --data-binary "@$T/c2" "$URL$LOC")" 416 \
    "PATCH out of order: 416"
expect_eq "$(hdr_of "$B.h" Range)" "0-69999" "... the session still ends at 69999"
expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Range: 70000-139999' --data-binary "@$T/c2" "$URL$LOC")" 202 \
    "PATCH chunk 2: 202"
expect_eq "$(hcurl "$B" -X PUT -H 'Content-Range: 140000-199999' --data-binary "@$T/c3" \
    "$URL$LOC?digest=$D2")" 201 "PUT with the last chunk: 201"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$D2" "... Docker-Content-Digest"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/$D2")" 200 "chunked blob: GET 200"
expect_true "... same bytes" cmp "$B" "$T/b2"
expect_eq "$(hcurl "$B" "$URL$LOC")" 404 "the finished session is gone"
expect_eq "$(code "$B")" BLOB_UPLOAD_UNKNOWN "... BLOB_UPLOAD_UNKNOWN"

# Chunked upload finished with the wrong digest, and a cancelled one.
hcurl "$B" -X POST "$URL/v2/app/one/blobs/uploads/" >/dev/null
LOC=$(hdr_of "$B.h" Location)
hcurl "$B" -X PATCH --data-binary "@$T/c1" "$URL$LOC" >/dev/null
expect_eq "$(hcurl "$B" -X PUT "$URL$LOC?digest=$WRONG")" 400 "PUT with a wrong digest: 400"
expect_eq "$(code "$B")" DIGEST_INVALID "... DIGEST_INVALID"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/blobs/$(oci_digest "$T/c1")")" 404 "... nothing stored"
expect_eq "$(hcurl "$B" -X PUT "$URL/v2/app/one/blobs/uploads/$(printf '%032d' 7)?digest=$D2")" 404 \
    "PUT on an unknown session: 404"
hcurl "$B" -X POST "$URL/v2/app/one/blobs/uploads/" >/dev/null
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PUT "$URL$LOC")" 400 "PUT without ?digest=: 400"
expect_eq "$(hcurl "$B" -X DELETE "$URL$LOC")" 204 "DELETE cancels a session: 204"
expect_eq "$(hcurl "$B" "$URL$LOC")" 404 "... it is gone"

# ---- cross-repository mount
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/two/blobs/uploads/?mount=$D1&from=app/one")" 201 "mount: 201"
expect_eq "$(hdr_of "$B.h" Location)" "/v2/app/two/blobs/$D1" "... Location in the target"
expect_eq "$(hcurl "$B" "$URL/v2/app/two/blobs/$D1")" 200 "mounted blob readable in the target"
expect_true "... same bytes" cmp "$B" "$T/b1"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/three/blobs/uploads/?mount=$D1&from=nosuch/repo")" 202 \
    "mount from a repository without the blob: 202 (a session)"
expect_eq "$(hcurl "$B.x" -X DELETE "$URL$(hdr_of "$B.h" Location)")" 204 "... cancelled (else saved at the stop)"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/three/blobs/uploads/?mount=sha256:$(printf '%064d' 1)")" 202 \
    "automatic mount of an unknown blob: 202"
expect_eq "$(hcurl "$B.x" -X DELETE "$URL$(hdr_of "$B.h" Location)")" 204 "... cancelled (else saved at the stop)"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/three/blobs/uploads/?mount=$D2")" 201 \
    "automatic mount (no from) of a known blob: 201"

# ---- manifests
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$T/cfg"
DC=$(oci_digest "$T/cfg")
push_blob app/one "$T/cfg" >/dev/null
mk_manifest() { # config-digest config-size layer-digest layer-size
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' "$@"
}
mk_manifest "$DC" "$(stat -c %s "$T/cfg")" "$D1" 300000 >"$T/m1"
DM=$(oci_digest "$T/m1")
MT=application/vnd.oci.image.manifest.v1+json
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/v1")" 201 \
    "PUT manifest by tag: 201"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$DM" "... Docker-Content-Digest"
expect_eq "$(hdr_of "$B.h" Location)" "/v2/app/one/manifests/$DM" "... Location"
expect_eq "$(hcurl "$B" -H "Accept: $MT" "$URL/v2/app/one/manifests/v1")" 200 "GET manifest by tag: 200"
expect_true "... same bytes" cmp "$B" "$T/m1"
expect_eq "$(hdr_of "$B.h" Content-Type)" "$MT" "... Content-Type is the media type"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$DM" "... Docker-Content-Digest"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/manifests/$DM")" 200 "HEAD manifest by digest: 200"
expect_eq "$(hdr_of "$B.h" Content-Length)" "$(stat -c %s "$T/m1")" "... Content-Length"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/nosuchtag")" 404 "unknown tag: 404"
expect_eq "$(code "$B")" MANIFEST_UNKNOWN "... MANIFEST_UNKNOWN"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/sha256:$(printf '%064d' 2)")" 404 "unknown digest: 404"
mk_manifest "$DC" "$(stat -c %s "$T/cfg")" "$D2" 200000 >"$T/m-missing"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m-missing" "$URL/v2/app/two/manifests/x")" 400 \
    "manifest naming blobs the repository lacks: 400"
expect_eq "$(code "$B")" MANIFEST_BLOB_UNKNOWN "... MANIFEST_BLOB_UNKNOWN"
expect_eq "$(hcurl "$B" "$URL/v2/app/two/manifests/x")" 404 "... and it was not stored"
printf '{"schemaVersion": 2, "layers": [' >"$T/m-bad"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m-bad" "$URL/v2/app/one/manifests/bad")" 400 \
    "manifest that is not JSON: 400"
expect_eq "$(code "$B")" MANIFEST_INVALID "... MANIFEST_INVALID"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/$WRONG")" 400 \
    "PUT by a digest that does not match: 400"
expect_eq "$(code "$B")" DIGEST_INVALID "... DIGEST_INVALID"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/$DM")" 201 \
    "PUT by its own digest: 201"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/.bad")" 400 \
    "PUT to an invalid tag: 400"

# ---- tags pagination
for t in t1 t2 t3 t4 t5; do
    hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/$t" >/dev/null
done
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list")" 200 "tags list: 200"
expect_json '.name == "app/one" and .tags == ["t1","t2","t3","t4","t5","v1"]' "... all tags, sorted" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list?n=2")" 200 "tags ?n=2: 200"
expect_json '.tags == ["t1","t2"]' "... first page" "$B"
expect_eq "$(hdr_of "$B.h" Link)" '</v2/app/one/tags/list?n=2&last=t2>; rel="next"' "... Link to the next page"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list?n=2&last=t4")" 200 "tags ?n=2&last=t4: 200"
expect_json '.tags == ["t5","v1"]' "... last page" "$B"
expect_eq "$(hdr_of "$B.h" Link)" "" "... no Link on the last page"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list?n=0")" 200 "tags ?n=0: 200"
expect_json '.tags == []' "... empty" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list?n=x")" 400 "tags ?n=x: 400"

# ---- referrers
printf '{}' >"$T/empty"
DE=$(oci_digest "$T/empty")
push_blob app/one "$T/empty" >/dev/null
AT=application/vnd.example.signature
printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"%s","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2}],"subject":{"mediaType":"%s","digest":"%s","size":%s},"annotations":{"org.example":"sig"}}' \
    "$MT" "$AT" "$DE" "$DE" "$MT" "$DM" "$(stat -c %s "$T/m1")" >"$T/sig"
DS=$(oci_digest "$T/sig")
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/sig" "$URL/v2/app/one/manifests/$DS")" 201 \
    "PUT a referrer by digest: 201"
expect_eq "$(hdr_of "$B.h" OCI-Subject)" "$DM" "... OCI-Subject"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/referrers/$DM")" 200 "referrers: 200"
expect_eq "$(hdr_of "$B.h" Content-Type)" "application/vnd.oci.image.index.v1+json" "... an OCI index"
expect_json ".manifests | length == 1 and .[0].digest == \"$DS\" and .[0].artifactType == \"$AT\" and .[0].annotations[\"org.example\"] == \"sig\"" \
    "... names the referrer with its artifactType and annotations" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/referrers/$DM?artifactType=$AT")" 200 "referrers filtered: 200"
expect_eq "$(hdr_of "$B.h" OCI-Filters-Applied)" artifactType "... OCI-Filters-Applied"
expect_json '.manifests | length == 1' "... the referrer matches" "$B"
hcurl "$B" "$URL/v2/app/one/referrers/$DM?artifactType=application/other" >/dev/null
expect_json '.manifests == []' "... another type matches nothing" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/referrers/sha256:$(printf '%064d' 3)")" 200 "referrers of an unknown subject: 200"
expect_json '.manifests == []' "... empty" "$B"

# ---- catalog
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 200 "catalog: 200"
expect_json '.repositories == ["app/one","app/three","app/two"]' "... every repository, sorted" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog?n=1&last=app/one")" 200 "catalog ?n=1&last=: 200"
expect_json '.repositories == ["app/three"]' "... the page" "$B"
expect_eq "$(hdr_of "$B.h" Link)" '</v2/_catalog?n=1&last=app/three>; rel="next"' "... Link"

# ---- deletes
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/one/manifests/t5")" 202 "DELETE a tag: 202"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/t5")" 404 "... the tag is gone"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/t4")" 200 "... other tags stay"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/one/manifests/t5")" 404 "DELETE an unknown tag: 404"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/one/manifests/$DS")" 202 "DELETE the referrer by digest: 202"
hcurl "$B" "$URL/v2/app/one/referrers/$DM" >/dev/null
expect_json '.manifests == []' "... referrers are empty again" "$B"
expect_true "... a DELETE only unlinks: its stored blob stays until a collection" test -e "$(blob_file "$S" "$DS")"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/one/manifests/$DM")" 202 "DELETE the manifest by digest: 202"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/v1")" 404 "... its tags are gone"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/manifests/$DM")" 404 "... and the manifest"
expect_true "the shared blob is still stored" test -e "$(blob_file "$S" "$D1")"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/one/blobs/$D1")" 202 "DELETE a blob: 202"
expect_eq "$(hcurl "$B" -I "$URL/v2/app/one/blobs/$D1")" 404 "... unknown in that repository"
expect_eq "$(hcurl "$B" "$URL/v2/app/two/blobs/$D1")" 200 "... still readable where it is mounted"
expect_true "... still stored" test -e "$(blob_file "$S" "$D1")"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/two/blobs/$D1")" 202 "DELETE it from the last repository: 202"
expect_true "... still stored until a collection" test -e "$(blob_file "$S" "$D1")"
expect_ok cmk registry gc --store "$S" --grace 0
expect_json '.blobs_freed >= 2 and (.freed | index("'"$D1"'") != null) and (.freed | index("'"$DS"'") != null)' \
    "registry gc (beside the server) frees the unlinked blob and the deleted referrer" "$OUT"
expect_true "... the blob is collected" test ! -e "$(blob_file "$S" "$D1")"
expect_true "... the referrer's blob too" test ! -e "$(blob_file "$S" "$DS")"
expect_eq "$(push_blob app/one "$T/b2")" 201 "a collected blob (no manifest named it) is pushed again"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/app/two/blobs/$D1")" 404 "DELETE an unknown blob: 404"
expect_eq "$(code "$B")" BLOB_UNKNOWN "... BLOB_UNKNOWN"

# ---- metrics
expect_eq "$(hcurl "$B" "$URL/metrics")" 200 "GET /metrics: 200"
expect_true "... Prometheus text" grep -q '^# TYPE cmkstore_http_requests_total counter' "$B"
expect_true "... counts requests" grep -Eq '^cmkstore_http_requests_total\{method="GET",code="200"\} [1-9]' "$B"
expect_true "... bytes in" grep -Eq '^cmkstore_http_request_bytes_total [1-9]' "$B"
expect_true "... bytes out" grep -Eq '^cmkstore_http_response_bytes_total [1-9]' "$B"
expect_true "... key accessible" grep -q '^cmkstore_key_accessible 1' "$B"
expect_true "... not revoked" grep -q '^cmkstore_key_revoked 0' "$B"
expect_true "... key checks and rotations" grep -q '^cmkstore_key_rotations_total ' "$B"

# ---- the log: one line per request, no secrets
expect_true "request log lines" grep -Eq ' 127\.0\.0\.1 PUT /v2/app/one/manifests/v1 201 ' "$SRV_ERR"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"

# ---- limits
start_server lim --store "$S" --max-uploads 2 --max-manifest-size 1K --max-blob-size 100K --quiet
expect_eq "$(push_blob lim "$T/b2")" 413 "monolithic blob beyond --max-blob-size: 413"
expect_eq "$(code "$T/.push")" SIZE_INVALID "... SIZE_INVALID"
expect_eq "$(hcurl "$B" -I "$URL/v2/lim/blobs/$D2")" 404 "... nothing stored"
hcurl "$B" -X POST "$URL/v2/lim/blobs/uploads/" >/dev/null
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH -H 'Transfer-Encoding: chunked' --data-binary "@$T/b2" "$URL$LOC")" 413 \
    "chunked-encoded PATCH growing past --max-blob-size: 413"
expect_eq "$(hcurl "$B" "$URL$LOC")" 404 "... the session is discarded"
hcurl "$B" -X POST "$URL/v2/lim/blobs/uploads/" >/dev/null
hcurl "$B" -X POST "$URL/v2/lim/blobs/uploads/" >/dev/null
expect_eq "$(hcurl "$B" -X POST "$URL/v2/lim/blobs/uploads/")" 429 "upload sessions beyond --max-uploads: 429"
expect_eq "$(code "$B")" TOOMANYREQUESTS "... TOOMANYREQUESTS"
python3 -c 'import json; print(json.dumps({"schemaVersion": 2, "annotations": {"x": "y" * 2000}}))' >"$T/big"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/big" "$URL/v2/lim/manifests/big")" 413 \
    "manifest beyond --max-manifest-size: 413"
stop_server TERM

# ---- authentication
printf 's3cret-pass\n' | cmk serve-passwd alice --iterations 10000 >"$T/htpasswd"
expect_true "serve-passwd writes a PBKDF2 line" grep -Eq '^alice:\$pbkdf2-sha256\$10000\$' "$T/htpasswd"
expect_false "... without the password" grep -q s3cret-pass "$T/htpasswd"
printf 'tok-0123456789abcdef-xyz\n' >"$T/tokens"
chmod 644 "$T/htpasswd"
expect_exit 6 cmk serve --store "$S" --listen 127.0.0.1:0 --htpasswd "$T/htpasswd"
expect_err_match 'group|others|0600|mode' "a readable htpasswd file is refused"
chmod 600 "$T/htpasswd" "$T/tokens"
start_server auth --store "$S" --htpasswd "$T/htpasswd" --token-file "$T/tokens"
expect_eq "$(hcurl "$B" "$URL/v2/")" 401 "no credentials: 401"
expect_eq "$(code "$B")" UNAUTHORIZED "... UNAUTHORIZED"
expect_true "... Basic challenge" grep -qi '^WWW-Authenticate: Basic realm=' "$B.h"
expect_eq "$(hcurl "$B" -u alice:wrong "$URL/v2/")" 401 "wrong password: 401"
expect_eq "$(hcurl "$B" -u bob:s3cret-pass "$URL/v2/")" 401 "unknown user: 401"
expect_eq "$(hcurl "$B" -u alice:s3cret-pass "$URL/v2/")" 200 "Basic: 200"
expect_eq "$(hcurl "$B" -u alice:s3cret-pass "$URL/v2/app/one/blobs/$D2")" 200 "Basic: content readable"
expect_eq "$(hcurl "$B" -H 'Authorization: Bearer tok-0123456789abcdef-xyz' "$URL/v2/")" 200 "Bearer: 200"
expect_eq "$(hcurl "$B" -H 'Authorization: Bearer tok-0123456789abcdef-xyZ' "$URL/v2/")" 401 "wrong token: 401"
expect_eq "$(hcurl "$B" "$URL/metrics")" 401 "/metrics needs credentials too"
stop_server TERM
expect_false "no password or token in the log" grep -Eq 's3cret|tok-0123|Authorization' "$SRV_ERR"
