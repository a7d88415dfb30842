#!/bin/bash
# Snapshots on Docker, seen by a lean client polling every 2 ms (bench/snapshot.lua, on our own engine):
# snapshot of a running busybox sandbox -> Ready against a raw `docker commit` (pause=false) of the same
# container, and create from the snapshot -> Running against a raw create + start of the same image, by the
# same client, interleaved, in one run. Starts its own server (docker.instance of its own) and removes
# everything it created. Loopback and the Docker socket only.
#   flock /tmp/osb-docker.lock bench/snapshot.sh [SAMPLES]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/osb-bench-snap.XXXXXX)
PORT=${PORT:-18293} KEY=bench-key
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$work/state/db.sqlite" },
         docker = { instance = "bench-snap-$$" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
trap 'kill $spid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, Docker $(docker version -f '{{.Server.Version}}'), image local/busybox:latest (+4 MB written)"
echo
echo "| measure | value |"
echo "|---|---|"
BENCH_URL="http://127.0.0.1:$PORT" BENCH_KEY=$KEY SAMPLES=${1:-20} \
    OPENSANDBOX_ROOT=$root timeout 900 "$root/build/tests/c/core_scenario" "$root/bench/snapshot.lua" 2>"$work/client.log" ||
    { tail -20 "$work/client.log" >&2; tail -20 "$work/server.log" >&2; exit 1; }
