# shellcheck shell=bash
# tests/cli/frontends_lib.sh — two `cmkstore serve` front-ends on one store (sourced after
# lib.sh and serve_lib.sh). frontends_suite STORE runs the checks on STORE, a directory or an
# s3:// store (test_serve_frontends.sh, tests/s3/test_s3_frontends.sh):
#
# - both start on the store (no "served already" refusal);
# - a push through one is pulled through the other;
# - concurrent pushes of the same blob, of manifests and of the same and different tags
#   through both lose nothing (every tag points at its manifest; the shared tag at one of
#   the manifests pushed; the blob stored once, intact);
# - an upload session is the front-end's own: the other answers 404 BLOB_UPLOAD_UNKNOWN and
#   the session still completes where it was opened;
# - a session that A saved while serving (--upload-save-after 0, polled in /metrics) is A's:
#   a front-end of another --instance starting beside A leaves it alone (404 there);
# - kill -9 of a front-end in the middle of a push leaves no blob visible through the other
#   or the CLI, and the front-end restarts on the store, with its saved session: GET answers
#   its Range, PUT completes it, pulled byte for byte through the other;
# - a key rotation made by one (automatic rotation on A only) is adopted by the other at its
#   next key check: it names the new version, and keeps serving once the old version is
#   disabled;
# - revocation (the access policy deleted) stops both; restore resumes both.

# fe_start NAME STORE [serve options...]: starts a front-end; sets FE_PID_<NAME>, FE_URL_<NAME>.
fe_start() {
    local name=$1 store=$2
    shift 2
    start_server "$name" --store "$store" --key-check-interval 1 "$@" || return 1
    printf -v "FE_PID_$name" '%s' "$SRV_PID"
    printf -v "FE_URL_$name" '%s' "$URL"
}

# fe_push URL REPO FILE: monolithic push of FILE; prints the status.
fe_push() {
    curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary "@$3" \
        -H 'Content-Type: application/octet-stream' \
        "$1/v2/$2/blobs/uploads/?digest=$(oci_digest "$3")" 2>/dev/null || true
}

# fe_manifest OUT CONFIG LAYER [LAYER_SIZE]: writes an image manifest naming CONFIG (a file)
# and LAYER (a file) to OUT.
fe_manifest() {
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
        "$(oci_digest "$2")" "$(stat -c %s "$2")" "$(oci_digest "$3")" "$(stat -c %s "$3")" >"$1"
}

# fe_put_manifest URL REPO REF FILE: prints the status.
fe_put_manifest() {
    curl -sS -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$4" \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        "$1/v2/$2/manifests/$3" 2>/dev/null || true
}

# fe_metric URL NAME: the value of a metric without labels.
fe_metric() {
    curl -sS "$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n {print $2}'
}

