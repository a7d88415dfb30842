#!/bin/sh
# Runs a throwaway Docker registry for the integration tests: Debian's docker-registry
# (`/usr/bin/docker-registry serve <config.yml>`) on 127.0.0.1:$REGISTRY_PORT with htpasswd (bcrypt) auth
# and its data under a temporary state directory. Docker treats registries on 127.0.0.0/8 as insecure
# (plain HTTP) by default, so no daemon configuration is needed.
#
# Usage: tests/images/registry.sh start|stop|status
#   REGISTRY_PORT (default 5055), REGISTRY_USER (default "testuser"), REGISTRY_PASSWORD (default
#   "testpass"), REGISTRY_STATE (default ${TMPDIR:-/tmp}/opensandbox-test-registry: config, htpasswd,
#   data/, registry.pid, registry.log).
# `start` is idempotent (a registry already running from this state directory is kept); `stop` ends the
# process recorded in registry.pid and deletes the state directory.
set -eu

PORT=${REGISTRY_PORT:-5055}
USER_NAME=${REGISTRY_USER:-testuser}
PASSWORD=${REGISTRY_PASSWORD:-testpass}
STATE=${REGISTRY_STATE:-${TMPDIR:-/tmp}/opensandbox-test-registry}
PIDFILE=$STATE/registry.pid

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

wait_ready() {
    i=0
    while [ $i -lt 100 ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/" || true)
        if [ "$code" = 401 ] || [ "$code" = 200 ]; then
            return 0
        fi
        if ! running; then
            echo "registry exited; log:" >&2
            cat "$STATE/registry.log" >&2 || true
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "registry did not answer on 127.0.0.1:$PORT" >&2
    return 1
}

start() {
    if running; then
        echo "registry already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
        return 0
    fi
    command -v docker-registry >/dev/null || { echo "apt-get install docker-registry" >&2; exit 1; }
    command -v htpasswd >/dev/null || { echo "apt-get install apache2-utils" >&2; exit 1; }
    mkdir -p "$STATE/data"
    chmod 0700 "$STATE"
    htpasswd -B -b -c "$STATE/htpasswd" "$USER_NAME" "$PASSWORD" 2>/dev/null
    cat >"$STATE/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  secret: opensandbox-test-only
auth:
  htpasswd:
    realm: opensandbox-test
    path: $STATE/htpasswd
YML
    nohup docker-registry serve "$STATE/config.yml" >"$STATE/registry.log" 2>&1 &
    echo $! >"$PIDFILE"
    wait_ready
    echo "registry running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT, user $USER_NAME"
}

stop() {
    if running; then
        pid=$(cat "$PIDFILE")
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid"
        fi
        echo "registry stopped"
    fi
    rm -rf "$STATE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if running; then echo "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
