#!/bin/sh
# Builds the libFuzzer target for the HTTP layer (fuzz_api.c, clang) and runs it for a bounded time on a
# copy of the seed corpus in tests/fuzz/corpus/api.
#   tests/fuzz/run.sh [SECONDS]      (default 30)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
mkdir -p "$out"
clang -g -O1 -fsanitize=fuzzer,address,undefined -DOSB_SOURCE_DIR="\"$root\"" $(pkg-config --cflags lua5.4) \
    "$root/tests/fuzz/fuzz_api.c" $(pkg-config --libs lua5.4) -o "$out/fuzz_api"
rm -rf "$out/corpus-api"
cp -r "$root/tests/fuzz/corpus/api" "$out/corpus-api"
(cd "$out" && ./fuzz_api -max_total_time="${1:-30}" -max_len=4096 -print_final_stats=0 corpus-api) \
    >"$out/api.log" 2>&1 || { tail -40 "$out/api.log"; exit 1; }
grep -E "^Done" "$out/api.log" | tail -1
