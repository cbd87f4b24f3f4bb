#!/usr/bin/env bash
# test_serve_gc.sh — garbage collection, quotas and read-only mode with real clients: skopeo
# pushes two images sharing layers; a manifest DELETE only unlinks; `registry gc` frees
# exactly the deleted image's own blobs (manifest, config, unique layer) and the other image
# still pulls byte for byte; an upload in progress while gc runs (even with no grace) loses
# nothing, nor does a pushed blob whose manifest is still to come (grace); deleting a
# repository's last manifest and collecting removes it from the catalog; `serve
# --gc-interval`; `registry stats`; --quota-repo / --quota-total refuse with 403 DENIED
# before the body is stored; --read-only serves pulls and refuses pushes and deletes (405).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

use_skopeo
B=$T/body
code() { jq -r ".errors[0].code" "$1" 2>/dev/null; }

S=$T/store
expect_ok cmk create --store "$S"
start_server gc --store "$S"

# Two images sharing their first two layers (same seed, same leading sizes).
MA=$(mk_oci_layout "$T/imga" gcseed 64 32 16)
MB=$(mk_oci_layout "$T/imgb" gcseed 64 32 48 16)
blobs_of() { (cd "$1/blobs/sha256" && for f in *; do echo "sha256:$f"; done) | sort; }
blobs_of "$T/imga" >"$T/a.list"
blobs_of "$T/imgb" >"$T/b.list"
comm -23 "$T/a.list" "$T/b.list" >"$T/a-only.list"
expect_eq "$(comm -12 "$T/a.list" "$T/b.list" | wc -l)" 2 "the two images share two layers"
expect_eq "$(wc -l <"$T/a-only.list")" 3 "image a has three blobs of its own (manifest, config, a layer)"

for img in a b; do
    expect_ok "${SK[@]}" copy --preserve-digests --dest-tls-verify=false \
        "oci:$T/img$img:latest" "docker://$HP/gc/app:$img"
done
expect_ok cmk registry gc --store "$S" --grace 0 --dry-run
expect_json '.dry_run == true and .blobs_freed == 0' "gc --dry-run: nothing to free while both are tagged"

# ---- a manifest DELETE only unlinks; gc frees exactly a's own blobs
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/gc/app/manifests/$MA")" 202 "DELETE image a's manifest: 202"
expect_true "... its blob is still stored (DELETE only unlinks)" test -e "$(blob_file "$S" "$MA")"
expect_ok cmk registry gc --store "$S" --dry-run
expect_json '.blobs_freed == 0 and .blobs_young == 1' "gc --dry-run with the default grace (1 h): nothing goes (links and the unlinked manifest are young)"
expect_ok cmk registry gc --store "$S" --grace 0 --dry-run
jq -r '.freed[]' "$OUT" | sort >"$T/dry.list"
expect_true "gc --dry-run --grace 0 names exactly a's own blobs" cmp "$T/dry.list" "$T/a-only.list"
expect_true "... and removes nothing" test -e "$(blob_file "$S" "$MA")"
expect_ok cmk registry gc --store "$S" --grace 0
cp "$OUT" "$T/gc1.json"
jq -r '.freed[]' "$T/gc1.json" | sort >"$T/freed.list"
expect_true "registry gc freed exactly a's own blobs" cmp "$T/freed.list" "$T/a-only.list"
want_bytes=0
while read -r d; do want_bytes=$((want_bytes + $(stat -c %s "$T/imga/blobs/sha256/${d#sha256:}"))); done <"$T/a-only.list"
expect_json ".blobs_freed == 3 and .bytes_freed == $want_bytes and .stored_bytes_freed > 0" \
    "... reported as JSON: 3 blobs, $want_bytes bytes" "$T/gc1.json"
expect_json '.orphans_deleted == 0 and .orphan_bytes_deleted == 0 and .orphan_uploads_aborted == 0' \
    "... and a directory store has no orphaned objects to sweep" "$T/gc1.json"
while read -r d; do
    expect_exit 3 cmk blob stat --store "$S" "$d"
done <"$T/a-only.list"
while read -r d; do
    expect_ok cmk blob stat --store "$S" "$d"
