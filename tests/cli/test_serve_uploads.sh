#!/usr/bin/env bash
# test_serve_uploads.sh — what upload sessions and load leave behind in `cmkstore serve`
# (issue 20, items 2, 4 and 8):
#   - idle sessions hold no pipeline memory: 48 sessions after one 4 MB PATCH each stay under
#     128 MiB RSS, 256 under 160 MiB (skipped under a sanitizer), and a session parked with an
#     unfinished chunk still commits the right bytes;
#   - the I/O engine cache is bounded (at most 16 engines after 256 sessions are cancelled,
#     /metrics) and given back when idle, and so is the memory after a short mixed load
#     (RSS under 120 MiB, polled);
#   - a blob DELETE reads only its own repository's record (another one damaged does not
#     matter) and only unlinks; a collection refuses to run on a damaged record (it cannot
#     know what that repository references) and frees the blob once the record is back;
#   - the upload memory budget answers 503 with Retry-After when spent; connections beyond
#     --max-connections get 503 with Retry-After instead of a silent close;
#   - revocation reaches open sessions: PATCH with Expect: 100-continue gets 503 before its
#     body is read, and idle sessions are dropped (their blob keys wiped) within seconds.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

setup_cmk up
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
B=$T/body
SAN=0
if bin_sanitized; then SAN=1; fi

rss_mib() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$SRV_PID/status"; }
metric() {
    curl -sS "$URL/metrics" 2>/dev/null | awk -v m="$1" '$1 == m {print $2}'
}
metric_is() { [ "$(metric "$1")" == "$2" ]; }
metric_at_most() {
    local v
    v=$(metric "$1")
    [ -n "$v" ] && [ "$v" -le "$2" ]
}
rss_below() { [ "$(rss_mib)" -lt "$1" ]; }
# new_session REPO: POST a session; prints its Location.
new_session() {
    hcurl "$B.s" -X POST "$URL/v2/$1/blobs/uploads/" >/dev/null
    hdr_of "$B.s.h" Location
}
# check_rss WHAT LIMIT_MIB: RSS falls under the limit within 30 s (the server trims after two
# idle seconds); not checked under a sanitizer (its shadow memory counts in RSS).
check_rss() {
    if [ "$SAN" == 1 ]; then
        echo "# RSS $(rss_mib) MiB $1: not checked under a sanitizer"
        return 0
    fi
    if wait_for 30 rss_below "$2"; then ok "RSS $(rss_mib) MiB $1 (< $2 MiB)"; else
        not_ok "RSS $(rss_mib) MiB $1 (limit $2 MiB)"; fi
}

# ---- idle sessions and their memory (the first 48 as in the issue: 4 MB PATCH each)
start_server mem --store "$S" --quiet
echo "# RSS at start: $(rss_mib) MiB"
T0=$SECONDS
gen_random four $((4 * 1024 * 1024)) "$T/four"
head -c $((3 * 512 * 1024)) "$T/four" >"$T/onehalf"
NS=256
[ "$SAN" == 0 ] || NS=48
# sessions COUNT: COUNT new sessions in up/idle, one 4 MB PATCH each, over one connection
# (256 curl processes take minutes on a loaded CI machine); prints how many failed.
sessions() { python3 "$CMK_SOURCE_DIR/tools/registry_load.py" open "$HP" up/idle "$1" "$T/four" "$T/locs"; }
: >"$T/locs"
expect_eq "$(sessions 48)" 0 "48 sessions, one 4 MB PATCH each: all 202"
check_rss "with 48 idle sessions" 128
expect_eq "$(sessions $((NS - 48)))" 0 "$NS sessions, one 4 MB PATCH each: all 202"
expect_eq "$(metric cmkstore_uploads_in_progress)" "$NS" "... $NS sessions open"
[ "$SAN" == 1 ] || check_rss "with 256 idle sessions" 160
D4=$(oci_digest "$T/four")
expect_eq "$(hcurl "$B" -X PUT "$URL$(head -1 "$T/locs")?digest=$D4")" 201 "PUT completes an idle 4 MB session"
tail -n +2 "$T/locs" >"$T/locs.rest"
expect_eq "$(python3 "$CMK_SOURCE_DIR/tools/registry_load.py" cancel "$HP" "$T/locs.rest")" 0 \
    "the other sessions cancelled: 204"
expect_eq "$(metric cmkstore_uploads_in_progress)" 0 "every session cancelled"
if metric_at_most cmkstore_io_engines_open 16; then
    ok "at most 16 I/O engines open after $NS sessions ($(metric cmkstore_io_engines_open))"
