#!/usr/bin/env bash
# test_serve_cache.sh — `serve --cache-size`: decrypted hot blobs answered from memory
# (tools/serve/blob_cache.c), and never in a way the store would not answer:
#  * a whole-blob GET fills the cache, the next GETs (whole, ranged, several at once) are hits
#    and return the same bytes; /metrics counts fills, hits and bytes;
#  * a cold blob GET by six clients at once is filled once and all six are answered from it;
#  * a blob larger than half the cache is never kept;
#  * hits are the same bytes sent either way (--cache-send sendfile / copy);
#  * a blob removed from the store answers 404 although its bytes are cached;
#  * revocation: 503 although cached, and the cache is emptied; after the restore the blob is
#    read (and cached) again, byte for byte.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

start_server srv --cache-size 8M --key-check-interval 1
PRINCIPAL=$(cmk identity show --name registry-identity | jq -r .principalId)
S=$CMKSTORE_HOME/registry
B=$T/body
metric() { # NAME: its value in a fresh /metrics
    hcurl "$T/.m" "$URL/metrics" >/dev/null
    awk -v n="$1" '$1 == n {print $2}' "$T/.m"
}

gen_random sc1 3000000 "$T/b1"
D1=$(oci_digest "$T/b1")
gen_random sc2 5000000 "$T/b2"
D2=$(oci_digest "$T/b2")
expect_eq "$(push_blob sc/app "$T/b1")" 201 "push a 3 MB layer"
expect_eq "$(push_blob sc/app "$T/b2")" 201 "push a 5 MB layer"
expect_eq "$(metric cmkstore_blob_cache_max_bytes)" 8388608 "metrics: the cache's size"
expect_eq "$(metric cmkstore_blob_cache_fills_total)" 0 "nothing cached before a read"

# ---- fill, then hits
expect_eq "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D1")" 200 "first GET (fills the cache)"
expect_true "... the same bytes" cmp "$B" "$T/b1"
expect_eq "$(metric cmkstore_blob_cache_fills_total)" 1 "metrics: one fill"
expect_eq "$(metric cmkstore_blob_cache_bytes)" 3000000 "metrics: 3000000 bytes cached"
h0=$(metric cmkstore_blob_cache_hits_total)
expect_eq "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D1")" 200 "second GET"
expect_true "... the same bytes" cmp "$B" "$T/b1"
expect_eq "$(hdr_of "$B.h" Docker-Content-Digest)" "$D1" "... Docker-Content-Digest"
expect_eq "$(hdr_of "$B.h" Content-Length)" 3000000 "... Content-Length"
expect_eq "$(metric cmkstore_blob_cache_hits_total)" $((h0 + 1)) "metrics: it was a hit"
expect_eq "$(hcurl "$B" -H 'Range: bytes=1048570-2097160' "$URL/v2/sc/app/blobs/$D1")" 206 \
    "ranged GET of the cached blob: 206"
expect_true "... the range's bytes" cmp "$B" <(slice "$T/b1" 1048570 1048591)
expect_eq "$(hdr_of "$B.h" Content-Range)" "bytes 1048570-2097160/3000000" "... Content-Range"
expect_eq "$(metric cmkstore_blob_cache_hits_total)" $((h0 + 2)) "metrics: the range was a hit"
pids=()
for i in 1 2 3 4; do
    curl -sS -o "$T/par$i" "$URL/v2/sc/app/blobs/$D1" &
    pids+=($!)
done
wait "${pids[@]}"
for i in 1 2 3 4; do expect_true "parallel GET $i: the same bytes" cmp "$T/par$i" "$T/b1"; done

# ---- too big for the cache
expect_eq "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D2")" 200 "GET of a blob larger than half the cache"
expect_true "... the same bytes" cmp "$B" "$T/b2"
expect_eq "$(metric cmkstore_blob_cache_fills_total)" 1 "... it was not cached"

