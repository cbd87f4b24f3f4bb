#!/usr/bin/env bash
# test_s3_store.sh — stores named s3://BUCKET[/PREFIX] from the command line, on a Ceph RGW of
# the test's own: --s3-endpoint in place of the environment; create, put (one part and
# several), get (whole and ranged), ls, stat, rm, events; what lies in the bucket (records,
# events, links, data objects, nothing else) and that no plaintext is there; a second create
# and a prefix in use refused; bad names, missing or wrong credentials (never printed), an
# unreachable endpoint, a get whose streamed GET the gateway cuts (fails, writes only a
# checked prefix, whole once the gateway is back), and an endpoint that accepts every
# conditional write (refused).
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/s3_lib.sh"

ceph_start
expect_eq "$(s3_mb cmkst)" 200 "a bucket"
EP=$AWS_ENDPOINT_URL
SECRET=$AWS_SECRET_ACCESS_KEY
S=s3://cmkst/team/a

# ---- the endpoint given on the command line
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
expect_ok cmk create --store s3://cmkst//team/a/ --s3-endpoint "$EP"
expect_json ".dir == \"$S\"" "create prints the canonical name"
expect_ok cmk blob ls --store "$S" --s3-endpoint "$EP"
expect_json "length == 0" "... and the store opens there, empty"
export AWS_ENDPOINT_URL_S3=$EP
expect_true "--help names --s3-endpoint" sh -c "'$CMKSTORE_BIN' blob put --help | grep -q -- --s3-endpoint"

# ---- blobs: one part (small) and several (20 MB: header + 5 MiB, then 8 MiB parts; the first
# sent last)
gen_random big 20000000 "$T/big"
printf 'hello object storage' >"$T/small"
expect_ok cmk blob put --store "$S" "$T/big"
DB=$(cat "$OUT")
expect_ok cmk blob put --store "$S" "$T/small"
DS=$(cat "$OUT")
expect_eq "$DB" "$(oci_digest "$T/big")" "the big blob's digest"
expect_ok cmk blob get --store "$S" "$DB" -o "$T/big.out"
expect_true "... reads back whole" cmp "$T/big" "$T/big.out"
expect_ok cmk blob get --store "$S" "$DB" --range 12345678-12399999 -o "$T/range.out"
expect_true "... and a range" cmp "$T/range.out" <(slice "$T/big" 12345678 54322)
expect_ok cmk blob get --store "$S" "$DS"
expect_eq "$(cat "$OUT")" "hello object storage" "the small blob reads back"
expect_ok cmk blob verify --store "$S" "$DB"
expect_ok cmk blob ls --store "$S"
expect_json "length == 2" "ls lists both"
expect_ok cmk blob put --store "$S" "$T/big"
expect_eq "$(cat "$OUT")" "$DB" "a second put of the same content"

