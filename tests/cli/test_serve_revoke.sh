#!/usr/bin/env bash
# test_serve_revoke.sh — key lifecycle while `cmkstore serve` runs (embedded default, key
# check every second): delete the identity's access policy and every content request fails
# with 503 and a body naming the cause (polled, up to 30 s); /metrics shows the revocation;
# restore the policy and the same server serves again; a new key version is picked up by
# automatic rotation and old content stays readable. One server process throughout.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

start_server srv --key-check-interval 1 --rotation-check-interval 1
PID0=$SRV_PID
PRINCIPAL=$(cmk identity show --name registry-identity | jq -r .principalId)
B=$T/body

gen_random rv 150000 "$T/b1"
D1=$(oci_digest "$T/b1")
printf '{"a":1}' >"$T/cfg"
DC=$(oci_digest "$T/cfg")
expect_eq "$(push_blob rv/app "$T/b1")" 201 "push a layer"
expect_eq "$(push_blob rv/app "$T/cfg")" 201 "push a config"
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":150000}]}' \
    "$MT" "$DC" "$D1" >"$T/m"
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m" "$URL/v2/rv/app/manifests/v1")" 201 "push a manifest"

blob_status() { hcurl "$B" "$URL/v2/rv/app/blobs/$D1"; }
is_status() { [ "$(blob_status)" == "$1" ]; }

expect_eq "$(blob_status)" 200 "pull works before revocation"

# ---- revoke: delete the identity's access policy
expect_ok cmk vault delete-policy --name registry-vault --object-id "$PRINCIPAL"
if wait_for 30 is_status 503; then ok "pulls fail with 503 within 30 s of the revocation"; else
    not_ok "pulls still answer $(blob_status) 30 s after the revocation"; fi
blob_status >/dev/null
expect_json '.errors[0].code == "UNAVAILABLE"' "... error code UNAVAILABLE" "$B"
expect_json '.errors[0].message | test("key-encryption key")' "... the message names the key" "$B"
expect_json '.errors[0].message | test("denied|permission|policy"; "i")' "... and the denial" "$B"
expect_json '.errors[0].detail.error == "CMK_E_KEY_DENIED"' "... detail CMK_E_KEY_DENIED" "$B"
expect_true "... Retry-After" grep -qi '^Retry-After:' "$B.h"
expect_eq "$(hcurl "$B" "$URL/v2/rv/app/manifests/v1")" 503 "manifest GET: 503"
expect_eq "$(hcurl "$B" "$URL/v2/rv/app/tags/list")" 503 "tags list: 503"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 503 "catalog: 503"
gen_random rv2 1000 "$T/b2"
expect_eq "$(push_blob rv/app "$T/b2")" 503 "push: 503"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/rv/app/blobs/uploads/")" 503 "upload session: 503"
expect_eq "$(hcurl "$B" "$URL/metrics")" 200 "metrics still answer"
expect_true "... cmkstore_key_revoked 1" grep -q '^cmkstore_key_revoked 1' "$B"
expect_true "... cmkstore_key_accessible 0" grep -q '^cmkstore_key_accessible 0' "$B"

# ---- restore
expect_ok cmk vault set-policy --name registry-vault --object-id "$PRINCIPAL" \
    --key-permissions get wrapKey unwrapKey
if wait_for 30 is_status 200; then ok "pulls work again within 30 s of the restore"; else
    not_ok "pulls still answer $(blob_status) 30 s after the restore"; fi
blob_status >/dev/null
expect_true "... same bytes" cmp "$B" "$T/b1"
expect_eq "$(hcurl "$B" "$URL/v2/rv/app/manifests/v1")" 200 "manifest GET works again"
expect_true "... same bytes" cmp "$B" "$T/m"
expect_eq "$(push_blob rv/app "$T/b2")" 201 "push works again"
hcurl "$B" "$URL/metrics" >/dev/null
expect_true "metrics: cmkstore_key_revoked 0" grep -q '^cmkstore_key_revoked 0' "$B"

# ---- automatic rotation: a new key version is adopted while serving
old=$(grep '^  key version' "$SRV_OUT" | awk '{print $3}')
expect_ok cmk vault key create --vault-name registry-vault --name registry-key
new=$(jq -r .key.kid "$OUT")
rotated() {
    hcurl "$B" "$URL/metrics" >/dev/null
    grep -Eq '^cmkstore_key_rotations_total [1-9]' "$B"
}
if wait_for 30 rotated; then ok "metrics count the automatic rotation"; else
    not_ok "no rotation counted 30 s after a new key version"; fi
expect_false "the new key version differs" test "$old" == "$new"
expect_true "cmkstore_key_info names the new version" grep -q "versioned_key_identifier=\"$new\"" "$B"
expect_eq "$(blob_status)" 200 "old content readable after the rotation"
expect_true "... same bytes" cmp "$B" "$T/b1"

expect_eq "$SRV_PID" "$PID0" "one server process throughout"
expect_true "... still running" kill -0 "$SRV_PID"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
