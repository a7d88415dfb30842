#!/bin/bash
# Network policy costs (issue 13), one run, interleaved, on this machine's Docker (bench/netpolicy.lua does the
# measuring): create -> Running with and without a policy (2 ms polling client); the first connection to an
# allowed name from a fresh sandbox (resolve + connect + a small GET, timed inside the sandbox by
# bench/netprobe.c) with the policy's DNS filter against a sandbox without policy asking the same DNS server
# directly; throughput of a 256 MB download through an allowed connection, with and without; server RSS and
# kernel slab per sandbox at 100 sandboxes with policies against 100 without.
# Starts its own server (docker.instance of its own), a dnsmasq on the docker0 gateway and a target
# container; removes all of it. Traffic: loopback, the bridge, the containers it made.
#   flock -o /tmp/osb-docker.lock bench/netpolicy.sh [SAMPLES] [MANY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/osb-bench-np.XXXXXX)
PORT=${PORT:-18295} KEY=bench-key
# the gateway containers route through (dockerd 20.10 may report no IPAM Gateway for the default bridge)
GW=$(docker run --rm local/busybox:latest ip route | awk '/^default/ {print $3; exit}')
DNSPORT=${DNSPORT:-53}
LABEL=opensandbox.bench.netpolicy=1
musl-gcc -static -O2 -o "$work/netprobe" "$root/bench/netprobe.c"
docker ps -aq --filter label=$LABEL | xargs -r docker rm -f >/dev/null
target=$(docker run -d --label $LABEL local/busybox:latest sh -c \
    'mkdir -p /w && echo hello > /w/index.html && dd if=/dev/zero of=/w/big bs=1M count=256 2>/dev/null && exec httpd -f -p 80 -h /w')
tip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$target")
dnsmasq --keep-in-foreground --port="$DNSPORT" --listen-address="$GW" --bind-interfaces --no-resolv --no-hosts \
    --conf-file=/dev/null --address=/allowed.test/"$tip" >"$work/dnsmasq.log" 2>&1 &
dpid=$!
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$work/state/db.sqlite" },
         docker = { instance = "bench-np-$$" },
         network_policy = { dns_upstream = "$GW:$DNSPORT" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
trap 'kill $spid $dpid 2>/dev/null || true; wait 2>/dev/null || true; docker rm -f "$target" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
sleep 0.5
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, Docker $(docker version -f '{{.Server.Version}}'), image local/busybox:latest"
echo
echo "| measure | without policy | with policy | ratio / difference |"
echo "|---|---|---|---|"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_KEY=$KEY SAMPLES=${1:-20} MANY=${2:-100} GW=$GW PROBE=$work/netprobe \
    SERVER_PID=$spid OPENSANDBOX_ROOT=$root timeout 1500 "$root/build/tests/c/core_scenario" "$root/bench/netpolicy.lua" \
    2>"$work/client.log" || { tail -20 "$work/client.log" >&2; tail -20 "$work/server.log" >&2; exit 1; }
