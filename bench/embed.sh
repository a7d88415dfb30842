#!/bin/bash
# The server as a library: what the thin main over libopensandbox (position-independent code, the loop
# turned into steps) costs against another build of the server, and how fast in-process calls are.
#   BASE_BIN=/path/to/other/opensandbox-server [ROUNDS=3] bench/embed.sh [DURATION_SECONDS]
# Part 1 (with BASE_BIN; each binary runs the Lua tree next to it): both servers side by side (no Docker: docker.host points nowhere), the same wrk
# command on GET /health and an authenticated GET /v1/sandboxes, alternating, median round per row.
# Part 2: build/tests/c/bench_embed (osb_sandbox_list in-process, and through HTTP on loopback).
# Needs: build/ (scripts/build.sh), wrk. Loopback only; bounded in time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:-5}
rounds=${ROUNDS:-3}
KEY=bench-embed-key
work=$(mktemp -d /tmp/osb-bench-embed.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # name binary port
    mkdir -p "$work/$1"
    cat >"$work/$1/config.lua" <<CFG
return { server = { port = $3, api_key = "$KEY", log_level = "WARNING" },
         store = { path = "$work/$1/state/db.sqlite" }, docker = { host = "unix:///nonexistent/docker.sock" },
         hooks = { dir = false } }
CFG
    env -u OPENSANDBOX_ROOT "$2" --config "$work/$1/config.lua" 2>"$work/$1/server.log" &
    pids+=($!)
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$3/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "$1 did not start" >&2
    exit 1
}

rps() { # url [header]
    if [ $# -ge 2 ]; then
        wrk -t2 -c64 -d"${dur}s" -H "$2" "$1" | awk '/Requests\/sec/ {print $2}'
    else
        wrk -t2 -c64 -d"${dur}s" "$1" | awk '/Requests\/sec/ {print $2}'
    fi
}
median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if [ -n "${BASE_BIN:-}" ]; then
    P1=$((20000 + RANDOM % 10000))
    P2=$((P1 + 1))
    start base "$BASE_BIN" $P1
    start ours "$root/build/opensandbox-server" $P2
    declare -A r
    # the order alternates between rounds (base first, then ours first), so that neither side always
    # runs right after the other's load
    for i in $(seq 1 "$rounds"); do
        for side in $( [ $((i % 2)) -eq 1 ] && echo "b o" || echo "o b"); do
            port=$([ "$side" = b ] && echo $P1 || echo $P2)
            r[${side}h]+="$(rps "http://127.0.0.1:$port/health") "
            r[${side}l]+="$(rps "http://127.0.0.1:$port/v1/sandboxes" "OPEN-SANDBOX-API-KEY: $KEY") "
        done
    done
    echo "| request (wrk -t2 -c64, ${dur} s, median of $rounds) | base req/s | libopensandbox main req/s | ratio |"
    echo "|---|---|---|---|"
    for k in h l; do
        b=$(echo "${r[b$k]}" | median)
        o=$(echo "${r[o$k]}" | median)
        name=$([ $k = h ] && echo "GET /health" || echo "GET /v1/sandboxes (API key)")
        printf '| %s | %.0f | %.0f | %.3f |\n' "$name" "$b" "$o" "$(echo "$o / $b" | bc -l)"
    done
fi

"$root/build/tests/c/bench_embed" "$root" "$work" 2>"$work/bench_embed.log"