else not_ok "$(metric cmkstore_io_engines_open) I/O engines open after $NS sessions"; fi
# The server gives its engines back after two housekeeping ticks with no request in flight;
# each poll is a request, so poll once a second (every 0.2 s, a loaded machine kept a poll in
# flight at one tick of every pair often enough to miss the 30 s).
engines_released() {
    local i
    for i in $(seq 1 60); do
        metric_is cmkstore_io_engines_open 0 && return 0
        sleep 1
    done
    return 1
}
if engines_released; then ok "idle: every I/O engine released"; else
    not_ok "idle: $(metric cmkstore_io_engines_open) I/O engines still open"; fi
# A parked session's unfinished chunk (1.5 MiB in: half a chunk sealed in its file) commits
# the right bytes, also with a 100-byte PATCH after the park.
gen_text tail $((3 * 512 * 1024 + 100)) "$T/tail"
loc=$(new_session up/tail)
head -c $((3 * 512 * 1024)) "$T/tail" >"$T/tail.a"
tail -c 100 "$T/tail" >"$T/tail.b"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/tail.a" "$URL$loc")" 202 "PATCH 1.5 MiB"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/tail.b" "$URL$loc")" 202 "PATCH 100 bytes"
DT=$(oci_digest "$T/tail")
expect_eq "$(hcurl "$B" -X PUT "$URL$loc?digest=$DT")" 201 "PUT commits the parked session"
expect_eq "$(hcurl "$B" "$URL/v2/up/tail/blobs/$DT")" 200 "... pull"
expect_true "... same bytes" cmp "$B" "$T/tail"

echo "# sessions: $((SECONDS - T0)) s"
T0=$SECONDS
# ---- a short mixed load, then the memory comes back
# 8 clients x 6 rounds: pushes (monolithic and in sessions), mounts, gets, ranged gets and
# deletes, every byte compared (tools/registry_load.py).
read -r nreq nerr < <(python3 "$CMK_SOURCE_DIR/tools/registry_load.py" mixed "$HP" 8 6)
expect_eq "$nerr" 0 "mixed load, $nreq requests from 8 clients: no error"
echo "# peak RSS during the tests: $(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$SRV_PID/status") MiB"
check_rss "after the load, idle" 120
echo "# load: $((SECONDS - T0)) s"

stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"

# ---- a blob DELETE touches its own repository only; gc needs every record intact
# On a store of its own, with the server stopped (everything flushed) around each snapshot of
# the records: the one new record is del/b's, and nothing rewrites it behind the test (on the
# first store, sessions left by the load may be saved, and records updated, at any moment).
S2=$T/store2
cmk create --store "$S2" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
gen_random dela 200000 "$T/dela"
gen_random delb 1000 "$T/delb"
DA=$(oci_digest "$T/dela")
start_server dela --store "$S2" --quiet --upload-save-after off
expect_eq "$(push_blob del/a "$T/dela")" 201 "push a blob to del/a"
stop_server TERM
find "$S2/meta" -type f -not -name lock | sort >"$T/meta.before"
start_server delb --store "$S2" --quiet --upload-save-after off
expect_eq "$(push_blob del/b "$T/delb")" 201 "push a blob to del/b"
stop_server TERM
find "$S2/meta" -type f -not -name lock | sort >"$T/meta.after"
expect_eq "$(comm -13 "$T/meta.before" "$T/meta.after" | wc -l)" 1 "the push to del/b made one new record"
REC=$(comm -13 "$T/meta.before" "$T/meta.after" | head -1)
expect_true "del/b's record is a new file" test -f "$REC"
cp -p "$REC" "$T/rec.saved"
printf 'X' | dd of="$REC" bs=1 seek=60 conv=notrunc status=none
start_server deld --store "$S2" --quiet --upload-save-after off
expect_eq "$(hcurl "$B" -X DELETE "$URL/v2/del/a/blobs/$DA")" 202 "DELETE while another record is damaged: 202 (only its own record is read)"
expect_eq "$(hcurl "$B" -I "$URL/v2/del/a/blobs/$DA")" 404 "... unlinked"
expect_true "... the stored blob stays until a collection" test -e "$(blob_file "$S2" "$DA")"
expect_exit 4 cmk registry gc --store "$S2" --grace 0
expect_true "gc refuses to run on a damaged record: the blob stays" test -e "$(blob_file "$S2" "$DA")"
cp -p "$T/rec.saved" "$REC"
expect_ok cmk registry gc --store "$S2" --grace 0
expect_false "... once the record is back, gc collects it" test -e "$(blob_file "$S2" "$DA")"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"

# ---- the upload memory budget and the connection limit
start_server lim --store "$S" --quiet --upload-memory 16M --max-connections 3
mkfifo "$T/fifo"
loc1=$(new_session up/lim)
loc2=$(new_session up/lim)
curl -sS -o "$T/held.out" -w '%{http_code}' -X PATCH -H 'Transfer-Encoding: chunked' \
    -T "$T/fifo" "$URL$loc1" >"$T/held.code" 2>/dev/null &
