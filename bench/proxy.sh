#!/bin/bash
# Server proxy benchmark: our proxy (ANY /sandboxes/{id}/proxy/8080/...) side by side with nginx (Debian
# nginx-light, 1 worker, proxy_pass) in front of the SAME backend: the ws_echo test server
# (tests/backends/ws_echo.c) inside one sandbox, reached at its container IP. Everything in one run, on
# loopback and the Docker bridge, so that the ratios are comparable (absolute numbers drift).
#
#   bench/proxy.sh [DURATION_SECONDS]      (default 5, at most 10; each wrk run is bounded by it)
#
# Measures:
#   - small responses, GET / ("ws-echo ok"): wrk -t1 -c16, requests/s for direct, nginx and ours
#     (nginx and ours twice each, alternating, best run);
#   - latency, GET /: wrk -t1 -c1 -d1s --latency, p50/p99 of direct (keep-alive to the backend, and with
#     a new connection per request), nginx, ours (3 alternating runs each, median); measured first;
#   - large download, GET /bytes?n=104857600 (100 MiB): curl -o /dev/null, speed_download, 3 rounds,
#     median.
# Total: about 5 * DURATION + 25 s plus the sandbox start.
# Both proxies keep backend connections alive: nginx with an upstream block (`keepalive 32`, HTTP/1.1,
# Connection cleared), ours with its default pool (server.proxy_keepalive = 32 idle connections per sandbox
# port), so the backend cost is the same for both. PROXY_KEEPALIVE=0 runs both without (a new backend connection
# per request: nginx's default HTTP/1.0 upstream, ours with proxy_keepalive = 0). PROXY_REMEMBER=0 makes every
# request of ours run the Lua route (server.proxy_remember; default 2: steady traffic is forwarded from C).
# Also counts the host's sockets in TIME_WAIT towards the backend right after each proxy's throughput runs.
# Prints a markdown table. Needs: build/ (opensandbox-server + execd), Docker, nginx-light, wrk, musl-gcc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dur=${1:-5}
[ "$dur" -gt 10 ] && dur=10
work=$(mktemp -d /tmp/osb-bench-proxy.XXXXXX)
KEY=bench-proxy-key
KA=${PROXY_KEEPALIVE:-32}
# With a key configured the proxy route needs it (or the sandbox's capability): every load generator sends it,
# to the backend directly and through nginx as well (they ignore it), so that all three runs carry the same bytes
AUTH="OPEN-SANDBOX-API-KEY: $KEY"
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
return { server = { host = "127.0.0.1", port = $OUR_PORT, api_key = "$KEY", log_level = "WARNING",
                    proxy_keepalive = $KA, proxy_remember = ${PROXY_REMEMBER:-2} },
         store = { path = "$work/state/db.sqlite" }, docker = { instance = "bench-proxy-$$" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" >&2 &
ourpid=$!
pids+=("$ourpid")
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$OUR_PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done

sid=$(api POST /v1/sandboxes '{"image":{"uri":"local/ws-echo:latest"},"entrypoint":["/ws_echo"],
  "env":{"PORT":"8080"},"timeout":600,"resourceLimits":{},"metadata":{"opensandbox-test":"bench"}}' |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$sid" ] || { echo "create failed" >&2; exit 1; }
ours="http://127.0.0.1:$OUR_PORT/sandboxes/$sid/proxy/8080"
for _ in $(seq 1 300); do
    [ "$(curl -s --max-time 2 -H "$AUTH" "$ours/" 2>/dev/null)" = "ws-echo ok" ] && break
    sleep 0.2
done
[ "$(curl -s --max-time 2 -H "$AUTH" "$ours/")" = "ws-echo ok" ] || { echo "the proxy does not reach the backend" >&2; exit 1; }
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "sandbox-$sid")
direct="http://$ip:8080"
[ "$(curl -s "$direct/")" = "ws-echo ok" ] || { echo "backend not reachable at $direct" >&2; exit 1; }

if [ "$KA" -gt 0 ]; then
    upstream="upstream backend { server $ip:8080; keepalive $KA; }"
    location="location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_buffering on; }"
else
    upstream=""
    location="location / { proxy_pass $direct; proxy_buffering on; }"
fi
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  $upstream
  server {
    listen 127.0.0.1:$NGINX_PORT;
    $location
  }
}
NGX
# nginx runs at the scheduling priority our server gives itself (server.nice, default -10): the same
# footing against wrk and the backend
nice -n -10 nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
nginx="http://127.0.0.1:$NGINX_PORT"
nginx_master=${pids[-1]}
for _ in $(seq 1 50); do curl -fs "$nginx/" >/dev/null 2>&1 && break; sleep 0.1; done
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

