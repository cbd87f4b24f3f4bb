#!/usr/bin/env bash
# test_serve_limits.sh — what a client can cost `cmkstore serve` is bounded, and error bodies
# give nothing away: a per-address connection limit (429, then closed; other addresses in
# 127.0.0.0/8 unaffected; beyond twice the limit closed unanswered), a header timeout for
# connections that have not authenticated (an authenticated one keeps the normal timeout),
# at most --max-password-checks PBKDF2 checks at once (metric peak), a backoff after repeated
# failed passwords from one address or for one user (429 + Retry-After, no PBKDF2; verified
# credentials still work), and store errors whose bodies carry no path, principal id, vault or
# key name but a request id that the server log repeats beside the detail.
#
# Nothing here waits on a clock: connections are held open by serve_conn.py, closes are polled
# with bounded waits, and backoffs are long (600 s) so that they are still running when checked.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

CONN="$(dirname "$0")/serve_conn.py"
B=$T/body

# val KEY FILE: the value of a KEY=VALUE line that serve_conn.py printed.
val() { sed -n "s/^$1=//p" "$2" | head -1; }
# metric NAME: its value in the last /metrics body ($B).
metric() { awk -v m="$1" '$1 == m { print $2 }' "$B"; }
# ccurl SOURCE-ADDRESS CURL-ARGS...: hcurl from a given address in 127.0.0.0/8.
ccurl() {
    local src=$1 out=$2
    shift 2
    hcurl "$out" --interface "$src" "$@"
}

expect_ok cmk serve --help
for f in max-connections-per-ip header-timeout max-password-checks auth-failure-limit \
    auth-backoff; do
    expect_true "serve --help lists --$f" grep -q -- "--$f" "$OUT"
done
expect_true "... with their defaults" grep -q 'default 32; 0: no limit' "$OUT"
expect_exit 2 cmk serve --listen 127.0.0.1:0 --header-timeout 0
expect_exit 2 cmk serve --listen 127.0.0.1:0 --max-password-checks 0

S=$T/store
expect_ok cmk create --store "$S" # a store-managed key: the limits need no vault

# ---- per-address connection limit
start_server perip --store "$S" --max-connections-per-ip 2 --header-timeout 120 --quiet
python3 "$CONN" "$HP" per-ip >"$T/perip.txt"
sed 's/^/# /' "$T/perip.txt"
R=$T/perip.txt
expect_eq "$(val held1 "$R")/$(val held2 "$R")" 200/200 "two connections from 127.0.0.1 are served"
expect_eq "$(val third "$R")" 429 "a third from 127.0.0.1 is answered 429"
expect_true "... with Retry-After" test "$(val third_retry_after "$R")" -ge 1
expect_eq "$(val third_connection "$R")" close "... and Connection: close"
expect_true "... code TOOMANYREQUESTS" grep -q '"code":"TOOMANYREQUESTS"' <(val third_body "$R")
expect_eq "$(val third_closed "$R")" 1 "... and the server closes it"
expect_eq "$(val other_address "$R")" 200 "127.0.0.2 is served meanwhile"
expect_eq "$(val beyond_twice "$R")/$(val beyond_twice_bytes "$R")" 0/0 \
    "beyond twice the limit a connection is closed unanswered"
expect_eq "$(val after_close "$R")" 200 "once a held connection closes, 127.0.0.1 is served again"
expect_eq "$(ccurl 127.0.0.3 "$B" "$URL/metrics")" 200 "metrics"
expect_true "... connections over the address limit counted" \
    test "$(metric cmkstore_http_connections_over_address_limit_total)" -ge 1
expect_true "... connections refused at accept counted" \
    test "$(metric cmkstore_http_connections_refused_total)" -ge 1
stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly (no leak, no sanitizer report)"

# Passwords: carol with the default (slow) PBKDF2, alice and bob with a fast one.
printf 'carol-pw\n' | cmk serve-passwd carol >"$T/htpasswd"
printf 'alice-pw\n' | cmk serve-passwd --iterations 10000 alice >>"$T/htpasswd"
printf 'bob-pw\n' | cmk serve-passwd --iterations 10000 bob >>"$T/htpasswd"
chmod 600 "$T/htpasswd"

