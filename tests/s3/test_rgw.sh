#!/usr/bin/env bash
# test_rgw.sh — the Ceph RGW test harness (tests/s3/ceph.sh) itself: two clusters start side
# by side (own directories, own ports, as under ctest -j2), answer S3 with the user made for
# them, and really honour the conditional PUTs that stores on object storage build on
# (If-None-Match: * creates only once; If-Match with the ETag replaces only that version,
# given without quotes, a quirk of RGW 16). The gateway alone stops and comes back with the
# data; `stop` ends every daemon by PID; a cluster whose owner dies is stopped by its
# watchdog.
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/s3_lib.sh"

# ---- two clusters at once
bash "$CEPH_SH" start "$T/other" --owner $$ >"$T/other.out" 2>&1 &
OTHER=$!
on_exit "bash '$CEPH_SH' stop '$T/other'"
ceph_start
ok "a cluster starts, RGW at $S3_EP"
rc=0
wait "$OTHER" || rc=$?
expect_eq "$rc" 0 "... and a second one at the same time"
OTHER_EP=$(sed -n 's|^export AWS_ENDPOINT_URL=||p' "$T/other/env")
expect_true "... on another port" test -n "$OTHER_EP" -a "$OTHER_EP" != "$S3_EP"
for f in env curlrc; do
    expect_eq "$(stat -c %a "$CEPH_DIR/$f")" 600 "$f is private (0600)"
done
rss=0
for p in "$CEPH_DIR"/pids/{mon,osd,rgw}; do
    rss=$((rss + $(awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$p")/status")))
done
echo "# RSS of mon + osd + rgw: $((rss / 1024)) MiB"

# ---- S3 with the user made for the test; a request signed with another key is refused
B=$T/body
expect_eq "$(s3_mb bkt)" 200 "create a bucket"
expect_eq "$(s3_req "$B" GET /)" 200 "list buckets"
expect_true "... the bucket is listed" grep -q '<Name>bkt</Name>' "$B"
printf 'user = "%s:wrong"\naws-sigv4 = "aws:amz:us-east-1:s3"\nnoproxy = "*"\n' \
    "$AWS_ACCESS_KEY_ID" >"$T/badrc"
expect_eq "$(S3_CURLRC=$T/badrc s3_req "$B" GET /bkt)" 403 "a wrong secret is refused (403)"
expect_eq "$(s3_req "$B" GET /bkt "" --aws-sigv4 "aws:amz:us-east-1:s3" -u "x:y")" 403 \
    "an unknown key is refused (403)"

# ---- If-None-Match: * creates once
gen_random one 100000 "$T/one"
gen_random two 100000 "$T/two"
expect_eq "$(s3_req "$B" PUT /bkt/k "$T/one" -H 'If-None-Match: *')" 200 \
    "PUT If-None-Match: * on a new key: 200"
ET1=$(s3_etag "$B")
expect_eq "$(s3_req "$B" PUT /bkt/k "$T/two" -H 'If-None-Match: *')" 412 \
    "... again on the same key: 412"
expect_eq "$(s3_req "$B" GET /bkt/k)" 200 "GET the key"
expect_true "... it holds the first body" cmp "$B" "$T/one"

# ---- If-Match: replaces only the version named
expect_eq "$(s3_req "$B" PUT /bkt/k "$T/two" -H "If-Match: $ET1")" 200 \
    "PUT If-Match: the current ETag (unquoted): 200"
ET2=$(s3_etag "$B")
expect_true "... a new ETag" test -n "$ET2" -a "$ET2" != "$ET1"
expect_eq "$(s3_req "$B" PUT /bkt/k "$T/one" -H "If-Match: $ET1")" 412 \
    "PUT If-Match: a stale ETag: 412"
expect_eq "$(s3_req "$B" GET /bkt/k)" 200 "GET the key"
expect_true "... it holds the second body" cmp "$B" "$T/two"
# RGW 16's quirks, which the S3 backend works around; reported, not required.
CUR=$T/two
code=$(s3_req "$B" PUT /bkt/k "$T/one" -H "If-Match: \"$ET2\"")
echo "# If-Match with the quoted current ETag answers $code (RGW 16: 412; AWS: 200)"
if [ "$code" = 200 ]; then
    ET2=$(s3_etag "$B")
    CUR=$T/one
fi
code=$(s3_req "$B" PUT /bkt/missing "$T/one" -H "If-Match: $ET2")
echo "# If-Match on a missing key answers $code (RGW 16: 412; AWS: 404)"
expect_eq "$(s3_req "$B" HEAD /bkt/missing)" 404 "... and creates nothing"

# ---- the other cluster is another store: it knows nothing of this bucket
expect_eq "$(S3_EP=$OTHER_EP S3_CURLRC=$T/other/curlrc s3_req "$B" GET /bkt)" 404 \
    "the other cluster has no such bucket"

# ---- the gateway stops (unreachable) and comes back with the data
expect_ok rgw_stop
expect_eq "$(s3_req "$B" GET /bkt/k)" 000 "the gateway stopped: connection refused"
expect_ok rgw_start
expect_eq "$(s3_req "$B" GET /bkt/k)" 200 "the gateway is back on the same port"
expect_true "... with the data" cmp "$B" "$CUR"

# pid_alive PID: a running process (an exited daemon stays a zombie until init reaps it).
pid_alive() {
    [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# ---- stop ends every daemon by its PID
PIDS=$(cat "$CEPH_DIR"/pids/{mon,osd,rgw})
expect_ok bash "$CEPH_SH" stop "$CEPH_DIR"
alive=0
for p in $PIDS; do
    ! pid_alive "$p" || alive=$((alive + 1))
done
expect_eq "$alive" 0 "stop: mon, OSD and gateway are gone"
expect_eq "$(s3_req "$B" GET /bkt/k)" 000 "... the endpoint is closed"

# ---- the watchdog stops a cluster whose owner died (a test killed by its runner)
OPIDS=$(cat "$T"/other/pids/{mon,osd,rgw})
sleep 1000 &
OWNER=$!
rm -rf "$T/owned"
expect_ok bash "$CEPH_SH" start "$T/owned" --owner "$OWNER"
on_exit "bash '$CEPH_SH' stop '$T/owned'"
WPIDS=$(cat "$T"/owned/pids/{mon,osd,rgw})
kill "$OWNER"
wait "$OWNER" 2>/dev/null || true
all_gone() {
    local p
    for p in $WPIDS; do
        ! pid_alive "$p" || return 1
    done
}
expect_true "the owner killed: its cluster's daemons are stopped" wait_for 60 all_gone
alive=0
for p in $OPIDS; do
    ! pid_alive "$p" || alive=$((alive + 1))
done
expect_eq "$alive" 3 "... and not the other cluster's"
