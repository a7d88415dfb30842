#!/bin/bash
# README command 2: the whole test suite. Installs what is missing, builds (plain and ASan/UBSan), starts
# Docker if needed, then runs, fastest first: lint, C tests (ctest), Lua unit specs, integration specs
# against the real binary and the real Docker daemon (reliability included: RELIABILITY.md), the official SDK
# conformance scripts, the C tests under valgrind, the Kubernetes runtime on a real one-node cluster
# (tests/k8s/cluster.sh), and everything but the fuzzers once more with the server built with
# AddressSanitizer/UndefinedBehaviorSanitizer.
# Every stage runs even when an earlier one failed (except when the build fails); the exit code is 0 only
# when all passed. .ci/run calls exactly this.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OPENSANDBOX_SOURCE=$root
passed=0
failed=0
failures=()

# /dev/null must stay the null device: a test that removed it (a helper once did, via `curl -o /dev/null`
# after os.remove of its output path) turns it into a regular file that every later `>/dev/null` and
# `</dev/null` shares, which breaks unrelated tests far away. A stage that does so fails here, by name.
devnull_ok() {
    if [ -c /dev/null ]; then
        return 0
    fi
    echo "!!! /dev/null is no longer a character device after this stage; restoring it" >&2
    rm -f /dev/null && mknod -m 666 /dev/null c 1 3
    return 1
}

# Each stage's output also goes to a file of its own: the end of a failed stage's output (where busted,
# ctest and node print what failed) is printed again after the summary, since whoever reads only the end of
# a long CI log would otherwise see which stage failed and not why.
stage_logs=$(mktemp -d /tmp/osb-test-logs.XXXXXX)
failure_logs=()
stage() {
    local name=$1
    shift
    local t0=$SECONDS
    local log
    log=$stage_logs/$((passed + failed + 1)).log
    echo "=== stage: $name"
    local rc=0 tee_pid i
    "$@" > >(tee "$log") 2>&1 || rc=$?
    tee_pid=$!
    for i in $(seq 40); do # tee's last lines before this stage's verdict (not longer: a daemon the stage
        kill -0 "$tee_pid" 2>/dev/null || break # started may hold the pipe open)
        sleep 0.05
    done
    if [ "$rc" -eq 0 ] && devnull_ok; then
        passed=$((passed + 1))
        echo "=== PASS $name ($((SECONDS - t0)) s)"
    else
        devnull_ok || true
        failed=$((failed + 1))
        failures+=("$name")
        failure_logs+=("$log")
        echo "=== FAIL $name ($((SECONDS - t0)) s)"
    fi
}

busted_run() {
    lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua;tests/lua/integration/?.lua' -o utfTerminal "$@"
}

