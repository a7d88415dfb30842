#!/bin/bash
# Lifecycle benchmark (issue: sandbox lifecycle on Docker): our server side by side with raw Docker and
# with nginx serving a static JSON of the same size, in one run. Creates up to N sandboxes (default 500)
# and removes them all at the end. Loopback and the local Docker socket only; bounded in count and time.
#   bench/lifecycle.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-500}
work=$(mktemp -d /tmp/osb-bench-lc.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
PORT=18281 NGINX_PORT=18282 KEY=bench-key
mkdir -p "$work/www"
echo '{}' >"$work/www/sandbox.json"
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$NGINX_PORT;
  location = /sandbox.json { root $work/www; default_type application/json; } } }
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
cat >"$work/config.lua" <<CFG
return { server = { port = $PORT, api_key = "$KEY", log_level = "INFO" },
         store = { path = "$work/state/db.sqlite" },
         docker = { instance = "bench-$$", agent_delivery = "${AGENT_DELIVERY:-volume}" } }
CFG
"$root/build/opensandbox-server" --config "$work/config.lua" 2>"$work/server.log" &
spid=$!
pids+=($spid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
echo "agent_delivery=${AGENT_DELIVERY:-volume}. Measured $(date -u +%Y-%m-%d) on $(nproc) vCPUs, Docker $(docker version -f '{{.Server.Version}}'), image local/busybox:latest"
# in archive mode, the bundle the server uploads, for raw Docker to upload too (API.md 8.4 layout)
bundle=
if [ "${AGENT_DELIVERY:-volume}" = archive ] && [ -x "$root/build/execd/opensandbox-execd" ]; then
    mkdir -p "$work/bundle/opt/opensandbox"
    install -m 0755 "$root/build/execd/opensandbox-execd" "$work/bundle/opt/opensandbox/execd"
    install -m 0755 "$root/execd/bootstrap.sh" "$work/bundle/opt/opensandbox/bootstrap.sh"
    tar --owner=0 --group=0 -C "$work/bundle" -cf "$work/bundle.tar" opt/opensandbox
    bundle=$work/bundle.tar
fi
BUNDLE_TAR=$bundle SERVER_LOG=$work/server.log SERVER_PID=$spid NGINX_JSON_PATH=$work/www/sandbox.json timeout 1200 node "$root/bench/lifecycle.mjs" \
    "http://127.0.0.1:$PORT" "$KEY" "http://127.0.0.1:$NGINX_PORT/sandbox.json" "$n" | grep -v '^{'
