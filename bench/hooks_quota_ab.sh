#!/bin/sh
# bench/hooks_quota.lua interleaved between two builds, for a before/after on a shared, busy machine: runs
# the same bench file (this tree's) in the engine of each tree, alternating, and prints every run and the
# median per tree of "hooks per create" and of the unconfigured floor.
#   bench/hooks_quota_ab.sh OTHER_TREE [runs] [sizes]     e.g. bench/hooks_quota_ab.sh ../base 5 10000
# Both trees need scripts/build.sh run (build/tests/c/core_scenario); the bench's Lua modules are each tree's.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
other=$(cd "$1" && pwd)
runs=${2:-5}
sizes=${3:-1000,10000}
n=${HOOKS_BENCH_N:-20000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq 1 "$runs"); do
    for tree in "$other" "$here"; do
        (cd "$tree" && HOOKS_BENCH_SIZES=$sizes HOOKS_BENCH_N=$n build/tests/c/core_scenario "$here/bench/hooks_quota.lua" \
            2>/dev/null) | grep "live sandboxes" | while IFS= read -r line; do
            echo "$tree run $r load $(cut -d' ' -f1 /proc/loadavg): $line" | tee -a "$out"
        done
    done
done
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
for tree in "$other" "$here"; do
    for live in $(echo "$sizes" | tr ',' ' '); do
        grep "^$tree run" "$out" | grep " $live live sandboxes" |
            sed -E 's/.*hooks per create ([0-9.]+) us.*not configured: ([0-9.]+) us.*/\1 \2/' >"$out.$live"
        echo "median of $(wc -l <"$out.$live") runs, $tree, $live live: hooks per create" \
            "$(cut -d' ' -f1 "$out.$live" | median) us, unconfigured floor $(cut -d' ' -f2 "$out.$live" | median) us"
        rm -f "$out.$live"
    done
done
