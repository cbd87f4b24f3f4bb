#!/usr/bin/env bash
# test_s3_frontends.sh — two `cmkstore serve` front-ends on one store in a Ceph RGW bucket
# (tests/cli/frontends_lib.sh's checks, as test_serve_frontends.sh runs them on a directory):
# here no lock orders the front-ends' writes, only the records' versions (If-Match).
source "$(dirname "$0")/../cli/lib.sh"
source "$(dirname "$0")/../cli/serve_lib.sh"
source "$(dirname "$0")/../cli/frontends_lib.sh"
source "$(dirname "$0")/s3_lib.sh"

ceph_start
expect_eq "$(s3_mb frontends)" 200 "a bucket"
frontends_suite s3://frontends/store
