#!/usr/bin/env bash
# test_serve_resume.sh — an upload survives a restart of `cmkstore serve` (curl): PATCH 50 MB,
# restart, GET on the upload URL answers its Range, PATCH the rest, PUT commits, the blob
# pulls back byte for byte and the saved part is collected; a restored session can be
# cancelled; one saved longer ago than --upload-timeout is dropped at the next start with
# its part; a chunk out of order after the restart is refused with the session's state.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

setup_cmk rs
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
B=$T/body
FIRST=$((50 * 1000 * 1000))
gen_random resume-blob $((80 * 1000 * 1000)) "$T/blob"
D=$(oci_digest "$T/blob")
slice "$T/blob" 0 "$FIRST" >"$T/first"
slice "$T/blob" "$FIRST" $((80 * 1000 * 1000 - FIRST)) >"$T/rest"
# part_of ID: the digest of a stored part of upload session ID, its bytes in $T/part; fails
# if there is none.
part_of() { upload_parts "$S" "$1" 1; }

# ---- PATCH 50 MB, then a graceful restart
start_server r1 --store "$S" --instance rs
expect_eq "$(hcurl "$B" -X POST "$URL/v2/res/app/blobs/uploads/")" 202 "POST opens a session"
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$((FIRST - 1))" --data-binary "@$T/first" "$URL$LOC")" 202 "PATCH 50 MB"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((FIRST - 1))" "... Range 0-49999999"
# a second session, cancelled after the restart
expect_eq "$(hcurl "$B" -X POST "$URL/v2/res/other/blobs/uploads/")" 202 "a second session"
LOC2=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/rest" "$URL$LOC2")" 202 "... with 30 MB"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "graceful stop"
expect_true "the log says both sessions were saved" \
    grep -q 'stopped; 2 unfinished upload session(s) saved' "$SRV_ERR"
expect_eq "$(find "$S/tmp" -type f 2>/dev/null | wc -l)" 0 "nothing left in tmp/"
DP=$(part_of "${LOC##*/}")
expect_true "the first part is stored as a blob of its own (sealed like any blob)" test -n "$DP"
expect_eq "$(stat -c %s "$T/part")" $((FIRST + 71)) "... the 50 MB received and its suffix line"
expect_true "... byte for byte" cmp -n "$FIRST" "$T/part" "$T/first"
expect_false "no repository name in plaintext in the store" grep -rqa 'res/app' "$S"

start_server r2 --store "$S" --instance rs
expect_true "the log says the sessions were restored" \
    grep -q '2 upload session(s) restored from the last run, 0 expired' "$SRV_ERR"
expect_eq "$(hcurl "$B" "$URL$LOC")" 204 "GET on the upload URL after the restart: 204"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((FIRST - 1))" "... Range 0-49999999"
expect_eq "$(hdr_of "$B.h" Location)" "$LOC" "... same Location"
expect_eq "$(hcurl "$B" -X PATCH -H "Content-Range: 10-19" --data-binary '0123456789' "$URL$LOC")" \
    416 "a chunk out of order after the restart: 416"
expect_eq "$(hdr_of "$B.h" Range)" "0-$((FIRST - 1))" "... with the session's Range"
finish_upload "$LOC" "$FIRST" $((80 * 1000 * 1000)) "$T/rest" res/app "$D" "$T/blob"
expect_exit 3 cmk blob stat --store "$S" "$DP"
ok "the saved part is collected once committed"
expect_false "... and so is the part the PUT made of the rest" part_of "${LOC##*/}"
expect_eq "$(hcurl "$B" -X DELETE "$URL$LOC2")" 204 "a restored session can be cancelled"
stop_server TERM
expect_true "nothing to save at the next stop" \
    grep -q 'stopped; 0 unfinished upload session(s) saved' "$SRV_ERR"

start_server r3 --store "$S" --instance rs
expect_eq "$(hcurl "$B" "$URL$LOC2")" 404 "the cancelled session stays gone after a restart"
expect_eq "$(hcurl "$B" "$URL/v2/res/app/blobs/$D")" 200 "the committed blob is there"
# ---- a session saved longer ago than --upload-timeout is dropped with its part
expect_eq "$(hcurl "$B" -X POST "$URL/v2/res/old/blobs/uploads/")" 202 "a third session"
LOC3=$(hdr_of "$B.h" Location)
slice "$T/blob" 0 3000000 >"$T/p3"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/p3" "$URL$LOC3")" 202 "... PATCH 3 MB"
stop_server TERM
P3=$(part_of "${LOC3##*/}")
expect_true "its part is stored" test -n "$P3"
sleep 2 # the saved session must be older than the 1 s timeout below: time has to pass
start_server r4 --store "$S" --instance rs --upload-timeout 1
expect_true "the log says it expired" \
    grep -q '0 upload session(s) restored from the last run, 1 expired' "$SRV_ERR"
expect_eq "$(hcurl "$B" "$URL$LOC3")" 404 "the expired session is gone"
stop_server TERM
expect_exit 3 cmk blob stat --store "$S" "$P3"
ok "... and its part with it"
