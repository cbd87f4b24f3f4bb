#!/usr/bin/env bash
# test_serve_stream.sh — `cmkstore serve` streams: a 384 MiB blob is pushed (monolithic, then
# chunked with chunked transfer encoding) and pulled back byte-identical, with Range reads at
# the far end, while the server's peak resident memory (VmHWM) stays far below the blob's
# size. The memory bound is not checked under ASan (its allocator quarantine holds freed
# buffers on purpose).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"

MIB=${CMK_SERVE_STREAM_MIB:-384}
setup_cmk sm
S=$T/store
cmk create --store "$S" --identity "$IDENT_ID" --key-encryption-key "$KID" >/dev/null
start_server sm --store "$S" --quiet
B=$T/body

gen_random big $((MIB * 1048576)) "$T/big"
D=$(oci_digest "$T/big")
expect_eq "$(push_blob big/one "$T/big")" 201 "push $MIB MiB monolithic: 201"
rm -f "$B"
expect_eq "$(hcurl "$B" "$URL/v2/big/one/blobs/$D")" 200 "pull it: 200"
expect_true "... byte-identical" cmp "$B" "$T/big"
rm -f "$B"
off=$((MIB * 1048576 - 3000000))
expect_eq "$(hcurl "$B" -H "Range: bytes=$off-$((off + 1999999))" "$URL/v2/big/one/blobs/$D")" 206 \
    "Range read near the end: 206"
expect_true "... the right bytes" cmp "$B" <(slice "$T/big" "$off" 2000000)

# The same blob into another repository as one chunked-encoded PATCH (no Content-Length).
hcurl "$B" -X POST "$URL/v2/big/two/blobs/uploads/" >/dev/null
LOC=$(hdr_of "$B.h" Location)
expect_eq "$(hcurl "$B" -X PATCH -H 'Transfer-Encoding: chunked' --data-binary "@$T/big" "$URL$LOC")" 202 \
    "chunked-encoded PATCH of $MIB MiB: 202"
expect_eq "$(hcurl "$B" -X PUT "$URL$LOC?digest=$D")" 201 "... PUT commits it: 201"
rm -f "$B"
expect_eq "$(hcurl "$B" "$URL/v2/big/two/blobs/$D")" 200 "pull from the second repository"
expect_true "... byte-identical" cmp "$B" "$T/big"
rm -f "$B"

hwm=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$SRV_PID/status")
echo "# server peak RSS: $hwm MiB for a $MIB MiB blob"
if bin_sanitized; then
    echo "# peak RSS not checked under a sanitizer (its shadow memory counts in RSS)"
else
    expect_true "server peak RSS ($hwm MiB) stays below a third of the blob" test "$hwm" -lt $((MIB / 3))
fi
stop_server TERM
expect_eq "$SRV_EXIT" 0 "SIGTERM: exit 0"