lint() {
    local rc=0
    local cfiles
    cfiles=$(ls core/*.c core/*.cpp core/*.h include/*.h examples/embed/*.c tests/c/*.c execd/src/*.c execd/src/*.h execd/tests/*.c execd/fuzz/*.c 2>/dev/null)
    # shellcheck disable=SC2086
    clang-format --dry-run -Werror $cfiles || rc=1
    luacheck -q lua hooks routes tests/lua tests/c/scenarios config.lua || rc=1
    return $rc
}

sh scripts/setup.sh || exit 1
if ! sh scripts/build.sh; then
    echo "build failed"
    exit 1
fi

integ() { busted_run "$@"; }

fuzz() { # the libFuzzer targets, each for a bounded time on a copy of its seed corpus
    CC=clang cmake -S execd -B build-fuzz -DOPENSANDBOX_FUZZ=ON >/dev/null && cmake --build build-fuzz -j"$(nproc)" \
        --target execd_fuzz_http execd_fuzz_multipart >/dev/null || return 1
    local rc=0 t
    for t in http multipart; do
        rm -rf "build-fuzz/corpus-$t" && cp -r "execd/fuzz/corpus/$t" "build-fuzz/corpus-$t"
        "build-fuzz/execd_fuzz_$t" -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=0 \
            "build-fuzz/corpus-$t" >"build-fuzz/$t.log" 2>&1 || { rc=1; tail -30 "build-fuzz/$t.log"; }
        grep -E "^Done|stat::number_of_executed_units" "build-fuzz/$t.log" | tail -1
    done
    sh tests/fuzz/run.sh "${FUZZ_SECONDS:-30}" || rc=1
    return $rc
}

stage "lint (clang-format, luacheck)" lint
stage "docker daemon" sh scripts/docker-up.sh
stage "C tests (ctest)" ctest --test-dir build --output-on-failure
stage "valgrind: C tests" sh tests/reliability/valgrind.sh
stage "Lua unit specs" busted_run tests/lua/unit
stage "fuzz (libFuzzer, bounded)" fuzz

stage "test images" sh -c 'bash tests/images/build-busybox.sh && bash tests/images/build-ws-echo.sh &&
    bash tests/images/build-execd-image.sh --force'
# leftovers of earlier runs: containers created by test servers
docker ps -aq --filter label=opensandbox.io/id | xargs -r docker rm -f >/dev/null 2>&1
docker ps -aq --filter label=opensandbox.test=1 | xargs -r docker rm -f >/dev/null 2>&1

stage "integration: engine" integ tests/lua/integration/engine
stage "integration: docker adapter" integ tests/lua/integration/runtimes
stage "integration: lifecycle" integ tests/lua/integration/lifecycle
stage "integration: hooks and tenants" integ tests/lua/integration/hooks
stage "integration: server proxy" integ tests/lua/integration/proxy
stage "integration: agent (SDK specs)" bash tests/agent/run.sh
stage "integration: reliability (hostile input, containment, faults, chaos)" integ tests/lua/integration/reliability
stage "SDK conformance: lifecycle" bash tests/conformance/run.sh lifecycle-smoke.mjs
stage "SDK conformance: execd" bash tests/conformance/run.sh execd-smoke.mjs
stage "SDK conformance: execd through the server proxy" env OPENSANDBOX_USE_SERVER_PROXY=1 \
    bash tests/conformance/run.sh execd-smoke.mjs
# the .deb (scripts/package.sh) installed and started by systemd in a container of a debootstrapped Debian 12
# (root file system cached under /var/cache/opensandbox-ci), /docs rendered in headless Chromium
stage "package: .deb on Debian 12 (systemd, Docker, /docs in Chromium)" bash tests/package/run.sh
# the Python SDK, CLI and MCP server of upstream (pinned in tests/conformance/python/requirements.txt)
stage "SDK conformance: Python" bash tests/conformance/run-python.sh pytest
stage "SDK conformance: CLI" bash tests/conformance/run-python.sh cli
stage "SDK conformance: MCP" bash tests/conformance/run-python.sh mcp

# Kubernetes: a real one-node cluster (tests/k8s/cluster.sh: built from the Go module proxy the first time,
# ~6 minutes here, then cached under /var/cache/opensandbox-k8s), the runtime's integration specs and the
# SDK conformance scripts with runtime.type = "kubernetes" (there pause and resume must be refused through
# the SDK: SMOKE_NO_PAUSE). The cluster is stopped at the end of the run.
k8s_up() {
    local line
    line=$(bash tests/k8s/cluster.sh up) || return 1
    export KUBECONFIG=${line#KUBECONFIG=}
    bash tests/k8s/cluster.sh load-image local/busybox:latest >/dev/null
}
stage "Kubernetes cluster up (tests/k8s/cluster.sh)" k8s_up
stage "integration: kubernetes runtime" integ tests/lua/integration/kubernetes
stage "SDK conformance on Kubernetes: lifecycle (pause/resume refused)" env OPENSANDBOX_RUNTIME=kubernetes \
    SMOKE_NO_PAUSE=1 bash tests/conformance/run.sh lifecycle-smoke.mjs
stage "SDK conformance on Kubernetes: execd through the server proxy" env OPENSANDBOX_RUNTIME=kubernetes \
    OPENSANDBOX_USE_SERVER_PROXY=1 bash tests/conformance/run.sh execd-smoke.mjs
stage "SDK conformance on Kubernetes: Python lifecycle (pause/resume refused)" env OPENSANDBOX_RUNTIME=kubernetes \
    OPENSANDBOX_USE_SERVER_PROXY=1 bash tests/conformance/run-python.sh pytest test_lifecycle.py

# once more under AddressSanitizer + UndefinedBehaviorSanitizer
if BUILD_DIR=build-asan CMAKE_ARGS="-DOPENSANDBOX_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug" sh scripts/build.sh; then
    # reports go to files, so that a report from a server process (whose exit code no test reads) is seen
    rm -rf build-asan/reports && mkdir -p build-asan/reports
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$root/build-asan/reports/asan
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$root/build-asan/reports/ubsan
    stage "ASan/UBSan: C tests" ctest --test-dir build-asan --output-on-failure
    export OPENSANDBOX_BIN=build-asan/opensandbox-server
    stage "ASan/UBSan: integration engine" integ tests/lua/integration/engine
    stage "ASan/UBSan: integration server proxy" integ tests/lua/integration/proxy
    stage "ASan/UBSan: integration lifecycle" integ tests/lua/integration/lifecycle
    stage "ASan/UBSan: integration hooks and tenants" integ tests/lua/integration/hooks
    stage "ASan/UBSan: integration agent (SDK specs)" bash tests/agent/run.sh
    stage "ASan/UBSan: integration reliability" integ tests/lua/integration/reliability
    stage "ASan/UBSan: SDK conformance lifecycle" bash tests/conformance/run.sh lifecycle-smoke.mjs
    stage "ASan/UBSan: SDK conformance execd through the server proxy" env OPENSANDBOX_USE_SERVER_PROXY=1 \
        bash tests/conformance/run.sh execd-smoke.mjs
    stage "ASan/UBSan: integration kubernetes runtime" integ tests/lua/integration/kubernetes
    unset ASAN_OPTIONS UBSAN_OPTIONS OPENSANDBOX_BIN
    no_reports() {
        if ls build-asan/reports/* >/dev/null 2>&1; then
            head -50 build-asan/reports/*
            return 1
        fi
        echo "no sanitizer reports"
    }
    stage "ASan/UBSan: no reports from any process" no_reports
else
    failed=$((failed + 1))
    failures+=("ASan build")
    failure_logs+=("")
fi

bash tests/k8s/cluster.sh down >/dev/null 2>&1 || echo "tests/k8s/cluster.sh down failed" >&2

sleep 1 # (the last stage's tee has written its file)
for i in "${!failures[@]}"; do
    echo
    echo "=== the end of the output of the failed stage: ${failures[$i]}"
    if [ -f "${failure_logs[$i]:-}" ]; then
        grep -v '^[●◼✱]*$' "${failure_logs[$i]}" | tail -60
    fi
done
rm -rf "$stage_logs"
echo
for f in "${failures[@]}"; do
    echo "failed stage: $f"
done
echo "test stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
