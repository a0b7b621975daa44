#!/bin/sh
# soak.sh: run the long soak test against the real ztunnel binary.
# SOAK_DURATION (default 10m) sets how long load runs; the test builds the
# binary itself. Not part of `make test`.
set -eu
cd "$(dirname "$0")/.."
: "${SOAK_DURATION:=10m}"
export SOAK_DURATION
exec ${GO:-go} test -count=1 -v -run '^TestSoak$' -tags soak -timeout 20m ./integration/
