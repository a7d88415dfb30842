#!/bin/bash
# Runs the official OpenSandbox JS SDK conformance scripts (../shared/conformance, read-only: copied to
# build/conformance first) against a real server started here, on a real Docker daemon.
#   tests/conformance/run.sh lifecycle-smoke.mjs [execd-smoke.mjs ...]
# Env: OPENSANDBOX_BIN (server binary), SHARED_DIR (default <repo>/../shared), SANDBOX_IMAGE.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${SHARED_DIR:-$root/../shared}
bin=${OPENSANDBOX_BIN:-$root/build/opensandbox-server}
work=$root/build/conformance
if [ ! -d "$shared/conformance" ]; then
    echo "conformance: $shared/conformance not found (set SHARED_DIR)" >&2
    exit 1
fi
mkdir -p "$work"
cp "$shared"/conformance/*.mjs "$shared"/conformance/package.json "$work"/
if [ ! -d "$work/node_modules/@alibaba-group/opensandbox" ]; then
    (cd "$work" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

state=$(mktemp -d /tmp/osb-conformance.XXXXXX)
port=$((20000 + RANDOM % 20000))
key=conformance-$RANDOM$RANDOM
cat >"$state/config.lua" <<CFG
return {
  server = { host = "127.0.0.1", port = $port, api_key = "$key", log_level = "DEBUG" },
  store = { path = "$state/opensandbox.db" },
  docker = { instance = "conformance-$$" },
}
CFG
"$bin" --config "$state/config.lua" >"$state/server.log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done

rc=0
for script in "$@"; do
    echo "conformance: $script"
    if ! (cd "$work" && OPENSANDBOX_URL="http://127.0.0.1:$port" OPENSANDBOX_API_KEY="$key" \
        SANDBOX_IMAGE="${SANDBOX_IMAGE:-local/busybox:latest}" timeout 600 node "$script"); then
        rc=1
        echo "conformance: $script FAILED; server log tail:" >&2
        tail -30 "$state/server.log" >&2
    fi
done
exit $rc