done <"$T/b.list"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    "docker://$HP/gc/app:b" "oci:$T/backb:latest"
expect_eq "$(layout_manifest "$T/backb")" "$MB" "image b pulls under its digest after gc"
same=1
while read -r d; do
    cmp -s "$T/imgb/blobs/sha256/${d#sha256:}" "$T/backb/blobs/sha256/${d#sha256:}" || same=0
done <"$T/b.list"
expect_eq "$same" 1 "... every blob byte for byte"
expect_false "image a is gone" "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/gc/app:a"

# ---- gc during a push: an upload session open (one chunk sent) while gc runs with no grace
gen_random inflight 700000 "$T/inflight"
DI=$(oci_digest "$T/inflight")
head -c 300000 "$T/inflight" >"$T/part1"
tail -c +300001 "$T/inflight" >"$T/part2"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/gc/live/blobs/uploads/")" 202 "start an upload"
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/part1" -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-299999" "$URL$LOC")" 202 "... first chunk"
LOC=$(hdr_of "$B.h" Location)
expect_ok cmk registry gc --store "$S" --grace 0
expect_json '.blobs_freed == 0' "gc while the upload is open frees nothing"
expect_eq "$(hcurl "$B" -X PUT --data-binary "@$T/part2" -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 300000-699999" "$URL$LOC?digest=$DI")" 201 "... the upload completes after gc"
# Pushed, manifest still to come: the default grace keeps it.
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$T/cfg"
DC=$(oci_digest "$T/cfg")
expect_eq "$(push_blob gc/live "$T/cfg")" 201 "push a config"
expect_ok cmk registry gc --store "$S"
expect_json '.blobs_freed == 0' "gc with the default grace keeps pushed blobs whose manifest is still to come"
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":700000}]}' \
    "$MT" "$DC" "$(stat -c %s "$T/cfg")" "$DI" >"$T/live.json"
DL=$(oci_digest "$T/live.json")
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/live.json" \
    "$URL/v2/gc/live/manifests/v1")" 201 "... then its manifest is pushed"
expect_ok cmk registry gc --store "$S" --grace 0
expect_json '.blobs_freed == 0' "gc (no grace) keeps everything the manifest names"
expect_eq "$(hcurl "$B" "$URL/v2/gc/live/blobs/$DI")" 200 "the layer uploaded during gc pulls"
expect_true "... byte for byte" cmp "$B" "$T/inflight"

# ---- stats: exact after a collection that no push overlapped (a server writes its usage
# increments within a second, and when it stops)
stop_server
expect_eq "$SRV_EXIT" 0 "server stops"
expect_ok cmk registry gc --store "$S" --grace 0
expect_json '.blobs_freed == 0' "gc with the server stopped frees nothing more"
expect_ok cmk registry stats --store "$S"
expect_json '.repositories_count == 2 and ([.repositories[].name] == ["gc/app","gc/live"]) and .bytes > 700000 and .blobs == '"$(( $(wc -l <"$T/b.list") + 3 ))" \
    "registry stats: repositories, bytes and blobs"
expect_json '(.repositories[] | select(.name == "gc/live") | .bytes) == 700000 + '"$(stat -c %s "$T/cfg") + $(stat -c %s "$T/live.json")" \
    "... a repository's unique bytes"
start_server gc2 --store "$S"
expect_eq "$(hcurl "$B" "$URL/metrics")" 200 "metrics"
expect_true "... show the stored bytes" grep -Eq "^cmkstore_registry_stored_bytes $(jq -r .bytes "$OUT")\$" "$B"

# ---- repository deletion: delete its last manifest, collect
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/gc/live/manifests/$DL")" 202 "DELETE gc/live's only manifest"
hcurl "$B" "$URL/v2/_catalog" >/dev/null
expect_json '.repositories == ["gc/app","gc/live"]' "... the repository stays (its links) until gc" "$B"
expect_ok cmk registry gc --store "$S" --grace 0
expect_json '.blobs_freed == 3 and .repositories_removed == 1' "gc frees its three blobs and the repository"
hcurl "$B" "$URL/v2/_catalog" >/dev/null
expect_json '.repositories == ["gc/app"]' "... which left the catalog" "$B"
expect_eq "$(hcurl "$B" "$URL/v2/gc/live/tags/list")" 404 "... and its tags list is 404"
stop_server
expect_eq "$SRV_EXIT" 0 "server stops"

