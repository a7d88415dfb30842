#!/bin/bash
# README command 2: the whole test suite. Installs what is missing, builds (plain and ASan/UBSan), starts
# Docker if needed, then runs, fastest first: lint, C tests (ctest), Lua unit specs, integration specs
# against the real binary and the real Docker daemon, the official SDK conformance scripts, and the C tests
# and engine integration once more under AddressSanitizer/UndefinedBehaviorSanitizer.
# Every stage runs even when an earlier one failed (except when the build fails); the exit code is 0 only
# when all passed. .ci/run calls exactly this.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OPENSANDBOX_SOURCE=$root
passed=0
failed=0
failures=()

stage() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "=== stage: $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "=== PASS $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== FAIL $name ($((SECONDS - t0)) s)"
    fi
}

busted_run() {
    lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' -o utfTerminal "$@"
}

lint() {
    local rc=0
    local cfiles
    cfiles=$(ls core/*.c core/*.h tests/c/*.c execd/src/*.c execd/src/*.h execd/tests/*.c execd/fuzz/*.c 2>/dev/null)
    # shellcheck disable=SC2086
    clang-format --dry-run -Werror $cfiles || rc=1
    luacheck -q lua hooks tests/lua tests/c/scenarios config.lua || rc=1
    return $rc
}

sh scripts/setup.sh || exit 1
if ! sh scripts/build.sh; then
    echo "build failed"
    exit 1
fi

stage "lint (clang-format, luacheck)" lint
stage "C tests (ctest)" ctest --test-dir build --output-on-failure
stage "Lua unit specs" busted_run tests/lua/unit

stage "docker daemon" sh scripts/docker-up.sh
stage "test images" bash tests/images/build-busybox.sh
# leftovers of earlier runs: containers created by test servers
docker ps -aq --filter label=opensandbox.io/id | xargs -r docker rm -f >/dev/null 2>&1
docker ps -aq --filter label=opensandbox.test=1 | xargs -r docker rm -f >/dev/null 2>&1

stage "integration: engine" busted_run tests/lua/integration/engine
stage "integration: docker adapter" busted_run tests/lua/integration/runtimes
if [ -d tests/lua/integration/lifecycle ]; then
    stage "integration: lifecycle" busted_run tests/lua/integration/lifecycle
fi
if [ -d tests/lua/integration/agent ]; then
    stage "integration: agent" busted_run tests/lua/integration/agent
fi
stage "integration: agent (SDK specs)" bash tests/agent/run.sh
stage "SDK conformance: lifecycle" bash tests/conformance/run.sh lifecycle-smoke.mjs
if [ -x build/execd/opensandbox-execd ]; then
    stage "SDK conformance: execd" bash tests/conformance/run.sh execd-smoke.mjs
fi

# once more under AddressSanitizer + UndefinedBehaviorSanitizer
if BUILD_DIR=build-asan CMAKE_ARGS="-DOPENSANDBOX_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug" sh scripts/build.sh; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    stage "ASan/UBSan: C tests" ctest --test-dir build-asan --output-on-failure
    stage "ASan/UBSan: integration engine" env OPENSANDBOX_BIN=build-asan/opensandbox-server \
        lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' tests/lua/integration/engine
    stage "ASan/UBSan: SDK conformance lifecycle" env OPENSANDBOX_BIN=build-asan/opensandbox-server \
        bash tests/conformance/run.sh lifecycle-smoke.mjs
    unset ASAN_OPTIONS UBSAN_OPTIONS
else
    failed=$((failed + 1))
    failures+=("ASan build")
fi

echo
for f in "${failures[@]}"; do
    echo "failed stage: $f"
done
echo "test stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