wrk_line() { # conns duration url -> "rps|p50|p99|errors"
    local out
    out=$(wrk -t1 -c"$1" -d"$2s" --latency -H "$AUTH" "$3")
    echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}')|$(echo "$out" | awk '$1=="50%" {print $2}')|$(
        echo "$out" | awk '$1=="99%" {print $2}')|$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ')"
}
ms() { # wrk latency ("512.00us", "1.20ms", "1.01s") -> ms
    echo "$1" | awk '/us$/ {sub("us","");printf "%.3f",$1/1000;exit} /ms$/ {sub("ms","");printf "%.3f",$1;exit}
        /s$/ {sub("s","");printf "%.3f",$1*1000}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
best() { sort -n | tail -1; }
download() { # url -> MiB/s of one 100 MiB download
    curl -s --max-time 10 -H "$AUTH" -o /dev/null -w '%{speed_download}' "$1/bytes?n=104857600" |
        awk '{printf "%.0f\n", $1 / 1048576}'
}

# The machine may be shared: runs of nginx and ours alternate, so that a burst of outside load hits both.
errs=""
echo "warming up" >&2
wrk -t1 -c4 -d1s -H "$AUTH" "$nginx/" >/dev/null
wrk -t1 -c4 -d1s -H "$AUTH" "$ours/" >/dev/null

# Latency first, in short runs, once fewer than 1000 host sockets towards the backend are in TIME_WAIT
# (waits up to 70 s): every proxied request opens a backend connection, and once tens of thousands of
# them sit in TIME_WAIT the kernel's ephemeral port search makes connect() slower, for nginx and ours
# alike (see README-proxy.md).
tw() { ss -Htan state time-wait dst "$ip" | wc -l; }
for _ in $(seq 1 70); do [ "$(tw)" -lt 1000 ] && break; sleep 1; done
tw0=$(tw)
echo "GET / latency: c1, 1s runs: direct (keep-alive, then a new connection per request), nginx and" \
    "ours 3 times each (median p50)" >&2
IFS='|' read -r _ d_p50 d_p99 e <<<"$(wrk_line 1 1 "$direct/")"
errs+=$e
out=$(wrk -t1 -c1 -d1s --latency -H 'Connection: close' "$direct/")
dc_p50=$(ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
n_list="" o_list="" n99="" o99=""
for _ in 1 2 3; do
    IFS='|' read -r _ p50 p99 e <<<"$(wrk_line 1 1 "$nginx/")"
    n_list+="$(ms "$p50")"$'\n' n99+="$(ms "$p99")"$'\n' errs+=$e
    IFS='|' read -r _ p50 p99 e <<<"$(wrk_line 1 1 "$ours/")"
    o_list+="$(ms "$p50")"$'\n' o99+="$(ms "$p99")"$'\n' errs+=$e
done
d_p50=$(ms "$d_p50") d_p99=$(ms "$d_p99")
n_p50=$(printf '%s' "$n_list" | median) o_p50=$(printf '%s' "$o_list" | median)
n_p99=$(printf '%s' "$n99" | median) o_p99=$(printf '%s' "$o99" | median)

echo "GET / throughput: c16, ${dur}s, direct once, nginx and ours twice each (best)" >&2
IFS='|' read -r d_rps _ _ e <<<"$(wrk_line 16 "$dur" "$direct/")"
errs+=$e
rss0=$(ps -o rss= -p "$ourpid" | tr -d ' ')
n_list="" o_list="" n_cpu="" o_cpu="" n_tw="" o_tw=""
hz=$(getconf CLK_TCK)
for _ in 1 2; do
    t0=$(cpu_ticks "$nginx_worker")
    IFS='|' read -r r _ _ e <<<"$(wrk_line 16 "$dur" "$nginx/")"
    n_tw+="$(tw) "
    n_list+="$r"$'\n' errs+=$e
    n_cpu+="$(awk -v t="$(($(cpu_ticks "$nginx_worker") - t0))" -v r="$r" -v d="$dur" -v hz="$hz" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / (r * d) }')"$'\n'
    t0=$(cpu_ticks "$ourpid")
    IFS='|' read -r r _ _ e <<<"$(wrk_line 16 "$dur" "$ours/")"
    o_tw+="$(tw) "
    o_list+="$r"$'\n' errs+=$e
    o_cpu+="$(awk -v t="$(($(cpu_ticks "$ourpid") - t0))" -v r="$r" -v d="$dur" -v hz="$hz" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / (r * d) }')"$'\n'
done
n_cpu=$(printf '%s' "$n_cpu" | median) o_cpu=$(printf '%s' "$o_cpu" | median)
rss1=$(ps -o rss= -p "$ourpid" | tr -d ' ')
n_rps=$(printf '%s' "$n_list" | best)
o_rps=$(printf '%s' "$o_list" | best)

echo "100 MiB downloads: direct, nginx, ours, 3 rounds (median)" >&2
d_list="" n_list="" o_list=""
for _ in 1 2 3; do
    d_list+="$(download "$direct")"$'\n'
    n_list+="$(download "$nginx")"$'\n'
    o_list+="$(download "$ours")"$'\n'
done
d_bw=$(printf '%s' "$d_list" | median) n_bw=$(printf '%s' "$n_list" | median)
o_bw=$(printf '%s' "$o_list" | median)

# the run is void when the sandbox went away under it (a shared Docker daemon) or a request failed
valid=yes
for u in "$direct/" "$nginx/" "$ours/"; do
    [ "$(curl -s --max-time 5 -H "$AUTH" "$u")" = "ws-echo ok" ] || valid="no: $u stopped answering"
done
[ -z "${errs// /}" ] || valid="no: wrk reported errors: $errs"
for v in "$d_bw" "$n_bw" "$o_bw"; do [ "${v:-0}" -gt 0 ] || valid="no: a download failed"; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f ms", a - b }'; }

echo "| measure | direct to backend | nginx (1 worker) | opensandbox proxy | ours / nginx |"
echo "|---|---|---|---|---|"
echo "| GET / req/s (wrk -t1 -c16 -d${dur}s, best of 2) | $d_rps | $n_rps | $o_rps | $(ratio "$o_rps" "$n_rps") |"
echo "| GET / p50 latency, ms (wrk -t1 -c1 -d1s, median of 3) | $d_p50 (new conn. each: $dc_p50) |" \
    "$n_p50 ($(added "$n_p50" "$d_p50")) | $o_p50 ($(added "$o_p50" "$d_p50")) | - |"
echo "| CPU time per GET / of the proxy process, µs (c16 runs) | - | $n_cpu | $o_cpu | $(ratio "$o_cpu" "$n_cpu") |"
echo "| GET / p99 latency, ms (same runs) | $d_p99 | $n_p99 | $o_p99 | - |"
echo "| 100 MiB download, MiB/s (curl, median of 3) | $d_bw | $n_bw | $o_bw | $(ratio "$o_bw" "$n_bw") |"
echo
echo "host sockets in TIME_WAIT towards the backend: $tw0 before the latency runs; right after each c16 run:" \
    "nginx $n_tw/ ours $o_tw(cumulative, 60 s each); $(tw) at the end"
echo "backend keep-alive: nginx upstream keepalive and ours server.proxy_keepalive = $KA (0: none)"
echo "remembered proxy decisions: server.proxy_remember = ${PROXY_REMEMBER:-2} (0: the Lua route for every request)"
echo "server RSS before/after the c16 runs: ${rss0} -> ${rss1} KiB; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "valid run: $valid"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1)"
