#!/usr/bin/env bash
# test_serve_shared_store.sh — a served store and the processes beside the server: a second
# `serve` on the store serves beside the first; `blob rm` refuses a blob that
# registry repositories reference (naming them) unless --force, and removes it beside the
# server otherwise (no file lock: the collection protocol of registry_gc.h, whose races are
# tested in test_registry_policy). Also: a bind failure is reported
# once, with the real port; `n=0` listings carry no Link; a re-push over a damaged stored
# blob through the registry repairs it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

S=$T/store
expect_ok cmk create --store "$S"
start_server first --store "$S"
FIRST_URL=$URL
B=$T/body

# ---- a second server on the same store serves beside the first (front-ends sharing a
# store: test_serve_frontends.sh)
"$CMKSTORE_BIN" serve --store "$S" --listen 127.0.0.1:0 >"$T/second.out" 2>"$T/second.err" &
SECOND=$!
SRV_PIDS+=("$SECOND")
# It either exits or starts listening; both are final states.
wait_for 60 bash -c "! kill -0 $SECOND 2>/dev/null || grep -q '^Listening on' '$T/second.out'" || true
if grep -q '^Listening on' "$T/second.out"; then
    ok "a second server on the same store starts"
    SECOND_URL=$(sed -n 's|^Listening on \(http://[0-9.]*:[0-9]*\).*|\1|p' "$T/second.out" | head -1)
    expect_eq "$(hcurl "$B" "$SECOND_URL/v2/")" 200 "... and serves"
    kill -TERM "$SECOND"
    rc=0
    wait "$SECOND" || rc=$?
    expect_eq "$rc" 0 "... and stops cleanly"
else
    not_ok "a second server on the same store starts"
    sed 's/^/#   stderr: /' "$T/second.err"
fi
expect_eq "$(hcurl "$B" "$FIRST_URL/v2/")" 200 "the first server still serves"

# ---- a port in use: one error, with the port asked for
S2=$T/store2
expect_ok cmk create --store "$S2"
PORT=${HP#*:}
expect_exit 1 cmk serve --store "$S2" --listen "$HP"
expect_err_match "cannot listen on 127\.0\.0\.1:$PORT: Address already in use" \
    "a port in use is reported with that port"
expect_false "... and nothing about port 0" grep -qi 'port 0\|failed to bind' "$ERR"
expect_eq "$(grep -c . "$ERR")" 1 "... in one line"

# ---- n=0 listings: an empty page and no Link to themselves
gen_random b1 300000 "$T/b1"
D1=$(oci_digest "$T/b1")
expect_eq "$(push_blob app/one "$T/b1")" 201 "push a layer to app/one"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$T/cfg"
DC=$(oci_digest "$T/cfg")
expect_eq "$(push_blob app/one "$T/cfg")" 201 "push a config to app/one"
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":300000}]}' \
    "$MT" "$DC" "$(stat -c %s "$T/cfg")" "$D1" >"$T/m1"
DM=$(oci_digest "$T/m1")
expect_eq "$(hcurl "$B" -X PUT -H "Content-Type: $MT" --data-binary "@$T/m1" "$URL/v2/app/one/manifests/v1")" 201 \
    "put a manifest in app/one"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/app/two/blobs/uploads/?mount=$D1&from=app/one")" 201 \
    "mount the layer into app/two"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog?n=0")" 200 "catalog ?n=0: 200"
expect_json '.repositories == []' "... an empty page" "$B"
expect_eq "$(hdr_of "$B.h" Link)" "" "... and no Link"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/tags/list?n=0")" 200 "tags ?n=0: 200"
expect_json '.tags == []' "... an empty page" "$B"
expect_eq "$(hdr_of "$B.h" Link)" "" "... and no Link"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog?n=1")" 200 "catalog ?n=1 still paginates"
expect_true "... with a Link" test -n "$(hdr_of "$B.h" Link)"

# ---- blob rm and the registry's references
expect_exit 6 cmk blob rm --store "$S" "$D1"
expect_err_match 'repositories still reference it: app/one, app/two' \
    "blob rm of a referenced layer is refused, naming the repositories"
expect_err_match '\-\-force' "... and says how to override"
expect_ok cmk blob stat --store "$S" "$D1"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/$D1")" 200 "... the layer is still served"
expect_exit 6 cmk blob rm --store "$S" "$DM"
expect_err_match 'reference it: app/one' "blob rm of a manifest is refused too"
expect_exit 6 cmk blob rm --store "$S" "$DC"
expect_err_match 'reference it: app/one' "... and of a config"
gen_random loose 4000 "$T/loose"
expect_ok cmk blob put --store "$S" "$T/loose"
expect_ok cmk blob rm --store "$S" "$(oci_digest "$T/loose")"
expect_exit 3 cmk blob stat --store "$S" "$(oci_digest "$T/loose")"

# ---- a re-push through the registry repairs a damaged stored blob
HEX=${D1#sha256:}
python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(100000); b = f.read(1); f.seek(100000); f.write(bytes([b[0] ^ 1]))' \
    "$S/blobs/sha256/${HEX:0:2}/$HEX" || not_ok "the layer's file is there to damage"
expect_exit 4 cmk blob verify --store "$S" "$D1"
expect_eq "$(push_blob app/one "$T/b1")" 201 "re-push of the damaged layer: 201"
expect_ok cmk blob verify --store "$S" "$D1"
expect_eq "$(hcurl "$B" "$URL/v2/app/one/blobs/$D1")" 200 "... served again"
expect_true "... whole" cmp "$B" "$T/b1"

# ---- blob rm and collection beside the server: no file lock; a collection running (its
# state record) makes `blob rm` fail busy, and a removed blob can be pushed again.
gen_random rmwait 5000 "$T/rmwait"
DR=$(oci_digest "$T/rmwait")
expect_ok cmk blob put --store "$S" "$T/rmwait"
expect_ok cmk blob rm --store "$S" "$DR"
expect_exit 3 cmk blob stat --store "$S" "$DR"
expect_eq "$(push_blob app/three "$T/rmwait")" 201 "a removed blob is pushed again through the server"
expect_exit 6 cmk blob rm --store "$S" "$DR"
expect_err_match "app/three" "... and blob rm refuses it now, naming the repository"

stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly"
