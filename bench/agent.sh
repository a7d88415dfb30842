#!/bin/bash
# Agent benchmark (issue: the in-sandbox agent): SDK echo round trip, 100 MiB file transfer, agent RSS.
# Starts its own server; uses the official SDK installed by tests/conformance/run.sh into build/conformance.
#   bench/agent.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/osb-bench-agent.XXXXXX)
conf=$root/build/conformance
if [ ! -d "$conf/node_modules/@alibaba-group/opensandbox" ]; then
    mkdir -p "$conf"
    cp "${SHARED_DIR:-$root/../shared}/conformance/package.json" "$conf/"
    (cd "$conf" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
cp "$root/bench/agent.mjs" "$conf/bench-agent.mjs"
PORT=18381 KEY=bench-key
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "WARNING" },
         store = { path = "$work/state/db.sqlite" }, docker = { instance = "bench-$$" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, image local/busybox:latest, bridge mode, SDK 0.1.11"
(cd "$conf" && timeout 600 node bench-agent.mjs "http://127.0.0.1:$PORT" "$KEY")
