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
    cp "$root/tests/conformance/package.json" "$conf/"
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

# the agent alone (curl, no SDK in between): 100 MiB up and down, 3 downloads
H="OPEN-SANDBOX-API-KEY: $KEY"
id=$(curl -fs -XPOST "http://127.0.0.1:$PORT/v1/sandboxes" -H "$H" -d \
    '{"image":{"uri":"local/busybox:latest"},"entrypoint":["sleep","600"],"timeout":600,"resourceLimits":{}}' |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
sleep 2
ep=$(curl -fs "http://127.0.0.1:$PORT/v1/sandboxes/$id/endpoints/44772" -H "$H")
e=$(echo "$ep" | sed -n 's/.*"endpoint":"\([^"]*\)".*/\1/p')
t=$(echo "$ep" | sed -n 's/.*"X-EXECD-ACCESS-TOKEN":"\([^"]*\)".*/\1/p')
head -c 104857600 /dev/urandom >"$work/b100"
for _ in $(seq 1 50); do curl -fs -H "X-EXECD-ACCESS-TOKEN: $t" "http://$e/ping" >/dev/null && break; sleep 0.1; done
curl -fs -H "X-EXECD-ACCESS-TOKEN: $t" -F 'metadata={"path":"/tmp/b100"};filename=metadata' -F "file=@$work/b100" \
    "http://$e/files/upload" -o /dev/null -w '| 100 MiB upload through the agent (curl) | %{speed_upload} B/s |\n'
for _ in 1 2 3; do
    curl -fs -H "X-EXECD-ACCESS-TOKEN: $t" "http://$e/files/download?path=/tmp/b100" -o /dev/null \
        -w '| 100 MiB download through the agent (curl) | %{speed_download} B/s |\n'
done
curl -fs -XDELETE "http://127.0.0.1:$PORT/v1/sandboxes/$id" -H "$H" >/dev/null
rm -rf "$work"
