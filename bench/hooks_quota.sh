#!/bin/sh
# The hook cost of one create at 1,000 and 10,000 live sandboxes (bench/hooks_quota.lua): the three shipped
# hooks, the quota hook's usage from the service's counters, in-process on the fake runtime.
#   bench/hooks_quota.sh [iterations]     (default 20000)
set -e
cd "$(dirname "$0")/.."
exec lua5.4 bench/hooks_quota.lua "$@"
