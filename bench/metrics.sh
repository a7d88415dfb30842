#!/bin/bash
# Cost of the metrics (issue 14, "Metrics"):
#   1. serving GET /metrics with 1,000 sandboxes: the real server with 1,000 records in its store (runtime
#      unreachable on purpose, so nothing touches Docker and the records stay as stored), timed with curl
#      over loopback on the separate listener (time_total, the median and p90 of 200 scrapes), and the time
#      inside the handler (the server's own latency histogram for route="/metrics", 50 scrapes on the API port);
#   2. engine throughput with the per-request instrumentation on vs off (metrics.enabled = true / false):
#      two servers, the same records; wrk against an authenticated GET /v1/sandboxes/{id} and GET /health,
#      alternating between the two in each round so that a slow spell of the machine hits both alike.
#   [ROUNDS=5] bench/metrics.sh [DURATION_SECONDS]   (default 10 s per wrk run; loopback only)
# Needs: build/ (scripts/build.sh), wrk, curl.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:-10}
rounds=${ROUNDS:-5}
work=$(mktemp -d /tmp/osb-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
KEY=bench-key ON_PORT=18191 OFF_PORT=18192 MPORT=18193
(cd "$root" && lua5.4 bench/metrics_seed.lua "$work/on/db.sqlite" 1000 >/dev/null)
mkdir -p "$work/off" && cp "$work/on/db.sqlite" "$work/off/db.sqlite"
start() { # name port enabled [listen]
    cat >"$work/$1.lua" <<CFG
return { server = { port = $2, api_key = "$KEY", log_level = "WARNING" },
         store = { path = "$work/$1/db.sqlite" }, docker = { host = "unix://$work/no-docker.sock" },
         metrics = { enabled = $3, listen = ${4:-nil} } }
CFG
    "$root/build/opensandbox-server" --config "$work/$1.lua" 2>"$work/$1.log" &
    pids+=($!)
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$2/health" >/dev/null 2>&1 && return; sleep 0.1; done
    echo "server $1 did not start" >&2; cat "$work/$1.log" >&2; exit 1
}
start on $ON_PORT true "\"127.0.0.1:$MPORT\""
start off $OFF_PORT false
sid=00000000-0000-4000-8000-000000000001
H="OPEN-SANDBOX-API-KEY: $KEY"
curl -fs "http://127.0.0.1:$ON_PORT/v1/sandboxes/$sid" -H "$H" >/dev/null

# 1. /metrics with 1,000 sandboxes
running=$(curl -fs "http://127.0.0.1:$MPORT/metrics" | awk '/^opensandbox_sandboxes\{.*state="Running"/ {s+=$2} END {print s}')
[ "$running" = 1000 ] || { echo "expected 1000 Running sandboxes in /metrics, got $running" >&2; exit 1; }
for _ in $(seq 1 20); do curl -fs -o /dev/null "http://127.0.0.1:$MPORT/metrics"; done # warm up
times=$(for _ in $(seq 1 200); do curl -fs -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$MPORT/metrics"; done | sort -g)
p50=$(echo "$times" | sed -n '100p')
p90=$(echo "$times" | sed -n '180p')
size=$(curl -fs "http://127.0.0.1:$MPORT/metrics" | wc -c)
for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$ON_PORT/metrics" -H "$H"; done # for the histogram
handler=$(curl -fs "http://127.0.0.1:$ON_PORT/metrics" -H "$H" | awk '
    /^opensandbox_http_request_duration_seconds_sum\{method="GET",route="\/metrics"\}/ {s=$2}
    /^opensandbox_http_request_duration_seconds_count\{method="GET",route="\/metrics"\}/ {c=$2}
    END { if (c > 0) printf "%.3f", s / c * 1000; else print "n/a" }')

# 2. throughput, instrumentation on vs off
run_wrk() { wrk -t2 -c64 -d"${dur}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
declare -A r
for i in $(seq 1 "$rounds"); do
    r[on_get.$i]=$(run_wrk -H "$H" "http://127.0.0.1:$ON_PORT/v1/sandboxes/$sid")
    r[off_get.$i]=$(run_wrk -H "$H" "http://127.0.0.1:$OFF_PORT/v1/sandboxes/$sid")
    r[off_h.$i]=$(run_wrk "http://127.0.0.1:$OFF_PORT/health")
    r[on_h.$i]=$(run_wrk "http://127.0.0.1:$ON_PORT/health")
done
med() { for i in $(seq 1 "$rounds"); do echo "${r[$1.$i]}"; done | sort -g | sed -n "$(((rounds + 1) / 2))p"; }
all() { for i in $(seq 1 "$rounds"); do printf '%.0f ' "${r[$1.$i]}"; done; }
ratios() { for i in $(seq 1 "$rounds"); do awk -v a="${r[$1.$i]}" -v b="${r[$2.$i]}" 'BEGIN { printf "%.3f ", a / b }'; done; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, 1,000 sandboxes in the store, wrk -t2 -c64 ${dur}s," \
    "$rounds alternating rounds (median; every round in brackets):"
echo
echo "- GET /metrics with 1,000 sandboxes ($size bytes): curl time_total p50 $(awk -v t="$p50" 'BEGIN{printf "%.3f", t*1000}') ms," \
    "p90 $(awk -v t="$p90" 'BEGIN{printf "%.3f", t*1000}') ms; inside the handler (its own latency histogram) $handler ms"
echo "- GET /v1/sandboxes/{id}: on $(med on_get) req/s [$(all on_get)], off $(med off_get) req/s [$(all off_get)];" \
    "on/off $(ratio "$(med on_get)" "$(med off_get)") (per round: $(ratios on_get off_get))"
echo "- GET /health: on $(med on_h) req/s [$(all on_h)], off $(med off_h) req/s [$(all off_h)];" \
    "on/off $(ratio "$(med on_h)" "$(med off_h)") (per round: $(ratios on_h off_h))"
