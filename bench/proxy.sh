#!/bin/bash
# Server proxy benchmark: our proxy (ANY /sandboxes/{id}/proxy/8080/...) side by side with nginx (Debian
# nginx-light, 1 worker, proxy_pass) in front of the SAME backend: the ws_echo test server
# (tests/backends/ws_echo.c) inside one sandbox, reached at its container IP. Everything in one run, on
# loopback and the Docker bridge, so that the ratios are comparable (absolute numbers drift).
#
#   bench/proxy.sh [DURATION_SECONDS]      (default 8, at most 10; each wrk run is bounded by it)
#
# Measures:
#   - small responses, GET / ("ws-echo ok"): wrk -t1 -c16, requests/s for direct, nginx and ours;
#   - latency, GET /: wrk -t1 -c1 --latency, p50/p99 of direct (keep-alive to the backend), nginx, ours;
#   - large download, GET /bytes?n=104857600 (100 MiB): curl -o /dev/null, speed_download, 3 runs each,
#     median.
# Both proxies open one backend connection per request (ours always sends Connection: close upstream;
# nginx's default upstream is HTTP/1.0 without keepalive), so the backend cost is the same for both.
# Prints a markdown table. Needs: build/ (opensandbox-server + execd), Docker, nginx-light, wrk, musl-gcc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:-8}
[ "$dur" -gt 10 ] && dur=10
work=$(mktemp -d /tmp/osb-bench-proxy.XXXXXX)
KEY=bench-proxy-key
OUR_PORT=$((20000 + RANDOM % 10000))
NGINX_PORT=$((30000 + RANDOM % 10000))
pids=()
sid=

api() { # method path [body]
    curl -sS -X "$1" -H "OPEN-SANDBOX-API-KEY: $KEY" -H 'Content-Type: application/json' \
        ${3:+--data-binary "$3"} "http://127.0.0.1:$OUR_PORT$2"
}
cleanup() {
    if [ -n "$sid" ]; then api DELETE "/v1/sandboxes/$sid" >/dev/null 2>&1 || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

sh "$root/tests/images/build-ws-echo.sh" >/dev/null

cat >"$work/config.lua" <<CFG
return { server = { host = "127.0.0.1", port = $OUR_PORT, api_key = "$KEY", log_level = "WARNING" },
         store = { path = "$work/state/db.sqlite" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" >&2 &
ourpid=$!
pids+=($ourpid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$OUR_PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done

sid=$(api POST /v1/sandboxes '{"image":{"uri":"local/ws-echo:latest"},"entrypoint":["/ws_echo"],
  "env":{"PORT":"8080"},"timeout":600,"resourceLimits":{},"metadata":{"opensandbox-test":"bench"}}' |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$sid" ] || { echo "create failed" >&2; exit 1; }
ours="http://127.0.0.1:$OUR_PORT/sandboxes/$sid/proxy/8080"
for _ in $(seq 1 300); do
    [ "$(curl -s --max-time 2 "$ours/" 2>/dev/null)" = "ws-echo ok" ] && break
    sleep 0.2
done
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "sandbox-$sid")
direct="http://$ip:8080"
[ "$(curl -s "$direct/")" = "ws-echo ok" ] || { echo "backend not reachable at $direct" >&2; exit 1; }

cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass $direct; proxy_buffering on; }
  }
}
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
nginx="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 1 50); do curl -fs "$nginx/" >/dev/null 2>&1 && break; sleep 0.1; done

wrk_line() { # conns url -> "rps|p50|p99|errors"
    local out
    out=$(wrk -t1 -c"$1" -d"${dur}s" --latency "$2")
    echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}')|$(echo "$out" | awk '$1=="50%" {print $2}')|$(
        echo "$out" | awk '$1=="99%" {print $2}')|$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')"
}
speed() { # url -> median MB/s of 3 downloads of 100 MiB
    local s=()
    for _ in 1 2 3; do
        s+=("$(curl -s --max-time 10 -o /dev/null -w '%{speed_download}' "$1/bytes?n=104857600")")
    done
    printf '%s\n' "${s[@]}" | sort -n | sed -n 2p | awk '{printf "%.0f", $1 / 1048576}'
}
ms() { # wrk latency ("512.00us", "1.20ms") -> ms
    echo "$1" | awk '/us$/ {sub("us","");printf "%.3f",$1/1000;exit} /ms$/ {sub("ms","");printf "%.3f",$1;exit}
        /s$/ {sub("s","");printf "%.3f",$1*1000}'
}

echo "warming up" >&2
wrk -t1 -c4 -d1s "$nginx/" >/dev/null
wrk -t1 -c4 -d1s "$ours/" >/dev/null

echo "GET / throughput (c16)" >&2
IFS='|' read -r d_rps _ _ d_err <<<"$(wrk_line 16 "$direct/")"
IFS='|' read -r n_rps _ _ n_err <<<"$(wrk_line 16 "$nginx/")"
rss0=$(ps -o rss= -p "$ourpid" | tr -d ' ')
IFS='|' read -r o_rps _ _ o_err <<<"$(wrk_line 16 "$ours/")"
rss1=$(ps -o rss= -p "$ourpid" | tr -d ' ')
echo "GET / latency (c1)" >&2
IFS='|' read -r _ d_p50 d_p99 _ <<<"$(wrk_line 1 "$direct/")"
IFS='|' read -r _ n_p50 n_p99 _ <<<"$(wrk_line 1 "$nginx/")"
IFS='|' read -r _ o_p50 o_p99 _ <<<"$(wrk_line 1 "$ours/")"
echo "100 MiB downloads" >&2
d_bw=$(speed "$direct")
n_bw=$(speed "$nginx")
o_bw=$(speed "$ours")

# the run is void when the sandbox went away under it (a shared Docker daemon) or a request failed
valid=yes
for u in "$direct/" "$nginx/" "$ours/"; do
    [ "$(curl -s --max-time 5 "$u")" = "ws-echo ok" ] || valid="no: $u stopped answering"
done
[ -z "$d_err$n_err$o_err" ] || valid="no: wrk reported errors"
for v in "$d_bw" "$n_bw" "$o_bw"; do [ "${v:-0}" -gt 0 ] || valid="no: a download failed"; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
added() { awk -v a="$(ms "$1")" -v b="$(ms "$2")" 'BEGIN { printf "%+.3f ms", a - b }'; }

echo "| measure | direct to backend | nginx (1 worker) | opensandbox proxy | ours / nginx |"
echo "|---|---|---|---|---|"
echo "| GET / req/s (wrk -t1 -c16 -d${dur}s) | $d_rps | $n_rps | $o_rps | $(ratio "$o_rps" "$n_rps") |"
echo "| GET / p50 latency (wrk -t1 -c1) | $d_p50 | $n_p50 ($(added "$n_p50" "$d_p50")) | $o_p50 ($(added "$o_p50" "$d_p50")) | - |"
echo "| GET / p99 latency (wrk -t1 -c1) | $d_p99 | $n_p99 | $o_p99 | - |"
echo "| 100 MiB download, MiB/s (median of 3) | $d_bw | $n_bw | $o_bw | $(ratio "$o_bw" "$n_bw") |"
echo
echo "server RSS around the c16 run: ${rss0} -> ${rss1} KiB; wrk errors: direct [${d_err}] nginx [${n_err}] ours [${o_err}]"
echo "valid run: $valid"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1)"
