#!/usr/bin/env bash
# test_serve_sigterm.sh — graceful shutdown of `cmkstore serve`: on SIGTERM an upload in
# flight that finishes within --shutdown-timeout is committed (the client gets 201 and the
# blob is there after a restart); one that does not is discarded whole (nothing partial is
# visible, no temporary file is left); an open chunked session is saved and answers its
# offset after the restart (test_serve_resume.sh resumes one); new requests during the drain
# get 503; exit status 0 both times.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

setup_cmk st
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
B=$T/body

gen_random keep 100000 "$T/keep"
gen_random small 400000 "$T/small"
gen_random big 4000000 "$T/big"
DK=$(oci_digest "$T/keep") DS=$(oci_digest "$T/small") DB=$(oci_digest "$T/big")

in_flight() { # N: at least N requests in flight besides the metrics request itself
    hcurl "$B" "$URL/metrics" >/dev/null
    local n
    n=$(sed -n 's/^cmkstore_http_requests_in_flight //p' "$B")
    [ -n "$n" ] && [ "$n" -ge $(($1 + 1)) ]
}
blob_count() { find "$S/blobs" -type f | wc -l; }

# ---- 1: an upload that can finish within the timeout is committed
start_server s1 --store "$S" --shutdown-timeout 60
expect_eq "$(push_blob st/app "$T/keep")" 201 "a blob stored before the shutdown"
curl -s -o "$T/small.resp" -w '%{http_code}' --limit-rate 100K -X POST --data-binary "@$T/small" \
    "$URL/v2/st/app/blobs/uploads/?digest=$DS" >"$T/small.code" &
CURL1=$!
if wait_for 30 in_flight 1; then ok "the slow upload is in flight"; else not_ok "the slow upload never showed"; fi
kill -TERM "$SRV_PID"
# While draining, new requests are refused (the listening socket is closed: no connection,
# or a 503 on a connection that was already open).
wait_for 10 bash -c "! curl -s -o /dev/null '$URL/v2/'" && ok "no new connections while draining" ||
    not_ok "new connections still accepted while draining"
wait "$CURL1" || true
expect_eq "$(cat "$T/small.code")" 201 "the in-flight upload finished: 201"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "exit 0 after a graceful shutdown"
expect_true "the log says it shut down" grep -q 'shutting down' "$SRV_ERR"

# ---- 2: an upload that cannot finish in time is discarded whole; an open session is saved
nblobs=$(blob_count)
start_server s2 --store "$S" --shutdown-timeout 1 --instance st
hcurl "$B" -X POST "$URL/v2/st/app/blobs/uploads/" >/dev/null
LOC=$(hdr_of "$B.h" Location)
slice "$T/big" 0 100000 >"$T/chunk"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/chunk" "$URL$LOC")" 202 "a chunked session with one chunk"
curl -s -o /dev/null -w '%{http_code}' --limit-rate 200K -X POST --data-binary "@$T/big" \
    "$URL/v2/st/app/blobs/uploads/?digest=$DB" >"$T/big.code" 2>/dev/null &
CURL2=$!
if wait_for 30 in_flight 1; then ok "the big upload is in flight"; else not_ok "the big upload never showed"; fi
stop_server TERM
wait "$CURL2" || true
expect_eq "$SRV_EXIT" 0 "exit 0"
expect_false "the client did not get a 201 for the cut upload" test "$(cat "$T/big.code")" == 201
expect_true "the log says the in-flight request was aborted" grep -q 'still in flight: aborted' "$SRV_ERR"
expect_true "the log counts saved sessions" grep -Eq 'stopped; 1 unfinished upload session\(s\) saved' "$SRV_ERR"
expect_eq "$(blob_count)" "$((nblobs + 1))" "one new blob file in the store: the session's part"
expect_eq "$(find "$S/tmp" -type f 2>/dev/null | wc -l)" 0 "no temporary file left behind"

# ---- after a restart: the committed blobs are there, nothing of the cut ones
start_server s3 --store "$S" --instance st
expect_eq "$(hcurl "$B" "$URL/v2/st/app/blobs/$DK")" 200 "blob from before the shutdown: 200"
expect_true "... same bytes" cmp "$B" "$T/keep"
expect_eq "$(hcurl "$B" "$URL/v2/st/app/blobs/$DS")" 200 "upload finished during the drain: 200"
expect_true "... same bytes" cmp "$B" "$T/small"
expect_eq "$(hcurl "$B" -I "$URL/v2/st/app/blobs/$DB")" 404 "the cut upload is not visible"
expect_eq "$(hcurl "$B" "$URL$LOC")" 204 "the open session is back after the restart"
expect_eq "$(hdr_of "$B.h" Range)" "0-99999" "... at its offset"
stop_server INT
expect_eq "$SRV_EXIT" 0 "SIGINT: exit 0"