# ---- what lies in the bucket
s3_keys cmkst team/a/ >"$T/keys"
hexb=${DB#sha256:}
hexs=${DS#sha256:}
expect_true "store.json" grep -qx 'team/a/store.json' "$T/keys"
expect_true "keyring.json" grep -qx 'team/a/keyring.json' "$T/keys"
expect_true "... the blobs under blobs/" grep -qx "team/a/blobs/sha256/$hexb" "$T/keys"
expect_true "... both" grep -qx "team/a/blobs/sha256/$hexs" "$T/keys"
expect_eq "$(grep -c '^team/a/data/' "$T/keys")" 1 "one data object (the multipart blob's)"
expect_eq "$(grep -c '^team/a/events/' "$T/keys")" 1 "one event object"
expect_eq "$(grep -vcE '^team/a/(store\.json|keyring\.json|probe|blobs/sha256/[0-9a-f]{64}|data/[0-9a-f]{16}|events/[0-9T.]+Z-[0-9a-f]{8})$' "$T/keys")" \
    0 "nothing else"
expect_eq "$(s3_req "$T/link" GET "/cmkst/team/a/blobs/sha256/$hexb")" 200 "the link object"
expect_eq "$(head -c 9 "$T/link")" "CMKSLINK" "... is a link"
data=$(sed -n 2p "$T/link")
expect_eq "$(s3_req "$T/data" GET "/cmkst/team/a/$data")" 200 "its data object"
expect_eq "$(head -c 8 "$T/data")" "CMKSBLOB" "... is a container (format v1)"
expect_eq "$(stat -c %s "$T/data")" "$(sed -n 3p "$T/link")" "... of the size the link says"
expect_false "no plaintext in the data object" grep -qF "$(slice "$T/big" 9000000 64 | od -An -tx1 | tr -d ' \n')" \
    <(od -An -tx1 "$T/data" | tr -d ' \n')
expect_eq "$(s3_req "$T/sm" GET "/cmkst/team/a/blobs/sha256/$hexs")" 200 "the small blob is one object"
expect_false "... without its plaintext" grep -q "hello object storage" "$T/sm"

# ---- the size where a blob starts being uploaded in parts: the first part holds the header
# and 5 MiB; an upload is started once the next part is half full (4 MiB more). Below that
# the blob is one object, above it a data object of two parts, both read back whole.
gen_random mid1 8000000 "$T/mid1"
gen_random mid2 10000000 "$T/mid2"
expect_ok cmk blob put --store "$S" "$T/mid1"
D1=$(cat "$OUT")
expect_ok cmk blob put --store "$S" "$T/mid2"
D2=$(cat "$OUT")
expect_eq "$(s3_req "$T/m1" GET "/cmkst/team/a/blobs/sha256/${D1#sha256:}")" 200 "8 MB: one object"
expect_eq "$(head -c 8 "$T/m1")" "CMKSBLOB" "... the container itself"
expect_eq "$(s3_req "$T/m2" GET "/cmkst/team/a/blobs/sha256/${D2#sha256:}")" 200 "10 MB: an object"
expect_eq "$(head -c 9 "$T/m2")" "CMKSLINK" "... a link to its parts"
for m in mid1 mid2; do
    d=$D1
    [ $m == mid2 ] && d=$D2
    expect_ok cmk blob get --store "$S" "$d" -o "$T/$m.out"
    expect_true "$m reads back whole" cmp "$T/$m" "$T/$m.out"
done
expect_eq "$(s3_req "$T/ups" GET "/cmkst?uploads=")" 200 "the bucket's multipart uploads"
expect_eq "$(grep -c '<UploadId>' "$T/ups")" 0 "... none left incomplete"
expect_ok cmk blob rm --store "$S" "$D1"
expect_ok cmk blob rm --store "$S" "$D2"

# ---- events, without the key
expect_ok cmk events --store "$S"
expect_json 'select(.event == "store.created") | .storeId' "events: store.created"

# ---- rm
expect_ok cmk blob rm --store "$S" "$DB"
expect_exit 3 cmk blob get --store "$S" "$DB"
expect_eq "$(s3_keys cmkst team/a/data/ | wc -l)" 0 "rm deletes the data object too"

# ---- creating where a store or objects are
expect_exit 6 cmk create --store "$S"
expect_err_match "exists at $S already" "a second create at the same name is refused"
expect_exit 6 cmk create --store s3://cmkst/team
expect_err_match "not empty" "a prefix holding objects is refused"
expect_exit 2 cmk blob ls --store s3://Bad_Bucket
expect_exit 2 cmk blob ls --store "s3://cmkst/a/../b"

# ---- credentials: missing, wrong (never printed)
expect_exit 6 env -u AWS_SECRET_ACCESS_KEY "$CMKSTORE_BIN" blob ls --store "$S"
expect_err_match "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" "no credentials: the variables named"
expect_exit 6 env AWS_SECRET_ACCESS_KEY=not-the-secret-4711 "$CMKSTORE_BIN" blob ls --store "$S"
expect_err_match "access denied" "a wrong secret: access denied"
expect_false "... the secret is not printed" grep -q "not-the-secret-4711" "$ERR" "$OUT"
expect_ok cmk blob ls --store "$S"
expect_false "the real secret is never printed" grep -qF "$SECRET" "$ERR" "$OUT"

# ---- an endpoint that does not answer
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect_exit 1 env AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port" "$CMKSTORE_BIN" blob ls --store "$S"
expect_err_match "127\.0\.0\.1:$port.*failed after 5 tries" "unreachable: the endpoint named, after retries"

# ---- the gateway goes away in the middle of a streamed get (one GET written into the get's
# buffers while it reads): the get fails and names the endpoint; what it wrote is a prefix of
# the blob (nothing unchecked); once the gateway is back the same get is whole. The reader
# stops after 2 MB, so at most the get's read-ahead and the socket buffers (~20 MB) can have
# arrived when the gateway stops: most of the 48 MB cannot.
gen_random streamed 48000000 "$T/streamed"
expect_ok cmk blob put --store "$S" "$T/streamed"
DST=$(cat "$OUT")
mkfifo "$T/get.fifo"
"$CMKSTORE_BIN" blob get --store "$S" "$DST" >"$T/get.fifo" 2>"$T/get.err" &
GP=$!
exec 7<"$T/get.fifo"
head -c 2000000 <&7 >"$T/got.part"
expect_ok rgw_stop
cat <&7 >>"$T/got.part"
exec 7<&-
rc=0
wait "$GP" || rc=$?
expect_true "gateway stopped mid-stream: the get fails (exit $rc)" test "$rc" -ne 0
echo "# $(tail -n 1 "$T/get.err")"
expect_true "... naming the endpoint" grep -q '127\.0\.0\.1' "$T/get.err"
n=$(stat -c %s "$T/got.part")
expect_true "... after writing only part of the blob ($n bytes)" test "$n" -lt 48000000
expect_true "... a prefix of it" cmp -n "$n" "$T/got.part" "$T/streamed"
expect_ok rgw_start
expect_ok cmk blob get --store "$S" "$DST" --output "$T/got.whole"
expect_true "gateway back: the same get is whole" cmp "$T/got.whole" "$T/streamed"

# ---- an endpoint that accepts every conditional write (as npm's s3rver does): refused
cat >"$T/lenient.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = answer
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$T/lenient.py" >"$T/lenient.port" &
LP=$!
on_exit "kill $LP"
wait_for 10 test -s "$T/lenient.port"
expect_exit 6 env AWS_ENDPOINT_URL_S3="http://127.0.0.1:$(cat "$T/lenient.port")" \
    "$CMKSTORE_BIN" blob ls --store s3://lenient/x
expect_err_match "does not honour conditional writes" "a lenient endpoint is refused"
