#!/usr/bin/env bash
# test_serve_skopeo.sh — `cmkstore serve` with a real client: skopeo pushes a hand-made
# multi-layer OCI image (gzip layers and an uncompressed one) to the embedded default,
# copies it back to a new layout and inspects it (digests identical); the same image with
# zstd recompression; a copy between repositories (cross-repository mount); tags survive a
# restart; nothing of the names, tags or content is in the store's files in plaintext.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

use_skopeo

# ---- first run: the embedded default is created
start_server srv1
expect_true "first run says it created the embedded default" grep -q '^Created the embedded default' "$SRV_OUT"
expect_true "first run names the key" grep -q 'local://registry-vault/keys/registry-key' "$SRV_OUT"
expect_true "first run prints the skopeo push command" grep -q '^Try: skopeo copy' "$SRV_OUT"
expect_true "the store exists under CMKSTORE_HOME" test -f "$CMKSTORE_HOME/registry/store.json"

MD=$(mk_oci_layout "$T/img" skopeo-seed 64 300 200)
expect_true "source layout is consistent" layout_verify "$T/img"

# ---- zstd first (while the server knows none of the blobs, so skopeo cannot reuse the
# uncompressed layer): skopeo compresses the uncompressed layer with zstd on the way
expect_ok "${SK[@]}" copy --dest-tls-verify=false --dest-compress-format zstd \
    --digestfile "$T/zstd.digest" "oci:$T/img:latest" "docker://$HP/demo/app:zstd"
ZD=$(cat "$T/zstd.digest")
expect_ok "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/demo/app:zstd"
cp "$OUT" "$T/zstd.manifest"
expect_eq "$(oci_digest "$T/zstd.manifest")" "$ZD" "zstd manifest served under its digest"
expect_true "zstd push has a zstd layer" \
    jq -e '[.layers[].mediaType] | index("application/vnd.oci.image.layer.v1.tar+zstd") != null' \
    "$T/zstd.manifest"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    "docker://$HP/demo/app:zstd" "oci:$T/backz:latest"
expect_eq "$(layout_manifest "$T/backz")" "$ZD" "zstd image pulled back under the same digest"
expect_true "zstd pulled layout: every blob hashes to its name" layout_verify "$T/backz"
zstd_layer=$(jq -r '.layers[] | select(.mediaType | endswith("+zstd")) | .digest' \
    "$T/zstd.manifest" | head -1)
expect_true "zstd layer is a zstd frame" \
    bash -c "head -c4 '$T/backz/blobs/sha256/${zstd_layer#sha256:}' | od -An -tx1 | grep -q '28 b5 2f fd'"

# ---- push with digests preserved (the uncompressed layer stays uncompressed)
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false \
    --digestfile "$T/pushed.digest" "oci:$T/img:latest" "docker://$HP/demo/app:v1"
expect_eq "$(cat "$T/pushed.digest")" "$MD" "pushed manifest digest = source digest"
expect_ok "${SK[@]}" inspect --tls-verify=false "docker://$HP/demo/app:v1"
expect_json ".Digest == \"$MD\"" "skopeo inspect: same digest"
expect_json "[.Layers[]] == $(jq -c '[.layers[].digest]' "$T/img/blobs/sha256/${MD#sha256:}")" \
    "skopeo inspect: same layers"
expect_ok "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/demo/app:v1"
expect_true "raw manifest is byte-identical" cmp "$OUT" "$T/img/blobs/sha256/${MD#sha256:}"

# ---- pull back into a new layout
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back:latest"
expect_eq "$(layout_manifest "$T/back")" "$MD" "pulled layout names the same manifest digest"
expect_true "pulled layout: every blob hashes to its name" layout_verify "$T/back"
same=1
for f in "$T"/img/blobs/sha256/*; do
    cmp -s "$f" "$T/back/blobs/sha256/$(basename "$f")" || same=0
done
expect_eq "$same" 1 "every source blob came back byte-identical"
expect_true "the uncompressed layer is still application/vnd.oci.image.layer.v1.tar" \
    jq -e '[.layers[].mediaType] | index("application/vnd.oci.image.layer.v1.tar") != null' \
    "$T/back/blobs/sha256/${MD#sha256:}"

# ---- copy between repositories of the server (skopeo mounts the blobs it knows)
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
    "docker://$HP/demo/app:v1" "docker://$HP/team/other:copy"
expect_ok "${SK[@]}" inspect --tls-verify=false "docker://$HP/team/other:copy"
expect_json ".Digest == \"$MD\"" "copied between repositories: same digest"
expect_true "the copy used cross-repository mounts" \
    grep -Eq 'POST /v2/team/other/blobs/uploads/ 201 in=0 ' "$SRV_ERR"

expect_ok "${SK[@]}" list-tags --tls-verify=false "docker://$HP/demo/app"
expect_json '.Tags | sort == ["v1", "zstd"]' "list-tags: v1 and zstd"

# ---- plaintext: no repository name, tag or content in any file of the store
strings_hit=0
for needle in demo/app team/other skopeo-seed 'layer 1 line' zstd; do
    if grep -rqa -- "$needle" "$CMKSTORE_HOME/registry"; then
        strings_hit=1
        echo "# found '$needle' in the store in plaintext"
    fi
done
expect_eq "$strings_hit" 0 "no repository name, tag, config or layer text in the store's files"

# ---- restart: everything is still there, the default is reused
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
start_server srv2
expect_true "second run reuses the embedded default" grep -q '^Using the embedded default' "$SRV_OUT"
rm -rf "$T/back2"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    --dest-oci-accept-uncompressed-layers "docker://$HP/demo/app:v1" "oci:$T/back2:latest"
expect_eq "$(layout_manifest "$T/back2")" "$MD" "after a restart: same digest"
expect_true "after a restart: blobs verify" layout_verify "$T/back2"
stop_server TERM

# ---- a real client through Basic authentication
printf 'pw-for-skopeo\n' | cmk serve-passwd ci --iterations 10000 >"$T/htpasswd"
chmod 600 "$T/htpasswd"
start_server srv3 --htpasswd "$T/htpasswd"
expect_exit 1 "${SK[@]}" inspect --tls-verify=false "docker://$HP/demo/app:v1"
expect_err_match 'unauthorized|authentication required|401' "skopeo without credentials is refused"
expect_ok "${SK[@]}" inspect --tls-verify=false --creds ci:pw-for-skopeo "docker://$HP/demo/app:v1"
expect_json ".Digest == \"$MD\"" "skopeo with Basic credentials: same digest"
expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false --dest-creds ci:pw-for-skopeo \
    "oci:$T/img:latest" "docker://$HP/demo/authed:1"
stop_server TERM
expect_false "the password is not in the log" grep -q pw-for-skopeo "$SRV_ERR"

# ---- static bearer tokens: clients send them up front (skopeo --registry-token)
printf 'skopeo-token-0123456789\n' >"$T/tokens"
chmod 600 "$T/tokens"
start_server srv4 --token-file "$T/tokens"
expect_exit 1 "${SK[@]}" inspect --tls-verify=false "docker://$HP/demo/app:v1"
expect_ok "${SK[@]}" inspect --tls-verify=false --registry-token skopeo-token-0123456789 \
    "docker://$HP/demo/app:v1"
expect_json ".Digest == \"$MD\"" "skopeo with a bearer token: same digest"
stop_server TERM
expect_false "the token is not in the log" grep -q skopeo-token "$SRV_ERR"
