#!/bin/bash
# Engine benchmark: our server side by side with nginx (1 worker, `return 200` of the same JSON), same wrk
# command, same run (absolute numbers drift on a shared machine, ratios do not).
#   [ROUNDS=3] bench/engine.sh [DURATION_SECONDS]   (default 10 s per run; loopback only; bounded in time)
# Prints a markdown table. Needs: build/ (scripts/build.sh), nginx-light, wrk, node.
# The 1000 idle connections all come from 127.0.0.1: the server runs without its per-address connection limit
# (server.max_connections_per_ip, default 256), which would otherwise refuse wrk's connections in those rows.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:-10}
work=$(mktemp -d /tmp/osb-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

NGINX_PORT=18181 OUR_PORT=18182 YIELD_PORT=18183 KEY=bench-key
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location = /health { default_type application/json; return 200 '{"status":"healthy"}'; }
    location = /sandbox { default_type application/json; alias $work/sandbox.json; }
    location = /list { default_type application/json; alias $work/list.json; }
  }
}
NGX
# nginx runs at the scheduling priority our server gives itself (server.nice, default -10): the same
# footing against wrk and the backend
nice -n -10 nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
cat >"$work/config.lua" <<CFG
return { server = { port = $OUR_PORT, api_key = "$KEY", log_level = "WARNING", max_connections_per_ip = false },
         store = { path = "$work/state/db.sqlite" }, docker = { instance = "bench-$$" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
ourpid=$!
pids+=($ourpid)
BENCH_PORT=$YIELD_PORT OPENSANDBOX_ROOT=$root "$root/build/tests/c/core_scenario" "$root/bench/yield_server.lua" \
    2>"$work/yield.log" &
pids+=($!)
for p in $NGINX_PORT $OUR_PORT $YIELD_PORT; do
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$p/health" >/dev/null 2>&1 && break; sleep 0.1; done
done
sleep 1
rss_idle=$(ps -o rss= -p "$ourpid" | tr -d ' ')

run_wrk() { # conns url [header]
    local out
    if [ $# -ge 3 ]; then
        out=$(wrk -t2 -c"$1" -d"${dur}s" --latency -H "$3" "$2")
    else
        out=$(wrk -t2 -c"$1" -d"${dur}s" --latency "$2")
    fi
    local rps p50 p99
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    local errs
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    echo "$rps|$p50|$p99|$errs"
}
row() { IFS='|' read -r rps p50 p99 errs <<<"$2"; printf '| %s | %.0f | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "${errs:-}"; }

# one sandbox to read back (needs Docker and local/busybox:latest; see tests/images/build-busybox.sh)
sid=$(curl -fs -XPOST "http://127.0.0.1:$OUR_PORT/v1/sandboxes" -H "OPEN-SANDBOX-API-KEY: $KEY" \
    -d '{"image":{"uri":"local/busybox:latest"},"entrypoint":["sleep","600"],"timeout":600,"resourceLimits":{}}' |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
sleep 2
# nginx serves the very JSON our GET returns (same bytes), as a static file
curl -fs "http://127.0.0.1:$OUR_PORT/v1/sandboxes/$sid" -H "OPEN-SANDBOX-API-KEY: $KEY" >"$work/sandbox.json"
chmod 755 "$work" # nginx's worker runs as nobody
curl -fs "http://127.0.0.1:$OUR_PORT/v1/sandboxes?pageSize=1" -H "OPEN-SANDBOX-API-KEY: $KEY" >"$work/list.json"
chmod 644 "$work/sandbox.json" "$work/list.json"
curl -fs "http://127.0.0.1:$NGINX_PORT/sandbox" | cmp -s - "$work/sandbox.json" || { echo "nginx does not serve the JSON" >&2; exit 1; }
# Rounds: each pair (nginx, ours) runs back to back in every round, and the table gives the median round
# of each row, so a slow spell of the machine hits both sides of a ratio alike.
rounds=${ROUNDS:-3}
declare -A res
for r in $(seq 1 "$rounds"); do
    res[nginx_h.$r]=$(run_wrk 64 "http://127.0.0.1:$NGINX_PORT/health")
    res[ours_h.$r]=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/health")
    # with an Origin header /health goes through the Lua handler (CORS headers), not the core's static answer
    res[ours_hl.$r]=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/health" "Origin: http://bench.test")
    res[nginx_json.$r]=$(run_wrk 64 "http://127.0.0.1:$NGINX_PORT/sandbox")
    res[ours_auth.$r]=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/v1/sandboxes/$sid" "OPEN-SANDBOX-API-KEY: $KEY")
    res[nginx_list.$r]=$(run_wrk 64 "http://127.0.0.1:$NGINX_PORT/list")
    res[ours_list.$r]=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/v1/sandboxes?pageSize=1" "OPEN-SANDBOX-API-KEY: $KEY")
done
# the median round of a row (by req/s)
med() {
    for r in $(seq 1 "$rounds"); do echo "${res[$1.$r]}"; done | sort -t'|' -k1,1 -g | sed -n "$(((rounds + 1) / 2))p"
}
all() { for r in $(seq 1 "$rounds"); do printf '%.0f ' "${res[$1.$r]%%|*}"; done; }
nginx_h=$(med nginx_h)
ours_h=$(med ours_h)
ours_hl=$(med ours_hl)
nginx_json=$(med nginx_json)
ours_auth=$(med ours_auth)
ours_list=$(med ours_list)
nginx_list=$(med nginx_list)
ours_yield=$(run_wrk 256 "http://127.0.0.1:$YIELD_PORT/yield")
node "$root/bench/idle_conns.mjs" 127.0.0.1 "$OUR_PORT" 1000 $((dur * 3 + 10)) &
idle_pid=$!
pids+=($idle_pid)
sleep 3
ours_h_idle=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/health")
ours_auth_idle=$(run_wrk 64 "http://127.0.0.1:$OUR_PORT/v1/sandboxes/$sid" "OPEN-SANDBOX-API-KEY: $KEY")
rss_busy=$(ps -o rss= -p "$ourpid" | tr -d ' ')
kill "$idle_pid" 2>/dev/null || true
curl -fs -XDELETE "http://127.0.0.1:$OUR_PORT/v1/sandboxes/$sid" -H "OPEN-SANDBOX-API-KEY: $KEY" >/dev/null || true
ratio() { awk -v a="${1%%|*}" -v b="${2%%|*}" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs ($(uname -r)), wrk -t2, ${dur}s per run, $rounds interleaved" \
    "rounds (median round shown; every round's req/s in brackets):"
echo
echo "| run | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
row "nginx 1 worker, return 200 of /health's JSON (-c64) [$(all nginx_h)]" "$nginx_h"
row "ours GET /health, answered by the core (-c64) [$(all ours_h)]" "$ours_h"
row "ours GET /health with an Origin: the Lua handler, CORS headers (-c64) [$(all ours_hl)]" "$ours_hl"
row "nginx 1 worker, the same sandbox JSON as a static file (-c64) [$(all nginx_json)]" "$nginx_json"
row "ours GET /v1/sandboxes/{id}, key + router + middleware + handler + JSON (-c64) [$(all ours_auth)]" "$ours_auth"
row "nginx 1 worker, the same list JSON as a static file (-c64) [$(all nginx_list)]" "$nginx_list"
row "ours GET /v1/sandboxes?pageSize=1 (list: query parsing + validation + paging) (-c64) [$(all ours_list)]" "$ours_list"
row "ours route that yields on a timer and resumes (-c256)" "$ours_yield"
row "ours GET /health with 1000 idle keep-alive connections open (-c64)" "$ours_h_idle"
row "ours GET /v1/sandboxes/{id} with 1000 idle connections open (-c64)" "$ours_auth_idle"
echo
echo "- /health vs nginx /health: $(ratio "$ours_h" "$nginx_h")x; through the Lua handler: $(ratio "$ours_hl" "$nginx_h")x"
echo "- authenticated GET vs nginx serving the same JSON: $(ratio "$ours_auth" "$nginx_json")x;" \
    "vs nginx /health: $(ratio "$ours_auth" "$nginx_h")x; per round:" \
    "$(for r in $(seq 1 "$rounds"); do printf '%s ' "$(ratio "${res[ours_auth.$r]}" "${res[nginx_json.$r]}")"; done)"
echo "- list vs nginx serving the same list JSON: $(ratio "$ours_list" "$nginx_list")x; per round:" \
    "$(for r in $(seq 1 "$rounds"); do printf '%s ' "$(ratio "${res[ours_list.$r]}" "${res[nginx_list.$r]}")"; done);" \
    "vs nginx serving the sandbox JSON: $(ratio "$ours_list" "$nginx_json")x"
echo "- /health per round: $(for r in $(seq 1 "$rounds"); do printf '%s ' "$(ratio "${res[ours_h.$r]}" "${res[nginx_h.$r]}")"; done)"
echo "- with 1000 idle connections: /health $(ratio "$ours_h_idle" "$ours_h")x of the run without them"
echo "- server RSS: ${rss_idle} KiB idle after start; ${rss_busy} KiB with 1000 connections open after the runs"
