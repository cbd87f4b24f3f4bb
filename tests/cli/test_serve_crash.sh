#!/usr/bin/env bash
# test_serve_crash.sh — an upload survives a crash of `cmkstore serve` (curl, kill -9): with
# --upload-save-after 0 a parked session is saved while serving (polled in /metrics, no
# sleeps), a collection with no grace spares its part, kill -9, a front-end of another
# --instance leaves it alone, the restarted one answers GET with its Range, the rest is
# PATCHed, PUT commits, the blob pulls back byte for byte and the parts are collected. A
# session saved twice while serving (two parts), then PATCHed after its last save and killed
# loses only that unsaved tail: its Range is the saved offset and the client continues from
# there. A fast push is never saved. Option mistakes are refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

setup_cmk cr
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
B=$T/body
TOTAL=$((80 * 1000 * 1000))
FIRST=$((50 * 1000 * 1000))
gen_random crash-blob "$TOTAL" "$T/blob"
D=$(oci_digest "$T/blob")
slice "$T/blob" 0 "$FIRST" >"$T/first"
slice "$T/blob" "$FIRST" $((TOTAL - FIRST)) >"$T/rest"

# parts_of ID: the stored parts of upload session ID (none is no error here).
parts_of() { upload_parts "$S" "$1" || true; }
# saved_total: cmkstore_uploads_saved_total of the running server.
saved_total() { curl -sS "$URL/metrics" | sed -n 's/^cmkstore_uploads_saved_total //p'; }
saved_at_least() { [ "$(saved_total)" -ge "$1" ]; }
# all_saved: no open session holds bytes received since its last save. The save counter alone
# cannot say that: a tick between a POST and its PATCH saves the empty session too.
all_saved() { [ "$(curl -sS "$URL/metrics" | sed -n 's/^cmkstore_uploads_unsaved_bytes //p')" == 0 ]; }

# ---- option mistakes: refused before anything starts
expect_exit 2 cmk serve --store "$S" --listen 127.0.0.1:0 --upload-save-after soon
expect_err_match "upload-save-after takes seconds \(0 to 86400\) or off" "... named"
expect_exit 2 cmk serve --store "$S" --listen 127.0.0.1:0 --upload-save-after 86401
expect_exit 2 cmk serve --store "$S" --listen 127.0.0.1:0 --instance 'a b'
expect_err_match "instance takes 1 to 128 printable characters" "... named"