# ---- header timeout
start_server hto --store "$S" --htpasswd "$T/htpasswd" --header-timeout 1 --quiet
python3 "$CONN" "$HP" timeout alice:alice-pw >"$T/hto.txt"
sed 's/^/# /' "$T/hto.txt"
R=$T/hto.txt
expect_eq "$(val partial_headers_closed "$R")" 1 "unfinished headers: closed by the header timeout"
expect_eq "$(val unauth_status "$R")" 401 "a request without credentials gets 401"
expect_eq "$(val unauth_closed "$R")" 1 "... and its idle connection is closed by the header timeout"
expect_eq "$(val trusted_first "$R")" 200 "an authenticated request"
expect_eq "$(val later1_closed "$R")/$(val later2_closed "$R")" 1/1 \
    "two later unauthenticated connections were closed one after the other"
expect_eq "$(val trusted_again "$R")" 200 "... while the authenticated connection stayed open"
stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly (no leak, no sanitizer report)"

# ---- concurrent password checks and the failure backoff
start_server auth --store "$S" --htpasswd "$T/htpasswd" --max-password-checks 1 \
    --auth-failure-limit 3 --auth-backoff 600
# 8 wrong passwords at once, each from its own address (no backoff applies): one PBKDF2 at a time.
PIDS=()
for i in 1 2 3 4 5 6 7 8; do
    { ccurl "127.0.0.1$i" "$T/c$i" -u "carol:wrong$i" "$URL/v2/" && echo; } >"$T/c$i.code" &
    PIDS+=($!)
done
wait "${PIDS[@]}"
expect_eq "$(cat "$T"/c?.code | sort | uniq -c | xargs)" "8 401" "8 concurrent wrong passwords: 401 each"
expect_eq "$(ccurl 127.0.0.2 "$B" -u carol:carol-pw "$URL/metrics")" 200 "carol's password works"
expect_eq "$(metric cmkstore_auth_password_checks_total)" 9 "... 9 PBKDF2 checks ran"
expect_eq "$(metric cmkstore_auth_password_checks_peak)" 1 \
    "... never more than --max-password-checks 1 at once"
expect_eq "$(metric cmkstore_auth_failures_total)" 8 "... 8 failures counted"

for i in 1 2 3; do
    expect_eq "$(ccurl 127.0.0.1 "$B" -u "alice:wrong$i" "$URL/v2/")" 401 "alice, wrong password $i: 401"
done
expect_eq "$(ccurl 127.0.0.1 "$B" -u alice:alice-pw "$URL/v2/")" 429 \
    "after 3 failures from 127.0.0.1, even the right password gets 429 there"
RA=$(hdr_of "$B.h" Retry-After || true)
expect_true "... Retry-After within the backoff ($RA s)" test "${RA:-0}" -ge 1 -a "${RA:-0}" -le 600
expect_json '.errors[0].code == "TOOMANYREQUESTS"' "... code TOOMANYREQUESTS" "$B"
expect_eq "$(ccurl 127.0.0.2 "$B" -u alice:alice-pw "$URL/v2/")" 200 \
    "alice's right password from 127.0.0.2 works"
expect_eq "$(ccurl 127.0.0.1 "$B" -u alice:alice-pw "$URL/v2/")" 200 \
    "... and, verified now, from 127.0.0.1 too"
expect_eq "$(ccurl 127.0.0.1 "$B" -u alice:wrong4 "$URL/v2/")" 429 \
    "a wrong password from 127.0.0.1 still gets 429"
# bob: 12 failures (4 x the limit) from 4 addresses put the user name in backoff everywhere.
for a in 21 22 23 24; do
    for i in 1 2 3; do
        { ccurl "127.0.0.$a" "$B" -u "bob:wrong$a$i" "$URL/v2/" && echo; } >>"$T/bob.codes"
    done
done
expect_eq "$(sort "$T/bob.codes" | uniq -c | xargs)" "12 401" "12 wrong passwords for bob from 4 addresses"
expect_eq "$(ccurl 127.0.0.30 "$B" -u bob:bob-pw "$URL/v2/")" 429 \
    "... then bob's right password gets 429 from a fresh address"
expect_eq "$(ccurl 127.0.0.30 "$B" -u alice:alice-pw "$URL/v2/")" 200 "... while alice is served there"
expect_eq "$(ccurl 127.0.0.2 "$B" -u alice:alice-pw "$URL/metrics")" 200 "metrics"
expect_eq "$(metric cmkstore_auth_password_checks_total)" 25 \
    "... refused and cached attempts ran no PBKDF2 (9 + 3 + 1 + 12)"
expect_eq "$(metric cmkstore_auth_backoff_refusals_total)" 3 "... 3 backoff refusals counted"
stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly (no leak, no sanitizer report)"

