#!/usr/bin/env bash
# test_s3_workflow.sh — the seeds' workflow (tests/cli/test_workflow.sh: identity, vault,
# policy, key, stores with versioned, versionless and template keys, byte-exact round trips
# at chunk boundaries, ranges, stat/ls/verify/rm, revoke and restore, manual rotation) with
# every store in a Ceph RGW bucket (s3://workflow/...). The 1 GiB round trip is left out unless
# CMK_TEST_LARGE=1 (the OSD keeps its data in RAM).
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/s3_lib.sh"

ceph_start
expect_eq "$(s3_mb workflow)" 200 "a bucket"
rc=0
CMK_TEST_STORE_BASE=s3://workflow CMK_TEST_LARGE=${CMK_TEST_LARGE:-0} \
    bash "$(dirname "$0")/../cli/test_workflow.sh" || rc=$?
expect_eq "$rc" 0 "the seeds' workflow passes with its stores on s3://workflow"
s3_keys workflow >"$T/keys"
expect_true "... and its stores are in the bucket" grep -q '^s1/store.json$' "$T/keys"