# ---- gone from the store: 404 although cached
gen_random sc3 200000 "$T/b3"
D3=$(oci_digest "$T/b3")
expect_eq "$(push_blob sc/other "$T/b3")" 201 "push a third blob"
expect_eq "$(hcurl "$B" "$URL/v2/sc/other/blobs/$D3")" 200 "GET it (cached)"
expect_eq "$(metric cmkstore_blob_cache_fills_total)" 2 "... filled"
expect_ok cmk blob rm --store "$S" --force "$D3"
expect_eq "$(hcurl "$B" "$URL/v2/sc/other/blobs/$D3")" 404 "removed from the store: 404, not the cached bytes"

# ---- a cold blob asked for by several clients at once is decrypted once: one request fills
# the cache before it answers, the others wait for that fill and are answered from it
gen_random sc4 2000000 "$T/b4"
D4=$(oci_digest "$T/b4")
expect_eq "$(push_blob sc/app "$T/b4")" 201 "push a fourth blob"
f0=$(metric cmkstore_blob_cache_fills_total)
h0=$(metric cmkstore_blob_cache_hits_total)
pids=()
for i in 1 2 3 4 5 6; do
    curl -sS -o "$T/cold$i" "$URL/v2/sc/app/blobs/$D4" &
    pids+=($!)
done
wait "${pids[@]}"
for i in 1 2 3 4 5 6; do expect_true "cold GET $i at once: the same bytes" cmp "$T/cold$i" "$T/b4"; done
expect_eq "$(metric cmkstore_blob_cache_fills_total)" $((f0 + 1)) "... one fill for six GETs"
expect_eq "$(metric cmkstore_blob_cache_hits_total)" $((h0 + 6)) "... all six answered from it, the filler too"

# ---- revocation empties it; restore reads again
expect_ok cmk vault delete-policy --name registry-vault --object-id "$PRINCIPAL"
is_status() { [ "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D1")" == "$1" ]; }
if wait_for 30 is_status 503; then ok "revoked: the cached blob answers 503"; else
    not_ok "the cached blob still answers $(hcurl "$B" "$URL/v2/sc/app/blobs/$D1") after the revocation"; fi
expect_json '.errors[0].code == "UNAVAILABLE"' "... UNAVAILABLE" "$B"
expect_eq "$(metric cmkstore_blob_cache_bytes)" 0 "... and the cache was emptied"
expect_eq "$(metric cmkstore_blob_cache_entries)" 0 "... no entry left"
expect_ok cmk vault set-policy --name registry-vault --object-id "$PRINCIPAL" \
    --key-permissions get wrapKey unwrapKey
if wait_for 30 is_status 200; then ok "restored: the blob is served again"; else
    not_ok "still $(hcurl "$B" "$URL/v2/sc/app/blobs/$D1") after the restore"; fi
expect_true "... the same bytes" cmp "$B" "$T/b1"
expect_eq "$(metric cmkstore_blob_cache_bytes)" 3000000 "... and cached again"

# ---- both ways of sending a hit: the default sends loopback clients (these) through the
# server's buffer; --cache-send sendfile sends the cached pages with sendfile(2)
stop_server TERM
for mode in sendfile copy; do
    start_server "srv-$mode" --cache-size 8M --cache-send "$mode"
    expect_eq "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D1")" 200 "--cache-send $mode: GET (fills)"
    expect_true "... the same bytes" cmp "$B" "$T/b1"
    expect_eq "$(hcurl "$B" "$URL/v2/sc/app/blobs/$D1")" 200 "... GET again (a hit)"
    expect_true "... the same bytes" cmp "$B" "$T/b1"
    expect_eq "$(hcurl "$B" -H 'Range: bytes=1048570-2097160' "$URL/v2/sc/app/blobs/$D1")" 206 \
        "... a range of the hit: 206"
    expect_true "... the range's bytes" cmp "$B" <(slice "$T/b1" 1048570 1048591)
    expect_eq "$(metric cmkstore_blob_cache_hits_total)" 3 "... all three answered from the cache (the fill is sent from it too)"
    stop_server TERM
done
expect_exit 2 cmk serve --store "$S" --listen 127.0.0.1:0 --cache-size 8M --cache-send mmap
expect_err_match "cache-send takes auto, sendfile or copy" "... an unknown way is refused"
finish