HELD=$!
exec 7>"$T/fifo"
head -c 100000 "$T/four" >&7
held() { [ "$(metric cmkstore_http_requests_in_flight)" -ge 2 ]; }
expect_true "a chunked PATCH is held open" wait_for 30 held
head -c 1000000 "$T/four" >"$T/one"
expect_eq "$(hcurl "$B" -X PATCH -H 'Expect: 100-continue' --data-binary "@$T/one" "$URL$loc2")" 503 \
    "a second PATCH while the budget is spent: 503"
expect_true "... Retry-After" grep -qi '^Retry-After:' "$B.h"
expect_json '.errors[0].message | test("memory")' "... the message says why" "$B"
exec 7>&-
wait "$HELD" || true
expect_eq "$(cat "$T/held.code")" 202 "the held PATCH completes: 202"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/one" "$URL$loc2")" 202 "the second PATCH, retried: 202"
exec 4<>"/dev/tcp/${HP%:*}/${HP#*:}" 5<>"/dev/tcp/${HP%:*}/${HP#*:}" 6<>"/dev/tcp/${HP%:*}/${HP#*:}"
expect_eq "$(hcurl "$B" "$URL/v2/")" 503 "a fourth connection at --max-connections 3: 503"
expect_true "... Retry-After" grep -qi '^Retry-After:' "$B.h"
exec 4>&- 5>&- 6>&-
v2_ok() { [ "$(hcurl "$B" "$URL/v2/")" == 200 ]; }
expect_true "served again once the connections close" wait_for 30 v2_ok
# cancelled, or they would be saved and come back at the next start (test_serve_resume.sh)
expect_eq "$(hcurl "$B" -X DELETE "$URL$loc1")" 204 "session 1 cancelled"
expect_eq "$(hcurl "$B" -X DELETE "$URL$loc2")" 204 "session 2 cancelled"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"

# ---- revocation reaches open sessions
start_server rev --store "$S" --key-check-interval 1
expect_eq "$(push_blob up/rev "$T/delb")" 201 "push a blob"
DB=$(oci_digest "$T/delb")
r1=$(new_session up/rev)
r2=$(new_session up/rev)
head -c $((3 * 512 * 1024)) "$T/four" >"$T/onehalf"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/onehalf" "$URL$r1")" 202 "PATCH 1.5 MiB into a session"
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/one" "$URL$r2")" 202 "PATCH 1 MB into another"
expect_eq "$(metric cmkstore_uploads_in_progress)" 2 "two sessions open"
expect_ok cmk vault delete-policy --name upvault --object-id "$PRINCIPAL"
pull_503() { [ "$(hcurl "$B" "$URL/v2/up/rev/blobs/$DB")" == 503 ]; }
expect_true "pulls fail with 503 after the revocation" wait_for 30 pull_503
expect_eq "$(hcurl "$B" -X PATCH -H 'Expect: 100-continue' --data-binary "@$T/four" "$URL$r1")" 503 \
    "PATCH on a session opened before the revocation: 503"
expect_json '.errors[0].code == "UNAVAILABLE"' "... UNAVAILABLE" "$B"
expect_true "... Retry-After" grep -qi '^Retry-After:' "$B.h"
expect_true "... answered before its body was read (in=0)" \
    grep -Eq "PATCH /v2/up/rev/blobs/uploads/[0-9a-f]+ 503 in=0 " "$SRV_ERR"
expect_true "the other session is dropped (its key wiped) within 30 s" \
    wait_for 30 metric_is cmkstore_uploads_in_progress 0
expect_eq "$(hcurl "$B" -X PUT "$URL$r2?digest=$(oci_digest "$T/one")")" 503 "... its PUT: 503 (told why)"
expect_eq "$(hcurl "$B" -X PUT "$URL$r2?digest=$(oci_digest "$T/one")")" 404 "... once: then 404"
expect_ok cmk vault set-policy --name upvault --object-id "$PRINCIPAL" \
    --key-permissions get wrapKey unwrapKey
pull_200() { [ "$(hcurl "$B" "$URL/v2/up/rev/blobs/$DB")" == 200 ]; }
expect_true "pulls work again after the restore" wait_for 30 pull_200
r3=$(new_session up/rev)
expect_eq "$(hcurl "$B" -X PATCH --data-binary "@$T/one" "$URL$r3")" 202 "a new session: PATCH 202"
expect_eq "$(hcurl "$B" -X PUT "$URL$r3?digest=$(oci_digest "$T/one")")" 201 "... PUT 201"
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
expect_false "no sanitizer report" grep -q 'Sanitizer' "$SRV_ERR"
