#!/usr/bin/env bash
# test_serve_concurrency.sh — 16 clients at once against one `cmkstore serve`: each pushes
# its own blobs (monolithic and chunked) and the same shared blobs into its own repository
# and into one shared repository, mounts, pushes a manifest, and pulls everything back,
# checking every digest. Then the server must still be up, with nothing in flight, every
# repository listed and every blob intact. Run under ASan too (the sanitizer build of
# tools/run.sh test).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

NCLIENTS=16
ROUNDS=${CMK_SERVE_ROUNDS:-2}
setup_cmk cc
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
start_server cc --store "$S" --quiet

mkdir -p "$T/data"
for i in 1 2 3 4; do gen_random "shared-$i" $((256 * 1024 + i * 1000)) "$T/data/shared-$i"; done
for c in $(seq 1 $NCLIENTS); do gen_random "own-$c" $((300 * 1024 + c * 7)) "$T/data/own-$c"; done

# worker N: writes "ok" or the failures to $T/w.N
worker() {
    local c=$1 r f d dm st loc repo="cc/client-$c" errs=0 half size
    local w="$T/w.$c" tmp="$T/tmp.$c"
    : >"$w"
    fail() {
        echo "client $c: $*" >>"$w"
        errs=$((errs + 1))
    }
    for r in $(seq 1 "$ROUNDS"); do
        # its own blob: monolithic on odd rounds, chunked on even ones
        f="$T/data/own-$c"
        d=$(oci_digest "$f")
        if [ $((r % 2)) -eq 1 ]; then
            st=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$f" \
                "$URL/v2/$repo/blobs/uploads/?digest=$d")
            [ "$st" == 201 ] || fail "round $r: monolithic push: $st"
        else
            loc=$(curl -s -o /dev/null -D - -X POST "$URL/v2/$repo/blobs/uploads/" |
                sed -n 's/^[Ll]ocation: *//p' | tr -d '\r')
            size=$(stat -c %s "$f")
            half=$((size / 2))
            slice "$f" 0 "$half" >"$tmp.1"
            slice "$f" "$half" $((size - half)) >"$tmp.2"
            st=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -H "Content-Range: 0-$((half - 1))" \
                --data-binary "@$tmp.1" "$URL$loc")
            [ "$st" == 202 ] || fail "round $r: PATCH: $st"
            st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$tmp.2" \
                "$URL$loc?digest=$d")
            [ "$st" == 201 ] || fail "round $r: chunked PUT: $st"
        fi
        # the shared blobs, pushed by everyone into the shared repository and its own
        for f in "$T"/data/shared-*; do
            d=$(oci_digest "$f")
            for rp in cc/shared "$repo"; do
                st=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$f" \
                    "$URL/v2/$rp/blobs/uploads/?digest=$d")
                [ "$st" == 201 ] || fail "round $r: shared push to $rp: $st"
            done
        done
        # a mount from the shared repository into a per-round repository
        dm=$(oci_digest "$T/data/shared-1")
        st=$(curl -s -o /dev/null -w '%{http_code}' -X POST \
            "$URL/v2/$repo/r$r/blobs/uploads/?mount=$dm&from=cc/shared")
        [ "$st" == 201 ] || fail "round $r: mount: $st"
        # a manifest naming its blob and a shared one
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
            "$(oci_digest "$T/data/shared-2")" "$(stat -c %s "$T/data/shared-2")" \
            "$(oci_digest "$T/data/own-$c")" "$(stat -c %s "$T/data/own-$c")" >"$tmp.m"
        st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
            -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
            --data-binary "@$tmp.m" "$URL/v2/$repo/manifests/round-$r")
        [ "$st" == 201 ] || fail "round $r: manifest push: $st"
        # pull everything back and check the digests
        for f in "$T/data/own-$c" "$T"/data/shared-*; do
            d=$(oci_digest "$f")
            for rp in "$repo" cc/shared; do
                [ "$rp" == cc/shared ] && [[ $f == *own-* ]] && continue
                st=$(curl -s -o "$tmp.pull" -w '%{http_code}' "$URL/v2/$rp/blobs/$d")
                [ "$st" == 200 ] || fail "round $r: pull $d from $rp: $st"
                [ "$(oci_digest "$tmp.pull")" == "$d" ] || fail "round $r: pulled $d from $rp: wrong digest"
            done
        done
        st=$(curl -s -o "$tmp.pull" -w '%{http_code}' "$URL/v2/$repo/manifests/round-$r")
        [ "$st" == 200 ] || fail "round $r: manifest pull: $st"
        cmp -s "$tmp.pull" "$tmp.m" || fail "round $r: manifest differs"
        st=$(curl -s -o "$tmp.pull" -w '%{http_code}' "$URL/v2/$repo/r$r/blobs/$dm")
        [ "$st" == 200 ] || fail "round $r: mounted blob: $st"
    done
    [ "$errs" -eq 0 ] && echo ok >"$w"
    return 0
}