frontends_suite() {
    local S=$1 B=$T/fe.body i u code
    setup_cmk fe
    expect_ok cmk create --store "$S" --identity feid --key-encryption-key "$KID_NOVER"
    local V1=${KID##*/}

    # B checks its key every second but never looks for a new key version itself (its
    # first check, at start, finds none); A rotates automatically.
    fe_start b "$S" --rotation-check-interval 86400 --instance fe-b || {
        not_ok "front-end B starts"
        return
    }
    ok "front-end B serves the store"
    fe_start a "$S" --rotation-check-interval 1 --instance fe-a --upload-save-after 0 || {
        not_ok "front-end A starts beside B"
        return
    }
    ok "front-end A serves the same store beside B"
    local A=$FE_URL_a Bu=$FE_URL_b

    # ---- push through A, pull through B
    gen_random fe-layer 1500000 "$T/layer"
    printf '{"architecture":"amd64","os":"linux","n":0}' >"$T/cfg0"
    expect_eq "$(fe_push "$A" fe/app "$T/layer")" 201 "push a layer through A"
    expect_eq "$(fe_push "$A" fe/app "$T/cfg0")" 201 "push a config through A"
    fe_manifest "$T/m0" "$T/cfg0" "$T/layer"
    expect_eq "$(fe_put_manifest "$A" fe/app v1 "$T/m0")" 201 "push a manifest tagged v1 through A"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/app/manifests/v1")" 200 "pull the manifest by tag through B"
    expect_true "... same bytes" cmp "$B" "$T/m0"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/app/blobs/$(oci_digest "$T/layer")")" 200 \
        "pull the layer through B"
    expect_true "... same bytes" cmp "$B" "$T/layer"
    expect_eq "$(hcurl "$B" -H 'Range: bytes=1000-1999999' \
        "$Bu/v2/fe/app/blobs/$(oci_digest "$T/layer")")" 206 "a range of it through B"
    expect_true "... the right bytes" cmp "$B" <(slice "$T/layer" 1000 1499000)
    expect_eq "$(hcurl "$B" "$Bu/v2/_catalog")" 200 "catalog through B"
    expect_json '.repositories == ["fe/app"]' "... lists the repository pushed through A" "$B"

    # ---- concurrent pushes through both: the same blob, 8 manifests, their own tags and
    # one shared tag
    gen_random fe-same 2500000 "$T/same"
    local pids=()
    for i in 1 2 3 4 5 6; do
        u=$A
        [ $((i % 2)) -eq 0 ] && u=$Bu
        fe_push "$u" fe/race "$T/same" >"$T/race.$i" &
        pids+=($!)
    done
    for i in 1 2 3 4 5 6 7 8; do
        printf '{"architecture":"amd64","os":"linux","n":%d}' "$i" >"$T/cfg$i"
        u=$A
        [ $((i % 2)) -eq 0 ] && u=$Bu
        fe_push "$u" fe/race "$T/cfg$i" >"$T/racecfg.$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    code=$(for f in "$T"/race.* "$T"/racecfg.*; do
        cat "$f"
        echo
    done | sort -u | tr '\n' ' ')
    expect_eq "$code" "201 " "6 pushes of one blob and 8 configs at once through both: all 201"
    pids=()
    for i in 1 2 3 4 5 6 7 8; do
        fe_manifest "$T/m$i" "$T/cfg$i" "$T/same"
        u=$A
        [ $((i % 2)) -eq 0 ] && u=$Bu
        (
            c1=$(fe_put_manifest "$u" fe/race "t$i" "$T/m$i")
            c2=$(fe_put_manifest "$u" fe/race shared "$T/m$i")
            echo "$c1 $c2" >"$T/racem.$i"
        ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    code=$(cat "$T"/racem.* | tr ' ' '\n' | sort -u | tr '\n' ' ')
    expect_eq "$code" "201 " "8 manifests, each with its tag and the shared tag, at once through both: all 201"
    expect_eq "$(hcurl "$B" "$A/v2/fe/race/tags/list")" 200 "tags through A"
    expect_json '(.tags | sort) == ["shared","t1","t2","t3","t4","t5","t6","t7","t8"]' \
        "... every tag is there" "$B"
    local bad=0
    for i in 1 2 3 4 5 6 7 8; do
        u=$Bu
        [ $((i % 2)) -eq 0 ] && u=$A
        if [ "$(hcurl "$B" "$u/v2/fe/race/manifests/t$i")" != 200 ] || ! cmp -s "$B" "$T/m$i"; then
            bad=$((bad + 1))
        fi
    done
    expect_eq "$bad" 0 "... each tag gives its manifest (read through the other front-end)"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/race/manifests/shared")" 200 "the shared tag resolves"
    local hit=0
    for i in 1 2 3 4 5 6 7 8; do
        cmp -s "$B" "$T/m$i" && hit=$((hit + 1))
    done
    expect_eq "$hit" 1 "... to one of the manifests pushed"
    expect_ok cmk blob verify --store "$S" "$(oci_digest "$T/same")"
    expect_eq "$(hcurl "$B" "$A/v2/fe/race/blobs/$(oci_digest "$T/same")")" 200 \
        "the blob pushed six times reads back"
    expect_true "... whole" cmp "$B" "$T/same"

    # ---- an upload session belongs to the front-end that opened it
    gen_random fe-chunked 300000 "$T/chunked"
    expect_eq "$(hcurl "$B" -X POST "$A/v2/fe/up/blobs/uploads/")" 202 "open an upload session on A"
    local loc
    loc=$(hdr_of "$B.h" Location)
    [[ $loc == http* ]] || loc=$A$loc
    local path=${loc#"$A"}
    expect_eq "$(hcurl "$B" -X PATCH --data-binary @<(slice "$T/chunked" 0 100000) \
        -H 'Content-Type: application/octet-stream' "$Bu$path")" 404 \
        "its PATCH sent to B: 404"
    expect_json '.errors[0].code == "BLOB_UPLOAD_UNKNOWN"' "... BLOB_UPLOAD_UNKNOWN" "$B"
    expect_eq "$(hcurl "$B" -X PATCH --data-binary @<(slice "$T/chunked" 0 100000) \
        -H 'Content-Type: application/octet-stream' "$A$path")" 202 "... on A: 202"
    loc=$(hdr_of "$B.h" Location)
    [[ $loc == http* ]] || loc=$A$loc
    [[ $loc == *\?* ]] && loc="$loc&" || loc="$loc?"
    expect_eq "$(hcurl "$B" -X PUT --data-binary @<(slice "$T/chunked" 100000 200000) \
        -H 'Content-Type: application/octet-stream' "${loc}digest=$(oci_digest "$T/chunked")")" 201 \
        "... completed on A"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/up/blobs/$(oci_digest "$T/chunked")")" 200 \
        "... and pulled through B"
    expect_true "... whole" cmp "$B" "$T/chunked"

    # ---- a session A saved while serving stays A's
    gen_random fe-saved 2000000 "$T/saved"
    local n0 spath
    n0=$(fe_metric "$A" cmkstore_uploads_saved_total)
    expect_eq "$(hcurl "$B" -X POST "$A/v2/fe/saved/blobs/uploads/")" 202 "open a session on A"
    spath=$(hdr_of "$B.h" Location)
    spath=${spath#"$A"}
    expect_eq "$(hcurl "$B" -X PATCH --data-binary @<(slice "$T/saved" 0 1000000) \
        -H 'Content-Type: application/octet-stream' "$A$spath")" 202 "... PATCH 1 MB"
    # Saved with its 1 MB: no bytes unsaved (a tick between the POST and the PATCH may have
    # saved the empty session already, so the save counter alone does not say so).
    all_saved() { [ "$(fe_metric "$A" cmkstore_uploads_unsaved_bytes)" == 0 ]; }
    expect_true "... A saves it while serving (unsaved bytes 0, polled up to 120 s)" wait_for 120 all_saved
    expect_true "... counted (metric)" test "$(fe_metric "$A" cmkstore_uploads_saved_total)" -gt "$n0"
    fe_start c "$S" --instance fe-c || not_ok "a third front-end starts"
    expect_true "a front-end starting beside A leaves A's saved session alone (log)" \
        grep -q '0 upload session(s) restored from the last run, 0 expired (--upload-timeout) and dropped, 1 of other instances left alone' "$SRV_ERR"
    expect_eq "$(hcurl "$B" "$FE_URL_c$spath")" 404 "... it does not know it"
    stop_server TERM
    expect_eq "$(hcurl "$B" "$A$spath")" 204 "... A still answers it"
    expect_eq "$(hdr_of "$B.h" Range)" "0-999999" "... with its Range"

    # ---- kill -9 of A in the middle of a push (the saved session above stays saved)
    gen_random fe-killed 40000000 "$T/killed"
    local DK
    DK=$(oci_digest "$T/killed")
    mkfifo "$T/killfifo"
    # A body of unknown length (chunked), fed as the test goes: -T - (a file name would be
    # appended to the URL, which ends in "/").
    curl -sS -o /dev/null -X POST -T - -H 'Content-Type: application/octet-stream' \
        "$A/v2/fe/killed/blobs/uploads/?digest=$DK" <"$T/killfifo" 2>/dev/null &
    local curlpid=$!
    exec 8>"$T/killfifo"
    # Once curl has taken 20 MB, A has taken at least 20 MB less what the loopback socket
    # buffers hold (a few MB): A is in the middle of the push.
    head -c 20000000 "$T/killed" >&8
    ok "A is sent 20 MB of a 40 MB push"
    kill -KILL "$FE_PID_a"
    wait "$FE_PID_a" 2>/dev/null || true
    exec 8>&-
    wait "$curlpid" 2>/dev/null || true
    expect_eq "$(hcurl "$B" -I "$Bu/v2/fe/killed/blobs/$DK")" 404 \
        "A killed mid-push: the blob is not visible through B"
    expect_exit 3 cmk blob stat --store "$S" "$DK"
    expect_ok cmk blob ls --store "$S"
    expect_false "... nor listed by the CLI" grep -q "${DK#sha256:}" "$OUT"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/app/manifests/v1")" 200 "B still serves"
    fe_start a "$S" --rotation-check-interval 1 --instance fe-a --upload-save-after 0 ||
        not_ok "A restarts on the store"
    A=$FE_URL_a
    expect_true "A restarted: the session it saved is restored (log)" \
        grep -q '1 upload session(s) restored from the last run, 0 expired' "$SRV_ERR"
    expect_eq "$(hcurl "$B" "$A$spath")" 204 "... GET on it answers 204"
    expect_eq "$(hdr_of "$B.h" Range)" "0-999999" "... with its Range"
    expect_eq "$(hcurl "$B" -X PUT --data-binary @<(slice "$T/saved" 1000000 1000000) \
        -H 'Content-Type: application/octet-stream' \
        "$A$spath?digest=$(oci_digest "$T/saved")")" 201 "... the rest PUT on A: 201"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/saved/blobs/$(oci_digest "$T/saved")")" 200 \
        "... pulled through B"
    expect_true "... whole" cmp "$B" "$T/saved"
    expect_eq "$(fe_push "$A" fe/killed "$T/killed")" 201 "A restarted: the push again, whole: 201"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/killed/blobs/$DK")" 200 "... pulled through B"
    expect_true "... whole" cmp "$B" "$T/killed"

    # ---- a rotation through A is adopted by B
    expect_ok cmk vault key create --vault-name fevault --name fekey
    local V2
    V2=$(jq -r .key.kid "$OUT")
    V2=${V2##*/}
    names_version() { # URL VERSION
        curl -sS "$1/metrics" 2>/dev/null | grep '^cmkstore_key_info' | grep -q "/$2\""
    }
    expect_true "A rotates to the new key version" wait_for 60 names_version "$A" "$V2"
    expect_true "B adopts it at its next key check" wait_for 60 names_version "$Bu" "$V2"
    expect_ok cmk vault key set-attributes --vault-name fevault --name fekey --version "$V1" \
        --enabled false
    local checks
    checks=$(fe_metric "$Bu" cmkstore_key_checks_total)
    checked_twice() {
        [ "$(fe_metric "$Bu" cmkstore_key_checks_total)" -ge $((checks + 2)) ]
    }
    expect_true "B checks its key twice more after the old version is disabled" \
        wait_for 60 checked_twice
    expect_eq "$(fe_metric "$Bu" cmkstore_key_accessible)" 1 "... still accessible"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/app/blobs/$(oci_digest "$T/layer")")" 200 \
        "... and serving"
    gen_random fe-after 500000 "$T/after"
    expect_eq "$(fe_push "$Bu" fe/app "$T/after")" 201 "a push through B after the rotation"
    expect_eq "$(hcurl "$B" "$A/v2/fe/app/blobs/$(oci_digest "$T/after")")" 200 \
        "... pulled through A"

    # ---- revocation stops both, restore resumes both
    expect_ok cmk vault delete-policy --name fevault --object-id "$PRINCIPAL"
    status_is() { # URL CODE
        [ "$(hcurl "$B.s" "$1/v2/fe/app/blobs/$(oci_digest "$T/layer")")" == "$2" ]
    }
    expect_true "revoked: A answers 503" wait_for 60 status_is "$A" 503
    expect_true "revoked: B answers 503" wait_for 60 status_is "$Bu" 503
    expect_eq "$(fe_push "$Bu" fe/app "$T/cfg0")" 503 "... pushes too"
    expect_ok cmk vault set-policy --name fevault --object-id "$PRINCIPAL" \
        --key-permissions get wrapKey unwrapKey
    expect_true "restored: A serves again" wait_for 60 status_is "$A" 200
    expect_true "restored: B serves again" wait_for 60 status_is "$Bu" 200
    gen_random fe-restored 300000 "$T/restored"
    expect_eq "$(fe_push "$A" fe/app "$T/restored")" 201 "a push through A after the restore"
    expect_eq "$(hcurl "$B" "$Bu/v2/fe/app/blobs/$(oci_digest "$T/restored")")" 200 \
        "... pulled through B"
    expect_true "... whole" cmp "$B" "$T/restored"

    SRV_PID=$FE_PID_a
    stop_server TERM
    expect_eq "$SRV_EXIT" 0 "A stops cleanly"
    SRV_PID=$FE_PID_b
    stop_server TERM
    expect_eq "$SRV_EXIT" 0 "B stops cleanly"
}
