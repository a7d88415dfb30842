#!/bin/bash
# Longer fault runs than the suite's (RELIABILITY.md, "Faults"): the kill -9 storm of
# tests/lua/integration/reliability/faults_spec.lua with ROUNDS rounds (default 20; the suite runs 5), and the
# disk-full case. Needs the build (scripts/build.sh), Docker and the test image (tests/images/build-busybox.sh).
#   bash bench/faults/run.sh [ROUNDS]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export OPENSANDBOX_SOURCE=$root
export OSB_FAULT_ROUNDS=${1:-20}
t0=$SECONDS
lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' -o utfTerminal \
    tests/lua/integration/reliability/faults_spec.lua
rc=$?
echo "faults: $OSB_FAULT_ROUNDS rounds, $((SECONDS - t0)) s, exit $rc ($(date -u +%FT%TZ), $(nproc) vCPUs)"
exit $rc
