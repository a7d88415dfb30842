#!/bin/sh
# The C tests under valgrind (memcheck): the core's unit test (test_timer_heap), libopensandbox's C API
# (test_embed: engines started, driven, stopped and freed one after another), every core scenario run
# by the real engine (tests/c/scenarios/*.lua through core_scenario) and the agent's unit suites
# (execd_unit). Any memcheck error or definite/indirect leak fails the run (exit 1); the log of a failing
# program is printed. Bounded: each program gets at most VALGRIND_TIMEOUT seconds (default 120).
#   sh tests/reliability/valgrind.sh            uses build/ (scripts/build.sh builds it)
#   BUILD_DIR=other sh tests/reliability/valgrind.sh
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
limit=${VALGRIND_TIMEOUT:-120}
logdir=$build/valgrind
mkdir -p "$logdir"
export OPENSANDBOX_TEST_SCENARIOS="$root/tests/c/scenarios"
cd "$build/tests/c" || exit 1
rc=0
n=0

run() { # name, command...
    name=$1
    shift
    n=$((n + 1))
    log="$logdir/$name.log"
    # still-reachable and possible leaks are reported in the log but are not errors: libcurl and Lua keep
    # global state until exit on purpose
    # the server links Debian's libmimalloc (core/hookguard.c: the Lua heap), whose shared library exports
    # malloc and free: --soname-synonyms lets memcheck replace those too, so every malloc of the core and its
    # libraries stays checked (the Lua state's own mi_realloc/mi_free calls are not seen)
    if timeout "$limit" valgrind -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --track-fds=no --soname-synonyms='somalloc=libmimalloc.so*' \
        --suppressions="$root/tests/reliability/valgrind-mimalloc.supp" \
        --suppressions="$root/tests/reliability/valgrind-libnftables.supp" --log-file="$log" "$@" >"$log.out" 2>&1; then
        echo "valgrind: $name clean"
    else
        echo "valgrind: $name FAILED (exit $?)"
        tail -n 40 "$log" "$log.out"
        rc=1
    fi
}

run timer_heap ./test_timer_heap
run embed_api ./test_embed
for s in "$root"/tests/c/scenarios/*.lua; do
    name=$(basename "$s" .lua)
    run "scenario_$name" ./core_scenario "$s"
done
for suite in http multipart lines glob json shell; do
    run "execd_unit_$suite" "$build/execd/execd_unit" "$suite"
done
echo "valgrind: $n programs, $([ $rc -eq 0 ] && echo 'no reports' || echo 'reports above')"
exit $rc
