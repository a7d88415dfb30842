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

# TOML configuration files (fuzz_toml.c): core/ltoml.cpp with toml++ compiled in header-only (so the parser
# is instrumented), then the mapping and validation of lua/config, on a copy of tests/fuzz/corpus/toml.
# toml++'s internal assertions are off, as in Debian's build of the library the server links (NDEBUG, GCC:
# no assume either): toml++ 3.3.0 asserts on an invalid first key character in a table header ("[=") where
# its release build reports the syntax error; memory errors are what this target looks for. Its unreachable
# branch in the non-ASCII whitespace check (core/ltoml.cpp, "Known issue") is left out of UBSan.
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=unreachable \
    -DTOML_HEADER_ONLY=1 \
    '-DTOML_ASSERT(expr)=static_assert(true)' \
    $(pkg-config --cflags lua5.4) -c "$root/core/ltoml.cpp" -o "$out/ltoml-fuzz.o"
clang -g -O1 -fsanitize=fuzzer,address,undefined -DOSB_SOURCE_DIR="\"$root\"" $(pkg-config --cflags lua5.4) \
    -c "$root/tests/fuzz/fuzz_toml.c" -o "$out/fuzz_toml.o"
clang++ -fsanitize=fuzzer,address,undefined "$out/fuzz_toml.o" "$out/ltoml-fuzz.o" $(pkg-config --libs lua5.4) \
    -o "$out/fuzz_toml"
rm -rf "$out/corpus-toml"
cp -r "$root/tests/fuzz/corpus/toml" "$out/corpus-toml"
(cd "$out" && ./fuzz_toml -max_total_time="${1:-30}" -max_len=4096 -print_final_stats=0 corpus-toml) \
    >"$out/toml.log" 2>&1 || { tail -40 "$out/toml.log"; exit 1; }
grep -E "^Done" "$out/toml.log" | tail -1
