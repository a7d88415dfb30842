#!/bin/bash
# Soak (issue: reliability campaign): starts a server with its own state and Docker instance label, runs
# bench/soak/soak.mjs against it for MINUTES (default 10; bounded), and prints the report.
#   bench/soak/run.sh [MINUTES] [MAX_LIVE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
minutes=${1:-10}
maxlive=${2:-20}
work=$(mktemp -d /tmp/osb-soak.XXXXXX)
PORT=18481 KEY=soak-key INSTANCE=soak-$$
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$work/state/db.sqlite" }, docker = { instance = "$INSTANCE" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null; docker ps -aq --filter label=opensandbox.io/instance=$INSTANCE | xargs -r docker rm -f >/dev/null' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "server log: $work/server.log"
timeout $((minutes * 60 + 300)) node "$root/bench/soak/soak.mjs" "http://127.0.0.1:$PORT" "$KEY" "$spid" "$INSTANCE" \
    "$minutes" "$maxlive"