# Runs FUNC for clients 1..NCLIENTS at once and waits for all of them; sets bad to the number
# of clients whose result file $T/PREFIX.<client> does not say ok, showing their first lines.
run_clients() {
    local fn=$1 prefix=$2 c p pids=()
    for c in $(seq 1 $NCLIENTS); do
        "$fn" "$c" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    bad=0
    for c in $(seq 1 $NCLIENTS); do
        if [ "$(cat "$T/$prefix.$c" 2>/dev/null)" != ok ]; then
            bad=$((bad + 1))
            head -5 "$T/$prefix.$c" 2>/dev/null | sed 's/^/#   /'
        fi
    done
}

run_clients worker w
echo "# clients finished after $((SECONDS - T_START)) s"
expect_eq "$bad" 0 "$NCLIENTS clients x $ROUNDS rounds: every push, mount and pull verified"

# ---- deletes racing pushes of the same blob: each client pushes blob X into its own
# repository, reads it back and deletes it, over and over, while the others do the same. A
# delete in one repository must never lose the blob another repository has just linked
# (a delete only unlinks); once every repository has dropped it, a collection frees it.
gen_random gc-shared 200000 "$T/data/gc"
DGC=$(oci_digest "$T/data/gc")
gc_worker() {
    local c=$1 k st w="$T/g.$c" tmp="$T/gtmp.$c" errs=0
    : >"$w"
    for k in 1 2 3 4 5 6; do
        st=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$T/data/gc" \
            "$URL/v2/cc/gc-$c/blobs/uploads/?digest=$DGC")
        [ "$st" == 201 ] || { echo "client $c: push $k: $st" >>"$w"; errs=$((errs + 1)); }
        st=$(curl -s -o "$tmp" -w '%{http_code}' "$URL/v2/cc/gc-$c/blobs/$DGC")
        [ "$st" == 200 ] && [ "$(oci_digest "$tmp")" == "$DGC" ] ||
            { echo "client $c: read $k after push: $st" >>"$w"; errs=$((errs + 1)); }
        st=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$URL/v2/cc/gc-$c/blobs/$DGC")
        [ "$st" == 202 ] || { echo "client $c: delete $k: $st" >>"$w"; errs=$((errs + 1)); }
    done
    [ "$errs" -eq 0 ] && echo ok >"$w"
    return 0
}
run_clients gc_worker g
expect_eq "$bad" 0 "$NCLIENTS clients pushing, reading and deleting one blob: never collected under a live link"
expect_true "deletes only unlink: the blob is still stored" test -e "$(blob_file "$S" "$DGC")"

expect_true "the server is still running" kill -0 "$SRV_PID"
B=$T/body
expect_eq "$(hcurl "$B" "$URL/metrics")" 200 "metrics"
expect_true "nothing in flight but this request" grep -q '^cmkstore_http_requests_in_flight 1' "$B"
expect_true "no upload session left open" grep -q '^cmkstore_uploads_in_progress 0' "$B"
expect_true "no 5xx answered" bash -c "! grep -Eq '^cmkstore_http_requests_total\{[^}]*code=\"5' '$B'"
hcurl "$B" "$URL/v2/_catalog" >/dev/null
expect_json ".repositories | length == $((NCLIENTS * (ROUNDS + 1) + 1))" "catalog lists every repository" "$B"
hcurl "$B" "$URL/v2/cc/client-7/tags/list" >/dev/null
expect_json ".tags | length == $ROUNDS" "a client's tags are all there" "$B"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
expect_false "no sanitizer report" grep -q 'Sanitizer' "$SRV_ERR"
# Every stored blob still verifies (the CLI opens the store on its own).
cmk blob ls --store "$S" >"$T/ls" 2>/dev/null || true
n=0
while read -r d; do
    cmk blob verify --store "$S" "$d" >/dev/null 2>&1 || {
        n=$((n + 1))
        echo "# blob $d does not verify"
    }
done < <(jq -r '.. | strings | select(startswith("sha256:"))' "$T/ls" | sort -u)
expect_eq "$n" 0 "every stored blob verifies after the run"
expect_true "the store holds the blobs" test "$(jq -r '.. | strings | select(startswith("sha256:"))' "$T/ls" | sort -u | wc -l)" -ge $((NCLIENTS + 4))
# Last (it frees every blob that only links held): once no repository links it, a
# collection frees the deleted blob.
expect_ok cmk registry gc --store "$S" --grace 0
expect_true "once no repository links it, registry gc collects it" test ! -e "$(blob_file "$S" "$DGC")"
