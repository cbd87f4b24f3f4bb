#!/usr/bin/env bash
# test_serve_frontends.sh — two `cmkstore serve` front-ends on one directory store (the
# checks are frontends_lib.sh's; tests/s3/test_s3_frontends.sh runs them on object storage).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
source "$(dirname "$0")/frontends_lib.sh"

frontends_suite "$T/store"