# ---- 1: PATCH 50 MB, saved while serving, kill -9
start_server c1 --store "$S" --instance fe1 --upload-save-after 0
expect_eq "$(saved_total)" 0 "no session saved yet (metric)"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/crash/app/blobs/uploads/")" 202 "POST opens a session"
LOC=$(hdr_of "$B.h" Location)
ID=${LOC##*/}
expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$((FIRST - 1))" --data-binary "@$T/first" "$URL$LOC")" 202 "PATCH 50 MB"
expect_true "the parked session's 50 MB are saved by the housekeeping (unsaved bytes 0, polled up to 120 s)" \
    wait_for 120 all_saved
expect_true "... counted (metric)" saved_at_least 1
P1=$(parts_of "$ID")
expect_eq "$(echo "$P1" | grep -c .)" 1 "one part of the session is stored"
expect_eq "$(stat -c %s "$T/part")" $((FIRST + 71)) "... the 50 MB received and its suffix line"
expect_true "... byte for byte" cmp -n "$FIRST" "$T/part" "$T/first"
expect_ok cmk registry gc --store "$S" --grace 0
expect_ok cmk blob stat --store "$S" "$P1"
ok "a collection with no grace spares the part (the session's record names it)"
stop_server KILL
expect_eq "$SRV_EXIT" 137 "killed (SIGKILL)"

# ---- another instance on the store leaves the session alone
start_server other --store "$S" --instance fe2
expect_true "the other instance leaves it alone (log)" \
    grep -q '0 upload session(s) restored from the last run, 0 expired (--upload-timeout) and dropped, 1 of other instances left alone' "$SRV_ERR"
expect_eq "$(hcurl "$B" "$URL$LOC")" 404 "... and does not know it"
stop_server TERM
expect_ok cmk blob stat --store "$S" "$P1"
ok "... nor does it drop its part"

# ---- the same instance restarts: Range, the rest, PUT, pull
start_server c2 --store "$S" --instance fe1
expect_true "the log says the session was restored" \
    grep -q '1 upload session(s) restored from the last run, 0 expired' "$SRV_ERR"
expect_eq "$(hcurl "$B" "$URL$LOC")" 204 "GET on the upload URL after the crash: 204"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((FIRST - 1))" "... Range 0-49999999"
finish_upload "$LOC" "$FIRST" "$TOTAL" "$T/rest" crash/app "$D" "$T/blob"
expect_exit 3 cmk blob stat --store "$S" "$P1"
expect_eq "$(parts_of "$ID" | grep -c .)" 0 "the session's parts are collected"
# a fast push (POST, PATCH, PUT at once) is not saved with the default --upload-save-after
gen_random crash-small 1000000 "$T/small"
expect_eq "$(hcurl "$B" -X POST "$URL/v2/crash/app/blobs/uploads/")" 202 "a fast push: POST"
LOCF=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/small" "$URL$LOCF")" 202 "... PATCH"
expect_eq "$(hcurl "$B" -X PUT "$URL$LOCF?digest=$(oci_digest "$T/small")")" 201 "... PUT"
expect_eq "$(saved_total)" 0 "... never saved (metric)"
stop_server TERM

# ---- 2: a session PATCHed after its save, then killed, loses only the unsaved tail
A=$((3 * 1000 * 1000))
slice "$T/blob" 0 "$A" >"$T/a"
start_server c3 --store "$S" --instance fe1 --upload-save-after 0
expect_eq "$(hcurl "$B" -X POST "$URL/v2/crash/tail/blobs/uploads/")" 202 "a second session"
LOC2=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/a" "$URL$LOC2")" 202 "... PATCH 3 MB"
expect_true "... saved (unsaved bytes 0)" wait_for 120 all_saved
slice "$T/blob" "$A" 1000000 >"$T/m1"
expect_eq "$(hcurl "$B" -X PATCH -H "Content-Range: $A-$((A + 999999))" \
    --data-binary "@$T/m1" "$URL$LOC2")" 202 "... PATCH 1 MB more after the save"
expect_true "... saved again (unsaved bytes 0)" wait_for 120 all_saved
expect_true "... counted (metric)" saved_at_least 2
expect_eq "$(parts_of "${LOC2##*/}" | grep -c .)" 2 "... two parts: the first save's and the MB after"
A=$((A + 1000000))
slice "$T/blob" "$A" $((TOTAL - A)) >"$T/b"
stop_server KILL
# saves off: whatever it receives now is unsaved when it is killed
start_server c4 --store "$S" --instance fe1 --upload-save-after off
expect_eq "$(hcurl "$B" "$URL$LOC2")" 204 "restored after the kill"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((A - 1))" "... at its saved offset"
slice "$T/blob" "$A" 1000000 >"$T/tail"
expect_eq "$(hcurl "$B" -X PATCH -H "Content-Range: $A-$((A + 999999))" \
    --data-binary "@$T/tail" "$URL$LOC2")" 202 "PATCH 1 MB more"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((A + 999999))" "... Range 0-4999999"
expect_eq "$(saved_total)" 0 "... not saved (--upload-save-after off)"
stop_server KILL
start_server c5 --store "$S" --instance fe1
expect_eq "$(hcurl "$B" "$URL$LOC2")" 204 "restored after the second kill"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((A - 1))" "... at the saved offset: only the unsaved MB is lost"
expect_eq "$(hcurl "$B" -X PATCH -H "Content-Range: $((A + 1000000))-$((TOTAL - 1))" \
    --data-binary "@$T/b" "$URL$LOC2")" 416 "a client that goes on from where it was: 416"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((A - 1))" "... with the saved Range"
expect_eq "$(hcurl "$B" -X PATCH -H "Content-Range: $A-$((TOTAL - 1))" \
    --data-binary "@$T/b" "$URL$LOC2")" 202 "the client continues from the saved offset"
expect_eq "$(hcurl "$B" -X PUT "$URL$LOC2?digest=$D")" 201 "PUT commits"
expect_eq "$(hcurl "$B" "$URL/v2/crash/tail/blobs/$D")" 200 "GET the blob"
expect_true "... byte for byte" cmp "$B" "$T/blob"
expect_eq "$(parts_of "${LOC2##*/}" | grep -c .)" 0 "the session's parts are collected"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "graceful stop"
