#!/bin/bash
# Runs the SDK-driven agent integration specs (tests/agent/*.test.mjs, node:test) against a real server
# started here, on the real Docker daemon, like tests/conformance/run.sh does for the conformance scripts.
#   tests/agent/run.sh [node --test args...]
# Env: OPENSANDBOX_BIN (server binary), SANDBOX_IMAGE (default local/busybox:latest). The SDK (pinned in
# tests/conformance/package.json) is installed into build/conformance once.
# On exit, every sandbox the server still lists is deleted before the server is stopped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${OPENSANDBOX_BIN:-$root/build/opensandbox-server}
work=$root/build/conformance
sdk=$work/node_modules/@alibaba-group/opensandbox/dist/index.js

if [ ! -f "$sdk" ]; then
    mkdir -p "$work"
    cp "$root/tests/conformance/package.json" "$work/"
    (cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

state=$(mktemp -d /tmp/osb-agent-it.XXXXXX)
port=$((20000 + RANDOM % 20000))
key=agent-it-$RANDOM$RANDOM
base="http://127.0.0.1:$port"
cat >"$state/config.lua" <<CFG
return {
  server = { host = "127.0.0.1", port = $port, api_key = "$key", log_level = "DEBUG" },
  store = { path = "$state/opensandbox.db" },
}
CFG
"$bin" --config "$state/config.lua" >"$state/server.log" 2>&1 &
pid=$!
cleanup() {
    local ids id
    ids=$(curl -fs -H "OPEN-SANDBOX-API-KEY: $key" "$base/v1/sandboxes?pageSize=200" 2>/dev/null |
        grep -o '"id":"[^"]*"' | cut -d'"' -f4 || true)
    for id in $ids; do
        curl -fs -X DELETE -H "OPEN-SANDBOX-API-KEY: $key" "$base/v1/sandboxes/$id" >/dev/null 2>&1 || true
        docker ps -aq --filter "label=opensandbox.io/id=$id" | xargs -r docker rm -f >/dev/null 2>&1 || true
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fs "$base/health" >/dev/null 2>&1 && break
    sleep 0.1
done

rc=0
OPENSANDBOX_URL=$base OPENSANDBOX_API_KEY=$key OSB_SDK=$sdk SANDBOX_IMAGE=${SANDBOX_IMAGE:-local/busybox:latest} \
    timeout 300 node --test "$@" "$root"/tests/agent/*.test.mjs || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "agent integration: FAILED (rc $rc); server log tail:" >&2
    tail -30 "$state/server.log" >&2
fi
exit $rc