# ---- serve --gc-interval collects by itself
start_server gcint --store "$S" --gc-interval 1 --gc-grace 0
expect_true "it says so at start" grep -q '^Garbage collection every 1 s' "$SRV_OUT"
gen_random orphan 5000 "$T/orphan"
DO=$(oci_digest "$T/orphan")
expect_eq "$(push_blob gc/orphan "$T/orphan")" 201 "push a blob no manifest names"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/gc/orphan/blobs/$DO")" 202 "... and unlink it"
blob_gone() { ! "$CMKSTORE_BIN" blob stat --store "$S" "$DO" >/dev/null 2>&1; }
expect_true "the periodic gc collects it" wait_for 60 blob_gone
hcurl "$B" "$URL/metrics" >/dev/null
expect_true "metrics count gc runs" grep -Eq '^cmkstore_registry_gc_runs_total [1-9]' "$B"
expect_ok "${SK[@]}" inspect --raw --tls-verify=false "docker://$HP/gc/app:b"
expect_true "image b survives the periodic gc" cmp "$OUT" "$T/imgb/blobs/sha256/${MB#sha256:}"
stop_server
expect_eq "$SRV_EXIT" 0 "server stops"

# ---- quotas (unique bytes: b holds its 5 blobs)
USED=$(jq -r '.bytes' <("$CMKSTORE_BIN" registry stats --store "$S"))
start_server quota --store "$S" --quota-repo 300K --quota-total "$((USED + 250000))"
gen_random big 300000 "$T/big"
DBIG=$(oci_digest "$T/big")
expect_eq "$(push_blob gc/q "$T/big")" 403 "a blob past --quota-total: 403"
expect_eq "$(code "$T/.push")" DENIED "... DENIED"
expect_true "... the message names the quota" grep -q 'quota-total' "$T/.push"
expect_exit 3 cmk blob stat --store "$S" "$DBIG"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/gc/q/blobs/uploads/")" 202 "a chunked upload starts"
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/big" -H 'Content-Type: application/octet-stream' \
    "$URL$LOC")" 403 "... its chunk past the quota: 403 before the body is read"
expect_eq "$(code "$B")" DENIED "... DENIED"
gen_random small 200000 "$T/small"
expect_eq "$(push_blob gc/q "$T/small")" 201 "a blob within the quotas: 201"
gen_random small2 200000 "$T/small2"
expect_eq "$(push_blob gc/q "$T/small2")" 403 "the repository's next blob passes --quota-repo (300K): 403"
expect_true "... naming the repository quota" grep -q 'quota-repo' "$T/.push"
expect_eq "$(push_blob gc/q "$T/small")" 201 "the same blob again adds nothing (unique bytes): 201"
expect_eq "$(hcurl "$B" "$URL/metrics")" 200 "metrics"
expect_true "... count the refusals" grep -Eq '^cmkstore_registry_quota_refusals_total 3$' "$B"
expect_true "... show the quota" grep -q '^cmkstore_registry_quota_bytes{scope="repository"} 307200$' "$B"
stop_server

# ---- read-only
start_server ro --store "$S" --read-only
expect_true "it says so at start" grep -q '^Read-only mode' "$SRV_OUT"
expect_ok "${SK[@]}" copy --preserve-digests --src-tls-verify=false \
    "docker://$HP/gc/app:b" "oci:$T/rob:latest"
expect_eq "$(layout_manifest "$T/rob")" "$MB" "read-only: pulls work"
expect_eq "$(push_blob gc/app "$T/orphan")" 405 "read-only: a push gets 405"
expect_eq "$(code "$T/.push")" UNSUPPORTED "... UNSUPPORTED"
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/gc/app/manifests/b")" 405 "read-only: a delete gets 405"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/gc/app/blobs/uploads/")" 405 "read-only: an upload start gets 405"
expect_false "read-only: skopeo cannot push" "${SK[@]}" copy --dest-tls-verify=false \
    "oci:$T/imga:latest" "docker://$HP/gc/app:a2"
expect_eq "$(hcurl "$B" "$URL/v2/gc/app/manifests/a2")" 404 "... and nothing was stored"
stop_server
expect_eq "$SRV_EXIT" 0 "server stops"