# ---- error bodies: no paths, principal ids, vault or key names; a request id
setup_cmk eb
expect_ok cmk create --store "$T/cstore" --identity "$IDENT_ID" --key-encryption-key "$KID"
start_server errs --store "$T/cstore" --key-check-interval 1
gen_random eb 20000 "$T/blob"
D=$(oci_digest "$T/blob")
expect_eq "$(push_blob eb/app "$T/blob")" 201 "push a blob"

# A manifest naming two unknown blobs: one MANIFEST_BLOB_UNKNOWN entry each, every one with the
# request id (the list is built apart from the other error bodies).
Z1=sha256:$(printf '1%.0s' {1..64})
Z2=sha256:$(printf '2%.0s' {1..64})
jq -n --arg c "$D" --arg l1 "$Z1" --arg l2 "$Z2" '{schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: 20000},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l1, size: 1},
             {mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l2, size: 1}]}' \
    >"$T/manifest.json"
expect_eq "$(hcurl "$B" -X PUT --data-binary "@$T/manifest.json" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$URL/v2/eb/app/manifests/v1")" \
    400 "a manifest naming unknown blobs: 400"
expect_json '[.errors[] | select(.code == "MANIFEST_BLOB_UNKNOWN")] | length == 2' \
    "... one MANIFEST_BLOB_UNKNOWN per unknown blob" "$B"
expect_json '[.errors[].detail.request_id | strings | test("^[0-9a-f]{16}$")] | length == 2' \
    "... each with the request id" "$B"

# no_secrets WHAT: the body $B names nothing of the server's, carries a request id, and the
# server log has that id beside the detail.
no_secrets() {
    local rid what=$1 s
    for s in "$CMKSTORE_HOME" "$T" "$PRINCIPAL" "$IDENT_ID" ebvault ebkey ebid; do
        if grep -qF -- "$s" "$B"; then
            not_ok "$what: the body gives away '$s': $(head -c 400 "$B")"
            return 0
        fi
    done
    ok "$what: no path, principal id, identity, vault or key name in the body"
    rid=$(jq -r '.errors[0].detail.request_id // empty' "$B")
    if ! [[ "$rid" =~ ^[0-9a-f]{16}$ ]]; then
        not_ok "$what: no request id in the body: $(head -c 400 "$B")"
        return 0
    fi
    expect_true "$what: the message repeats the request id" grep -q "request id $rid" "$B"
    if wait_for 30 grep -q "rid=$rid error .*${2:-}" "$SRV_ERR"; then
        ok "$what: the server log has request $rid with the detail"
    else
        not_ok "$what: no log line 'rid=$rid error ... ${2:-}'"
        grep "rid=$rid" "$SRV_ERR" | sed 's/^/#   /'
    fi
}

# A damaged store: the blob's file replaced by a symbolic-link loop cannot be opened.
BF=$(blob_file "$T/cstore" "$D")
mv "$BF" "$T/blob.saved"
ln -s "$BF" "$BF"
expect_eq "$(hcurl "$B" "$URL/v2/eb/app/blobs/$D")" 500 "a blob file that cannot be opened: 500"
no_secrets "damaged store" "$T/cstore"
rm -f "$BF"
mv "$T/blob.saved" "$BF"
expect_eq "$(hcurl "$B" "$URL/v2/eb/app/blobs/$D")" 200 "restored: 200"

# The key revoked: 503 (key check every second, polled).
expect_ok cmk vault delete-policy --name ebvault --object-id "$PRINCIPAL"
is_503() { [ "$(hcurl "$B" "$URL/v2/eb/app/blobs/$D")" == 503 ]; }
if wait_for 60 is_503; then ok "revoked: 503"; else not_ok "revoked: still $(hcurl "$B" "$URL/v2/eb/app/blobs/$D")"; fi
hcurl "$B" "$URL/v2/eb/app/blobs/$D" >/dev/null
expect_json '.errors[0].detail.error == "CMK_E_KEY_DENIED"' "... detail CMK_E_KEY_DENIED" "$B"
expect_json '.errors[0].message | test("key-encryption key: key access denied")' \
    "... the message says what failed, in general terms" "$B"
no_secrets "revoked key" "ebvault"
expect_eq "$(hcurl "$B" "$URL/v2/_catalog")" 503 "catalog while revoked: 503"
no_secrets "revoked key, catalog"
stop_server
expect_eq "$SRV_EXIT" 0 "the server stops cleanly (no leak, no sanitizer report)"
