#!/bin/sh
# The hook cost of one create at 1,000 and 10,000 live sandboxes (bench/hooks_quota.lua): the three shipped
# hooks, the quota hook's usage from the service's counters, in-process on the fake runtime. Runs in the
# engine (build/tests/c/core_scenario: the server's Lua allocator, string guards and C copies; scripts/build.sh
# builds it), else in a plain lua5.4.
#   bench/hooks_quota.sh [iterations]     (default 20000; HOOKS_BENCH_SIZES=10000 for one size only)
set -e
cd "$(dirname "$0")/.."
if [ -x build/tests/c/core_scenario ]; then
    HOOKS_BENCH_N=${1:-20000} exec build/tests/c/core_scenario bench/hooks_quota.lua
fi
exec lua5.4 bench/hooks_quota.lua "$@"
